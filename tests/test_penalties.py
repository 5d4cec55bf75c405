"""Penalties on stacked parameters: a sweep's result carries a leading model axis, so its
biases have two axes; ``stacked=1`` keeps them out of the weight mask and the penalties."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nets import mlp, penalties


@pytest.fixture
def stack(key):
    """Five MLPs (4, 3, 2) stacked on a leading model axis: W (5, n_out, n_in), b (5, n_out); ESL init for non-zero biases."""
    return jax.vmap(lambda k: mlp.init(k, (4, 3, 2), scheme="esl"))(jax.random.split(key, 5))


def test_stacked_weight_mask_leaves_biases_out(stack):
    assert stack[0]["b"].shape == (5, 3)  # a bias with two axes
    assert penalties.weight_mask(stack, stacked=1) == [{"W": True, "b": False}] * 2
    assert penalties.weight_mask(stack[0:1], stacked=0) == [{"W": True, "b": True}]  # as before
    one = jax.tree.map(lambda v: v[0], stack)
    assert penalties.weight_mask(one) == [{"W": True, "b": False}] * 2


@pytest.mark.parametrize("name", ["l2", "l1", "weight_elimination"])
def test_stacked_penalties_are_per_model(stack, name):
    """One value per model, equal to the penalty of each model alone (biases untouched)."""
    fn = getattr(penalties, name)
    per_model = fn(stack, stacked=1)
    assert per_model.shape == (5,)
    np.testing.assert_allclose(per_model, jax.vmap(fn)(stack), rtol=1e-6)
    W_only = [{"W": layer["W"]} for layer in stack]
    np.testing.assert_allclose(per_model, jax.vmap(fn)(W_only), rtol=1e-6)
    assert float(fn(stack)) != pytest.approx(float(jnp.sum(per_model)))  # biases counted


def test_stacked_total(stack):
    spec = {"l2": 0.3, "l1": 0.1}
    total = penalties.total(stack, spec, stacked=1)
    expected = jax.vmap(lambda p: penalties.total(p, spec))(stack)
    assert total.shape == (5,)
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    lams = jnp.linspace(0.0, 1.0, 5)  # a lambda per model
    np.testing.assert_allclose(penalties.total(stack, [("l2", lams)], stacked=1),
                               lams * penalties.l2(stack, stacked=1), rtol=1e-6)
    assert penalties.total(stack, None, stacked=1).shape == ()


def test_stacked_mask_in_optax(stack):
    """As optax's mask: decayed weights, untouched biases."""
    decay = optax.add_decayed_weights(0.5, mask=functools.partial(penalties.weight_mask,
                                                                  stacked=1))
    zeros = jax.tree.map(jnp.zeros_like, stack)
    updates, _ = decay.update(zeros, decay.init(stack), stack)
    np.testing.assert_allclose(updates[0]["W"], 0.5 * stack[0]["W"])
    np.testing.assert_array_equal(updates[0]["b"], 0.0)


def test_stacked_errors(stack):
    with pytest.raises(TypeError, match=r"stacked: expected the number of leading model axes, "
                       r"an int >= 0, got -1"):
        penalties.weight_mask(stack, stacked=-1)
    with pytest.raises(TypeError, match=r"got True"):
        penalties.l2(stack, stacked=True)
    with pytest.raises(ValueError, match=r"params\[0\]\['b'\]: expected at least 3 axes "
                       r"\(stacked=3\), got shape \(5, 3\)"):
        penalties.l2(stack, stacked=3)
    ragged = [{"W": stack[0]["W"], "b": stack[0]["b"][:4]}]
    with pytest.raises(ValueError, match=r"params\[0\]\['b'\]: expected leading model axes "
                       r"\(5,\) like params\[0\]\['W'\] \(stacked=1\), got shape \(4, 3\)"):
        penalties.weight_mask(ragged, stacked=1)


def test_l1_gradient_at_zero_is_the_subgradient_zero():
    """jax.grad of sum |W| at W = 0 is sign(0) = 0, as the hand-derived gradient and central
    differences give (jnp.abs differentiates to 1 there: a zero weight was pushed to -lr
    lambda, then back, every step)."""
    params = [{"W": jnp.array([[0.0, 1.5], [-2.0, 0.0]]), "b": jnp.zeros(2)}]
    auto = jax.grad(penalties.l1)(params)[0]["W"]
    hand = penalties.get("l1").grad(params)[0]["W"]
    np.testing.assert_array_equal(auto, [[0.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_array_equal(hand, auto)
    assert float(penalties.l1(params)) == 3.5


def test_the_penalty_keeps_the_params_precision_under_x64(x64):
    """float32 params and data give a float32 objective with x64 on (a float64 zero used to
    widen it, so Newton's method refused float32 params); float64 params stay float64."""
    from nets import objective
    net = mlp.model((2, 4, 2))
    params, _ = net.init(jax.random.key(1))
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    p64 = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    X, y = jnp.ones((5, 2), jnp.float32), jnp.zeros(5, jnp.int32)
    for spec in (None, {"l2": 1e-3}):
        obj = objective.make(net, "cross_entropy", spec)
        assert obj(p32, X, y).dtype == jnp.float32
        assert obj(p64, X.astype(jnp.float64), y).dtype == jnp.float64
        assert penalties.total(p32, spec).dtype == jnp.float32
