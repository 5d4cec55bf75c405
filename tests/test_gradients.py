"""Gradient correctness first: jax.grad == hand-derived backprop == central differences.

Every activation x every loss x depths 1 and 3 hidden layers (and every loss at depth 0, where
no activation is applied), without a penalty and with each penalty, in float64 at relative
error <= 1e-6; and proof that the check has teeth: a chain-rule term dropped on purpose is
caught.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import activations, backprop, gradcheck, losses, mlp, objective, penalties

TOL = 1e-6
DEPTHS = {0: (4, 3), 1: (4, 5, 3), 3: (4, 5, 4, 3, 3)}
PENALTY_CASES = {
    "none": dict(),
    "l2": dict(l2=0.3),
    "l1": dict(penalties={"l1": 0.05}),
    "weight_elimination": dict(penalties={"weight_elimination": 0.2}),
    "all": dict(l2=0.1, penalties={"l1": 0.02, "weight_elimination": 0.1}),
}


def _problem(key, sizes, loss, n=6):
    """A batch whose targets suit ``loss`` (the output width adapts to the loss)."""
    if loss == "binary_cross_entropy":
        sizes = sizes[:-1] + (1,)
    kp, kx, ky = jax.random.split(key, 3)
    for attempt in range(20):  # redraw until no hidden layer is dead on the whole batch
        params = mlp.init(jax.random.fold_in(kp, attempt), sizes, scheme="esl", scale=0.9)
        X = np.asarray(jax.random.normal(jax.random.fold_in(kx, attempt), (n, sizes[0])))
        zs, _ = backprop.forward(params, X, "relu")
        if all(np.any(np.asarray(z) > 0, axis=0).any() for z in zs[:-1]):
            break
    if loss == "cross_entropy":
        Y = np.arange(n) % sizes[-1]
    elif loss == "binary_cross_entropy":
        Y = (np.arange(n) % 2).astype(np.float64)
    else:
        Y = np.asarray(jax.random.normal(ky, (n, sizes[-1])))
    return params, X, Y


# Without a hidden layer (depth 0) no activation is applied: one case per loss there.
GRID = [(g, loss, depth) for depth in sorted(DEPTHS) for loss in sorted(losses.LOSSES)
        for g in (sorted(activations.ACTIVATIONS) if depth else ["sigmoid"])]


@pytest.mark.parametrize("activation, loss, depth", GRID)
def test_three_gradients_agree(activation, loss, depth, key):
    params, X, Y = _problem(key, DEPTHS[depth], loss)
    for case, kw in PENALTY_CASES.items():
        report = gradcheck.check_mlp(params, X, Y, activation=activation, loss=loss, **kw)
        assert report.worst <= TOL, f"{case}:\n{report.table()}"
        assert all(r.checked == int(np.prod(r.shape)) for r in report.rows)


def test_per_layer_activations_agree(key):
    params, X, Y = _problem(key, DEPTHS[3], "cross_entropy")
    report = gradcheck.check_mlp(params, X, Y, activation=("tanh", "relu", "softplus"), l2=0.1)
    assert report.worst <= TOL, report.table()


def test_probability_targets_agree(key):
    params, X, _ = _problem(key, DEPTHS[1], "cross_entropy")
    P = np.asarray(jax.nn.softmax(jax.random.normal(key, (X.shape[0], 3))))
    assert gradcheck.check_mlp(params, X, P, activation="elu").worst <= TOL


def _broken(monkeypatch, registry, name, **fields):
    monkeypatch.setitem(registry, name, registry[name]._replace(**fields))


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softplus", "elu"])
def test_dropping_activation_derivative_is_caught(activation, monkeypatch, key):
    """Drop g'(z) from the back-propagation equation: backprop disagrees, autodiff does not."""
    params, X, Y = _problem(key, DEPTHS[1], "cross_entropy")
    _broken(monkeypatch, activations.ACTIVATIONS, activation, grad=jnp.ones_like)
    report = gradcheck.check_mlp(params, X, Y, activation=activation)
    hidden = report.rows[0]  # first layer's W: its gradient passes through g'
    assert hidden.autodiff_vs_reference > 1e-2 and hidden.reference_vs_fd > 1e-2
    assert hidden.autodiff_vs_fd <= TOL  # autodiff itself stays right
    assert report.rows[-1].autodiff_vs_reference <= TOL  # the output layer is unaffected


@pytest.mark.parametrize("penalty", ["l2", "l1", "weight_elimination"])
def test_dropping_penalty_gradient_is_caught(penalty, monkeypatch, key):
    params, X, Y = _problem(key, DEPTHS[1], "squared_error")
    zero = lambda p: jax.tree.map(jnp.zeros_like, p)  # noqa: E731
    _broken(monkeypatch, penalties.PENALTIES, penalty, grad=zero)
    kw = dict(l2=0.3) if penalty == "l2" else dict(penalties={penalty: 0.3})
    assert gradcheck.check_mlp(params, X, Y, activation="tanh", **kw).worst > 1e-2


def test_dropping_loss_derivative_term_is_caught(monkeypatch, key):
    """Softmax - onehot without the softmax term (a classic slip) is caught."""
    params, X, Y = _problem(key, DEPTHS[0], "cross_entropy")
    slip = lambda z, y: -jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype)  # noqa: E731
    _broken(monkeypatch, losses.LOSSES, "cross_entropy", grad=slip)
    assert gradcheck.check_mlp(params, X, Y).worst > 1e-2


def test_dropping_bias_gradient_is_caught(x64, key):
    """A reference whose first-layer bias gradient is lost is caught by the generic check."""
    params, X, Y = _problem(key, DEPTHS[1], "cross_entropy")

    def no_bias(p, x, y):
        g = backprop.grad_unchecked(p, x, y, activation="sigmoid")
        g[0]["b"] = jnp.zeros_like(g[0]["b"])
        return g

    report = gradcheck.check(lambda p, x, y: objective.mlp_objective(p, x, y), params, X, Y,
                             reference=no_bias)
    assert report.rows[1].path == "[0]['b']" and report.rows[1].reference_vs_fd > 1e-2
    assert report.rows[1].autodiff_vs_fd <= TOL


def test_check_any_model_without_reference(x64):
    """gradcheck.check works for any objective: a quadratic with a known gradient."""
    A = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    obj = lambda p, X, Y: 0.5 * p["x"] @ A @ p["x"] + jnp.sum(X) * p["x"][0]  # noqa: E731
    report = gradcheck.check(obj, {"x": jnp.array([1.0, -2.0])}, jnp.ones(3), jnp.zeros(3))
    assert report.worst <= 1e-8 and np.isnan(report.rows[0].autodiff_vs_reference)
    assert "ad~fd" in report.table()


def test_subset_of_coordinates(key):
    params, X, Y = _problem(key, (6, 20, 3), "cross_entropy")
    report = gradcheck.check_mlp(params, X, Y, max_coords=10)
    assert [r.checked for r in report.rows] == [10, 10, 10, 3]
    assert report.worst <= TOL


def test_relative_error_is_scale_free():
    a = np.array([1e-3, 2e-3])
    assert gradcheck.relative_error(a, a * (1 + 1e-4)) == pytest.approx(1e-4, rel=1e-3)
    assert gradcheck.relative_error(np.zeros(2), np.zeros(2)) == 0.0


def test_relative_error_is_per_element():
    """An error on a small entry is not divided by the leaf's largest entry (which read
    5e-8 here); below ``floor`` entries are compared absolutely, in units of the floor."""
    assert gradcheck.relative_error([1e3, 1e-4], [1e3, 5e-5]) == pytest.approx(0.5)
    assert gradcheck.relative_error([1e3, 1e-4], [1e3, 5e-5], floor=1e-2) == pytest.approx(5e-3)
    assert gradcheck.relative_error([1.0, 1e-13], [1.0, 0.0], floor=1e-2) <= 1e-10
    with pytest.raises(ValueError, match=r"floor: expected a number >= 0, got -1"):
        gradcheck.relative_error([1.0], [1.0], floor=-1)


def _two_scale_objective(p, X, Y):
    """R = 1e3 w0 + 5e-5 (w1 + w1^2): at w1 = 0.5 the gradient is (1e3, 1e-4)."""
    w = p["w"]
    return 1e3 * w[0] + 5e-5 * (w[1] + w[1] ** 2)


def test_dropped_term_on_a_small_entry_is_caught(x64):
    """Teeth on one leaf with gradient entries 1e3 and 1e-4: a reference that drops the
    w1^2 term's derivative on the small coordinate (giving 5e-5 for 1e-4) is caught. Scaled
    by the leaf's largest entry the error read 5e-8 and passed at 1e-6."""

    def dropped(p, X, Y):
        return {"w": jnp.array([1e3, 5e-5])}  # d/dw1 of 5e-5 w1^2 is missing

    params = {"w": jnp.array([0.0, 0.5])}
    report = gradcheck.check(_two_scale_objective, params, jnp.ones(1), jnp.ones(1),
                             reference=dropped)
    np.testing.assert_allclose(jax.grad(_two_scale_objective)(params, None, None)["w"],
                               [1e3, 1e-4], rtol=1e-12)
    row = report.rows[0]
    assert row.autodiff_vs_fd <= TOL  # autodiff itself is right
    assert row.autodiff_vs_reference > 1e-3 and row.reference_vs_fd > 1e-3, report.table()
    assert report.worst > TOL


def test_default_floor_follows_the_objective(x64):
    """The floor is 1e-2 max(1, |R|): entries far below the difference quotient's rounding
    noise pass (a leaf whose true gradient is zero), and a given floor is used as is."""
    obj = lambda p, X, Y: 1e4 + jnp.sum(p["x"] ** 2) + 0.0 * jnp.sum(p["dead"])  # noqa: E731
    params = {"x": jnp.array([1.0, -2.0]), "dead": jnp.ones(3)}
    report = gradcheck.check(obj, params, jnp.ones(1), jnp.ones(1))
    assert report.floor == pytest.approx(1e-2 * (1e4 + 5.0))
    assert report.worst <= TOL, report.table()
    assert gradcheck.check(obj, params, jnp.ones(1), jnp.ones(1), floor=0.5).floor == 0.5
    with pytest.raises(ValueError, match=r"floor: expected a finite number >= 0 \(or None\), "
                       r"got -1.0"):
        gradcheck.check(obj, params, jnp.ones(1), jnp.ones(1), floor=-1.0)


def test_objective_is_the_note_formula(x64, key):
    """(1/n) sum L + l2/2 ||W||^2 + sum lambda_j J_j, computed by hand."""
    params, X, Y = _problem(key, DEPTHS[1], "cross_entropy")
    params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), params)
    Z = np.asarray(jax.jit(jax.vmap(mlp.apply, in_axes=(None, 0)))(params, jnp.asarray(X)))
    mean_loss = np.mean([np.log(np.sum(np.exp(z))) - z[y] for z, y in zip(Z, Y)])
    W2 = sum(float(np.sum(np.asarray(layer["W"]) ** 2)) for layer in params)
    W1 = sum(float(np.sum(np.abs(np.asarray(layer["W"])))) for layer in params)
    value = objective.mlp_objective(params, X, Y, l2=0.3, penalties={"l1": 0.1})
    assert float(value) == pytest.approx(mean_loss + 0.3 * 0.5 * W2 + 0.1 * W1, rel=1e-12)
