"""The densenet experiment: the smoke run writes every file with the expected metrics (one
module-scoped run: two tiny nets, one epoch, two seeds); a bad config fails before
anything compiles."""

import csv
import dataclasses
import json

import pytest

from experiments import _framework
from experiments import densenet as exp
from nets import densenet

FIGURES = {"test_error.png", "learning_curves.png", "weights.png"}
FILES = {"config.json", "environment.json", "metrics.json", "history.csv", "timings.json",
         *FIGURES}
SPREAD = {"mean", "sd", "min", "max", "per_seed"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("densenet") / "run"
    return _framework.execute("densenet", out=out, smoke=True, progress=False)


def config():
    return dataclasses.replace(exp.Config(), **exp.SMOKE)


def test_smoke_writes_every_file(smoke):
    _, outdir = smoke
    assert {p.name for p in outdir.iterdir()} == FILES
    for name in FIGURES:
        assert (outdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert set(json.loads((outdir / "timings.json").read_text())["seconds"]) == set(exp.NETS)


def test_smoke_metrics_have_the_expected_keys(smoke):
    metrics, _ = smoke
    c = config()
    assert set(metrics) == {"seeds", "split", *exp.NETS, "plain_width",
                            "params_relative_difference", "densenet_minus_plain", "test_error"}
    assert metrics["seeds"] == [c.seed + i for i in range(c.seeds)]
    assert metrics["split"] == {"n_train": c.n_train, "n_val": 359, "n_test": 359}
    net = densenet.model(growth=c.growth, blocks=c.blocks)
    assert metrics["densenet"]["params"] == densenet.n_params(net)
    assert metrics["plain"]["params"] == densenet.plain_params(metrics["plain_width"],
                                                              blocks=c.blocks)
    for name in exp.NETS:
        m = metrics[name]
        assert set(m) == {"test_error", "val_error", "best_epoch", "epochs_run", "params",
                          "connections"}
        assert set(m["test_error"]) == set(m["val_error"]) == SPREAD
        assert len(m["test_error"]["per_seed"]) == len(m["best_epoch"]) == c.seeds
        assert all(0.0 <= e <= 1.0 for e in m["test_error"]["per_seed"])
        assert m["connections"] > m["params"] > 0
    d = metrics["densenet_minus_plain"]
    assert d["seeds_densenet_lower"] + d["seeds_tied"] + d["seeds_plain_lower"] == c.seeds
    assert metrics["test_error"] == metrics["densenet"]["test_error"]["mean"]


def test_smoke_history_has_a_row_per_net_seed_and_epoch(smoke):
    metrics, outdir = smoke
    with open(outdir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) == {"net", "seed", "epoch", "loss", "error", "val_loss", "val_error"}
    assert len(rows) == sum(sum(metrics[n]["epochs_run"]) for n in exp.NETS)


@pytest.mark.parametrize("bad, match", [({"seeds": 0}, "seeds"), ({"n_train": 5}, "n_train"),
                                        ({"growth": 0}, "growth")])
def test_bad_config_is_refused_before_training(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        exp.run(dataclasses.replace(exp.Config(), **bad), tmp_path)
    assert not any(tmp_path.iterdir())
