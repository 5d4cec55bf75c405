"""The digits experiment (the main job) at smoke size: files, metrics, reproducibility, CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache

from experiments import _framework
from experiments import digits

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {"learning_curves.png", "confusion_matrix.png", "first_layer_weights.png",
           "misclassified.png"}
FILES = {"config.json", "environment.json", "metrics.json", "history.csv", "timings.json",
         *FIGURES}
_CACHE_OPTIONS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                  "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A private compilation cache for this module; JAX's settings restored afterwards."""
    path = tmp_path_factory.mktemp("xla-cache")
    saved = {k: getattr(jax.config, k) for k in _CACHE_OPTIONS}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAXNETS_CACHE_DIR", str(path))
        yield path
    for k, v in saved.items():
        jax.config.update(k, v)
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir):
    """The smoke run twice with seed 0, in this process."""
    root = tmp_path_factory.mktemp("digits")
    return [_framework.execute("digits", out=root / name, smoke=True, seed=0, progress=False)
            for name in ("a", "b")]


def test_smoke_run_writes_every_file(runs):
    _, outdir = runs[0]
    assert {p.name for p in outdir.iterdir()} == FILES
    for name in FIGURES:
        assert (outdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_metrics_and_history(runs):
    metrics, outdir = runs[0]
    single, ensemble = metrics["single_mlp"], metrics["ensemble"]
    assert metrics["final_model"] == "ensemble"
    assert metrics["test_error"] == ensemble["test_error"]  # the headline is the final model's
    assert "val_error" not in ensemble  # phase 2 trains on the validation set
    assert ensemble["members"] == digits.SMOKE["ensemble"]
    assert ensemble["trained_on"] == "training + validation"
    assert ensemble["test_misclassified"] == round(ensemble["test_error"] * metrics["n_test"])
    for key in ("train_error", "val_error", "test_error"):
        assert 0.0 <= single[key] <= 1.0
    assert single["test_misclassified"] == round(single["test_error"] * metrics["n_test"])
    assert ensemble["epochs"] == single["best_epoch"]
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (1079, 359, 359)
    hidden = digits.SMOKE["hidden"][0]
    assert metrics["n_params"] == 64 * hidden + hidden + hidden * 10 + 10
    assert 1 <= single["best_epoch"] <= single["epochs_run"] <= digits.SMOKE["epochs"]
    lines = (outdir / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_loss,train_error,val_loss,val_error,minibatch_loss"
    assert len(lines) == 1 + single["epochs_run"]
    config = json.loads((outdir / "config.json").read_text())
    assert config["seed"] == 0 and config["hidden"] == list(digits.SMOKE["hidden"])


def test_same_seed_gives_identical_metrics_file(runs):
    (_, a), (_, b) = runs
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    assert (a / "history.csv").read_bytes() == (b / "history.csv").read_bytes()


def test_cli_run_exits_zero_and_prints_the_test_error(tmp_path, cache_dir, runs):
    out = tmp_path / "cli"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAXNETS_CACHE_DIR": str(cache_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "experiments", "run", "digits", "--smoke", "--out", str(out),
         "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "test error" in result.stdout and "\n  test_error = " in result.stdout
    assert "single_mlp.test_error = " in result.stdout
    assert "ensemble.test_error = " in result.stdout
    assert {p.name for p in out.iterdir()} == FILES
    # another process, the same seed: the same bytes
    assert (out / "metrics.json").read_bytes() == (runs[0][1] / "metrics.json").read_bytes()


def test_without_phase_2_the_headline_is_the_single_mlp(tmp_path, cache_dir):
    metrics, _ = _framework.execute(
        "digits", out=tmp_path / "single", smoke=True, seed=0, progress=False,
        overrides={"refit": "false", "ensemble": "1", "epochs": "2", "patience": "1"})
    assert metrics["final_model"] == "single_mlp" and "ensemble" not in metrics
    assert metrics["test_error"] == metrics["single_mlp"]["test_error"]


def test_a_batch_larger_than_the_training_set_names_batch_size():
    from experiments import UsageError
    with pytest.raises(UsageError, match=r"batch_size: expected at most the 1079 training "
                                         r"images .*got 100000"):
        _framework.make_config(digits, overrides={"batch_size": "100000"})
