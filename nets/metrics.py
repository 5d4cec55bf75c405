"""Evaluation metrics on BATCHED outputs ``Z`` (logits or probabilities) and targets.

``Z`` has shape ``(n, M)``: the predicted class is ``argmax_k Z[i, k]`` (the same for
logits and softmax probabilities). With one output unit, ``(n, 1)`` or ``(n,)`` (a sigmoid
output, two classes), the prediction is ``Z > threshold``: ``threshold=0`` for logits,
``0.5`` for probabilities. Labels are integers ``(n,)`` in ``[0, M)`` (``0/1`` for one unit,
where float 0/1 targets and ``(n, 1)`` are accepted too) or one-hot / probability rows
``(n, M)`` as floats (their argmax is the label); float labels ``(n,)`` for ``M > 1``
outputs and labels ``(n, 1)`` are refused (their dtypes and shapes are static, so traced
labels too), and so are concrete labels out of range. Each function is pure and jittable,
so it serves as ``fn`` in :meth:`nets.model.Model.metric`.

Per position (sequence models): ``Z`` of shape ``(n, T, M)`` and integer labels ``(n, T)``
(or probabilities ``(n, T, M)``); :func:`error_rate` and :func:`accuracy` count every scored
position of every sequence, those labelled ``nets.losses.IGNORE`` (-1) left out. Evaluated
in batches by ``train.fit`` (weighted by examples), the result is exact when every example
has the same number of scored positions.

>>> import jax.numpy as jnp
>>> Z = jnp.array([[2.0, 0.1], [0.3, 0.9], [1.0, -1.0]])
>>> float(error_rate(Z, jnp.array([0, 1, 1])))
0.333...
>>> float(accuracy(jnp.array([[1.2], [-0.3]]), jnp.array([1, 1])))
0.5
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nets import _checks
from nets.losses import IGNORE  # a per-position label that is not scored


def _check_positions(Z, y, name_z="Z", name_y="y"):
    """``Z`` (n, T..., M) and labels (n, T...) or probabilities of ``Z``'s shape."""
    if jnp.shape(y) not in (tuple(jnp.shape(Z))[:-1], tuple(jnp.shape(Z))):
        raise ValueError(f"{name_y}: expected per-position labels of shape "
                         f"{tuple(jnp.shape(Z))[:-1]} (or probabilities of shape "
                         f"{tuple(jnp.shape(Z))}) for outputs {name_z} of shape "
                         f"{tuple(jnp.shape(Z))}, got shape {jnp.shape(y)}")


def _check_labels(Z, y, name_y="y", *, positions=False, num_classes=None):
    """Class labels against the outputs ``Z``: dtypes and shapes (static, so traced labels
    too), and for concrete integer labels their range, ``[0, M)`` (``IGNORE`` allowed per
    position). Float labels are refused where they would be compared with a class index
    (``M > 1``); one output unit takes 0/1 targets as floats too (binary cross-entropy's)."""
    shape, dtype = tuple(jnp.shape(y)), jnp.result_type(y)
    n_out = 1 if jnp.ndim(Z) == 1 else jnp.shape(Z)[-1]
    lead = tuple(jnp.shape(Z))[:-1] if positions else tuple(jnp.shape(Z))[:1]
    integer = jnp.issubdtype(dtype, jnp.integer)
    if shape == lead and not integer and (n_out > 1 or positions):
        raise TypeError(f"{name_y}: expected integer class labels of shape {lead}, got dtype "
                        f"{dtype} {_checks.label_hint(dtype, name_y)}")
    if not positions and len(shape) == 2 and shape[1] != n_out:
        raise ValueError(f"{name_y}: expected integer labels of shape {lead} or probabilities "
                         f"of shape {(*lead, n_out)} (one column per output of Z), got shape "
                         f"{shape}" + (f" (pass {name_y}.ravel() for labels)"
                                       if shape[1] == 1 else ""))
    if not positions and len(shape) == 2 and n_out > 1 and integer:
        raise TypeError(f"{name_y}: expected probabilities of shape {shape} as floats, got dtype "
                        f"{dtype} (one-hot integers? pass {name_y}.argmax(axis=-1))")
    if integer and shape in (lead, (*lead, n_out)[:len(lead) + (n_out == 1)]) and not (
            isinstance(y, jax.core.Tracer)):
        values = np.asarray(y)
        M = num_classes or max(n_out, 2)
        low = IGNORE if positions else 0
        bad = ((values < 0) & (values != low)) | (values >= M)
        if values.size and bad.any():
            allowed = f"[0, {M})" + (f" or {IGNORE} (not scored)" if positions else "")
            first = values[bad].flat[0]
            hint = " (labels from 1? subtract 1)" if first == M and values.min() >= 1 else ""
            raise ValueError(f"{name_y}: expected class labels in {allowed} for Z with "
                             f"{n_out} output{'s' if n_out > 1 else ''}, got {first}{hint}")


def _position_labels(Z, y):
    """Integer labels (n, T...) from labels or probabilities, and the mask of scored ones."""
    y = jnp.asarray(y)
    if y.ndim == jnp.ndim(Z):
        y = jnp.argmax(y, axis=-1)
    return y, y != IGNORE


def _check_batch(Z, y, name_z="Z", name_y="y"):
    if jnp.ndim(Z) not in (1, 2):
        raise ValueError(f"{name_z}: expected batched outputs of shape (n, M) or (n,), got shape "
                         f"{jnp.shape(Z)}")
    if jnp.ndim(y) not in (1, 2) or jnp.shape(y)[0] != jnp.shape(Z)[0]:
        raise ValueError(f"{name_y}: expected {jnp.shape(Z)[0]} labels (one per row of "
                         f"{name_z}), got shape {jnp.shape(y)}")


def predicted_class(Z, *, threshold: float = 0.0) -> jax.Array:
    """Integer predictions ``(n,)``: ``argmax`` over ``M > 1`` outputs, ``Z > threshold``
    for one output unit."""
    Z = jnp.asarray(Z)
    if Z.ndim == 1 or Z.shape[-1] == 1:
        return (jnp.reshape(Z, (Z.shape[0],)) > threshold).astype(jnp.int32)
    return jnp.argmax(Z, axis=-1)


def _labels(y, n_out):
    y = jnp.asarray(y)
    if y.ndim == 2 and y.shape[-1] > 1:
        return jnp.argmax(y, axis=-1)
    y = jnp.reshape(y, (y.shape[0],))
    if n_out == 1 and not jnp.issubdtype(y.dtype, jnp.integer):
        return (y > 0.5).astype(jnp.int32)  # 0/1 targets stored as floats
    return y


def error_rate(Z, y, *, threshold: float = 0.0) -> jax.Array:
    """Fraction of misclassified examples, ``(1/n) sum_i [yhat_i != y_i]``; for outputs
    with positions ``(n, T, M)``, of misclassified scored positions (module doc)."""
    if jnp.ndim(Z) >= 3:
        _check_positions(Z, y)
        _check_labels(Z, y, positions=True)
        labels, scored = _position_labels(Z, y)
        wrong = (jnp.argmax(Z, axis=-1) != labels) & scored
        return jnp.sum(wrong) / jnp.maximum(jnp.sum(scored), 1)
    _check_batch(Z, y)
    _check_labels(Z, y)
    n_out = 1 if jnp.ndim(Z) == 1 else jnp.shape(Z)[-1]
    return jnp.mean(predicted_class(Z, threshold=threshold) != _labels(y, n_out))


def accuracy(Z, y, *, threshold: float = 0.0) -> jax.Array:
    """Fraction of correctly classified examples (scored positions), ``1 - error_rate``."""
    return 1.0 - error_rate(Z, y, threshold=threshold)


def confusion_matrix(Z, y, *, num_classes: int | None = None,
                     threshold: float = 0.0) -> jax.Array:
    """Counts ``C[true, predicted]``, shape ``(M, M)`` (``M = num_classes``, by default
    ``Z.shape[-1]``, or 2 for one output unit), as int32."""
    _check_batch(Z, y)
    _check_labels(Z, y, num_classes=num_classes)
    n_out = 1 if jnp.ndim(Z) == 1 else jnp.shape(Z)[-1]
    M = num_classes if num_classes is not None else max(n_out, 2)
    pred = predicted_class(Z, threshold=threshold)
    return jnp.zeros((M, M), jnp.int32).at[_labels(y, n_out), pred].add(1)


def mean_squared_error(Z, Y) -> jax.Array:
    """``mean (Y - Z)^2`` over all entries (scikit-learn's convention; the per-example
    :func:`nets.losses.squared_error` sums over the outputs instead)."""
    Z = jnp.asarray(Z)
    Y = jnp.asarray(Y, Z.dtype)
    if Y.size != Z.size or (Z.ndim and Y.shape[0] != Z.shape[0]):
        raise ValueError(f"Y: expected targets of shape {Z.shape} (like Z), got shape {Y.shape}")
    return jnp.mean((Y.reshape(Z.shape) - Z) ** 2)
