"""The MLP's forward pass, initialisation, losses and penalties; bad input; jit == no-jit."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import activations, backprop, gradcheck, losses, mlp, objective, penalties

NUMPY_G = {
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
    "softplus": lambda z: np.log1p(np.exp(z)),
    "identity": lambda z: z,
}


@pytest.mark.parametrize("activation", sorted(activations.ACTIVATIONS))
def test_forward_is_the_note_formula(activation, key, x64):
    """z^(k) = W^(k-1) a^(k-1) + b, a^(k) = g(z^(k)), computed by NumPy loops."""
    params = mlp.init(key, (5, 7, 4, 3), scheme="esl", scale=1.5, dtype=jnp.float64)
    x = np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (5,)))
    a = x
    Ws = [np.asarray(layer["W"]) for layer in params]
    bs = [np.asarray(layer["b"]) for layer in params]
    for k, (W, b) in enumerate(zip(Ws, bs)):
        z = np.array([sum(W[i, j] * a[j] for j in range(W.shape[1])) + b[i] for i in range(W.shape[0])])
        a = z if k == len(Ws) - 1 else NUMPY_G[activation](z)
    np.testing.assert_allclose(mlp.apply(params, x, activation=activation), a, rtol=1e-12, atol=1e-12)
    p = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
    np.testing.assert_allclose(mlp.predict(params, x, activation=activation), p, rtol=1e-12)


def test_batches_through_vmap_equal_the_batched_backprop_forward(key):
    params = mlp.init(key, (4, 6, 3))
    X = jax.random.normal(key, (9, 4))
    Z = jax.vmap(lambda x: mlp.apply(params, x, activation="tanh"))(X)
    zs, _ = backprop.forward(params, X, "tanh")
    chex.assert_trees_all_close(Z, zs[-1], atol=1e-6)


def test_init_shapes_and_schemes(key):
    sizes = (64, 100, 10)
    for scheme in mlp.INITS:
        params = mlp.init(key, sizes, scheme=scheme)
        assert [(p["W"].shape, p["b"].shape) for p in params] == [((100, 64), (100,)), ((10, 100), (10,))]
        assert mlp.sizes_of(params) == sizes
    esl = mlp.init(key, sizes, scheme="esl")
    assert all(float(jnp.max(jnp.abs(leaf))) <= 0.7 for leaf in jax.tree.leaves(esl))
    he = mlp.init(key, (400, 300, 2), scheme="he")
    assert float(jnp.std(he[0]["W"])) == pytest.approx(np.sqrt(2 / 400), rel=0.05)  # fan-in = n_in
    assert float(jnp.abs(he[0]["b"]).max()) == 0.0
    chex.assert_trees_all_equal(mlp.init(key, sizes), mlp.init(key, sizes))


def test_depth_zero_is_a_linear_model(key):
    params = mlp.init(key, (3, 2))
    x = jnp.array([1.0, -2.0, 0.5])
    chex.assert_trees_all_close(mlp.apply(params, x), params[0]["W"] @ x + params[0]["b"], atol=1e-7)


def test_per_layer_activations(key):
    params = mlp.init(key, (3, 4, 4, 2))
    x = jnp.ones(3)
    z1 = params[0]["W"] @ x + params[0]["b"]
    z2 = params[1]["W"] @ jnp.tanh(z1) + params[1]["b"]
    expected = params[2]["W"] @ jax.nn.relu(z2) + params[2]["b"]
    chex.assert_trees_all_close(mlp.apply(params, x, activation=("tanh", "relu")), expected, atol=1e-6)


def test_custom_activation_function(key):
    params = mlp.init(key, (3, 4, 2))
    x = jnp.ones(3)
    swish = lambda z: z * jax.nn.sigmoid(z)  # noqa: E731
    g = activations.get(swish)
    chex.assert_trees_all_close(g.grad(jnp.array([0.3, -1.0])),
                                jax.vmap(jax.grad(swish))(jnp.array([0.3, -1.0])), atol=1e-6)
    assert mlp.apply(params, x, activation=swish).shape == (2,)
    X, y = np.ones((3, 3)), np.array([0, 1, 1])
    assert gradcheck.check_mlp(params, X, y, activation=swish).worst < 1e-6


def test_dropout(key):
    params = mlp.init(key, (20, 50, 3))
    x = jnp.ones(20)
    same = mlp.apply(params, x, drop_rate=0.0)
    chex.assert_trees_all_equal(same, mlp.apply(params, x))
    a, b = (mlp.apply(params, x, drop_rate=0.5, key=jax.random.key(s)) for s in (1, 2))
    assert not np.allclose(a, b)
    # inverted dropout keeps the expected hidden activation: average over many masks
    keys = jax.random.split(key, 4000)
    mean = jnp.mean(jax.vmap(lambda k: mlp.apply(params, x, drop_rate=0.5, key=k))(keys), 0)
    chex.assert_trees_all_close(mean, same, atol=0.1)


def test_dropout_rate_can_be_traced(key):
    """A sweep over drop rates under jax.vmap: one program (was TracerBoolConversionError)."""
    params = mlp.init(key, (20, 50, 3))
    x = np.ones(20, np.float32)
    rates = jnp.array([0.0, 0.5])
    Z = jax.jit(jax.vmap(lambda r: mlp.apply(params, x, drop_rate=r, key=key)))(rates)
    chex.assert_trees_all_close(Z[0], mlp.apply(params, x), atol=1e-6)  # rate 0: no dropout
    assert not np.allclose(Z[1], Z[0], atol=1e-3)
    with pytest.raises(ValueError, match=r"key: dropout with an array \(possibly traced\) drop_rate needs a PRNG key"):
        mlp.apply(params, x, drop_rate=jnp.array(0.5))


class TestLosses:
    def test_cross_entropy_stable_and_correct(self):
        z = jnp.array([1000.0, 0.0, -1000.0])
        assert float(losses.cross_entropy(z, 0)) == 0.0
        assert float(losses.cross_entropy(z, 1)) == pytest.approx(1000.0)
        z = jnp.array([0.2, -0.1, 0.4])
        p = np.exp(z) / np.exp(z).sum()
        assert float(losses.cross_entropy(z, 2)) == pytest.approx(-np.log(p[2]), rel=1e-6)
        assert float(losses.cross_entropy(z, jnp.array([0.0, 0.0, 1.0]))) == pytest.approx(-np.log(p[2]), rel=1e-6)

    def test_binary_cross_entropy_stable(self):
        assert np.isfinite(float(losses.binary_cross_entropy(jnp.array([500.0]), 0.0)))
        assert float(losses.binary_cross_entropy(jnp.array([0.0]), 1.0)) == pytest.approx(np.log(2))

    def test_squared_error(self):
        assert float(losses.squared_error(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0]))) == 5.0

    def test_unknown_loss(self):
        with pytest.raises(ValueError, match=r"loss: expected one of .*'cross_entropy'.* got 'hinge'"):
            losses.get("hinge")


class TestPenalties:
    def test_weights_only(self):
        params = [{"W": jnp.array([[1.0, -2.0]]), "b": jnp.array([5.0])}]
        assert float(penalties.l2(params)) == 2.5
        assert float(penalties.l1(params)) == 3.0
        assert float(penalties.weight_elimination(params)) == pytest.approx(0.5 + 0.8)
        assert penalties.weight_mask(params) == [{"W": True, "b": False}]

    def test_l2_gradient_is_lambda_W(self, key):
        params = mlp.init(key, (3, 4, 2))
        g = jax.grad(lambda p: 0.3 * penalties.l2(p))(params)
        for layer, gl in zip(params, g):
            chex.assert_trees_all_close(gl["W"], 0.3 * layer["W"], atol=1e-7)
            chex.assert_trees_all_close(gl["b"], jnp.zeros_like(layer["b"]), atol=0)

    def test_bad_penalty_spec(self):
        with pytest.raises(ValueError, match=r"penalties: expected names in .* got 'l3'"):
            penalties.terms({"l3": 1.0})
        with pytest.raises(ValueError, match=r"penalties\['l1'\]: expected a finite lambda >= 0, got -1"):
            penalties.terms({"l1": -1.0})
        with pytest.raises(TypeError, match="penalties: expected"):
            penalties.terms([0.1])


class TestBadInput:
    def test_sizes(self, key):
        with pytest.raises(ValueError, match=r"sizes: expected at least 2 layer widths .* got \(64,\)"):
            mlp.init(key, (64,))
        with pytest.raises(ValueError, match=r"sizes: expected every width to be an int >= 1, got sizes\[1\] = 0"):
            mlp.init(key, (64, 0, 10))
        with pytest.raises(TypeError, match="sizes: expected a sequence"):
            mlp.init(key, 64)
        with pytest.raises(ValueError, match=r"scheme: expected one of .* got 'xavier'"):
            mlp.init(key, (2, 2), scheme="xavier")

    def test_x_shape(self, key):
        params = mlp.init(key, (4, 3, 2))
        with pytest.raises(ValueError, match=r"x: expected one example of shape \(4,\), got shape \(5,\)"):
            mlp.apply(params, jnp.ones(5))
        with pytest.raises(ValueError, match=r"got shape \(8, 4\) \(a batch\? use jax.vmap"):
            mlp.apply(params, jnp.ones((8, 4)))
        with pytest.raises(ValueError, match=r"x: expected one example of shape \(4,\), got shape \(\)"):
            jax.jit(mlp.apply)(params, jnp.ones(()))  # raised while tracing, before compiling

    def test_activation_name(self, key):
        params = mlp.init(key, (4, 3, 2))
        with pytest.raises(ValueError, match=r"activation: expected one of \['elu', .*\] or a function, got 'gelu'"):
            mlp.apply(params, jnp.ones(4), activation="gelu")
        with pytest.raises(TypeError, match="activation: expected a name"):
            activations.get(3)
        with pytest.raises(ValueError, match=r"activation: expected one activation per hidden layer \(1\), got 2"):
            mlp.apply(params, jnp.ones(4), activation=("tanh", "relu"))

    def test_params_structure(self, key):
        params = mlp.init(key, (4, 3, 2))
        with pytest.raises(ValueError, match=r"params\[1\]\['W'\]: expected 3 input columns"):
            mlp.apply([params[0], {"W": jnp.ones((2, 5)), "b": jnp.ones(2)}], jnp.ones(4))
        with pytest.raises(TypeError, match=r"params\[0\]: expected a dict with keys 'W' and 'b'"):
            mlp.apply([{"w": 1}], jnp.ones(4))

    def test_dropout_arguments(self, key):
        params = mlp.init(key, (4, 3, 2))
        with pytest.raises(ValueError, match=r"key: dropout with drop_rate > 0 needs a PRNG key"):
            mlp.apply(params, jnp.ones(4), drop_rate=0.5)
        with pytest.raises(ValueError, match=r"drop_rate: expected a probability in \[0, 1\), got 1.0"):
            mlp.apply(params, jnp.ones(4), drop_rate=1.0, key=key)

    def test_backprop_values(self, key):
        params = mlp.init(key, (4, 3, 2))
        X, y = np.ones((5, 4)), np.array([0, 1, 0, 1, 1])
        with pytest.raises(ValueError, match=r"x: expected finite values, got nan at index \(2, 1\)"):
            backprop.grad(params, np.where(np.arange(20).reshape(5, 4) == 9, np.nan, X), y)
        with pytest.raises(ValueError, match=r"y: expected class labels in \[0, 2\), got values in \[0, 2\]"):
            backprop.grad(params, X, np.array([0, 1, 2, 1, 1]))
        with pytest.raises(ValueError, match=r"y: expected 5 targets \(one per row of x\), got shape \(4,\)"):
            backprop.grad(params, X, y[:4])
        with pytest.raises(ValueError, match=r"x: expected shape \(n, 4\), got \(5, 3\)"):
            backprop.grad(params, X[:, :3], y)
        with pytest.raises(ValueError, match=r"x: expected a 2-D array, got shape \(4,\)"):
            backprop.grad(params, X[0], y)
        with pytest.raises(TypeError, match=r"y: expected integer class labels, got dtype float64"):
            backprop.grad(params, X, y.astype(float))
        with pytest.raises(ValueError, match=r"l2: expected a finite lambda >= 0, got -0.1"):
            backprop.grad(params, X, y, l2=-0.1)
        with pytest.raises(ValueError, match=r"binary cross-entropy needs 1 output unit, the network has 2"):
            backprop.grad(params, X, y.astype(float), loss="binary_cross_entropy")
        with pytest.raises(ValueError, match=r"y: expected real targets of shape \(5, 2\), got shape \(5,\)"):
            backprop.grad(params, X, y.astype(float), loss="squared_error")
        bad = [{"W": params[0]["W"].at[0, 0].set(jnp.inf), "b": params[0]["b"]}, params[1]]
        with pytest.raises(ValueError, match=r"params\[0\]\['W'\]: expected finite values, got inf"):
            backprop.grad(bad, X, y)

    def test_gradcheck_values(self, key):
        params = mlp.init(key, (4, 3, 2))
        X, y = np.ones((5, 4)), np.array([0, 1, 0, 1, 1])
        with pytest.raises(ValueError, match=r"y: expected class labels in \[0, 2\), got values in \[-1, 1\]"):
            gradcheck.check_mlp(params, X, np.array([0, 1, -1, 1, 1]))
        with pytest.raises(ValueError, match=r"x: expected finite values, got inf"):
            gradcheck.check_mlp(params, np.full((5, 4), np.inf), y)
        with pytest.raises(ValueError, match=r"params/X: expected finite values"):
            gradcheck.check(lambda p, a, b: jnp.sum(p), jnp.array([np.nan]), X, y)


class TestJit(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_and_no_jit_agree(self):
        _jit_case(self.variant)


def _jit_case(variant):
    key = jax.random.key(7)
    params = mlp.init(key, (4, 5, 3))
    X = jax.random.normal(key, (6, 4))
    y = jnp.array([0, 1, 2, 0, 1, 2])

    @variant
    def forward_and_objective(p, X, y):
        Z = jax.vmap(lambda x: mlp.apply(p, x, activation="elu"))(X)
        return Z, objective.mlp_objective(p, X, y, activation="elu", l2=0.1, penalties={"l1": 0.01})

    Z, value = forward_and_objective(params, X, y)
    Z_ref = jax.vmap(lambda x: mlp.apply(params, x, activation="elu"))(X)
    chex.assert_trees_all_close(Z, Z_ref, atol=1e-6, rtol=1e-6)
    assert np.isfinite(float(value))


def test_default_init_is_scaled_by_fan_in_not_esl_uniform(key):
    """Defect: the default was ESL's uniform [-0.7, 0.7] at every width, so a 1000-wide layer
    started with pre-activations of standard deviation ~13 (94.7% against 97.1% test accuracy
    on digits for a scikit-learn user's setting)."""
    params = mlp.init(key, (1000, 300, 10))
    W = np.asarray(params[0]["W"])
    np.testing.assert_allclose(W.std(), np.sqrt(2.0 / 1300), rtol=0.05)  # Glorot
    assert not np.any(np.asarray(params[0]["b"]))
    esl = mlp.init(key, (1000, 300, 10), scheme="esl")
    np.testing.assert_allclose(np.asarray(esl[0]["W"]).std(), 0.7 / np.sqrt(3), rtol=0.05)


def test_scale_without_the_esl_scheme_is_an_error(key):
    """scale is ESL's half-width: with the (Glorot) default it would be silently ignored."""
    with pytest.raises(ValueError, match=r"scale: the half-width applies to scheme='esl' only"):
        mlp.init(key, (4, 3, 2), scale=0.9)
