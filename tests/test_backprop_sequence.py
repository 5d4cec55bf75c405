"""The hand-derived backward passes of the LSTM through time and of single-head attention
(nets.backprop_sequence) against jax.grad of the library's own forward passes
(nets.rnn.lstm, nets.transformer.attention), in float64, per element to 1e-10; and proof
that the comparison has teeth: dropping the forget-gate path of the cell, the recurrent
path through U, the softmax Jacobian's rank-one term or the key path into x is caught.

Cheap by construction: jax.grad of each forward pass is compiled once (module fixtures) and
the hand-derived passes are NumPy.
"""

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import backprop_sequence as bps
from nets import gradcheck, rnn, transformer

TOL = 1e-10  # both sides exact up to rounding (~1e-15); a slip is an error of order 1
FLOOR = 1e-3  # entries below 1e-3 compare absolutely (to 1e-13)
T, D, N = 6, 3, 4  # LSTM: steps, input width, hidden units
TA, DA = 5, 4  # attention: positions, width

err = functools.partial(gradcheck.relative_error, floor=FLOOR)


def _rng(name):
    return np.random.default_rng(zlib.crc32(f"tests/test_backprop_sequence.py::{name}".encode()))


@pytest.fixture(scope="module")
def lstm_case():
    """Params, inputs, a nonzero initial carry, upstream gradients on every h_t and on c_T,
    and jax.grad's gradients w.r.t. (params, xs, h0, c0); float64."""
    rng = _rng("lstm")
    params = {"W": rng.normal(size=(4 * N, D)) / 2, "U": rng.normal(size=(4 * N, N)) / 2,
              "b": rng.normal(size=4 * N)}
    xs, h0, c0 = rng.normal(size=(T, D)), rng.normal(size=N), rng.normal(size=N)
    dys, dc_T = rng.normal(size=(T, N)), rng.normal(size=N)

    def contracted(params, xs, h0, c0):
        hs, (_, cT) = rnn.lstm(params, xs, rnn.LSTMState(h0, c0))
        return jnp.sum(dys * hs) + jnp.sum(dc_T * cT)

    with jax.enable_x64(True):
        hs = np.asarray(jax.jit(rnn.lstm)(params, xs, rnn.LSTMState(h0, c0))[0])
        auto = jax.jit(jax.grad(contracted, argnums=(0, 1, 2, 3)))(params, xs, h0, c0)
    return {"params": params, "xs": xs, "h0": h0, "c0": c0, "dys": dys, "dc_T": dc_T,
            "hs": hs, "autodiff": jax.tree.map(np.asarray, auto)}


@pytest.fixture(scope="module")
def attention_cases():
    """Causal and unmasked: params (one head), x, dy and jax.grad's (d params, dx)."""
    rng = _rng("attention")
    program = jax.jit(jax.grad(
        lambda p, x, dy, causal: jnp.sum(dy * transformer.attention(
            p, x, n_heads=1, causal=causal)[0]), argnums=(0, 1)), static_argnums=3)
    forward = jax.jit(lambda p, x: transformer.attention(p, x, n_heads=1, causal=True))
    cases = []
    with jax.enable_x64(True):
        for causal in (True, False):
            params = {k: rng.normal(size=(DA, DA)) for k in ("Wq", "Wk", "Wv", "Wo")}
            x, dy = rng.normal(size=(TA, DA)), rng.normal(size=(TA, DA))
            g, dx = program(params, x, dy, causal)
            case = {"params": params, "x": x, "dy": dy, "causal": causal,
                    "autodiff": (np.asarray(dx), jax.tree.map(np.asarray, g))}
            if causal:
                case["y"] = np.asarray(forward(params, x)[0])
            cases.append(case)
    return cases


def _lstm_errors(case):
    """Per-element relative errors of (W, U, b, xs, h0, c0): by hand vs jax.grad."""
    grads, dxs, dh0, dc0 = bps.lstm_backward(case["params"], case["xs"], case["dys"],
                                             h0=case["h0"], c0=case["c0"], dc_T=case["dc_T"])
    g, axs, ah0, ac0 = case["autodiff"]
    return {**{k: err(grads[k], g[k]) for k in ("W", "U", "b")},
            "xs": err(dxs, axs), "h0": err(dh0, ah0), "c0": err(dc0, ac0)}


def _attention_errors(case):
    dx, grads = bps.attention_backward(case["dy"], case["x"], case["params"],
                                       causal=case["causal"])
    adx, ag = case["autodiff"]
    return {"x": err(dx, adx), **{k: err(grads[k], ag[k]) for k in grads}}


def test_lstm_forward_is_the_layers(lstm_case):
    """The NumPy forward pass the witness differentiates is nets.rnn.lstm's."""
    fw = bps.lstm_forward(lstm_case["params"], lstm_case["xs"], lstm_case["h0"],
                          lstm_case["c0"])
    np.testing.assert_allclose(fw["h"][1:], lstm_case["hs"], rtol=1e-12, atol=1e-12)


def test_lstm_bptt_equals_autodiff(lstm_case):
    errors = _lstm_errors(lstm_case)
    assert max(errors.values()) <= TOL, errors


def test_dropping_the_forget_gate_path_is_caught(lstm_case, monkeypatch):
    """Without ``dc_{t-1} += dc_t f_t`` (the cell's own path back in time) every gradient
    but the last step's is wrong: W, U, b, the inputs, h_0 and c_0 (which only that path
    reaches)."""
    monkeypatch.setattr(bps, "_forget_path", lambda dc, f: np.zeros_like(dc))
    errors = _lstm_errors(lstm_case)
    assert min(errors.values()) > 1e-2, errors


def test_dropping_the_recurrent_path_is_caught(lstm_case, monkeypatch):
    """Without ``dh_{t-1} += U^T dz_t`` (what reaches the previous output through the gates)
    every gradient is wrong, c_0's too (h_t's loss reaches c_{t-1} through h_{t-1})."""
    monkeypatch.setattr(bps, "_recurrent_path", lambda dz, U: np.zeros(U.shape[1]))
    errors = _lstm_errors(lstm_case)
    assert min(errors.values()) > 1e-2, errors


def test_attention_forward_is_the_layers(attention_cases):
    case = attention_cases[0]
    y, cache = bps.attention_forward(case["params"], case["x"], causal=True)
    np.testing.assert_allclose(y, case["y"], rtol=1e-12, atol=1e-12)
    assert np.all(np.triu(cache["P"], 1) == 0.0)


def test_attention_backward_equals_autodiff(attention_cases):
    for case in attention_cases:
        errors = _attention_errors(case)
        assert max(errors.values()) <= TOL, (case["causal"], errors)


def test_dropping_the_softmax_jacobian_term_is_caught(attention_cases, monkeypatch):
    """``dS = P * dP`` (the diagonal of ``diag(p) - p p^T`` alone) is wrong for the query and
    key weights and for x; the value and output weights do not depend on it."""
    monkeypatch.setattr(bps, "_softmax_backward", lambda P, dP: P * dP)
    for case in attention_cases:
        errors = _attention_errors(case)
        assert min(errors[k] for k in ("Wq", "Wk", "x")) > 1e-2, errors
        assert max(errors["Wv"], errors["Wo"]) <= TOL, errors


def test_dropping_the_key_path_into_x_is_caught(attention_cases, monkeypatch):
    monkeypatch.setattr(bps, "_input_paths", lambda dQ, dK, dV, Wq, Wk, Wv: dQ @ Wq + dV @ Wv)
    for case in attention_cases:
        errors = _attention_errors(case)
        assert errors["x"] > 1e-2 and max(v for k, v in errors.items() if k != "x") <= TOL


def test_bad_shapes_are_clear_errors(lstm_case):
    with pytest.raises(ValueError, match=r"dys: lstm_backward expected shape \(6, 4\)"):
        bps.lstm_backward(lstm_case["params"], lstm_case["xs"], np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"params: lstm_backward expected W \(4n, d\)"):
        bps.lstm_backward({"W": np.zeros((4, 3)), "U": np.zeros((4, 2)), "b": np.zeros(4)},
                          lstm_case["xs"], np.zeros((6, 2)))
    params = {k: np.zeros((4, 4)) for k in ("Wq", "Wk", "Wv", "Wo")}
    with pytest.raises(ValueError, match=r"dy: attention_backward expected shape \(5, 4\)"):
        bps.attention_backward(np.zeros((5, 3)), np.zeros((5, 4)), params)


def test_lstm_forward_checks_initial_states_and_width():
    _, params, _ = rnn.LSTM(6).init(jax.random.key(0), (5, 4))
    xs = np.ones((5, 4), np.float32)
    with pytest.raises(ValueError, match=r"h0: lstm_forward expected shape \(6,\)"):
        bps.lstm_forward(params, xs, h0=np.zeros(5))
    with pytest.raises(ValueError, match=r"c0: lstm_forward expected shape \(6,\)"):
        bps.lstm_forward(params, xs, c0=np.zeros((1, 6)))
    with pytest.raises(ValueError, match=r"xs: lstm_forward expected .*\(T, 4\)"):
        bps.lstm_forward(params, np.ones((5, 5)))
    with pytest.raises(ValueError, match=r"dc_T: lstm_backward expected shape \(6,\)"):
        bps.lstm_backward(params, xs, np.ones((5, 6)), dc_T=np.zeros(3))
