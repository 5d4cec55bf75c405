"""nets.cnn: ESL's Net-1..Net-5 and the modern CNN (shapes, parameter and connection counts
by hand and against ESL Table 11.1), the locally connected layer against NumPy loops and
against Conv2D when shared, and its gradient against central differences in float64."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import Model, cnn, count_params, gradcheck, penalties
from nets import layers as L


@pytest.fixture
def rng(request):
    """NumPy data seeded by the test's name, so a failure replays."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def local_loop(x, W, b, stride, pad, share):
    """The locally connected layer by its definition, one unit at a time (NumPy, float64)."""
    (top, bottom), (left, right) = pad
    xp = np.pad(x, ((top, bottom), (left, right), (0, 0)))
    kh, kw, _, F = W.shape[-4:]
    Ho, Wo = (xp.shape[0] - kh) // stride + 1, (xp.shape[1] - kw) // stride + 1
    y = np.zeros((Ho, Wo, F))
    for i in range(Ho):
        for j in range(Wo):
            patch = xp[i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            K = W if share else W[i, j]
            for o in range(F):
                y[i, j, o] = np.sum(patch * K[..., o])
    return y + b.reshape(Ho, Wo, F)


def apply(layer, params, x):
    return jax.jit(lambda p, x: layer.apply(p, (), x)[0])(params, x)


# ---------------------------------------------------------------------------------------
# counts


def test_net4_counts_by_hand():
    net = cnn.net4()
    # hidden 1: two 8x8 maps, one shared 3x3 kernel each, a bias per unit
    h1_params, h1_links = 2 * 3 * 3 + 8 * 8 * 2, 8 * 8 * 2 * (3 * 3 + 1)
    # hidden 2: 4x4 units, each its own 5x5 patch over both maps and its own bias
    h2 = 4 * 4 * (5 * 5 * 2 + 1)
    out = 4 * 4 * 10 + 10
    assert (h1_params, h1_links, h2, out) == (146, 1280, 816, 170)
    assert net.params == h1_params + h2 + out == 1132
    assert net.connections == h1_links + h2 + out == 2266
    params, _ = net.model.init(jax.random.key(0))
    assert count_params(params) == net.params
    assert net.model.output_shape == (10,)


def test_modern_cnn_counts_by_hand():
    net = cnn.modern_cnn()
    conv1 = (3 * 3 * 1 * 16 + 16, 8 * 8 * 16 * (3 * 3 * 1 + 1))  # (params, links)
    conv2 = (3 * 3 * 16 * 32 + 32, 4 * 4 * 32 * (3 * 3 * 16 + 1))  # after a 2x2 max pool
    dense = (2 * 2 * 32 * 10 + 10,) * 2  # after the second pool
    assert net.params == conv1[0] + conv2[0] + dense[0] == 6090
    assert net.connections == conv1[1] + conv2[1] + dense[1] == 85770


def test_esl_sizes_reproduce_table_11_1():
    """On ESL's 16x16 images (first stride 2) every net has Table 11.1's links and weights."""
    nets = cnn.esl_nets((16, 16, 1))
    got = {k: {"links": n.connections, "weights": n.params} for k, n in nets.items()}
    want = {k: {"links": v["links"], "weights": v["weights"]}
            for k, v in cnn.ESL_TABLE_11_1.items()}
    assert got == want


def test_8x8_counts_and_shapes():
    nets = cnn.esl_nets()
    assert [(n.params, n.connections) for n in nets.values()] == [
        (650, 650), (910, 910), (1226, 1226), (1132, 2266), (1060, 5194)]
    for name in ("net1", "net2", "net3"):  # no sharing: one weight per link
        assert nets[name].params == nets[name].connections
    X = jnp.zeros((3, 8, 8, 1))
    for net in nets.values():
        params, _ = net.model.init(jax.random.key(1))
        assert net.model.batch_apply(params, X)[0].shape == (3, 10)
    # the hidden layers keep ESL's sizes: 8x8 (x2 maps) then 4x4 (x4 maps for Net-5)
    params, _ = nets["net5"].model.init(jax.random.key(2))
    assert params[0]["W"].shape == (3, 3, 1, 2) and params[0]["b"].shape == (8 * 8 * 2,)
    assert params[2]["W"].shape == (5, 5, 2, 4) and params[2]["b"].shape == (4 * 4 * 4,)
    params, _ = nets["net3"].model.init(jax.random.key(3))
    assert params[0]["W"].shape == (8, 8, 3, 3, 1, 1)
    assert params[2]["W"].shape == (4, 4, 5, 5, 1, 1)


def test_first_stride_2_halves_the_hidden_layers():
    net = cnn.net3(first_stride=2)
    # 4x4 units on 3x3 patches, then 2x2 units on 5x5 patches, then 10 outputs
    assert net.params == net.connections == 16 * 10 + 4 * 26 + 4 * 10 + 10 == 314
    with pytest.raises(ValueError, match="first_stride"):
        cnn.net3((12, 12, 1))


def test_connections_counts_only_trained_links():
    dense = Model(L.serial(L.Flatten(), L.Dense(7), L.Relu(), L.Dense(3)), (4, 4, 1))
    assert cnn.connections(dense) == count_params(dense.init(jax.random.key(0))[0])
    # VALID 3x3 conv on 5x5x2 -> 3x3x4; pooling and activations add none; no-bias Dense
    conv = Model(L.serial(L.Conv2D(4, 3, padding="VALID"), L.Tanh(), L.MaxPool(3),
                          L.Flatten(), L.Dense(5, bias=False)), (5, 5, 2))
    assert cnn.connections(conv) == 3 * 3 * 4 * (3 * 3 * 2 + 1) + 4 * 5


def test_unit_biases_are_not_decayed():
    params, _ = cnn.net5().model.init(jax.random.key(0))
    mask = penalties.weight_mask(params)
    assert mask[0] == {"W": True, "b": False} and mask[2] == {"W": True, "b": False}


def test_first_layer_filters():
    stack = jax.vmap(lambda k: cnn.net4().model.init(k)[0])(jax.random.split(jax.random.key(0), 3))
    F = cnn.first_layer_filters("net4", stack)
    assert F.shape == (3, 2, 3, 3)
    np.testing.assert_array_equal(F[1, 0], np.asarray(stack[0]["W"])[1, :, :, 0, 0])
    params, _ = cnn.modern_cnn().model.init(jax.random.key(1))
    assert cnn.first_layer_filters("cnn", params).shape == (16, 3, 3)


# ---------------------------------------------------------------------------------------
# the locally connected layer


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("stride, padding, pad", [
    (1, "VALID", ((0, 0), (0, 0))), (2, "SAME", ((0, 1), (1, 1))), (1, "SAME", ((1, 1), (1, 1))),
    (2, ((2, 0), (1, 0)), ((2, 0), (1, 0)))])
def test_local_against_loops(rng, share, stride, padding, pad):
    layer = cnn.LocallyConnected2D(3, 3, stride=stride, padding=padding, share=share)
    x = rng.normal(size=(6, 7, 2))
    with jax.enable_x64(True):
        out, params, _ = layer.init(jax.random.key(0), x.shape)
        params = {"W": rng.normal(size=params["W"].shape), "b": rng.normal(size=params["b"].shape)}
        y = apply(layer, params, x)
    assert y.shape == out
    np.testing.assert_allclose(y, local_loop(x, params["W"], params["b"], stride, pad, share),
                               rtol=1e-12, atol=1e-12)


def test_patches_equal_lax_patches(rng):
    x = rng.normal(size=(7, 6, 3)).astype(np.float32)
    for kernel, stride, padding in (((3, 3), (1, 1), "SAME"), ((5, 5), (2, 2), "SAME"),
                                    ((2, 3), (2, 1), "VALID")):
        lax = jax.lax.conv_general_dilated_patches(
            x[None], kernel, stride, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
        lax = lax.reshape(*lax.shape[:2], 3, *kernel).transpose(0, 1, 3, 4, 2)  # (C,kh,kw) last
        np.testing.assert_array_equal(L._patches(x, kernel, stride, padding), lax)


def test_shared_equals_conv_with_a_bias_per_unit(rng):
    x = rng.normal(size=(8, 8, 2)).astype(np.float32)
    local = cnn.LocallyConnected2D(4, 5, stride=2, share=True)
    conv = L.Conv2D(4, 5, stride=2, bias=False)
    _, params, _ = local.init(jax.random.key(0), x.shape)
    params["b"] = jnp.asarray(rng.normal(size=params["b"].shape), jnp.float32)
    y_conv = apply(conv, {"W": params["W"]}, x) + params["b"].reshape(4, 4, 4)
    np.testing.assert_allclose(apply(local, params, x), y_conv, rtol=1e-5, atol=1e-5)


def test_local_init_fans_and_no_bias():
    out, params, _ = cnn.LocallyConnected2D(8, 3, init="he", bias=False).init(
        jax.random.key(0), (16, 16, 4))
    assert out == (16, 16, 8) and set(params) == {"W"}
    # He: std sqrt(2 / fan_in), fan_in = 3 * 3 * 4 (not counting the 16 x 16 positions)
    assert np.std(params["W"]) == pytest.approx(np.sqrt(2 / 36), rel=0.05)


def test_local_errors():
    layer = cnn.LocallyConnected2D(2, 3)
    _, params, _ = layer.init(jax.random.key(0), (6, 6, 1))
    with pytest.raises(ValueError, match="expected one image"):
        layer.apply(params, (), jnp.zeros((6, 6, 2)))
    with pytest.raises(ValueError, match="output positions"):
        layer.apply(params, (), jnp.zeros((5, 5, 1)))
    with pytest.raises(ValueError, match="features"):
        cnn.LocallyConnected2D(0, 3)
    with pytest.raises(ValueError, match="does not fit"):
        cnn.LocallyConnected2D(2, 5, padding="VALID").init(jax.random.key(0), (4, 4, 1))


@pytest.mark.parametrize("share", [False, True])
def test_local_gradient_against_central_differences(rng, share):
    """jax.grad of a cross-entropy through two locally connected layers, every parameter,
    against central differences in float64 (per element)."""
    layer = L.serial(cnn.LocallyConnected2D(2, 3, stride=2, share=share), L.Tanh(),
                     cnn.LocallyConnected2D(3, 2, padding="VALID", share=share), L.Tanh(),
                     L.Flatten(), L.Dense(3))
    with jax.enable_x64(True):
        _, params, state = layer.init(jax.random.key(0), (5, 5, 1))
        X, y = rng.normal(size=(4, 5, 5, 1)), np.array([0, 2, 1, 2])

        def objective(params, X, Y):
            Z = jax.vmap(lambda x: layer.apply(params, state, x)[0])(X)
            return jnp.mean(jax.nn.logsumexp(Z, -1) - jnp.take_along_axis(Z, Y[:, None], 1)[:, 0])

        report = gradcheck.check(jax.jit(objective), params, X, y)
        # and with respect to the input image, through the gather's scatter-add
        f = jax.jit(lambda x: objective(params, x[None], y[:1]))
        g = np.asarray(jax.grad(f)(X[0])).ravel()
        fd = gradcheck.finite_differences(f, X[0])
    assert report.worst < 1e-6, report.table()
    assert sum(r.checked for r in report.rows) == count_params(params)
    assert gradcheck.relative_error(g, fd, floor=1e-2) < 1e-6


def test_first_stride_pair_is_honoured_on_both_axes():
    net = cnn.net3(first_stride=(1, 2))
    # 8x4 units on 3x3 patches, then 4x2 on 5x5 patches, then 10 outputs
    assert net.params == net.connections == 32 * 10 + 8 * 26 + 8 * 10 + 10 == 618
    assert "8x4 local 3x3 (stride 1x2)" in net.description
    assert cnn.net3(first_stride=(2, 2)).description == cnn.net3(first_stride=2).description
    with pytest.raises(ValueError, match="first_stride"):
        cnn.net3(first_stride=(1, 2, 3))


def test_first_layer_filters_checks_the_kernel():
    p3, _ = cnn.net3().model.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"params: expected net4's .*\(8, 8, 3, 3, 1, 1\)"):
        cnn.first_layer_filters("net4", p3)
    rgb, _ = cnn.modern_cnn((8, 8, 3)).model.init(jax.random.key(0))
    with pytest.raises(ValueError, match="one input channel"):
        cnn.first_layer_filters("cnn", rgb)


def test_numpy_scalars_and_bare_int_features():
    layer = cnn.LocallyConnected2D(np.int64(2), np.int64(3), stride=(np.int32(1), 2))
    out, params, _ = layer.init(jax.random.key(0), (8, 8, 1))
    assert out == (8, 4, 2) and params["W"].shape == (8, 4, 3, 3, 1, 2)
    net = cnn.modern_cnn(features=tuple(np.array([8, 16])), kernel_size=np.int64(3),
                         n_classes=np.int64(10))
    assert net.params == cnn.modern_cnn(features=(8, 16)).params
    with pytest.raises(TypeError, match=r"features: modern_cnn expected .*pass \(16,\)"):
        cnn.modern_cnn(features=16)
