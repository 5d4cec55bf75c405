"""The resnet experiment: the smoke run writes every file with the expected metrics; the
gradient-norm summary on hand-checked values."""

import csv
import dataclasses

import numpy as np
import pytest

from experiments import _framework
from experiments import resnet as exp

FILES = {"config.json", "environment.json", "metrics.json", "history.csv", "grad_norms.csv",
         "grad_norms.png", "training_curves.png"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("resnet") / "run"
    return _framework.execute("resnet", out=out, smoke=True, progress=False)


def test_smoke_writes_every_file(smoke):
    _, outdir = smoke
    assert {p.name for p in outdir.iterdir()} == FILES
    assert all((outdir / f).stat().st_size > 0 for f in FILES)


def test_smoke_metrics_have_the_expected_keys(smoke):
    metrics, _ = smoke
    config = dataclasses.replace(exp.Config(), **exp.SMOKE)
    assert set(metrics) == {"nets", "depths", "parameters"}
    assert metrics["depths"] == list(config.depths)
    assert set(metrics["nets"]) == set(config.activations)
    for act, kinds in metrics["nets"].items():
        assert set(kinds) == set(exp.KINDS)
        for kind, by_depth in kinds.items():
            assert set(by_depth) == {f"depth_{d}" for d in config.depths}
            for result in by_depth.values():
                assert set(result) == {"grad_init", "grad_trained", "train_loss", "val_error",
                                       "test_error", "stop_reason"}
                for stage in ("grad_init", "grad_trained"):
                    assert set(result[stage]) == {"first_to_last", "factor_per_layer"}
                    assert result[stage]["first_to_last"] > 0
                assert 0.0 <= result["test_error"] <= 1.0
    # The sigmoid's g' <= 1/4: even the smoke-sized plain net loses gradient layer by layer,
    # and its residual twin (the same initial weights) does not.
    sig = metrics["nets"]["sigmoid"]
    for d in config.depths:
        assert sig["plain"][f"depth_{d}"]["grad_init"]["factor_per_layer"] < 0.5
        assert sig["residual"][f"depth_{d}"]["grad_init"]["factor_per_layer"] > 0.5


def test_smoke_tables_have_a_row_per_layer_and_epoch(smoke):
    _, outdir = smoke
    config = dataclasses.replace(exp.Config(), **exp.SMOKE)
    nets = len(config.activations) * len(exp.KINDS)
    with open(outdir / "grad_norms.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == nets * 2 * sum(config.depths)
    assert set(rows[0]) == {"activation", "net", "depth", "stage", "layer", "grad_norm"}
    with open(outdir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == nets * len(config.depths) * config.epochs


def test_summarise_ratio_and_factor_per_layer():
    # Norms 1e-3, 1e-2, 1e-1 for the stem and two blocks, 2.0 for the head: a factor of 0.1
    # per layer from the last block down to the stem; first over last 5e-4.
    s = exp.summarise(np.array([1e-3, 1e-2, 1e-1, 2.0]))
    assert s["first_to_last"] == pytest.approx(5e-4)
    assert s["factor_per_layer"] == pytest.approx(0.1)
