"""The decoder-only Transformer: causal multi-head self-attention, sinusoidal positional
encoding, pre-layer-norm residual blocks; layers over ONE sequence ``(T, d)``.

Scaled dot-product attention (Vaswani et al. 2017, eq. 1) for one sequence ``x`` (T, d) and
``H`` heads of width ``d_h = d / H``; head ``j`` projects every position (rows of ``x``)

    Q_j = x Wq_j^T,  K_j = x Wk_j^T,  V_j = x Wv_j^T                 (T, d_h) each
    S_j = Q_j K_j^T / sqrt(d_h) + M,   M[t, s] = -inf for s > t (causal), else 0
    P_j = softmax(S_j) row by row                                   (T, T)
    head_j = P_j V_j
    y = [head_1, ..., head_H] Wo^T                                  (T, d)

with ``Wq, Wk, Wv, Wo`` of shape ``(d, d)`` (the note's orientation: ``q_t = Wq x_t``; head
``j`` owns rows ``j d_h .. (j+1) d_h - 1`` of ``Wq, Wk, Wv``). The mask makes position
``t`` attend to ``s <= t`` only, so the output at ``t`` is a function of ``x_1 .. x_t``:
its gradient with respect to any later input is exactly zero (masked scores are
replaced, not added to, so no derivative flows into them). ``impl="written"`` computes the
lines above; ``impl="jax"`` calls ``jax.nn.dot_product_attention(..., is_causal=True)``
(the same numbers to float32 precision, also in float64: JAX computes its softmax in
float32; an XLA or cuDNN kernel on a GPU); ``impl="custom_vjp"`` computes the
same forward pass and differentiates it by the hand-derived backward pass (per head, from
``dO = dL/dO``; :mod:`nets.backprop_sequence` derives it for one head):

    dV = P^T dO,   dP = dO V^T,   dS = P * (dP - rowsum(dO * O)),
    dQ = dS K / sqrt(d_h),   dK = dS^T Q / sqrt(d_h)

where ``rowsum(dO * O) = rowsum(P * dP)`` (as ``O = P V``) replaces the softmax Jacobian's
row sums over ``T x T`` by sums over ``d_h`` (Dao 2023, FlashAttention-2, section 2.2).
Autodiff of the written lines also differentiates the scaling and the masking as passes over
``T x T``. With ``impl="custom_vjp"`` the blocks' layer norms use their hand-derived
backward too (``nets.layers.LayerNorm(impl="custom_vjp")``). On a CPU the attention's
forward and backward take about 30% less time, and a width-16 model trains about 1.3 to
1.4 times faster (the benchmark experiment's Transformer row). As for every
``jax.custom_vjp``, forward mode alone (``jax.jvp``, ``jax.jacfwd``) needs ``"written"``;
``jax.hessian`` (forward over reverse) differentiates the backward pass and works.

Padding (``model(..., pad_id=k)``): with ``real[s] = ids[s] != k`` the mask also hides the
padded keys, ``M[t, s] = -inf`` unless ``real[s]`` or ``s == t`` (a padded position still
sees itself, so no row of ``S`` is all ``-inf``), and the readouts ``"last"``/``"mean"`` read
the real positions only. A right-padded sequence then gets, at its real positions, exactly
what a model of its own length gives it; with ``causal=False`` (an encoder) too. The
hand-derived backward pass above holds unchanged (masked entries have ``P = 0``).

Sinusoidal positional encoding (Vaswani et al. 2017, section 3.5), added to the input:

    PE[t, 2i] = sin(t / 10000^(2i / d)),   PE[t, 2i + 1] = cos(t / 10000^(2i / d))

A pre-LN block (Xiong et al. 2020, arXiv:2002.04745; the GPT-2 layout) is two residual
branches around layer norm (Ba et al. 2016):

    x <- x + Attention(LN(x))
    x <- x + W_2 gelu(W_1 LN(x)_t + b_1) + b_2     at every position t  (d -> d_mlp -> d)

and :func:`model` is input layer -> positional encoding -> ``n_layers`` blocks -> LN ->
``per_position(Dense(n_classes))`` -> readout.

Dropout (Vaswani et al. 2017, section 5.4, "Residual Dropout"): with ``drop_rate = p > 0``,
inverted dropout of rate ``p`` (:func:`nets.layers.Dropout`) is applied "to the output of
each sub-layer, before it is added to the sub-layer input" and "to the sums of the
embeddings and the positional encodings":

    x <- Drop(x + PE)
    x <- x + Drop(Attention(LN(x)))
    x <- x + Drop(MLP(LN(x)))

in train mode only (eval mode is the model without dropout, same params). Not dropped: the
attention weights ``P`` (section 5.4 does not drop them) and the final LN's output.
The rate lives in the model state, so such a model is stateful and every call passes
``train=`` (:mod:`nets.model`); ``drop_rate=0`` (the default) builds no Dropout at all.

>>> net = model(vocab_size=5, n_classes=3, seq_len=7, d_model=8, n_heads=2)
>>> net.input_shape, net.output_shape       # token ids -> class scores at every position
((7,), (7, 3))
>>> import numpy as np
>>> np.round(sinusoidal_encoding(3, 4), 3)  # rows t = 0, 1, 2: sin, cos, sin, cos
array([[ 0.   ,  1.   ,  0.   ,  1.   ],
       [ 0.841,  0.54 ,  0.01 ,  1.   ],
       [ 0.909, -0.416,  0.02 ,  1.   ]], dtype=float32)

References:
  Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser & Polosukhin, Attention Is All
  You Need, NeurIPS 2017, https://arxiv.org/abs/1706.03762 (eq. 1, sections 3.2, 3.5, 5.4).
  Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov, Dropout, JMLR 15, 2014.
  Xiong et al., On Layer Normalization in the Transformer Architecture, ICML 2020,
  https://arxiv.org/abs/2002.04745 . Ba, Kiros & Hinton, Layer Normalization, 2016,
  https://arxiv.org/abs/1607.06450 . Hendrycks & Gimpel, GELUs, 2016,
  https://arxiv.org/abs/1606.08415 .
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nets import _checks, _sequence
from nets import layers as L
from nets._sequence import Readout, per_position  # re-exported
from nets.layers import Layer
from nets.model import Model

IMPLS = ("written", "jax", "custom_vjp")


def sinusoidal_encoding(T: int, d: int) -> np.ndarray:
    """``PE`` of shape ``(T, d)`` (module doc; for odd ``d`` the last column is a sine).
    NumPy float32: a constant of the compiled program."""
    t = np.arange(T, dtype=np.float64)[:, None]
    rates = 10000.0 ** (-np.arange(0, d, 2, dtype=np.float64) / d)  # 10000^(-2i/d)
    pe = np.zeros((T, d))
    pe[:, 0::2] = np.sin(t * rates)
    pe[:, 1::2] = np.cos(t * rates[: d // 2])
    return pe.astype(np.float32)


def PositionalEncoding() -> Layer:
    """``x + PE`` (module doc), no parameters. Shapes: ``(T, d) -> (T, d)``."""

    def init(key, input_shape):
        return _sequence.sequence_shape(input_shape, "PositionalEncoding"), (), ()

    def apply(params, state, x, *, train=False, key=None):
        T, d = jnp.shape(x)
        return x + jnp.asarray(sinusoidal_encoding(T, d), jnp.result_type(x)), state

    return Layer(init, apply)


def causal_mask(T: int) -> np.ndarray:
    """``mask[t, s] = s <= t``, shape ``(T, T)``: position ``t`` sees itself and the past."""
    return np.tril(np.ones((T, T), bool))


def _allowed(T: int, causal: bool, real):
    """The entries ``(t, s)`` the attention keeps: ``s <= t`` when ``causal``, and, given the
    padding mask ``real`` (T,), only real keys ``s`` or ``s == t`` (module doc); ``None``
    when every entry is kept."""
    keep = causal_mask(T) if causal else None
    if real is None:
        return keep
    keys = jnp.logical_or(real[None, :], np.eye(T, dtype=bool))
    return keys if keep is None else jnp.logical_and(keep, keys)


def _heads_attention(q, k, v, causal: bool, real=None):
    """``(O, P)`` of eq. 1 for the heads ``q, k, v`` (T, H, d_h): ``O`` (T, H, d_h), ``P``
    (H, T, T); ``real`` (T,) the padding mask or ``None``."""
    S = jnp.einsum("thc,shc->hts", q, k) / np.sqrt(q.shape[-1])  # S_j = Q_j K_j^T / sqrt(d_h)
    keep = _allowed(q.shape[0], causal, real)
    if keep is not None:
        S = jnp.where(keep, S, -jnp.inf)  # replaced: no gradient into the hidden entries
    P = jax.nn.softmax(S, axis=-1)  # (H, T, T)
    return jnp.einsum("hts,shc->thc", P, v), P  # head_j = P_j V_j


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attention_custom_vjp(q, k, v, real, causal):
    return _heads_attention(q, k, v, causal, real)[0]


def _attention_forward(q, k, v, real, causal):
    o, P = _heads_attention(q, k, v, causal, real)
    return o, (q, k, v, P, o)


def _attention_backward(causal, residuals, do):
    """The module doc's backward pass; masked entries have ``P = 0``, hence ``dS = 0``."""
    q, k, v, P, o = residuals
    scale = float(1.0 / np.sqrt(q.shape[-1]))
    dv = jnp.einsum("hts,thc->shc", P, do)
    dP = jnp.einsum("thc,shc->hts", do, v)
    dS = P * (dP - jnp.einsum("thc,thc->ht", do, o)[..., None])  # rowsum(dO O) = rowsum(P dP)
    dq = jnp.einsum("hts,shc->thc", dS, k) * scale
    dk = jnp.einsum("hts,thc->shc", dS, q) * scale
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None  # none for real


_attention_custom_vjp.defvjp(_attention_forward, _attention_backward)


def attention(params, x, *, n_heads: int, causal: bool = True, impl: str = "written",
              mask=None):
    """Multi-head self-attention of one sequence (module doc). Returns ``(y, P)``: ``y``
    (T, d) and the attention weights ``P`` (H, T, T), rows summing to 1 (``P`` is ``None``
    with ``impl="jax"``, whose kernel does not return them, and with ``"custom_vjp"``, whose
    backward pass takes no gradient through them). ``mask``: ``None`` or the padding mask
    ``real`` (T,) bool, True at real positions (module doc, "Padding")."""
    T, d = x.shape
    dh = d // n_heads
    heads = lambda W: (x @ W.T).reshape(T, n_heads, dh)  # noqa: E731  (T, H, d_h)
    q, k, v = heads(params["Wq"]), heads(params["Wk"]), heads(params["Wv"])
    real = None if mask is None else jnp.asarray(mask, bool)
    P = None
    if impl == "jax" and real is None:
        o = jax.nn.dot_product_attention(q, k, v, is_causal=causal)  # (T, H, d_h)
    elif impl == "jax":
        o = jax.nn.dot_product_attention(q, k, v, mask=_allowed(T, causal, real)[None])
    elif impl == "custom_vjp":
        o = _attention_custom_vjp(q, k, v, real, causal)
    else:
        o, P = _heads_attention(q, k, v, causal, real)
    return o.reshape(T, d) @ params["Wo"].T, P  # [head_1 .. head_H] Wo^T


def MultiHeadAttention(n_heads: int, *, causal: bool = True, impl: str = "written") -> Layer:
    """Multi-head (causal) self-attention over one sequence (module doc).

    Shapes: ``(T, d) -> (T, d)``, ``d`` divisible by ``n_heads``; params ``{"Wq", "Wk",
    "Wv", "Wo"}``, each ``(d, d)``, Glorot uniform, no biases."""
    who = "MultiHeadAttention"
    n_heads = _sequence.positive_int(n_heads, "n_heads", who)
    if impl not in IMPLS:
        raise ValueError(f"impl: {who} expected one of {IMPLS}, got {impl!r}")

    def init(key, input_shape):
        T, d = _sequence.sequence_shape(input_shape, who)
        if d % n_heads:
            raise ValueError(f"input_shape: {who} splits d = {d} into {n_heads} heads, which "
                             f"needs d divisible by n_heads")
        glorot = jax.nn.initializers.glorot_uniform(in_axis=-1, out_axis=-2)
        keys = jax.random.split(key, 4)
        return (T, d), {n: glorot(k, (d, d)) for n, k in zip(("Wq", "Wk", "Wv", "Wo"), keys)}, ()

    def apply(params, state, x, *, train=False, key=None, mask=None):
        if jnp.ndim(x) != 2 or jnp.shape(x)[1] != params["Wq"].shape[1]:
            raise ValueError(f"x: {who} expected one sequence of shape (T, "
                             f"{params['Wq'].shape[1]}), got shape {jnp.shape(x)}")
        if mask is not None and jnp.shape(mask) != jnp.shape(x)[:1]:
            raise ValueError(f"mask: {who} expected the padding mask of shape "
                             f"({jnp.shape(x)[0]},), got shape {jnp.shape(mask)}")
        _sequence.ATTENTION.record(bool(causal))  # read by nets.generate
        y, P = attention(params, x, n_heads=n_heads, causal=causal, impl=impl, mask=mask)
        if _MAPS.active():  # attention_maps(model=...): the written P of this very layer
            _MAPS.record(P if P is not None else attention(
                params, x, n_heads=n_heads, causal=causal, mask=mask)[1])
        return y, state

    return Layer(init, L.reads_mask(apply))


def mlp_block(d_mlp: int) -> Layer:
    """``y_t = W_2 gelu(W_1 x_t + b_1) + b_2`` at every position: ``(T, d) -> (T, d)``."""

    def init(key, input_shape):
        _, d = _sequence.sequence_shape(input_shape, "mlp_block")
        return _mlp(d).init(key, input_shape)

    def _mlp(d):
        return L.serial(per_position(L.Dense(d_mlp)), L.Activation(jax.nn.gelu),
                        per_position(L.Dense(d)))

    def apply(params, state, x, *, train=False, key=None):
        return _mlp(jnp.shape(x)[1]).apply(params, state, x, train=train, key=key)

    return Layer(init, apply)


def block(n_heads: int, d_mlp: int, *, causal: bool = True, impl: str = "written",
          drop_rate: float = 0.0) -> Layer:
    """A pre-LN Transformer block (module doc): ``x + Drop(Attn(LN(x)))``, then ``x +
    Drop(MLP(LN(x)))``, ``Drop`` the residual dropout of rate ``drop_rate`` (section 5.4;
    none for ``0``). Shapes: ``(T, d) -> (T, d)``; params ``((LN, Attn), (LN, MLP))``
    whatever the rate."""
    who = "transformer.block"
    d_mlp = _sequence.positive_int(d_mlp, "d_mlp", who)
    drop_rate = _sequence.check_dropout(drop_rate, who)
    attn = MultiHeadAttention(n_heads, causal=causal, impl=impl)
    drop = lambda f: _sequence.with_dropout(f, drop_rate)  # noqa: E731  f then Dropout
    return L.serial(L.residual(drop(L.serial(_norm(impl), attn))),
                    L.residual(drop(L.serial(_norm(impl), mlp_block(d_mlp)))))


def _norm(impl: str) -> Layer:
    """The blocks' LayerNorm: its hand-derived backward too with ``impl="custom_vjp"``."""
    return L.LayerNorm(impl="custom_vjp" if impl == "custom_vjp" else "autodiff")


def model(*, n_classes: int, seq_len: int, vocab_size: int | None = None,
          d_in: int | None = None, d_model: int = 32, n_heads: int = 2, n_layers: int = 2,
          d_mlp: int | None = None, readout: str = "all", causal: bool = True,
          impl: str = "written", drop_rate: float = 0.0, pad_id: int | None = None) -> Model:
    """A Transformer classifier of sequences, causal by default (module doc).

    Args:
      n_classes: outputs per position (or per sequence).
      seq_len: ``T``, the length of one example.
      vocab_size: token ids ``(T,)`` in ``[0, vocab_size)`` through an embedding of
        ``d_model``; or
      d_in: real features ``(T, d_in)`` through ``per_position(Dense(d_model))``.
      d_model, n_heads, n_layers: width (divisible by ``n_heads``), heads, blocks.
      d_mlp: hidden width of each block's MLP, default ``4 d_model``.
      readout: ``"all"`` (``(T, n_classes)``), ``"last"`` or ``"mean"`` (``(n_classes,)``).
      causal: mask attention to ``s <= t`` (the decoder); ``False`` for an encoder that
        sees the whole sequence at every position.
      impl: ``"written"``, ``"jax"`` (``jax.nn.dot_product_attention``) or
        ``"custom_vjp"`` (the written forward pass, the hand-derived backward of attention
        and of the layer norms; module doc).
      drop_rate: drop probability ``p`` in ``[0, 1)`` of the residual dropout of Vaswani et
        al. (2017, section 5.4; module doc): on each sub-layer's output before it is added
        to the residual stream and on the embeddings plus positional encodings. ``0`` (the
        default) builds no Dropout layer; ``p > 0`` makes a stateful model (its state holds
        the rate; pass ``train=``) with the same params as ``drop_rate=0``.
      pad_id: ``None`` (the default: no padding mask), or the token id that pads shorter
        sequences (with ``vocab_size``; an id the data never uses otherwise, not ``-1``,
        which is outside the vocabulary): no position attends to a padded one (but
        itself), and ``readout="last"``/``"mean"`` read the real positions only (module
        doc, "Padding"). Right-pad: a real position's output is then the one a model of
        the sequence's own length gives, causal or not. Outputs at padded positions are
        computed too; with ``readout="all"`` their labels must be ``-1``. A sequence of
        padding alone reads position ``T - 1`` (``"last"``) or 0 (``"mean"``). ``train.fit``
        and :func:`nets.objective.make`'s objective refuse concrete ids that are not right
        padded and labels other than ``-1`` at the padding. Same params as ``pad_id=None``
        (:func:`attention_maps` needs the same ``pad_id`` passed).
    """
    who = "transformer.model"
    seq_len = _sequence.positive_int(seq_len, "seq_len", who)
    n_classes = _sequence.positive_int(n_classes, "n_classes", who)
    n_layers = _sequence.positive_int(n_layers, "n_layers", who)
    d_model = _sequence.positive_int(d_model, "d_model", who)
    d_mlp = 4 * d_model if d_mlp is None else d_mlp
    drop_rate = _sequence.check_dropout(drop_rate, who)
    first, tail = _sequence.embed_or_project(vocab_size, d_in, d_model, who)
    pad_id = _sequence.check_pad_id(pad_id, vocab_size, who)
    layers = [first, _sequence.with_dropout(PositionalEncoding(), drop_rate),  # Drop(x + PE)
              *[block(n_heads, d_mlp, causal=causal, impl=impl, drop_rate=drop_rate)
                for _ in range(n_layers)],
              _norm(impl), *_sequence.head(n_classes, readout)]
    return Model(L.padded(L.serial(*layers), pad_id), input_shape=(seq_len, *tail))


def attention_maps(params, x, *, n_heads: int | None = None, causal: bool | None = None,
                   pad_id: int | None = None, model: Model | None = None,
                   state=None) -> list:
    """The attention weights ``P`` (H, T, T) of every block of a :func:`model` for ONE
    input ``x`` (ids ``(T,)`` or features ``(T, d_in)``; a batch: ``jax.vmap``), in the
    order of the blocks (the written attention, whatever ``impl`` the model uses): the
    attention maps of the sequence experiment.

    With ``model=`` (the :class:`nets.Model` the params belong to; ``state=`` its state if
    it has one), the maps come from the model's own forward pass in evaluation mode: every
    :func:`MultiHeadAttention` it runs, with its own heads, mask and padding, in a model of
    any composition; pass none of ``n_heads``, ``causal``, ``pad_id`` then.

    Without it, the forward pass of a :func:`model` is replayed from ``params`` alone
    (``(input layer, (), block_1, ..., block_L, LN, head...)``), which do not record the
    head count or the mask: ``n_heads`` and ``causal`` (default ``True``) must be the
    model's (``d_model`` divisible by ``n_heads`` is checked; a wrong divisor is not
    detectable and gives maps of the wrong heads). ``causal=False`` for an encoder;
    ``pad_id`` the model's (``None``: no padding mask; a model built with ``pad_id`` and
    maps drawn without it show attention on the padding the model never had)."""
    who = "attention_maps"
    if model is not None:
        return _model_maps(model, params, x, state, n_heads=n_heads, causal=causal,
                           pad_id=pad_id)
    if n_heads is None:
        raise TypeError(f"n_heads: {who} expected the model's head count, or model= (the "
                        f"Model, which knows it), got neither")
    causal = True if causal is None else causal
    n_heads = _sequence.positive_int(n_heads, "n_heads", who)
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal: {who} expected a bool (the model's causal=), got "
                        f"{type(causal).__name__} {causal!r}")
    first = params[0] if isinstance(params, (tuple, list)) and len(params) >= 3 else None
    if not (isinstance(first, dict) and ("E" in first or "W" in first)):
        raise ValueError(f"params: {who} expected the params of transformer.model (input "
                         f"layer, (), blocks..., LN, head...), got {type(params).__name__}")
    d = first["E"].shape[1] if "E" in first else first["W"].shape[0]  # d_model
    if d % n_heads:
        raise ValueError(f"n_heads: {who} expected a divisor of the model's d_model = {d}, "
                         f"got {n_heads} (pass the model's n_heads)")
    shape = tuple(jnp.shape(x))
    if "E" in first:
        if len(shape) != 1:
            raise ValueError(f"ids: {who} expected one sequence of shape (T,), got {shape}; "
                             f"call it per sequence or jax.vmap")
        if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
            raise TypeError(f"ids: {who} expected integer token ids, got dtype "
                            f"{jnp.result_type(x)}")
        h = L.embed(first["E"], x)  # an id outside [0, V) gives NaN, as in the model
        pad_id = _sequence.check_pad_id(pad_id, first["E"].shape[0], who)
    else:
        d_in = first["W"].shape[1]
        if shape[1:] != (d_in,) or len(shape) != 2:
            raise ValueError(f"x: {who} expected one sequence of shape (T, {d_in}), got "
                             f"{shape}; call it per sequence or jax.vmap")
        h = jax.vmap(lambda xt: first["W"] @ xt + first["b"])(x)
        pad_id = _sequence.check_pad_id(pad_id, None, who)
    h = h + sinusoidal_encoding(*h.shape).astype(h.dtype)
    maps = []
    for p in params[2:]:
        if not (isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], tuple)
                and len(p[0]) == 2 and isinstance(p[0][1], dict) and "Wq" in p[0][1]):
            break  # past the last block
        (ln1, att), (ln2, mlp) = p
        for name in ("Wq", "Wk", "Wv", "Wo"):
            if jnp.shape(att[name]) != (d, d):
                raise ValueError(f"params: {who} expected {name} of shape ({d}, {d}) in block "
                                 f"{len(maps) + 1}, got {jnp.shape(att[name])}")
        y, P = attention(att, _layer_norm(ln1, h), n_heads=n_heads, causal=bool(causal),
                         mask=None if pad_id is None else jnp.asarray(x) != pad_id)
        maps.append(P)
        h = h + y
        h = h + mlp_block(1).apply(mlp, ((),) * len(mlp), _layer_norm(ln2, h))[0]  # stateless
    if not maps:
        raise ValueError(f"params: {who} found no Transformer block in params (expected the "
                         f"params of transformer.model)")
    return maps


_MAPS = _checks.TraceRecorder()  # the P of every MultiHeadAttention run inside attention_maps


def _model_maps(model, params, x, state, **replay) -> list:
    """:func:`attention_maps` with ``model=``: the maps its attention layers record while
    its layer runs (not compiled here: under a caller's ``jit``/``vmap`` they are traced)."""
    who = "attention_maps"
    given = [name for name, value in replay.items() if value is not None]
    if given:
        raise TypeError(f"{', '.join(given)}: {who} with model= reads them from the model; "
                        f"pass model= alone (or drop model= and pass n_heads=, causal=, "
                        f"pad_id=)")
    if not isinstance(model, Model):
        raise TypeError(f"model: {who} expected a nets.Model, got {type(model).__name__}")
    if tuple(jnp.shape(x)) != tuple(model.input_shape):
        raise ValueError(f"x: {who} expected one example of the model's input_shape "
                         f"{tuple(model.input_shape)}, got shape {tuple(jnp.shape(x))} (a "
                         f"batch? jax.vmap over it)")
    if model.stateful and state is None:
        raise ValueError(f"state: {who} expected the state of this model, which has one "
                         f"(model.init's second value)")
    if state is None:
        state = model._abstract[2]  # a stateless model's: empty tuples, no arrays
    with _MAPS.collect() as maps:
        L._checked_apply(model.layer, "model", params, state, x, train=False, key=None)
    if not maps:
        raise ValueError(f"model: {who} found no MultiHeadAttention in the model")
    return list(maps)


def _layer_norm(params, x):
    return L.LayerNorm().apply(params, (), x)[0]


__all__ = ["sinusoidal_encoding", "PositionalEncoding", "causal_mask", "attention",
           "MultiHeadAttention", "mlp_block", "block", "model", "attention_maps",
           "per_position", "Readout", "IMPLS"]
