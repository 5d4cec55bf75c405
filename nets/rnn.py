"""Recurrent networks: the Elman RNN and the LSTM, one step a pure function, a sequence one
``jax.lax.scan``; layers over ONE sequence ``(T, d)`` that compose with :mod:`nets.layers`.

The recurrent net (Elman 1990), hidden state ``h_t`` of ``n`` units, ``h_0 = 0``:

    h_t = tanh(W x_t + U h_{t-1} + b)           W: (n, d), U: (n, n), b: (n,)

The LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers, Schmidhuber &
Cummins 2000), cell ``c_t`` and output ``h_t``, ``h_0 = c_0 = 0``; one product
``z_t = W x_t + U h_{t-1} + b`` of ``4n`` rows holds the four gates in the order
``(i, f, g, o)``:

    i_t = sigma(z_t^i)      input gate          W: (4n, d), U: (4n, n), b: (4n,)
    f_t = sigma(z_t^f)      forget gate
    g_t = tanh(z_t^g)       candidate cell
    o_t = sigma(z_t^o)      output gate
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)

The cell's path ``c_{t-1} -> c_t`` is multiplied by ``f_t`` only (no squashing, no weight
matrix): the "constant error carousel" along which gradients survive many steps. ``b^f``
starts at ``forget_bias = 1`` (Gers et al. 2000; Jozefowicz et al. 2015), the gates at
first remember. Weights are the note's orientation (``z = W a + b``, ``W`` of shape
``(n_out, n_in)``). :func:`nets.backprop_sequence.lstm_backward` writes the backward pass through
time out by hand; the tests hold it against ``jax.grad`` of :func:`lstm`.

Dropout (Zaremba, Sutskever & Vinyals 2014, section 3): on the NON-recurrent connections
only, the input of every recurrent layer and the output of the last one, never on
``h_{t-1} -> h_t`` (so the recurrence keeps its memory). With ``drop_rate = p > 0``
:func:`model` is

    input layer -> Drop -> [recurrent layer -> Drop] x n_layers -> head

(between stacked layers, and before the head), inverted dropout of rate ``p``
(:func:`nets.layers.Dropout`) with an independent mask at every position, in train mode
only. The rate lives in the model state, so such a model is stateful and every call passes
``train=`` (:mod:`nets.model`); its params are those of ``drop_rate=0``, which builds no
Dropout at all.

>>> import jax, jax.numpy as jnp
>>> net = model(vocab_size=5, n_classes=3, seq_len=7, d_model=8, d_hidden=6)
>>> net.input_shape, net.output_shape       # token ids -> class scores at every position
((7,), (7, 3))
>>> Model(LSTM(6), input_shape=(7, 4)).output_shape
(7, 6)
>>> Model(LSTM(6, return_sequences=False), input_shape=(7, 4)).output_shape
(6,)

References:
  Hochreiter & Schmidhuber, Long Short-Term Memory, Neural Computation 9(8), 1997.
  Gers, Schmidhuber & Cummins, Learning to Forget: Continual Prediction with LSTM, Neural
  Computation 12(10), 2000. Elman, Finding Structure in Time, Cognitive Science 14, 1990.
  Jozefowicz, Zaremba & Sutskever, An Empirical Exploration of Recurrent Network
  Architectures, ICML 2015. Zaremba, Sutskever & Vinyals, Recurrent Neural Network
  Regularization, 2014, https://arxiv.org/abs/1409.2329 (section 3, dropout).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from nets import _checks, _sequence
from nets import layers as L
from nets._sequence import Readout, per_position  # re-exported
from nets.layers import Layer
from nets.model import Model


class LSTMState(NamedTuple):
    """The LSTM's carry between steps."""

    h: jax.Array  # (n,) output h_t
    c: jax.Array  # (n,) cell c_t


def _weights(key, d: int, n: int, gates: int, forget_bias: float | None):
    """``W`` (gates n, d) Glorot uniform, ``U`` (gates n, n) orthogonal per gate, ``b`` zero
    (``b^f = forget_bias`` for the LSTM)."""
    kw, ku = jax.random.split(key)
    W = jax.nn.initializers.glorot_uniform(in_axis=-1, out_axis=-2)(kw, (gates * n, d))
    U = jnp.concatenate([jax.nn.initializers.orthogonal()(k, (n, n))
                         for k in jax.random.split(ku, gates)])
    b = jnp.zeros((gates * n,))
    if forget_bias is not None:
        b = b.at[n:2 * n].set(forget_bias)  # order (i, f, g, o)
    return {"W": W, "U": U, "b": b}


def rnn_step(params, h, x):
    """One step ``h_t = tanh(W x_t + U h_{t-1} + b)``; ``h``: (n,), ``x``: (d,). Returns
    ``(h_t, h_t)`` (carry, output), the shape ``jax.lax.scan`` takes."""
    h = jnp.tanh(params["W"] @ x + params["U"] @ h + params["b"])
    return h, h


def lstm_step(params, carry: LSTMState, x):
    """One LSTM step (module doc): ``carry = (h_{t-1}, c_{t-1})``, an :class:`LSTMState` or a
    pair of ``(n,)`` vectors, ``x = x_t`` (d,). Returns ``(LSTMState(h_t, c_t), h_t)``."""
    if not isinstance(carry, LSTMState):
        if not isinstance(carry, (tuple, list)) or len(carry) != 2:
            raise TypeError(f"carry: lstm_step expected an LSTMState(h, c) or a pair (h, c) of "
                            f"(n,) vectors, got {type(carry).__name__}")
        carry = LSTMState(*carry)
    z = params["W"] @ x + params["U"] @ carry.h + params["b"]  # z_t, (4n,)
    zi, zf, zg, zo = jnp.split(z, 4)
    i, f, g, o = jax.nn.sigmoid(zi), jax.nn.sigmoid(zf), jnp.tanh(zg), jax.nn.sigmoid(zo)
    c = f * carry.c + i * g  # c_t = f_t c_{t-1} + i_t g_t
    h = o * jnp.tanh(c)  # h_t = o_t tanh(c_t)
    return LSTMState(h, c), h


def _check_xs(params, xs, who):
    """``xs`` one sequence ``(T, d)`` of real numbers for ``W`` of shape ``(rows, d)``; static
    shapes and dtypes only, so it holds under tracing too."""
    d = jnp.shape(params["W"])[1]
    dtype = getattr(xs, "dtype", None)
    if dtype is None:
        xs = jnp.asarray(xs)
        dtype = xs.dtype
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"xs: {who} expected real numbers, got dtype {dtype}")
    if jnp.ndim(xs) != 2 or jnp.shape(xs)[1] != d:
        hint = " (a batch? jax.vmap over the sequences)" if jnp.ndim(xs) == 3 else ""
        raise ValueError(f"xs: {who} expected one sequence of shape (T, {d}), got shape "
                         f"{jnp.shape(xs)}{hint}")
    return xs


def _check_state(value, name, who, n, dtype):
    """An initial state ``(n,)`` of floats, as ``dtype`` (the dtype of the scan's carry)."""
    vdtype = getattr(value, "dtype", None)
    if vdtype is None:
        value = jnp.asarray(value)
        vdtype = value.dtype
    if not jnp.issubdtype(vdtype, jnp.floating):
        raise TypeError(f"{name}: {who} expected a floating-point state of shape ({n},), got "
                        f"dtype {vdtype}")
    if jnp.shape(value) != (n,):
        hint = " (a batch? jax.vmap over the sequences)" if jnp.ndim(value) == 2 else ""
        raise ValueError(f"{name}: {who} expected shape ({n},) (one state of the n = {n} "
                         f"units), got shape {jnp.shape(value)}{hint}")
    return jnp.asarray(value, jnp.result_type(dtype, vdtype))


def rnn(params, xs, h0=None):
    """``(hs, h_T)`` for a sequence ``xs`` (T, d) by ``jax.lax.scan`` over :func:`rnn_step`;
    ``hs``: (T, n); ``h0`` ``(n,)`` defaults to zeros."""
    xs = _check_xs(params, xs, "rnn")
    n = params["U"].shape[0]
    dtype = jnp.result_type(xs, params["W"])
    h0 = jnp.zeros((n,), dtype) if h0 is None else _check_state(h0, "h0", "rnn", n, dtype)
    hT, hs = jax.lax.scan(lambda h, x: rnn_step(params, h, x), h0, xs)
    return hs, hT


def lstm(params, xs, carry0: LSTMState | None = None):
    """``(hs, (h_T, c_T))`` for a sequence ``xs`` (T, d) by ``jax.lax.scan`` over
    :func:`lstm_step`; ``hs``: (T, n); ``carry0`` (an :class:`LSTMState` or a pair
    ``(h_0, c_0)`` of ``(n,)`` vectors) defaults to ``h_0 = c_0 = 0``."""
    xs = _check_xs(params, xs, "lstm")
    n = params["U"].shape[1]
    dtype = jnp.result_type(xs, params["W"])
    if carry0 is None:
        zero = jnp.zeros((n,), dtype)
        carry0 = LSTMState(zero, zero)
    else:
        if not isinstance(carry0, (tuple, list)) or len(carry0) != 2:
            raise TypeError(f"carry0: lstm expected an LSTMState(h, c) of two ({n},) vectors, "
                            f"got {type(carry0).__name__}")
        carry0 = LSTMState(_check_state(carry0[0], "h0 (carry0.h)", "lstm", n, dtype),
                           _check_state(carry0[1], "c0 (carry0.c)", "lstm", n, dtype))
    carry, hs = jax.lax.scan(lambda c, x: lstm_step(params, c, x), LSTMState(*carry0), xs)
    return hs, carry


def _recurrent(who: str, n: int, gates: int, forget_bias, run, return_sequences: bool) -> Layer:
    n = _sequence.positive_int(n, "d_hidden", who)

    def init(key, input_shape):
        T, d = _sequence.sequence_shape(input_shape, who)
        out = (T, n) if return_sequences else (n,)
        return out, _weights(key, d, n, gates, forget_bias), ()

    def apply(params, state, x, *, train=False, key=None):
        if jnp.ndim(x) != 2 or jnp.shape(x)[1] != params["W"].shape[1]:
            raise ValueError(f"x: {who} expected one sequence of shape (T, "
                             f"{params['W'].shape[1]}), got shape {jnp.shape(x)}")
        hs, _ = run(params, x)
        return (hs if return_sequences else hs[-1]), state

    return Layer(init, apply)


def RNN(d_hidden: int, *, return_sequences: bool = True) -> Layer:
    """Elman recurrent layer over one sequence (module doc), ``h_0 = 0``.

    Shapes: ``(T, d) -> (T, d_hidden)``, or ``(d_hidden,)`` (``h_T``) with
    ``return_sequences=False``; params ``{"W": (n, d), "U": (n, n), "b": (n,)}``."""
    return _recurrent("RNN", d_hidden, 1, None, rnn, return_sequences)


def LSTM(d_hidden: int, *, return_sequences: bool = True, forget_bias: float = 1.0) -> Layer:
    """LSTM layer over one sequence (module doc), ``h_0 = c_0 = 0``.

    Shapes: ``(T, d) -> (T, d_hidden)``, or ``(d_hidden,)`` (``h_T``) with
    ``return_sequences=False``; params ``{"W": (4n, d), "U": (4n, n), "b": (4n,)}``, gates
    stacked ``(i, f, g, o)``, ``b^f = forget_bias``."""
    forget_bias = _checks.check_real(forget_bias, "forget_bias")
    return _recurrent("LSTM", d_hidden, 4, forget_bias, lstm, return_sequences)


def model(*, n_classes: int, seq_len: int, vocab_size: int | None = None,
          d_in: int | None = None, d_model: int = 32, d_hidden: int = 64,
          n_layers: int = 1, cell: str = "lstm", readout: str = "all",
          drop_rate: float = 0.0, pad_id: int | None = None) -> Model:
    """A recurrent classifier of sequences: input layer -> ``n_layers`` recurrent layers ->
    ``per_position(Dense(n_classes))`` -> readout, with ``drop_rate`` after the input layer
    and after each recurrent layer (module doc).

    Args:
      n_classes: outputs per position (or per sequence).
      seq_len: ``T``, the length of one example.
      vocab_size: token ids ``(T,)`` in ``[0, vocab_size)`` through an embedding of
        ``d_model``; or
      d_in: real features ``(T, d_in)`` through ``per_position(Dense(d_model))``.
      d_hidden: units ``n`` of each recurrent layer.
      cell: ``"lstm"`` or ``"rnn"``.
      readout: ``"all"`` (scores at every position, ``(T, n_classes)``), ``"last"`` or
        ``"mean"`` (``(n_classes,)``).
      drop_rate: drop probability ``p`` in ``[0, 1)`` on the non-recurrent connections
        (Zaremba et al. 2014; module doc): the input layer's output, between stacked
        layers and before the head. ``0`` (the default) builds no Dropout layer; ``p > 0``
        makes a stateful model (its state holds the rate; pass ``train=``) with the same
        params as ``drop_rate=0``.
      pad_id: ``None`` (the default), or the token id that pads shorter sequences (with
        ``vocab_size``): ``readout="last"``/``"mean"`` read the real positions only.
        The recurrence is causal, so that is all the mask does here
        (:mod:`nets._sequence`, "Padding", for the rest: right padding, ``-1`` labels at
        the padding). Same params as ``pad_id=None``.
    """
    who = "rnn.model"
    if cell not in ("lstm", "rnn"):
        raise ValueError(f"cell: {who} expected 'lstm' or 'rnn', got {cell!r}")
    seq_len = _sequence.positive_int(seq_len, "seq_len", who)
    n_classes = _sequence.positive_int(n_classes, "n_classes", who)
    n_layers = _sequence.positive_int(n_layers, "n_layers", who)
    d_model = _sequence.positive_int(d_model, "d_model", who)
    drop_rate = _sequence.check_dropout(drop_rate, who)
    first, tail = _sequence.embed_or_project(vocab_size, d_in, d_model, who)
    make = LSTM if cell == "lstm" else RNN
    drop = lambda f: _sequence.with_dropout(f, drop_rate)  # noqa: E731  f then Dropout
    pad_id = _sequence.check_pad_id(pad_id, vocab_size, who)
    layers = [drop(first), *[drop(make(d_hidden)) for _ in range(n_layers)],
              *_sequence.head(n_classes, readout)]
    return Model(L.padded(L.serial(*layers), pad_id), input_shape=(seq_len, *tail))


__all__ = ["LSTMState", "rnn_step", "lstm_step", "rnn", "lstm", "RNN", "LSTM", "model",
           "per_position", "Readout"]
