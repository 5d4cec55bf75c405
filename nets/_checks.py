"""Input checks on concrete values, run before anything is traced or compiled.

The one home of argument validation for ``nets`` and ``train`` (``train`` imports it; ``nets``
imports nothing of ``train``). Every message has one shape: ``"<name>: expected <what>, got
<what was given>"``, with a hint where a common mistake is recognisable.
"""

from __future__ import annotations

import contextlib
import math
import operator
import threading
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def label_hint(dtype, name: str = "Y") -> str:
    """The hint for class labels of a non-integer ``dtype``: ``(float labels? pass
    Y.astype(np.int32))``, or ``bool`` labels' own."""
    kind = "bool" if str(dtype) == "bool" else "float"
    return f"({kind} labels? pass {name}.astype(np.int32))"


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None,
              what: str = "") -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``; bools and floats are refused.

    >>> check_int(2.5, "epochs", 1)
    Traceback (most recent call last):
      ...
    TypeError: epochs: expected an int >= 1, got float 2.5
    """
    bounds = ("" if minimum is None and maximum is None else
              f" >= {minimum}" if maximum is None else
              f" <= {maximum}" if minimum is None else f" in [{minimum}, {maximum}]")
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected an int{bounds}{what}, got bool {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected an int{bounds}{what}, got {type(value).__name__} "
                        f"{value!r}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name}: expected an int{bounds}{what}, got {value}")
    return value


def check_pair(value, name: str, who: str = "") -> tuple[int, int]:
    """A positive int (Python or NumPy), used for both axes, or a pair of them, as a
    ``tuple[int, int]``; bools, floats and other lengths are refused.

    >>> check_pair(2.0, "stride", "LocallyConnected2D")
    Traceback (most recent call last):
      ...
    ValueError: stride: LocallyConnected2D expected a positive int or a pair of them, got 2.0
    """
    def one(v):
        if isinstance(v, bool):
            raise TypeError
        v = operator.index(v)
        if v < 1:
            raise TypeError
        return v

    try:
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                raise TypeError
            return (one(value[0]), one(value[1]))
        v = one(value)
        return (v, v)
    except TypeError:
        raise ValueError(f"{name}: {who + ' ' if who else ''}expected a positive int or a pair "
                         f"of them, got {value!r}") from None


def check_ints(values, name: str, who: str = "", minimum: int = 1) -> tuple[int, ...]:
    """A non-empty tuple or list of ints ``>= minimum`` (Python or NumPy) as a tuple of
    Python ints; a bare int (a common slip for a one-entry tuple) gets a hint."""
    prefix = f"{name}: {who + ' ' if who else ''}expected a non-empty tuple of ints >= {minimum}"
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        raise TypeError(f"{prefix}, got the int {values!r} (one entry? pass ({values!r},))")
    if not isinstance(values, (tuple, list)) or not values:
        raise (TypeError if not isinstance(values, (tuple, list)) else ValueError)(
            f"{prefix}, got {type(values).__name__} {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool):
            raise ValueError(f"{prefix}, got {values!r}")
        try:
            v = operator.index(v)
        except TypeError:
            raise ValueError(f"{prefix}, got {values!r}") from None
        if v < minimum:
            raise ValueError(f"{prefix}, got {values!r}")
        out.append(v)
    return tuple(out)


def check_real(value, name: str, *, minimum: float | None = None, strict: bool = False,
               maximum: float | None = None, finite: bool = True) -> float:
    """``value`` as a ``float`` above ``minimum`` (``> minimum`` with ``strict``) and below
    ``maximum`` (excluded), finite unless ``finite=False`` (NaN is always refused); bools and
    strings are refused.

    >>> check_real(0, "learning_rate", minimum=0, strict=True)
    Traceback (most recent call last):
      ...
    ValueError: learning_rate: expected a finite number > 0, got 0
    """
    if isinstance(value, (bool, str, bytes, complex)) or value is None:
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} "
                        f"{value!r}") from None
    if np.ndim(value) != 0:
        raise TypeError(f"{name}: expected a real number, got an array of shape "
                        f"{np.shape(value)}")
    bounds = []
    if minimum is not None:
        bounds.append(f"{'>' if strict else '>='} {minimum:g}")
    if maximum is not None:
        bounds.append(f"< {maximum:g}")
    ok = (math.isfinite(number) or (not finite and not math.isnan(number))) and (minimum is None or (
        number > minimum if strict else number >= minimum)) and (
        maximum is None or number < maximum)
    if not ok:
        raise ValueError(f"{name}: expected a {'finite ' if finite else ''}number "
                         f"{' and '.join(bounds)}".rstrip()
                         + f", got {value!r}")
    return number


def check_number(value, name: str, expected: str, ok) -> float:
    """``value`` as a finite ``float`` for which ``ok(value)`` holds; ``expected`` describes
    the admissible values in the message (e.g. ``"a constant in (0, 1)"``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected {expected}, got {type(value).__name__} {value!r}")
    value = float(value)
    if not (math.isfinite(value) and ok(value)):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return value


def check_key(key, name: str = "key", shape: tuple | None = ()) -> None:
    """A typed PRNG key array (``jax.random.key``) of ``shape`` (any shape when ``None``)."""
    dtype = getattr(key, "dtype", None)
    if dtype is None or not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        hint = ""
        if dtype is not None and jnp.shape(key)[-1:] == (2,) and dtype == jnp.uint32:
            hint = " (a legacy jax.random.PRNGKey? use jax.random.key(seed))"
        elif isinstance(key, (list, tuple)):
            hint = " (several keys? stack them: jnp.stack(keys), or jax.random.split(key, n))"
        raise TypeError(
            f"{name}: expected a typed PRNG key from jax.random.key(seed), got "
            f"{type(key).__name__}" + (f" of dtype {dtype}" if dtype is not None else "") + hint)
    if shape is not None and jnp.shape(key) != shape:
        raise ValueError(f"{name}: expected a key array of shape {shape}, got {jnp.shape(key)}")


def check_float_tree(tree, name: str = "params") -> None:
    """A non-empty pytree whose every leaf is a floating-point array."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    if not leaves:
        raise ValueError(f"{name}: expected a pytree with at least one array, got {tree!r}")
    for path, leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{name}{jax.tree_util.keystr(path)}: expected a floating-point array, got "
                f"{type(leaf).__name__}" + (f" of dtype {dtype}" if dtype is not None else ""))


def as_numeric(a: Any, name: str) -> np.ndarray:
    """``a`` as a NumPy array of bools, integers or floats, or a TypeError naming ``name``."""
    if a is None or isinstance(a, (str, bytes, dict, set, frozenset)):
        raise TypeError(f"{name}: expected an array of numbers (a NumPy or JAX array, or nested "
                        f"lists), got {type(a).__name__}")
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as err:  # ragged nested lists, key arrays, ...
        raise TypeError(f"{name}: expected a rectangular array of numbers, got a "
                        f"{type(a).__name__} that NumPy cannot convert ({err})") from None
    if arr.dtype.kind not in "biuf" and not jnp.issubdtype(arr.dtype, jnp.floating):  # bfloat16
        raise TypeError(f"{name}: expected real numbers (bool, integer or float dtype), got "
                        f"dtype {arr.dtype} from a {type(a).__name__}")
    return arr


def check_input(x, name: str) -> None:
    """A model input of real numbers (bool, integer or float), finite, or a ``TypeError``/
    ``ValueError`` naming ``name``. A traced ``x`` (or one spread over several hosts) is
    checked by its dtype only; a concrete one is read on the host (NumPy), so nothing is
    compiled for the check.

    >>> check_input([1.0, float("nan")], "x")
    Traceback (most recent call last):
      ...
    ValueError: x: expected finite values, got 1 non-finite value(s) (NaN or inf), the first x[1] = nan
    """
    if isinstance(x, jax.core.Tracer) or (isinstance(x, jax.Array)
                                          and not x.is_fully_addressable):  # another host's
        dtype = x.dtype
        if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)
                or dtype == jnp.bool_):
            raise TypeError(f"{name}: expected real numbers (bool, integer or float dtype), got "
                            f"dtype {dtype}")
        return
    check_finite(as_numeric(x, name), name)


def check_finite(arr: np.ndarray, name: str) -> None:
    """No NaN or infinity in a floating array; the message gives the count and the first."""
    if not jnp.issubdtype(arr.dtype, jnp.floating) or np.isfinite(arr).all():
        return
    bad = ~np.isfinite(arr)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    where = ", ".join(map(str, first))
    raise ValueError(f"{name}: expected finite values, got {int(bad.sum())} non-finite "
                     f"value(s) (NaN or inf), the first {name}[{where}] = {arr[first]}")


def as_finite_array(value, name: str, *, ndim: int | None = None) -> np.ndarray:
    """``value`` as a NumPy array, or a ``ValueError``/``TypeError`` naming ``name``."""
    try:
        arr = np.asarray(value)
    except Exception as err:  # ragged lists and the like
        raise TypeError(f"{name}: expected an array, got {type(value).__name__} ({err})") from None
    if arr.dtype == object or not (jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == bool):
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


def check_labels(Y, num_classes: int, name: str = "Y", *, ignore: int | None = None) -> np.ndarray:
    """Concrete integer class labels ``Y`` (any shape) against ``[0, num_classes)``.

    The value check that tracing cannot do: ``num_classes`` is the ``M`` a traced
    cross-entropy recorded (:func:`nets.losses.record_label_ranges`), or the network's
    output width. Returns ``Y`` as a NumPy array; non-integer ``Y`` is a ``TypeError``
    (probability targets need no range check: pass only integer labels here). With
    ``ignore`` (per-position labels: ``nets.losses.IGNORE``), that value is allowed too,
    as long as some label is scored.

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
    scored = Y if ignore is None else Y[Y != ignore]
    if scored.size == 0:
        raise ValueError(f"{name}: expected some scored labels in [0, {num_classes}), got only "
                         f"{ignore} (not scored) in shape {Y.shape}")
    lo, hi = scored.min(), scored.max()
    if lo < 0 or hi >= num_classes:
        if ignore is not None:
            raise ValueError(
                f"{name}: expected per-position class labels in [0, {num_classes}) or {ignore} "
                f"(not scored), got values in [{lo}, {hi}] (besides {ignore}) for a network "
                f"with {num_classes} outputs")
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


class TraceRecorder:
    """Values a function notes while it is TRACED, for a caller that holds concrete data:
    inside ``with recorder.collect() as seen``, every ``recorder.record(v)`` appends ``v`` to
    ``seen`` (and to the lists of enclosing contexts; per thread). Values cannot be checked
    while tracing, so the traced code records what it expects (a number of classes, a
    vocabulary size) and the caller checks its concrete arrays against it afterwards. JAX
    caches traces: a jitted function traced before does not run its Python again and
    records nothing; trace a fresh wrapper (``lambda *a: fn(*a)``)."""

    def __init__(self):
        self._local = threading.local()

    @contextlib.contextmanager
    def collect(self) -> Iterator[list]:
        stack = self._local.__dict__.setdefault("stack", [])
        seen: list = []
        stack.append(seen)
        try:
            yield seen
        finally:  # by identity: list.remove would drop an outer list with equal contents
            del stack[next(i for i, s in enumerate(stack) if s is seen)]

    def active(self) -> bool:
        """Whether a ``collect`` is open (on this thread): a value costly to compute need
        not be computed otherwise."""
        return bool(getattr(self._local, "stack", ()))

    def record(self, value) -> None:
        for seen in getattr(self._local, "stack", ()):
            seen.append(value)
