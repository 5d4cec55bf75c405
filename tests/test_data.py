"""Data: input checks, splits, digits, ESL 11.6 simulations, toy sets, IDX and CSV files."""

from __future__ import annotations

import gzip
import math
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train import data

# ---------------------------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------------------------


def test_validate_returns_numpy_with_dtypes_kept():
    X, y = data.validate([[1, 2], [3, 4]], jnp.array([0, 1]), num_classes=2)
    assert isinstance(X, np.ndarray) and X.dtype.kind == "i" and X.shape == (2, 2)
    assert isinstance(y, np.ndarray) and y.dtype == np.int32
    Xf = np.ones((3, 8, 8), np.float32)
    X, y = data.validate(Xf)
    assert X is Xf and y is None
    _, y = data.validate(Xf, np.zeros((3, 2), np.float32))  # regression targets
    assert y.shape == (3, 2)


@pytest.mark.parametrize(
    "bad, match",
    [
        (None, r"X: expected an array of numbers .* got NoneType"),
        ("pixels", r"X: expected an array of numbers .* got str"),
        ({"a": 1}, r"X: expected an array of numbers .* got dict"),
        ([[1, 2], [3]], r"X: expected a rectangular array of numbers, got a list"),
        (np.array([["a", "b"]]), r"X: expected real numbers .* got dtype <U1"),
        (np.ones((2, 2), complex), r"X: expected real numbers .* got dtype complex128"),
    ],
)
def test_validate_rejects_non_arrays(bad, match):
    with pytest.raises(TypeError, match=match):
        data.validate(bad)


def test_validate_rank_and_empty():
    with pytest.raises(ValueError, match=r"X must be at least 2-D .* got shape \(5,\) \(1-D\)\. "
                       r"For n examples of one feature pass X\[:, None\]"):
        data.validate(np.arange(5.0))
    with pytest.raises(ValueError, match=r"X_val must be at least 2-D .* got shape \(\) \(0-D\)"):
        data.validate(3.0, name="X_val")
    with pytest.raises(ValueError, match=r"X is empty: expected at least one row; got shape "
                       r"\(0, 3\)"):
        data.validate(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"X has no features: got shape \(4, 0\)"):
        data.validate(np.zeros((4, 0)))


def test_validate_non_finite():
    X = np.ones((10, 3), np.float32)
    X[2, 1] = np.nan
    X[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"X: expected finite values, got 2 non-finite value\(s\) "
                       r"\(NaN or inf\), the first X\[2, 1\] = nan"):
        data.validate(X)
    y = np.zeros((10, 1))
    y[4, 0] = -np.inf
    with pytest.raises(ValueError, match=r"y_train: expected finite values, .* y_train\[4, 0\] = -inf"):
        data.validate(np.ones((10, 3)), y, y_name="y_train")


def test_validate_lengths():
    with pytest.raises(ValueError, match=r"X has 10 rows but y has 9: expected one target"):
        data.validate(np.ones((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match=r"y must have one entry per row of X .* got a scalar"):
        data.validate(np.ones((10, 2)), 1.0)


def test_validate_labels():
    X = np.ones((10, 2))
    y = np.arange(10)
    y[3] = 10
    y[8] = -1
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 10\); got 2 of 10 "
                       r"outside, the first y\[3\] = 10 \(labels range over \[-1, 10\]\)"):
        data.validate(X, y, num_classes=10)
    with pytest.raises(TypeError, match=r"y must hold integer class labels in \[0, 3\) when "
                       r"num_classes is given; got dtype float32 \(they are whole numbers: "
                       r"pass y.astype\(np.int32\)\)"):
        data.validate(X, np.zeros(10, np.float32), num_classes=3)
    with pytest.raises(TypeError, match=r"got dtype float64$"):
        data.validate(X, np.full(10, 0.5), num_classes=3)
    with pytest.raises(ValueError, match=r"y must be class labels of shape \(10,\) when "
                       r"num_classes is given; got shape \(10, 3\) \(one-hot\? pass "
                       r"y.argmax\(axis=1\)\)"):
        data.validate(X, np.eye(3, dtype=np.int32)[np.arange(10) % 3], num_classes=3)
    with pytest.raises(ValueError, match=r"y must be class labels of shape \(10,\) when "
                       r"num_classes is given; got shape \(10, 1\) \(a column of labels\? pass "
                       r"y.ravel\(\)\)"):
        data.validate(X, np.arange(10)[:, None], num_classes=10)
    with pytest.raises(TypeError, match=r"got dtype float64 \(they are whole numbers: pass "
                       r"y.ravel\(\).astype\(np.int32\)\)"):
        data.validate(X, np.arange(10.0)[:, None], num_classes=10)
    with pytest.raises(ValueError, match=r"num_classes: expected an int >= 1, got 0"):
        data.validate(X, np.zeros(10, int), num_classes=0)
    with pytest.raises(TypeError, match=r"num_classes: expected an int >= 1, got float 2.5"):
        data.validate(X, np.zeros(10, int), num_classes=2.5)


# ---------------------------------------------------------------------------------------------
# standardize, random_split, load_digits
# ---------------------------------------------------------------------------------------------


def test_standardize_uses_training_statistics():
    rng = np.random.default_rng(0)
    X_train = rng.normal(3.0, 2.0, (50, 4)).astype(np.float32)
    X_train[:, 2] = 7.0  # a constant column
    X_test = rng.normal(size=(5, 4)).astype(np.float32)
    (Z_train, Z_test), mean, std = data.standardize(X_train, X_test)
    assert Z_train.dtype == Z_test.dtype == mean.dtype == std.dtype == np.float32
    np.testing.assert_allclose(Z_train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.delete(Z_train.std(0), 2), 1.0, atol=1e-5)
    assert std[2] == 1.0 and np.all(Z_train[:, 2] == 0.0) and np.isfinite(Z_test).all()
    np.testing.assert_allclose(Z_test, (X_test - mean) / std, rtol=1e-5, atol=1e-5)
    tiny = np.linspace(0.0, 1e-9, 8)[:, None]  # a real spread on a small scale is kept
    (Z,), _, std = data.standardize(tiny)
    assert 0 < std[0] < 1e-9
    np.testing.assert_allclose(Z.std(), 1.0, rtol=1e-5)


def test_standardize_images_and_errors():
    X = np.random.default_rng(1).normal(size=(6, 8, 8))
    (Z, E), mean, std = data.standardize(X, np.zeros((0, 8, 8)))
    assert mean.shape == std.shape == (8, 8) and E.shape == (0, 8, 8)
    assert Z.dtype == np.float64  # float64 stays float64
    with pytest.raises(ValueError, match=r"others\[0\] must have the feature shape of X_train, "
                       r"\(8, 8\); got shape \(3, 64\)"):
        data.standardize(X, np.zeros((3, 64)))


@pytest.fixture(scope="module")
def digits_split():
    return data.load_digits(key=jax.random.key(2024), standardize=True)


def test_load_digits_default_is_grey_levels_over_16(digits_split):
    """Standardising the digits makes rarely inked border pixels 20-45 sd: the default is
    grey levels / 16; the older flag keeps what explicit callers got."""
    unit = data.load_digits(key=jax.random.key(2024))
    raw = data.load_digits(key=jax.random.key(2024), standardize=False)
    assert unit.mean is None and unit.std is None
    for (X, y), (Xr, yr), (_, ys) in zip(unit[:3], raw[:3], digits_split[:3]):
        assert X.dtype == np.float32 and 0.0 <= X.min() and X.max() <= 1.0
        np.testing.assert_array_equal(X, Xr / 16)
        np.testing.assert_array_equal(y, yr)
        np.testing.assert_array_equal(y, ys)
    assert raw.train[0].max() == 16.0
    assert np.abs(digits_split.train[0]).max() > 20  # what the README warns about
    same = data.load_digits(key=jax.random.key(2024), inputs="standardize")
    np.testing.assert_array_equal(same.train[0], digits_split.train[0])
    np.testing.assert_array_equal(data.load_digits(key=jax.random.key(2024), inputs="raw")
                                  .test[0], raw.test[0])
    with pytest.raises(ValueError, match=r"inputs must be one of \('unit', 'standardize', "
                       r"'raw'\); got 'scaled'"):
        data.load_digits(key=jax.random.key(0), inputs="scaled")
    with pytest.raises(ValueError, match=r"inputs='unit' and standardize=True disagree"):
        data.load_digits(key=jax.random.key(0), inputs="unit", standardize=True)


def test_load_digits_sizes_and_types(digits_split):
    split = digits_split
    sizes = [len(X) for X, _ in split[:3]]
    assert sizes == [1079, 359, 359]
    for X, y in split[:3]:
        assert X.dtype == np.float32 and X.shape[1:] == (64,)
        assert y.dtype == np.int32 and set(np.unique(y)) == set(range(10))
    assert split.mean.shape == split.std.shape == (64,)
    np.testing.assert_allclose(split.train[0].mean(0), 0.0, atol=1e-5)
    # Stratified: each class's share of each set is within one example of its overall share.
    counts = np.bincount(np.concatenate([y for _, y in split[:3]]))
    for (_, y), size in zip(split[:3], sizes):
        assert np.all(np.abs(np.bincount(y, minlength=10) - counts * size / 1797) < 1.0)
    # Each set comes in random order, not grouped by class.
    y = split.train[1]
    assert np.mean(y[1:] == y[:-1]) < 0.2


def test_digits_read_without_importing_scikit_learn_are_its_arrays(monkeypatch):
    """The CSV reader (no scikit-learn import, a second of start-up) gives load_digits()'s
    values, and a layout it does not know falls back to scikit-learn's loader."""
    import subprocess
    import sys

    from sklearn import datasets

    X, y = data._digits_arrays()
    reference = datasets.load_digits()
    np.testing.assert_array_equal(X, reference.data)
    np.testing.assert_array_equal(y, reference.target)
    monkeypatch.setattr(data, "_DIGITS_SHAPE", (0, 0))  # as if the file had changed
    np.testing.assert_array_equal(data._digits_arrays()[0], reference.data)
    probe = ("import sys; from train import data; import jax; "
             "data.load_digits(key=jax.random.key(0)); print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_load_digits_is_a_partition_and_reproducible(digits_split):
    from sklearn.datasets import load_digits

    raw = data.load_digits(key=jax.random.key(2024), standardize=False)
    assert raw.mean is None and raw.std is None
    for (X, y), (Xs, ys) in zip(raw[:3], digits_split[:3]):
        np.testing.assert_array_equal(y, ys)
        np.testing.assert_allclose((X - digits_split.mean) / digits_split.std, Xs, atol=1e-5)
    X_all = np.concatenate([X for X, _ in raw[:3]])
    full = load_digits().data.astype(np.float32)
    assert X_all.shape == full.shape
    key_rows = lambda A: A[np.lexsort(A.T[::-1])]  # noqa: E731
    np.testing.assert_array_equal(key_rows(X_all), key_rows(full))
    other = data.load_digits(key=jax.random.key(2025), standardize=False)
    assert not np.array_equal(other.test[1], raw.test[1])


def test_standardize_targets_with_training_statistics():
    rng = np.random.default_rng(3)
    y_train = rng.normal(150.0, 77.0, (40, 2)).astype(np.float32)
    y_train[:, 1] = 5.0  # a constant target column
    y_test = rng.normal(150.0, 77.0, (7, 2)).astype(np.float32)
    scaled = data.standardize_targets(y_train, y_test, np.zeros((0, 2)))
    Z_train, Z_test, empty = scaled.arrays
    assert Z_train.dtype == Z_test.dtype == np.float32 and empty.shape == (0, 2)
    np.testing.assert_allclose(Z_train[:, 0].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(Z_train[:, 0].std(), 1.0, atol=1e-5)
    assert scaled.std[1] == 1.0 and np.all(Z_train[:, 1] == 0.0)
    np.testing.assert_allclose(Z_test, (y_test - scaled.mean) / scaled.std, rtol=1e-6)
    np.testing.assert_allclose(scaled.inverse(Z_test), y_test, rtol=1e-5)
    np.testing.assert_allclose(scaled.inverse(jnp.asarray(Z_test)), y_test, rtol=1e-5)
    one = data.standardize_targets(np.array([1.0, 2.0, 3.0]))  # (n,) targets, float64 kept
    assert one.mean.shape == () and one.arrays[0].dtype == np.float64
    with pytest.raises(ValueError, match=r"others\[0\] must have the trailing shape of "
                       r"y_train, \(2,\); got shape \(3,\)"):
        data.standardize_targets(y_train, np.zeros(3))
    with pytest.raises(ValueError, match=r"y_train: expected finite values"):
        data.standardize_targets(np.array([1.0, np.nan]))


def test_target_scale_hint_on_diabetes():
    """Diabetes targets (25..346, std 77.0) make the first SGD steps ~77 times too large:
    raw targets diverge where standardised ones train; the hint says what to do."""
    from sklearn.datasets import load_diabetes

    import train
    from nets import mlp, objective

    X, y = load_diabetes(return_X_y=True)
    X, y = data.standardize(X.astype(np.float32)).arrays[0], y.astype(np.float32)[:, None]
    hint = data.target_scale_hint(y)
    assert hint.startswith("Y has standard deviation 77.0 and mean 152.1: standardise the "
                           "targets (train.data.standardize_targets)")
    assert data.target_scale_hint(y, "y_train").startswith("y_train has")
    assert data.target_scale_hint(data.standardize_targets(y).arrays[0]) is None
    assert data.target_scale_hint(np.full(5, 20.0)) is not None  # |mean| > 10
    assert data.target_scale_hint(np.arange(100)) is None  # integers: class labels
    assert data.target_scale_hint(None) is None

    def loss(p, X, Y):
        return objective.mlp_objective(p, X, Y, activation="relu", loss="squared_error")

    params = mlp.init(jax.random.key(1), (10, 20, 1), scheme="he")
    kw = dict(optimizer=train.sgd(0.01), epochs=3, batch_size=32, key=jax.random.key(2),
              progress=False)
    with pytest.warns(RuntimeWarning):
        raw = train.fit(loss, params, (X, y), **kw)
    assert raw.stop_reason == "non_finite"
    scaled = train.fit(loss, params, (X, data.standardize_targets(y).arrays[0]), **kw)
    assert scaled.stop_reason == "epochs" and scaled.history["loss"][-1] < 1.0


def test_random_split_options():
    X = np.arange(40.0).reshape(20, 2)
    y = np.linspace(0.0, 1.0, 20)  # regression targets: not stratified
    split = data.random_split(X, y, key=jax.random.key(0), val_fraction=0.0,
                              test_fraction=0.25, standardize=False)
    assert [len(s[0]) for s in split[:3]] == [15, 0, 5]
    np.testing.assert_allclose(split.train[0][:, 0] / 2, split.train[1] * 19)  # rows kept
    split = data.random_split(X, key=jax.random.key(0))
    assert split.train[1] is None and split.val[0].shape == (4, 2)
    with pytest.raises(ValueError, match=r"test_fraction must be in \[0, 1\); got 1.0"):
        data.random_split(X, y, key=jax.random.key(0), test_fraction=1.0)
    with pytest.raises(ValueError, match=r"val_fraction: expected a number >= 0, got -0.1"):
        data.random_split(X, y, key=jax.random.key(0), val_fraction=-0.1)
    with pytest.raises(ValueError, match=r"val_fraction \+ test_fraction must be < 1 .* got "
                       r"0.5 \+ 0.5"):
        data.random_split(X, y, key=jax.random.key(0), val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match=r"stratify=True needs 1-D integer class labels y; got "
                       r"dtype float64"):
        data.random_split(X, y, key=jax.random.key(0), stratify=True)


# ---------------------------------------------------------------------------------------------
# ESL 11.6 simulations
# ---------------------------------------------------------------------------------------------

SIMULATIONS = [(data.esl_sum_of_sigmoids, 2), (data.esl_radial, 10)]


@pytest.mark.parametrize("simulate, p", SIMULATIONS)
def test_esl_shapes_and_reproducibility(simulate, p):
    a = simulate(1000, key=jax.random.key(7))
    assert a.X.shape == (1000, p) and a.y.shape == a.f.shape == (1000, 1)
    assert a.X.dtype == a.y.dtype == a.f.dtype == np.float32
    assert isinstance(a.bayes_error, float)
    b = simulate(1000, key=jax.random.key(7))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    c = simulate(1000, key=jax.random.key(8))
    assert not np.array_equal(a.X, c.X) and not np.array_equal(a.y - a.f, c.y - c.f)


@pytest.mark.parametrize("simulate, p", SIMULATIONS)
def test_esl_same_data_with_x64(simulate, p, x64):
    a = simulate(1000, key=jax.random.key(7))
    assert a.X.dtype == np.float32
    with jax.enable_x64(False):
        b = simulate(1000, key=jax.random.key(7))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("simulate, p, tol", [(*SIMULATIONS[0], 0.02), (*SIMULATIONS[1], 0.06)])
def test_esl_signal_to_noise_ratio(simulate, p, tol):
    """Sample Var(f) / Var(eps) is close to 4, and Var(eps) to the stated Bayes error."""
    n = 200_000
    r = simulate(n, key=jax.random.key(11), snr=4.0)
    f = r.f.astype(np.float64)
    eps = r.y.astype(np.float64) - f
    # Relative standard errors: about 0.3% for Var(eps); 0.3% (sigmoids) and 1.3% (radial, a
    # heavy-tailed f) for Var(f).
    assert abs(eps.var() / r.bayes_error - 1.0) < 0.015
    assert abs(f.var() / (4.0 * r.bayes_error) - 1.0) < tol
    assert abs(f.var() / eps.var() / 4.0 - 1.0) < tol + 0.015
    np.testing.assert_allclose(eps.mean(), 0.0, atol=5 * math.sqrt(r.bayes_error / n))


def test_esl_variances_in_closed_form():
    """The moments behind the radial Var(f), by quadrature; the sigmoid Var(f) by a 2-D grid."""
    z, h = np.linspace(-12, 12, 24001, retstep=True)
    phi = np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)
    mean_phi, mean_phi2 = h * np.sum(phi**2), h * np.sum(phi**3)
    np.testing.assert_allclose(mean_phi, 1 / (2 * np.sqrt(np.pi)), rtol=1e-12)
    np.testing.assert_allclose(mean_phi2, 1 / (2 * np.pi * np.sqrt(3)), rtol=1e-12)
    np.testing.assert_allclose(data._radial_variance(10), mean_phi2**10 - mean_phi**20, rtol=1e-10)
    np.testing.assert_allclose(data._radial_variance(10), 3.273000864797707e-11, rtol=1e-12)
    # Sum of sigmoids on a 2-D grid (independent of the 1-D reduction used by the module).
    g, dg = np.linspace(-9, 9, 1201, retstep=True)
    X1, X2 = np.meshgrid(g, g)
    w = np.exp(-0.5 * (X1**2 + X2**2)) / (2 * np.pi) * dg**2
    f = 1 / (1 + np.exp(-3 * (X1 + X2))) + 1 / (1 + np.exp(-3 * (X1 - X2)))
    var_f = np.sum(w * f**2) - np.sum(w * f) ** 2
    np.testing.assert_allclose(data._sum_of_sigmoids_variance(), var_f, rtol=1e-8)
    r = data.esl_sum_of_sigmoids(10, key=jax.random.key(0))
    np.testing.assert_allclose(r.bayes_error, var_f / 4.0, rtol=1e-8)


def test_esl_noise_free_and_bad_arguments():
    r = data.esl_sum_of_sigmoids(10, key=jax.random.key(0), snr=float("inf"))
    assert r.bayes_error == 0.0
    np.testing.assert_array_equal(r.y, r.f)
    with pytest.raises(ValueError, match=r"snr: expected a number > 0, got 0"):
        data.esl_radial(10, key=jax.random.key(0), snr=0)
    with pytest.raises(ValueError, match=r"n: expected an int >= 1, got 0"):
        data.esl_radial(0, key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"n: expected an int >= 1, got float 10.0"):
        data.esl_sum_of_sigmoids(10.0, key=jax.random.key(0))


# ---------------------------------------------------------------------------------------------
# 2-D toy sets
# ---------------------------------------------------------------------------------------------

TOYS = [data.gaussian_mixture, data.spirals, data.moons]


@pytest.mark.parametrize("toy", TOYS)
def test_toy_sets_shapes_and_reproducibility(toy):
    X, y = toy(100, key=jax.random.key(3))
    assert X.shape == (100, 2) and X.dtype == np.float32
    assert y.shape == (100,) and y.dtype == np.int32
    X2, y2 = toy(100, key=jax.random.key(3))
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    X3, _ = toy(100, key=jax.random.key(4))
    assert not np.array_equal(X, X3)


def test_gaussian_mixture_geometry():
    X, y = data.gaussian_mixture(2000, key=jax.random.key(0), modes=6, radius=3.0, std=0.1)
    assert set(np.unique(y)) == set(range(6))
    angle = 2 * np.pi * y / 6
    centres = 3.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    d = X - centres
    np.testing.assert_allclose(d.std(0), 0.1, rtol=0.1)
    assert np.abs(d).max() < 0.6  # 6 standard deviations


def test_spirals_and_moons_geometry():
    X, y = data.spirals(400, key=jax.random.key(0), turns=2.0, noise=0.0)
    assert np.bincount(y).tolist() == [200, 200]
    r = np.linalg.norm(X, axis=1)
    assert r.max() <= 1.0 + 1e-6
    angle = np.arctan2(X[:, 1], X[:, 0])
    expected = 2 * np.pi * 2.0 * r + np.pi * y
    np.testing.assert_allclose(np.cos(angle - expected), 1.0, atol=1e-3)  # on its arm
    X, y = data.moons(400, key=jax.random.key(0), noise=0.0)
    np.testing.assert_allclose(np.linalg.norm(X[y == 0], axis=1), 1.0, atol=1e-6)
    assert np.all(X[y == 0, 1] >= 0)
    np.testing.assert_allclose(np.linalg.norm(X[y == 1] - [1.0, 0.5], axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda k: data.gaussian_mixture(10, key=k, modes=0), ValueError, r"modes: expected an int >= 1"),
        (lambda k: data.gaussian_mixture(10, key=k, std=-1), ValueError, r"std: expected a number >= 0"),
        (lambda k: data.gaussian_mixture(10, key=k, radius=0), ValueError, r"radius: expected a number > 0"),
        (lambda k: data.spirals(10, key=k, turns=0), ValueError, r"turns: expected a number > 0, got 0"),
        (lambda k: data.spirals(10, key=k, noise="x"), TypeError, r"noise: expected a real number"),
        (lambda k: data.moons(0, key=k), ValueError, r"n: expected an int >= 1, got 0"),
        (lambda k: data.moons(10, key=k, noise=float("nan")), ValueError, r"noise: expected a number >= 0"),
    ],
)
def test_toy_sets_bad_arguments(call, err, match):
    with pytest.raises(err, match=match):
        call(jax.random.key(0))


# ---------------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------------

IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
             np.float32: 0x0D, np.float64: 0x0E}


def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype", list(IDX_CODES))
@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_round_trip(tmp_path, dtype, compress):
    arr = (np.arange(24).reshape(2, 3, 4) * 7 - 50).astype(dtype)
    if dtype is np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10
    raw = _idx_bytes(arr, IDX_CODES[dtype])
    path = tmp_path / ("x.idx3.gz" if compress else "x.idx3")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    out = data.load_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_load_idx_labels_file(tmp_path):
    labels = np.array([5, 0, 4, 1, 9], np.uint8)
    (tmp_path / "labels").write_bytes(_idx_bytes(labels, 0x08))
    np.testing.assert_array_equal(data.load_idx(tmp_path / "labels"), labels)


def test_load_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no IDX file at .*missing\.idx"):
        data.load_idx(tmp_path / "missing.idx")
    good = _idx_bytes(np.zeros((4, 5), np.uint8), 0x08)
    cases = {
        "magic": (b"\x01\x00" + good[2:], r"is not an IDX file: its magic number 0x01000802 "
                  r"should start with two zero bytes"),
        "code": (good[:2] + b"\x0a" + good[3:], r"unknown IDX type code 0x0A; expected one of "
                 r"0x08 \(unsigned byte\)"),
        "short": (good[:3], r"truncated IDX header: expected a 4-byte magic number, got 3"),
        "dims": (good[:9], r"truncated IDX header: 2 dimensions need 12 bytes, the file has 9"),
        "data": (good[:-1], r"truncated IDX data: the header says shape \(4, 5\) of unsigned "
                 r"byte \(20 bytes\), the file has 19 bytes after the header"),
        "trailing": (good + b"\x00", r"trailing bytes after IDX data"),
        "gzip": (gzip.compress(good)[:-6], r"corrupt or truncated gzip data"),
    }
    for name, (raw, match) in cases.items():
        path = tmp_path / name
        path.write_bytes(raw)
        with pytest.raises(ValueError, match=match):
            data.load_idx(path)


# ---------------------------------------------------------------------------------------------
# CSV files
# ---------------------------------------------------------------------------------------------


def _write(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_csv_with_header_and_labels(tmp_path):
    path = _write(tmp_path, "x1,x2,label\n1.5,2,0\n\n3,-4e-1,2\n  \n5,6,1\n")
    X, y = data.load_csv(path)
    np.testing.assert_array_equal(X, np.array([[1.5, 2], [3, -0.4], [5, 6]], np.float32))
    assert X.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(y, [0, 2, 1])
    X, y = data.load_csv(path, label_column=0)
    np.testing.assert_array_equal(y, [1.5, 3, 5])
    assert y.dtype == np.float32  # not whole numbers: regression targets
    X, y = data.load_csv(path, label_column=None)
    assert X.shape == (3, 3) and y is None


def test_load_csv_without_header_quotes_and_delimiter(tmp_path):
    X, y = data.load_csv(_write(tmp_path, '1;"2";3\n4;5;6\n'), delimiter=";", label_column=1)
    np.testing.assert_array_equal(X, [[1, 3], [4, 6]])
    np.testing.assert_array_equal(y, [2, 5])
    X, _ = data.load_csv(_write(tmp_path, "\ufeffa,b\n1,2\n"), skip_header=True)
    np.testing.assert_array_equal(X, [[1]])


def test_load_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no CSV file at .*nope\.csv"):
        data.load_csv(tmp_path / "nope.csv")
    cases = [
        ("a,b,c\n1,2,3\n4,5\n", {}, r"line 3: expected 3 columns \(as on line 2\), got 2"),
        ("1,2,3\n\n4,5,6,7\n", {}, r"line 3: expected 3 columns \(as on line 1\), got 4"),
        ("a,b\n1,2\n3,abc\n", {}, r"line 3, column 2: expected a number, got 'abc'"),
        ("1,2\n,4\n", {}, r"line 2, column 1: expected a number, got an empty cell"),
        ("x,2\n1,2\n", {}, r"line 1: mixes numbers and text \('x,2'\), so it is neither "
                           r"clearly a header nor data; pass skip_header=True"),
        ("a,b\n1,2\n", {"skip_header": False}, r"line 1, column 1: expected a number, got 'a'"),
        ("a,b\n\n", {}, r"has no data rows"),
        ("", {}, r"has no data rows"),
        ("1,2\n", {"label_column": 2}, r"label_column=2 is out of range .* with 2 columns"),
        ("1\n2\n", {}, r"has a single column: nothing is left for inputs"),
    ]
    with pytest.raises(TypeError, match=r"label_column must be an int or None; got 'y'"):
        data.load_csv(tmp_path / "nope.csv", label_column="y")
    (tmp_path / "latin1.csv").write_bytes("caf\xe9,1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.csv' is not UTF-8 text"):
        data.load_csv(tmp_path / "latin1.csv")
    for i, (text, kwargs, match) in enumerate(cases):
        path = _write(tmp_path, text, f"bad{i}.csv")
        with pytest.raises(ValueError, match=match):
            data.load_csv(path, **kwargs)


# ---------------------------------------------------------------------------------------------
# Input checks found by a newcomer audit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda k: data.load_digits(key=k),
    lambda k: data.random_split(np.zeros((10, 2)), key=k),
    lambda k: data.esl_sum_of_sigmoids(10, key=k),
    lambda k: data.esl_radial(10, key=k),
    lambda k: data.gaussian_mixture(10, key=k),
    lambda k: data.spirals(10, key=k),
    lambda k: data.moons(10, key=k),
])
def test_int_key_names_key(call):
    with pytest.raises(TypeError, match=r"^key: expected a typed PRNG key from "
                                        r"jax.random.key\(seed\), got int"):
        call(0)


@pytest.mark.parametrize("standardize", [True, False])
def test_random_split_returns_float32_and_int32(standardize):
    """float64 inputs and int64 labels (what np.random gives) come back float32 / int32."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 3, 20)
    split = data.random_split(X, y, key=jax.random.key(1), standardize=standardize)
    for X_s, y_s in split[:3]:
        assert X_s.dtype == np.float32 and y_s.dtype == np.int32
    targets = data.random_split(X, X[:, 0], key=jax.random.key(1)).train[1]
    assert targets.dtype == np.float32  # real targets
    with pytest.raises(ValueError, match=r"y: expected integer labels that fit in int32"):
        data.random_split(X, np.full(20, 2**40), key=jax.random.key(1))


def test_load_csv_refuses_non_finite_cells_and_keeps_int_labels(tmp_path):
    with pytest.raises(ValueError, match=r"line 3, column 1: expected a finite number, got "
                                         r"'NaN' \(2 non-finite cell\(s\) in all"):
        data.load_csv(_write(tmp_path, "x1,x2,label\n1,2,0\nNaN,4,1\n5,6,nan\n"))
    with pytest.raises(ValueError, match=r"line 1, column 3: expected a finite number, got "
                                         r"'-inf'"):
        data.load_csv(_write(tmp_path, "1,2,-inf\n3,4,1\n", "inf.csv"))
    _, y = data.load_csv(_write(tmp_path, "1,2,0\n3,4,1.0\n", "ok.csv"))
    assert y.dtype == np.int32


def test_load_csv_wrong_delimiter_suggests_the_right_one(tmp_path):
    """Read with the wrong delimiter, line 1 would pass for a header; refuse, naming it."""
    with pytest.raises(ValueError, match=r"every line is a single column with delimiter=',', "
                                         r"but every line holds ';' .*; pass delimiter=';'"):
        data.load_csv(_write(tmp_path, "x1;x2;y\n1;2;0\n3;4;1\n"))
    with pytest.raises(ValueError, match=r"pass delimiter='\\t'"):
        data.load_csv(_write(tmp_path, "1\t2\n3\t4\n", "tab.csv"), label_column=None)
    X, _ = data.load_csv(_write(tmp_path, "value\n1\n2\n", "one.csv"), label_column=None)
    assert X.shape == (2, 1)  # a real single-column file


def test_a_first_line_with_missing_cells_is_data_and_named_and_decimal_commas_get_a_hint(
        tmp_path):
    path = tmp_path / "missing.csv"
    path.write_text("1,,0\n3,4,1\n")
    with pytest.raises(ValueError, match=r"line 1, column 2: expected a number, got an empty "
                                         r"cell"):
        data.load_csv(path)
    path = tmp_path / "comma.csv"
    path.write_text("1,5;2,5;0\n3,5;4,5;1\n")
    with pytest.raises(ValueError, match=r"line 1: mixes numbers and text .*is the delimiter "
                                         r"';', with decimal commas\?"):
        data.load_csv(path)


def test_an_idx_header_with_too_many_dimensions_is_named(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(bytes([0, 0, 8, 255]) + b"\0" * 1020)
    with pytest.raises(ValueError, match=r"bad.idx'?: the IDX header says 255 dimensions"):
        data.load_idx(path)
