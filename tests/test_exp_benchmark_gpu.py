"""The accelerator benchmark at smoke size on the CPU (it runs and writes its files; its
numbers mean nothing there), its refusal to run on a CPU unasked, and its FLOP count."""

import json

import pytest

import experiments
from experiments import _framework
from experiments import benchmark_gpu as exp

FILES = {"config.json", "environment.json", "metrics.json", "results.json", "table.md",
         "shares.png"}


def test_smoke_writes_every_file(tmp_path):
    metrics, outdir = _framework.execute("benchmark-gpu", out=tmp_path / "run", smoke=True,
                                         progress=False)
    assert {p.name for p in outdir.iterdir()} == FILES
    assert (outdir / "shares.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((outdir / "results.json").read_text())
    assert set(results["peaks"]) == set(exp.DTYPES)
    assert {(r["batch"], r["dtype"]) for r in results["w2"]} == {(8, "float32"),
                                                                 (8, "bfloat16")}
    sweep = results["sweep"]
    assert sweep["models"] == 4 and sweep["loop_timed_models"] == 2  # scaled from 2 fits
    assert [r["impl"] for r in results["transformer"]] == ["written"]
    table = (outdir / "table.md").read_text()
    assert "Ran on a CPU" in table and "the first 2 fits, scaled to 4" in table
    assert set(metrics["transformer_mfu"]) == {"written"}


def test_on_a_cpu_it_refuses_unless_asked():
    with pytest.raises(experiments.UsageError, match="allow_cpu.*default backend here is "
                       "the CPU"):
        _framework.make_config(exp)


def test_transformer_flops_per_token_is_6n_plus_the_attention():
    # N = 1 * (4 * 2^2 + 2 * 2 * 8) + 2 * 5 = 58 weights; 6 N + 12 L T d = 348 + 72
    assert exp.transformer_flops_per_token(2, 1, 3, 5) == 420


def test_a_width_that_the_heads_cannot_split_is_refused():
    with pytest.raises(experiments.UsageError, match="tf_width"):
        _framework.make_config(exp, overrides={"tf_width": "30", "tf_heads": "4",
                                               "allow_cpu": "true"})
