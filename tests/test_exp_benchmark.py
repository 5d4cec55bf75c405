"""The benchmark experiment at smoke size: it runs and writes its files (no timing is
asserted: the numbers of a shared machine are measurements, not results); peers that are
not installed are skipped with a line; the FLOP count of an MLP step."""

import dataclasses
import json
import math

import pytest

from experiments import _benchmark_systems as systems
from experiments import _framework
from experiments import benchmark as exp

FILES = {"config.json", "environment.json", "metrics.json", "results.json", "table.md",
         "ratios.png"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmark") / "run"
    return _framework.execute("benchmark", out=out, smoke=True, progress=False)


def test_smoke_writes_every_file(smoke):
    metrics, outdir = smoke
    assert {p.name for p in outdir.iterdir()} == FILES
    assert (outdir / "ratios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((outdir / "results.json").read_text())
    assert set(results["w1"]["steady_ms"]) == {"library", "scan", *exp.SMOKE["peers"]}
    assert len(results["targets"]) == len(metrics["targets_missed"]) + len(
        metrics["targets_not_measured"]) + metrics["targets_met"]
    table = (outdir / "table.md").read_text()
    for heading in ("## W1", "## W2", "## W3", "## Convolution and sequence models",
                    "## Targets", "1-minute load average"):
        assert heading in table
    assert set(results["models"]) == set(exp.SMOKE["models"])
    # each measured target shows the range of its repetitions beside the median
    assert "| target | wanted | measured | range | |" in table
    for t in results["targets"]:
        assert t["spread"] is None or t["spread"][0] <= t["spread"][1]


def test_a_peer_that_is_not_installed_is_skipped_with_its_reason(monkeypatch):
    real = systems.importlib.util.find_spec
    monkeypatch.setattr(systems.importlib.util, "find_spec",
                        lambda name: None if name in ("torch", "flax") else real(name))
    available, skipped = exp.peers(exp.Config())
    assert available == ["sklearn", "numpy"]  # the order of Config.peers
    assert set(skipped) == {"torch", "linen", "nnx"}
    assert "torch is not installed" in skipped["torch"] and ".[bench]" in skipped["torch"]


def test_mlp_step_flops_counts_forward_and_both_backward_products():
    # 2 b (n_in n_out) forward per layer, the same for every weight gradient, and the input
    # gradient of the second layer only: 2 * 3 * (2 * (4*5 + 5*2) + 5*2) = 420
    assert exp.mlp_step_flops((4, 5, 2), 3) == 420


def test_a_transformer_width_that_2_heads_cannot_split_is_refused():
    with pytest.raises(ValueError, match="seq_width"):
        exp.check(dataclasses.replace(exp.Config(), seq_width=9))


def test_the_transformer_row_times_the_written_attention_beside_its_impl():
    """The row's model uses seq_attention_impl (custom_vjp by default); autodiff of the
    written attention trains the same model beside it and the table reports both."""
    cfg = dataclasses.replace(exp.Config(), **{**exp.SMOKE, "models": ("transformer",)})
    out = exp.models_vs_torch(cfg, False, exp._digits(0), lambda text: None)
    row = out["transformer"]
    assert row["attention_impl"] == "custom_vjp"
    assert set(row["rate"]) == {"library", "library_written"}
    assert all(math.isfinite(r) for r in row["rate"].values())  # timings: not asserted


def test_the_model_rows_devices_divide_every_batch_and_the_child_request_round_trips():
    """models_devices: the cores wanted, lowered to a count dividing every model's batch
    (data parallel splits it); models_measure (the child's side) rebuilds the Config from
    its JSON form and runs the rows (here on one device; on two: tests/test_distributed)."""
    cfg = dataclasses.replace(exp.Config(), **{**exp.SMOKE, "models": ("cnn",)})
    assert exp.models_devices(dataclasses.replace(cfg, models_devices=3)) == 2  # 32 and 4
    assert exp.models_devices(dataclasses.replace(cfg, models_devices=4)) == 4
    assert exp.models_devices(dataclasses.replace(cfg, models_devices=1)) == 1
    request = json.loads(json.dumps({"config": dataclasses.asdict(cfg), "have_torch": False,
                                     "devices": 1}))
    out = exp.models_measure(request)
    assert set(out) == {"cnn"} and "devices" not in out["cnn"]
    assert set(out["cnn"]["rate"]) == {"library", "library_conv"}


def test_the_report_shows_the_model_rows_on_every_core_and_judges_them_there(smoke, tmp_path):
    """A model row from a run with several CPU devices (its fields as ``models_vs_torch``
    writes them, PyTorch included): the table's all-devices columns, the target judged on
    every core, and both bars in the chart."""
    from experiments import _benchmark_report as report
    _, outdir = smoke
    results = json.loads((outdir / "results.json").read_text())
    raw = {"library": [0.10, 0.12], "library_devices": [0.05, 0.06], "library_conv": [0.3, 0.3],
           "torch": [0.25, 0.30]}
    results["models"]["cnn"] = {
        "unit": "examples/s", "per_epoch": 1056, "devices": 2, "raw_epoch_s": raw,
        "rate": {n: 1056 / sorted(v)[len(v) // 2] for n, v in raw.items()},
        "conv_impl": "patches"}
    row = results["models"]["cnn"]
    row["speedup_torch"] = row["rate"]["library"] / row["rate"]["torch"]
    row["speedup_torch_devices"] = row["rate"]["library_devices"] / row["rate"]["torch"]
    rows = {t["name"]: t for t in report.targets(results)}
    cnn = rows["CNN training: library (2 CPU devices, data parallel) vs PyTorch eager"]
    assert cnn["value"] == pytest.approx(5.0) and cnn["met"] is True
    assert cnn["spread"] == [pytest.approx(5.0), pytest.approx(5.0)]  # 0.25/0.05, 0.30/0.06
    table = report.markdown({**results, "targets": list(rows.values())})
    assert "| cnn | examples/s | 8,800 | 17,600 (2) | 3,520 | 2.50x | 5.00x | >= 2x |" in table
    assert "library_devices" not in table  # not taken for another Conv2D impl
    report.plot(results, tmp_path / "ratios.png")
    assert (tmp_path / "ratios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
