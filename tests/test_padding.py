"""Padded sequences (the sequence models' ``pad_id=``): a right-padded sequence gets, at its
real positions, exactly what a model of its own length gives it (forward and gradient, in
float64), for the Transformer (causal or encoder, every attention impl), Mamba and the LSTM;
the readouts read the real positions only; bad ``pad_id`` values are refused by name.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nets
import optax
import train
from nets import layers as L
from nets import mamba, rnn, transformer

T, t, V = 7, 4, 9

# (model, its options, readout): every readout of the written attention, causal and not;
# each other attention impl, Mamba and the LSTM with the readouts that read the mask
CASES = [(transformer, dict(causal=c, impl="written"), r)
         for c in (True, False) for r in ("last", "mean", "all")] + [
    (transformer, dict(causal=False, impl="jax"), "mean"),
    (transformer, dict(causal=False, impl="custom_vjp"), "all"),
    (transformer, dict(causal=True, impl="custom_vjp"), "last"),
    (mamba, {}, "last"), (mamba, {}, "mean"), (rnn, {}, "last"), (rnn, {}, "mean")]
IDS = [f"{m.__name__.split('.')[-1]}-{'-'.join(map(str, kw.values()))}-{r}"
       for m, kw, r in CASES]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _sequences(rng):
    ids = rng.integers(1, V, size=t)
    return ids, np.concatenate([ids, np.zeros(T - t, ids.dtype)])  # pad id 0 on the right


def _f64(params):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)


@pytest.mark.parametrize("module, kw, readout", CASES, ids=IDS)
def test_a_right_padded_sequence_is_the_sequence_alone(x64, rng, module, kw, readout):
    padded = module.model(vocab_size=V, n_classes=3, seq_len=T, readout=readout, pad_id=0, **kw)
    plain = module.model(vocab_size=V, n_classes=3, seq_len=T, readout=readout, **kw)
    short = module.model(vocab_size=V, n_classes=3, seq_len=t, readout=readout, **kw)
    params = _f64(padded.init(jax.random.key(1))[0])
    ids, long = _sequences(rng)
    real = (lambda y: y[:t]) if readout == "all" else (lambda y: y)  # noqa: E731
    G = jnp.asarray(rng.normal(size=short.output_shape))

    def loss(p, model, x):  # a random linear functional: every output's gradient counts
        return jnp.sum(G * real(model.apply(p, x)))

    def value_and_grad(model, x):
        return jax.jit(jax.value_and_grad(lambda p: loss(p, model, x)))(params)

    want, g_want = value_and_grad(short, ids)
    got, g_got = value_and_grad(padded, long)
    # float64 to rounding; impl="jax" computes its softmax in float32 (module doc)
    tol = dict(rtol=1e-5, atol=1e-7) if kw.get("impl") == "jax" else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got, want, **tol)
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want)):
        np.testing.assert_allclose(a, b, **tol)
    # teeth: without the mask the padding changes what an encoder or a readout sees
    if readout != "all" or kw.get("causal") is False:
        assert abs(float(loss(params, plain, long)) - float(want)) > 1e-4


@pytest.mark.parametrize("readout", ["last", "mean"])
def test_a_sequence_without_padding_is_unchanged_by_pad_id(rng, readout):
    kw = dict(vocab_size=V, n_classes=3, seq_len=T, readout=readout, causal=False)
    padded, plain = transformer.model(pad_id=0, **kw), transformer.model(**kw)
    params, _ = plain.init(jax.random.key(2))
    X = rng.integers(1, V, size=(5, T))
    np.testing.assert_allclose(padded.batch_apply(params, X)[0], plain.batch_apply(params, X)[0],
                               rtol=1e-6, atol=1e-6)


def test_padding_alone_is_finite_and_reads_position_T_minus_1_and_a_zero_mean(rng):
    kw = dict(vocab_size=V, n_classes=3, seq_len=T, causal=False, pad_id=0)
    params, _ = transformer.model(**kw).init(jax.random.key(3))
    pads = jnp.zeros(T, int)
    z_all = transformer.model(readout="all", **kw).apply(params, pads)
    z_last = transformer.model(readout="last", **kw).apply(params, pads)
    assert np.isfinite(np.asarray(z_all)).all()
    np.testing.assert_allclose(z_last, z_all[-1], rtol=1e-6)
    g = jax.grad(lambda p: jnp.sum(transformer.model(readout="mean", **kw).apply(p, pads)))(
        params)
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(g))


def test_the_readouts_on_a_mask():
    x = jnp.arange(12.0).reshape(4, 3)
    mask = jnp.array([True, True, False, False])
    for kind, want in (("last", x[1]), ("mean", (x[0] + x[1]) / 2)):
        y, _ = transformer._sequence.Readout(kind).apply((), (), x, mask=mask)
        np.testing.assert_array_equal(y, want)
    y, _ = transformer._sequence.Readout("mean").apply((), (), x, mask=jnp.zeros(4, bool))
    np.testing.assert_array_equal(y, jnp.zeros(3))


def test_attention_maps_with_pad_id_put_no_weight_on_the_padding(rng):
    net = transformer.model(vocab_size=V, n_classes=3, seq_len=T, causal=False, pad_id=0)
    params, _ = net.init(jax.random.key(4))
    _, long = _sequences(rng)
    for P in transformer.attention_maps(params, long, n_heads=2, causal=False, pad_id=0):
        assert float(jnp.max(P[:, :t, t:])) == 0.0  # real queries, padded keys
        np.testing.assert_allclose(jnp.sum(P, -1), 1.0, rtol=1e-6)
    for P in transformer.attention_maps(params, long, n_heads=2, causal=False):
        assert float(jnp.min(P[:, :t, t:])) > 0.0  # teeth: unmasked, they attend to pads


def test_a_layer_of_your_own_gets_the_mask_through_the_combinators():
    seen = []

    def MaskCount():
        def init(key, input_shape):
            return tuple(input_shape), (), ()

        def apply(params, state, x, *, train=False, key=None, mask=None):
            seen.append(mask)
            return x * jnp.sum(mask), state
        return L.Layer(init, L.reads_mask(apply))

    net = L.padded(
        L.serial(L.Embedding(V, 2), L.residual(L.serial(L.LayerNorm(), MaskCount())),
                 L.Relu()), pad_id=0)
    assert L.takes_mask(L.serial(L.Relu(), MaskCount())) and not L.takes_mask(L.Relu())
    _, params, state = net.init(jax.random.key(0), (T,))
    ids = jnp.array([3, 1, 2, 0, 0, 0, 0])
    net.apply(params, state, ids, train=False, key=None)
    (mask,) = seen  # a layer without mask= (Relu, LayerNorm) is called as before
    np.testing.assert_array_equal(mask, ids != 0)


def test_fit_trains_a_padded_encoder_on_sequences_of_different_lengths(rng):
    """The class is whether token 1 occurs more often than token 2 among the real tokens;
    the pad id 0 fills the rest. The padded encoder's mean readout learns it."""
    n = 256
    lengths = rng.integers(2, T + 1, size=n)
    X = np.zeros((n, T), np.int32)
    for i, k in enumerate(lengths):
        X[i, :k] = rng.integers(1, 3, size=k)
    Y = ((X == 1).sum(1) > (X == 2).sum(1)).astype(np.int32)
    net = transformer.model(vocab_size=3, n_classes=2, seq_len=T, causal=False,
                            readout="mean", pad_id=0, d_model=8, n_layers=1)
    params, _ = net.init(jax.random.key(6))
    result = train.fit(nets.objective.make(net, "cross_entropy"), params, (X, Y),
                       optimizer=optax.adam(1e-2), epochs=20, batch_size=32,
                       key=jax.random.key(5), progress=False)
    accuracy = float(np.mean(np.argmax(net.batch_apply(result.params, X)[0], 1) == Y))
    assert result.history["loss"][-1] < 0.5 * result.history["loss"][0]
    assert accuracy > 0.9, accuracy


@pytest.mark.parametrize("module", [transformer, mamba, rnn])
def test_bad_pad_ids_are_refused_by_name(module):
    kw = dict(n_classes=2, seq_len=T)
    with pytest.raises(ValueError, match=r"pad_id: .*needs vocab_size"):
        module.model(d_in=3, pad_id=0, **kw)
    with pytest.raises(ValueError, match=r"pad_id: .*expected an int in \[0, 8\], got 9"):
        module.model(vocab_size=V, pad_id=9, **kw)
    for bad in (True, 0.0, "0"):
        with pytest.raises(TypeError, match=r"pad_id: .*expected an int in \[0, 8\]"):
            module.model(vocab_size=V, pad_id=bad, **kw)


def _fit(net, X, Y, validation=None):
    params, _ = net.init(jax.random.key(0))
    return train.fit(nets.objective.make(net, "cross_entropy"), params, (X, Y),
                     optimizer=optax.sgd(0.1), epochs=1, batch_size=2, key=jax.random.key(1),
                     validation=validation, progress=False)


LEFT = r"X: expected right padding with pad_id 0 .*got X\[1, 1\] = 0 followed by X\[1, 2\] = 3"


def test_left_padding_and_a_pad_id_inside_the_data_are_refused_before_compiling():
    net = transformer.model(vocab_size=V, n_classes=2, seq_len=5, causal=False,
                            readout="mean", pad_id=0)
    params, _ = net.init(jax.random.key(0))
    Y = np.array([0, 1])
    for X in (np.array([[4, 2, 0, 0, 0], [0, 0, 3, 1, 2]]),   # left padding
              np.array([[4, 2, 0, 0, 0], [3, 0, 3, 1, 2]])):  # pad id used as a token
        with pytest.raises(ValueError, match=LEFT):
            _fit(net, X, Y)
        with pytest.raises(ValueError, match=LEFT):
            nets.objective.make(net, "cross_entropy")(params, X, Y)
    right = np.array([[4, 2, 0, 0, 0], [3, 3, 3, 1, 2]])
    with pytest.raises(ValueError, match=LEFT.replace("X", "X_val")):
        _fit(net, right, Y, validation=(np.array([[4, 2, 0, 0, 0], [0, 0, 3, 1, 2]]), Y))
    assert np.isfinite(_fit(net, right, Y).history["loss"][0])


def test_scored_padding_is_refused_before_compiling():
    net = transformer.model(vocab_size=V, n_classes=V, seq_len=5, pad_id=0)
    params, _ = net.init(jax.random.key(0))
    X = np.array([[4, 2, 7, 0, 0], [3, 3, 3, 1, 2]])
    Y = np.array([[2, 7, 0, 0, 0], [3, 3, 1, 2, 5]])  # the naive shift scores the pads
    said = r"Y: expected label -1 \(not scored\) at the padding, .* got Y\[0, 3\] = 0"
    with pytest.raises(ValueError, match=said):
        _fit(net, X, Y)
    with pytest.raises(ValueError, match=said):
        nets.objective.make(net, "cross_entropy")(params, X, Y)
    Y[0, 3:] = -1
    assert np.isfinite(_fit(net, X, Y).history["loss"][0])


def _mean_layer(*, marked: bool, mask_parameter: bool):
    def init(key, input_shape):
        return tuple(input_shape[1:]), (), ()

    if mask_parameter:
        def apply(params, state, x, *, train=False, key=None, mask=None):
            return jnp.mean(x, axis=0), state
    else:
        def apply(params, state, x, *, train=False, key=None):
            return jnp.mean(x, axis=0), state
    return L.Layer(init, L.reads_mask(apply) if marked else apply)


@pytest.mark.parametrize("marked, mask_parameter, says", [
    (False, True, r"serial: layers\[1\]: \S*apply has a mask parameter but is not marked "
                  r"to read the padding mask, so it would never get it"),
    (True, False, r"serial: layers\[1\]: \S*apply is marked by reads_mask but has no mask "
                  r"parameter; give it mask=None"),
])
def test_a_layer_of_your_own_that_half_asks_for_the_mask_is_refused(marked, mask_parameter,
                                                                    says):
    layer = _mean_layer(marked=marked, mask_parameter=mask_parameter)
    net = nets.Model(L.padded(L.serial(L.Embedding(V, 4), layer, L.Dense(2)), 0), (T,))
    params, _ = net.init(jax.random.key(0))
    with pytest.raises(TypeError, match=says):
        net.apply(params, jnp.array([3, 1, 2, 0, 0, 0, 0]))


def test_padded_refuses_what_is_not_one_sequence_of_token_ids():
    net = nets.Model(L.padded(L.serial(L.Flatten(), L.Dense(2)), 0), (T, 3))
    params, _ = net.init(jax.random.key(0))
    with pytest.raises(TypeError, match=r"x: padded expected one sequence of integer token "
                                        r"ids \(T,\) .*got float32 of shape \(7, 3\)"):
        net.apply(params, jnp.ones((T, 3)))


@pytest.mark.parametrize("impl, readout", [("written", "mean"), ("custom_vjp", "all")])
def test_the_gradient_of_a_padded_encoder_against_central_differences(x64, impl, readout):
    """Every coordinate, float64: autodiff through the masked attention and readout (and
    the hand-derived backward pass with impl="custom_vjp") against central differences."""
    from nets import gradcheck
    net = transformer.model(vocab_size=V, n_classes=3, seq_len=5, d_model=4, n_heads=2,
                            n_layers=1, d_mlp=8, causal=False, readout=readout, pad_id=0,
                            impl=impl)
    params = _f64(net.init(jax.random.key(7))[0])
    X = np.array([[3, 1, 2, 0, 0], [4, 4, 5, 6, 0], [1, 0, 0, 0, 0]])
    Y = (np.array([0, 2, 1]) if readout == "mean" else
         np.where(X == 0, -1, np.array([[0, 1, 2, 0, 1]] * 3)))
    report = gradcheck.check(nets.objective.make(net, "cross_entropy"), params, X, Y)
    assert report.worst < 1e-6, report.table()


def test_an_encoder_composed_from_the_public_pieces_is_the_models_own(rng):
    """transformer.block, PositionalEncoding, per_position, Readout and layers.padded build
    the same padded encoder as transformer.model(pad_id=...): the same params, the same
    outputs (a researcher's own variant starts from these)."""
    kw = dict(vocab_size=V, n_classes=3, seq_len=T, d_model=8, n_heads=2, n_layers=1,
              d_mlp=16, causal=False, readout="mean", pad_id=0)
    built = transformer.model(**kw)
    own = nets.Model(L.padded(L.serial(
        L.Embedding(V, 8), transformer.PositionalEncoding(),
        transformer.block(2, 16, causal=False), L.LayerNorm(),
        transformer.per_position(L.Dense(3)), transformer.Readout("mean")), 0), (T,))
    params, _ = built.init(jax.random.key(3))
    _, long = _sequences(rng)
    np.testing.assert_array_equal(own.apply(params, long), built.apply(params, long))
