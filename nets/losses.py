"""Loss functions ``L[y, f(x)]`` for ONE example, each from the output pre-activation ``z``.

Each loss is paired with the output function it implies and with ``dL/dz``, written by hand
for :mod:`nets.backprop`:

=======================  ===============  ==========================================  =============
name                     output g^(K)     L(y, z)                                     dL/dz
=======================  ===============  ==========================================  =============
``cross_entropy``        softmax          ``logsumexp(z) - z_y`` (multinomial deviance) ``softmax(z) - onehot(y)``
``squared_error``        identity         ``sum_k (y_k - z_k)^2`` (ESL eq. 11.9)       ``2 (z - y)``
``binary_cross_entropy`` sigmoid          ``softplus(z) - y z``                        ``sigmoid(z) - y``
=======================  ===============  ==========================================  =============

Cross-entropy takes an integer label ``y`` in ``[0, M)`` or a probability vector of shape
``(M,)``; all three are computed from logits, so they stay finite for large ``|z|``.

**Per position.** A sequence model emits logits ``z`` of shape ``(T, M)`` for ONE example, a
class at each of its ``T`` positions; :func:`per_position_cross_entropy` takes integer labels
``y`` of shape ``(T,)`` (or probabilities ``(T, M)``) and returns the MEAN over the scored
positions of the per-position cross-entropies, ``(1/|S|) sum_{t in S} (logsumexp(z_t) -
z_t[y_t])``, ``S = {t : y_t != IGNORE}``; a label ``IGNORE = -1`` marks a position that is not
scored (the input part of a copying task, say), as PyTorch's ``ignore_index`` does. An
example with no scored position has loss 0. :func:`nets.objective.make` uses it for
``"cross_entropy"`` when the model's output has positions (``model.output_shape`` of two or
more axes), so ``objective.make(seq_model, "cross_entropy")`` trains on labels ``(n, T)``. The
per-example :func:`cross_entropy` keeps refusing labels ``(T,)`` for logits ``(T, M)``: given
only those two arrays, a batch passed by mistake looks the same.

Targets are checked on their static shape and dtype when a loss is traced (inside
``jax.eval_shape``, before anything is compiled): a float scalar or a ``(1,)`` vector for
cross-entropy with ``M > 1`` outputs, a squared-error target of another shape than ``z``,
raise ``TypeError``/``ValueError`` naming the target. Values (a label ``>= M``) cannot be
seen while tracing: :func:`record_label_ranges` records, for every cross-entropy traced on
integer labels, the number of classes ``M``, and :func:`nets._checks.check_labels` checks
concrete labels against it (see :func:`traced_label_classes`).

>>> import jax.numpy as jnp
>>> float(cross_entropy(jnp.array([0.0, 0.0]), 1))  # log 2
0.693...
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nets import _checks

# ---------------------------------------------------------------------------------------------
# Label ranges seen while tracing
# ---------------------------------------------------------------------------------------------

_LABELS = _checks.TraceRecorder()  # M of each cross-entropy traced on integer labels
_BINARY = _checks.TraceRecorder()  # one entry per binary cross-entropy traced


def record_label_ranges():
    """A context that collects ``M`` (``z.shape[-1]``) each time :func:`cross_entropy` is
    TRACED on integer labels while it is active; it yields the list it appends to.

    Label values cannot be checked while tracing (they are abstract), so a label ``>= M``
    would silently become ``logsumexp(z)`` (``one_hot`` of it is all zeros) and train to a
    negative loss. A caller that holds concrete labels traces the loss inside this context
    and checks them with :func:`nets._checks.check_labels`. JAX caches traces: a jitted
    function traced before does not run its Python again, and records nothing. Trace a
    fresh wrapper (``lambda *a: loss_fn(*a)``), as :func:`traced_label_classes` does.

    >>> import jax, jax.numpy as jnp
    >>> with record_label_ranges() as seen:
    ...     _ = jax.eval_shape(jax.vmap(cross_entropy), jnp.zeros((4, 10)), jnp.zeros(4, int))
    >>> seen
    [10]
    """
    return _LABELS.collect()


def _record(num_classes: int) -> None:
    _LABELS.record(int(num_classes))


def record_binary_targets():
    """A context that collects an entry each time :func:`binary_cross_entropy` is TRACED
    while it is active, as :func:`record_label_ranges` does for cross-entropy: a caller with
    concrete targets then checks them against ``[0, 1]`` (labels ``-1/+1`` or ``0/2`` would
    train to a negative loss, silently)."""
    return _BINARY.collect()


def traced_label_classes(fn: Callable, *args, **kwargs) -> tuple[int, ...]:
    """The numbers of classes ``M`` of every cross-entropy that ``fn(*args, **kwargs)``
    evaluates on integer labels, sorted and distinct; found by tracing a fresh wrapper of
    ``fn`` with ``jax.eval_shape`` (nothing is compiled; arrays may be
    ``jax.ShapeDtypeStruct``). Empty when ``fn`` has no such cross-entropy, or when it is
    itself a jitted function JAX traced before (its Python does not run again).

    >>> import jax, jax.numpy as jnp
    >>> from nets import objective, mlp
    >>> params = mlp.init(jax.random.key(0), (4, 3, 10))
    >>> traced_label_classes(objective.mlp_objective, params, jnp.zeros((2, 4)), jnp.zeros(2, int))
    (10,)
    """
    with record_label_ranges() as seen:
        jax.eval_shape(lambda *a, **k: fn(*a, **k), *args, **kwargs)
    return tuple(sorted(set(seen)))


# ---------------------------------------------------------------------------------------------
# Static target checks (shapes and dtypes, at trace time)
# ---------------------------------------------------------------------------------------------


def _describe(y) -> str:
    return f"dtype {y.dtype}, shape {tuple(y.shape)}"


def _check_output(z, loss: str) -> None:
    """The output ``z`` is an array, not a tuple (a layer's ``(y, state)``) or another tree."""
    if not hasattr(z, "shape"):
        hint = (" (a layer's (y, state)? pass y alone)"
                if isinstance(z, tuple) and len(z) == 2 else "")
        raise TypeError(f"{loss}: z: expected the array of outputs for one example, got a "
                        f"{type(z).__name__}{hint}")


def _as_target(y, loss: str) -> jax.Array:
    try:  # a concrete target stays on the host (NumPy): checking it compiles nothing
        if not isinstance(y, jax.Array):
            y = np.asarray(y)
            if y.dtype == object:
                raise TypeError(f"dtype {y.dtype}")
            if y.dtype.kind in "biufc":  # the dtype jnp.asarray would give (x64 or not)
                y = y.astype(jax.dtypes.canonicalize_dtype(y.dtype), copy=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{loss}: target y: expected a number or an array, got "
                        f"{type(y).__name__} ({err})") from None
    if not (jnp.issubdtype(y.dtype, jnp.number) or y.dtype == jnp.bool_):
        raise TypeError(f"{loss}: target y: expected a numeric array, got {_describe(y)}")
    return y


def _check_class_target(z, y) -> jax.Array:
    """Cross-entropy's target for ONE example: an integer label () or probabilities z.shape."""
    _check_output(z, "cross_entropy")
    y = _as_target(y, "cross_entropy")
    M = z.shape[-1] if z.ndim else 1
    expected = (f"an integer class label (shape (), integer dtype) or a floating probability "
                f"vector of shape {tuple(z.shape)}")
    if y.ndim == 0:
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise TypeError(
                f"cross_entropy: target y: expected {expected}, got a scalar of dtype {y.dtype} "
                f"{_checks.label_hint(y.dtype)}")
        _record(M)
        return y
    if y.shape != z.shape:
        hint = ""
        if y.shape == (1,) and M > 1:
            hint = (" (labels of shape (n, 1) read as probability vectors of length 1? "
                    "pass Y.ravel() for labels of shape (n,))")
        elif z.ndim == 2 and y.shape == z.shape[:1]:
            hint = " (a batch of logits and labels? cross_entropy is for ONE example: use jax.vmap)"
        raise ValueError(f"cross_entropy: target y: expected {expected}, got {_describe(y)}"
                         f"{hint}")
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise TypeError(
            f"cross_entropy: target y: expected {expected}, got {_describe(y)} (one-hot "
            f"integers? pass Y.argmax(axis=-1) for labels, or Y.astype(np.float32))")
    return y


IGNORE = -1  # a per-position label that is not scored (per_position_cross_entropy)


def _check_position_target(z, y) -> jax.Array:
    """Per-position cross-entropy's target for ONE example with logits ``z`` (T..., M):
    integer labels of shape ``(T...)`` (``IGNORE`` allowed) or probabilities of ``z``'s shape."""
    who = "per_position_cross_entropy"
    _check_output(z, who)
    if z.ndim < 2:
        raise ValueError(f"{who}: expected logits with positions, shape (T, M), got z of shape "
                         f"{tuple(z.shape)} (one position? use cross_entropy)")
    y = _as_target(y, who)
    lead, M = tuple(z.shape[:-1]), z.shape[-1]
    expected = (f"integer labels of shape {lead} (one per position, {IGNORE} where not "
                f"scored) or floating probabilities of shape {tuple(z.shape)}")
    if tuple(y.shape) == lead:
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise TypeError(f"{who}: target y: expected {expected}, got {_describe(y)} (float "
                            f"labels? pass Y.astype(np.int32))")
        _record(M)
        return y
    if tuple(y.shape) == tuple(z.shape):
        if not jnp.issubdtype(y.dtype, jnp.floating):
            raise TypeError(f"{who}: target y: expected {expected}, got {_describe(y)} "
                            f"(one-hot integers? pass Y.argmax(axis=-1) for labels, or "
                            f"Y.astype(np.float32))")
        return y
    hint = ""
    if y.ndim == len(lead) and y.shape[1:] == lead[1:]:
        hint = (f" (labels for sequences of length {y.shape[0]}, logits for length {lead[0]}? "
                f"the model's seq_len must be the data's)")
    elif y.ndim == len(lead) + 1 and tuple(y.shape[1:]) == lead:
        hint = (" (a batch of labels? per_position_cross_entropy is for ONE example: use "
                "jax.vmap)")
    raise ValueError(f"{who}: target y: expected {expected}, got {_describe(y)}{hint}")


def _fits_exactly(y_shape, z_shape) -> bool:
    """y has z's shape, or broadcasts to it without repeating anything (one number for one
    output, or z's shape without some leading axes of size 1)."""
    if y_shape == z_shape or (math.prod(y_shape) == 1 and math.prod(z_shape) == 1):
        return True
    try:
        wide = np.broadcast_shapes(y_shape, z_shape)
    except ValueError:
        return False
    return wide == tuple(z_shape) and math.prod(y_shape) == math.prod(z_shape)


def _check_real_target(z, y, loss: str) -> jax.Array:
    """A real target of z's shape, or one that broadcasts to it exactly (see _fits_exactly)."""
    _check_output(z, loss)
    y = _as_target(y, loss)
    if not _fits_exactly(tuple(y.shape), tuple(z.shape)):
        raise ValueError(f"{loss}: target y: expected shape {tuple(z.shape)} like the output z "
                         f"(one example), got {_describe(y)}")
    return y.astype(z.dtype).reshape(z.shape)


def _check_binary_target(z, y) -> jax.Array:
    _check_output(z, "binary_cross_entropy")
    if z.size != 1:
        raise ValueError(f"binary_cross_entropy: expected one output (z of shape (1,) or ()), "
                         f"got z of shape {tuple(z.shape)}")
    y = _as_target(y, "binary_cross_entropy")
    if y.shape not in ((), (1,)):
        raise ValueError(f"binary_cross_entropy: target y: expected shape () or (1,) (one "
                         f"example), got {_describe(y)}")
    _BINARY.record(tuple(y.shape))
    return y.astype(z.dtype).reshape(z.shape)


def _one_hot_like(z, y):
    y = _check_class_target(z, y)
    if y.ndim == 0:
        return jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype)
    return y.astype(z.dtype)


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


def cross_entropy(z: jax.Array, y) -> jax.Array:
    """Multinomial cross-entropy ``-log softmax(z)_y`` for logits ``z`` of shape ``(M,)``.

    ``y``: an integer label in ``[0, M)`` (shape ``()``), or a floating probability vector of
    shape ``(M,)``; anything else is a ``TypeError``/``ValueError`` when traced. Labels out of
    ``[0, M)`` cannot be checked here (see :func:`record_label_ranges`); its loss is NaN.

    An integer label picks ``z_y`` by indexing, not by ``sum(onehot(y) * z)``: XLA's CPU
    compiler (jaxlib 0.10.2) miscomputes that product-sum under ``jit(vmap)`` when the labels
    are shared by many models and there are more than 32,768 (model, example) rows, as in a
    ``train.sweep`` (``tests/test_losses_xla.py`` keeps the case).
    """
    y = _check_class_target(z, y)
    if y.ndim == 0:  # a label outside [0, M) gives NaN, never a plausible number (-1 too:
        # take would read a negative index from the end)
        y = jnp.where(y < 0, z.shape[-1], y)
        return jax.nn.logsumexp(z) - jnp.take(z, y, mode="fill", fill_value=jnp.nan)
    return jax.nn.logsumexp(z) - jnp.sum(y.astype(z.dtype) * z)


def per_position_cross_entropy(z: jax.Array, y) -> jax.Array:
    """Cross-entropy at every position of ONE sequence, averaged over the scored positions.

    ``z``: logits of shape ``(T, M)`` (or ``(T1, T2, ..., M)``: every axis but the last is a
    position). ``y``: integer labels of shape ``(T,)`` in ``[0, M)``, or ``IGNORE`` (-1) at
    a position that is not scored; or floating probabilities of shape ``(T, M)`` (every
    position scored). Returns

        (1/|S|) sum_{t in S} (logsumexp(z_t) - z_t[y_t]),    S = {t : y_t != IGNORE}

    and 0 when ``S`` is empty. A label outside ``[0, M)`` other than ``IGNORE`` gives NaN
    (never a plausible number); :func:`nets._checks.check_labels` refuses it on concrete
    labels (``train.fit`` does, before compiling).

    >>> import jax.numpy as jnp
    >>> z = jnp.array([[0.0, 0.0], [2.0, 0.0], [5.0, -5.0]])
    >>> float(per_position_cross_entropy(z, jnp.array([1, 0, IGNORE])))  # (log 2 + 0.127) / 2
    0.41...
    """
    y = _check_position_target(z, y)
    lse = jax.nn.logsumexp(z, axis=-1)  # (T,)
    if jnp.issubdtype(y.dtype, jnp.floating):
        return jnp.mean(lse - jnp.sum(y.astype(z.dtype) * z, axis=-1))
    M = z.shape[-1]
    scored = y != IGNORE
    inside = (y >= 0) & (y < M)
    picked = jnp.take_along_axis(z, jnp.clip(y, 0, M - 1)[..., None], axis=-1)[..., 0]  # z_t[y_t]
    per_t = jnp.where(inside, lse - picked, jnp.nan)  # a label out of range: NaN
    total = jnp.sum(jnp.where(scored, per_t, 0.0))
    return total / jnp.maximum(jnp.sum(scored), 1).astype(z.dtype)


def squared_error(z: jax.Array, y) -> jax.Array:
    """Squared error ``sum_k (y_k - z_k)^2`` for outputs ``z`` and targets ``y`` of shape ``(K,)``
    (or a shape that broadcasts to ``z``'s exactly: a number for one output)."""
    return jnp.sum((_check_real_target(z, y, "squared_error") - z) ** 2)


def binary_cross_entropy(z: jax.Array, y) -> jax.Array:
    """Binomial deviance/2 ``-[y log p + (1-y) log(1-p)]``, ``p = sigmoid(z)``, ``z`` of shape
    ``(1,)``, ``y`` of shape ``()`` or ``(1,)`` in ``[0, 1]``. A target outside ``[0, 1]``
    (labels ``-1/+1``) gives NaN, never a plausible number; ``train.fit`` refuses concrete
    ones before compiling (:func:`record_binary_targets`)."""
    y = _check_binary_target(z, y)
    return jnp.sum(jnp.where((y >= 0) & (y <= 1), jax.nn.softplus(z) - y * z, jnp.nan))


def _cross_entropy_grad(z, y):
    return jax.nn.softmax(z) - _one_hot_like(z, y)


def _per_position_cross_entropy_grad(z, y):
    """``(softmax(z_t) - onehot(y_t)) / |S|`` at scored positions, 0 elsewhere."""
    y = _check_position_target(z, y)
    p = jax.nn.softmax(z, axis=-1)
    if jnp.issubdtype(y.dtype, jnp.floating):
        count = math.prod(z.shape[:-1])
        return (p - y.astype(z.dtype)) / count
    scored = (y != IGNORE)[..., None]
    count = jnp.maximum(jnp.sum(scored), 1).astype(z.dtype)
    return jnp.where(scored, p - jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype), 0.0) / count


def _squared_error_grad(z, y):
    return 2.0 * (z - _check_real_target(z, y, "squared_error"))


def _binary_cross_entropy_grad(z, y):
    return jax.nn.sigmoid(z) - _check_binary_target(z, y)


class Loss(NamedTuple):
    """A per-example loss, its output function and its hand-derived ``dL/dz``."""

    name: str
    fn: Callable  # (z (n_K,), y) -> scalar
    grad: Callable  # (z (n_K,), y) -> (n_K,)
    output: str  # name in nets.mlp.OUTPUTS
    labels: str  # "class" (an integer label or probabilities), "binary" or "real"


LOSSES: dict[str, Loss] = {
    "cross_entropy": Loss("cross_entropy", cross_entropy, _cross_entropy_grad, "softmax", "class"),
    "squared_error": Loss("squared_error", squared_error, _squared_error_grad, "identity", "real"),
    "binary_cross_entropy": Loss(
        "binary_cross_entropy", binary_cross_entropy, _binary_cross_entropy_grad, "sigmoid",
        "binary"),
}


# The per-position forms of the per-example losses, for models whose output has positions
# (``(T, M)``): kept out of LOSSES, the per-example registry (the MLP, its hand-derived
# backprop and its gradient grid).
PER_POSITION: dict[str, Loss] = {
    "cross_entropy": Loss("per_position_cross_entropy", per_position_cross_entropy,
                          _per_position_cross_entropy_grad, "softmax", "class"),
}


def get(loss: str | Loss) -> Loss:
    """Look up a loss by name (a key of ``LOSSES``, or ``"per_position_cross_entropy"``);
    raise ``ValueError`` listing the valid names."""
    if isinstance(loss, Loss):
        return loss
    extra = {p.name: p for p in PER_POSITION.values()}
    if isinstance(loss, str) and loss in extra:
        return extra[loss]
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"loss: expected one of {sorted(LOSSES) + sorted(extra)}, got {loss!r}")
    return LOSSES[loss]


def for_output(loss: str | Loss, output_shape: tuple) -> Loss:
    """``loss`` for one example's output of ``output_shape``: its per-position form
    (``PER_POSITION``) when the output has positions, ``(T, M)``, and one exists; else
    ``loss`` itself.

    >>> for_output("cross_entropy", (7, 3)).name, for_output("cross_entropy", (3,)).name
    ('per_position_cross_entropy', 'cross_entropy')
    """
    loss = get(loss)
    if len(tuple(output_shape)) >= 2 and loss.name in PER_POSITION:
        return PER_POSITION[loss.name]
    return loss
