"""Helpers shared by the sequence models (:mod:`nets.rnn`, :mod:`nets.transformer`,
:mod:`nets.mamba`): a layer applied at every position of a sequence, the readout of a
sequence model, the argument checks they share, :func:`with_dropout` (the models'
``drop_rate=``) and :func:`generate` (tokens from a causal language model; re-exported as
``nets.generate``).

A sequence is ONE example of shape ``(T, d)`` (positions first); batches come from
``jax.vmap`` as for every layer of :mod:`nets.layers`.

Padding and variable-length sequences. Every example has the model's ``seq_len`` ``T``;
shorter sequences are right-padded with a token id ``k`` and the model is built with
``pad_id=k`` (:func:`nets.layers.padded`): the padding mask ``real = ids != k`` reaches
every layer that reads one (:func:`nets.layers.takes_mask`). The Transformer's attention
then hides the padded keys (a padded position still sees itself), and the readouts
``"last"`` and ``"mean"`` read the real positions only, so a right-padded sequence gets at
its real positions exactly what a model of its own length gives it (tested in float64,
forward and gradient, causal or encoder; Mamba and the LSTM are causal, so there only the
readout needs the mask). Outputs at padded positions are still computed: with
``readout="all"`` give them label ``-1`` (``nets.losses.IGNORE``), which the loss does not
score. Without ``pad_id`` every layer reads the padding like any other token.

The value of an objective over per-position labels (:func:`nets.objective.make`, hence
``loss`` and ``val_loss`` of ``train.fit``) is the mean over SEQUENCES of each sequence's
mean over its scored positions, ``(1/n) sum_i (1/|S_i|) sum_{t in S_i} l_it`` (a sequence
with no scored position counts as 0); it is not the mean over scored tokens when the
``|S_i|`` differ, so ``exp(val_loss)`` is then not the token-level perplexity.
"""

from __future__ import annotations

import functools
import weakref

import jax
import jax.numpy as jnp
import numpy as np

from nets import _checks
from nets import layers as L
from nets.layers import Layer
from nets.model import Model

READOUTS = ("all", "last", "mean")


def positive_int(value, name: str, who: str) -> int:
    return _checks.check_int(value, f"{name}: {who}", 1)


def check_dropout(value, who: str) -> float:
    """The models' ``drop_rate=``: a drop probability in ``[0, 1)`` as a ``float``, or a clear
    error (a bool, a string or NaN is refused)."""
    return _checks.check_number(value, f"drop_rate: {who}", "a drop probability in [0, 1)",
                                lambda p: 0.0 <= p < 1.0)


def with_dropout(layer: Layer, drop_rate: float) -> Layer:
    """``layer`` followed by :func:`nets.layers.Dropout`: ``y = Dropout(f(x))``, inverted
    dropout of ``f``'s output in train mode, ``f(x)`` in eval mode. ``drop_rate == 0``
    returns ``layer`` itself (no Dropout, no state: the model is built as without it).

    The params are ``f``'s, initialised from the same key, so a model's params have the
    same structure and initial values with and without dropout (only the state differs).
    The state is ``(f's state, {"drop_rate": float32 scalar})`` (the rate as Dropout keeps
    it: ``optax.tree_utils.tree_set(state, drop_rate=r)`` changes it). ``key`` (when not
    ``None``) is split between ``f`` and the dropout mask."""
    layer = L._as_layer(layer, "with_dropout: layer")
    if not drop_rate:
        return layer
    drop = L.Dropout(drop_rate)

    def init(key, input_shape):
        out, params, state = L._checked_init(layer, key, input_shape, "with_dropout: layer")
        out, _, drop_state = drop.init(key, out)
        return out, params, (state, drop_state)

    def apply(params, state, x, *, train=False, key=None, mask=None):
        k_layer, k_drop = L._split(key, 2)
        y, inner = L._checked_apply(layer, "with_dropout: layer", params, state[0], x,
                                    train=train, key=k_layer, mask=mask)
        y, drop_state = drop.apply((), state[1], y, train=train, key=k_drop)
        return y, (inner, drop_state)

    return Layer(init, L.reads_mask(apply, L._wants_mask(layer)))


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
    the ``"mean"`` over positions ``(T, m) -> (m,)``.

    With a padding mask ``real`` (``mask=``, the models' ``pad_id=``), ``"last"`` reads the
    last real position and ``"mean"`` averages the real positions only (a sequence of
    padding alone reads position ``T - 1``, and its mean is 0); ``"all"`` is unchanged."""
    if kind not in READOUTS:
        raise ValueError(f"readout: expected one of {READOUTS}, got {kind!r}")
    if kind == "all":
        return L.Identity()

    def init(key, input_shape):
        return tuple(L._shape(input_shape, "Readout")[1:]), (), ()

    def apply(params, state, x, *, train=False, key=None, mask=None):
        if mask is None:
            return (x[-1] if kind == "last" else jnp.mean(x, axis=0)), state
        if kind == "last":
            return x[x.shape[0] - 1 - jnp.argmax(mask[::-1])], state
        total = jnp.sum(jnp.where(mask[:, None], x, 0), axis=0)
        return total / jnp.maximum(jnp.sum(mask), 1).astype(x.dtype), state

    return Layer(init, L.reads_mask(apply))


def head(n_classes: int, readout: str, init: str = "glorot") -> list[Layer]:
    """``per_position(Dense(n_classes))`` then :func:`Readout`: class scores per position
    (``"all"``) or for the sequence (``"last"``, ``"mean"``)."""
    return [per_position(L.Dense(n_classes, init=init)), Readout(readout)]


def check_pad_id(pad_id, vocab_size, who: str):
    """The models' ``pad_id=``: ``None``, or a token id in ``[0, vocab_size)`` of a model of
    token ids, as a Python ``int``; a clear error otherwise."""
    if pad_id is None:
        return None
    if vocab_size is None:
        raise ValueError(f"pad_id: {who} reads padding from token ids, so it needs "
                         f"vocab_size= (a model of real features d_in= has no pad token), "
                         f"got pad_id={pad_id!r} with vocab_size=None")
    return _checks.check_int(pad_id, f"pad_id: {who}", 0, int(vocab_size) - 1)


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


ATTENTION = _checks.TraceRecorder()  # `causal` of each attention layer traced (nets.transformer)


def _generation_model(model) -> int:
    """The vocabulary ``V`` of a causal model of token ids with scores for the next token at
    every position (input ``(T,)``, output ``(T, V)``, softmax), or a clear error. The
    attention layers' ``causal`` and the embedding's ``vocab_size`` are read by one abstract
    trace of the layer (:class:`nets._checks.TraceRecorder`), once per model."""
    if not isinstance(model, Model):
        raise TypeError(f"model: generate expected a nets.Model (e.g. nets.transformer.model"
                        f"(...)), got {type(model).__name__}")
    if model in _GENERATION:
        return _GENERATION[model]
    shape, out = tuple(model.input_shape), tuple(model.output_shape)
    if len(shape) != 1:
        raise ValueError(f"model: generate expected a model of token ids, input_shape (T,), got "
                         f"input_shape {shape} (real features? build it with vocab_size=)")
    with ATTENTION.collect() as causal, L.record_token_ranges() as vocabs:
        model._trace_example(np.int32)
    vocab = max(vocabs, default=0)
    if not vocab:
        raise ValueError(f"model: generate expected a model of token ids (an Embedding), got "
                         f"input_shape {shape} without one")
    if len(out) != 2 or out[0] != shape[0]:
        raise ValueError(f"model: generate expected scores at every position, output_shape "
                         f"({shape[0]}, {vocab}) (readout=\"all\"), got output_shape {out} "
                         f"(readout=\"last\" or \"mean\"?)")
    if out[1] != vocab:
        raise ValueError(f"model: generate expected scores of the next token, n_classes == "
                         f"vocab_size {vocab}, got n_classes {out[1]}")
    if model.output != "softmax":
        raise ValueError(f"model: generate expected a model of output 'softmax' (logits), got "
                         f"{model.output!r}")
    if not all(causal):
        raise ValueError("model: generate expected a causal model (the output at t a function "
                         "of positions <= t only), got attention with causal=False (an "
                         "encoder: its positions see the positions after them)")
    _GENERATION[model] = vocab
    return vocab


_GENERATION: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def generate(model: Model, params, prompt, steps: int, *, key=None, temperature=1.0,
             state=None) -> jax.Array:
    """``len(prompt) + steps`` token ids: ``prompt`` followed by ``steps`` tokens drawn one
    at a time from a causal language model (:func:`nets.transformer.model`,
    :func:`nets.mamba.model`, :func:`nets.rnn.model` with ``vocab_size=``, ``n_classes =
    vocab_size`` and ``readout="all"``).

    Token ``t`` is ``argmax z_{t-1}`` (greedy: ``key=None`` or ``temperature=0``) or a draw
    from ``softmax(z_{t-1} / temperature)`` with the key ``jax.random.fold_in(key, t)``,
    where ``z = model.apply(params, buffer)`` (T, V) and ``buffer`` (T,) holds the prompt
    and the tokens so far, right-padded with id 0. The model is causal, so ``z_{t-1}`` is
    a function of ``buffer[:t]`` only and the padding is never read. One compiled program
    (a ``lax.fori_loop`` over positions, per model and mode) for every prompt length and
    ``steps``; there is NO key-value cache: each new token reruns the whole ``T``-length
    forward pass, ``steps`` passes in all (fine for the note's small models). A layer of
    your own must be causal too (only attention's ``causal`` is checked). A model built
    with ``pad_id=k`` hides every ``k`` in the prompt or generated from the positions after
    it, as in training: generate with the model it was trained as.

    Args:
      model: a :class:`nets.Model` of token ids ``(T,)`` with output ``(T, V)``.
      params: its parameters.
      prompt: integer ids ``(len,)`` in ``[0, V)``, ``1 <= len <= T``.
      steps: tokens to add, ``0 <= steps <= T - len``.
      key: a typed PRNG key to sample; ``None``: greedy.
      temperature: ``>= 0``; ``0`` is greedy.
      state: the model's state (``model.init``'s second value) for a model with one;
        evaluation mode (``train=False``).

    Returns:
      ``(len + steps,)`` int32 ids, the prompt first.

    >>> import jax, jax.numpy as jnp
    >>> from nets import transformer
    >>> net = transformer.model(vocab_size=5, n_classes=5, seq_len=6, d_model=8, n_heads=2)
    >>> params, _ = net.init(jax.random.key(0))
    >>> out = generate(net, params, jnp.array([1, 2]), 3)
    >>> out.shape, out[:2].tolist(), bool(((0 <= out) & (out < 5)).all())
    ((5,), [1, 2], True)
    >>> sampled = generate(net, params, jnp.array([1, 2]), 3, key=jax.random.key(1))
    >>> bool((sampled == generate(net, params, jnp.array([1, 2]), 3,
    ...                           key=jax.random.key(1))).all())
    True
    """
    from nets import objective  # objective imports the model machinery: import on use

    who = "generate"
    V = _generation_model(model)
    T = model.input_shape[0]
    if isinstance(prompt, jax.core.Tracer):
        raise TypeError(f"prompt: {who} expected concrete token ids (generate is not "
                        f"traceable: it checks them, then runs one compiled program), got a "
                        f"tracer")
    prompt = np.asarray(prompt)
    if prompt.dtype.kind not in "iu":
        raise TypeError(f"prompt: {who} expected integer token ids, got dtype {prompt.dtype}")
    if prompt.ndim != 1 or not 1 <= prompt.shape[0] <= T:
        raise ValueError(f"prompt: {who} expected ids of shape (len,) with 1 <= len <= {T} "
                         f"(the model's seq_len), got shape {prompt.shape}")
    objective.check_token_ids(prompt, V, "prompt")
    n = prompt.shape[0]
    steps = _checks.check_int(steps, f"steps: {who}", 0)
    if n + steps > T:
        raise ValueError(f"steps: {who} expected len(prompt) + steps <= {T} (the model's "
                         f"seq_len), got {n} + {steps} = {n + steps}")
    temperature = _checks.check_real(temperature, "temperature", minimum=0)
    greedy = key is None or temperature == 0
    if not greedy:
        _checks.check_key(key, "key")
    state = model._state(state)
    model._check_params(params)
    buffer = jnp.zeros((T,), jnp.int32).at[:n].set(jnp.asarray(prompt, jnp.int32))
    out = _compiled_generate(model, greedy)(params, state, buffer, n, steps,
                                            None if greedy else key,
                                            jnp.float32(1.0 if greedy else temperature))
    return out[:n + steps]


@functools.lru_cache(maxsize=256)  # as the model's other compiled programs (nets.model)
def _compiled_generate(model: Model, greedy: bool):
    def run(params, state, buffer, n, steps, key, temperature):
        def body(t, buffer):  # token t from the scores at t - 1
            z = model.layer.apply(params, state, buffer, train=False, key=None)[0]  # (T, V)
            logits = z[t - 1]
            if greedy:
                token = jnp.argmax(logits)
            else:
                token = jax.random.categorical(jax.random.fold_in(key, t), logits / temperature)
            return buffer.at[t].set(token.astype(buffer.dtype))

        return jax.lax.fori_loop(n, n + steps, body, buffer)

    return jax.jit(run)
