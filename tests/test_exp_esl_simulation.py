"""esl-simulation at smoke size: every file, the claims as booleans, the penalty conversion."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import _framework
from experiments import esl_simulation as esl
from nets import mlp, objective, penalties

FILES = {"config.json", "environment.json", "metrics.json", "timings.json", "history.csv",
         "test_errors.csv",
         "sum_of_sigmoids.png", "radial.png", "decay_sweep.png", "convergence.png"}
CLAIMS = {"c1_two_units_best_with_mild_decay", "c1b_overfits_without_decay",
          "c2_strong_decay_removes_overfitting", "c3_radial_well_above_bayes",
          "c4_decay_0.1_near_optimal"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("esl") / "run"
    metrics, folder = _framework.execute("esl-simulation", out=out, smoke=True, progress=False)
    return metrics, folder


def test_smoke_writes_every_file(smoke):
    metrics, folder = smoke
    assert {p.name for p in folder.iterdir()} == FILES
    assert json.loads((folder / "metrics.json").read_text()) == metrics
    with open(folder / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["program"] for r in rows} == {"grid", "decay_sweep"}
    assert {r["target"] for r in rows} == {"sum_of_sigmoids", "radial"}
    last = max(int(r["epoch"]) for r in rows)
    assert last == esl.SMOKE["epochs"]
    assert all(np.isfinite(float(r["objective_rel_median"])) for r in rows)


def test_smoke_metrics_have_claims_and_penalty_conversion(smoke):
    metrics, _ = smoke
    assert set(metrics["claims"]) == CLAIMS
    for claim in metrics["claims"].values():
        assert isinstance(claim["holds"], bool)
        assert len(claim) > 1  # the numbers behind the boolean, or what is missing
    # a smoke run says it cannot check the claims, and why
    assert metrics["claims_checked"] is False
    reason = metrics["claims_not_checked_because"]
    assert reason.startswith("smoke run: ") and "2 starts (needs >= 10)" in reason
    assert "c2_strong_decay_removes_overfitting" in reason
    # smoke sizes (0, 2): one size >= 1, so no rise with size can be measured
    assert metrics["claims"]["c1b_overfits_without_decay"]["holds"] is False
    assert "missing" in metrics["claims"]["c2_strong_decay_removes_overfitting"]
    assert "median_at_2" in metrics["claims"]["c1_two_units_best_with_mild_decay"]
    assert "median_at_0.1" in metrics["claims"]["c4_decay_0.1_near_optimal"]
    pc = metrics["penalty_conversion"]
    assert pc["rule"] == "l2 = 2 * lambda_ESL / n_train" and pc["n_train"] == 100
    assert pc["l2"] == {"0.0": 0.0, "0.0005": 1e-05, "0.1": 0.002}
    assert pc["verified"] is True
    table = metrics["relative_test_error"]
    assert set(table) == {"sum_of_sigmoids", "radial"}
    for target in table.values():
        for row in target.values():
            assert len(row["median"]) == len(esl.SMOKE["hidden_units"]) and min(row["min"]) > 0
    assert metrics["data"]["radial"]["bayes_error_scaled"] == pytest.approx(0.2)
    assert metrics["data"]["sum_of_sigmoids"]["y_scale"] == 1.0
    assert len(metrics["decay_sweep"]["median"]) == len(esl.SMOKE["sweep_decays"])


def test_penalty_conversion_matches_esl_objective(key):
    """n * ((1/n) sum L_i + (l2/2) sum W^2) == sum L_i + lambda sum W^2 with l2 = 2 lambda / n."""
    n, lam = 100, 0.1
    k1, k2, k3 = jax.random.split(key, 3)
    params = mlp.init(k1, (2, 5, 1), scheme="esl")
    X = jax.random.normal(k2, (n, 2))
    y = jax.random.normal(k3, (n, 1))
    lib = objective.mlp_objective(params, X, y, loss="squared_error", l2=esl.esl_to_l2(lam, n))
    f = jax.vmap(mlp.apply, in_axes=(None, 0))(params, X)
    sum_w2 = sum(jnp.sum(layer["W"] ** 2) for layer in params)  # biases not penalised
    np.testing.assert_allclose(n * lib, jnp.sum((y - f) ** 2) + lam * sum_w2, rtol=1e-5)
    assert float(2 * penalties.l2(params)) == pytest.approx(float(sum_w2), rel=1e-6)
    assert esl.esl_to_l2(0.0005, 100) == pytest.approx(1e-5)


def test_max_rise_definition():
    assert esl._max_rise({0: 9.0, 1: 3.0, 2: 2.0, 3: 2.0}) == 1.0  # never rises (0 ignored)
    assert esl._max_rise({1: 3.0, 2: 1.0, 3: 1.5}) == pytest.approx(1.5)
    assert esl._max_rise({0: 1.0, 2: 1.0}) is None  # one hidden size: nothing to compare


def _table(medians_by_decay):
    return {f"decay={d}": {"median": np.asarray(m)} for d, m in medians_by_decay.items()}


def test_claims_on_a_table_like_esl():
    """Medians shaped like ESL's figures make every claim hold; flipped ones make them fail."""
    hidden = (0, 1, 2, 3, 4)
    sig = _table({0.0: [1.7, 1.4, 1.1, 1.3, 1.6], 0.0005: [1.7, 1.4, 1.1, 1.2, 1.3],
                  0.1: [1.7, 1.3, 1.1, 1.1, 1.1]})
    rad = _table({0.0005: [5.3, 8.0, 10.0, 12.0, 14.0]})
    sweep = {"decays": [0.0, 0.05, 0.1, 0.15], "median": [1.6, 1.2, 1.1, 1.12]}
    claims = esl._claims({"sum_of_sigmoids": sig, "radial": rad}, sweep, hidden, 4.0)
    assert set(claims) == CLAIMS
    assert all(c["holds"] for c in claims.values()), claims
    assert claims["c3_radial_well_above_bayes"]["hidden_nets_worse_than_constant_fit"] is True
    assert claims["c2_strong_decay_removes_overfitting"]["max_rise_decay=0.0"] == \
        pytest.approx(1.6 / 1.1)

    sig[f"decay={0.1}"]["median"] = np.asarray([1.7, 1.3, 1.1, 1.3, 1.5])  # rises again
    sig[f"decay={0.0005}"]["median"] = np.asarray([1.7, 1.4, 1.5, 1.1, 1.3])  # 3 units best
    rad[f"decay={0.0005}"]["median"] = np.asarray([5.3, 1.5, 1.2, 1.3, 1.4])  # near Bayes
    sweep["median"] = [1.6, 1.0, 1.1, 1.12]  # 0.05 clearly best
    claims = esl._claims({"sum_of_sigmoids": sig, "radial": rad}, sweep, hidden, 4.0)
    assert not any(claims[c]["holds"] for c in CLAIMS - {"c1b_overfits_without_decay"})


def test_claims_are_checked_only_at_full_size():
    import dataclasses
    full = esl.Config()
    complete = {"c1": {"holds": True}}
    assert esl._why_claims_unchecked(full, complete) == ""
    short = dataclasses.replace(full, epochs=5000)
    assert esl._why_claims_unchecked(short, complete).startswith(
        "run too small: 5,000 epochs (needs >= 20,000)")
    assert "lacks what c2 needs" in esl._why_claims_unchecked(full, {"c2": {"missing": "x"}})
