"""Data sets without downloads: checks, splits, real digits, ESL simulations, toy sets, files.

Every random draw takes an explicit typed key from `jax.random.key(seed)` (keyword `key`; an
int is a TypeError); the same key gives the same data, with or without float64 enabled.
Everything returned is NumPy: inputs `float32`, class labels `int32` (unless a docstring says
otherwise); put them on a device with `jnp.asarray` or `jax.device_put`.

* `validate`: the cheap input check `train.fit` runs before compiling anything.
* `random_split`, `standardize`, `Split`: seeded (stratified) train/validation/test splits,
  standardised with training-set statistics (ESL 11.5.3).
* `standardize_targets`, `target_scale_hint`: regression targets on a unit scale (the scale
  of `y` sets the scale of the squared-error gradient), and the hint when they are not.
* `load_digits`: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes),
  grey levels / 16 by default (`inputs="standardize"` or `"raw"` otherwise).
* `esl_sum_of_sigmoids`, `esl_radial`: the simulated regressions of ESL section 11.6, with
  their Bayes error.
* `gaussian_mixture`, `spirals`, `moons`: 2-D toy sets for generative models and classifiers.
* `load_idx`, `load_csv`: MNIST-format IDX files and numeric CSV files from local disk.

>>> import jax
>>> X, y = gaussian_mixture(100, key=jax.random.key(0))
>>> X.shape, X.dtype, y.shape, y.dtype
((100, 2), dtype('float32'), (100,), dtype('int32'))
>>> validate(X, y[:99])
Traceback (most recent call last):
  ...
ValueError: X has 100 rows but y has 99: expected one target per row of X
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nets import _checks
from nets import losses as _losses

__all__ = [
    "validate",
    "Split",
    "Standardized",
    "standardize",
    "StandardizedTargets",
    "standardize_targets",
    "target_scale_hint",
    "random_split",
    "load_digits",
    "Regression",
    "esl_sum_of_sigmoids",
    "esl_radial",
    "gaussian_mixture",
    "spirals",
    "moons",
    "load_idx",
    "load_csv",
]

# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def _check_count(n: Any, name: str, minimum: int = 1) -> int:
    return _checks.check_int(n, name, minimum)


def _check_real(x: Any, name: str, *, positive: bool = False) -> float:
    return _checks.check_real(x, name, minimum=0, strict=positive, finite=False)


_as_numeric, _check_finite = _checks.as_numeric, _checks.check_finite


def validate(
    X: Any,
    y: Any = None,
    *,
    num_classes: int | None = None,
    name: str = "X",
    y_name: str = "y",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Checks a data set and returns it as NumPy arrays; cheap, so run it before compiling.

    Args:
        X: inputs, array-like of shape `(n, features...)` with `n >= 1`, real, finite.
        y: optional targets with `n` rows: class labels of shape `(n,)`, or regression
            targets of shape `(n, ...)`; finite if floating.
        num_classes: if given, `y` must be integer class labels of shape `(n,)` in
            `[0, num_classes)`; or per-position labels, one per position of `X` (shape
            `X.shape[:k]`, `k >= 2`: `(n, T)` for token ids `(n, T)` or features
            `(n, T, d)`), in `[0, num_classes)` or `-1` (`nets.losses.IGNORE`, not scored).
        name: how `X` is called in error messages (e.g. `"X_val"`).
        y_name: how `y` is called in error messages.

    Returns:
        `(X, y)` as NumPy arrays with their dtypes unchanged (no copy when already NumPy);
        `y` is `None` when not given.

    Raises:
        TypeError: not array-like, not real numbers, or (with `num_classes`) non-integer
            labels.
        ValueError: `X` below 2-D, empty, non-finite values, `X` and `y` of different
            lengths, labels outside `[0, num_classes)`.
    """
    if num_classes is not None:
        num_classes = _check_count(num_classes, "num_classes")
    X = _as_numeric(X, name)
    if X.ndim < 2:
        hint = ""
        if X.ndim == 1:
            hint = (
                f" For n examples of one feature pass {name}[:, None]; for one example of "
                f"{X.shape[0]} features pass {name}[None, :]."
            )
        raise ValueError(
            f"{name} must be at least 2-D with shape (n, features...); got shape {X.shape} "
            f"({X.ndim}-D).{hint}"
        )
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: expected at least one row; got shape {X.shape}")
    if X.size == 0:
        raise ValueError(f"{name} has no features: got shape {X.shape}")
    _check_finite(X, name)
    if y is None:
        return X, None
    y = _as_numeric(y, y_name)
    n = X.shape[0]
    if y.ndim == 0:
        raise ValueError(
            f"{y_name} must have one entry per row of {name} (shape ({n}, ...)); got a scalar"
        )
    if y.shape[0] != n:
        raise ValueError(
            f"{name} has {n} rows but {y_name} has {y.shape[0]}: expected one target per "
            f"row of {name}"
        )
    _check_finite(y, y_name)
    if num_classes is None:
        return X, y
    if y.dtype.kind not in "iu":
        hint = ""
        if y.dtype.kind == "f" and np.all(y == np.round(y)):
            fix = f"{y_name}.ravel()" if y.shape == (n, 1) else y_name
            hint = f" (they are whole numbers: pass {fix}.astype(np.int32))"
        raise TypeError(
            f"{y_name} must hold integer class labels in [0, {num_classes}) when num_classes "
            f"is given; got dtype {y.dtype}{hint}"
        )
    if y.ndim >= 2 and y.shape == X.shape[:y.ndim]:  # a label per position of X
        _checks.check_labels(y, num_classes, y_name, ignore=_losses.IGNORE)
        return X, y
    if y.ndim != 1:
        hint = ""
        if y.ndim == 2 and y.shape[1] == num_classes:
            hint = f" (one-hot? pass {y_name}.argmax(axis=1))"
        elif y.shape == (n, 1):
            hint = f" (a column of labels? pass {y_name}.ravel())"
        raise ValueError(
            f"{y_name} must be class labels of shape ({n},) when num_classes is given; got "
            f"shape {y.shape}{hint}"
        )
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{y_name} must hold labels in [0, {num_classes}); got {int(bad.sum())} of {n} "
            f"outside, the first {y_name}[{i}] = {y[i]} (labels range over "
            f"[{y.min()}, {y.max()}])"
        )
    return X, y


# ---------------------------------------------------------------------------------------------
# Splits and standardisation
# ---------------------------------------------------------------------------------------------


class Split(NamedTuple):
    """A train/validation/test split, standardised with training-set statistics."""

    train: tuple[np.ndarray, np.ndarray | None]  # (X (n_train, ...), y (n_train, ...))
    val: tuple[np.ndarray, np.ndarray | None]  # (X (n_val, ...), y (n_val, ...)); n_val may be 0
    test: tuple[np.ndarray, np.ndarray | None]  # (X (n_test, ...), y (n_test, ...))
    mean: np.ndarray | None  # (features...) training mean; None if not standardised
    std: np.ndarray | None  # (features...) training std (zero -> 1); None if not standardised


class Standardized(NamedTuple):
    """Arrays standardised with the first one's statistics, and those statistics."""

    arrays: tuple[np.ndarray, ...]  # (X_train - mean) / std, then each of the others
    mean: np.ndarray  # (features...) float32, mean of X_train over its rows
    std: np.ndarray  # (features...) float32, std of X_train over its rows; zero -> 1


def standardize(X_train: Any, *others: Any) -> Standardized:
    """Standardises inputs to zero mean and unit variance per feature, with training stats.

    ESL 11.5.3 recommends standardising the inputs of a neural network so that the
    quadratic penalty treats them alike and the starting weights work in the linear region
    of the sigmoid. Statistics come from `X_train` only; the same affine map is applied to
    `others` (validation, test). A feature that is constant in `X_train` (std zero, or
    below `1e-12 |mean|`, i.e. rounding error; e.g. the blank border pixels of the digits)
    gets std 1, so it maps to a finite constant rather than 0/0. Small but real spreads
    (features in units of 1e-9) are kept.

    Args:
        X_train: `(n, features...)` inputs the statistics come from.
        *others: arrays of shape `(m, features...)`, same trailing shape as `X_train`
            (`m` may be 0).

    Returns:
        `Standardized(arrays, mean, std)`: `arrays` holds `(X - mean) / std` for `X_train`
        then each of `others`, as float32 (float64 stays float64); `mean`, `std` have shape
        `features...` and dtype float32.

    References:
        Hastie, Tibshirani & Friedman, The Elements of Statistical Learning, 2nd ed., 11.5.3.
    """
    X_train, _ = validate(X_train, name="X_train")
    checked = []
    for i, X in enumerate(others):
        X = _as_numeric(X, f"others[{i}]")  # may be empty (no validation set)
        _check_finite(X, f"others[{i}]")
        if X.shape[1:] != X_train.shape[1:] or X.ndim != X_train.ndim:
            raise ValueError(
                f"others[{i}] must have the feature shape of X_train, {X_train.shape[1:]}; "
                f"got shape {X.shape}"
            )
        checked.append(X)
    mean = X_train.mean(axis=0, dtype=np.float64)
    std = X_train.std(axis=0, dtype=np.float64)
    std = np.where(std > 1e-12 * np.abs(mean), std, 1.0)  # exactly constant, up to rounding
    out = tuple(
        ((X - mean) / std).astype(X.dtype if X.dtype == np.float64 else np.float32)
        for X in (X_train, *checked)
    )
    return Standardized(out, mean.astype(np.float32), std.astype(np.float32))


class StandardizedTargets(NamedTuple):
    """Regression targets standardised with the training targets' statistics."""

    arrays: tuple[np.ndarray, ...]  # (y_train - mean) / std, then each of the others
    mean: np.ndarray  # (targets...) float32, mean of y_train over its rows
    std: np.ndarray  # (targets...) float32, std of y_train over its rows; zero -> 1

    def inverse(self, prediction):
        """Predictions on the standardised scale back in the units of `y`:
        `prediction * std + mean` (NumPy or JAX arrays of shape `(m, targets...)`)."""
        return prediction * self.std + self.mean


def standardize_targets(y_train: Any, *others: Any) -> StandardizedTargets:
    """Standardises regression targets to zero mean and unit variance, with training stats.

    Why: the scale of `y` sets the scale of the gradient. For squared error
    `dL/dz = 2 (z - y)`, so with targets of standard deviation `s` the first gradients are
    about `s` times those of unit-scale targets, and so is every SGD step: a learning rate
    that suits standardised inputs diverges. scikit-learn's diabetes data (targets 25..346,
    std 77) trained with raw targets by a 10-20-1 ReLU net, `train.sgd(0.01)`, batch 32,
    turns non-finite in the first epoch; with standardised targets the same fit converges
    (test R^2 about 0.5). Train on `arrays[0]`, predict, then map the predictions back with
    `inverse` (a squared error in the original units is the standardised one times `std^2`).
    Statistics come from `y_train` only (as for inputs, ESL 11.5.3); a target column that is
    constant in `y_train` gets std 1.

    Args:
        y_train: `(n,)` or `(n, targets...)` real targets the statistics come from.
        *others: arrays `(m, targets...)` of the same trailing shape (`m` may be 0).

    Returns:
        `StandardizedTargets(arrays, mean, std)`: `arrays` holds `(y - mean) / std` for
        `y_train` then each of `others`, float32 (float64 stays float64); `mean` and `std`
        have shape `targets...` (`()` for `(n,)` targets), float32.

    >>> y = np.array([100.0, 200.0, 300.0], np.float32)
    >>> scaled = standardize_targets(y, np.array([250.0], np.float32))
    >>> scaled.mean, scaled.std, scaled.arrays[1]
    (array(200., dtype=float32), array(81.64966, dtype=float32), array([0.61...], dtype=float32))
    >>> float(scaled.inverse(scaled.arrays[1])[0])
    250.0
    """
    y_train = _as_numeric(y_train, "y_train")
    if y_train.ndim == 0 or y_train.shape[0] == 0:
        raise ValueError(f"y_train must have at least one row, shape (n, ...); got shape "
                         f"{y_train.shape}")
    _check_finite(y_train, "y_train")
    checked = []
    for i, y in enumerate(others):
        y = _as_numeric(y, f"others[{i}]")
        _check_finite(y, f"others[{i}]")
        if y.ndim != y_train.ndim or y.shape[1:] != y_train.shape[1:]:
            raise ValueError(f"others[{i}] must have the trailing shape of y_train, "
                             f"{y_train.shape[1:]}; got shape {y.shape}")
        checked.append(y)
    mean = y_train.mean(axis=0, dtype=np.float64)
    std = y_train.std(axis=0, dtype=np.float64)
    std = np.where(std > 1e-12 * np.abs(mean), std, 1.0)
    out = tuple(((y - mean) / std).astype(y.dtype if y.dtype == np.float64 else np.float32)
                for y in (y_train, *checked))
    return StandardizedTargets(out, np.asarray(mean, np.float32), np.asarray(std, np.float32))


def target_scale_hint(Y: Any, name: str = "Y") -> str | None:
    """A sentence to add to a divergence warning when real targets are far from unit scale.

    Returns it when `Y` holds floating targets whose largest per-column standard deviation
    exceeds 10 or whose largest `|mean|` exceeds 10; `None` otherwise (integer or bool `Y`
    are class labels and get no hint; so does `None`).

    >>> target_scale_hint(np.array([[25.0], [151.0], [346.0]]))[:70]
    'Y has standard deviation 132.1 and mean 174.0: standardise the targets'
    >>> target_scale_hint(np.array([0.5, -1.0])) is None
    True
    """
    if Y is None:
        return None
    Y = np.asarray(Y)
    if Y.dtype.kind != "f" or Y.ndim == 0 or Y.shape[0] == 0 or not np.isfinite(Y).all():
        return None
    std = float(np.max(Y.std(axis=0, dtype=np.float64)))
    mean = float(np.max(np.abs(Y.mean(axis=0, dtype=np.float64))))
    if not (std > 10 or mean > 10):
        return None
    return (f"{name} has standard deviation {std:.1f} and mean {mean:.1f}: standardise the "
            f"targets (train.data.standardize_targets) and map predictions back with its "
            f"inverse; the scale of {name} sets the scale of the gradient, so a learning rate "
            f"that suits unit-scale targets diverges.")


def _allocate(total: int, quotas: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Integer counts near `quotas`, at most `capacity`, summing to `total` (largest remainder)."""
    counts = np.minimum(np.floor(quotas).astype(np.int64), capacity)
    order = np.argsort(-(quotas - np.floor(quotas)), kind="stable")
    while counts.sum() < total:
        for c in order:
            if counts.sum() == total:
                break
            if counts[c] < capacity[c]:
                counts[c] += 1
    return counts


def _as_float32_or_int32(y: np.ndarray | None) -> np.ndarray | None:
    """Targets in the module's dtypes: integer labels int32, real targets float32, bools kept."""
    if y is None or y.dtype.kind == "b":
        return y
    if y.dtype.kind in "iu":
        if y.size and (y.min() < np.iinfo(np.int32).min or y.max() > np.iinfo(np.int32).max):
            raise ValueError(f"y: expected integer labels that fit in int32, got values in "
                             f"[{y.min()}, {y.max()}]")
        return y.astype(np.int32, copy=False)
    return y.astype(np.float32, copy=False)


def random_split(
    X: Any,
    y: Any = None,
    *,
    key: jax.Array,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    stratify: bool | None = None,
    standardize: bool = True,
) -> Split:
    """Splits a data set at random into training, validation and test sets.

    Set sizes are `round(n * test_fraction)` for the test set, `round(n * val_fraction)`
    for the validation set (halves round up) and the rest for training; stratified splits
    keep these totals and give each class its share by largest remainders. Each set comes
    in a random order. The validation set drives early stopping and tuning, the test set is
    touched once at the end (ESL 7.2).

    Args:
        X: inputs `(n, features...)`.
        y: targets `(n, ...)` or None.
        key: a `jax.random` key; the split depends on nothing else.
        val_fraction: share of examples in the validation set, in `[0, 1)`.
        test_fraction: share in the test set, in `[0, 1)`; the two sum to less than 1.
        stratify: keep class proportions in every set; None (default) stratifies when `y` is
            1-D integer labels.
        standardize: standardise all three inputs with the training mean and std
            (`standardize`).

    Returns:
        `Split(train, val, test, mean, std)`, each set an `(X, y)` pair (`y` None if not
        given): `X` float32 (standardised in float64 first), `y` int32 for integer labels,
        float32 for real targets, bool kept; `mean`, `std` float32, None when `standardize`
        is False.

    References:
        Hastie, Tibshirani & Friedman, The Elements of Statistical Learning, 2nd ed., 7.2
        and 11.5.3.
    """
    _checks.check_key(key, "key")
    X, y = validate(X, y)
    n = X.shape[0]
    fractions = {"val_fraction": val_fraction, "test_fraction": test_fraction}
    for arg, f in fractions.items():
        f = _check_real(f, arg)
        if not f < 1:
            raise ValueError(f"{arg} must be in [0, 1); got {f}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 to leave training data; got "
            f"{val_fraction} + {test_fraction}"
        )
    n_test = int(math.floor(n * test_fraction + 0.5))
    n_val = int(math.floor(n * val_fraction + 0.5))
    if n - n_test - n_val < 1:
        raise ValueError(
            f"no training examples left: n={n}, {n_val} for validation and {n_test} for test"
        )
    is_labels = y is not None and y.ndim == 1 and y.dtype.kind in "iu"
    if stratify is None:
        stratify = is_labels
    if stratify and not is_labels:
        raise ValueError(
            "stratify=True needs 1-D integer class labels y; got "
            + ("None" if y is None else f"dtype {y.dtype}, shape {y.shape}")
        )

    y = _as_float32_or_int32(y)
    key_members, key_order = jax.random.split(key)
    perm = np.asarray(jax.random.permutation(key_members, n))
    if stratify:
        _, counts = np.unique(y, return_counts=True)
        by_class = perm[np.argsort(y[perm], kind="stable")]  # grouped by class, random within
        test_c = _allocate(n_test, n_test * counts / n, counts)
        val_c = _allocate(n_val, n_val * counts / n, counts - test_c)
        parts: dict[str, list[np.ndarray]] = {"test": [], "val": [], "train": []}
        start = 0
        for size, t, v in zip(counts, test_c, val_c):
            block = by_class[start : start + size]
            parts["test"].append(block[:t])
            parts["val"].append(block[t : t + v])
            parts["train"].append(block[t + v :])
            start += size
        # Order each set by an independent permutation: ordering by `perm` would put, say,
        # the training examples of classes seen late in `perm` first.
        rank = np.empty(n, np.int64)
        rank[np.asarray(jax.random.permutation(key_order, n))] = np.arange(n)
        index = {}
        for s, blocks in parts.items():
            idx = np.concatenate(blocks)
            index[s] = idx[np.argsort(rank[idx])]
    else:
        index = {
            "test": perm[:n_test],
            "val": perm[n_test : n_test + n_val],
            "train": perm[n_test + n_val :],
        }

    Xs = {s: X[i] for s, i in index.items()}
    mean = std = None
    if standardize:
        (Xs["train"], Xs["val"], Xs["test"]), mean, std = _standardize(
            Xs["train"], Xs["val"], Xs["test"]
        )
    return Split(
        *((Xs[s].astype(np.float32, copy=False), None if y is None else y[index[s]])
          for s in ("train", "val", "test")),
        mean,
        std,
    )


_standardize = standardize  # `random_split` and `load_digits` take a flag of the same name


DIGITS_INPUTS = ("unit", "standardize", "raw")
_DIGITS_SHAPE = (1797, 65)  # 64 grey levels and the label per row


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, ``(X (1797, 64), y (1797,))``, float64 as its loader gives them.

    Read from the CSV that ships inside scikit-learn (``sklearn/datasets/data/digits.csv.gz``)
    without importing scikit-learn, whose import costs about a second; the values are
    ``sklearn.datasets.load_digits()``'s (tests/test_data.py compares them). Falls back to
    that loader if the file has moved.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package, runs none of it
    if spec is None:
        raise ImportError("load_digits needs scikit-learn installed (its digits data ship "
                          "inside it): python -m pip install scikit-learn")
    for folder in spec.submodule_search_locations or ():
        path = os.path.join(folder, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            with gzip.open(path, "rb") as f:
                data = np.loadtxt(f, delimiter=",", dtype=np.float64)
            if data.shape == _DIGITS_SHAPE:
                return data[:, :-1], data[:, -1]
    from sklearn import datasets  # a layout this reader does not know: the slow import

    digits = datasets.load_digits()
    return digits.data, digits.target


def load_digits(
    *,
    key: jax.Array,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    inputs: str | None = None,
    standardize: bool | None = None,
) -> Split:
    """The 8x8 handwritten digits bundled with scikit-learn, split at random (stratified).

    1797 grey-level images of the digits 0-9 (UCI optical recognition data, values 0..16),
    flattened row by row to 64 features; reshape with `X.reshape(-1, 8, 8)` for images.
    With the default fractions the sets hold 1079 / 359 / 359 images (train / val / test),
    every class in proportion. No download: the data ship inside scikit-learn.

    The default inputs are grey levels / 16, in [0, 1]. Per-pixel standardisation (ESL
    11.5.3) is available but not the default here: a border pixel inked in a handful of
    training images has a standard deviation as small as 0.03, so standardising turns its
    rare ink into inputs of 20-45 standard deviations.

    Args:
        key: a `jax.random` key that fixes the split.
        val_fraction: share of images for validation (early stopping, tuning).
        test_fraction: share of images for the final test.
        inputs: `"unit"` (default): grey levels / 16; `"standardize"`: each pixel
            standardised with the training mean and std (constant pixels get std 1);
            `"raw"`: grey levels 0..16.
        standardize: the older flag, kept: `True` is `inputs="standardize"`, `False` is
            `inputs="raw"`; give `inputs` or `standardize`, not two that disagree.

    Returns:
        `Split` with `X` float32 `(m, 64)` and `y` int32 `(m,)` in each set; `mean` and
        `std` float32 `(64,)` with `inputs="standardize"`, else None.

    References:
        Hastie, Tibshirani & Friedman, The Elements of Statistical Learning, 2nd ed., 11.7
        (neural networks on handwritten digits, there the 16x16 ZIP code data) and 11.5.3
        (scaling of the inputs).
    """
    _checks.check_key(key, "key")
    if standardize is not None and not isinstance(standardize, (bool, np.bool_)):
        raise TypeError(f"standardize must be True, False or None; got {standardize!r}")
    if inputs is not None and inputs not in DIGITS_INPUTS:
        raise ValueError(f"inputs must be one of {DIGITS_INPUTS}; got {inputs!r}")
    implied = None if standardize is None else ("standardize" if standardize else "raw")
    if inputs is not None and implied is not None and inputs != implied:
        raise ValueError(f"inputs={inputs!r} and standardize={standardize!r} disagree: give "
                         f"one of them (standardize={standardize} means inputs={implied!r})")
    inputs = inputs or implied or "unit"
    X, y = _digits_arrays()  # (1797, 64) values 0..16, (1797,)
    X = X.astype(np.float32)
    if inputs == "unit":
        X = X / np.float32(16.0)  # exact: a power of two
    y = y.astype(np.int32)
    return random_split(
        X,
        y,
        key=key,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        stratify=True,
        standardize=inputs == "standardize",
    )


# ---------------------------------------------------------------------------------------------
# ESL section 11.6: simulated regressions
# ---------------------------------------------------------------------------------------------


class Regression(NamedTuple):
    """A simulated regression sample with its noise-free mean and Bayes error."""

    X: np.ndarray  # (n, p) float32 inputs, rows i.i.d. N(0, I_p)
    y: np.ndarray  # (n, 1) float32 responses f(X) + eps
    f: np.ndarray  # (n, 1) float32 noise-free mean E(Y | X) = f(X)
    bayes_error: float  # Var(eps) = Var(f(X)) / snr: the expected squared error of f itself


_A1 = np.array([3.0, 3.0])  # ESL 11.6: sum-of-sigmoids directions
_A2 = np.array([3.0, -3.0])


def _sum_of_sigmoids_variance() -> float:
    """Var(sigma(a1.X) + sigma(a2.X)) for X ~ N(0, I_2), a1 = (3, 3), a2 = (3, -3).

    `a1.X` and `a2.X` are independent N(0, 18) (the directions are orthogonal, each of norm
    `c = 3 sqrt(2)`), and `E sigma(cZ) = 1/2` by symmetry, so
    `Var f = 2 (E[sigma(cZ)^2] - 1/4)` with `Z ~ N(0, 1)`: a one-dimensional integral, done
    by the trapezoid rule on [-12, 12] (exponentially accurate for this smooth integrand;
    about 0.3265229276).
    """
    c = float(np.linalg.norm(_A1))
    z, h = np.linspace(-12.0, 12.0, 4801, retstep=True)
    phi = np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)
    second_moment = h * float(np.sum(phi * (1.0 / (1.0 + np.exp(-c * z))) ** 2))
    return 2.0 * (second_moment - 0.25)


def _radial_variance(p: int = 10) -> float:
    """Var(prod_m phi(X_m)) for X ~ N(0, I_p), phi the standard normal density, exactly.

    For Z ~ N(0, 1): `E phi(Z) = int phi^2 = 1 / (2 sqrt(pi))` and
    `E phi(Z)^2 = int phi^3 = 1 / (2 pi sqrt(3))`; by independence
    `Var f = (1 / (2 pi sqrt(3)))^p - (1 / (2 sqrt(pi)))^(2p)` (about 3.2730e-11 for p = 10).
    """
    mean_phi = 1.0 / (2.0 * math.sqrt(math.pi))  # E phi(Z)
    mean_phi_squared = 1.0 / (2.0 * math.pi * math.sqrt(3.0))  # E phi(Z)^2
    return mean_phi_squared**p - mean_phi ** (2 * p)


def _simulate(n: int, p: int, f_of_x, var_f: float, key: jax.Array, snr: Any) -> Regression:
    n = _check_count(n, "n")
    snr = _check_real(snr, "snr", positive=True)
    _checks.check_key(key, "key")
    key_x, key_eps = jax.random.split(key)
    X = np.asarray(jax.random.normal(key_x, (n, p), dtype=jnp.float32))
    eps = np.asarray(jax.random.normal(key_eps, (n, 1), dtype=jnp.float32))
    f = f_of_x(X.astype(np.float64))[:, None]  # (n, 1), computed in float64
    var_eps = var_f / snr
    y = f + math.sqrt(var_eps) * eps.astype(np.float64)
    return Regression(X, y.astype(np.float32), f.astype(np.float32), var_eps)


def esl_sum_of_sigmoids(n: int, *, key: jax.Array, snr: float = 4.0) -> Regression:
    """The sum-of-sigmoids model of ESL 11.6: `Y = sigma(a1.X) + sigma(a2.X) + eps`.

    `X ~ N(0, I_2)`, `a1 = (3, 3)`, `a2 = (3, -3)`, `sigma` the logistic sigmoid, and
    `eps ~ N(0, s^2)` with `s^2 = Var(f(X)) / snr`, so that the signal-to-noise ratio
    `Var(E(Y|X)) / Var(Y - E(Y|X))` equals `snr`. `Var f(X) = 0.32652...` is computed by
    quadrature (see `_sum_of_sigmoids_variance`); with the book's `snr = 4` the Bayes error
    is `0.08163...`. ESL uses 100 training and 10,000 test examples and reports test error
    relative to the Bayes error.

    Args:
        n: number of examples.
        key: a `jax.random` key (inputs and noise come from independent halves of it).
        snr: signal-to-noise ratio, > 0 (`inf` for noise-free responses).

    Returns:
        `Regression(X (n, 2), y (n, 1), f (n, 1), bayes_error)`.

    References:
        Hastie, Tibshirani & Friedman, The Elements of Statistical Learning, 2nd ed., 11.6.
    """

    def f(X):
        return 1.0 / (1.0 + np.exp(-X @ _A1)) + 1.0 / (1.0 + np.exp(-X @ _A2))

    return _simulate(n, 2, f, _sum_of_sigmoids_variance(), key, snr)


def esl_radial(n: int, *, key: jax.Array, snr: float = 4.0) -> Regression:
    """The radial model of ESL 11.6: `Y = prod_{m=1}^{10} phi(X_m) + eps`.

    `X ~ N(0, I_10)`, `phi(t) = exp(-t^2 / 2) / sqrt(2 pi)`, and `eps ~ N(0, s^2)` with
    `s^2 = Var(f(X)) / snr`. `Var f(X) = (2 pi sqrt 3)^-10 - (2 sqrt pi)^-20 = 3.2730e-11`
    exactly (see `_radial_variance`), so the responses are tiny (`f <= (2 pi)^-5 ~ 1e-4`,
    Bayes error `8.18e-12` at `snr = 4`): rescale `y` (e.g. divide by its std) before
    fitting, and compare test error with `bayes_error` in the same units. ESL calls this
    the hardest case for a neural network: `f` is radially symmetric, with no preferred
    direction for a sigmoid unit.

    Args:
        n: number of examples.
        key: a `jax.random` key (inputs and noise come from independent halves of it).
        snr: signal-to-noise ratio, > 0 (`inf` for noise-free responses).

    Returns:
        `Regression(X (n, 10), y (n, 1), f (n, 1), bayes_error)`.

    References:
        Hastie, Tibshirani & Friedman, The Elements of Statistical Learning, 2nd ed., 11.6.
    """

    def f(X):
        return np.prod(np.exp(-0.5 * X**2) / math.sqrt(2.0 * math.pi), axis=1)

    return _simulate(n, 10, f, _radial_variance(10), key, snr)


# ---------------------------------------------------------------------------------------------
# 2-D toy sets
# ---------------------------------------------------------------------------------------------


def gaussian_mixture(
    n: int, *, key: jax.Array, modes: int = 8, radius: float = 2.0, std: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Points from an equal mixture of `modes` Gaussians centred on a circle.

    Mode `k` is centred at `radius * (cos(2 pi k / modes), sin(2 pi k / modes))` with
    covariance `std^2 I`; the mode of each point is drawn uniformly. The usual test of
    whether a GAN covers all modes (8 modes, radius 2, std 0.02 in Metz et al.).

    Args:
        n: number of points.
        key: a `jax.random` key.
        modes: number of mixture components, >= 1.
        radius: radius of the circle of centres, > 0.
        std: standard deviation of each component, >= 0.

    Returns:
        `(X, labels)`: float32 `(n, 2)` points and int32 `(n,)` mode indices in
        `[0, modes)`.

    References:
        Metz, Poole, Pfau & Sohl-Dickstein, Unrolled Generative Adversarial Networks, 2017,
        https://arxiv.org/abs/1611.02163 ; ESL 2.3.3 simulates a similar Gaussian mixture.
    """
    n = _check_count(n, "n")
    modes = _check_count(modes, "modes")
    radius = _check_real(radius, "radius", positive=True)
    std = _check_real(std, "std")
    _checks.check_key(key, "key")
    key_mode, key_noise = jax.random.split(key)
    labels = np.asarray(jax.random.randint(key_mode, (n,), 0, modes, dtype=jnp.int32))
    noise = np.asarray(jax.random.normal(key_noise, (n, 2), dtype=jnp.float32))
    angle = 2.0 * np.pi * labels / modes
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return (centres + std * noise).astype(np.float32), labels


def spirals(
    n: int, *, key: jax.Array, turns: float = 1.5, noise: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals (Archimedean, one rotated by pi), labels 0 and 1.

    Point `i` has label `i % 2` (so the classes alternate and are balanced); with
    `t = sqrt(u)`, `u ~ U(0, 1)` (points spread evenly along each arm), it lies at radius
    `t` and angle `2 pi turns t + pi label`, plus `N(0, noise^2 I)`. The arms reach radius 1.

    Args:
        n: number of points.
        key: a `jax.random` key.
        turns: turns of each arm, > 0.
        noise: standard deviation of the Gaussian noise added to each point, >= 0.

    Returns:
        `(X, labels)`: float32 `(n, 2)` and int32 `(n,)` in `{0, 1}`.

    References:
        Lang & Witbrock, Learning to tell two spirals apart, Proc. 1988 Connectionist Models
        Summer School.
    """
    n = _check_count(n, "n")
    turns = _check_real(turns, "turns", positive=True)
    noise = _check_real(noise, "noise")
    _checks.check_key(key, "key")
    key_t, key_noise = jax.random.split(key)
    t = np.sqrt(np.asarray(jax.random.uniform(key_t, (n,), dtype=jnp.float32), np.float64))
    labels = (np.arange(n) % 2).astype(np.int32)
    angle = 2.0 * np.pi * turns * t + np.pi * labels
    X = t[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    X = X + noise * np.asarray(jax.random.normal(key_noise, (n, 2), dtype=jnp.float32))
    return X.astype(np.float32), labels


def moons(n: int, *, key: jax.Array, noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles, as scikit-learn's `make_moons`, with random positions.

    Point `i` has label `i % 2`; with `t ~ U(0, pi)`, label 0 lies at `(cos t, sin t)` and
    label 1 at `(1 - cos t, 1/2 - sin t)`, plus `N(0, noise^2 I)`.

    Args:
        n: number of points.
        key: a `jax.random` key.
        noise: standard deviation of the Gaussian noise, >= 0.

    Returns:
        `(X, labels)`: float32 `(n, 2)` and int32 `(n,)` in `{0, 1}`.

    References:
        scikit-learn, `sklearn.datasets.make_moons`.
    """
    n = _check_count(n, "n")
    noise = _check_real(noise, "noise")
    _checks.check_key(key, "key")
    key_t, key_noise = jax.random.split(key)
    t = np.pi * np.asarray(jax.random.uniform(key_t, (n,), dtype=jnp.float32), np.float64)
    labels = (np.arange(n) % 2).astype(np.int32)
    X = np.where(
        labels[:, None] == 0,
        np.stack([np.cos(t), np.sin(t)], axis=1),
        np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1),
    )
    X = X + noise * np.asarray(jax.random.normal(key_noise, (n, 2), dtype=jnp.float32))
    return X.astype(np.float32), labels


# ---------------------------------------------------------------------------------------------
# Local files
# ---------------------------------------------------------------------------------------------

# IDX type codes (http://yann.lecun.com/exdb/mnist/): data are big-endian.
_IDX_TYPES = {
    0x08: (">u1", "unsigned byte"),
    0x09: (">i1", "signed byte"),
    0x0B: (">i2", "short"),
    0x0C: (">i4", "int"),
    0x0D: (">f4", "float"),
    0x0E: (">f8", "double"),
}


def _read_bytes(path: str | os.PathLike, what: str) -> tuple[str, bytes]:
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"no {what} file at {path!r}") from None
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path!r}: corrupt or truncated gzip data ({err})") from None
    return path, raw


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (the MNIST format), plain or gzip-compressed.

    Layout: a 4-byte magic number (two zero bytes, a type code, the number of dimensions
    `ndim`), `ndim` big-endian uint32 sizes, then the data in C order, big-endian. Gzip is
    recognised by its own magic bytes, so `train-images-idx3-ubyte.gz` and the unpacked file
    both work.

    Args:
        path: the file.

    Returns:
        An array of the stored shape and type in native byte order: uint8 (0x08), int8
        (0x09), int16 (0x0B), int32 (0x0C), float32 (0x0D) or float64 (0x0E). For MNIST
        images, `X = load_idx(p).reshape(n, -1).astype(np.float32) / 255`; labels,
        `load_idx(p).astype(np.int32)`.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: a bad magic number, an unknown type code, a truncated header or data,
            trailing bytes, or corrupt gzip data.

    References:
        LeCun, Cortes & Burges, The MNIST database, http://yann.lecun.com/exdb/mnist/
    """
    path, raw = _read_bytes(path, "IDX")
    if len(raw) < 4:
        raise ValueError(
            f"{path!r}: truncated IDX header: expected a 4-byte magic number, got {len(raw)} "
            "byte(s)"
        )
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path!r} is not an IDX file: its magic number 0x{raw[:4].hex()} should start "
            "with two zero bytes"
        )
    code, ndim = raw[2], raw[3]
    if ndim > 32:  # NumPy's limit is 64; MNIST files have 1 or 3
        raise ValueError(f"{path!r}: the IDX header says {ndim} dimensions, expected at most "
                         f"32 (a corrupt header, or not an IDX file?)")
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02X} ({name})" for c, (_, name) in _IDX_TYPES.items())
        raise ValueError(f"{path!r}: unknown IDX type code 0x{code:02X}; expected one of {known}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path!r}: truncated IDX header: {ndim} dimensions need {header} bytes, the "
            f"file has {len(raw)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[code][0])
    expected = math.prod(shape) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        problem = "truncated IDX data" if got < expected else "trailing bytes after IDX data"
        raise ValueError(
            f"{path!r}: {problem}: the header says shape {shape} of {_IDX_TYPES[code][1]} "
            f"({expected} bytes), the file has {got} bytes after the header"
        )
    data = np.frombuffer(raw, dtype, count=math.prod(shape), offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _parse_number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def load_csv(
    path: str | os.PathLike,
    *,
    label_column: int | None = -1,
    skip_header: bool | None = None,
    delimiter: str = ",",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads a numeric CSV file: one example per line, one column of labels.

    Blank lines are skipped; cells may be quoted. Every data cell must parse as a finite
    number (`float`): missing values, and cells spelled NaN or inf, are errors, not NaN.
    Text class names are not mapped to integers: encode them first.

    Args:
        path: the file (UTF-8; a byte-order mark is ignored).
        label_column: index of the label column (negative counts from the end), or None
            for a file of inputs only.
        skip_header: whether the first non-blank line is a header. None (default) decides
            from that line: a header when none of its cells is a number, data when all are;
            a mix is an error.
        delimiter: the cell separator.

    Returns:
        `(X, y)`: `X` float32 `(n, columns - 1)` (all columns without `label_column`);
        `y` `(n,)` int32 when every label is a whole number, float32 otherwise, None when
        `label_column` is None.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: ragged rows, non-numeric or non-finite cells (naming line and column),
            no data rows, `label_column` out of range, or every line one cell that another
            delimiter would split (naming it).
    """
    if label_column is not None and (
        isinstance(label_column, bool) or not isinstance(label_column, (int, np.integer))
    ):
        raise TypeError(f"label_column must be an int or None; got {label_column!r}")
    path, raw = _read_bytes(path, "CSV")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path!r} is not UTF-8 text ({err})") from None
    lines = text.splitlines()
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    _check_delimiter(path, numbered, delimiter)
    if numbered:
        lineno, first = numbered[0]
        cells = next(csv.reader([first], delimiter=delimiter))
        numeric = [_parse_number(c) is not None for c in cells]
        if skip_header is None:
            texts = [c.strip() for c, number in zip(cells, numeric) if not number]
            if any(numeric) and texts and all(t.lower() in _MISSING for t in texts):
                skip_header = False  # a data row with missing cells: named by the parse below
            elif any(numeric) and not all(numeric):
                other = next((d for d in _DELIMITERS if d != delimiter
                              and any(d in t for t in texts)), None)
                raise ValueError(
                    f"{path!r}, line {lineno}: mixes numbers and text ({first.strip()!r}), "
                    "so it is neither clearly a header nor data; pass skip_header=True or "
                    "skip_header=False"
                    + (f" (cells like {texts[0]!r} hold {other!r}: is the delimiter "
                       f"{other!r}, with decimal commas?)" if other else "")
                )
            else:
                skip_header = not any(numeric)
        if skip_header:
            numbered = numbered[1:]
    if not numbered:
        raise ValueError(f"{path!r} has no data rows")
    try:  # fast path: NumPy's C parser
        data = np.loadtxt(
            [line for _, line in numbered],
            delimiter=delimiter,
            quotechar='"',
            comments=None,
            dtype=np.float64,
            ndmin=2,
        )
    except ValueError:
        data = _parse_csv_rows(path, numbered, delimiter)  # raises with the line number
    bad = ~np.isfinite(data)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        lineno, line = numbered[i]
        cell = next(csv.reader([line], delimiter=delimiter))[j].strip()
        raise ValueError(
            f"{path!r}, line {lineno}, column {j + 1}: expected a finite number, got {cell!r} "
            f"({int(bad.sum())} non-finite cell(s) in all; missing values are not read as NaN)"
        )
    n_cols = data.shape[1]
    if label_column is None:
        return data.astype(np.float32), None
    if not -n_cols <= label_column < n_cols:
        raise ValueError(
            f"label_column={label_column} is out of range for {path!r} with {n_cols} columns"
        )
    if n_cols < 2:
        raise ValueError(
            f"{path!r} has a single column: nothing is left for inputs besides the labels "
            f"(pass label_column=None for a file of inputs only)"
        )
    y = data[:, label_column]
    X = np.delete(data, label_column % n_cols, axis=1)
    whole = np.isfinite(y).all() and np.all(y == np.round(y)) and np.all(np.abs(y) < 2**31)
    return X.astype(np.float32), y.astype(np.int32 if whole else np.float32)


_DELIMITERS = (",", ";", "\t", "|", " ")
_MISSING = {"", "na", "n/a", "nan", "null", "none", "?", "-", "."}  # missing-value spellings


def _check_delimiter(path: str, numbered: list[tuple[int, str]], delimiter: str) -> None:
    """Refuse a file whose every line is one cell under `delimiter` but several under another
    common delimiter: read with the wrong one, its first line would pass for a header."""
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise TypeError(f"delimiter: expected a one-character string, got {delimiter!r}")
    stripped = [line.strip() for _, line in numbered]
    if not stripped or any(delimiter in line for line in stripped):
        return
    for other in _DELIMITERS:
        if other != delimiter and all(other in line for line in stripped):
            lineno, line = numbered[0]
            raise ValueError(
                f"{path!r}: every line is a single column with delimiter={delimiter!r}, but "
                f"every line holds {other!r} (line {lineno}: {line.strip()[:60]!r}); pass "
                f"delimiter={other!r}"
            )


def _parse_csv_rows(path: str, numbered: list[tuple[int, str]], delimiter: str) -> np.ndarray:
    """Slow, exact parse of CSV lines; the first ragged row or bad cell raises with its line."""
    rows = []
    width = None
    for lineno, line in numbered:
        cells = next(csv.reader([line], delimiter=delimiter))
        if width is None:
            width, first_line = len(cells), lineno
        elif len(cells) != width:
            raise ValueError(
                f"{path!r}, line {lineno}: expected {width} columns (as on line "
                f"{first_line}), got {len(cells)}"
            )
        row = []
        for j, cell in enumerate(cells):
            value = _parse_number(cell)
            if value is None:
                what = "an empty cell" if not cell.strip() else f"{cell!r}"
                raise ValueError(
                    f"{path!r}, line {lineno}, column {j + 1}: expected a number, got {what}"
                )
            row.append(value)
        rows.append(row)
    return np.asarray(rows, dtype=np.float64)
