"""The regularization experiment at smoke size: files, one compilation for the sweep, metrics."""

import dataclasses
import json

import jax
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache

from experiments import UsageError, _framework
from experiments import regularization

FIGURES = {"lambda_sweep.png", "early_stopping.png", "penalties.png"}
FILES = {"config.json", "environment.json", "metrics.json", "history.csv", "sweep.csv",
         "penalties.csv", "timings.json", *FIGURES}
_CACHE_OPTIONS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                  "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One smoke run (seed 0) with a private compilation cache; JAX's settings restored."""
    saved = {k: getattr(jax.config, k) for k in _CACHE_OPTIONS}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAXNETS_CACHE_DIR", str(tmp_path_factory.mktemp("xla-cache")))
        out = tmp_path_factory.mktemp("regularization") / "run"
        result = _framework.execute("regularization", out=out, smoke=True, seed=0,
                                    progress=False)
    for k, v in saved.items():
        jax.config.update(k, v)
    compilation_cache.reset_cache()
    return result


def test_smoke_run_writes_every_file(run):
    _, outdir = run
    assert {p.name for p in outdir.iterdir()} == FILES
    for name in FIGURES:
        assert (outdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_sweep_is_one_compilation_and_names_the_best_lambda(run):
    metrics, outdir = run
    assert json.loads((outdir / "metrics.json").read_text()) == metrics
    sweep = metrics["sweep"]
    assert sweep["compilations"] == 1
    smoke = regularization.SMOKE
    assert sweep["models"] == (smoke["n_lambdas"] + 1) * smoke["seeds"]
    assert sweep["lambdas"][0] == 0 and len(sweep["lambdas"]) == smoke["n_lambdas"] + 1
    assert sweep["best_lambda"] in sweep["lambdas"]
    best = sweep["lambdas"].index(sweep["best_lambda"])
    assert sweep["best_val_error"] == min(sweep["val_error_mean"]) == sweep["val_error_mean"][best]
    assert 0.0 <= metrics["test_error"] <= 1.0
    gain = sweep["best_vs_zero"]
    assert len(gain["val_error_at_zero_per_seed"]) == smoke["seeds"]
    assert (gain["seeds_best_lower"] + gain["seeds_tied"] + gain["seeds_best_higher"]
            == smoke["seeds"])
    assert gain["val_error_gain"] == pytest.approx(
        sweep["val_error_at_zero"] - sweep["best_val_error"], abs=1e-9)
    assert gain["beyond_seed_spread"] == (gain["val_error_ranges_apart"]
                                          and gain["seeds_best_lower"] == smoke["seeds"])
    rows = (outdir / "sweep.csv").read_text().splitlines()
    assert rows[0].startswith("lambda,seed,") and len(rows) == 1 + sweep["models"]


def test_early_stopping_replays_the_long_run(run):
    metrics, outdir = run
    es = metrics["early_stopping"]
    assert es["same_as_replay"] is True
    assert 1 <= es["picked_epoch"] <= es["stopped_at_epoch"] <= regularization.SMOKE["es_epochs"]
    history = (outdir / "history.csv").read_text().splitlines()
    assert len(history) == 1 + regularization.SMOKE["es_epochs"]


def test_penalty_table(run):
    metrics, outdir = run
    table = metrics["penalties"]
    assert list(table) == list(regularization.SMOKE["combinations"])
    for row in table.values():
        shares = [row["share_abs_below_1e-3"], row["share_abs_below_1e-6"],
                  row["share_exactly_zero"]]
        assert 1.0 >= shares[0] >= shares[1] >= shares[2] >= 0.0
        assert 0.0 <= row["test_error"] <= 1.0
    assert len((outdir / "penalties.csv").read_text().splitlines()) == 1 + len(table)


def test_unknown_penalty_name_is_a_clear_error():
    with pytest.raises(UsageError, match="bad value for combinations: l2\\+l3 .*'none' or "):
        _framework.make_config(regularization, overrides={"combinations": "l2+l3"})
    config = dataclasses.replace(regularization.Config(), combinations=("l2+l3",))
    with pytest.raises(ValueError, match="'l2\\+l3'"):  # run() checks too, without make_config
        regularization._combinations(config)


def test_share_key_names_the_threshold_without_a_dot():
    assert regularization._share_key(1e-3) == "share_abs_below_1e-3"
    assert regularization._share_key(1e-6) == "share_abs_below_1e-6"
    assert regularization._share_key(5e-4) == "share_abs_below_5e-4"


def test_gain_over_seeds_pairs_the_seeds():
    final = {"val_error": np.array([[0.08, 0.07, 0.075], [0.07, 0.072, 0.06]]),
             "val_loss": np.array([[0.4, 0.41, 0.39], [0.3, 0.31, 0.29]]),
             "test_error": np.array([[0.06, 0.06, 0.06], [0.05, 0.05, 0.05]])}
    gain = regularization._gain_over_seeds(final, 1)
    assert gain["seeds_best_lower"] == 2 and gain["seeds_best_higher"] == 1
    assert gain["val_error_ranges_apart"] is False and gain["beyond_seed_spread"] is False
    assert gain["val_loss_ranges_apart"] is True
    assert gain["test_error_gain"] == pytest.approx(0.01)


@pytest.mark.parametrize("overrides", [{"batch_size": "500"}, {"n_train": "5"}])
def test_a_batch_larger_than_the_training_set_is_a_usage_error(overrides):
    with pytest.raises(UsageError, match=r"batch_size: expected at most n_train="):
        _framework.make_config(regularization, smoke=True, overrides=overrides)
