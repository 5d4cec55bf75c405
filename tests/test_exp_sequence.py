"""The sequence experiment at smoke size: every file, figure and metric key (one
module-scoped run: one model, one length, every task); a bad ``--set`` is refused before
anything runs, and the tasks' data are what their docstrings say."""

import csv
import dataclasses

import numpy as np
import pytest

from experiments import UsageError, _framework
from tests import _smoke
from experiments import sequence as exp
from nets import losses

FIGURES = {"accuracy.png", "cost.png", "attention.png", "generalization.png"}
FILES = {"config.json", "environment.json", "metrics.json", "results.csv", "history.csv",
         "cost.csv", "timings.json", *FIGURES}


def config():
    return dataclasses.replace(exp.Config(), **exp.SMOKE)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return _smoke.run(tmp_path_factory, "sequence")


def test_smoke_writes_every_file(smoke):
    _, outdir = smoke
    _smoke.assert_files(outdir, FILES, FIGURES)


def test_smoke_metrics_have_the_expected_keys(smoke):
    metrics, outdir = smoke
    c = config()
    (kind,) = c.models
    (L,) = c.lengths
    assert set(metrics) == {"lengths", "baseline_mse", "chance_accuracy", "steps", "params",
                            "attention", "generalization", *exp.TASKS}
    assert metrics["lengths"] == [L] and metrics["steps"] == c.n_train // c.batch_size
    assert set(metrics["params"][kind]) == {"adding", "token"}
    assert metrics["adding"][kind][str(L)] > 0
    for task in exp.TOKEN_TASKS:
        assert 0.0 <= metrics[task][kind][str(L)] <= 1.0
    assert set(metrics["attention"]) == {"length", "accuracy", "induction_attention",
                                         "induction_head", "uniform_at_query",
                                         "previous_token_attention", "previous_token_head",
                                         "uniform_at_target"}
    assert 0.0 <= metrics["attention"]["induction_attention"] <= 1.0
    gen = metrics["generalization"]
    assert gen["train_length"] == c.generalize_from
    assert set(gen[kind]) == set(exp.TOKEN_TASKS)
    assert all(set(gen[kind][t]) == {str(n) for n in c.generalize_to} for t in exp.TOKEN_TASKS)
    with open(outdir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(exp.TASKS) and set(rows[0]) == {
        "task", "model", "length", "score", "params", "final_loss"}


def test_smoke_timings_are_in_timings_json_not_metrics(smoke):
    _, outdir = smoke
    timings = _smoke.assert_no_timings_in_metrics(outdir)
    c = config()
    (kind,) = c.models
    (L,) = c.lengths
    assert timings["seconds_per_step"][kind][str(L)] > 0
    assert set(timings["train_seconds_per_run"]) == {f"{t}/{kind}/{L}" for t in c.tasks}
    assert timings["train_seconds"] >= sum(timings["train_seconds_per_run"].values())


@pytest.mark.parametrize("bad", ["generalize_from=12", "n_copy=5", "models=rnn,gru",
                                 "lengths=32,16", "batch_size=65", "d_model=7",
                                 "generalize_models=lstm"])
def test_bad_set_is_refused_before_anything_runs(tmp_path, bad):
    out = tmp_path / "run"
    key, value = bad.split("=")
    with pytest.raises(UsageError, match=key):
        _framework.execute("sequence", out=out, smoke=True, progress=False,
                           overrides={key: value})
    assert not out.exists()


def test_tasks_are_what_they_say():
    rng = np.random.default_rng(0)
    X, Y = exp.adding(rng, 50, 10)
    assert X.shape == (50, 10, 2) and Y.shape == (50, 1)
    assert (X[:, :5, 1].sum(1) == 1).all() and (X[:, 5:, 1].sum(1) == 1).all()
    np.testing.assert_allclose(Y[:, 0], (X[..., 0] * X[..., 1]).sum(1), rtol=1e-6)
    V, K = 6, 3
    X, Y = exp.selective_copy(rng, 50, 12, V, K)
    assert (X[:, -K:] == V + 1).all() and (Y[:, :-K] == losses.IGNORE).all()
    data = X[:, :-K]
    assert ((data < V).sum(1) == K).all()  # K tokens among blanks, copied in order
    np.testing.assert_array_equal(data[data < V].reshape(50, K), Y[:, -K:])
    X, Y, p = exp.induction(rng, 50, 12, V)
    rows = np.arange(50)
    assert ((X == V + 1).sum(1) == 2).all() and (X[rows, p] == V + 1).all()
    assert (Y[:, -1] == X[rows, p + 1]).all() and (Y[:, :-1] == losses.IGNORE).all()
