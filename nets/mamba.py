"""Mamba: the selective state-space layer S6 (Gu & Dao 2023) with its recurrence run as a
parallel scan, and the Mamba block; layers over ONE sequence ``(T, d)``.

S6 (Gu & Dao 2023, Algorithm 2 and section 3.2). For an input ``x`` (T, E) with ``E``
channels, each channel ``e`` carries a state ``h_t[e]`` of ``N`` entries. The step size
``Delta``, and ``B``, ``C`` depend on the input (this is the *selection*):

    [delta_t, B_t, C_t] = W_x x_t                  delta_t: (R,), B_t, C_t: (N,)
    Delta_t = softplus(W_dt delta_t + b_dt)        (E,)   (a rank-R projection)
    A = -exp(A_log)                                (E, N), fixed over time, negative

discretised with the zero-order hold for ``A`` and Euler for ``B`` (eq. 4, as the paper's
code does):

    Abar_t = exp(Delta_t[e] A[e, n])               (T, E, N)
    Bbar_t x_t = Delta_t[e] B_t[n] x_t[e]          (T, E, N)
    h_t = Abar_t * h_{t-1} + Bbar_t x_t            h_0 = 0, elementwise in (e, n)
    y_t[e] = sum_n C_t[n] h_t[e, n] + D[e] x_t[e]

The recurrence ``h_t = a_t h_{t-1} + b_t`` is linear in ``h``, so it is a scan under the
associative operator on pairs (Blelloch 1990; Martin & Cundy 2018)

    (a_1, b_1) . (a_2, b_2) = (a_2 a_1, a_2 b_1 + b_2)

whose prefix "products" are ``(a_t ... a_1, h_t)``: :func:`scan_parallel` runs it with
``jax.lax.associative_scan`` in ``O(log T)`` depth; :func:`scan_sequential` runs the same
recurrence step by step with ``jax.lax.scan`` (the reference; the tests hold the two equal,
values and gradients, up to T = 4096).

The Mamba block (Gu & Dao 2023, Figure 3), ``d`` -> ``d``, ``E = expand d``:

    [u, z] = W_in x_t                    (2E,) at every position
    u = silu(causal depthwise conv1d(u))  kernel d_conv along time, position t sees t-k+1..t
    y = S6(u) * silu(z)
    out_t = W_out y_t                    (d,)

and :func:`model` stacks ``x <- x + Mamba(LN(x))`` blocks (pre-norm, as the paper's
residual stream; LayerNorm where the paper uses RMSNorm) between an input layer and a
per-position classifier. Everything is causal: the output at ``t`` depends on inputs up to
``t`` only.

Dropout. The paper's models use none; with ``drop_rate = p > 0`` :func:`model` drops each
block's output before it joins the residual stream, ``x <- x + Drop(Mamba(LN(x)))``, the
Transformer's residual dropout (Vaswani et al. 2017, section 5.4; :mod:`nets.transformer`)
on the same pre-norm residual stream, with inverted dropout of rate ``p``
(:func:`nets.layers.Dropout`) in train mode only. The rate lives in the model state, so
such a model is stateful and every call passes ``train=`` (:mod:`nets.model`); its params
are those of ``drop_rate=0``, which builds no Dropout at all.

>>> net = model(vocab_size=5, n_classes=3, seq_len=7, d_model=8, d_state=4)
>>> net.input_shape, net.output_shape       # token ids -> class scores at every position
((7,), (7, 3))
>>> import jax, numpy as np
>>> a, b = np.full((4, 1), 0.5, np.float32), np.ones((4, 1), np.float32)  # h_t = h_{t-1}/2 + 1
>>> jax.jit(scan_parallel)(a, b)[:, 0]
Array([1.   , 1.5  , 1.75 , 1.875], dtype=float32)

References:
  Gu & Dao, Mamba: Linear-Time Sequence Modeling with Selective State Spaces, 2023,
  https://arxiv.org/abs/2312.00752 (Algorithm 2, eq. 4, section 3.3.2, Figure 3).
  Blelloch, Prefix Sums and Their Applications, CMU-CS-90-190, 1990. Martin & Cundy,
  Parallelizing Linear Recurrent Neural Nets Over Sequence Length, ICLR 2018,
  https://arxiv.org/abs/1709.04057 . Gu, Goel & Re, S4, 2021, https://arxiv.org/abs/2111.00396
  (the S4D-real initialisation ``A[e, n] = -(n + 1)``: Gu et al. 2022, arXiv:2206.11893).
  Vaswani et al., Attention Is All You Need, NeurIPS 2017, https://arxiv.org/abs/1706.03762
  (section 5.4, residual dropout).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from nets import _checks, _sequence
from nets import layers as L
from nets._sequence import Readout, per_position  # re-exported
from nets.layers import Layer
from nets.model import Model

SCANS = ("parallel", "sequential")


def _combine(left, right):
    """``(a_1, b_1) . (a_2, b_2) = (a_2 a_1, a_2 b_1 + b_2)``: ``left`` earlier in time."""
    a1, b1 = left
    a2, b2 = right
    return a2 * a1, a2 * b1 + b2


def scan_parallel(a, b):
    """``h_t = a_t h_{t-1} + b_t``, ``h_0 = 0``, for all ``t`` at once: ``jax.lax.
    associative_scan`` of :func:`_combine` over axis 0. ``a``, ``b``: (T, ...) of one
    shape; returns ``h`` of that shape (empty for ``T = 0``, as :func:`scan_sequential`)."""
    _check_ab(a, b, "scan_parallel")
    return jax.lax.associative_scan(_combine, (a, b), axis=0)[1]


def scan_sequential(a, b):
    """The same recurrence one step at a time (``jax.lax.scan``): the reference."""
    _check_ab(a, b, "scan_sequential")

    def step(h, ab):
        h = ab[0] * h + ab[1]  # h_t = a_t h_{t-1} + b_t
        return h, h

    h0 = jnp.zeros(jnp.shape(b)[1:], jnp.result_type(b))  # zeros_like(b[0]), also for T = 0
    return jax.lax.scan(step, h0, (a, b))[1]


def _check_ab(a, b, who):
    """``a`` and ``b`` of one shape ``(T, ...)`` (static shapes: fine under tracing)."""
    sa, sb = jnp.shape(a), jnp.shape(b)
    if len(sb) < 1 or sa != sb:
        raise ValueError(f"a, b: {who} expected two arrays of one shape (T, ...), got shapes "
                         f"{sa} and {sb}")


def _scan(method):
    if method not in SCANS:
        raise ValueError(f"scan: expected one of {SCANS}, got {method!r}")
    return scan_parallel if method == "parallel" else scan_sequential


def selective_scan(params, u, *, scan: str = "parallel"):
    """S6 on one sequence ``u`` (T, E) (module doc): ``y`` (T, E).

    ``params``: ``{"W_x": (R + 2N, E), "W_dt": (E, R), "b_dt": (E,), "A_log": (E, N),
    "D": (E,)}``; ``scan``: ``"parallel"`` or ``"sequential"``."""
    R, N = params["W_dt"].shape[1], params["A_log"].shape[1]
    E = params["D"].shape[0]
    if jnp.ndim(u) != 2 or jnp.shape(u)[1] != E:
        hint = " (a batch? jax.vmap over the sequences)" if jnp.ndim(u) == 3 else ""
        raise ValueError(f"u: selective_scan expected one sequence of shape (T, {E}), got "
                         f"shape {jnp.shape(u)}{hint}")
    proj = u @ params["W_x"].T  # [delta_t, B_t, C_t] = W_x u_t, (T, R + 2N)
    delta, B, C = proj[:, :R], proj[:, R:R + N], proj[:, R + N:]
    dt = jax.nn.softplus(delta @ params["W_dt"].T + params["b_dt"])  # Delta_t, (T, E)
    A = -jnp.exp(params["A_log"])  # (E, N), negative
    a = jnp.exp(dt[:, :, None] * A)  # Abar_t = exp(Delta_t A), (T, E, N)
    b = (dt * u)[:, :, None] * B[:, None, :]  # Bbar_t u_t = Delta_t B_t u_t, (T, E, N)
    h = _scan(scan)(a, b)  # h_t = Abar_t h_{t-1} + Bbar_t u_t, (T, E, N)
    return jnp.einsum("ten,tn->te", h, C) + params["D"] * u  # y_t = C_t h_t + D u_t


def _init_s6(key, E: int, N: int, R: int, dt_min: float, dt_max: float):
    """S6 parameters: ``W_x``, ``W_dt`` Glorot uniform; ``Delta`` at start log-uniform in
    ``[dt_min, dt_max]`` through ``b_dt = softplus^-1(Delta)`` (as the paper's code);
    ``A[e, n] = -(n + 1)`` (S4D-real); ``D = 1``."""
    kx, kd, kb = jax.random.split(key, 3)
    glorot = jax.nn.initializers.glorot_uniform(in_axis=-1, out_axis=-2)
    dt = jnp.exp(jax.random.uniform(kb, (E,), minval=math.log(dt_min), maxval=math.log(dt_max)))
    return {"W_x": glorot(kx, (R + 2 * N, E)), "W_dt": glorot(kd, (E, R)),
            "b_dt": dt + jnp.log(-jnp.expm1(-dt)),  # softplus(b_dt) = dt
            "A_log": jnp.log(jnp.broadcast_to(jnp.arange(1.0, N + 1.0), (E, N))),
            "D": jnp.ones((E,))}


def causal_conv(params, u):
    """Depthwise causal convolution along time: ``y_t[e] = sum_k w[k, e] u_{t-K+1+k}[e] +
    b[e]`` with ``u_s = 0`` for ``s < 0``; ``w``: (K, E), ``u``: (T, E) -> (T, E)."""
    w = params["w"]
    K, T = w.shape[0], u.shape[0]
    padded = jnp.pad(u, ((K - 1, 0), (0, 0)))  # K - 1 zeros before t = 0, none after
    return sum(w[k] * padded[k:k + T] for k in range(K)) + params["b"]


def S6(d_state: int = 16, *, dt_rank: int | None = None, scan: str = "parallel",
       dt_min: float = 1e-3, dt_max: float = 1e-1) -> Layer:
    """The selective state-space layer (module doc). Shapes: ``(T, E) -> (T, E)``; params as
    :func:`selective_scan`; ``dt_rank`` ``R`` defaults to ``ceil(E / 16)``; the initial step
    sizes ``Delta`` are log-uniform in ``[dt_min, dt_max]``, ``0 < dt_min <= dt_max``."""
    who = "S6"
    N = _sequence.positive_int(d_state, "d_state", who)
    dt_min = _checks.check_real(dt_min, "dt_min", minimum=0, strict=True)
    dt_max = _checks.check_real(dt_max, "dt_max", minimum=0, strict=True)
    if dt_min > dt_max:
        raise ValueError(f"dt_min, dt_max: {who} expected 0 < dt_min <= dt_max (the initial "
                         f"step sizes are log-uniform in [dt_min, dt_max]), got dt_min = "
                         f"{dt_min:g} > dt_max = {dt_max:g}")
    _scan(scan)

    def init(key, input_shape):
        T, E = _sequence.sequence_shape(input_shape, who)
        R = math.ceil(E / 16) if dt_rank is None else _sequence.positive_int(
            dt_rank, "dt_rank", who)
        return (T, E), _init_s6(key, E, N, R, dt_min, dt_max), ()

    def apply(params, state, x, *, train=False, key=None):
        if jnp.ndim(x) != 2 or jnp.shape(x)[1] != params["D"].shape[0]:
            raise ValueError(f"x: {who} expected one sequence of shape (T, "
                             f"{params['D'].shape[0]}), got shape {jnp.shape(x)}")
        return selective_scan(params, x, scan=scan), state

    return Layer(init, apply)


def mamba_block(params, x, *, scan: str = "parallel"):
    """The Mamba block on one sequence ``x`` (T, d) (module doc): ``(T, d)``."""
    E = params["W_out"].shape[1]
    uz = x @ params["W_in"].T  # [u, z] = W_in x_t, (T, 2E)
    u, z = uz[:, :E], uz[:, E:]
    u = jax.nn.silu(causal_conv(params["conv"], u))
    y = selective_scan(params["s6"], u, scan=scan) * jax.nn.silu(z)
    return y @ params["W_out"].T  # out_t = W_out y_t


def MambaBlock(d_state: int = 16, *, expand: int = 2, d_conv: int = 4,
               dt_rank: int | None = None, scan: str = "parallel") -> Layer:
    """The Mamba block (module doc) as a layer. Shapes: ``(T, d) -> (T, d)``; params
    ``{"W_in": (2E, d), "conv": {"w": (d_conv, E), "b": (E,)}, "s6": S6's, "W_out": (d,
    E)}`` with ``E = expand d``; ``dt_rank`` ``R`` defaults to ``ceil(d / 16)`` (the paper's
    choice); ``scan``: ``"parallel"`` or ``"sequential"`` (the same function, the tests'
    reference)."""
    who = "MambaBlock"
    N = _sequence.positive_int(d_state, "d_state", who)
    expand = _sequence.positive_int(expand, "expand", who)
    K = _sequence.positive_int(d_conv, "d_conv", who)
    _scan(scan)

    def init(key, input_shape):
        T, d = _sequence.sequence_shape(input_shape, who)
        E = expand * d
        R = math.ceil(d / 16) if dt_rank is None else _sequence.positive_int(
            dt_rank, "dt_rank", who)
        k_in, k_conv, k_s6, k_out = jax.random.split(key, 4)
        glorot = jax.nn.initializers.glorot_uniform(in_axis=-1, out_axis=-2)
        bound = 1.0 / math.sqrt(K)  # fan-in K per channel
        params = {"W_in": glorot(k_in, (2 * E, d)),
                  "conv": {"w": jax.random.uniform(k_conv, (K, E), minval=-bound, maxval=bound),
                           "b": jnp.zeros((E,))},
                  "s6": _init_s6(k_s6, E, N, R, 1e-3, 1e-1),
                  "W_out": glorot(k_out, (d, E))}
        return (T, d), params, ()

    def apply(params, state, x, *, train=False, key=None):
        if jnp.ndim(x) != 2 or jnp.shape(x)[1] != params["W_in"].shape[1]:
            raise ValueError(f"x: {who} expected one sequence of shape (T, "
                             f"{params['W_in'].shape[1]}), got shape {jnp.shape(x)}")
        return mamba_block(params, x, scan=scan), state

    return Layer(init, apply)


def model(*, n_classes: int, seq_len: int, vocab_size: int | None = None,
          d_in: int | None = None, d_model: int = 32, n_layers: int = 2, d_state: int = 16,
          expand: int = 2, d_conv: int = 4, readout: str = "all",
          scan: str = "parallel", drop_rate: float = 0.0, pad_id: int | None = None) -> Model:
    """A Mamba classifier of sequences: input layer -> ``n_layers`` blocks ``x + Mamba(LN(x))``
    (``x + Drop(Mamba(LN(x)))`` with ``drop_rate``) -> LN -> ``per_position(Dense(n_classes))``
    -> readout.

    Args:
      n_classes: outputs per position (or per sequence).
      seq_len: ``T``, the length of one example.
      vocab_size: token ids ``(T,)`` in ``[0, vocab_size)`` through an embedding of
        ``d_model``; or
      d_in: real features ``(T, d_in)`` through ``per_position(Dense(d_model))``.
      d_model, n_layers: width of the residual stream, blocks.
      d_state, expand, d_conv: ``N``, ``E / d``, the convolution's length (:func:`MambaBlock`).
      readout: ``"all"`` (``(T, n_classes)``), ``"last"`` or ``"mean"`` (``(n_classes,)``).
      scan: ``"parallel"`` (``associative_scan``) or ``"sequential"`` (``lax.scan``).
      drop_rate: drop probability ``p`` in ``[0, 1)`` of each block's output before the
        residual sum (module doc). ``0`` (the default) builds no Dropout layer; ``p > 0``
        makes a stateful model (its state holds the rate; pass ``train=``) with the same
        params as ``drop_rate=0``.
      pad_id: ``None`` (the default), or the token id that pads shorter sequences (with
        ``vocab_size``): ``readout="last"``/``"mean"`` read the real positions only.
        The blocks are causal, so that is all the mask does here (:mod:`nets._sequence`, "Padding",
        for the rest: right padding, ``-1`` labels at the padding). Same params as
        ``pad_id=None``.

    :mod:`nets.penalties` decays every leaf with two axes, here ``A_log`` and the
    convolution kernel too; leave them out of the penalty (or use none) to follow the paper.
    """
    who = "mamba.model"
    seq_len = _sequence.positive_int(seq_len, "seq_len", who)
    n_classes = _sequence.positive_int(n_classes, "n_classes", who)
    n_layers = _sequence.positive_int(n_layers, "n_layers", who)
    d_model = _sequence.positive_int(d_model, "d_model", who)
    drop_rate = _sequence.check_dropout(drop_rate, who)
    first, tail = _sequence.embed_or_project(vocab_size, d_in, d_model, who)
    blocks = [L.residual(_sequence.with_dropout(L.serial(L.LayerNorm(), MambaBlock(
        d_state, expand=expand, d_conv=d_conv, scan=scan)), drop_rate))  # x + Drop(Mamba(LN(x)))
        for _ in range(n_layers)]
    pad_id = _sequence.check_pad_id(pad_id, vocab_size, who)
    layers = [first, *blocks, L.LayerNorm(), *_sequence.head(n_classes, readout)]
    return Model(L.padded(L.serial(*layers), pad_id), input_shape=(seq_len, *tail))


__all__ = ["scan_parallel", "scan_sequential", "selective_scan", "causal_conv", "S6",
           "mamba_block", "MambaBlock", "model", "per_position", "Readout", "SCANS"]
