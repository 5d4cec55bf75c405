"""The diffusion experiment at smoke size: every file and metric (one module-scoped run:
T = 20, one epoch of each denoiser, one of the classifier); bad configs are refused before
anything is compiled."""

import csv
import dataclasses

import pytest

from experiments import diffusion as exp
from tests import _smoke

FIGURES = {"samples_2d.png", "reverse_2d.png", "samples_digits.png", "reverse_digits.png",
           "loss.png"}
FILES = {"config.json", "environment.json", "metrics.json", "history.csv", "timings.json",
         *FIGURES}
CLASS_SCORES = {"confident_share", "class_counts", "classes_present", "class_entropy",
                "largest_class_share"}


def config():
    return dataclasses.replace(exp.Config(), **exp.SMOKE)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return _smoke.run(tmp_path_factory, "diffusion")


def test_smoke_writes_every_file(smoke):
    _, outdir = smoke
    _smoke.assert_files(outdir, FILES, FIGURES)


def test_smoke_metrics_have_the_expected_keys(smoke):
    metrics, _ = smoke
    c = config()
    assert set(metrics) == {"alpha_bar_T", "T", "2d", "digits"}
    assert metrics["T"] == c.T and 0 < metrics["alpha_bar_T"] < 1
    assert set(metrics["2d"]) == {"energy_distance", "energy_distance_heldout_halves",
                                  "energy_distance_noise", "n_samples", "n_heldout_half",
                                  "final_loss", "final_val_loss"}
    assert metrics["2d"]["n_heldout_half"] == c.n_heldout_2d // 2
    d = metrics["digits"]
    assert set(d) == {"samples", "real_test", "classifier_test_error", "n_samples", "n_test",
                      "final_loss", "final_val_loss"}
    for scores, n in ((d["samples"], c.n_samples_digits), (d["real_test"], 359)):
        assert set(scores) == CLASS_SCORES
        assert sum(scores["class_counts"]) == n and len(scores["class_counts"]) == 10
        assert 0.0 <= scores["confident_share"] <= 1.0
        assert 0.0 <= scores["class_entropy"] <= 1.0 + 1e-9


def test_smoke_timings_are_in_timings_json_not_metrics(smoke):
    _, outdir = smoke
    timings = _smoke.assert_no_timings_in_metrics(outdir)
    assert set(timings["seconds"]) == {"2d", "digits", "sample_2d", "sample_digits",
                                       "classifier"}


def test_smoke_history_has_a_row_per_set_and_epoch(smoke):
    _, outdir = smoke
    c = config()
    with open(outdir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) == {"set", "epoch", "loss", "val_loss"}
    assert len(rows) == c.epochs_2d + c.epochs_digits


@pytest.mark.parametrize("bad, match", [({"keep": (2000,)}, "keep"),
                                        ({"beta_T": 1e-5}, "beta_T"),
                                        ({"emb_dim": 7}, "emb_dim"),
                                        ({"n_heldout_2d": 4}, "n_heldout_2d")])
def test_bad_config_is_refused_before_training(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        exp.run(dataclasses.replace(exp.Config(), **bad), tmp_path)
    assert not any(tmp_path.iterdir())
