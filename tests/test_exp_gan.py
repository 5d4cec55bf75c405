"""The gan experiment at smoke size: every file and metric (one module-scoped run: both
variants, two replicates in one vmapped program each, two snapshots); bad configs are
refused before anything is compiled."""

import csv
import dataclasses

import pytest

from experiments import gan as exp
from tests import _smoke

FIGURES = {"samples.png", "modes.png"}
FILES = {"config.json", "environment.json", "metrics.json", "history.csv", "snapshots.csv",
         "timings.json", *FIGURES}
SUMMARY = {"final_modes_covered", "final_high_quality", "mean_final_modes_covered",
           "mean_final_high_quality", "replicates_collapsed", "modes_covered_over_training",
           "high_quality_over_training", "largest_mode_share_final", "top_mode_changes"}


def config():
    return dataclasses.replace(exp.Config(), **exp.SMOKE)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return _smoke.run(tmp_path_factory, "gan")


def test_smoke_writes_every_file(smoke):
    _, outdir = smoke
    _smoke.assert_files(outdir, FILES, FIGURES)


def test_smoke_metrics_have_the_expected_keys(smoke):
    metrics, _ = smoke
    c = config()
    assert set(metrics) == {"n_modes", "epochs", "steps_per_epoch", "real_data", *exp.VARIANTS}
    assert metrics["epochs"] == [0, 1] and metrics["steps_per_epoch"] == 4
    assert metrics["real_data"]["modes_covered"] == c.n_modes
    for name in exp.VARIANTS:
        m = metrics[name]
        assert set(m) == SUMMARY
        assert len(m["final_modes_covered"]) == len(m["top_mode_changes"]) == c.seeds
        assert len(m["modes_covered_over_training"]) == c.snapshots + 1
        assert all(0 <= k <= c.n_modes for k in m["final_modes_covered"])
        assert all(0.0 <= q <= 1.0 for q in m["final_high_quality"])
        assert 0 <= m["replicates_collapsed"] <= c.seeds


def test_smoke_timings_are_in_timings_json_not_metrics(smoke):
    _, outdir = smoke
    timings = _smoke.assert_no_timings_in_metrics(outdir)
    assert set(timings["seconds"]) == set(exp.VARIANTS)
    assert all(s > 0 for s in timings["seconds"].values())


def test_same_seed_gives_byte_identical_metrics(smoke, tmp_path_factory):
    """The README's promise, on a second smoke run (a few seconds: its programs are cached)."""
    _, first = smoke
    _, second = _smoke.run(tmp_path_factory, "gan")
    assert (first / "metrics.json").read_bytes() == (second / "metrics.json").read_bytes()


def test_smoke_history_and_snapshots_have_a_row_each(smoke):
    _, outdir = smoke
    c = config()
    with open(outdir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) == {"variant", "replicate", "epoch", "d_loss", "g_loss", "d_real",
                            "d_fake"}
    assert len(rows) == len(exp.VARIANTS) * c.seeds * c.epochs
    with open(outdir / "snapshots.csv") as f:
        snaps = list(csv.DictReader(f))
    assert len(snaps) == len(exp.VARIANTS) * c.seeds * (c.snapshots + 1)
    assert {f"mode_{k}" for k in range(c.n_modes)} <= set(snaps[0])


@pytest.mark.parametrize("bad, match", [({"snapshots": 7}, "snapshots"),
                                        ({"batch_size": 255}, "batch_size"),
                                        ({"seeds": 0}, "seeds"), ({"std": 0.0}, "std")])
def test_bad_config_is_refused_before_training(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        exp.run(dataclasses.replace(exp.Config(), **bad), tmp_path)
    assert not any(tmp_path.iterdir())
