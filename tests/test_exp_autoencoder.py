"""The autoencoder experiment: the smoke run writes every file with the expected metrics;
the principal angle on hand-checked subspaces."""

import csv
import dataclasses

import numpy as np
import pytest

from experiments import _framework
from experiments import autoencoder as exp

FILES = {"config.json", "environment.json", "metrics.json", "history.csv", "codes.png",
         "reconstructions.png", "error_vs_k.png"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("autoencoder") / "run"
    return _framework.execute("autoencoder", out=out, smoke=True, progress=False)


def test_smoke_writes_every_file(smoke):
    _, outdir = smoke
    assert {p.name for p in outdir.iterdir()} == FILES
    assert all((outdir / f).stat().st_size > 0 for f in FILES)


def test_smoke_metrics_have_the_expected_keys(smoke):
    metrics, _ = smoke
    config = dataclasses.replace(exp.Config(), **exp.SMOKE)
    assert set(metrics) == {"code_sizes", "results", "all_claims_hold", "eigenvalues"}
    assert metrics["code_sizes"] == list(config.code_sizes)
    assert set(metrics["results"]) == {str(k) for k in config.code_sizes}
    assert len(metrics["eigenvalues"]) == max(config.code_sizes) + 1
    for k, result in metrics["results"].items():
        assert set(result) == {"pca", "linear", "deep", "claims"}
        assert set(result["claims"]) == {"linear_angle_below_max", "linear_within_gap_of_pca",
                                         "deep_beats_pca_on_test"}
        pca = result["pca"]
        # PCA's training error is the sum of the discarded eigenvalues, and no rank-k
        # reconstruction of the training set does better.
        assert pca["train_error"] == pytest.approx(pca["train_error_from_eigenvalues"], rel=1e-9)
        assert result["linear"]["train_error"] >= pca["train_error"] * (1 - 1e-6)
        assert 0.0 <= result["linear"]["max_principal_angle"] <= np.pi / 2 + 1e-9
        assert result["deep"]["epochs_run"] == config.deep_epochs
    assert metrics["all_claims_hold"] == all(
        c for r in metrics["results"].values() for c in r["claims"].values())


def test_smoke_history_has_a_row_per_net_and_epoch(smoke):
    _, outdir = smoke
    config = dataclasses.replace(exp.Config(), **exp.SMOKE)
    with open(outdir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(config.code_sizes) * (config.linear_epochs + config.deep_epochs)
    assert {"net", "k", "epoch", "loss", "val_loss"} <= set(rows[0])


def test_max_principal_angle_on_known_subspaces():
    e = np.eye(3)
    assert exp.max_principal_angle(e[:, :2] @ [[2.0, 1.0], [0.0, 3.0]], e[:2]) == pytest.approx(
        0.0, abs=1e-7)  # the same plane, another basis
    tilted = np.stack([e[0], np.cos(0.3) * e[1] + np.sin(0.3) * e[2]])
    assert exp.max_principal_angle(e[:, :2], tilted) == pytest.approx(0.3)
