"""nets.gradcheck.check_directional: jax.grad against central differences along random unit
directions, per leaf, in float64. It passes a right gradient, replays from its key, and
catches a wrong one: an autodiff rule that drops a product-rule term (a custom_vjp), and a
reference that drops a term on one leaf. Also the compiled coordinate-wise check
(``check(..., jit=True)``)."""

import contextlib
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import gradcheck, mlp

TOL = 1e-6


@jax.custom_vjp
def _z_exp_z_dropped(z):
    return z * jnp.exp(z)


def _fwd(z):
    return z * jnp.exp(z), z


def _bwd(z, g):
    return (g * jnp.exp(z),)  # d/dz (z e^z) = (1 + z) e^z: the "z e^z" term dropped


_z_exp_z_dropped.defvjp(_fwd, _bwd)


def _objective(g):
    def objective(p, X, Y):
        z = X @ p["w"] + p["b"]  # (n,)
        return jnp.mean((g(z) - Y) ** 2)

    return objective


right = _objective(lambda z: z * jnp.exp(z))
wrong = _objective(_z_exp_z_dropped)


def _problem():
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=5) / 3, "b": np.asarray(0.3)}
    return params, rng.normal(size=(6, 5)), rng.normal(size=6)


def _reference(p, X, Y):
    """The gradient of ``right`` by hand (NumPy): ``dR/dz_i = 2 (g(z_i) - y_i) / n * (1 + z_i)
    e^z_i``."""
    p, X, Y = jax.tree.map(np.asarray, (p, X, Y))
    z = X @ p["w"] + p["b"]
    delta = 2 * (z * np.exp(z) - Y) / X.shape[0] * (1 + z) * np.exp(z)
    return {"w": X.T @ delta, "b": np.sum(delta)}


def test_right_gradient_passes_and_replays_from_its_key():
    params, X, Y = _problem()
    key = jax.random.key(3)
    report = gradcheck.check_directional(right, params, X, Y, key=key, directions=3,
                                         reference=_reference)
    assert [r.checked for r in report.rows] == [3, 3]  # leaves "b" (scalar) and "w"
    assert report.worst <= TOL, report.table()
    again = gradcheck.check_directional(right, params, X, Y, key=key, directions=3,
                                        reference=_reference)
    assert again == report


def test_a_dropped_autodiff_term_is_caught():
    """A custom_vjp whose rule drops half the product rule: jax.grad is wrong, and the
    directional differences say so on every leaf."""
    params, X, Y = _problem()
    report = gradcheck.check_directional(wrong, params, X, Y, key=jax.random.key(4))
    assert all(r.autodiff_vs_fd > 1e-2 for r in report.rows), report.table()


def test_a_reference_dropping_a_term_on_one_leaf_is_caught():
    params, X, Y = _problem()

    def no_bias(p, X, Y):
        return {**_reference(p, X, Y), "b": np.zeros(())}

    report = gradcheck.check_directional(right, params, X, Y, key=jax.random.key(5),
                                         reference=no_bias)
    rows = {r.path: r for r in report.rows}
    assert rows["['b']"].reference_vs_fd > 1e-2 and rows["['b']"].autodiff_vs_reference > 1e-2
    assert rows["['b']"].autodiff_vs_fd <= TOL and rows["['w']"].reference_vs_fd <= TOL


def test_compiled_coordinate_check_passes_right_and_catches_wrong():
    """check(..., jit=True), the whole-program path the gradcheck experiment takes for
    models: a right gradient and reference pass, the dropped autodiff term is caught."""
    params, X, Y = _problem()
    report = gradcheck.check(right, params, X, Y, reference=_reference, jit=True)
    assert report.worst <= TOL and [r.checked for r in report.rows] == [1, 5]
    assert gradcheck.check(wrong, params, X, Y, jit=True).worst > 1e-2


def test_bad_arguments_are_clear_errors():
    params, X, Y = _problem()
    with pytest.raises(TypeError, match="key: expected a typed PRNG key"):  # a legacy raw key
        gradcheck.check_directional(right, params, X, Y, key=jax.random.key_data(jax.random.key(0)))
    with pytest.raises(ValueError, match=r"directions: expected an int >= 1, got 0"):
        gradcheck.check_directional(right, params, X, Y, key=jax.random.key(0), directions=0)


def test_a_model_is_refused_before_anything_is_compiled():
    """Once "'Model' object is not callable", after 16 small compilations."""
    model = mlp.model((5, 3, 2))
    params, _ = jax.eval_shape(model.init, jax.random.key(0))
    message = (r"^objective: expected a function objective\(params, X, Y\), got Model; for a "
               r"Model use nets.objective.make\(model\)$")
    with jax.log_compiles(True), _no_compiles() as compiled:
        for call in (lambda: gradcheck.check(model, params, np.ones((2, 5)), np.zeros(2, int)),
                     lambda: gradcheck.check_directional(model, params, np.ones((2, 5)),
                                                         np.zeros(2, int), key=jax.random.key(0))):
            with pytest.raises(TypeError, match=message):
                call()
    assert not compiled
    with pytest.raises(TypeError, match=r"^objective: expected a function .*, got str$"):
        gradcheck.check("loss", params, np.ones((2, 5)), np.zeros(2, int))


@contextlib.contextmanager
def _no_compiles():
    """The XLA compilations logged inside (with ``jax.log_compiles``)."""
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


def test_the_table_prints_a_dash_where_there_is_no_reference():
    """Once `nan` in the ad~ref and ref~fd columns; the rows keep NaN (None in to_dict)."""
    params, X, Y = _problem()
    report = gradcheck.check_directional(right, params, X, Y, key=jax.random.key(7))
    lines = report.table().splitlines()
    assert "nan" not in report.table()
    for line in lines[2:]:
        cells = line.split()
        assert cells[-3] == "-" and cells[-1] == "-" and float(cells[-2]) <= TOL, line
    assert np.isnan(report.rows[0].autodiff_vs_reference)
    assert report.to_dict()[0]["reference_vs_fd"] is None
    with_reference = gradcheck.check_directional(right, params, X, Y, key=jax.random.key(7),
                                                 reference=_reference)
    assert all(float(v) <= TOL for v in with_reference.table().splitlines()[2].split()[-3:])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"eps": 0.0}, ValueError, r"^eps: expected a finite number > 0, got 0.0$"),
    ({"eps": -1e-6}, ValueError, r"^eps: expected a finite number > 0, got -1e-06$"),
    ({"eps": float("inf")}, ValueError, r"^eps: expected a finite number > 0, got inf$"),
    ({"eps": "1e-6"}, TypeError, r"^eps: expected a real number, got str"),
    ({"max_coords": 0}, ValueError,
     r"^max_coords: expected an int >= 1 \(or None: every coordinate\), got 0$"),
    ({"max_coords": -1}, ValueError, r"^max_coords: expected an int >= 1 .*, got -1$"),
    ({"max_coords": 2.0}, TypeError, r"^max_coords: expected an int >= 1 .*, got float 2.0$"),
])
def test_eps_and_max_coords_are_checked_before_anything_runs(kwargs, error, match):
    """eps = 0 divided by zero, eps < 0 blamed `floor`, max_coords = -1 was a NumPy error and
    max_coords = 0 checked no coordinate yet read as a pass: each is now a clear error, from
    every entry point that takes it (the MLP's too)."""
    params, X, Y = _problem()
    calls = [lambda: gradcheck.check(right, params, X, Y, **kwargs),
             lambda: gradcheck.check_mlp([{"W": np.ones((2, 5)), "b": np.zeros(2)}], X,
                                         np.arange(6) % 2, **kwargs)]
    if "eps" in kwargs:
        calls += [lambda: gradcheck.check_directional(right, params, X, Y, key=jax.random.key(0),
                                                      **kwargs),
                  lambda: gradcheck.finite_differences(jnp.sum, jnp.ones(2), **kwargs)]
    for call in calls:
        with pytest.raises(error, match=match):
            call()


class _Unhashable:
    """A callable objective that cannot be hashed (an eq dataclass, say)."""

    __hash__ = None

    def __call__(self, p, X, Y):
        return right(p, X, Y)


def test_an_unhashable_objective_is_checked_too():
    params, X, Y = _problem()
    report = gradcheck.check_directional(_Unhashable(), params, X, Y, key=jax.random.key(6))
    assert report.worst <= TOL, report.table()
