"""The clip experiment at smoke size: every file and metric key (one module-scoped run); a bad
`--set` value or a bad config is refused before anything runs or is written."""

import csv
import dataclasses
import math

import pytest

from experiments import UsageError, _framework
from experiments import clip as exp
from tests import _smoke

FIGURES = {"similarity.png", "curves.png"}
FILES = {"config.json", "environment.json", "metrics.json", "history.csv", "zero_shot.csv",
         "timings.json", *FIGURES}
METRICS = {"zero_shot_accuracy", "test_error", "chance", "unseen_template",
           "zero_shot_accuracy_unseen", "zero_shot_accuracy_seen",
           "mean_zero_shot_accuracy_unseen", "mean_zero_shot_accuracy_seen",
           "zero_shot_accuracy_unseen_ensemble", "nearest_class_mean_accuracy",
           "linear_probe_accuracy", "new_words", "final_logit_scale", "final_train_loss",
           "class_floor", "final_val_zero_shot_accuracy", "n_train_pairs", "n_test",
           "vocab_size", "seq_len", "steps_per_epoch", "n_params"}
HISTORY = {"epoch", "loss", "logit_scale", "val_zero_shot", "val_zero_shot_seen",
           "val_zero_shot_loss"}


def config():
    return dataclasses.replace(exp.Config(), **exp.SMOKE)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip") / "run"
    return _framework.execute("clip", out=out, smoke=True, progress=False)


def test_smoke_writes_every_file(smoke):
    _, outdir = smoke
    assert {p.name for p in outdir.iterdir()} == FILES
    for name in FIGURES:
        assert (outdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_smoke_metrics_have_the_expected_keys_and_ranges(smoke):
    metrics, _ = smoke
    c = config()
    assert set(metrics) == METRICS
    assert metrics["unseen_template"] == exp.UNSEEN_TEMPLATES[0]
    assert set(metrics["zero_shot_accuracy_unseen"]) == set(exp.UNSEEN_TEMPLATES)
    assert set(metrics["zero_shot_accuracy_seen"]) == set(exp.TRAIN_TEMPLATES)
    assert metrics["zero_shot_accuracy"] == metrics["zero_shot_accuracy_unseen"][
        exp.UNSEEN_TEMPLATES[0]]
    assert metrics["test_error"] == pytest.approx(1 - metrics["zero_shot_accuracy"])
    for k in ("zero_shot_accuracy", "zero_shot_accuracy_unseen_ensemble",
              "nearest_class_mean_accuracy", "linear_probe_accuracy"):
        assert 0.0 <= metrics[k] <= 1.0, k
    # the unseen templates' new words really are absent from every training caption
    assert metrics["new_words"][exp.UNSEEN_TEMPLATES[0]] == ["drawing", "numeral"]
    assert 1.0 <= metrics["final_logit_scale"] <= c.max_scale
    assert metrics["n_test"] == 359 and metrics["n_train_pairs"] == 1079 * len(exp.TRAIN_TEMPLATES)
    assert metrics["steps_per_epoch"] == metrics["n_train_pairs"] // c.batch_size
    assert 0 < metrics["class_floor"] < math.log(c.batch_size)
    assert math.isfinite(metrics["final_train_loss"])


def test_smoke_timings_are_in_timings_json_not_metrics(smoke):
    _, outdir = smoke
    timings = _smoke.assert_no_timings_in_metrics(outdir)
    assert timings["train_seconds"] > 0


def test_smoke_history_and_zero_shot_table(smoke):
    _, outdir = smoke
    c = config()
    with open(outdir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) == HISTORY and len(rows) == c.epochs
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])  # it learns, even at smoke size
    with open(outdir / "zero_shot.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["template"] for r in table] == list(exp.TRAIN_TEMPLATES + exp.UNSEEN_TEMPLATES)
    assert [r["seen_in_training"] for r in table].count("True") == len(exp.TRAIN_TEMPLATES)


@pytest.mark.parametrize("overrides, match", [
    ({"n_heads": "3"}, "n_heads"),  # does not divide d_model = 32
    ({"epochs": "0"}, "epochs"),
    ({"image_channels": "8,8,8,8"}, "image_channels"),
    ({"init_temperature": "0.005"}, "init_temperature"),
    ({"learning_rate": "-1"}, "learning_rate"),
    ({"max_scale": "nan"}, "max_scale"),
])
def test_bad_set_value_is_refused_before_anything_runs(tmp_path, overrides, match):
    out = tmp_path / "run"
    with pytest.raises(UsageError, match=match):
        _framework.execute("clip", out=out, overrides=overrides, progress=False)
    assert not out.exists() and not any(tmp_path.iterdir())


def test_bad_config_is_refused_by_run_before_training(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        exp.run(dataclasses.replace(exp.Config(), batch_size=100_000), tmp_path)
    with pytest.raises(ValueError, match="n_heads"):
        exp.run(dataclasses.replace(exp.Config(), n_heads=5), tmp_path)
    assert not any(tmp_path.iterdir())
