"""The activations experiment: the smoke run writes every file with the expected metrics;
the saturation share, the flat-part threshold and the per-seed ranks on hand-checked values."""

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
         "learning_curves.png", "preactivations.png", "test_error.png"}


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
    assert set(metrics) == {"seeds", "test_error", "test_error_raw", "ranking", "train_loss",
                            "train_loss_raw", "saturation", "flat_threshold"}
    assert metrics["seeds"] == [config.seed + i for i in range(config.seeds)]
    assert set(metrics["test_error"]) == set(metrics["train_loss"]) == set(config.activations)
    assert set(metrics["test_error_raw"]) == set(metrics["train_loss_raw"]) == set(
        config.saturating)
    for spread in [*metrics["test_error"].values(), *metrics["test_error_raw"].values()]:
        assert set(spread) == {"mean", "sd", "min", "max", "per_seed"}
        assert len(spread["per_seed"]) == config.seeds
        assert spread["min"] <= spread["mean"] <= spread["max"] and spread["sd"] >= 0
        for error in spread["per_seed"]:
            assert 0.0 <= error < 0.9  # better than chance after two epochs
    ranking = metrics["ranking"]
    assert sorted(ranking["by_mean"]) == sorted(config.activations)
    assert ranking["best_by_mean"] == ranking["by_mean"][0]
    assert set(ranking["vs_best"]) == set(config.activations) - {ranking["best_by_mean"]}
    assert sorted(ranking["beyond_spread"] + ranking["within_spread"]) == sorted(
        ranking["vs_best"])
    for counts in ranking["vs_best"].values():
        assert (counts["seeds_best_lower"] + counts["seeds_tied"]
                + counts["seeds_best_higher"]) == config.seeds
    ranks = ranking["mean_rank"]
    assert sum(ranks.values()) == pytest.approx(len(ranks) * (len(ranks) + 1) / 2)
    assert set(metrics["saturation"]) == set(config.saturating)
    for name, by_inputs in metrics["saturation"].items():
        assert set(by_inputs) == {"raw", "standardized"}
        for shares in by_inputs.values():
            assert set(shares) == {"init", "trained", "init_sd", "trained_sd"}
            assert all(0.0 <= v <= 1.0 for v in shares.values())
        # Unscaled pixels (0..16) put far more units in the flat part than standardised ones.
        assert by_inputs["raw"]["init"] > by_inputs["standardized"]["init"] + 0.3


def test_smoke_history_has_a_row_per_run_and_epoch(smoke):
    _, outdir = smoke
    config = dataclasses.replace(exp.Config(), **exp.SMOKE)
    with open(outdir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    runs = len(config.activations) + len(config.saturating)
    assert len(rows) == runs * config.seeds * config.epochs
    assert set(rows[0]) == {"activation", "inputs", "seed", "epoch", "loss", "error",
                            "val_loss", "val_error"}


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


def test_average_ranks_share_ties():
    assert exp._average_ranks([0.05, 0.03, 0.05, 0.01]).tolist() == [3.5, 2.0, 3.5, 1.0]


def test_ranking_counts_paired_seeds():
    errors = {"a": np.array([0.01, 0.02, 0.025]), "b": np.array([0.02, 0.02, 0.02])}
    ranking = exp._ranking(errors)
    assert ranking["by_mean"] == ["a", "b"] and ranking["best_by_mean"] == "a"
    assert ranking["mean_rank"] == {"a": pytest.approx(4.5 / 3), "b": pytest.approx(4.5 / 3)}
    assert ranking["vs_best"]["b"] == {"seeds_best_lower": 1, "seeds_tied": 1,
                                       "seeds_best_higher": 1, "sd_intervals_overlap": True}
    assert ranking["beyond_spread"] == [] and ranking["within_spread"] == ["b"]
    apart = exp._ranking({"a": np.array([0.01, 0.011]), "b": np.array([0.05, 0.051])})
    assert apart["beyond_spread"] == ["b"] and apart["within_spread"] == []
