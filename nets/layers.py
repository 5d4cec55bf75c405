"""Composable pure layers for ONE example, in the shape of ``jax.example_libraries.stax``.

A :class:`Layer` is a pair of pure functions

    init(key, input_shape) -> (output_shape, params, state)
    apply(params, state, x, *, train, key) -> (y, new_state)

where ``input_shape``/``output_shape`` describe ONE example (no batch axis): a vector
``(n,)``, an image ``(H, W, C)``, a sequence ``(T, d)``. Batches come from ``jax.vmap``
(:meth:`nets.model.Model.batch_apply` does it, with the axis name ``"batch"`` that
:func:`BatchNorm` reads). ``params`` are trained; ``state`` is not (batch-norm running
statistics, the dropout rate) and is returned updated. Stateless layers have ``state = ()``
and parameter-free ones ``params = ()``. ``train`` is a static Python bool: evaluation is
``train=False``, never inferred from ``key is None``; ``key`` may be ``None`` unless a layer
draws random numbers in train mode (:func:`Dropout`), which then raises a ``ValueError``.

Orientation is the note's (CASI eq. 18.3): a dense layer holds ``W`` of shape
``(n_out, n_in)`` and computes ``z = W @ a + b``. Layers are built by constructors
(``Dense(10)``, ``Relu()``, ``Flatten()``); combinators are lowercase (:func:`serial`,
:func:`residual`, :func:`concat`).

A tiny CNN for 8x8 grey images, composed and vmapped over a batch:

>>> import jax, jax.numpy as jnp
>>> cnn = serial(Conv2D(4, 3), Relu(), MaxPool(2), Flatten(), Dense(10))
>>> out_shape, params, state = cnn.init(jax.random.key(0), (8, 8, 1))
>>> out_shape, params[0]["W"].shape, count_params(params)
((10,), (3, 3, 1, 4), 690)
>>> X = jnp.zeros((32, 8, 8, 1))
>>> Z, _ = jax.vmap(lambda x: cnn.apply(params, state, x, train=False, key=None))(X)
>>> Z.shape
(32, 10)

A layer of your own is such a pair: here a learned scale per channel, ``y = s * x``.
:func:`serial`, :func:`residual`, :func:`concat` and :class:`nets.model.Model` check what
its ``init`` and ``apply`` return (while tracing, so nothing at run time) and name it
when the contract is broken (``apply`` returning ``y`` alone, say):

>>> def Scale():
...     def init(key, input_shape):
...         return tuple(input_shape), {"s": jnp.ones(input_shape[-1])}, ()
...     def apply(params, state, x, *, train=False, key=None):
...         return params["s"] * x, state  # (y, new_state): the state it was given
...     return Layer(init, apply)
>>> net = serial(Dense(4), Scale(), Relu())
>>> out_shape, params, state = net.init(jax.random.key(0), (3,))
>>> out_shape, params[1]["s"].shape, state
((4,), (4,), ((), (), ()))
>>> y, state = net.apply(params, state, jnp.ones(3), train=False, key=None)
>>> y.shape
(4,)
>>> forgetful = Layer(Scale().init, lambda params, state, x, *, train=False, key=None: x)
>>> _, params, state = serial(Dense(4), forgetful).init(jax.random.key(0), (3,))
>>> serial(Dense(4), forgetful).apply(params, state, jnp.ones(3), train=False, key=None)
Traceback (most recent call last):
  ...
TypeError: serial: layers[1]: expected <lambda>(...) to return (y, new_state), got an array of shape (4,)...

A padding mask reaches the layers that ask for it: :func:`padded` computes ``real = ids !=
pad_id`` (T,) from a sequence of token ids and :func:`serial`, :func:`residual` and
:func:`concat` pass it, as ``apply(..., mask=real)``, to every layer whose ``apply`` is
marked by :func:`reads_mask` (the Transformer's attention, the sequence readouts); other
layers are called as before. The sequence models' ``pad_id=`` is built this way.

A layer whose ``apply`` reads ``train`` (noise in training only, batch statistics) carries
a state, as :func:`Dropout` keeps its rate there: a model with state
(:attr:`nets.model.Model.stateful`) has no default mode and refuses a call without
``train=``, while a model without state takes an omitted ``train`` as evaluation (its two
modes agree). A stateless layer that reads ``train`` escapes that rule: give it a state
(its noise level, say) or pass ``train=`` on every call.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nets import _checks
from nets import activations as _activations


class Layer(NamedTuple):
    """A layer for one example: ``init(key, input_shape) -> (output_shape, params, state)``
    and ``apply(params, state, x, *, train, key) -> (y, new_state)``."""

    init: Callable
    apply: Callable


DENSE_INITS = ("glorot", "he", "lecun", "esl")


def count_params(params) -> int:
    """The number of trained scalars: the sum of the leaf sizes of ``params``."""
    return sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(params))


# ---------------------------------------------------------------------------------------
# helpers


def _shape(input_shape, who: str) -> tuple[int, ...]:
    if not isinstance(input_shape, (tuple, list)) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in input_shape):
        raise ValueError(f"input_shape: {who} expected a tuple of positive ints for ONE "
                         f"example (no batch axis), got {input_shape!r}")
    return tuple(input_shape)


def _pair(value, name: str, who: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
        raise ValueError(f"{name}: {who} expected a positive int or a pair of them, got {value!r}")
    return tuple(value)


def _padding(padding, who: str):
    """``"SAME"``/``"VALID"``, or explicit ``((top, bottom), (left, right))``."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"padding: {who} expected 'SAME', 'VALID', an int or pairs, "
                             f"got {padding!r}")
        return padding.upper()
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
    if is_int(padding):
        return ((padding, padding), (padding, padding))
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        if all(is_int(p) for p in padding):
            return tuple((p, p) for p in padding)
        if all(isinstance(p, (tuple, list)) and len(p) == 2 and all(is_int(v) for v in p)
               for p in padding):
            return tuple(tuple(p) for p in padding)
    raise ValueError(f"padding: {who} expected 'SAME', 'VALID', an int, (ph, pw) or "
                     f"((top, bottom), (left, right)), got {padding!r}")


_BATCH_HINT = " (a batch? a layer takes ONE example: use jax.vmap or Model.batch_apply)"


def _check_rank(x, rank: int, who: str, what: str) -> None:
    if jnp.ndim(x) != rank:
        raise ValueError(f"x: {who} expected one example {what}, got shape {jnp.shape(x)}"
                         + (_BATCH_HINT if jnp.ndim(x) == rank + 1 else ""))


def _as_layer(layer, name: str) -> Layer:
    if isinstance(layer, Layer):
        return layer
    if isinstance(layer, tuple) and len(layer) == 2 and all(map(callable, layer)):
        return Layer(*layer)
    hint = (f"; did you mean {layer.__name__}()?" if callable(layer)
            and hasattr(layer, "__name__") else "")
    raise TypeError(f"{name}: expected a Layer (init, apply), got "
                    f"{type(layer).__name__}{hint}")


def _name(fn) -> str:
    """``fn``'s qualified name without ``<locals>`` (``Conv1D.apply``), for messages."""
    return getattr(fn, "__qualname__", type(fn).__name__).replace(".<locals>", "")


def _describe(value, depth: int = 0) -> str:
    """What a layer's ``init`` or ``apply`` returned, briefly (arrays by shape)."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(jnp.shape(value))}"
    if isinstance(value, (tuple, list)) and not depth and value:
        inner = ", ".join(_describe(v, 1) for v in value)
        return f"a {type(value).__name__} of {len(value)}: ({inner})"
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value):
        return repr(tuple(value))
    if isinstance(value, dict):
        return f"a dict with keys {list(value)}"
    return f"a {type(value).__name__}" if isinstance(value, (tuple, list)) else repr(value)[:60]


def _is_shape(shape) -> bool:
    return isinstance(shape, (tuple, list)) and all(
        isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in shape)


def _checked_init(layer: Layer, key, input_shape, who: str):
    """``layer.init(key, input_shape)``, refused unless it is ``(output_shape, params,
    state)`` with ``output_shape`` a tuple of positive ints (returned as Python ints).
    ``who`` names the layer in the message (``"serial: layers[2]"``)."""
    out = layer.init(key, input_shape)
    if not (isinstance(out, (tuple, list)) and len(out) == 3 and _is_shape(out[0])):
        raise TypeError(
            f"{who}: expected {_name(layer.init)}(key, input_shape) to return (output_shape, "
            f"params, state), output_shape a tuple of ints for ONE example, got "
            f"{_describe(out)}")
    return tuple(int(n) for n in out[0]), out[1], out[2]


def _tuples(tree):
    """``tree`` with its lists read as tuples (serial takes params and state as either)."""
    if type(tree) in (list, tuple):
        return tuple(_tuples(t) for t in tree)
    if type(tree) is dict:
        return {k: _tuples(v) for k, v in tree.items()}
    return tree


def takes_mask(layer: Layer) -> bool:
    """Whether ``layer.apply`` reads a padding mask: ``apply(..., mask=real)`` with ``real``
    a bool ``(T,)``, True at the real positions of a sequence (the sequence models'
    ``pad_id=``; :func:`nets.transformer.MultiHeadAttention`, the sequence readouts and the
    combinators holding them). A layer of your own opts in with :func:`reads_mask`."""
    return bool(getattr(layer.apply, "takes_mask", False))


def reads_mask(apply: Callable, takes: bool = True) -> Callable:
    """Marks ``apply`` as reading the padding mask (:func:`takes_mask`); returns it. Its
    signature is ``apply(params, state, x, *, train=False, key=None, mask=None)``: inside
    :func:`padded` it gets ``mask=real``, elsewhere (no padding) no mask, so ``mask``
    must default to ``None``. An unmarked ``apply`` with a ``mask`` parameter is refused
    inside :func:`padded` (it would never get the mask)."""
    apply.takes_mask = bool(takes)
    return apply


def _mask_parameter(fn) -> str | None:
    """``"named"`` if ``fn`` has a ``mask`` parameter, ``"kwargs"`` if it takes ``**kwargs``
    only, ``"none"`` if neither, ``None`` if its signature is not readable."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.name == "mask" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
           for p in parameters):
        return "named"
    return "kwargs" if any(p.kind == p.VAR_KEYWORD for p in parameters) else "none"


def _wants_mask(layer: Layer) -> bool:
    """Marked to read the mask, or unmarked with a ``mask`` parameter (a layer of your own
    that forgot :func:`reads_mask`: the combinators pass it the mask, which it is refused
    with a message, rather than leave it without one)."""
    if hasattr(layer.apply, "takes_mask"):
        return takes_mask(layer)
    return _mask_parameter(layer.apply) == "named"


def padded(layer: Layer, pad_id: int | None) -> Layer:
    """``layer`` over token ids ``(T,)`` with the padding mask ``real = ids != pad_id``
    passed to every layer inside that reads one (:func:`takes_mask`: the Transformer's
    attention, the sequence readouts, a layer of your own marked by :func:`reads_mask`),
    through :func:`serial`, :func:`residual` and :func:`concat`. ``pad_id=None`` returns
    ``layer`` itself. Params and state are ``layer``'s. The sequence models build it from
    their ``pad_id=`` (:mod:`nets._sequence`, "Padding")."""
    layer = _as_layer(layer, "padded: layer")
    if pad_id is None:
        return layer
    pad_id = _checks.check_int(pad_id, "pad_id: padded", 0)

    def init(key, input_shape):
        return _checked_init(layer, key, input_shape, "padded: layer")

    def apply(params, state, x, *, train=False, key=None):
        if jnp.ndim(x) != 1 or not jnp.issubdtype(jnp.result_type(x), jnp.integer):
            raise TypeError(f"x: padded expected one sequence of integer token ids (T,) (the "
                            f"mask is ids != pad_id), got {jnp.result_type(x)} of shape "
                            f"{jnp.shape(x)}")
        _PADS.record(pad_id)
        return _checked_apply(layer, "padded: layer", params, state, x, train=train, key=key,
                              mask=jnp.asarray(x) != pad_id)

    return Layer(init, apply)


def _checked_apply(layer: Layer, who: str, params, state, x, *, train, key, mask=None):
    """``layer.apply(params, state, x, train=train, key=key)`` (with ``mask=mask`` when the
    layer reads a padding mask and one is given), refused unless it is ``(y, new_state)``
    with ``new_state`` of the structure of ``state``. A check of the returned Python
    structure, made while tracing: nothing at run time."""
    extra = {}
    if mask is not None and _wants_mask(layer):
        if not takes_mask(layer):
            raise TypeError(f"{who}: {_name(layer.apply)} has a mask parameter but is not marked "
                            f"to read the padding mask, so it would never get it; return "
                            f"Layer(init, nets.layers.reads_mask(apply))")
        if _mask_parameter(layer.apply) == "none":
            raise TypeError(f"{who}: {_name(layer.apply)} is marked by reads_mask but has no "
                            f"mask parameter; give it mask=None")
        extra = {"mask": mask}
    out = layer.apply(params, state, x, train=train, key=key, **extra)
    expected = f"{who}: expected {_name(layer.apply)}(params, state, x, *, train, key) to return "
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(f"{expected}(y, new_state), got {_describe(out)}; return y, state")
    want, got = jax.tree.structure(_tuples(state)), jax.tree.structure(_tuples(out[1]))
    if want != got:
        hint = (" (y and no state? return (y, state); two outputs? return ((y1, y2), state))"
                if hasattr(out[1], "shape") else "")
        raise TypeError(f"{expected}(y, new_state) with new_state of the structure of the state "
                        f"it was given, {want}, got {_describe(out)}{hint}")
    return out[0], out[1]


def _stateless(fn: Callable, shape_fn: Callable = lambda s: s) -> Layer:
    """A layer without parameters or state computing ``y = fn(x)``."""

    def init(key, input_shape):
        return shape_fn(_shape(input_shape, "layer")), (), ()

    def apply(params, state, x, *, train=False, key=None):
        return fn(x), state

    return Layer(init, apply)


# ---------------------------------------------------------------------------------------
# dense and elementwise layers


def _dense_weight(key, shape, init: str, scale: float, in_axis: int, out_axis: int):
    if init == "esl":
        return jax.random.uniform(key, shape, minval=-scale, maxval=scale)
    make = {"glorot": jax.nn.initializers.glorot_uniform,
            "he": jax.nn.initializers.he_normal,
            "lecun": jax.nn.initializers.lecun_normal}[init]
    return make(in_axis=in_axis, out_axis=out_axis)(key, shape)


def _check_init(init, scale, who):
    if init not in DENSE_INITS:
        raise ValueError(f"init: {who} expected one of {DENSE_INITS}, got {init!r}")
    if init == "esl":
        _checks.check_real(scale, f"scale: {who}", minimum=0, strict=True)


def Dense(n_out: int, *, init: str = "glorot", bias: bool = True, scale: float = 0.7) -> Layer:
    """Fully connected layer ``z = W @ a + b`` (CASI eq. 18.3; ESL section 11.3).

    Shapes: ``(n_in,) -> (n_out,)``; params ``{"W": (n_out, n_in), "b": (n_out,)}`` (no
    ``"b"`` with ``bias=False``). ``init``: ``"glorot"`` uniform (Glorot & Bengio 2010),
    ``"he"`` normal (He et al. 2015, arXiv:1502.01852), ``"lecun"`` normal (LeCun et al.
    1998), all with zero bias and fan-in ``n_in``; ``"esl"``: weights and biases uniform on
    ``[-scale, scale]`` (ESL section 11.5.1).
    """
    if isinstance(n_out, bool) or not isinstance(n_out, int) or n_out < 1:
        raise ValueError(f"n_out: Dense expected a positive int, got {n_out!r}")
    _check_init(init, scale, "Dense")

    def init_fn(key, input_shape):
        input_shape = _shape(input_shape, "Dense")
        if len(input_shape) != 1:
            raise ValueError(f"input_shape: Dense expects a vector; put Flatten() before it "
                             f"(got input_shape {input_shape})")
        kw, kb = jax.random.split(key)
        params = {"W": _dense_weight(kw, (n_out, input_shape[0]), init, scale, -1, -2)}
        if bias:
            params["b"] = (jax.random.uniform(kb, (n_out,), minval=-scale, maxval=scale)
                           if init == "esl" else jnp.zeros((n_out,)))
        return (n_out,), params, ()

    def apply(params, state, x, *, train=False, key=None):
        W = params["W"]
        if jnp.shape(x) != (W.shape[1],):
            hint = (_BATCH_HINT if jnp.shape(x)[1:] == (W.shape[1],) else
                    "; put Flatten() before it" if jnp.ndim(x) > 1 else "")
            raise ValueError(f"x: Dense expected a vector of shape ({W.shape[1]},), got shape "
                             f"{jnp.shape(x)}{hint}")
        z = W @ x  # z = W a + b, W: (n_out, n_in)
        return (z + params["b"] if "b" in params else z), state

    return Layer(init_fn, apply)


def Activation(activation) -> Layer:
    """Elementwise ``a = g(z)`` for any name or function accepted by
    :func:`nets.activations.get` (CASI section 18.1). Shapes: ``s -> s``."""
    g = _activations.get(activation)
    return _stateless(g.fn)


def Sigmoid() -> Layer:
    """``1 / (1 + e^-z)`` elementwise, ``s -> s``."""
    return Activation("sigmoid")


def Tanh() -> Layer:
    """``tanh(z)`` elementwise, ``s -> s``."""
    return Activation("tanh")


def Relu() -> Layer:
    """``max(0, z)`` elementwise, ``s -> s``."""
    return Activation("relu")


def Elu() -> Layer:
    """``z`` if ``z > 0`` else ``e^z - 1``, elementwise, ``s -> s``."""
    return Activation("elu")


def Softplus() -> Layer:
    """``log(1 + e^z)`` elementwise, ``s -> s``."""
    return Activation("softplus")


def Identity() -> Layer:
    """``y = x``, ``s -> s``; ``concat(Identity(), f)`` is a DenseNet layer."""
    return _stateless(lambda x: x)


def Flatten() -> Layer:
    """``(d_1, ..., d_k) -> (d_1 * ... * d_k,)`` in C (row-major) order."""
    return _stateless(lambda x: jnp.reshape(x, (-1,)), lambda s: (math.prod(s),))


# ---------------------------------------------------------------------------------------
# dropout


def dropout(x: jax.Array, drop_rate, *, key: jax.Array) -> jax.Array:
    """Inverted dropout (Srivastava et al. 2014, JMLR 15): each entry is zeroed with
    probability ``drop_rate`` and the kept ones are scaled by ``1 / (1 - drop_rate)``, so the
    expectation is ``x``. ``drop_rate`` may be traced; ``0`` returns ``x`` exactly."""
    keep = jax.random.bernoulli(key, 1.0 - drop_rate, jnp.shape(x))
    return jnp.where(keep, x / (1.0 - drop_rate), 0.0).astype(jnp.result_type(x))


def Dropout(drop_rate: float) -> Layer:
    """Inverted dropout (Srivastava et al. 2014) in train mode, the identity in eval mode.

    Shapes: ``s -> s``. The rate is the layer's STATE ``{"drop_rate": float32 scalar}``, not
    a Python constant, so it can be traced: models stacked with different rates train in one
    compiled program under ``jax.vmap``, and a rate is changed with
    ``optax.tree_utils.tree_set(state, drop_rate=0.3)``. In train mode ``key`` is required
    (one per example: :meth:`nets.model.Model.batch_apply` splits it).
    """
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float)) or not (
            0.0 <= drop_rate < 1.0):
        raise ValueError(f"drop_rate: Dropout expected a probability in [0, 1), got {drop_rate!r}")

    def init(key, input_shape):
        return _shape(input_shape, "Dropout"), (), {"drop_rate": jnp.asarray(drop_rate,
                                                                               jnp.float32)}

    def apply(params, state, x, *, train=False, key=None):
        if not train:
            return x, state
        if key is None:
            raise ValueError("key: Dropout in train mode needs a PRNG key, got None "
                             "(for evaluation pass train=False)")
        return dropout(x, state["drop_rate"], key=key), state

    return Layer(init, apply)


# ---------------------------------------------------------------------------------------
# convolution and pooling


def _conv(x, W, stride, padding):
    """Cross-correlation of one image ``x`` (H, W, C_in) with ``W`` (kh, kw, C_in, C_out)."""
    return jax.lax.conv_general_dilated(
        x[None], W, window_strides=stride, padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]


def _pads(input_shape, kernel, stride, pad):
    """Explicit ``((top, bottom), (left, right))`` padding, as Conv2D would use."""
    if isinstance(pad, str):
        return tuple(jax.lax.padtype_to_pads(input_shape[:2], kernel, stride, pad))
    return tuple(tuple(p) for p in pad)


def _patches(x, kernel, stride, pad):
    """Every output position's input patch: ``(H, W, C) -> (H', W', kh, kw, C)``,
    ``p[i, j, di, dj, c] = x_padded[i*s + di, j*s + dj, c]``.

    A gather with static indices (``jnp.pad`` then integer indexing): equal, entry for entry,
    to ``jax.lax.conv_general_dilated_patches`` (the tests check it), whose transpose
    (the gradient with respect to ``x``) is a grouped convolution that XLA:CPU runs ~15x
    slower than this gather's scatter-add when ``jax.vmap`` stacks models (train.sweep).
    """
    (kh, kw), (sh, sw) = kernel, stride
    (top, bottom), (left, right) = _pads(jnp.shape(x), kernel, stride, pad)
    H, W = jnp.shape(x)[0] + top + bottom, jnp.shape(x)[1] + left + right
    rows = np.arange((H - kh) // sh + 1)[:, None] * sh + np.arange(kh)  # (H', kh)
    cols = np.arange((W - kw) // sw + 1)[:, None] * sw + np.arange(kw)  # (W', kw)
    xp = jnp.pad(x, ((top, bottom), (left, right), (0, 0)))
    return xp[rows[:, None, :, None], cols[None, :, None, :]]  # (H', W', kh, kw, C)


def _conv_patches(x, W, stride, padding):
    """:func:`_conv` as one matrix product (im2col; Chellapilla, Puri & Simard 2006): the
    image's patches (:func:`_patches`) as ``(H', W', kh kw C_in)`` in ``(di, dj, c)`` order,
    times ``W`` reshaped to ``(kh kw C_in, C_out)``."""
    kh, kw, c_in, c_out = W.shape
    p = _patches(x, (kh, kw), stride, padding)
    return p.reshape(*p.shape[:2], kh * kw * c_in) @ W.reshape(kh * kw * c_in, c_out)


_CONV_IMPLS = {"conv": _conv, "patches": _conv_patches}
CONV_IMPLS = tuple(_CONV_IMPLS)  # Conv2D's impl= choices


def _check_out(out_shape, input_shape, who):
    if any(n < 1 for n in out_shape):
        raise ValueError(f"input_shape: {who} window does not fit the image {input_shape} "
                         f"(output shape {out_shape}); use a smaller window or padding")
    return out_shape


def Conv2D(features: int, kernel_size, *, stride=1, padding="SAME", init: str = "glorot",
           bias: bool = True, scale: float = 0.7, impl: str = "conv") -> Layer:
    """2-D convolution of one image (LeCun et al. 1989; ESL section 11.7, weight sharing).

    ``y[i, j, o] = sum_{di, dj, c} x[i*s + di, j*s + dj, c] K[di, dj, c, o] + b[o]`` (a
    cross-correlation, as in every deep-learning library), by
    ``jax.lax.conv_general_dilated``. Shapes: ``(H, W, C_in) -> (H', W', features)``;
    params ``{"W": (kh, kw, C_in, features), "b": (features,)}`` (the HWIO layout; fan-in
    ``kh * kw * C_in``). ``padding``: ``"SAME"`` (``H' = ceil(H / s)``), ``"VALID"``
    (``H' = (H - kh) // s + 1``), an int, ``(ph, pw)`` or ``((top, bottom), (left, right))``.
    ``init`` as in :func:`Dense`.

    ``impl``: ``"conv"`` (``conv_general_dilated``, the default) or ``"patches"``: the same
    sum as one matrix product of the image's patches with the kernel (im2col, Chellapilla
    et al. 2006), equal up to the order of the float additions. On XLA:CPU, whose
    convolutions and their gradients are slow for small images and few channels, it trains
    ``nets.cnn.modern_cnn`` on the 8x8 digits 3 to 3.6 times faster (``python -m
    experiments run benchmark``); on a GPU keep ``"conv"`` (cuDNN).
    """
    if isinstance(features, bool) or not isinstance(features, int) or features < 1:
        raise ValueError(f"features: Conv2D expected a positive int, got {features!r}")
    if impl not in _CONV_IMPLS:
        raise ValueError(f"impl: Conv2D expected one of {CONV_IMPLS}, got {impl!r}")
    conv = _CONV_IMPLS[impl]
    kernel = _pair(kernel_size, "kernel_size", "Conv2D")
    stride = _pair(stride, "stride", "Conv2D")
    pad = _padding(padding, "Conv2D")
    _check_init(init, scale, "Conv2D")

    def init_fn(key, input_shape):
        input_shape = _shape(input_shape, "Conv2D")
        if len(input_shape) != 3:
            raise ValueError(f"input_shape: Conv2D expected one image (H, W, C), got "
                             f"{input_shape}")
        w_shape = (*kernel, input_shape[2], features)
        out = jax.eval_shape(lambda x, w: _conv(x, w, stride, pad),
                             jax.ShapeDtypeStruct(input_shape, jnp.float32),
                             jax.ShapeDtypeStruct(w_shape, jnp.float32)).shape
        out = _check_out(tuple(out), input_shape, "Conv2D")
        kw, kb = jax.random.split(key)
        params = {"W": _dense_weight(kw, w_shape, init, scale, -2, -1)}
        if bias:
            params["b"] = (jax.random.uniform(kb, (features,), minval=-scale, maxval=scale)
                           if init == "esl" else jnp.zeros((features,)))
        return out, params, ()

    def apply(params, state, x, *, train=False, key=None):
        _check_rank(x, 3, "Conv2D", "image (H, W, C)")
        if jnp.shape(x)[2] != params["W"].shape[2]:
            raise ValueError(f"x: Conv2D expected {params['W'].shape[2]} input channels, got "
                             f"shape {jnp.shape(x)}")
        if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):  # uint8 pixels, as Dense
            x = jnp.asarray(x, params["W"].dtype)
        y = conv(x, params["W"], stride, pad)
        return (y + params["b"] if "b" in params else y), state

    return Layer(init_fn, apply)


def _pool(kind: str, window, stride, padding) -> Layer:
    who = kind
    window = _pair(window, "window", who)
    stride = window if stride is None else _pair(stride, "stride", who)
    pad = _padding(padding, who)
    if not isinstance(pad, str):
        pad = (*pad, (0, 0))
    dims, strides = (*window, 1), (*stride, 1)

    def fn(x):
        _check_rank(x, 3, who, "image (H, W, C)")
        # NumPy (concrete) init values let JAX pick the differentiable max/sum reducers.
        dtype = jnp.result_type(x)
        if kind == "MaxPool":
            return jax.lax.reduce_window(x, np.array(-np.inf, dtype), jax.lax.max, dims,
                                         strides, pad)
        total = jax.lax.reduce_window(x, np.array(0, dtype), jax.lax.add, dims, strides, pad)
        count = jax.lax.reduce_window(np.ones(x.shape[:2] + (1,), dtype), np.array(0, dtype),
                                      jax.lax.add, dims, strides, pad)
        return total / count

    def init(key, input_shape):
        input_shape = _shape(input_shape, who)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape: {who} expected one image (H, W, C), got "
                             f"{input_shape}")
        out = jax.eval_shape(fn, jax.ShapeDtypeStruct(input_shape, jnp.float32)).shape
        return _check_out(tuple(out), input_shape, who), (), ()

    def apply(params, state, x, *, train=False, key=None):
        return fn(x), state

    return Layer(init, apply)


def MaxPool(window, stride=None, padding="VALID") -> Layer:
    """Max over ``window`` patches of each channel (LeCun et al. 1998), by
    ``jax.lax.reduce_window``. Shapes: ``(H, W, C) -> (H', W', C)`` with ``stride``
    defaulting to ``window`` (non-overlapping); ``padding`` as in :func:`Conv2D`."""
    return _pool("MaxPool", window, stride, padding)


def AvgPool(window, stride=None, padding="VALID") -> Layer:
    """Mean over ``window`` patches of each channel, by ``jax.lax.reduce_window``; with
    padding, the mean is over the patch's entries inside the image. Shapes as
    :func:`MaxPool`."""
    return _pool("AvgPool", window, stride, padding)


# ---------------------------------------------------------------------------------------
# embeddings and normalisation


_TOKENS = _checks.TraceRecorder()  # vocab_size of each Embedding traced on integer ids
_PADS = _checks.TraceRecorder()  # pad_id of each padded layer traced


def record_padding():
    """Inside ``with record_padding() as seen``, ``seen`` collects the ``pad_id`` of every
    :func:`padded` layer traced, so a caller can check concrete ids (right padding) and
    labels (``-1`` at the padding) before compiling (:func:`nets.objective.model_facts`)."""
    return _PADS.collect()


def record_token_ranges():
    """A context that collects ``vocab_size`` each time an :func:`Embedding` is TRACED (its
    ``apply`` runs) on integer ids while it is active; it yields the list it appends to.
    Nested contexts all receive.

    Token values cannot be checked while tracing, and an id outside ``[0, vocab_size)``
    becomes a row of NaN: a caller holding concrete ids traces the model inside this
    context and checks them against what it recorded. As for
    :func:`nets.losses.record_label_ranges`, a jitted function JAX traced before records
    nothing: trace a fresh wrapper (``lambda *a: fn(*a)``).

    >>> import jax, jax.numpy as jnp
    >>> emb = Embedding(7, 2)
    >>> _, params, state = emb.init(jax.random.key(0), (3,))
    >>> with record_token_ranges() as seen:
    ...     _ = jax.eval_shape(lambda x: emb.apply(params, state, x)[0], jnp.zeros(3, int))
    >>> seen
    [7]
    """
    return _TOKENS.collect()


def embed(E, x):
    """Rows ``E[x]`` of the table ``E`` (V, d) for integer ids ``x`` of any shape, ``s -> s +
    (d,)``; an id outside ``[0, V)``, negative ones included (no wrap-around), gives a row of
    NaN."""
    return jnp.asarray(E).at[jnp.asarray(x)].get(mode="fill", fill_value=jnp.nan,
                                                 wrap_negative_indices=False)


def Embedding(vocab_size: int, d: int, *, stddev: float = 1.0) -> Layer:
    """Token embedding, a table lookup (Bengio et al. 2003, JMLR 3).

    Shapes: integer tokens ``(T,) -> (T, d)`` (any integer shape ``s -> s + (d,)``); params
    ``{"E": (vocab_size, d)}`` drawn ``N(0, stddev^2)``. ``E`` has two axes, so
    :mod:`nets.penalties` decays it. A token outside ``[0, vocab_size)``, a negative one
    included, gives a row of NaN (visible downstream, never a silent clamp or wrap-around);
    :func:`record_token_ranges` lets a caller check concrete ids before compiling.
    """
    for name, v in (("vocab_size", vocab_size), ("d", d)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: Embedding expected a positive int, got {v!r}")

    def init(key, input_shape):
        input_shape = _shape(input_shape, "Embedding")
        return (*input_shape, d), {"E": stddev * jax.random.normal(key, (vocab_size, d))}, ()

    def apply(params, state, x, *, train=False, key=None):
        if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
            raise TypeError(f"x: Embedding expected integer token ids, got dtype "
                            f"{jnp.result_type(x)}")
        _TOKENS.record(int(vocab_size))
        return embed(params["E"], x), state

    return Layer(init, apply)


def _scale_shift(d):
    return {"gamma": jnp.ones((d,)), "beta": jnp.zeros((d,))}


def _layer_norm_forward(x, gamma, beta, eps):
    """``(y, residuals)``: the formula, and what the hand-derived backward needs."""
    mean = jnp.mean(x, -1, keepdims=True)
    r = jax.lax.rsqrt(jnp.mean((x - mean) ** 2, -1, keepdims=True) + eps)  # 1 / sigma
    xhat = (x - mean) * r
    return xhat * gamma + beta, (xhat, r, gamma)


def _layer_norm(x, gamma, beta, eps):
    return _layer_norm_forward(x, gamma, beta, eps)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm_custom_vjp(x, gamma, beta, eps):
    return _layer_norm(x, gamma, beta, eps)


def _layer_norm_backward(eps, residuals, dy):
    """``dx = (g - mean(g) - xhat mean(g xhat)) / sigma`` with ``g = dy * gamma`` (the
    Jacobian of standardising a row), ``dgamma = sum dy xhat``, ``dbeta = sum dy`` over
    every axis but the last."""
    xhat, r, gamma = residuals
    g = dy * gamma
    dx = r * (g - jnp.mean(g, -1, keepdims=True)
              - xhat * jnp.mean(g * xhat, -1, keepdims=True))
    rows = tuple(range(dy.ndim - 1))
    return (dx.astype(xhat.dtype), jnp.sum(dy * xhat, rows).astype(gamma.dtype),
            jnp.sum(dy, rows).astype(gamma.dtype))


_layer_norm_custom_vjp.defvjp(_layer_norm_forward, _layer_norm_backward)
NORM_IMPLS = ("autodiff", "custom_vjp")  # LayerNorm's impl= choices


def LayerNorm(*, eps: float = 1e-5, impl: str = "autodiff") -> Layer:
    """Layer normalisation over the last axis (Ba et al. 2016, arXiv:1607.06450):
    ``y = gamma * (x - mean) / sqrt(var + eps) + beta``, mean and (biased) variance over the
    last axis of the example. Shapes: ``s -> s``; params ``{"gamma": (d,), "beta": (d,)}``
    with ``d = s[-1]``: vectors, so :mod:`nets.penalties` does not decay them.

    ``impl="autodiff"`` (default) differentiates the formula; ``"custom_vjp"`` computes the
    same forward pass and the hand-derived backward (``_layer_norm_backward``: equal to
    autodiff's to 1e-10 in float64, tests/test_layers.py), fewer passes over the
    activations: a width-16 Transformer's training step about 1.15x faster on XLA:CPU.
    ``jax.jvp`` and ``jax.jacfwd`` need ``"autodiff"`` (``jax.hessian``, forward over
    reverse, works), as for every ``jax.custom_vjp``."""
    if impl not in NORM_IMPLS:
        raise ValueError(f"impl: LayerNorm expected one of {NORM_IMPLS}, got {impl!r}")
    norm = _layer_norm if impl == "autodiff" else _layer_norm_custom_vjp

    def init(key, input_shape):
        input_shape = _shape(input_shape, "LayerNorm")
        return input_shape, _scale_shift(input_shape[-1]), ()

    def apply(params, state, x, *, train=False, key=None):
        return norm(x, params["gamma"], params["beta"], eps), state

    return Layer(init, apply)


def BatchNorm(*, momentum: float = 0.9, eps: float = 1e-5, axis_name: str = "batch") -> Layer:
    """Batch normalisation per channel (Ioffe & Szegedy 2015, arXiv:1502.03167).

    ``y = gamma * (x - mu) / sqrt(var + eps) + beta`` per channel (the last axis). In train
    mode ``mu`` and ``var`` (biased) are the statistics of the whole batch, taken ACROSS the
    vmapped examples by ``jax.lax.pmean(..., axis_name)`` and, for images, also over ``H, W``;
    the state's running averages become ``momentum * old + (1 - momentum) * batch``. In
    eval mode the running statistics are used. Train mode therefore needs a ``jax.vmap``
    with ``axis_name`` (:meth:`nets.model.Model.batch_apply` provides ``"batch"``).

    Shapes: ``s -> s``; params ``{"gamma": (C,), "beta": (C,)}`` (vectors, not decayed by
    :mod:`nets.penalties`); state ``{"mean": (C,), "var": (C,)}`` starting at 0 and 1.
    """
    if not 0.0 <= _checks.check_real(momentum, "momentum: BatchNorm", finite=False) <= 1.0:
        raise ValueError(f"momentum: BatchNorm expected a number in [0, 1], got {momentum!r}")
    _checks.check_real(eps, "eps: BatchNorm", minimum=0, strict=True)

    def init(key, input_shape):
        input_shape = _shape(input_shape, "BatchNorm")
        C = input_shape[-1]
        return input_shape, _scale_shift(C), {"mean": jnp.zeros((C,)), "var": jnp.ones((C,))}

    def apply(params, state, x, *, train=False, key=None):
        if train:
            axes = tuple(range(jnp.ndim(x) - 1))  # H, W for an image; none for a vector
            try:
                mean = jax.lax.pmean(jnp.mean(x, axes), axis_name)  # (C,)
                var = jax.lax.pmean(jnp.mean((x - mean) ** 2, axes), axis_name)  # (C,)
            except NameError:
                raise ValueError(
                    f"BatchNorm in train mode takes its statistics across the batch: apply it "
                    f"through Model.batch_apply or jax.vmap(..., axis_name={axis_name!r}), "
                    f"not on a single example") from None
            new_state = jax.lax.stop_gradient({
                "mean": momentum * state["mean"] + (1.0 - momentum) * mean,
                "var": momentum * state["var"] + (1.0 - momentum) * var})
        else:
            mean, var, new_state = state["mean"], state["var"], state
        y = (x - mean) * jax.lax.rsqrt(var + eps) * params["gamma"] + params["beta"]
        return y, new_state

    return Layer(init, apply)


# ---------------------------------------------------------------------------------------
# combinators


def _split(key, n):
    return (None,) * n if key is None else tuple(jax.random.split(key, n))


def serial(*layers: Layer) -> Layer:
    """Composition ``f_n(... f_2(f_1(x)))`` (stax's ``serial``). Params and state are the
    tuples of the children's; ``key`` (when not ``None``) is split among the children."""
    if not layers:
        raise ValueError("serial: expected at least one layer, got none")
    layers = tuple(_as_layer(layer, f"serial: layers[{i}]") for i, layer in enumerate(layers))
    promised = {}  # input shape -> the children's output shapes, as their inits said

    def init(key, input_shape):
        shape = _shape(input_shape, "serial")
        params, states, shapes = [], [], []
        for i, (layer, k) in enumerate(zip(layers, jax.random.split(key, len(layers)))):
            shape, p, s = _checked_init(layer, k, shape, f"serial: layers[{i}]")
            params.append(p)
            states.append(s)
            shapes.append(shape)
        promised[_shape(input_shape, "serial")] = tuple(shapes)
        return shape, tuple(params), tuple(states)

    def apply(params, state, x, *, train=False, key=None, mask=None):
        for name, tree in (("params", params), ("state", state)):
            if not isinstance(tree, (tuple, list)) or len(tree) != len(layers):
                got = f"{type(tree).__name__} of length {len(tree)}" if isinstance(
                    tree, (tuple, list)) else type(tree).__name__
                raise ValueError(f"serial: expected {name} with one entry per layer ({len(layers)}, "
                                 f"as init returns them), got {got}")
        new_states, shapes = [], promised.get(tuple(jnp.shape(x)))
        for i, (layer, p, s, k) in enumerate(zip(layers, params, state,
                                                 _split(key, len(layers)))):
            x_in = jnp.shape(x)
            x, s = _checked_apply(layer, f"serial: layers[{i}]", p, s, x, train=train, key=k,
                                  mask=mask)
            if shapes is not None and hasattr(x, "shape") and tuple(x.shape) != shapes[i]:
                raise ValueError(  # blame the layer that broke its promise, not the next one
                    f"serial: layers[{i}]: {_name(layer.init)} said output shape {shapes[i]} "
                    f"for input {tuple(x_in)}, but {_name(layer.apply)} returned shape "
                    f"{tuple(x.shape)}; make init's output_shape what apply returns")
            new_states.append(s)
        return x, tuple(new_states)

    return Layer(init, reads_mask(apply, any(map(_wants_mask, layers))))


def residual(layer: Layer) -> Layer:
    """``y = x + f(x)`` (He et al. 2016, arXiv:1512.03385). ``f`` must keep the shape
    ``s -> s``; params and state are ``f``'s."""
    layer = _as_layer(layer, "residual: layer")

    def init(key, input_shape):
        input_shape = _shape(input_shape, "residual")
        out, params, state = _checked_init(layer, key, input_shape, "residual: layer")
        if out != input_shape:
            raise ValueError(f"residual: x + f(x) needs f to keep the shape, but f maps "
                             f"{input_shape} to {out}")
        return input_shape, params, state

    def apply(params, state, x, *, train=False, key=None, mask=None):
        y, state = _checked_apply(layer, "residual: layer", params, state, x, train=train,
                                  key=key, mask=mask)
        return x + y, state

    return Layer(init, reads_mask(apply, _wants_mask(layer)))


def concat(*branches: Layer) -> Layer:
    """Branches applied to the same input, outputs concatenated along the last (channel)
    axis (DenseNet, Huang et al. 2017, arXiv:1608.06993: ``concat(Identity(), f)``).

    Shapes: ``s -> s[:-1] + (sum of the branches' last axes,)``; every branch must agree on
    the leading axes. Params and state are tuples of the branches'; ``key`` is split.
    """
    if not branches:
        raise ValueError("concat: expected at least one branch, got none")
    branches = tuple(_as_layer(b, f"concat: branches[{i}]") for i, b in enumerate(branches))

    def init(key, input_shape):
        input_shape = _shape(input_shape, "concat")
        outs, params, states = [], [], []
        for i, (b, k) in enumerate(zip(branches, jax.random.split(key, len(branches)))):
            out, p, s = _checked_init(b, k, input_shape, f"concat: branches[{i}]")
            outs.append(out)
            params.append(p)
            states.append(s)
        if len({o[:-1] for o in outs}) != 1:
            raise ValueError(f"concat: branch outputs must agree on all but the last axis, "
                             f"got shapes {outs}")
        return (*outs[0][:-1], sum(o[-1] for o in outs)), tuple(params), tuple(states)

    def apply(params, state, x, *, train=False, key=None, mask=None):
        ys, new_states = [], []
        for i, (b, p, s, k) in enumerate(zip(branches, params, state,
                                             _split(key, len(branches)))):
            y, s = _checked_apply(b, f"concat: branches[{i}]", p, s, x, train=train, key=k,
                                  mask=mask)
            ys.append(y)
            new_states.append(s)
        return jnp.concatenate(ys, axis=-1), tuple(new_states)

    return Layer(init, reads_mask(apply, any(map(_wants_mask, branches))))


__all__ = [
    "Layer", "count_params", "dropout", "Dense", "Activation", "Sigmoid", "Tanh", "Relu",
    "Elu", "Softplus", "Identity", "Flatten", "Dropout", "Conv2D", "MaxPool", "AvgPool",
    "Embedding", "embed", "record_token_ranges", "LayerNorm", "BatchNorm", "serial", "residual",
    "concat", "padded", "takes_mask", "reads_mask", "record_padding", "DENSE_INITS",
]
