"""The cnn experiment: the smoke run writes every file with the expected metrics; the order
of the nets against ESL's on hand-made accuracies."""

import csv
import dataclasses
import json

import numpy as np
import pytest

from experiments import _framework
from experiments import cnn as exp
from nets import cnn

FIGURES = {"accuracy.png", "filters.png", "learning_curves.png"}
FILES = {"config.json", "environment.json", "metrics.json", "history.csv", "timings.json",
         *FIGURES}
SPREAD = {"mean", "sd", "min", "max", "per_seed"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("cnn") / "run"
    return _framework.execute("cnn", out=out, smoke=True, progress=False)


def config():
    return dataclasses.replace(exp.Config(), **exp.SMOKE)


def test_smoke_writes_every_file(smoke):
    _, outdir = smoke
    assert {p.name for p in outdir.iterdir()} == FILES
    for name in FIGURES:
        assert (outdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "seconds" in json.loads((outdir / "timings.json").read_text())


def test_smoke_metrics_have_the_expected_keys(smoke):
    metrics, _ = smoke
    c = config()
    assert set(metrics) == {"seeds", "split", "esl", "order", "compare"}
    assert metrics["seeds"] == [c.seed + i for i in range(c.seeds)]
    split = metrics["split"]
    assert split["n_train"] == c.n_train == 320 and split["n_test"] == 1797 - 320
    assert sum(split["train_per_class"]) == 320 and min(split["train_per_class"]) >= 31
    assert set(metrics["esl"]) == set(c.nets)
    for name, m in metrics["esl"].items():
        net = cnn.esl_nets()[name]
        assert set(m["test_accuracy"]) == SPREAD and len(m["test_accuracy"]["per_seed"]) == c.seeds
        assert 0.1 < m["test_accuracy"]["mean"] <= 1.0  # better than chance after two epochs
        assert (m["params"], m["connections"]) == (net.params, net.connections)
        esl = cnn.ESL_TABLE_11_1[name]
        assert (m["esl_accuracy"], m["esl_params"], m["esl_connections"]) == (
            esl["accuracy"], esl["weights"], esl["links"])
    assert metrics["order"]["esl"] == list(c.nets)
    compare = metrics["compare"]
    assert set(compare) == {"cnn", "mlp", "cnn_minus_mlp", "split"}
    assert compare["split"] == {"n_train": 1079, "n_val": 359, "n_test": 359}
    for name in ("cnn", "mlp"):
        m = compare[name]
        assert set(m["test_error"]) == set(m["val_error"]) == SPREAD
        assert len(m["best_epoch"]) == len(m["epochs_run"]) == c.seeds
        assert m["connections"] >= m["params"] > 0
    assert compare["mlp"]["params"] == 64 * 32 + 32 + 32 * 10 + 10  # SMOKE's 64-32-10
    counts = compare["cnn_minus_mlp"]
    assert counts["seeds_cnn_lower"] + counts["seeds_tied"] + counts["seeds_mlp_lower"] == c.seeds


def test_smoke_history_has_a_row_per_net_seed_and_epoch(smoke):
    metrics, outdir = smoke
    c = config()
    with open(outdir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    esl = [r for r in rows if r["part"] == "esl"]
    assert len(esl) == len(c.nets) * c.seeds * c.epochs
    compare = [r for r in rows if r["part"] == "compare"]
    assert len(compare) == sum(sum(metrics["compare"][n]["epochs_run"]) for n in ("cnn", "mlp"))
    assert set(rows[0]) == {"part", "net", "seed", "epoch", "loss", "val_loss", "val_error"}


def test_order_counts_paired_seeds():
    acc = {"net1": np.array([0.90, 0.91, 0.92]), "net2": np.array([0.91, 0.91, 0.90]),
           "net5": np.array([0.95, 0.96, 0.97])}
    order = exp._order(acc)
    assert order["esl"] == ["net1", "net2", "net5"]
    assert order["by_mean_accuracy"] == ["net2", "net1", "net5"]  # 0.9067 < 0.91 < 0.96
    assert not order["same_as_esl"] and order["pairs_as_esl_by_mean"] == 2
    assert order["pairs"]["net1<net2"] == {
        "mean_difference": pytest.approx(-0.01 / 3), "seeds_as_esl": 1, "seeds_tied": 1,
        "seeds_against_esl": 1}
    assert order["pairs"]["net2<net5"]["seeds_as_esl"] == 3


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="nets"):
        exp.run(dataclasses.replace(exp.Config(), nets=("net6",)), tmp_path)
