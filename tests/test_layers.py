"""Layers for one example: shapes, values against NumPy loops, combinators, BatchNorm and
dropout semantics, jit == no-jit, a CNN's gradient against central differences."""

import functools
import zlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nets import count_params, gradcheck
from nets import layers as L


@pytest.fixture
def rng(request):
    """NumPy data seeded by the test's name (data without a compiled JAX op per draw)."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def init(layer, key, input_shape):
    """``layer.init`` as ONE compiled program (eagerly, every random op compiles apart)."""
    box = {}

    def f(key):
        box["shape"], params, state = layer.init(key, input_shape)
        return params, state

    params, state = jax.jit(f)(key)
    return box["shape"], params, state


def abstract_init(layer, input_shape):
    """``(output_shape, params, state)`` with shapes only (``jax.eval_shape``, no compiling)."""
    box = {}

    def f(key):
        box["shape"], params, state = layer.init(key, input_shape)
        return params, state

    params, state = jax.eval_shape(f, jax.random.key(0))
    return box["shape"], params, state


def init_params(layer, key, input_shape):
    return layer.init(key, input_shape)[1]


def run(layer, params, state, x, *, train=False, key=None):
    """``layer.apply`` on one example, compiled as one program (not op by op)."""
    return jax.jit(lambda p, s, x, k: layer.apply(p, s, x, train=train, key=k))(
        params, state, x, key)


def batched(layer, params, state, X, *, train=False, key=None):
    """vmap over examples with the axis name BatchNorm reads."""
    keys = None if key is None else jax.random.split(key, X.shape[0])
    return jax.vmap(lambda x, k: run(layer, params, state, x, train=train, key=k),
                    in_axes=(0, None if keys is None else 0), out_axes=(0, None),
                    axis_name="batch")(X, keys)


def conv_loop(x, W, b, stride, pad):
    """Cross-correlation by NumPy loops; x (H, W, C), W (kh, kw, C, O), pad ((t, b), (l, r))."""
    x = np.pad(np.asarray(x), (*pad, (0, 0)))
    kh, kw, _, O = W.shape
    Ho, Wo = (x.shape[0] - kh) // stride + 1, (x.shape[1] - kw) // stride + 1
    out = np.zeros((Ho, Wo, O))
    for i in range(Ho):
        for j in range(Wo):
            for o in range(O):
                patch = x[i * stride:i * stride + kh, j * stride:j * stride + kw, :]
                out[i, j, o] = np.sum(patch * W[..., o]) + b[o]
    return out


def pool_loop(x, window, stride, reduce):
    x = np.asarray(x)
    Ho, Wo = (x.shape[0] - window) // stride + 1, (x.shape[1] - window) // stride + 1
    return np.array([[[reduce(x[i * stride:i * stride + window, j * stride:j * stride + window, c])
                       for c in range(x.shape[2])] for j in range(Wo)] for i in range(Ho)])


class TestShapes:
    @pytest.mark.parametrize("layer, in_shape, out_shape", [
        (L.Dense(7), (5,), (7,)),
        (L.Relu(), (3, 4), (3, 4)),
        (L.Activation("softplus"), (6,), (6,)),
        (L.Activation(lambda z: z * jax.nn.sigmoid(z)), (6,), (6,)),
        (L.Flatten(), (4, 4, 3), (48,)),
        (L.Dropout(0.3), (5,), (5,)),
        (L.Conv2D(6, 3), (8, 8, 2), (8, 8, 6)),
        (L.Conv2D(6, 3, padding="VALID"), (8, 8, 2), (6, 6, 6)),
        (L.Conv2D(6, 3, stride=2), (8, 8, 2), (4, 4, 6)),
        (L.Conv2D(6, (3, 2), stride=(2, 1), padding="VALID"), (8, 8, 2), (3, 7, 6)),
        (L.Conv2D(6, 3, padding=1), (8, 8, 2), (8, 8, 6)),
        (L.Conv2D(6, 3, padding=((2, 0), (0, 0))), (8, 8, 2), (8, 6, 6)),
        (L.MaxPool(2), (8, 8, 3), (4, 4, 3)),
        (L.MaxPool(3, stride=1), (8, 8, 3), (6, 6, 3)),
        (L.AvgPool(3, stride=2, padding="SAME"), (7, 7, 3), (4, 4, 3)),
        (L.LayerNorm(), (5, 4), (5, 4)),
        (L.BatchNorm(), (6, 6, 3), (6, 6, 3)),
        (L.serial(L.Dense(4), L.Tanh(), L.Dense(2)), (3,), (2,)),
        (L.residual(L.serial(L.Dense(5), L.Elu())), (5,), (5,)),
        (L.concat(L.Identity(), L.Conv2D(4, 3)), (6, 6, 2), (6, 6, 6)),
    ])
    def test_init_shape_equals_apply_shape(self, key, layer, in_shape, out_shape):
        """Abstractly (jax.eval_shape): nothing is compiled."""
        shape, params, state = abstract_init(layer, in_shape)
        assert shape == out_shape
        for train in (False, True):
            y, new_state = jax.eval_shape(
                lambda p, s, x: batched(layer, p, s, x, train=train, key=key),
                params, state, jax.ShapeDtypeStruct((2, *in_shape), jnp.float32))
            assert y.shape == (2, *out_shape)
            assert jax.tree.structure(new_state) == jax.tree.structure(state)

    def test_param_shapes(self, key):
        def shapes(layer, in_shape):
            return jax.tree.map(lambda a: a.shape, jax.eval_shape(
                lambda k: layer.init(k, in_shape)[1:], key))

        assert shapes(L.Dense(7), (5,)) == ({"W": (7, 5), "b": (7,)}, ())
        assert shapes(L.Dense(7, bias=False), (5,)) == ({"W": (7, 5)}, ())
        assert shapes(L.Conv2D(6, (3, 2)), (8, 8, 2)) == ({"W": (3, 2, 2, 6), "b": (6,)}, ())
        assert shapes(L.BatchNorm(), (4, 4, 3)) == (
            {"gamma": (3,), "beta": (3,)}, {"mean": (3,), "var": (3,)})
        assert shapes(L.LayerNorm(), (5, 4)) == ({"gamma": (4,), "beta": (4,)}, ())
        assert shapes(L.Embedding(11, 4), (6,)) == ({"E": (11, 4)}, ())
        _, p, s = L.Dropout(0.25).init(key, (3,))
        assert p == () and s["drop_rate"].dtype == jnp.float32 and float(s["drop_rate"]) == 0.25

    def test_embedding(self, rng):
        layer = L.Embedding(11, 4)
        E = rng.normal(size=(11, 4)).astype(np.float32)
        tokens = np.array([0, 3, 10, 3, 1, 11])  # 11 is out of range
        y, _ = run(layer, {"E": E}, (), tokens)
        np.testing.assert_array_equal(y[:5], E[tokens[:5]])
        assert np.all(np.isnan(y[5]))
        with pytest.raises(TypeError, match="x: Embedding expected integer token ids, got dtype float32"):
            run(layer, {"E": E}, (), np.zeros(6, np.float32))

    def test_dense_inits(self, key):
        @jax.jit
        def draws(key):
            out = {i: init_params(L.Dense(300, init=i), key, (400,)) for i in L.DENSE_INITS}
            out["conv"] = init_params(L.Conv2D(64, 3, init="he"), key, (8, 8, 32))
            return out

        p = jax.device_get(draws(key))
        for i in ("glorot", "he", "lecun"):
            assert np.abs(p[i]["b"]).max() == 0.0
        assert np.abs(p["esl"]["W"]).max() <= 0.7 and np.abs(p["esl"]["b"]).max() > 0
        assert np.std(p["he"]["W"]) == pytest.approx(np.sqrt(2 / 400), rel=0.05)  # fan-in n_in
        assert np.std(p["lecun"]["W"]) == pytest.approx(np.sqrt(1 / 400), rel=0.05)
        limit = np.sqrt(6 / (400 + 300))
        assert limit * 0.95 < np.abs(p["glorot"]["W"]).max() <= limit
        assert np.std(p["conv"]["W"]) == pytest.approx(np.sqrt(2 / (9 * 32)), rel=0.05)

    def test_count_params(self, key):
        _, params, _ = jax.eval_shape(lambda k: L.serial(
            L.Conv2D(4, 3), L.Relu(), L.Flatten(), L.Dense(10), L.BatchNorm()).init(
                k, (5, 5, 2)), key)
        assert count_params(params) == (3 * 3 * 2 * 4 + 4) + (100 * 10 + 10) + 2 * 10
        assert count_params(()) == 0
        assert count_params({"W": np.zeros((3, 4)), "b": np.zeros(3)}) == 15


class TestValues:
    @pytest.mark.parametrize("stride, padding, pad", [
        (1, "VALID", ((0, 0), (0, 0))), (2, "VALID", ((0, 0), (0, 0))),
        (1, "SAME", ((1, 1), (1, 1))), (2, 1, ((1, 1), (1, 1))),
        (1, ((2, 0), (1, 0)), ((2, 0), (1, 0)))])
    @pytest.mark.parametrize("impl", ["conv", "patches"])
    def test_conv_against_loops(self, rng, x64, stride, padding, pad, impl):
        layer = L.Conv2D(3, 3, stride=stride, padding=padding, impl=impl)
        params = {"W": rng.normal(size=(3, 3, 2, 3)), "b": rng.normal(size=3)}
        x = rng.normal(size=(5, 6, 2))
        y, _ = run(layer, params, (), x)
        assert y.shape == abstract_init(layer, (5, 6, 2))[0]
        expected = conv_loop(x, params["W"], params["b"], stride, pad)
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)

    @pytest.mark.parametrize("kernel, stride, padding", [
        (3, 1, "SAME"), ((2, 3), 2, "SAME"), (3, (2, 1), ((2, 0), (1, 2))), (1, 1, "VALID"),
        (4, 3, "VALID")])
    def test_conv_patches_has_the_gradients_of_conv_general_dilated(self, rng, x64, kernel,
                                                                    stride, padding):
        """impl="patches" (slices and one dot) against conv_general_dilated: outputs and the
        gradients with respect to the kernel, the bias and the images, over a vmapped batch,
        in float64 (a wrong slice offset or stride shows up as an error of order 1)."""
        conv, patches = (L.Conv2D(4, kernel, stride=stride, padding=padding, impl=i)
                         for i in ("conv", "patches"))
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        params = {"W": rng.normal(size=(kh, kw, 3, 4)), "b": rng.normal(size=4)}
        X = rng.normal(size=(5, 7, 6, 3))

        def objective(layer):
            def f(params, X):
                Y = jax.vmap(lambda x: layer.apply(params, (), x)[0])(X)
                return jnp.sum(jnp.sin(Y)), Y
            return jax.grad(f, argnums=(0, 1), has_aux=True)

        (g_conv, Y_conv), (g_patch, Y_patch) = (objective(l)(params, X) for l in (conv, patches))
        np.testing.assert_allclose(Y_patch, Y_conv, rtol=1e-12, atol=1e-12)
        for a, b in zip(jax.tree.leaves(g_patch), jax.tree.leaves(g_conv)):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)

    def test_conv_impl_is_checked(self):
        with pytest.raises(ValueError, match="impl: Conv2D expected one of"):
            L.Conv2D(4, 3, impl="im2col")
        from nets import cnn
        with pytest.raises(ValueError, match="conv_impl: modern_cnn expected one of"):
            cnn.modern_cnn(conv_impl="fast")

    @pytest.mark.parametrize("window, stride", [(2, 2), (3, 1), (2, 3)])
    def test_pools_against_loops(self, rng, window, stride):
        x = rng.normal(size=(7, 6, 2)).astype(np.float32)
        y, _ = run(L.MaxPool(window, stride), (), (), x)
        np.testing.assert_allclose(y, pool_loop(x, window, stride, np.max), rtol=1e-6)
        y, _ = run(L.AvgPool(window, stride), (), (), x)
        np.testing.assert_allclose(y, pool_loop(x, window, stride, np.mean), rtol=1e-5, atol=1e-6)

    def test_avgpool_same_averages_inside_the_image(self):
        x = np.arange(9.0, dtype=np.float32).reshape(3, 3, 1)
        y, _ = run(L.AvgPool(2, padding="SAME"), (), (), x)
        # SAME pads one row and column at the end: the last patches hold 2, 2 and 1 entries
        np.testing.assert_allclose(y[..., 0], [[2.0, 3.5], [6.5, 8.0]], rtol=1e-6)

    def test_dense_and_activation_are_the_note_formula(self, rng):
        p = {"W": rng.normal(size=(3, 4)).astype(np.float32), "b": np.float32([0.5, -1, 2])}
        x = np.arange(4.0, dtype=np.float32)
        y, _ = run(L.serial(L.Dense(3), L.Sigmoid()), (p, ()), ((), ()), x)
        np.testing.assert_allclose(y, 1 / (1 + np.exp(-(p["W"] @ x + p["b"]))), rtol=1e-6)

    def test_layernorm(self, rng):
        params = {"gamma": np.arange(1.0, 6.0), "beta": np.full(5, 0.5)}
        x = (rng.normal(size=(3, 5)) * 3 + 2).astype(np.float32)
        y, _ = run(L.LayerNorm(), params, (), x)
        ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
        np.testing.assert_allclose(y, ref * np.arange(1.0, 6.0) + 0.5, rtol=1e-4, atol=1e-5)


class TestBatchNorm:
    def test_train_uses_batch_statistics_and_updates_running_averages(self, rng):
        layer = L.BatchNorm(momentum=0.8)
        params = {"gamma": np.ones(3, np.float32), "beta": np.zeros(3, np.float32)}
        state = {"mean": np.float32([1.0, 2.0, 3.0]), "var": np.float32([2.0, 1.0, 0.5])}
        X = (rng.normal(size=(6, 4, 4, 3)) * [1.0, 2.0, 3.0] + 5).astype(np.float32)
        Y, new = batched(layer, params, state, X, train=True)
        Xn = X
        mu, var = Xn.mean((0, 1, 2)), Xn.var((0, 1, 2))  # per channel over batch, H, W
        np.testing.assert_allclose(Y, (Xn - mu) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(new["mean"], 0.8 * np.array([1.0, 2.0, 3.0]) + 0.2 * mu,
                                   rtol=1e-5)
        np.testing.assert_allclose(new["var"], 0.8 * np.array([2.0, 1.0, 0.5]) + 0.2 * var,
                                   rtol=1e-5)

    def test_eval_uses_running_statistics(self):
        layer = L.BatchNorm()
        params = {"gamma": np.float32([1.0, 2.0, 3.0]), "beta": np.float32([0.0, 1.0, -1.0])}
        state = {"mean": np.float32([1.0, -1.0, 0.0]), "var": np.float32([4.0, 1.0, 0.25])}
        x = np.float32([3.0, 0.0, 1.0])
        y, new = run(layer, params, state, x)  # one example: no batch needed in eval mode
        expected = (x - state["mean"]) / np.sqrt(state["var"] + 1e-5) * params["gamma"] + params["beta"]
        chex.assert_trees_all_close(y, expected, atol=1e-6)
        chex.assert_trees_all_equal(new, state)

    def test_train_outside_vmap_is_a_clear_error(self, key):
        layer = L.BatchNorm()
        _, params, state = layer.init(key, (3,))
        with pytest.raises(ValueError, match=r"Model.batch_apply or jax.vmap\(..., axis_name='batch'\)"):
            run(layer, params, state, np.ones(3, np.float32), train=True)
        with pytest.raises(ValueError, match="axis_name='batch'"):
            jax.vmap(lambda x: run(layer, params, state, x, train=True))(np.ones((2, 3), np.float32))


class TestDropout:
    def test_eval_is_identity_and_train_needs_a_key(self):
        layer = L.Dropout(0.5)
        state = {"drop_rate": np.float32(0.5)}
        x = np.arange(10.0, dtype=np.float32)
        np.testing.assert_array_equal(run(layer, (), state, x)[0], x)
        with pytest.raises(ValueError, match="key: Dropout in train mode needs a PRNG key, got None"):
            run(layer, (), state, x, train=True)

    def test_inverted_scaling_and_rate_zero(self, key):
        layer = L.Dropout(0.5)
        _, _, state = layer.init(key, (1000,))
        x = np.ones(1000, np.float32)
        drop = jax.jit(lambda s, k: run(layer, (), s, x, train=True, key=k)[0])
        y = np.asarray(drop(state, key))
        assert set(np.unique(y)) == {0.0, 2.0}
        assert 0.4 < float(np.mean(y == 0)) < 0.6
        np.testing.assert_array_equal(drop({"drop_rate": np.float32(0.0)}, key), x)

    def test_traced_rates_under_vmap(self, key, rng):
        """Stacked states with rates [0, 0.5] in ONE program; rate 0 is no dropout."""
        layer = L.serial(L.Dense(50), L.Relu(), L.Dropout(0.1), L.Dense(3))
        _, params, state = init(layer, key, (8,))
        states = optax.tree_utils.tree_set(state, drop_rate=jnp.array([0.0, 0.5], jnp.float32))
        X = rng.normal(size=(16, 8)).astype(np.float32)

        @jax.jit
        def both(states):
            train = jax.vmap(lambda s: batched(layer, params, s, X, train=True, key=key)[0])
            return train(states), batched(layer, params, state, X)[0]  # and eval mode

        Z, plain = both(states)
        chex.assert_trees_all_close(Z[0], plain, atol=1e-6)
        assert not np.allclose(Z[1], plain, atol=1e-3)

    def test_rate_checked_eagerly(self):
        with pytest.raises(ValueError, match=r"drop_rate: Dropout expected a probability in \[0, 1\), got 1.0"):
            L.Dropout(1.0)


class TestCombinators:
    def test_serial_splits_keys_and_nests_params(self, key):
        net = L.serial(L.Dense(1000), L.Dropout(0.5), L.Dense(1000), L.Dropout(0.5))
        _, params, state = jax.eval_shape(lambda k: net.init(k, (1000,)), key)
        assert len(params) == 4 and params[1] == () and params[3] == ()
        assert len(state) == 4 and state[0] == () and state[2] == ()
        eye = {"W": np.eye(1000, dtype=np.float32), "b": np.zeros(1000, np.float32)}
        state = ((), {"drop_rate": np.float32(0.5)}, (), {"drop_rate": np.float32(0.5)})
        y, _ = jax.jit(lambda x, k: run(net, (eye, (), eye, ()), state, x, train=True, key=k))(
            np.ones(1000, np.float32), key)
        # independent masks keep 1/4 of the units (scaled by 4); one shared mask would keep 1/2
        assert set(np.unique(np.asarray(y))) == {0.0, 4.0}
        assert 0.2 < float(np.mean(np.asarray(y) > 0)) < 0.3

    def test_residual(self, rng):
        f = L.serial(L.Dense(5), L.Tanh())
        params = ({"W": rng.normal(size=(5, 5)), "b": rng.normal(size=5)}, ())
        x = np.arange(5.0)
        y, _ = run(L.residual(f), params, ((), ()), x)
        np.testing.assert_allclose(y, x + np.tanh(params[0]["W"] @ x + params[0]["b"]),
                                   rtol=1e-6)
        with pytest.raises(ValueError, match=r"residual: x \+ f\(x\) needs f to keep the shape, but f maps \(5,\) to \(3,\)"):
            abstract_init(L.residual(L.Dense(3)), (5,))

    def test_concat_is_densenet(self, rng):
        layer = L.concat(L.Identity(), L.Conv2D(4, 3))
        conv = {"W": rng.normal(size=(3, 3, 2, 4)), "b": rng.normal(size=4)}
        x = rng.normal(size=(5, 5, 2)).astype(np.float32)
        y, _ = run(layer, ((), conv), ((), ()), x)
        assert y.shape == (5, 5, 6)
        np.testing.assert_array_equal(y[..., :2], x)
        np.testing.assert_allclose(y[..., 2:], conv_loop(x, conv["W"], conv["b"], 1, ((1, 1), (1, 1))),
                                   rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match=r"concat: branch outputs must agree on all but the last axis"):
            abstract_init(L.concat(L.Identity(), L.Conv2D(4, 3, padding="VALID")), (5, 5, 2))

    def test_bad_layers(self, key):
        with pytest.raises(TypeError, match=r"serial: layers\[1\]: expected a Layer .* did you mean Relu\(\)\?"):
            L.serial(L.Dense(3), L.Relu)
        with pytest.raises(ValueError, match="serial: expected at least one layer"):
            L.serial()


class TestErrors:
    def test_dense_needs_a_vector(self, key):
        with pytest.raises(ValueError, match=r"input_shape: Dense expects a vector; put Flatten\(\) before it"):
            abstract_init(L.serial(L.Conv2D(2, 3), L.Dense(10)), (8, 8, 1))
        params = {"W": np.ones((3, 4)), "b": np.ones(3)}
        with pytest.raises(ValueError, match=r"x: Dense expected a vector of shape \(4,\), got shape \(5,\)"):
            run(L.Dense(3), params, (), np.ones(5))
        with pytest.raises(ValueError, match=r"got shape \(2, 5\); put Flatten\(\) before it"):
            run(L.Dense(3), params, (), np.ones((2, 5)))

    def test_a_batch_given_to_a_layer_is_recognised(self):
        """A raw layer's apply takes ONE example: a leading extra axis hints at vmap (not at
        Flatten, which would silently mix the examples)."""
        batch = r" \(a batch\? a layer takes ONE example: use jax.vmap or Model.batch_apply\)"
        dense = {"W": np.ones((3, 4)), "b": np.ones(3)}
        with pytest.raises(ValueError, match=r"^x: Dense expected a vector of shape \(4,\), got "
                                             r"shape \(2, 4\)" + batch):
            run(L.Dense(3), dense, (), np.ones((2, 4)))
        net = L.serial(L.Dense(3), L.Relu())
        with pytest.raises(ValueError, match=batch):
            net.apply((dense, ()), ((), ()), np.ones((5, 4)), train=False, key=None)
        conv = {"W": np.ones((3, 3, 1, 2)), "b": np.ones(2)}
        with pytest.raises(ValueError, match=r"^x: Conv2D expected one example image \(H, W, C\), "
                                             r"got shape \(4, 5, 5, 1\)" + batch):
            run(L.Conv2D(2, 3), conv, (), np.ones((4, 5, 5, 1)))
        with pytest.raises(ValueError, match=r"got shape \(4, 4\)") as err:
            run(L.MaxPool(2), (), (), np.ones((4, 4)))
        assert "a batch?" not in str(err.value)  # rank 2 for an image: no hint

    def test_conv_and_pool_shapes(self, key):
        with pytest.raises(ValueError, match=r"input_shape: Conv2D expected one image \(H, W, C\), got \(64,\)"):
            abstract_init(L.Conv2D(2, 3), (64,))
        with pytest.raises(ValueError, match=r"input_shape: MaxPool window does not fit the image \(2, 2, 1\)"):
            abstract_init(L.MaxPool(3), (2, 2, 1))
        params = {"W": np.ones((3, 3, 1, 2)), "b": np.ones(2)}
        with pytest.raises(ValueError, match=r"x: Conv2D expected 1 input channels, got shape \(5, 5, 3\)"):
            run(L.Conv2D(2, 3), params, (), np.ones((5, 5, 3)))
        with pytest.raises(ValueError, match=r"x: Conv2D expected one example image \(H, W, C\), got shape \(4, 5, 5, 1\)"):
            run(L.Conv2D(2, 3), params, (), np.ones((4, 5, 5, 1)))
        with pytest.raises(ValueError, match=r"x: MaxPool expected one example image"):
            run(L.MaxPool(2), (), (), np.ones((4, 4)))

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match=r"padding: Conv2D expected 'SAME', 'VALID'"):
            L.Conv2D(2, 3, padding="FULL")
        with pytest.raises(ValueError, match=r"kernel_size: Conv2D expected a positive int or a pair"):
            L.Conv2D(2, 0)
        with pytest.raises(ValueError, match=r"init: Dense expected one of .* got 'xavier'"):
            L.Dense(2, init="xavier")
        with pytest.raises(ValueError, match="activation: expected one of"):
            L.Activation("swish")
        with pytest.raises(ValueError, match=r"input_shape: Dense expected a tuple of positive ints"):
            abstract_init(L.Dense(2), (0,))


def small_cnn():
    return L.serial(L.Conv2D(2, 3, padding="VALID"), L.Tanh(), L.AvgPool(2), L.Conv2D(2, 2),
                    L.MaxPool(2, stride=1), L.Flatten(), L.Dense(3))


def test_jit_and_no_jit_agree(key, rng):
    net = L.serial(L.Conv2D(3, 3), L.MaxPool(2), L.Flatten(), L.BatchNorm(), L.Dropout(0.3),
                   L.Dense(2))
    _, params, state = init(net, key, (4, 4, 1))
    X = rng.normal(size=(5, 4, 4, 1)).astype(np.float32)

    def f(params, state, X, key):
        return batched(net, params, state, X, train=True, key=key)

    eager = f(params, state, X, key)
    jitted = jax.jit(f)(params, state, X, key)
    chex.assert_trees_all_close(eager, jitted, atol=1e-5)


def test_cnn_gradient_against_central_differences(key, rng):
    """conv + tanh + avg pool + conv + max pool + dense, float64, every coordinate, jitted
    (a pooling reducer that autodiff cannot linearise under jit fails here)."""
    net = small_cnn()
    with jax.enable_x64(True):
        _, params, state = init(net, key, (7, 7, 1))
        X, y = rng.normal(size=(3, 7, 7, 1)), np.array([0, 2, 1])

        def objective(params, X, Y):
            Z, _ = batched(net, params, state, X)
            return jnp.mean(jax.nn.logsumexp(Z, -1) - jnp.take_along_axis(Z, Y[:, None], 1)[:, 0])

        report = gradcheck.check(jax.jit(objective), params, X, y)
    assert report.worst < 1e-6, report.table()
    assert sum(r.checked for r in report.rows) == count_params(params) == 47


def test_serial_refuses_params_or_state_of_another_length():
    """An empty state used to make serial skip every layer silently (zip stops early)."""
    layer = L.serial(L.Dense(3), L.Relu())
    _, params, state = layer.init(jax.random.key(0), (2,))
    with pytest.raises(ValueError, match=r"serial: expected state with one entry per layer \(2, "
                       r"as init returns them\), got tuple of length 0"):
        layer.apply(params, (), jnp.ones(2))
    with pytest.raises(ValueError, match=r"expected params .* got dict"):
        layer.apply({}, state, jnp.ones(2))


@pytest.mark.parametrize("shape", [(6,), (4, 6), (2, 3, 6)])
def test_layer_norm_custom_vjp_is_autodiff_of_the_formula(shape):
    """LayerNorm(impl="custom_vjp"): the same output, and its hand-derived backward equals
    jax.grad of the formula w.r.t. x, gamma and beta to 1e-10 in float64, for one row and
    for leading axes (gamma's gradient summed over them). A wrong Jacobian, e.g. without
    the xhat * mean(g xhat) term, is off by far more (checked on the backward itself)."""
    rng = np.random.default_rng(zlib.crc32(repr(shape).encode()))
    err = functools.partial(gradcheck.relative_error, floor=1e-3)
    with jax.enable_x64(True):
        x, G = rng.normal(size=shape) * 3 + 1, rng.normal(size=shape)
        params = {"gamma": rng.normal(size=shape[-1]), "beta": rng.normal(size=shape[-1])}

        def loss(params, x, impl):
            return jnp.sum(G * L.LayerNorm(impl=impl).apply(params, (), x)[0])

        grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
        (v_mine, g_mine), (v_ref, g_ref) = (grad(params, x, impl)
                                            for impl in ("custom_vjp", "autodiff"))
        assert float(v_mine) == float(v_ref)
        for a, b in zip(jax.tree.leaves(g_mine), jax.tree.leaves(g_ref)):
            assert err(np.asarray(a), np.asarray(b)) < 1e-10
        _, res = L._layer_norm_forward(x, params["gamma"], params["beta"], 1e-5)
        xhat, r, gamma = res
        dx = L._layer_norm_backward(1e-5, res, G)[0]
        g = G * gamma
        dropped = r * (g - jnp.mean(g, -1, keepdims=True))  # no xhat * mean(g xhat)
        assert err(np.asarray(dropped), np.asarray(dx)) > 1e-3
    with pytest.raises(ValueError, match=r"impl: LayerNorm expected one of \('autodiff', "
                                         r"'custom_vjp'\), got 'fast'"):
        L.LayerNorm(impl="fast")


def test_integer_pixels_are_promoted_by_conv_as_by_dense():
    """uint8 images: Conv2D computes in its kernel's dtype, as Dense promotes (lax's conv
    refused mixed dtypes with its own message)."""
    layer = L.serial(L.Conv2D(2, 3), L.Flatten(), L.Dense(3))
    _, params, state = layer.init(jax.random.key(0), (5, 5, 1))
    x = (np.arange(25) % 7).reshape(5, 5, 1).astype(np.uint8)
    z, _ = layer.apply(params, state, x)
    want, _ = layer.apply(params, state, x.astype(np.float32))
    assert z.dtype == jnp.float32
    np.testing.assert_array_equal(z, want)
