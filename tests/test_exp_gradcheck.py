"""The gradcheck experiment: its smoke run writes every file and every case passes; a new
model is one entry in ``experiments.gradcheck.CASES``, and a wrong gradient fails its row."""

import dataclasses
import json

import jax.numpy as jnp
import pytest

from experiments import _framework
from experiments import gradcheck as exp
from nets import gradcheck

FILES = {"config.json", "environment.json", "metrics.json", "gradcheck.json", "gradcheck.csv",
         "gradcheck.png"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gradcheck") / "run"
    return _framework.execute("gradcheck", out=out, smoke=True, progress=False)


def test_smoke_writes_every_file(smoke):
    _, outdir = smoke
    assert {p.name for p in outdir.iterdir()} == FILES


def test_smoke_every_case_passes(smoke):
    metrics, outdir = smoke
    config = dataclasses.replace(exp.Config(), **exp.SMOKE)
    expected = (len(config.activations) * len(config.losses) * len(config.depths)
                * len(config.penalties) + len(config.models))
    cases = json.loads((outdir / "gradcheck.json").read_text())["cases"]
    assert metrics["cases"] == len(cases) == expected
    assert metrics["passed"] == expected and metrics["failed"] == []
    assert 0 < metrics["worst_error"] <= config.tol
    for case in cases:
        assert case["passed"] and case["worst"] <= config.tol, case["name"]
        assert case["leaves"] and all(leaf["checked"] > 0 for leaf in case["leaves"])
    mlp = [c for c in cases if c["model"] == "mlp"]
    assert all(c["ad_ref"] is not None and c["ref_fd"] is not None for c in mlp)
    # the CNN against nets.backprop's hand-derived conv and max-pool backward passes, on
    # all 141 coordinates: autodiff and the chain rule by hand agree to rounding
    cnn = next(c for c in cases if c["name"] == "cnn-backprop")
    assert cnn["ad_ref"] <= 1e-12 and cnn["ref_fd"] <= config.tol and cnn["checked"] == 141
    # a sequence model on the per-position cross-entropy (labels (n, T), position 0 not
    # scored): all 88 coordinates of the Elman RNN
    rnn = next(c for c in cases if c["name"] == "rnn")
    assert rnn["checked"] == 88 and rnn["loss"] == "cross_entropy"
    header = (outdir / "gradcheck.csv").read_text().splitlines()[0]
    assert header.startswith("name,model,activation,loss,depth,penalty,ad_ref,ad_fd,ref_fd")


def test_same_seed_same_metrics(smoke, tmp_path):
    """float64 on CPU is deterministic: a second run gives the same numbers."""
    metrics, _ = smoke
    config = _framework.make_config(exp, smoke=True)
    again = _framework.to_jsonable(exp.run(config, tmp_path))
    assert _framework.dumps(again) == _framework.dumps(metrics)


def _quadratic(reference_factor):
    def check(config, key):
        A = jnp.array([[2.0, 0.5], [0.5, 1.0]])

        def objective(p, X, Y):
            return 0.5 * p["x"] @ A @ p["x"] + jnp.sum(X) * p["x"][0]

        def reference(p, X, Y):
            return {"x": reference_factor * (A @ p["x"]) + jnp.array([jnp.sum(X), 0.0])}

        return gradcheck.check(objective, {"x": jnp.array([1.0, -2.0])}, jnp.ones(3),
                               jnp.zeros(3), reference=reference, eps=config.eps)

    return check


def test_a_new_model_is_one_entry_and_a_wrong_gradient_fails(monkeypatch, tmp_path):
    monkeypatch.setitem(exp.CASES, "quadratic", exp.Case("quadratic", "-", "-", 0, "none",
                                                         _quadratic(1.0)))
    monkeypatch.setitem(exp.CASES, "broken", exp.Case("broken", "-", "-", 0, "none",
                                                      _quadratic(0.5)))
    config = exp.Config(activations=(), models=("quadratic", "broken"))
    metrics = exp.run(config, tmp_path)
    assert metrics["cases"] == 2 and metrics["passed"] == 1 and metrics["failed"] == ["broken"]
    rows = {r["name"]: r for r in json.loads((tmp_path / "gradcheck.json").read_text())["cases"]}
    assert rows["broken"]["ad_fd"] <= 1e-6 and rows["broken"]["ref_fd"] > 0.1
    assert (tmp_path / "gradcheck.png").stat().st_size > 0


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="models: expected names in"):
        exp.cases(exp.Config(models=("nope",)))
    with pytest.raises(ValueError, match="activation"):
        exp.cases(exp.Config(activations=("nope",)))
