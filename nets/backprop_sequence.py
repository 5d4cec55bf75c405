"""Backward passes of the LSTM through time and of single-head attention, written out by hand:
the witnesses that ``jax.grad`` of :func:`nets.rnn.lstm` and of
:func:`nets.transformer.attention` is right. NumPy on concrete arrays, no autodiff (the
sibling of :mod:`nets.backprop`, which holds the MLP, convolution and pooling passes).

**LSTM, backpropagation through time** (Hochreiter & Schmidhuber 1997; the forget gate of
Gers et al. 2000; the equations of :mod:`nets.rnn`). With ``z_t = W x_t + U h_{t-1} + b``
split into the gates ``(i, f, g, o)``, ``c_t = f_t c_{t-1} + i_t g_t``, ``h_t = o_t
tanh(c_t)``, and the loss ``L`` reaching every ``h_t`` from above (``dy_t = dL/dh_t``) and
the last cell (``dL/dc_T``), going backward from ``t = T`` with ``dh_{T+1}^rec = 0``,
``dc_{T+1}^rec = dL/dc_T``:

    dh_t  = dy_t + dh_{t+1}^rec                     all that reaches h_t
    do_t  = dh_t * tanh(c_t)
    dc_t  = dc_{t+1}^rec + dh_t * o_t * (1 - tanh(c_t)^2)
    di_t  = dc_t * g_t,   dg_t = dc_t * i_t,   df_t = dc_t * c_{t-1}
    dz_t  = [di_t i_t (1 - i_t), df_t f_t (1 - f_t), dg_t (1 - g_t^2), do_t o_t (1 - o_t)]
    dc_t^rec = dc_t * f_t                           the cell path (the forget gate)
    dh_t^rec = U^T dz_t                             the recurrent path
    dW += dz_t x_t^T,  dU += dz_t h_{t-1}^T,  db += dz_t,  dx_t = W^T dz_t

and ``dL/dh_0 = dh_1^rec``, ``dL/dc_0 = dc_1^rec`` (:func:`lstm_backward`).

**Single-head attention** (Vaswani et al. 2017, eq. 1; :func:`nets.transformer.attention`
with one head, ``d_h = d``). Forward, one sequence ``x`` (T, d):

    Q = x Wq^T, K = x Wk^T, V = x Wv^T,  S = Q K^T / sqrt(d) (+ causal mask),
    P = softmax(S) by rows,  O = P V,  y = O Wo^T

Backward from ``dy = dL/dy`` (T, d):

    dWo = dy^T O,   dO = dy Wo
    dV  = P^T dO,   dP = dO V^T
    dS  = P * (dP - rowsum(P * dP))      the softmax Jacobian, diag(p) - p p^T, by rows
    dQ  = dS K / sqrt(d),   dK = dS^T Q / sqrt(d)
    dWq = dQ^T x,  dWk = dK^T x,  dWv = dV^T x
    dx  = dQ Wq + dK Wk + dV Wv

Masked entries have ``P = 0``, hence ``dS = 0``: nothing flows from a position to a later
one (:func:`attention_backward`).

References:
  Hochreiter & Schmidhuber, Long Short-Term Memory, Neural Computation 9(8), 1997. Gers,
  Schmidhuber & Cummins, Learning to Forget, Neural Computation 12(10), 2000. Werbos,
  Backpropagation Through Time: What It Does and How to Do It, Proc. IEEE 78(10), 1990.
  Vaswani et al., Attention Is All You Need, NeurIPS 2017, https://arxiv.org/abs/1706.03762 .
"""

from __future__ import annotations

import numpy as np


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _array(value, name, who, ndim):
    value = np.asarray(value)
    if value.ndim != ndim:
        raise ValueError(f"{name}: {who} expected {ndim} axes, got shape {value.shape}")
    return value


def _vector(value, name, who, n):
    """An optional ``(n,)`` vector of real numbers (an initial state, a gradient from above)."""
    if value is None:
        return None
    value = np.asarray(value)
    if value.dtype.kind not in "biuf":
        raise TypeError(f"{name}: {who} expected real numbers, got dtype {value.dtype}")
    if value.shape != (n,):
        raise ValueError(f"{name}: {who} expected shape ({n},) (one state of the n = {n} "
                         f"units), got shape {value.shape}")
    return value


# ---------------------------------------------------------------------------------------
# LSTM


def _lstm_params(params, who):
    W, U, b = (np.asarray(params[k]) for k in ("W", "U", "b"))
    n = U.shape[1]
    if U.shape != (4 * n, n) or b.shape != (4 * n,) or W.ndim != 2 or W.shape[0] != 4 * n:
        raise ValueError(f"params: {who} expected W (4n, d), U (4n, n), b (4n,), got "
                         f"{W.shape}, {U.shape}, {b.shape}")
    return W, U, b, n


def lstm_forward(params, xs, h0=None, c0=None):
    """The LSTM over one sequence ``xs`` (T, d), keeping what the backward pass needs: a dict
    of ``h`` and ``c`` (T + 1, n) (row 0 is ``h_0``, ``c_0``) and the gates ``i, f, g, o``
    (T, n)."""
    who = "lstm_forward"
    W, U, b, n = _lstm_params(params, who)
    xs = _array(xs, "xs", who, 2)
    if xs.shape[1] != W.shape[1]:
        raise ValueError(f"xs: {who} expected one sequence of shape (T, {W.shape[1]}) (W is "
                         f"{W.shape}), got shape {xs.shape}")
    h0, c0 = _vector(h0, "h0", who, n), _vector(c0, "c0", who, n)
    T = xs.shape[0]
    dtype = np.result_type(xs, W)
    h = np.zeros((T + 1, n), dtype)
    c = np.zeros((T + 1, n), dtype)
    h[0] = 0.0 if h0 is None else h0
    c[0] = 0.0 if c0 is None else c0
    gates = {k: np.zeros((T, n), dtype) for k in "ifgo"}
    for t in range(T):
        z = W @ xs[t] + U @ h[t] + b  # z_t, (4n,); h[t] is h_{t-1}
        i, f, g, o = _sigmoid(z[:n]), _sigmoid(z[n:2 * n]), np.tanh(z[2 * n:3 * n]), \
            _sigmoid(z[3 * n:])
        c[t + 1] = f * c[t] + i * g  # c_t = f_t c_{t-1} + i_t g_t
        h[t + 1] = o * np.tanh(c[t + 1])  # h_t = o_t tanh(c_t)
        for k, v in zip("ifgo", (i, f, g, o)):
            gates[k][t] = v
    return {"h": h, "c": c, **gates}


def _forget_path(dc, f):
    """``dc_t^rec = dc_t * f_t``: what reaches ``c_{t-1}`` along the cell."""
    return dc * f


def _recurrent_path(dz, U):
    """``dh_t^rec = U^T dz_t``: what reaches ``h_{t-1}`` through the gates."""
    return U.T @ dz


def lstm_backward(params, xs, dys, *, h0=None, c0=None, dc_T=None):
    """Backpropagation through time of the LSTM over one sequence (module doc), by hand.

    Args:
      params: ``{"W": (4n, d), "U": (4n, n), "b": (4n,)}`` (:func:`nets.rnn.LSTM`).
      xs: the inputs ``(T, d)``.
      dys: ``dL/dh_t`` from above for ``t = 1 .. T``, ``(T, n)``.
      h0, c0: the initial carry ``(n,)`` (zeros by default, as the layer).
      dc_T: ``dL/dc_T`` from above, ``(n,)`` (zero by default).

    Returns:
      ``(grads, dxs, dh0, dc0)``: ``grads = {"W", "U", "b"}`` shaped as ``params``, ``dxs``
      ``(T, d)``, ``dh0`` and ``dc0`` ``(n,)``; NumPy arrays.
    """
    who = "lstm_backward"
    W, U, b, n = _lstm_params(params, who)
    xs, dys = _array(xs, "xs", who, 2), _array(dys, "dys", who, 2)
    T = xs.shape[0]
    if dys.shape != (T, n):
        raise ValueError(f"dys: {who} expected shape {(T, n)}, got {dys.shape}")
    dc_T = _vector(dc_T, "dc_T", who, n)
    fw = lstm_forward(params, xs, h0, c0)
    h, c = fw["h"], fw["c"]
    dW, dU, db = np.zeros_like(W, dtype=h.dtype), np.zeros_like(U, dtype=h.dtype), \
        np.zeros(b.shape, h.dtype)
    dxs = np.zeros(xs.shape, h.dtype)
    dh_rec = np.zeros(n, h.dtype)  # dh_{t+1}^rec
    dc_rec = np.zeros(n, h.dtype) if dc_T is None else np.asarray(dc_T, h.dtype)  # dc_{t+1}^rec
    for t in reversed(range(T)):
        i, f, g, o = (fw[k][t] for k in "ifgo")
        tc = np.tanh(c[t + 1])  # tanh(c_t)
        dh = dys[t] + dh_rec  # dh_t
        do = dh * tc
        dc = dc_rec + dh * o * (1.0 - tc ** 2)  # dc_t
        di, dg, df = dc * g, dc * i, dc * c[t]  # c[t] is c_{t-1}
        dz = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g ** 2),
                             do * o * (1 - o)])  # dL/dz_t, (4n,)
        dW += np.outer(dz, xs[t])
        dU += np.outer(dz, h[t])  # h[t] is h_{t-1}
        db += dz
        dxs[t] = W.T @ dz
        dc_rec = _forget_path(dc, f)
        dh_rec = _recurrent_path(dz, U)
    return {"W": dW, "U": dU, "b": db}, dxs, dh_rec, dc_rec


# ---------------------------------------------------------------------------------------
# single-head attention


def _softmax_backward(P, dP):
    """``dS = P * (dP - rowsum(P * dP))``: the row-wise softmax Jacobian
    ``diag(p) - p p^T`` applied to ``dP``."""
    return P * (dP - np.sum(P * dP, axis=-1, keepdims=True))


def _input_paths(dQ, dK, dV, Wq, Wk, Wv):
    """``dx = dQ Wq + dK Wk + dV Wv``: ``x`` reaches ``y`` as query, key and value."""
    return dQ @ Wq + dK @ Wk + dV @ Wv


def attention_forward(params, x, *, causal=True):
    """``(y, cache)`` of single-head attention on one sequence ``x`` (T, d) (module doc);
    ``cache`` holds ``Q, K, V, P, O``."""
    Wq, Wk, Wv, Wo = (np.asarray(params[k]) for k in ("Wq", "Wk", "Wv", "Wo"))
    x = _array(x, "x", "attention_forward", 2)
    T, d = x.shape
    Q, K, V = x @ Wq.T, x @ Wk.T, x @ Wv.T  # (T, d) each
    S = Q @ K.T / np.sqrt(Q.shape[1])  # (T, T)
    if causal:
        S = np.where(np.tril(np.ones((T, T), bool)), S, -np.inf)
    E = np.exp(S - S.max(axis=1, keepdims=True))
    P = E / E.sum(axis=1, keepdims=True)  # softmax by rows, (T, T)
    O = P @ V  # noqa: E741  (T, d)
    return O @ Wo.T, {"Q": Q, "K": K, "V": V, "P": P, "O": O}


def attention_backward(dy, x, params, *, causal=True):
    """Gradients of ``L`` through single-head self-attention (module doc), by hand.

    Args:
      dy: ``dL/dy``, ``(T, d)``.
      x: the layer's input, one sequence ``(T, d)``.
      params: ``{"Wq", "Wk", "Wv", "Wo"}`` (:func:`nets.transformer.MultiHeadAttention`
        with ``n_heads=1``; the query/key width may differ from ``d``).
      causal: whether the forward pass masked ``s > t``.

    Returns:
      ``(dx, grads)``: ``dx`` ``(T, d)`` and ``grads = {"Wq", "Wk", "Wv", "Wo"}``; NumPy.
    """
    who = "attention_backward"
    x, dy = _array(x, "x", who, 2), _array(dy, "dy", who, 2)
    Wq, Wk, Wv, Wo = (np.asarray(params[k]) for k in ("Wq", "Wk", "Wv", "Wo"))
    if dy.shape != (x.shape[0], Wo.shape[0]):
        raise ValueError(f"dy: {who} expected shape {(x.shape[0], Wo.shape[0])}, got "
                         f"{dy.shape}")
    _, cache = attention_forward(params, x, causal=causal)
    Q, K, V, P, O = (cache[k] for k in ("Q", "K", "V", "P", "O"))  # noqa: E741
    scale = 1.0 / np.sqrt(Q.shape[1])
    dWo = dy.T @ O  # (d, d_v)
    dO = dy @ Wo  # (T, d_v)
    dV = P.T @ dO  # (T, d_v)
    dP = dO @ V.T  # (T, T)
    dS = _softmax_backward(P, dP)  # (T, T); 0 where masked (P = 0)
    dQ = dS @ K * scale  # (T, d_k)
    dK = dS.T @ Q * scale  # (T, d_k)
    grads = {"Wq": dQ.T @ x, "Wk": dK.T @ x, "Wv": dV.T @ x, "Wo": dWo}
    return _input_paths(dQ, dK, dV, Wq, Wk, Wv), grads


__all__ = ["lstm_forward", "lstm_backward", "attention_forward", "attention_backward"]
