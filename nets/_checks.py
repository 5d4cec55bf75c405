"""Input checks on concrete values, run before anything is traced or compiled."""

from __future__ import annotations

import numpy as np


def as_finite_array(value, name: str, *, ndim: int | None = None) -> np.ndarray:
    """``value`` as a NumPy array, or a ``ValueError``/``TypeError`` naming ``name``."""
    try:
        arr = np.asarray(value)
    except Exception as err:  # ragged lists and the like
        raise TypeError(f"{name}: expected an array, got {type(value).__name__} ({err})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name}: expected finite values, got {arr[tuple(bad)]} at index {tuple(bad.tolist())}")
    return arr


def check_labels(Y, num_classes: int, name: str = "Y") -> np.ndarray:
    """Concrete integer class labels ``Y`` (any shape) against ``[0, num_classes)``.

    The value check that tracing cannot do: ``num_classes`` is the ``M`` a traced
    cross-entropy recorded (:func:`nets.losses.record_label_ranges`), or the network's
    output width. Returns ``Y`` as a NumPy array; non-integer ``Y`` is a ``TypeError``
    (probability targets need no range check: pass only integer labels here).

    >>> check_labels([1, 10, 3], 10, "Y")
    Traceback (most recent call last):
      ...
    ValueError: Y: expected class labels in [0, 10), got values in [1, 10] for a network with 10 outputs; labels 1..10? subtract 1 (Y - 1)
    """
    Y = as_finite_array(Y, name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise TypeError(f"num_classes: expected an int >= 1, got {num_classes!r}")
    if not np.issubdtype(Y.dtype, np.integer):
        raise TypeError(f"{name}: expected integer class labels, got dtype {Y.dtype}")
    lo, hi = Y.min(), Y.max()
    if lo < 0 or hi >= num_classes:
        hint = ""
        if lo >= 1 and hi == num_classes:
            hint = f"; labels 1..{num_classes}? subtract 1 ({name} - 1)"
        elif hi >= num_classes:
            hint = (f"; {hi + 1} or more classes? give the network {hi + 1} outputs"
                    if lo >= 0 else "")
        raise ValueError(
            f"{name}: expected class labels in [0, {num_classes}), got values in [{lo}, {hi}] "
            f"for a network with {num_classes} outputs{hint}")
    return Y


def check_targets(Y, n: int, n_out: int, labels: str, name: str = "y") -> np.ndarray:
    """Check targets for ``n`` examples against a loss's label kind (see nets.losses.Loss)."""
    Y = as_finite_array(Y, name)
    if Y.shape[0] != n:
        raise ValueError(f"{name}: expected {n} targets (one per row of x), got shape {Y.shape}")
    if labels == "class":
        if Y.ndim == 1:
            check_labels(Y, n_out, name)
        elif Y.shape != (n, n_out):
            raise ValueError(
                f"{name}: expected labels of shape ({n},) or probabilities of shape "
                f"({n}, {n_out}), got {Y.shape}")
    elif labels == "binary":
        if n_out != 1:
            raise ValueError(f"binary cross-entropy needs 1 output unit, the network has {n_out}")
        if Y.size != n or Y.min() < 0 or Y.max() > 1:
            raise ValueError(
                f"{name}: expected {n} targets in [0, 1], got shape {Y.shape} with values in "
                f"[{Y.min()}, {Y.max()}]")
    elif Y.size != n * n_out:
        raise ValueError(
            f"{name}: expected real targets of shape ({n}, {n_out}), got shape {Y.shape}")
    return Y
