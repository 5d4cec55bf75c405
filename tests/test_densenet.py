"""nets.densenet: shapes and parameter counts; a dense block is Huang et al.'s formula
``x_l = H_l([x_0, ..., x_{l-1}])`` (against a NumPy oracle); the direct connections carry
a gradient that a plain serial stack of the same layers cannot; jit and no-jit agree."""

import zlib

import chex
import jax
import numpy as np
import pytest

from nets import count_params, densenet
from nets import layers as L
from nets.model import Model

K0, GROWTH, N_LAYERS = 3, 2, 3  # the block of these tests: 3 -> 3 + 3 * 2 = 9 maps on 5x5
SHAPE = (5, 5, K0)
BLOCK = densenet.dense_block(N_LAYERS, GROWTH)  # BN -> ReLU -> Conv 3x3, no conv bias


@pytest.fixture
def rng(request):
    """A NumPy generator seeded by the test's node id, so a failure replays."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def _random_block(rng, plain=False):
    """Params and eval-mode state of BLOCK with every entry random (BN included); with
    ``plain``, of its composites in series (``x_l = H_l(x_{l-1})``: 3 -> 2 -> 2 -> 2 maps)."""
    params, state = [], []
    for l in range(N_LAYERS):
        c = (K0 if l == 0 else GROWTH) if plain else K0 + l * GROWTH  # layer l+1 sees k_0 + l k
        params.append(((), ({"gamma": rng.uniform(0.5, 1.5, c), "beta": rng.normal(size=c)},
                            (), {"W": rng.normal(size=(3, 3, c, GROWTH)) / 3})))
        state.append(((), ({"mean": rng.normal(size=c), "var": rng.uniform(0.5, 2.0, c)},
                           (), ())))
    f32 = lambda t: jax.tree.map(lambda a: np.asarray(a, np.float32), t)  # noqa: E731
    if plain:  # serial(H_1, H_2, H_3) has no concat: drop the Identity branch
        params, state = [p[1] for p in params], [s[1] for s in state]
    return f32(tuple(params)), f32(tuple(state))


def _conv_same(x, W):
    """NumPy 3x3 'SAME' cross-correlation of one image: (H, W, C), (3, 3, C, O) -> (H, W, O)."""
    patches = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((1, 1), (1, 1), (0, 0))),
                                                       (3, 3), axis=(0, 1))  # (H, W, C, 3, 3)
    return np.einsum("ijcab,abco->ijo", patches, W)


def _eval_apply(layer, params, state, x):
    return layer.apply(params, state, x, train=False, key=None)[0]


def test_shapes_and_kernel_widths_grow_by_the_growth_rate():
    assert Model(densenet.dense_layer(4), input_shape=(6, 6, 5)).output_shape == (6, 6, 9)
    block = Model(BLOCK, input_shape=SHAPE)
    assert block.output_shape == (5, 5, K0 + N_LAYERS * GROWTH)
    params, _ = jax.eval_shape(block.init, jax.random.key(0))
    kernels = [layer[1][2]["W"].shape for layer in params]
    assert kernels == [(3, 3, K0 + l * GROWTH, GROWTH) for l in range(N_LAYERS)]
    assert all("b" not in layer[1][2] for layer in params)  # BN follows: no conv bias
    bottleneck = Model(densenet.dense_layer(2, bottleneck=True), input_shape=(5, 5, 5))
    layer = jax.eval_shape(bottleneck.init, jax.random.key(0))[0][1]
    assert [p["W"].shape for p in layer if "W" in p] == [(1, 1, 5, 8), (3, 3, 8, 2)]


def test_network_shapes_and_parameter_count_by_hand():
    # growth 2, blocks (2, 2), stem 4, compression 0.5, BN, convs without bias: 8x8x1 ->
    # stem 8x8x4 -> block 8x8x8 (layers see 4, 6 maps) -> transition 4x4x4 -> block 4x4x8
    # (layers see 4, 6) -> BN, ReLU, global average pool -> dense 8 -> 10.
    net = densenet.model(growth=2, blocks=(2, 2), stem=4)
    assert net.output_shape == (10,) and net.stateful
    params, _ = jax.eval_shape(net.init, jax.random.key(0))
    assert params[2][2]["W"].shape == (1, 1, 8, 4)  # the transition keeps floor(8 / 2) maps
    assert params[-1]["W"].shape == (10, 8)
    block = 9 * 2 * (4 + 6) + 2 * (4 + 6)  # kernels 9 k (k_0 + (l-1) k), BN 2 (k_0 + (l-1) k)
    assert count_params(params) == 9 * 4 + block + (2 * 8 + 8 * 4) + block + 2 * 8 + 90 == 590
    assert densenet.n_params(net) == 590


def test_plain_parameters_in_closed_form():
    for kw in ({}, {"batch_norm": False, "blocks": (1, 3, 2)},
               {"blocks": (2,), "input_shape": (6, 6, 3), "n_classes": 4}):
        plain = densenet.plain(width=5, **kw)
        assert densenet.n_params(plain) == densenet.plain_params(5, **kw), kw


def test_matched_plain_is_the_nearest_width():
    target = 590  # the DenseNet above
    plain, width = densenet.matched_plain(target, blocks=(2, 2))
    counts = densenet.plain_params(np.arange(1, 30), blocks=(2, 2))
    assert width == 1 + int(np.argmin(np.abs(counts - target)))
    assert np.all(np.abs(counts - target) >= abs(densenet.plain_params(width, blocks=(2, 2))
                                                 - target))
    assert plain.output_shape == (10,)
    with pytest.raises(ValueError, match=r"target: matched_plain expected at least"):
        densenet.matched_plain(10)


def test_block_is_the_papers_formula(rng):
    """Block output [x_0, x_1, x_2, x_3] with x_l = Conv(ReLU(BN([x_0, ..., x_{l-1}])))."""
    params, state = _random_block(rng)
    x0 = rng.normal(size=SHAPE).astype(np.float32)
    y = np.asarray(jax.jit(_eval_apply, static_argnums=0)(BLOCK, params, state, x0))
    maps = [x0]
    for (_, (bn, _, conv)), (_, (stats, _, _)) in zip(params, state):
        inp = np.concatenate(maps, axis=-1)  # everything before layer l
        z = (inp - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * bn["gamma"] + bn["beta"]
        maps.append(_conv_same(np.maximum(z, 0.0), conv["W"]))
    np.testing.assert_array_equal(y[..., :K0], x0)  # the block input passes unchanged
    np.testing.assert_allclose(y, np.concatenate(maps, -1), rtol=1e-5, atol=1e-5)


def test_direct_connections_carry_the_gradient_a_plain_stack_cannot(rng):
    # Zero the kernels of every layer but the last: x_1 = ... = x_{L-1} = 0. The last layer
    # still reads x_0 through its own connection, so d sum(x_L) / d x_0 != 0. The same
    # composites in series (a plain stack, x_l = H_l(x_{l-1})) lose x_0 at layer 1: exactly 0.
    params, state = _random_block(rng)
    zeroed = tuple((e, (bn, r, {"W": np.zeros_like(c["W"])} if l < N_LAYERS - 1 else c))
                   for l, (e, (bn, r, c)) in enumerate(params))
    plain = L.serial(*[densenet.composite(GROWTH) for _ in range(N_LAYERS)])  # 3 -> 2 -> 2 -> 2
    stack, stack_state = _random_block(rng, plain=True)
    stack_params = (zeroed[0][1], *stack[1:])  # its layer 1 is the block's layer 1, zeroed
    x0 = rng.normal(size=SHAPE).astype(np.float32)

    def grads(x):
        dense = jax.grad(lambda x: _eval_apply(BLOCK, zeroed, state, x)[..., -GROWTH:].sum())(x)
        stack = jax.grad(lambda x: _eval_apply(plain, stack_params, stack_state, x).sum())(x)
        return dense, stack

    g_dense, g_plain = jax.jit(grads)(x0)
    assert np.abs(g_dense).max() > 1e-2
    assert np.all(np.asarray(g_plain) == 0.0)


def test_source_weights_reads_each_source_slice():
    net = densenet.model(growth=2, blocks=(3, 2), stem=3, batch_norm=False)
    abstract, _ = jax.eval_shape(net.init, jax.random.key(0))
    params = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), abstract)
    for b, n in enumerate((3, 2)):
        k0 = 3 if b == 0 else 4  # the transition keeps floor((3 + 3 * 2) / 2) = 4 maps
        for l in range(1, n + 1):
            W = params[1 + 2 * b][l - 1][1][1]["W"]  # (3, 3, k0 + (l - 1) 2, 2)
            W[:, :, :k0] = -(10 * l)  # |w| = 10 l on x_0, 10 l + s on x_s
            for s in range(1, l):
                W[:, :, k0 + 2 * (s - 1):k0 + 2 * s] = 10 * l + s
    mats = densenet.source_weights(params, (3, 2))
    nan = np.nan
    np.testing.assert_array_equal(mats[0], [[10, nan, nan], [20, 21, nan], [30, 31, 32]])
    np.testing.assert_array_equal(mats[1], [[10, nan], [20, 21]])


def test_jit_and_no_jit_agree_in_train_mode(rng):
    """One dense layer with batch statistics across the vmapped batch and its running
    statistics updated: op by op and compiled give the same outputs and new state."""
    params, state = _random_block(rng)
    layer, params, state = densenet.dense_layer(GROWTH), params[0], state[0]
    X = rng.normal(size=(4, *SHAPE)).astype(np.float32)

    def f(params, state, X):
        return jax.vmap(lambda x: layer.apply(params, state, x, train=True, key=None),
                        axis_name="batch", out_axes=(0, None))(X)

    eager, jitted = f(params, state, X), jax.jit(f)(params, state, X)
    chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-5)
    assert eager[0].shape == (4, 5, 5, K0 + GROWTH)
    np.testing.assert_array_equal(eager[0][..., :K0], X)
    assert not np.allclose(eager[1][1][0]["mean"], state[1][0]["mean"])  # statistics moved


@pytest.mark.parametrize("kwargs, match", [
    ({"growth": 0}, r"growth: densenet.model expected a positive int, got 0"),
    ({"blocks": ()}, r"blocks: densenet.model expected a non-empty tuple of positive ints"),
    ({"blocks": (2, 2.0)}, r"blocks: .* got \(2, 2.0\)"),
    ({"compression": 0.0}, r"compression: densenet.model expected a number in \(0, 1\]"),
    ({"input_shape": (64,)}, r"input_shape: densenet.model expected one image \(H, W, C\)"),
    ({"blocks": (1, 1, 1, 1, 1)}, r"input_shape: densenet.model halves the image 4 times"),
    ({"stem": True}, r"stem: densenet.model expected a positive int, got True"),
])
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        densenet.model(**kwargs)


def test_bad_plain_and_source_arguments():
    with pytest.raises(ValueError, match=r"width: densenet.plain expected a positive int"):
        densenet.plain(width=0)
    with pytest.raises(ValueError, match=r"params: source_weights expected the params"):
        densenet.source_weights({"W": 1}, (2,))
    with pytest.raises(TypeError, match=r"net: n_params expected a nets.model.Model"):
        densenet.n_params(BLOCK)


def test_plain_params_checks_like_plain_and_numpy_scalars_are_accepted():
    for kwargs, name in [(dict(width=0), "width"), (dict(width=np.array([3, 0])), "width"),
                         (dict(width=2.5), "width"), (dict(width=5, n_classes=0), "n_classes"),
                         (dict(width=5, input_shape=(8, 8)), "input_shape")]:
        with pytest.raises(ValueError, match=rf"{name}: plain_params expected"):
            densenet.plain_params(**kwargs)
    assert densenet.plain_params(np.int64(5)) == densenet.plain_params(5)
    with pytest.raises(ValueError, match="max_width: matched_plain"):
        densenet.matched_plain(1000, max_width=0)
    a = densenet.model(growth=2, blocks=(1, 1), compression=np.float32(0.5))
    b = densenet.model(growth=2, blocks=(1, 1), compression=0.5)
    assert densenet.n_params(a) == densenet.n_params(b)
