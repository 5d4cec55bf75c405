"""nets.resnet: shapes and parameter counts; the plain net is the note's MLP; the residual
identity carries the gradient where the plain sigmoid net's shrinks by g' <= 1/4 a layer."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import count_params, mlp, objective, resnet


def _as_mlp(params):
    """The plain net's params as nets.mlp's list [{"W", "b"}, ...] (input to output)."""
    biases = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
              if path[-1] == jax.tree_util.DictKey("b")]
    return [{"W": W, "b": b} for W, b in zip(resnet.weights(params), biases)]


# Shared by the tests, so each model's init and gradient compile once.
SIZES = dict(width=16, n_in=12, n_out=10)
NETS = {False: resnet.plain(8, **SIZES), True: resnet.resnet(8, **SIZES)}
SHORT = resnet.model(2, **SIZES)  # the stem and the head alone


def _grad(net):
    return jax.jit(jax.grad(objective.make(net)))


GRADS = {residual: _grad(net) for residual, net in NETS.items()}


@pytest.fixture(scope="module")
def initial():
    """Each net's initial params from one key, ``{residual: params}``: the layers' ``init``
    op by op (what ``Model.init`` compiles into one program per model, the slowest step
    here), so the second net reuses the first one's per-op programs."""
    key = jax.random.key(zlib.crc32(__name__.encode()))
    return {residual: net.layer.init(key, net.input_shape)[1] for residual, net in NETS.items()}


def _data(key):
    X = jax.random.uniform(jax.random.fold_in(key, 1), (32, 12), jnp.float64)
    return X, jnp.arange(32) % 10


def _f64(params):
    return jax.tree.map(lambda a: a.astype(jnp.float64), params)


@pytest.mark.parametrize("residual", [False, True])
def test_shapes_and_parameter_count(initial, residual):
    net = NETS[residual]
    params = initial[residual]
    assert [W.shape for W in resnet.weights(params)] == [(16, 12)] + [(16, 16)] * 6 + [(10, 16)]
    assert count_params(params) == (12 + 1) * 16 + 6 * (16 + 1) * 16 + (16 + 1) * 10
    assert net.output_shape == (10,)
    Z, _ = net.batch_apply(params, jnp.zeros((7, 12)))
    assert Z.shape == (7, 10)


def test_plain_and_residual_share_layers_and_initial_weights(initial):
    p, r = initial[False], initial[True]
    assert jax.tree.structure(p) == jax.tree.structure(r)
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(r)):
        np.testing.assert_array_equal(a, b)


def test_lecun_init_is_fan_in_scaled(initial):
    weights = resnet.weights(initial[False])
    assert np.var(weights[0]) == pytest.approx(1 / 12, rel=0.25)  # 192 draws
    assert np.var(np.stack(weights[1:-1])) == pytest.approx(1 / 16, rel=0.12)  # 1536 draws


def test_plain_net_is_the_notes_mlp(key, initial):
    params = initial[False]
    X = jax.random.normal(jax.random.fold_in(key, 1), (4, 12))
    Z = NETS[False].batch_apply(params, X)[0]
    Z_mlp = jax.vmap(lambda x: mlp.apply(_as_mlp(params), x, activation="sigmoid"))(X)
    np.testing.assert_allclose(Z, Z_mlp, rtol=1e-5, atol=1e-6)


def test_residual_identity_carries_the_gradient_exactly(key, initial, x64):
    # With every block's W and b zero, each residual block is the identity: the stem's
    # gradient is that of the depth-2 net (stem, head) and no block scales it down. In the
    # plain net the same zero blocks cut the stem off: its gradient is exactly 0.
    X, y = _data(key)
    params = _f64(initial[True])
    params = (params[0], *jax.tree.map(jnp.zeros_like, params[1:-2]), *params[-2:])
    g_res = GRADS[True](params, X, y)
    g_short = jax.jit(jax.grad(objective.make(SHORT)))((params[0], *params[-2:]), X, y)
    np.testing.assert_allclose(g_res[0]["W"], g_short[0]["W"], rtol=1e-10, atol=1e-14)
    assert np.linalg.norm(g_res[0]["W"]) > 1e-3
    g_plain = GRADS[False](params, X, y)
    assert np.all(np.asarray(g_plain[0]["W"]) == 0.0)


def test_plain_sigmoid_gradient_decays_geometrically_residual_does_not(key, initial, x64):
    # |sigmoid'| <= 1/4: with fan-in scaled weights each plain layer shrinks the gradient by
    # about that factor; the residual twin (same initial weights) keeps it of one size.
    X, y = _data(key)
    norms = {}
    for residual, net in NETS.items():
        params = _f64(initial[residual])
        norms[residual] = np.asarray(resnet.weight_grad_norms(GRADS[residual](params, X, y)))
    ratios = norms[False][:-2] / norms[False][1:-1]  # layer l over layer l + 1, head left out
    assert np.all(ratios < 0.45)
    assert norms[False][0] / norms[False][-2] < 0.35 ** 6
    assert 0.3 < norms[True][0] / norms[True][-2] < 3.0


def test_weights_lists_dense_kernels_in_order(initial):
    params = initial[True]
    norms = resnet.weight_grad_norms(params)
    np.testing.assert_allclose(norms, [np.linalg.norm(W) for W in resnet.weights(params)],
                               rtol=1e-6)


@pytest.mark.parametrize("bad", [{"depth": 1}, {"depth": 2.0}, {"width": 0}, {"n_out": True}])
def test_bad_sizes_are_clear_errors(bad):
    args = {"depth": 4, **bad}
    with pytest.raises(ValueError, match=next(iter(bad))):
        resnet.model(args.pop("depth"), **args)


def test_numpy_integers_are_accepted():
    a = resnet.model(np.int64(3), width=np.int32(4), n_in=np.int64(5), n_out=np.int64(2))
    b = resnet.model(3, width=4, n_in=5, n_out=2)
    assert a.input_shape == b.input_shape == (5,) and a.output_shape == b.output_shape
    assert count_params(a.init(jax.random.key(0))[0]) == count_params(b.init(jax.random.key(0))[0])
