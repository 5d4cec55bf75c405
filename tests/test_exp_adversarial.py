"""The adversarial experiment: the smoke run writes every file with the expected metrics."""

import csv
import dataclasses

import pytest

from experiments import adversarial as exp
from tests import _smoke

FIGURES = {"accuracy_vs_eps.png", "examples.png"}
FILES = {"config.json", "environment.json", "metrics.json", "history.csv", "timings.json",
         *FIGURES}
RESULT = {"architecture", "params", "training", "best_epoch", "epochs_run",
          "clean_test_accuracy", "fgsm_accuracy", "pgd_accuracy",
          "strong_pgd_accuracy_at_eps_train"}
GAIN = {"clean_accuracy_standard", "clean_accuracy_adversarial", "clean_accuracy_cost",
        "strong_pgd_accuracy_standard", "strong_pgd_accuracy_adversarial",
        "strong_pgd_accuracy_gain", "pgd_accuracy_gain"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return _smoke.run(tmp_path_factory, "adversarial")


def test_smoke_writes_every_file(smoke):
    _, outdir = smoke
    _smoke.assert_files(outdir, FILES, FIGURES)


def test_smoke_metrics_have_the_expected_keys(smoke):
    metrics, outdir = smoke
    c = dataclasses.replace(exp.Config(), **exp.SMOKE)
    assert set(metrics) == {"eps_grey", "eps_train_grey", "n_test", "models",
                            "adversarial_training"}
    assert metrics["eps_grey"] == list(c.eps_grey) and metrics["n_test"] == 359
    runs = {n for net in c.nets for n in (net, f"{net}_adv")}
    assert set(metrics["models"]) == runs
    for name, r in metrics["models"].items():
        assert set(r) == RESULT, name
        assert len(r["fgsm_accuracy"]) == len(r["pgd_accuracy"]) == len(c.eps_grey)
        # eps = 0 is no attack: every curve starts at the clean accuracy
        assert r["fgsm_accuracy"][0] == r["pgd_accuracy"][0] == r["clean_test_accuracy"]
        assert 0.0 <= r["strong_pgd_accuracy_at_eps_train"] <= r["clean_test_accuracy"]
    assert set(metrics["adversarial_training"]) == set(c.nets)
    for gain in metrics["adversarial_training"].values():
        assert set(gain) == GAIN
    with open(outdir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["model"] for r in rows} == runs
    assert set(rows[0]) == {"model", "epoch", "loss", "val_loss", "error", "val_error",
                            "adv_error", "val_adv_error"}
