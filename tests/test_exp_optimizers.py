"""The optimizers experiment: the smoke run writes every file with the expected metrics, and
Newton's method reaches a smaller gap in fewer steps than full-batch gradient descent."""

import csv
import dataclasses
import json

import pytest

from experiments import _framework
from experiments import optimizers as exp

FILES = {"config.json", "environment.json", "metrics.json", "history.csv", "tuning.csv",
         "timings.json", "loss_vs_steps.png", "loss_vs_seconds.png"}
CONFIG = dataclasses.replace(exp.Config(), **exp.SMOKE)
METHODS = {"gd" if b == 0 else f"sgd-{b}" for b in CONFIG.batch_sizes} | {"newton"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("optimizers") / "run"
    return _framework.execute("optimizers", out=out, smoke=True, progress=False)


def test_smoke_writes_every_file(smoke):
    _, outdir = smoke
    assert {p.name for p in outdir.iterdir()} == FILES
    assert all((outdir / f).stat().st_size > 0 for f in FILES)


def test_smoke_metrics_have_the_expected_keys_and_no_timings(smoke):
    metrics, _ = smoke
    assert set(metrics) == {"n_train", "learning_rate", "objective_optimum", "final_gap",
                            "steps", "steps_to_target_gap", "target_gap",
                            "newton_iterations", "newton_status"}
    for key in ("final_gap", "steps", "steps_to_target_gap"):
        assert set(metrics[key]) == METHODS, key
    assert set(metrics["learning_rate"]) == METHODS - {"newton"}
    assert all(gap >= 0 for gap in metrics["final_gap"].values())
    assert "second" not in json.dumps(metrics)  # timings go to timings.json


def test_newton_reaches_a_smaller_gap_in_fewer_steps_than_gradient_descent(smoke):
    metrics, _ = smoke
    gap, steps, reach = metrics["final_gap"], metrics["steps"], metrics["steps_to_target_gap"]
    assert metrics["newton_status"] == "converged"
    assert metrics["newton_iterations"] == steps["newton"] < steps["gd"]
    assert gap["newton"] < gap["gd"]
    assert reach["newton"] is not None
    assert reach["gd"] is None or reach["gd"] > reach["newton"]


def test_smoke_history_and_timings(smoke):
    metrics, outdir = smoke
    config = CONFIG
    with open(outdir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    per_method = {m: [r for r in rows if r["method"] == m] for m in METHODS}
    for batch, epochs in zip(config.batch_sizes, config.epochs):
        name = "gd" if batch == 0 else f"sgd-{batch}"
        assert len(per_method[name]) == epochs + 1  # the start, then every epoch
        assert int(per_method[name][-1]["step"]) == metrics["steps"][name]
    assert len(per_method["newton"]) == metrics["newton_iterations"] + 1
    assert min(float(r["gap"]) for r in rows) == 0.0  # the gap is to the best value found
    timings = json.loads((outdir / "timings.json").read_text())["methods"]
    assert set(timings) == METHODS
    for t in timings.values():
        assert len(t["cumulative_s"]) == len(t["step"])
        assert all(b >= a for a, b in zip(t["cumulative_s"], t["cumulative_s"][1:]))


def test_a_batch_larger_than_the_task_is_a_usage_error_before_any_work(tmp_path):
    from experiments import UsageError
    out = tmp_path / "run"
    with pytest.raises(UsageError, match=r"batch_sizes: expected sizes in \[0, n=1079\] .*got "
                                         r"2000"):
        _framework.execute("optimizers", out=out, smoke=True, progress=False,
                           overrides={"batch_sizes": "2000", "epochs": "1"})
    assert not out.exists()
