"""The padding experiment at smoke size: every file and metric; the masked models' scores do
not move with the padding (exact math, so it holds after one epoch too) while the unmasked
ones' do; the task's data are what its docstring says; a bad ``--set`` is refused before
anything runs."""

import csv
import dataclasses
import json

import numpy as np
import pytest

from experiments import UsageError, _framework
from experiments import padding as exp
from tests import _smoke

FILES = {"config.json", "environment.json", "metrics.json", "history.csv", "results.csv",
         "padding.png"}


def config():
    return dataclasses.replace(exp.Config(), **exp.SMOKE)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return _smoke.run(tmp_path_factory, "padding")


def test_smoke_writes_every_file_and_the_metrics(smoke):
    metrics, outdir = smoke
    c = config()
    _smoke.assert_files(outdir, FILES, {"padding.png"})
    assert json.loads((outdir / "metrics.json").read_text()) == metrics
    names = {f"{k}_{m}" for k in c.models for m in ("masked", "unmasked")}
    assert set(metrics["results"]) == names
    for r in metrics["results"].values():
        assert set(r["accuracy"]) == {str(T) for T in c.eval_lengths}
    with open(outdir / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(names) * len(c.eval_lengths)
    with open(outdir / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == len(names) * c.epochs


def test_masked_scores_ignore_the_padding_and_unmasked_ones_do_not(smoke):
    metrics, _ = smoke
    for kind in config().models:
        masked, unmasked = (metrics["results"][f"{kind}_{m}"] for m in ("masked", "unmasked"))
        assert masked["max_score_change"] < 1e-4 and masked["same_predictions"]
        assert unmasked["max_score_change"] > 1e-3  # teeth: the padding reaches them
        assert metrics["claims"][f"{kind}_masked_invariant"]


def test_the_task_is_what_it_says():
    c = config()
    X, y, lengths = exp.majority(np.random.default_rng(0), 500, c, 20)
    assert X.shape == (500, 20) and X.dtype == np.int32
    assert lengths.min() >= c.min_length and lengths.max() <= c.max_length
    for x, label, k in zip(X, y, lengths):
        assert (x[:k] >= 1).all() and (x[:k] <= c.vocab).all() and (x[k:] == exp.PAD).all()
        ones, twos = int((x == 1).sum()), int((x == 2).sum())
        assert ones != twos and label == int(ones > twos)
    assert 0.3 < y.mean() < 0.7
    np.testing.assert_array_equal(exp.pad_to(X[:2, :5], 8)[:, 5:], 0)


@pytest.mark.parametrize("bad", ["min_length=17", "eval_lengths=8,16", "batch_size=129",
                                 "d_model=7", "models=gru", "vocab=2"])
def test_bad_set_is_refused_before_anything_runs(tmp_path, bad):
    out = tmp_path / "run"
    key, value = bad.split("=")
    with pytest.raises(UsageError, match=key):
        _framework.execute("padding", out=out, smoke=True, progress=False,
                           overrides={key: value})
    assert not out.exists()
