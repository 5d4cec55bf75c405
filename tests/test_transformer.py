"""nets.transformer: the positional encoding is Vaswani et al.'s formula; multi-head attention
is eq. 1 per head (a NumPy oracle) and equals jax.nn.dot_product_attention; causality: the
output at position t has exactly zero gradient w.r.t. every input after t (and not before);
attention maps; jit and no-jit agree; shapes and bad arguments; drop_rate= (section 5.4).
A few small programs."""

import functools
import zlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import train
from nets import layers as L
from nets import objective, transformer
from nets.model import Model
from tests._random import random_params

T, D, H = 6, 8, 2  # positions, width, heads


@pytest.fixture
def rng(request):
    """A NumPy generator seeded by the test's node id, so a failure replays."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def _softmax(S):
    E = np.exp(S - S.max(-1, keepdims=True))
    return E / E.sum(-1, keepdims=True)


def _oracle(params, x, causal):
    """Eq. 1 head by head in NumPy: head j owns rows j d_h .. (j+1) d_h - 1 of Wq, Wk, Wv."""
    dh = D // H
    heads = []
    for j in range(H):
        rows = slice(j * dh, (j + 1) * dh)
        Q, K, V = (x @ params[w][rows].T for w in ("Wq", "Wk", "Wv"))
        S = Q @ K.T / np.sqrt(dh)
        if causal:
            S = np.where(np.tril(np.ones((T, T), bool)), S, -np.inf)
        heads.append(_softmax(S) @ V)
    return np.concatenate(heads, axis=1) @ params["Wo"].T


def test_sinusoidal_encoding_is_the_formula():
    d = 6
    pe = transformer.sinusoidal_encoding(50, d)
    t = np.arange(50)[:, None]
    for i in range(d // 2):
        np.testing.assert_allclose(pe[:, 2 * i], np.sin(t[:, 0] / 10000 ** (2 * i / d)),
                                   atol=1e-6)
        np.testing.assert_allclose(pe[:, 2 * i + 1], np.cos(t[:, 0] / 10000 ** (2 * i / d)),
                                   atol=1e-6)
    assert transformer.sinusoidal_encoding(4, 5).shape == (4, 5)  # odd d: a last sine


def test_attention_is_eq_1_per_head_and_equals_jax_and_jit_agrees(rng):
    x = rng.normal(size=(T, D)).astype(np.float32)
    layer = Model(transformer.MultiHeadAttention(H), input_shape=(T, D))
    params, _ = random_params(layer, rng)

    def outputs(params, x):
        mine = {c: transformer.attention(params, x, n_heads=H, causal=c) for c in (True, False)}
        xla = {c: transformer.attention(params, x, n_heads=H, causal=c, impl="jax")[0]
               for c in (True, False)}
        return mine, xla

    (mine, xla) = jax.jit(outputs)(params, x)
    for causal in (True, False):
        y, P = mine[causal]
        np.testing.assert_allclose(y, _oracle(params, x, causal), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(xla[causal], y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(P).sum(-1), 1.0, rtol=1e-6)
        assert P.shape == (H, T, T)
    assert np.all(np.triu(np.asarray(mine[True][1]), 1) == 0.0)
    eager = layer.layer.apply(params, (), x)[0]  # op by op
    chex.assert_trees_all_close(eager, mine[True][0], rtol=1e-6, atol=1e-6)


def test_output_at_t_does_not_depend_on_inputs_after_t(rng):
    """d z_t / d x_s is exactly 0 for s > t through a block (positional encoding, layer
    norm, attention, MLP) and the head, and nonzero for s <= t; the same model without the
    mask (the control, same params) lets the later inputs reach z_t."""
    kw = dict(d_in=3, n_classes=2, seq_len=T, d_model=D, n_heads=H, n_layers=1, d_mlp=8)
    nets = {"causal": transformer.model(**kw), "unmasked": transformer.model(causal=False, **kw)}
    params, state = random_params(nets["causal"], rng)

    @jax.jit
    def jacobians(params, x):
        return {k: jax.jacrev(lambda x: n.layer.apply(params, state, x)[0])(x)
                for k, n in nets.items()}  # each (T, 2, T, 3)

    x = rng.normal(size=(T, 3)).astype(np.float32)
    for name, J in jacobians(params, x).items():
        per_pair = np.abs(np.asarray(J)).max(axis=(1, 3))  # [t, s]
        later = per_pair[np.triu_indices(T, 1)]
        assert np.all(later > 0.0) if name == "unmasked" else np.all(later == 0.0), name
        assert np.all(per_pair[np.tril_indices(T)] > 0.0), name


def test_token_model_shapes_and_attention_maps(rng):
    net = transformer.model(vocab_size=7, n_classes=3, seq_len=T, d_model=D, n_heads=H,
                            n_layers=2, readout="last")
    assert net.input_shape == (T,) and net.output_shape == (3,)
    params, state = random_params(net, rng)
    X = rng.integers(0, 7, size=(3, T))

    @jax.jit
    def run(params, X):
        Z = jax.vmap(lambda x: net.layer.apply(params, state, x)[0])(X)
        # the second block's attention, from the first block's real output
        h0 = params[0]["E"][X[0]] + transformer.sinusoidal_encoding(T, D)
        h1 = transformer.block(H, 16).apply(params[2], state[2], h0)[0]
        (ln, att), _ = params[3]
        ln_h1 = L.LayerNorm().apply(ln, (), h1)[0]
        P2 = transformer.attention(att, ln_h1, n_heads=H, causal=True)[1]
        return Z, transformer.attention_maps(params, X[0], n_heads=H), P2  # the 2 blocks

    Z, maps, P2 = run(params, X)
    assert Z.shape == (3, 3) and len(maps) == 2
    # the replay runs each block's MLP (an empty state once skipped it silently)
    np.testing.assert_allclose(maps[1], P2, rtol=1e-5, atol=1e-7)
    for P in maps:
        P = np.asarray(P)
        assert P.shape == (H, T, T) and np.all(np.triu(P, 1) == 0.0)
        np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-5)
    block = Model(transformer.block(H, 16), input_shape=(T, D))
    assert block.output_shape == (T, D)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"needs d divisible by n_heads"):
        Model(transformer.MultiHeadAttention(3), input_shape=(T, D)).output_shape
    with pytest.raises(ValueError, match=r"impl: MultiHeadAttention expected one of"):
        transformer.MultiHeadAttention(2, impl="flash")
    with pytest.raises(ValueError, match=r"x: MultiHeadAttention expected one sequence"):
        transformer.MultiHeadAttention(1).apply(
            {k: jnp.zeros((4, 4)) for k in ("Wq", "Wk", "Wv", "Wo")}, (), jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"transformer.model: expected exactly one of"):
        transformer.model(n_classes=2, seq_len=4)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_custom_vjp_attention_is_the_written_one_with_its_hand_derived_gradient(rng, heads):
    """impl="custom_vjp": the written forward pass, differentiated by the module doc's
    backward pass. In float64, causal and unmasked, its output equals the written
    attention's and its gradients (w.r.t. Wq, Wk, Wv, Wo and x) equal jax.grad's of the
    written lines to 1e-10 per element; without the rowsum(dO * O) term the backward is off
    by orders of magnitude more (the comparison has teeth); jax.hessian w.r.t. x agrees."""
    from nets import gradcheck
    err = functools.partial(gradcheck.relative_error, floor=1e-3)
    with jax.enable_x64(True):
        params = {k: rng.normal(size=(D, D)) for k in ("Wq", "Wk", "Wv", "Wo")}
        x, G = rng.normal(size=(T, D)), rng.normal(size=(T, D))

        def loss(params, x, causal, impl):
            return jnp.sum(G * transformer.attention(params, x, n_heads=heads, causal=causal,
                                                     impl=impl)[0])

        grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=(2, 3))
        for causal in (True, False):
            (v_mine, g_mine), (v_ref, g_ref) = (grad(params, x, causal, impl)
                                                for impl in ("custom_vjp", "written"))
            assert abs(float(v_mine) - float(v_ref)) <= 1e-12 * abs(float(v_ref))
            for a, b in zip(jax.tree.leaves(g_mine), jax.tree.leaves(g_ref)):
                assert err(np.asarray(a), np.asarray(b)) < 1e-10, causal
        # teeth: the backward pass with the row sums dropped (o = 0 in the residuals)
        dh = D // heads
        q, k, v = (jnp.asarray((x @ params[w].T).reshape(T, heads, dh))
                   for w in ("Wq", "Wk", "Wv"))
        o, res = transformer._attention_forward(q, k, v, None, True)
        do = jnp.asarray(rng.normal(size=o.shape))
        right = transformer._attention_backward(True, res, do)
        wrong = transformer._attention_backward(True, (*res[:4], jnp.zeros_like(o)), do)
        assert err(np.asarray(wrong[0]), np.asarray(right[0])) > 1e-3
        _, vjp = jax.vjp(lambda q, k, v: transformer._heads_attention(q, k, v, True)[0],
                         q, k, v)
        for a, b in zip(right, vjp(do)):
            assert err(np.asarray(a), np.asarray(b)) < 1e-10
        # jax.hessian (forward over reverse) differentiates the backward pass: the same
        hess = {impl: jax.jit(jax.hessian(lambda x: loss(params, x, True, impl)))(x)
                for impl in ("custom_vjp", "written")}
        assert err(np.asarray(hess["custom_vjp"]), np.asarray(hess["written"])) < 1e-10


def test_custom_vjp_attention_trains_a_model_like_the_written_one(rng):
    """The same model and data: one training step's loss and gradients agree (float32)."""
    kw = dict(vocab_size=5, n_classes=3, seq_len=T, d_model=D, n_heads=H, n_layers=2)
    nets = {impl: transformer.model(impl=impl, **kw) for impl in ("written", "custom_vjp")}
    params, state = random_params(nets["written"], rng)
    X = rng.integers(0, 5, size=(4, T))
    Y = rng.integers(0, 3, size=(4, T))

    def loss(net, params):
        Z = jax.vmap(lambda x: net.layer.apply(params, state, x)[0])(X)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(Z), Y[..., None], -1))

    out = {impl: jax.jit(jax.value_and_grad(functools.partial(loss, net)))(params)
           for impl, net in nets.items()}
    np.testing.assert_allclose(out["custom_vjp"][0], out["written"][0], rtol=1e-6)
    chex.assert_trees_all_close(out["custom_vjp"][1], out["written"][1], rtol=1e-4,
                                atol=1e-6)


def check_dropout_option(make, who: str, n_dropout: int, X, Y, key):
    """The contract of a sequence model's ``drop_rate=`` (shared by test_mamba and test_rnn):
    ``make(drop_rate=0.3)`` has ``n_dropout`` Dropout rates in its state (stateful: no call
    without ``train=``) and the params of ``make()`` (same structure, same initial values);
    in eval mode it IS ``make()`` with the same params; in train mode it differs, the same
    key reproduces it, and with the rates set to 0 it is eval mode again (the traced rate
    is used); a bad rate is refused by name; ``train.fit`` trains it (the objective passes
    ``train=``) and keeps the rate."""
    plain, dropped = make(), make(drop_rate=0.3)
    assert not plain.stateful and dropped.stateful
    k_init, k_drop, k_other, k_fit = jax.random.split(key, 4)
    params, _ = plain.init(k_init)
    params_d, state = dropped.init(k_init)
    assert jax.tree.structure(params_d) == jax.tree.structure(params)
    chex.assert_trees_all_equal(params_d, params)
    rates = jax.tree.leaves(state)
    assert len(rates) == n_dropout and all(float(r) == np.float32(0.3) for r in rates)

    Z, _ = plain.batch_apply(params, X)
    Z_eval, same = dropped.batch_apply(params, X, state=state, train=False)
    np.testing.assert_allclose(Z_eval, Z, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_equal(same, state)
    Z_train, _ = dropped.batch_apply(params, X, state=state, train=True, key=k_drop)
    Z_again, _ = dropped.batch_apply(params, X, state=state, train=True, key=k_drop)
    Z_other, _ = dropped.batch_apply(params, X, state=state, train=True, key=k_other)
    assert not np.allclose(Z_train, Z_eval, atol=1e-3)
    np.testing.assert_array_equal(Z_again, Z_train)
    assert not np.allclose(Z_other, Z_train, atol=1e-3)
    zero = optax.tree_utils.tree_set(state, drop_rate=jnp.float32(0.0))
    Z_zero, _ = dropped.batch_apply(params, X, state=zero, train=True, key=k_drop)
    np.testing.assert_allclose(Z_zero, Z_eval, rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match=r"train: this model carries state"):
        dropped.batch_apply(params, X, state=state)

    for bad, error in [(1.0, ValueError), (-0.1, ValueError), (float("nan"), ValueError),
                       (True, TypeError), ("0.1", TypeError), (None, TypeError)]:
        with pytest.raises(error, match=rf"drop_rate: {who}: expected a drop probability in "
                                        rf"\[0, 1\), got"):
            make(drop_rate=bad)

    result = train.fit(objective.make(dropped, "cross_entropy"), params, (X, Y),
                       optimizer=optax.adam(1e-2), epochs=2, batch_size=len(X) // 2,
                       key=k_fit, model_state=state, progress=False)
    assert result.history["epoch"] == [1, 2] and np.all(np.isfinite(result.history["loss"]))
    chex.assert_trees_all_equal(result.model_state, state)  # the rate is not trained
    assert jax.tree.structure(result.params) == jax.tree.structure(params)


def test_dropout_is_residual_dropout_and_off_in_eval_mode(key, rng):
    """dropout=: one Dropout on the embeddings + positional encodings and one on each
    sub-layer's output (2 per block), section 5.4; the dropout model's params replay through
    attention_maps and generate (eval mode, the model's state)."""
    kw = dict(vocab_size=5, n_classes=5, seq_len=T, d_model=D, n_heads=H, n_layers=2)
    make = functools.partial(transformer.model, **kw)
    X, Y = rng.integers(0, 5, size=(8, T)), rng.integers(0, 5, size=(8, T))
    check_dropout_option(make, "transformer.model", 1 + 2 * 2, X, Y, key)
    net = make(drop_rate=0.1)
    params, state = net.init(key)
    maps = transformer.attention_maps(params, X[0], n_heads=H)
    np.testing.assert_allclose(maps[0].sum(-1), 1.0, rtol=1e-5)
    from nets import generate
    np.testing.assert_array_equal(generate(net, params, X[0, :2], 3, state=state),
                                  generate(make(), params, X[0, :2], 3))
    with pytest.raises(ValueError, match=r"drop_rate: transformer.block: expected"):
        transformer.block(H, 16, drop_rate=1.5)


@pytest.mark.parametrize("kw", [dict(causal=True), dict(causal=False, pad_id=0),
                                dict(causal=False, impl="custom_vjp", drop_rate=0.1)],
                         ids=["decoder", "padded-encoder", "custom_vjp-dropout"])
def test_attention_maps_from_the_model_itself_need_no_settings(rng, kw):
    """model= reads the heads, the mask and the padding from the model's own forward pass:
    the maps of the replay given the right settings, under jit and vmap; the replay with
    the default causal=True on an encoder gives other maps (what model= prevents)."""
    net = transformer.model(vocab_size=5, n_classes=3, seq_len=T, d_model=D, n_heads=H, **kw)
    params, state = net.init(jax.random.key(0))
    ids = rng.integers(1, 5, size=T)
    ids[T - 2:] = 0
    state = state if net.stateful else None
    own = transformer.attention_maps(params, ids, model=net, state=state)
    replay = transformer.attention_maps(params, ids, n_heads=H, causal=kw["causal"],
                                        pad_id=kw.get("pad_id"))
    assert len(own) == len(replay) == 2
    for a, b in zip(own, replay):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    batched = jax.jit(jax.vmap(lambda x: transformer.attention_maps(params, x, model=net,
                                                                    state=state)))(
        np.stack([ids, ids]))
    np.testing.assert_allclose(batched[1][1], own[1], rtol=1e-6, atol=1e-7)
    if not kw["causal"]:  # teeth
        assert float(jnp.max(jnp.abs(transformer.attention_maps(params, ids, n_heads=H)[0]
                                     - own[0]))) > 1e-3


def test_attention_maps_from_a_model_of_another_composition_and_bad_calls():
    from nets import clip, mamba
    text = clip.text_encoder(vocab_size=6, seq_len=5, end_id=1, embed_dim=4, d_model=8)
    params, _ = text.init(jax.random.key(0))
    maps = transformer.attention_maps(params, np.array([3, 4, 1, 0, 0]), model=text)
    assert [m.shape for m in maps] == [(2, 5, 5)] * 2
    with pytest.raises(TypeError, match=r"n_heads: attention_maps with model= reads them from "
                                        r"the model"):
        transformer.attention_maps(params, np.array([3, 4, 1, 0, 0]), model=text, n_heads=2)
    with pytest.raises(ValueError, match=r"x: attention_maps expected one example of the "
                                         r"model's input_shape \(5,\), got shape \(1, 5\)"):
        transformer.attention_maps(params, np.zeros((1, 5), int), model=text)
    with pytest.raises(TypeError, match=r"n_heads: attention_maps expected the model's head "
                                        r"count, or model="):
        transformer.attention_maps(params, np.zeros(5, int))
    ssm = mamba.model(vocab_size=6, n_classes=2, seq_len=5)
    with pytest.raises(ValueError, match=r"model: attention_maps found no MultiHeadAttention"):
        transformer.attention_maps(ssm.init(jax.random.key(0))[0], np.zeros(5, int),
                                   model=ssm)
