"""Helpers shared by the sequence models (:mod:`nets.rnn`, :mod:`nets.transformer`,
:mod:`nets.mamba`): a layer applied at every position of a sequence, the readout of a
sequence model, and the argument checks they share.

A sequence is ONE example of shape ``(T, d)`` (positions first); batches come from
``jax.vmap`` as for every layer of :mod:`nets.layers`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nets import _checks
from nets import layers as L
from nets.layers import Layer

READOUTS = ("all", "last", "mean")


def positive_int(value, name: str, who: str) -> int:
    return _checks.check_int(value, f"{name}: {who}", 1)


def sequence_shape(input_shape, who: str) -> tuple[int, int]:
    """``(T, d)`` or a clear error."""
    input_shape = L._shape(input_shape, who)
    if len(input_shape) != 2:
        raise ValueError(f"input_shape: {who} expected one sequence (T, d), got {input_shape}")
    return input_shape


def per_position(layer: Layer) -> Layer:
    """``layer`` applied to each position of a sequence by ``jax.vmap`` over the first axis,
    with the same params at every position: ``(T, *s) -> (T, *s')`` when ``layer`` maps
    ``s -> s'`` (e.g. ``per_position(Dense(d))`` is ``y_t = W x_t + b`` for every ``t``).
    The layer must be stateless; ``key`` (when not ``None``) is split over positions."""
    layer = L._as_layer(layer, "per_position: layer")

    def init(key, input_shape):
        input_shape = L._shape(input_shape, "per_position")
        if len(input_shape) < 2:
            raise ValueError(f"input_shape: per_position expected a sequence (T, ...), got "
                             f"{input_shape}")
        out, params, state = layer.init(key, input_shape[1:])
        if jax.tree.leaves(state):
            raise ValueError("per_position: expected a stateless layer (no BatchNorm, no "
                             "Dropout), got one with state")
        return (input_shape[0], *out), params, state

    def apply(params, state, x, *, train=False, key=None):
        one = lambda xt, k: layer.apply(params, state, xt, train=train, key=k)[0]  # noqa: E731
        if key is None:
            return jax.vmap(lambda xt: one(xt, None))(x), state
        return jax.vmap(one)(x, jax.random.split(key, jnp.shape(x)[0])), state

    return Layer(init, apply)


def Readout(kind: str = "all") -> Layer:
    """The output of a sequence model: ``"all"`` positions ``(T, m) -> (T, m)``, the
    ``"last"`` one ``(T, m) -> (m,)`` (a causal model's summary of the whole sequence), or
    the ``"mean"`` over positions ``(T, m) -> (m,)``."""
    if kind not in READOUTS:
        raise ValueError(f"readout: expected one of {READOUTS}, got {kind!r}")
    if kind == "all":
        return L.Identity()
    fn = (lambda x: x[-1]) if kind == "last" else (lambda x: jnp.mean(x, axis=0))
    return L._stateless(fn, lambda s: tuple(s[1:]))


def head(n_classes: int, readout: str, init: str = "glorot") -> list[Layer]:
    """``per_position(Dense(n_classes))`` then :func:`Readout`: class scores per position
    (``"all"``) or for the sequence (``"last"``, ``"mean"``)."""
    return [per_position(L.Dense(n_classes, init=init)), Readout(readout)]


def embed_or_project(vocab_size, d_in, d_model: int, who: str) -> tuple[Layer, tuple]:
    """The input layer and the input shape's trailing part: token ids ``(T,)`` through
    :func:`nets.layers.Embedding` when ``vocab_size`` is given, else real features
    ``(T, d_in)`` through ``per_position(Dense(d_model))``."""
    if (vocab_size is None) == (d_in is None):
        raise ValueError(f"{who}: expected exactly one of vocab_size (token ids) and d_in "
                         f"(real features per position), got vocab_size={vocab_size!r}, "
                         f"d_in={d_in!r}")
    if vocab_size is not None:
        vocab_size = positive_int(vocab_size, "vocab_size", who)
        return L.Embedding(vocab_size, d_model, stddev=1.0), ()
    d_in = positive_int(d_in, "d_in", who)
    return per_position(L.Dense(d_model)), (d_in,)
