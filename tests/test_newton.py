"""Newton's method (train/newton.py): oracle, iteration counts against gradient descent,
scikit-learn's logistic regression, damping on an indefinite MLP Hessian, failure modes."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from sklearn.linear_model import LogisticRegression

from nets import mlp
from nets.objective import mlp_objective
from train import newton as newton_module
from train.newton import (
    STATUSES,
    NewtonState,
    logistic_regression_objective,
    newton,
    newton_init,
    newton_step,
    newton_update,
)


def _logistic_data(seed, n=200):
    """Correlated, unevenly scaled features; labels drawn from the model (not separable)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)) * np.array([3.0, 1.0, 0.3, 1.0, 0.5])
    X[:, 3] += 0.8 * X[:, 1]  # correlated columns: a badly conditioned Hessian
    w = rng.normal(size=5)
    p = 1.0 / (1.0 + np.exp(-(X @ w + 0.3)))
    y = (rng.random(n) < p).astype(float)  # label noise from the model itself
    return X, y


def _zeros(d):
    return {"w": jnp.zeros(d), "b": jnp.zeros(())}


L2 = 1e-3  # ridge penalty of the shared logistic regression


@pytest.fixture(scope="module")
def logistic():
    """``(X, y, objective)`` in float64, shared so that the tests reuse one compiled loop.

    The seed is derived from this fixture's name, as conftest's ``key`` is from a test's."""
    with jax.enable_x64(True):
        X, y = _logistic_data(zlib.crc32(b"tests/test_newton.py::logistic"))
        return X, y, logistic_regression_objective(X, y, L2)


def _x_minus_log_x(x):
    """Convex, minimum 1 at x = 1, NaN for x < 0, where the full Newton step from 3 lands."""
    return jnp.sum(x - jnp.log(x))


def test_newton_step_solves_a_quadratic_exactly(key, x64):
    ka, kb, kx = jax.random.split(key, 3)
    M = jax.random.normal(ka, (6, 6))
    A = M @ M.T + 0.5 * jnp.eye(6)  # symmetric positive definite
    b = jax.random.normal(kb, (6,))

    def quadratic(x):  # 1/2 x^T A x - b^T x
        return 0.5 * x @ A @ x - b @ x

    x0 = jax.random.normal(kx, (6,))
    x1 = newton_step(quadratic, x0)
    np.testing.assert_allclose(x1, jnp.linalg.solve(A, b), rtol=0, atol=1e-10)

    # Damped: x0 - (A + mu I)^{-1} (A x0 - b).
    mu = 0.3
    expected = x0 - jnp.linalg.solve(A + mu * jnp.eye(6), A @ x0 - b)
    np.testing.assert_allclose(newton_step(quadratic, x0, damping=mu), expected, rtol=0,
                               atol=1e-10)


def test_newton_needs_far_fewer_iterations_than_gradient_descent(logistic, x64):
    X, y, objective = logistic
    l2, tol = L2, 1e-6

    res = newton(objective, _zeros(5), tol=tol)
    assert res.converged, res.message
    assert res.iterations < 15
    assert res.history.grad_norm[-1] <= tol < res.history.grad_norm[-2]

    # Gradient descent with the fixed step 1/L, L >= the largest Hessian eigenvalue anywhere:
    # (1/4) lambda_max(X1^T X1 / n) + l2, with X1 = [X, 1] for the intercept.
    X1 = np.hstack([X, np.ones((len(X), 1))])
    L = 0.25 * np.linalg.eigvalsh(X1.T @ X1 / len(X)).max() + l2
    flat, unravel = ravel_pytree(_zeros(5))
    grad = jax.grad(lambda v: objective(unravel(v)))
    cap = 20_000

    @jax.jit
    def gradient_descent(x):
        def cond(c):
            return (jnp.linalg.norm(grad(c[0])) > tol) & (c[1] < cap)

        return jax.lax.while_loop(cond, lambda c: (c[0] - grad(c[0]) / L, c[1] + 1), (x, 0))

    x_gd, gd_iterations = gradient_descent(flat)
    assert int(gd_iterations) > 200  # 1/L is a safe step, so this is GD at its best
    assert int(gd_iterations) > 20 * res.iterations
    assert float(objective(unravel(x_gd))) == pytest.approx(res.value, abs=1e-10)  # same optimum


def test_logistic_regression_optimum_matches_scikit_learn(logistic, x64):
    X, y, objective = logistic
    n, l2 = len(X), L2
    res = newton(objective, _zeros(5), tol=1e-10)
    assert res.converged, res.message

    # scikit-learn minimises C sum_i loss_i + (1/2)||w||^2 = n C [mean loss + (l2/2)||w||^2].
    sk = LogisticRegression(C=1.0 / (n * l2), solver="newton-cholesky", tol=1e-12,
                            max_iter=1000).fit(X, y)
    np.testing.assert_allclose(res.params["w"], sk.coef_[0], rtol=0, atol=1e-4)
    np.testing.assert_allclose(res.params["b"], sk.intercept_[0], rtol=0, atol=1e-4)


def test_damping_keeps_steps_descending_on_an_indefinite_mlp_hessian(key, x64):
    kx, kp = jax.random.split(key)
    X = jax.random.normal(kx, (20, 2))
    Y = jnp.sin(2 * X[:, 0]) + X[:, 1] ** 2 - 1
    params = mlp.init(kp, (2, 4, 1), dtype=jnp.float64)  # 17 parameters

    def objective(p):
        return mlp_objective(p, X, Y, activation="tanh", loss="squared_error", l2=1e-3)

    flat, unravel = ravel_pytree(params)

    @jax.jit
    def value_grad_hessian(v):
        def f(v):
            return objective(unravel(v))

        return f(v), jax.grad(f)(v), jax.hessian(f)(v)

    f0, g0, H0 = value_grad_hessian(flat)
    assert np.linalg.eigvalsh(H0).min() < 0  # plain Newton may head for a saddle or a max
    # With this test's key, the undamped Newton step even increases f (2.2 -> 21.3).
    assert value_grad_hessian(flat - jnp.linalg.solve(H0, g0))[0] > f0

    res = newton(objective, params, tol=1e-6, max_iter=200)
    assert res.converged, res.message
    objective_values = res.history.objective
    assert np.all(np.diff(objective_values) < 0)  # every accepted step decreased f
    assert res.history.damping[1] > 0  # the first step needed damping
    assert np.all(np.isfinite(ravel_pytree(res.params)[0]))
    assert np.linalg.eigvalsh(value_grad_hessian(ravel_pytree(res.params)[0])[2]).min() > 0


@pytest.mark.parametrize("line_search", [True, False])
def test_non_finite_trial_points_are_never_accepted(x64, line_search):
    objective = _x_minus_log_x
    assert not np.isfinite(objective(jnp.array([3.0]) - 6.0))  # the full Newton step from 3
    res = newton(objective, jnp.array([3.0]), tol=1e-9, line_search=line_search)
    assert res.converged, res.message
    np.testing.assert_allclose(res.params, [1.0], atol=1e-8)
    assert np.all(np.isfinite(res.history.objective))
    assert np.all(np.diff(res.history.objective) <= 0)


def test_non_finite_gradient_stops_and_keeps_the_last_finite_params(x64):
    # Finite everywhere, but the gradient is 0 * inf = NaN at the minimiser x = 1.
    def objective(x):
        return jnp.sum((x - 1.0) ** 2 + 0.0 * jnp.sqrt(jnp.abs(x - 1.0)))

    res = newton(objective, jnp.array([3.0]))
    assert res.status == "non-finite" and not res.converged
    assert "not finite" in res.message
    np.testing.assert_array_equal(res.params, [3.0])
    assert res.iterations == 0 and res.value == 4.0


def test_too_little_damping_reports_stalled_and_keeps_params(x64):
    # From x = 3 every step with mu <= 0.01 lands where x - log x is NaN: no acceptable step.
    res = newton(_x_minus_log_x, jnp.array([3.0]), line_search=False, max_damping=0.01)
    assert res.status == "stalled" and not res.converged and res.iterations == 0
    assert "max_damping=0.01" in res.message and res.damping == 0.01
    np.testing.assert_array_equal(res.params, [3.0])


def test_step_loop_matches_compiled_loop_and_caps_iterations(logistic, x64):
    _, _, objective = logistic

    res = newton(objective, _zeros(5), tol=1e-10, max_iter=3)
    assert res.status == "max_iter" and not res.converged and res.iterations == 3
    assert len(res.history.objective) == 4 and "max_iter=3" in res.message

    state = newton_init(objective, _zeros(5))
    assert isinstance(state, NewtonState)
    values = [float(state.value)]
    for _ in range(3):
        state = newton_update(objective, state, tol=1e-10)
        values.append(float(state.value))
    assert int(state.iteration) == 3 and STATUSES[int(state.status)] == "running"
    np.testing.assert_allclose(values, res.history.objective, rtol=1e-12)
    np.testing.assert_allclose(ravel_pytree(state.params)[0], ravel_pytree(res.params)[0],
                               rtol=1e-12)

    while STATUSES[int(state.status)] == "running":
        state = newton_update(objective, state, tol=1e-10)
    assert STATUSES[int(state.status)] == "converged" and float(state.grad_norm) <= 1e-10
    again = newton_update(objective, state, tol=1e-10)  # a no-op once converged
    assert int(again.iteration) == int(state.iteration)


def _quadratic(p):
    return jnp.sum(p["w"] ** 2) + p["b"] ** 2


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"params": {"w": np.array([1.0, np.nan]), "b": np.zeros(())}}, ValueError,
         r"params\['w'\]: expected finite initial values, got nan at index \(1,\)"),
        ({"params": {"w": np.array([1, 2]), "b": np.zeros(())}}, TypeError,
         r"params\['w'\]: expected float32 or float64 parameters, got dtype int"),
        ({"params": {"w": jnp.ones(2, jnp.float16), "b": jnp.zeros(())}}, TypeError,
         r"params\['w'\]: expected float32 or float64 parameters, got dtype float16"),
        ({"max_iter": 0}, ValueError, r"max_iter: expected an int >= 1, got 0"),
        ({"max_iter": 2.5}, TypeError, r"max_iter: expected an int >= 1, got float 2.5"),
        ({"tol": 0.0}, ValueError, r"tol: expected a positive finite tolerance, got 0.0"),
        ({"tol": -1e-8}, ValueError, r"tol: expected a positive finite tolerance, got -1e-08"),
        ({"damping": -1.0}, ValueError, r"damping: expected a finite damping >= 0, got -1.0"),
        ({"objective": lambda p: p["w"]}, ValueError,
         r"objective: expected a scalar output, got shape \(2,\)"),
        ({"objective": lambda p: jnp.log(p["b"] - 1.0)}, ValueError,
         r"objective: expected a finite value at the initial params, got nan"),
        ({"max_params": 2}, ValueError,
         r"params: expected at most max_params=2 parameters .* got P=3"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, error, match):
    args = {"objective": _quadratic, "params": {"w": jnp.ones(2), "b": jnp.zeros(())}}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        newton(args.pop("objective"), args.pop("params"), **args)


def test_bad_inputs_to_newton_step_and_logistic_regression():
    with pytest.raises(ValueError, match=r"params: expected finite initial values, got inf"):
        newton_step(_quadratic, jnp.array([jnp.inf]))
    with pytest.raises(ValueError, match=r"damping: expected a finite damping >= 0, got nan"):
        newton_step(_quadratic, {"w": jnp.ones(2), "b": jnp.zeros(())}, damping=float("nan"))
    X = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 1\], got values in "
                                         r"\[0.0, 2.0\]"):
        logistic_regression_objective(X, np.array([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match=r"y: expected 4 labels of shape \(4,\)"):
        logistic_regression_objective(X, np.zeros(3))
    with pytest.raises(ValueError, match=r"l2: expected a finite penalty >= 0, got -0.1"):
        logistic_regression_objective(X, np.zeros(4), l2=-0.1)
    with pytest.raises(ValueError, match=r"X: expected a 2-D array, got shape \(4,\)"):
        logistic_regression_objective(np.zeros(4), np.zeros(4))


def test_hyperparameters_do_not_recompile(logistic, x64):
    _, _, objective = logistic
    newton(objective, _zeros(5))  # compiled here or by an earlier test
    compiled = newton_module._run._cache_size()
    for kwargs in [{"tol": 1e-3, "max_iter": 5}, {"damping": 2.0, "armijo": 0.3, "grow": 3.0},
                   {"shrink": 0.5, "backtrack": 0.7, "max_damping": 1e5, "max_iter": 60}]:
        assert newton(objective, _zeros(5), **kwargs).converged
    assert newton_module._run._cache_size() == compiled


def test_params_missing_a_key_name_the_params():
    """Logistic regression's params without "b", or of the wrong shape: a ValueError naming
    the params and the expected keys (not a bare KeyError); the same for any objective."""
    objective = logistic_regression_objective(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match=r'^params: expected the keys of \{"w": \(2,\), "b": '
                                         r"\(\)\} for logistic regression, got a dict with keys "
                                         r"\['w'\]"):
        newton(objective, {"w": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"^params\['w'\]: expected shape \(2,\) .* got shape "
                                         r"\(3,\)"):
        newton_step(objective, {"w": jnp.zeros(3), "b": jnp.zeros(())})
    with pytest.raises(ValueError, match=r"^params: the objective reads the entry 'b', which "
                                         r"params lacks \(params has keys \['w'\]\)"):
        newton_init(_quadratic, {"w": jnp.ones(2)})


def test_float64_objective_with_float32_params_names_both_dtypes():
    """An objective built under jax.enable_x64 (a float64 value) and float32 params: a
    TypeError naming params and both dtypes before compiling, not a while_loop carry error;
    newton_step carries no value, so it still steps."""
    params = {"w": jnp.zeros(2), "b": jnp.zeros(())}  # float32: made with x64 off
    with jax.enable_x64(True):
        objective = logistic_regression_objective(np.eye(2), np.array([0.0, 1.0]))
        for run in (newton, newton_init):
            with pytest.raises(TypeError, match=r"^params: expected float64 arrays, the dtype "
                                                r"of the objective's value .* got float32"):
                run(objective, params)


def test_calls_inside_jit_or_vmap_are_refused_before_compiling():
    """An objective closing over a traced value (one fit per data set under jax.vmap), one
    that needs a traced value concretely, and newton under jax.jit with nothing traced: the
    "do not call it inside jax.jit or jax.vmap" TypeError, not a ConcretizationTypeError."""
    inside = r"do not call it inside jax.jit or jax.vmap"
    with pytest.raises(TypeError, match=r"^objective: expected a function of concrete values, "
                                        r"got one that closes over a value traced .*" + inside):
        jax.vmap(lambda a: newton(lambda p: jnp.sum((p - a) ** 2), jnp.zeros(2)).params)(
            jnp.ones(3))
    with pytest.raises(TypeError, match=r"^objective: expected a function JAX can trace.*"
                                        + inside):
        jax.vmap(lambda a: newton_step(lambda p: jnp.sum((p - int(a)) ** 2), jnp.zeros(2)))(
            jnp.ones(3))
    with pytest.raises(TypeError, match=r"^newton: expected to be called on concrete values.*"
                                        + inside):
        jax.jit(lambda: newton_init(lambda p: jnp.sum(p ** 2), np.zeros(2)).value)()


def test_newton_step_on_a_singular_hessian_raises_instead_of_returning_inf():
    with pytest.raises(ValueError, match=r"^damping: expected a damping that makes H \+ damping "
                                         r"I non-singular at params, got 0: the Newton step has "
                                         r"2 non-finite entries"):
        newton_step(lambda p: jnp.sum(p), jnp.zeros(2))  # linear: H = 0
    np.testing.assert_allclose(newton_step(lambda p: jnp.sum(p), jnp.zeros(2), damping=2.0),
                               [-0.5, -0.5])


def test_an_objective_unbounded_below_ends_non_finite_not_max_iter():
    """-sum(w^2): the iterates grow until the gradient's norm overflows float32 while its
    entries are still finite; that is the non-finite status, with the last finite params."""
    from train import newton as N
    r = N.newton(lambda p: -jnp.sum(p["w"] ** 2), {"w": jnp.ones(3)}, max_iter=200)
    assert r.status == "non-finite"
    assert np.isfinite(r.grad_norm) and np.all(np.isfinite(np.asarray(r.params["w"])))


def test_a_starting_damping_above_its_cap_and_untyped_options_are_refused():
    f = lambda q: jnp.sum((q - 3.0) ** 2)  # noqa: E731
    with pytest.raises(ValueError, match=r"damping: expected at most max_damping=0.5 .*got 1"):
        newton_module.newton(f, jnp.zeros(2), damping=1.0, max_damping=0.5)
    with pytest.raises(TypeError, match=r"line_search: expected a bool, got str 'no'"):
        newton_module.newton(f, jnp.zeros(2), line_search="no")
    with pytest.raises(TypeError, match=r"max_params: expected an int >= 1 or None, got float"):
        newton_module.newton(f, jnp.zeros(2), max_params=1.5)
