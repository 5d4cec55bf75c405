"""The activations experiment: the smoke run writes every file with the expected metrics;
the saturation share and the flat-part threshold on hand-checked values."""

import csv
import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import _framework
from experiments import activations as exp
from nets import activations

FILES = {"config.json", "environment.json", "metrics.json", "history.csv", "activations.png",
         "learning_curves.png", "preactivations.png"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("activations") / "run"
    return _framework.execute("activations", out=out, smoke=True, progress=False)


def test_smoke_writes_every_file(smoke):
    _, outdir = smoke
    assert {p.name for p in outdir.iterdir()} == FILES
    assert all((outdir / f).stat().st_size > 0 for f in FILES)


def test_smoke_metrics_have_the_expected_keys(smoke):
    metrics, _ = smoke
    config = dataclasses.replace(exp.Config(), **exp.SMOKE)
    assert set(metrics) == {"test_error", "test_error_raw", "train_loss", "train_loss_raw",
                            "saturation", "flat_threshold"}
    assert set(metrics["test_error"]) == set(metrics["train_loss"]) == set(config.activations)
    assert set(metrics["test_error_raw"]) == set(metrics["train_loss_raw"]) == set(
        config.saturating)
    for error in [*metrics["test_error"].values(), *metrics["test_error_raw"].values()]:
        assert 0.0 <= error < 0.9  # better than chance after two epochs
    assert set(metrics["saturation"]) == set(config.saturating)
    for name, by_inputs in metrics["saturation"].items():
        assert set(by_inputs) == {"raw", "standardized"}
        for shares in by_inputs.values():
            assert set(shares) == {"init", "trained"}
            assert all(0.0 <= v <= 1.0 for v in shares.values())
        # Unscaled pixels (0..16) put far more units in the flat part than standardised ones.
        assert by_inputs["raw"]["init"] > by_inputs["standardized"]["init"] + 0.3


def test_smoke_history_has_a_row_per_run_and_epoch(smoke):
    _, outdir = smoke
    config = dataclasses.replace(exp.Config(), **exp.SMOKE)
    with open(outdir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    runs = len(config.activations) + len(config.saturating)
    assert len(rows) == runs * config.epochs
    assert set(rows[0]) == {"activation", "inputs", "epoch", "loss", "error", "val_loss",
                            "val_error"}


def test_flat_threshold_matches_the_closed_form():
    # sigmoid'(z) = s (1 - s) = 0.1 * 1/4  <=>  s = (1 + sqrt(0.9)) / 2;  tanh'(z) = 0.1.
    s = (1 + math.sqrt(0.9)) / 2
    assert exp._flat_threshold(activations.get("sigmoid"), 0.1) == pytest.approx(
        math.log(s / (1 - s)), abs=1e-5)  # float32 g'
    assert exp._flat_threshold(activations.get("tanh"), 0.1) == pytest.approx(
        math.atanh(math.sqrt(0.9)), abs=1e-5)


def test_saturation_share_counts_example_unit_pairs():
    # One input, two hidden units with z = x and z = 10 x; for x in {0.1, 1} the four
    # (example, unit) pairs have z = 0.1, 1, 1, 10. Only z = 10 is flat for the sigmoid
    # (beyond 3.64) and for tanh (beyond 1.82); with the fraction 0.5, tanh'(1) = 0.42 is too.
    params = [{"W": jnp.array([[1.0], [10.0]]), "b": jnp.zeros(2)},
              {"W": jnp.ones((1, 2)), "b": jnp.zeros(1)}]
    X = np.array([[0.1], [1.0]], np.float32)
    assert exp.saturation_share(params, X, "sigmoid", 0.1) == 0.25
    assert exp.saturation_share(params, X, "tanh", 0.1) == 0.25
    assert exp.saturation_share(params, X, "tanh", 0.5) == 0.75
