"""Model: the MLP composed from layers equals nets.mlp; batch_apply's per-example keys and
batch statistics; the model objective (dropout per example, traced rates, model state,
penalties); metrics; clear errors before tracing."""

import zlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nets import Model, count_params, metrics, mlp, objective, penalties
from nets import layers as L


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def blobs(rng, n=12, d=5, classes=3):
    X = rng.normal(size=(n, d)).astype(np.float32)
    return X, (np.arange(n) % classes).astype(np.int32)


# Shared by the tests (with batches of blobs' shape), so their compiled programs are reused.
DROP = mlp.model((5, 16, 3), drop_rate=0.5)
PLAIN = mlp.model((5, 16, 3))


class TestMLPFromLayers:
    @pytest.mark.parametrize("activation", ["tanh", ("relu", "sigmoid")])
    def test_outputs_and_gradients_equal_nets_mlp(self, key, rng, activation):
        net = mlp.model((5, 7, 4, 3), activation=activation)
        params, state = net.init(key)
        as_list = mlp.from_layers(params)
        X, y = blobs(rng)
        layered = objective.make(net, "cross_entropy", {"l2": 0.1})

        @jax.jit  # both sides in one program: eagerly every op compiles by itself
        def both(params, as_list):
            Z = net.batch_apply(params, X)[0]
            Z_mlp = jax.vmap(lambda x: mlp.apply(as_list, x, activation=activation))(X)
            mlp_obj = lambda p: objective.mlp_objective(p, X, y, activation=activation, l2=0.1)  # noqa: E731
            return (Z, layered(params, X, y), jax.grad(layered)(params, X, y)), (
                Z_mlp, mlp_obj(as_list), jax.grad(mlp_obj)(as_list))

        (Z, value, g), (Z_mlp, value_mlp, g_mlp) = both(params, as_list)
        np.testing.assert_allclose(Z, Z_mlp, rtol=1e-6, atol=1e-6)
        assert float(value) == pytest.approx(float(value_mlp), rel=1e-6)
        chex.assert_trees_all_close(mlp.from_layers(g), g_mlp, rtol=1e-6, atol=1e-6)

    def test_converters_round_trip_and_esl_init(self, key):
        params, state = DROP.init(key)
        assert len(params) == 4  # Dense, g, Dropout, Dense
        assert count_params(params) == 5 * 16 + 16 + 16 * 3 + 3
        chex.assert_trees_all_equal(mlp.to_layers(mlp.from_layers(params), drop_rate=0.5), params)
        assert mlp.sizes_of(mlp.from_layers(params)) == (5, 16, 3)
        assert DROP.stateful and not PLAIN.stateful
        layered = jax.eval_shape(mlp.model((4, 6, 6, 2)).init, key)[0]
        as_list = jax.eval_shape(lambda k: mlp.init(k, (4, 6, 6, 2)), key)
        assert jax.tree.structure(layered) == jax.tree.structure(mlp.to_layers(as_list))
        params, _ = mlp.model((3, 50, 2), scheme="esl").init(key)
        assert max(np.abs(p).max() for p in jax.tree.leaves(params)) <= 0.7
        assert np.abs(params[0]["b"]).max() > 0  # ESL draws the biases too


class TestModel:
    def cnn(self):
        return Model(L.serial(L.Conv2D(3, 3), L.BatchNorm(), L.Relu(), L.MaxPool(2),
                              L.Flatten(), L.Dropout(0.5), L.Dense(4)), (6, 6, 1))

    def test_shapes_and_state(self, key, rng):
        model = self.cnn()
        assert model.output_shape == (4,) and model.stateful
        params, state = model.init(key)
        assert params[0]["W"].shape == (3, 3, 1, 3)
        assert jax.tree.map(jnp.shape, state[1]) == {"mean": (3,), "var": (3,)}
        assert float(state[5]["drop_rate"]) == 0.5
        X = rng.normal(size=(8, 6, 6, 1)).astype(np.float32)
        Z, new = model.batch_apply(params, X, state=state, train=True, key=key)
        assert Z.shape == (8, 4)
        chex.assert_trees_all_equal_structs(new, state)
        assert not np.allclose(new[1]["mean"], state[1]["mean"])  # running stats moved
        P = model.predict(params, X, state=state)
        np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-5)

    def test_apply_one_example_equals_batch_apply(self, key, rng):
        params, state = DROP.init(key)
        X, _ = blobs(rng)
        z = jax.jit(lambda p, x: DROP.apply(p, x, state=state, train=False))(params, X[0])
        np.testing.assert_allclose(z, DROP.batch_apply(params, X, state=state, train=False)[0][0],
                                   rtol=1e-6, atol=1e-6)

    def test_hashable_and_equal_for_the_same_layer(self):
        layer = L.serial(L.Dense(3))
        a, b = Model(layer, (4,)), Model(layer, [4])
        assert a == b and hash(a) == hash(b) and a.input_shape == (4,)
        assert Model(L.serial(L.Dense(3)), (4,)) != a
        assert a.metric(metrics.error_rate) == b.metric(metrics.error_rate)

    def test_batch_norm_through_batch_apply(self, key, rng):
        model = Model(L.serial(L.Dense(3), L.BatchNorm(momentum=0.5)), (2,), "identity")
        params, state = model.init(key)
        X = rng.normal(size=(10, 2)).astype(np.float32) + 3
        Z, new = model.batch_apply(params, X, state=state, train=True)
        H = X @ np.asarray(params[0]["W"]).T + np.asarray(params[0]["b"])
        np.testing.assert_allclose(Z, (H - H.mean(0)) / np.sqrt(H.var(0) + 1e-5), rtol=1e-3,
                                   atol=1e-4)
        np.testing.assert_allclose(new[1]["mean"], 0.5 * H.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new[1]["var"], 0.5 + 0.5 * H.var(0), rtol=1e-5)
        Z_eval, same = model.batch_apply(params, X, state=new, train=False)
        np.testing.assert_allclose(
            Z_eval, (H - new[1]["mean"]) / np.sqrt(new[1]["var"] + 1e-5), rtol=1e-4, atol=1e-5)
        chex.assert_trees_all_equal(same, new)
        with pytest.raises(ValueError, match="through Model.batch_apply or jax.vmap"):
            model.apply(params, X[0], state=state, train=True)

    def test_dropout_masks_differ_across_the_batch(self, key):
        model = Model(L.serial(L.Dropout(0.5)), (200,), "identity")
        params, state = model.init(key)
        ones = np.ones((4, 200), np.float32)
        Z, _ = model.batch_apply(params, ones, state=state, train=True, key=key)
        masks = {np.asarray(z > 0).tobytes() for z in Z}
        assert len(masks) == 4
        np.testing.assert_array_equal(model.batch_apply(params, ones, state=state, train=False)[0],
                                      ones)


class TestErrors:
    def test_shapes_named_before_tracing(self, key):
        model = mlp.model((4, 5, 3))
        params, _ = jax.eval_shape(model.init, key)
        with pytest.raises(ValueError, match=r"X: expected a batch of shape \(n, 4\), got shape \(4,\)"):
            model.batch_apply(params, np.ones(4))
        with pytest.raises(ValueError, match=r"X: expected a batch of shape \(n, 4\), got shape \(3, 5\)"):
            model.predict(params, np.ones((3, 5)))
        with pytest.raises(ValueError, match=r"x: expected one example of shape \(4,\), got shape \(2, 4\) \(a batch\? use model.batch_apply\)"):
            model.apply(params, np.ones((2, 4)))
        with pytest.raises(ValueError, match=r"params: expected the structure of model.init's params"):
            model.apply(mlp.from_layers(params), np.ones(4))

    def test_missing_or_wrong_state(self, key):
        model = DROP
        params, state = model.init(key)
        with pytest.raises(ValueError, match=r"state: this model carries state .* got None"):
            model.batch_apply(params, np.ones((2, 5)))
        with pytest.raises(ValueError, match=r"state: expected the structure of model.init's state"):
            model.batch_apply(params, np.ones((2, 5)), state=())
        with pytest.raises(ValueError, match="key: Dropout in train mode needs a PRNG key"):
            model.batch_apply(params, np.ones((2, 5)), state=state, train=True)
        with pytest.raises(ValueError, match=r"model_state: this model carries state"):
            objective.make(model)(params, np.ones((2, 5)), np.zeros(2, int))
        with pytest.raises(ValueError, match=r"model_state: this model carries state"):
            model.metric(metrics.error_rate)(params, np.ones((2, 5)), np.zeros(2, int))

    def test_a_model_with_state_has_no_default_mode(self, key):
        """Once: batch_apply(..., key=k) of a Dropout model evaluated (train=False) silently,
        whatever the key."""
        params, state = DROP.init(key)
        X = np.ones((4, 5), np.float32)
        refused = (r"^train: this model carries state at state\[2\] \(Dropout, BatchNorm or a "
                   r"layer of your own\); pass train=True for a training step or train=False to "
                   r"evaluate")
        for call in (lambda: DROP.batch_apply(params, X, state=state, key=key),
                     lambda: DROP.batch_apply(params, X, state=state),
                     lambda: DROP.apply(params, X[0], state=state, key=key),
                     lambda: DROP.apply_with_state(params, X[0], state=state, train=None)):
            with pytest.raises(TypeError, match=refused):
                call()
        Z, _ = DROP.batch_apply(params, X, state=state, train=False, key=key)  # explicit: fine
        P = DROP.predict(params, X, state=state)  # predict and metrics evaluate
        np.testing.assert_allclose(P, jax.nn.softmax(Z), rtol=1e-5, atol=1e-6)
        p, _ = PLAIN.init(key)  # without state: an omitted train is evaluation
        np.testing.assert_array_equal(PLAIN.batch_apply(p, X, key=key)[0],
                                      PLAIN.batch_apply(p, X, train=False)[0])

    def test_construction(self):
        with pytest.raises(ValueError, match=r"input_shape: Dense expects a vector; put Flatten\(\) before it"):
            Model(L.serial(L.Dense(3)), (2, 2)).output_shape
        with pytest.raises(ValueError, match=r"output: expected one of .* got 'tanh'"):
            Model(L.Dense(3), (2,), output="tanh")
        with pytest.raises(TypeError, match=r"layer: expected a Layer"):
            Model("dense", (2,))
        with pytest.raises(ValueError, match=r"input_shape: Model expected a tuple of positive ints"):
            Model(L.Dense(3), 4)


class TestObjective:
    def test_contract(self, key, rng):
        params, state = DROP.init(key)
        X, y = blobs(rng)
        f = objective.make(DROP, "cross_entropy")
        assert f.takes_key is True

        @jax.jit
        def values(params, key):
            loss, new = f(params, X, y, key=key, train=True, model_state=state)
            evaluation, _ = f(params, X, y, key=key, train=False, model_state=state)
            as_list = mlp.from_layers(params)
            expected = objective.mlp_objective(as_list, X, y, activation="relu")
            stateless = objective.make(PLAIN)(mlp.to_layers(as_list), X, y)
            return loss, new, evaluation, expected, stateless

        loss, new, evaluation, expected, stateless = values(params, key)
        assert loss.shape == () and jax.tree.structure(new) == jax.tree.structure(state)
        assert float(evaluation) == pytest.approx(float(expected), rel=1e-6)  # no dropout
        assert float(stateless) == pytest.approx(float(expected), rel=1e-6)
        assert float(loss) != pytest.approx(float(evaluation), rel=1e-3)

    def test_one_mask_per_example(self, key):
        """The old make(apply_fn) vmapped a captured key: one mask for the whole batch."""
        model = Model(L.serial(L.Dropout(0.5), L.Dense(1, bias=False)), (100,), "identity")
        _, state = model.init(key)
        params = ((), {"W": np.ones((1, 100), np.float32)})
        X, Y = np.ones((8, 100), np.float32), np.zeros((8, 1), np.float32)
        f = objective.make(model, "squared_error")

        @jax.jit
        def kept_and_loss(key):
            Z, _ = model.batch_apply(params, X, state=state, train=True, key=key)
            return Z[:, 0], f(params, X, Y, key=key, train=True, model_state=state)[0]

        kept, loss = kept_and_loss(key)
        assert len(set(np.asarray(kept).tolist())) > 1  # masks differ across examples
        assert float(loss) == pytest.approx(float(np.mean(np.asarray(kept) ** 2)), rel=1e-6)

    def test_traced_rates_in_one_program(self, key, rng):
        """Stacked states with rates [0, 0.5] under jax.vmap: ONE compiled program."""
        params, state = DROP.init(key)
        X, y = blobs(rng)
        f = objective.make(DROP)
        states = optax.tree_utils.tree_set(state, drop_rate=jnp.array([0.0, 0.5]))

        @jax.jit
        def losses(states):
            train = jax.vmap(lambda s: f(params, X, y, key=key, train=True, model_state=s)[0])
            return train(states), f(params, X, y, train=False, model_state=state)[0]

        values, plain = losses(states)
        assert float(values[0]) == pytest.approx(float(plain), rel=1e-6)  # rate 0: no dropout
        assert float(values[1]) != pytest.approx(float(plain), rel=1e-3)

    def test_penalties_decay_kernels_not_norm_scales(self, key, rng):
        model = Model(L.serial(L.Conv2D(2, 3), L.BatchNorm(), L.Flatten(), L.Dense(3)),
                      (4, 4, 1))
        params, state = model.init(key)
        X = rng.normal(size=(5, 4, 4, 1)).astype(np.float32)
        y = np.arange(5) % 3
        plain, decayed = jax.jit(lambda p: [
            objective.make(model, penalties=spec)(p, X, y, train=False, model_state=state)[0]
            for spec in (None, {"l2": 0.5})])(params)
        W = [np.asarray(params[0]["W"]), np.asarray(params[3]["W"])]
        expected = 0.5 * 0.5 * sum(float(np.sum(w ** 2)) for w in W)
        assert float(decayed - plain) == pytest.approx(expected, rel=1e-4)
        mask = penalties.weight_mask(params)
        assert mask[1] == {"gamma": False, "beta": False} and mask[0] == {"W": True, "b": False}

    def test_apply_functions_still_work(self, key, rng):
        params = mlp.init(key, (5, 4, 3))
        X, y = blobs(rng)
        f = objective.make(lambda p, x: mlp.apply(p, x, activation="tanh"))
        a, b = jax.jit(lambda p: (f(p, X, y), objective.mlp_objective(p, X, y, activation="tanh")))(
            params)
        assert float(a) == pytest.approx(float(b), rel=1e-6)
        with pytest.raises(TypeError, match="model_or_apply: expected a nets.model.Model or a function"):
            objective.make("mlp")


class TestMetrics:
    def test_error_rate_and_accuracy(self):
        Z = jnp.array([[2.0, 0.1, 0.0], [0.3, 0.9, 0.1], [1.0, -1.0, 3.0], [0.0, 1.0, 0.5]])
        y = jnp.array([0, 1, 1, 2])
        assert float(metrics.error_rate(Z, y)) == 0.5
        assert float(metrics.accuracy(Z, y)) == 0.5
        assert float(metrics.error_rate(jax.nn.softmax(Z), y)) == 0.5  # probabilities too
        assert float(metrics.error_rate(Z, jax.nn.one_hot(y, 3))) == 0.5  # one-hot labels

    def test_one_sigmoid_unit(self):
        Z = jnp.array([[1.2], [-0.3], [0.1], [-2.0]])
        y = jnp.array([1, 1, 0, 0])
        assert float(metrics.error_rate(Z, y)) == 0.5
        assert float(metrics.error_rate(jax.nn.sigmoid(Z), y, threshold=0.5)) == 0.5
        assert float(metrics.accuracy(Z[:, 0], y.astype(jnp.float32))) == 0.5

    def test_confusion_matrix_and_mse(self):
        Z = jnp.array([[2.0, 0.1], [0.3, 0.9], [1.0, -1.0]])
        C = metrics.confusion_matrix(Z, jnp.array([0, 1, 1]))
        np.testing.assert_array_equal(C, [[1, 0], [1, 1]])
        assert float(metrics.mean_squared_error(jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 0.0]]))) == 2.5

    def test_model_metric_and_errors(self, key, rng):
        model = PLAIN
        params, _ = model.init(key)
        X, y = blobs(rng)
        err = model.metric(metrics.error_rate)
        Z, _ = model.batch_apply(params, X)
        assert float(err(params, X, y)) == float(jnp.mean(jnp.argmax(Z, -1) != y))
        assert float(jax.jit(err)(params, X, y)) == float(err(params, X, y))
        with pytest.raises(ValueError, match=r"y: expected 3 labels \(one per row of Z\), got shape \(2,\)"):
            metrics.error_rate(jnp.zeros((3, 2)), np.zeros(2, int))
        with pytest.raises(TypeError, match="fn: expected a function"):
            model.metric("error_rate")
