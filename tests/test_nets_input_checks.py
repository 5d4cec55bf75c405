"""Input checks of nets found by a newcomer audit: each a clear error naming the argument,
raised before anything is compiled (most before anything is traced), where the library
once gave a cryptic JAX trace or a silent wrong result. Tiny shapes, few programs."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nets import Model, autoencoder, diffusion, gan, losses, metrics, mlp, objective, penalties
from nets import layers as L
from nets import transformer
from tests._random import random_params

V, T, D, H = 5, 6, 8, 2  # vocabulary, positions, width, heads


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# --- Embedding: negative ids, the token recorder ---------------------------------------------


def test_embedding_negative_id_is_nan_not_a_row_from_the_end():
    E = np.arange(3 * V, dtype=np.float32).reshape(V, 3)
    y, _ = L.Embedding(V, 3).apply({"E": E}, (), np.array([-1, V - 1, V, -V]))
    np.testing.assert_array_equal(y[1], E[V - 1])
    assert np.all(np.isnan(np.asarray(y)[[0, 2, 3]]))  # -1 and -V wrapped to rows V-1 and 0 before


def test_transformer_with_a_negative_id_is_nan(rng):
    net = transformer.model(vocab_size=V, n_classes=V, seq_len=4, d_model=D, n_heads=H,
                            n_layers=1)
    params, _ = random_params(net, rng)
    Z, _ = net.batch_apply(params, np.array([[1, 2, -1, 3], [1, 2, V - 1, 3]], np.int32))
    assert np.isnan(np.asarray(Z[0])).any() and not np.isnan(np.asarray(Z[1])).any()


def test_record_token_ranges_sees_every_embedding_traced():
    emb, other = L.Embedding(7, 2), L.Embedding(11, 2)
    _, p7, _ = emb.init(jax.random.key(0), (3,))
    _, p11, _ = other.init(jax.random.key(1), (3,))

    def both(x):
        return emb.apply(p7, (), x)[0].sum() + other.apply(p11, (), x)[0].sum()

    ids = jax.ShapeDtypeStruct((3,), jnp.int32)
    with L.record_token_ranges() as outer:
        with L.record_token_ranges() as inner:
            jax.eval_shape(lambda x: both(x), ids)
        jax.eval_shape(lambda x: emb.apply(p7, (), x)[0], ids)
    assert inner == [7, 11] and outer == [7, 11, 7]
    jax.eval_shape(lambda x: both(x), ids)  # outside the context nothing is recorded
    assert outer == [7, 11, 7]
    with L.record_token_ranges() as seen, pytest.raises(TypeError, match="integer token ids"):
        jax.eval_shape(lambda x: emb.apply(p7, (), x)[0], jax.ShapeDtypeStruct((3,), jnp.float32))
    assert seen == []
    assert "record_token_ranges" in L.__all__


# --- objective.make: a classification loss on an identity model; probability targets ---------


def test_classification_loss_on_an_identity_model_is_refused():
    ae = autoencoder.linear(4, 2)
    for loss in ("cross_entropy", "binary_cross_entropy"):
        with pytest.raises(ValueError, match=r"loss: .* this model's output is 'identity' .* "
                                             r"loss=\"squared_error\""):
            objective.make(ae.model, loss)
    with pytest.raises(ValueError, match=r"loss: cross_entropy"):
        objective.make(ae.model)  # the default loss
    objective.make(ae.model, "squared_error")  # fine


def test_probability_targets_must_be_distributions(rng):
    net = mlp.model((3, 4, 3))
    obj = objective.make(net, "cross_entropy")
    X = np.zeros((4, 3), np.float32)
    P = np.full((4, 3), 1 / 3, np.float32)
    obj._check_targets(X, P)  # probabilities pass
    for bad in (P * 2, np.where(np.eye(4, 3) > 0, 1.5, -0.25).astype(np.float32),
                rng.normal(size=(4, 3)).astype(np.float32)):
        with pytest.raises(ValueError, match=r"Y: expected probability vectors \(non-negative, "
                                             r"summing to 1 per example\) for cross_entropy, "
                                             r"got rows summing to .*squared_error"):
            obj(None, X, bad)  # refused before params are looked at


# --- train= must be explicit for a model with Dropout or BatchNorm ---------------------------


def test_train_flag_is_required_for_stateful_models(key):
    X, y = np.zeros((2, 3), np.float32), np.zeros(2, np.int32)
    drop = mlp.model((3, 4, 2), drop_rate=0.5)
    params, state = jax.eval_shape(drop.init, key)
    with pytest.raises(TypeError, match=r"train: this model carries state at state\[2\] "
                                        r"\(Dropout, BatchNorm or a layer of your own\); pass "
                                        r"train=True for a training step or train=False"):
        objective.make(drop)(params, X, y, key=key, model_state=state)
    assert jax.eval_shape(lambda p, s: objective.make(drop)(p, X, y, train=False,
                                                            model_state=s), params, state)
    plain = mlp.model((3, 4, 2))
    p, _ = jax.eval_shape(plain.init, key)
    assert jax.eval_shape(lambda p: objective.make(plain)(p, X, y), p).shape == ()


def test_an_apply_fn_returning_a_layers_pair_is_named():
    """make(apply_fn) with apply_fn returning (z, state): once an AttributeError ('tuple'
    object has no attribute 'ndim') from inside the loss."""
    net = mlp.model((3, 4, 2))
    params, state = jax.eval_shape(net.init, jax.random.key(0))
    X, y = np.zeros((2, 3), np.float32), np.zeros(2, np.int32)
    pair = objective.make(lambda p, x: net.layer.apply(p, state, x, train=False, key=None))
    with pytest.raises(TypeError, match=r"^apply_fn: expected apply_fn\(params, x\) to return "
                                        r"the array z, got a tuple \(a layer's \(y, state\)\?"):
        jax.eval_shape(pair, params, X, y)
    with pytest.raises(TypeError, match=r"^cross_entropy: z: expected the array of outputs for "
                                        r"one example, got a tuple \(a layer's \(y, state\)\?"):
        jax.eval_shape(lambda z: losses.cross_entropy((z, ()), 0), jnp.zeros(2))
    single = objective.make(lambda p, x: net.layer.apply(p, state, x, train=False, key=None)[0])
    assert jax.eval_shape(single, params, X, y).shape == ()


# --- attention_maps ---------------------------------------------------------------------------


def test_attention_maps_checks_ids_and_heads_and_knows_encoders(rng):
    net = transformer.model(vocab_size=V, n_classes=V, seq_len=T, d_model=D, n_heads=H,
                            n_layers=1)
    params, _ = random_params(net, rng)
    ids = rng.integers(0, V, (2, T)).astype(np.int32)
    with pytest.raises(ValueError, match=r"ids: attention_maps expected one sequence of shape "
                                         r"\(T,\), got \(2, 6\); call it per sequence or "
                                         r"jax.vmap"):
        transformer.attention_maps(params, ids, n_heads=H)
    with pytest.raises(ValueError, match=r"n_heads: attention_maps expected a divisor of the "
                                         r"model's d_model = 8, got 3"):
        transformer.attention_maps(params, ids[0], n_heads=3)
    with pytest.raises(TypeError, match=r"ids: attention_maps expected integer token ids"):
        transformer.attention_maps(params, ids[0].astype(np.float32), n_heads=H)
    with pytest.raises(ValueError, match=r"params: attention_maps expected the params of "
                                         r"transformer.model"):
        transformer.attention_maps(params[0], ids[0], n_heads=H)
    enc = transformer.model(vocab_size=V, n_classes=V, seq_len=T, d_model=D, n_heads=H,
                            n_layers=1, causal=False)
    pe, _ = random_params(enc, rng)
    maps = jax.jit(lambda p, x: [transformer.attention_maps(p, x, n_heads=H, causal=c)[0]
                                 for c in (True, False)])(pe, ids[0])
    causal, full = (np.asarray(P) for P in maps)
    above = np.triu_indices(T, 1)
    assert np.all(causal[:, above[0], above[1]] == 0) and np.all(full[:, above[0], above[1]] > 0)


# --- GAN and DDPM steps fed (X, y) ------------------------------------------------------------


def test_gan_and_ddpm_steps_refuse_a_tuple_batch(key):
    X, y = np.zeros((8, 2), np.float32), np.zeros(8, np.int32)
    G, Dn = gan.mlp_player((4,), n_in=2, n_out=2), gan.mlp_player((4,), n_in=2, n_out=1)
    step = gan.make_step(G, Dn, optax.sgd(0.1), optax.sgd(0.1))
    with pytest.raises(TypeError, match=r"batch: expected an array of shape \(b, 2\), got a "
                                        r"tuple; the GAN trains on X alone: pass X, not "
                                        r"\(X, y\)"):
        step(None, (X, y), key)
    den = diffusion.denoiser(2, hidden=(4,), emb_dim=4)
    step = diffusion.make_step(den, optax.sgd(0.1), diffusion.linear_schedule(10))
    with pytest.raises(TypeError, match=r"batch: expected an array of shape \(b, 2\), got a "
                                        r"tuple; the DDPM trains on X alone"):
        step(None, (X, y), key)


# --- diffusion: t and dim ---------------------------------------------------------------------


def test_q_sample_checks_t_and_time_embedding_checks_dim():
    s = diffusion.linear_schedule(10)
    x0 = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"t: expected steps in \[0, T\] = \[0, 10\], got "
                                         r"values in \[3, 15\]"):
        diffusion.q_sample(s, x0, np.array([3, 15]), x0)
    with pytest.raises(ValueError, match=r"t: expected steps in \[0, T\]"):
        diffusion.q_sample(s, x0, -1, x0)
    with pytest.raises(TypeError, match=r"t: expected an int or integer steps in \[0, 10\], "
                                        r"got dtype float32"):
        diffusion.q_sample(s, x0, np.array([1.5, 5.0], np.float32), x0)
    with pytest.raises(TypeError, match=r"t: .* got dtype float32"):  # traced: by dtype
        jax.eval_shape(lambda t: diffusion.q_sample(s, x0, t, x0),
                       jax.ShapeDtypeStruct((2,), jnp.float32))
    with pytest.raises(ValueError, match=r"t: expected shape \(\) or \(2,\)"):
        diffusion.q_sample(s, x0, np.arange(3), x0)
    with pytest.raises(ValueError, match=r"dim: time_embedding expected an even int .* got 5"):
        diffusion.time_embedding(np.arange(3), 5)


# --- Model docstring, pca, penalties, mlp_objective, metrics ----------------------------------


def test_model_docstring_says_when_a_misfit_layer_raises():
    m = Model(L.serial(L.Conv2D(4, 3), L.Flatten(), L.Dense(10)), input_shape=(64,))
    assert "not at construction" in Model.__doc__
    with pytest.raises(ValueError, match="Conv2D"):
        _ = m.output_shape


def test_pca_refuses_more_components_than_the_svd_has(rng):
    X = rng.normal(size=(5, 8))
    assert autoencoder.pca(X, 5).components.shape == (5, 8)
    with pytest.raises(ValueError, match=r"k: expected at most min\(n, n_in\) = 5 components "
                                         r"for X of shape \(5, 8\) .* got k=6"):
        autoencoder.pca(X, 6)
    with pytest.raises(ValueError, match=r"k: expected an int >= 1, got 0"):
        autoencoder.pca(X, 0)


@pytest.mark.parametrize("spec, got", [
    (1e-3, r"got float 0.001 \(a bare lambda\? pass \{'l2': 0.001\}\)"),
    ("l2", r"got str 'l2' \(one penalty\? pass \{'l2': lambda\}\)"),
    (("l2", 1e-3), r"got the single pair \('l2', 0.001\)"),
    ([0.1], r"got 0.1 among the items of \[0.1\]"),
])
def test_penalty_spec_errors_say_what_a_spec_is(spec, got):
    with pytest.raises(TypeError, match=r"penalties: expected a dict \{name: lambda\} or a list "
                                        r"of \(name, lambda\) pairs, " + got):
        penalties.terms(spec)


def test_mlp_objective_checks_rows_concrete_and_traced(key):
    p = mlp.init(key, (3, 4, 2))
    X, y = np.zeros((5, 3), np.float32), np.array([0, 1, 0, 1])
    match = r"Y: expected one target per row of X \(5 rows\), got shape \(4,\)"
    with pytest.raises(ValueError, match=match):
        objective.mlp_objective(p, X, y)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(lambda X, y: objective.mlp_objective(p, X, y), X, y)


def test_error_rate_refuses_float_and_column_labels_and_labels_out_of_range():
    Z = np.zeros((4, 2), np.float32)
    with pytest.raises(TypeError, match=r"y: expected integer class labels of shape \(4,\), got "
                                        r"dtype float32"):
        metrics.error_rate(Z, np.array([0, 1, 1, 0], np.float32))
    with pytest.raises(TypeError, match=r"y: expected integer class labels"):  # traced too
        jax.eval_shape(metrics.error_rate, Z, jax.ShapeDtypeStruct((4,), jnp.float32))
    with pytest.raises(ValueError, match=r"y: expected integer labels of shape \(4,\) or "
                                         r"probabilities of shape \(4, 2\).*got shape \(4, 1\) "
                                         r"\(pass y.ravel\(\) for labels\)"):
        metrics.error_rate(Z, np.zeros((4, 1), np.int32))
    with pytest.raises(ValueError, match=r"y: expected class labels in \[0, 2\) for Z with 2 "
                                         r"outputs, got 7"):
        metrics.error_rate(Z, np.array([7, 0, 1, 0]))
    with pytest.raises(ValueError, match=r"got -2"):
        metrics.error_rate(np.zeros((1, 3, 2)), np.array([[0, -1, -2]]))  # -1: not scored
    # one sigmoid unit: 0/1 targets as floats stay accepted (binary cross-entropy's)
    assert float(metrics.error_rate(Z[:, :1], np.array([0.0, 1.0, 1.0, 0.0]))) == 0.5
