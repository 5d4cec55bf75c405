"""nets.clip and nets.tokenizer: the symmetric contrastive loss against its formula (symmetric
in the two modalities, log n at equal logits) and its gradient written by hand; the logit
scale's clip at 100 and its derivative; the training step (on a linear CLIP, cheap to
compile): its loss, its projection of t, and the gradient it applies against jax.grad and
central differences; a float64 gradient check of the whole CLIP loss (CNN, causal
Transformer read at <end>); shapes, padding after <end> ignored, EndPool's formula; jit and
no-jit agreement of the loss head; the tokenizer's round trip and errors; bad input refused
before anything is compiled. Parameters drawn in NumPy: a few small programs."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nets import clip as C
from nets import gradcheck, transformer
from nets import layers as L
from nets import tokenizer as tk
from nets.model import Model
from tests._random import random_params

CAPTIONS = ["a handwritten seven", "the number 7 written by hand", "a photo of a two",
            "the digit 2"]
TOL = 1e-6  # float64 gradient checks: a right gradient agrees to ~1e-8


@pytest.fixture(scope="module")
def setup():
    """A tiny CLIP (embedding 4, one conv of 2 channels, one causal block of width 4), its
    parameters (NumPy, N(0, 0.5^2), t = log 10), 4 random images and the 4 captions' ids."""
    tok = tk.build(CAPTIONS, length=8)
    clip = C.model(vocab_size=tok.vocab_size, seq_len=tok.length, end_id=tok.end_id,
                   embed_dim=4, image_channels=(2,), image_hidden=4, d_model=4, n_heads=2,
                   n_layers=1)
    rng = np.random.default_rng(0)
    image, _ = random_params(clip.image, rng)
    text, _ = random_params(clip.text, rng)
    params = {"image": image, "text": text, "log_scale": np.float32(math.log(10.0))}
    images = rng.normal(size=(4, 8, 8, 1)).astype(np.float32)
    return tok, clip, params, images, tok.encode_batch(CAPTIONS)


def _unit(rng, n, d):
    z = rng.normal(size=(n, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _log_softmax(a, axis):
    a = a - a.max(axis=axis, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=axis, keepdims=True))


# --- the loss ---------------------------------------------------------------------------------

def test_loss_is_the_symmetric_cross_entropy_and_symmetric_in_the_modalities():
    rng = np.random.default_rng(1)
    I, T, t = _unit(rng, 5, 3), _unit(rng, 5, 3), math.log(7.0)
    logits = 7.0 * I @ T.T
    want = -(np.mean(np.diag(_log_softmax(logits, 1))) + np.mean(np.diag(_log_softmax(logits, 0)))) / 2
    np.testing.assert_allclose(C.clip_loss(I, T, t), want, rtol=1e-5)
    np.testing.assert_allclose(C.clip_loss(T, I, t), C.clip_loss(I, T, t), rtol=1e-6)
    np.testing.assert_allclose(C.clip_logits(I, T, t), logits, rtol=1e-5)
    # the two directions differ in general: the loss is not one of them alone
    i2t = -np.mean(np.diag(_log_softmax(logits, 1)))
    assert abs(i2t - want) > 1e-3
    # matching pairs (T = I) score better than mismatched ones at a large scale
    assert float(C.clip_loss(I, I, math.log(50.0))) < float(C.clip_loss(I, T, math.log(50.0)))


def test_equal_logits_give_log_n():
    rng = np.random.default_rng(0)
    losses = jax.jit(lambda zero, same, square: (
        C.clip_loss(C.normalize(zero), C.normalize(zero), 2.0),  # zero embeddings
        C.clip_loss(same, same, math.log(100.0)),  # every similarity 1, the largest scale
        C.contrastive_loss(square)))  # any constant logits
    for n in (1, 5):
        same = np.repeat(_unit(rng, 1, 4), n, axis=0).astype(np.float32)
        got = losses(np.zeros((n, 4), np.float32), same, np.full((n, n), 3.7, np.float32))
        np.testing.assert_allclose(got, [math.log(n)] * 3, rtol=1e-5, atol=1e-6)


def test_normalize_gives_unit_rows_and_keeps_zero_rows_finite():
    z = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(C.normalize(z), [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
    g = jax.grad(lambda z: jnp.sum(C.normalize(z)[1]))(jnp.asarray(z))
    assert np.all(np.isfinite(g))


# --- the temperature ------------------------------------------------------------------------

def test_logit_scale_is_clipped_at_100_and_its_derivative_is_as_documented():
    log100 = float(np.float32(math.log(100.0)))  # the float32 boundary itself
    ts = np.array([math.log(50.0), log100, log100 + 0.01, 20.0], np.float32)
    scale, dscale = jax.jit(jax.vmap(jax.value_and_grad(C.logit_scale)))(ts)
    np.testing.assert_allclose(scale[0], 50.0, rtol=1e-6)
    assert scale[1] <= 100.0 * (1 + 1e-6)  # exp of float32 log(100): one rounding
    assert scale[2] == scale[3] == 100.0  # above the clip: exactly 100
    # below the clip and AT it (where the step leaves t), d scale / dt = scale: live
    np.testing.assert_allclose(dscale[:2], [50.0, 100.0], rtol=1e-5)
    assert dscale[2] == dscale[3] == 0.0  # above it, exactly zero
    # through the loss: the derivative in t is zero above the clip, not below
    rng = np.random.default_rng(2)
    I, T = _unit(rng, 4, 3).astype(np.float32), _unit(rng, 4, 3).astype(np.float32)
    dt = jax.jit(jax.vmap(jax.grad(C.clip_loss, argnums=2), in_axes=(None, None, 0)))(
        I, T, np.array([5.0, 3.0], np.float32))
    assert dt[0] == 0.0 and abs(dt[1]) > 1e-4
    # another max_scale
    assert float(C.logit_scale(10.0, max_scale=30.0)) == pytest.approx(30.0, rel=1e-6)


LR = 1e-3  # the float64 step's SGD rate: its gradient is (params - new params) / LR


@pytest.fixture(scope="module")
def step64(setup):
    """A linear CLIP (image: flatten, W_i; text: the <end> token's embedding, W_t; cheap to
    compile), its parameters in float64 (t = log 10), and its training step (SGD, LR)
    compiled once in float64: ``run(p, images, ids) -> (state, metrics)``."""
    tok, _, _, images, _ = setup
    image = Model(L.serial(L.Flatten(), L.Dense(3, bias=False)), input_shape=(8, 8, 1),
                  output="identity")
    text = Model(L.serial(C.EndPool(L.Embedding(tok.vocab_size, 5), tok.end_id),
                          L.Dense(3, bias=False)), input_shape=(tok.length,), output="identity")
    linear = C.CLIP(image, text, tok.vocab_size, tok.end_id)
    rng = np.random.default_rng(6)
    p64 = {"image": jax.tree.map(lambda a: np.asarray(a, np.float64), random_params(image, rng)[0]),
           "text": jax.tree.map(lambda a: np.asarray(a, np.float64), random_params(text, rng)[0]),
           "log_scale": np.float64(math.log(10.0))}
    opt = optax.sgd(LR)
    step = jax.jit(C.make_step(linear, opt))

    def run(p, images, ids):
        with jax.enable_x64(True):
            return step(C.CLIPState(p, opt.init(p)), (np.asarray(images, np.float64), ids),
                        jax.random.key(0))

    return linear, run, p64


def _linear_clip_loss(p, images, ids, end_id):
    """The linear CLIP's loss in NumPy: ``I_e = normalize(W_i x)``, ``T_e = normalize(W_t
    E[<end>])`` (its embedding only: no attention), then the symmetric cross-entropy."""
    unit = lambda z: z / np.linalg.norm(z, axis=1, keepdims=True)  # noqa: E731
    I = unit(images.reshape(len(images), -1) @ p["image"][1]["W"].T)
    T = unit(p["text"][0]["E"][np.full(len(ids), end_id)] @ p["text"][1]["W"].T)
    logits = min(math.exp(p["log_scale"]), 100.0) * I @ T.T
    return -(np.mean(np.diag(_log_softmax(logits, 1))) + np.mean(np.diag(_log_softmax(logits, 0)))) / 2


def test_step_projects_t_into_0_to_log_100_and_its_loss_is_the_loss(setup, step64):
    tok, _, _, images, ids = setup
    _, step, p64 = step64
    for t, want in ((8.0, math.log(100.0)), (-3.0, 0.0), (math.log(10.0), None)):
        p = {**p64, "log_scale": np.float64(t)}
        state, metrics = step(p, images, ids)
        assert set(metrics) == {"loss", "logit_scale"}
        # the loss of the step (before its update) is the formula's
        np.testing.assert_allclose(metrics["loss"], _linear_clip_loss(p, images, ids,
                                                                      tok.end_id), rtol=1e-10)
        if want is not None:  # outside [0, log 100]: projected onto the nearer end
            assert float(state.params["log_scale"]) == pytest.approx(want, abs=1e-12)
            np.testing.assert_allclose(metrics["logit_scale"], math.exp(want), rtol=1e-10)
        else:  # inside: a plain SGD step
            assert float(state.params["log_scale"]) != t and abs(
                float(state.params["log_scale"]) - t) < 1e-2
        assert np.any(np.asarray(state.params["image"][1]["W"]) != p["image"][1]["W"])


def test_gradient_the_step_applies_triangulates_in_float64(setup, step64):
    """The gradient the step applies ((params - new params) / LR, t inside the box) against
    jax.grad of the loss and central differences, every coordinate, float64."""
    _, _, _, images, ids = setup
    linear, step, p64 = step64

    def applied(p, X, Y):
        new = step(p, X, Y)[0].params
        return jax.tree.map(lambda a, b: (np.asarray(a) - np.asarray(b)) / LR, p, new)

    report = gradcheck.check(functools.partial(C.loss, linear), p64, images, ids,
                             reference=applied)
    assert report.worst < TOL, report
    assert len(report.rows) == 4 and all(r.checked == np.prod(r.shape) for r in report.rows)


# --- the encoders ---------------------------------------------------------------------------

def test_shapes_unit_embeddings_and_padding_after_the_end_token_is_ignored(setup):
    tok, clip, params, images, ids = setup
    assert clip.embed_dim == 4 and clip.seq_len == 8 and clip.image.input_shape == (8, 8, 1)
    assert clip.text.output_shape == (4,) and clip.image.output_shape == (4,)
    i_e = np.asarray(C.embed_images(clip, params, images))
    t_e = np.asarray(C.embed_texts(clip, params, ids))
    assert i_e.shape == t_e.shape == (4, 4)
    np.testing.assert_allclose(np.linalg.norm(i_e, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(t_e, axis=1), 1.0, rtol=1e-5)
    # causal attention, read at <end>: any tokens after the end token change nothing ...
    scrambled = ids.copy()
    for row in scrambled:
        after = np.arange(len(row)) > np.argmax(row == tok.end_id)
        row[after] = 5
    np.testing.assert_allclose(C.embed_texts(clip, params, scrambled), t_e, atol=1e-6)
    # ... while a word before it does
    changed = ids.copy()
    changed[:, 0] = tok.unk_id
    assert not np.allclose(C.embed_texts(clip, params, changed), t_e, atol=1e-3)
    # zero-shot: nearest class embedding; prompt ensembling renormalises the mean
    assert C.zero_shot_predict(t_e, t_e).tolist() == [0, 1, 2, 3]
    ens = np.asarray(C.class_embeddings(np.stack([t_e, t_e[::-1]])))
    np.testing.assert_allclose(np.linalg.norm(ens, axis=1), 1.0, rtol=1e-5)


def test_jit_and_no_jit_agree():
    """The loss head (normalisation, the clipped scale, the symmetric cross-entropy) compiled
    and op by op. The encoders are compositions of layers compared op by op elsewhere
    (tests/test_architectures.py, tests/test_transformer.py); the whole loss's compiled
    gradient is checked against central differences in float64 below."""
    rng = np.random.default_rng(4)
    I, T = rng.normal(size=(2, 4, 3)).astype(np.float32)
    head = lambda I, T, t: C.clip_loss(C.normalize(I), C.normalize(T), t)  # noqa: E731
    for t in (np.float32(2.0), np.float32(6.0)):  # below and above the clip
        jitted = jax.jit(head)(I, T, t)
        with jax.disable_jit():
            eager = head(I, T, t)
        np.testing.assert_allclose(jitted, eager, rtol=1e-6)


def test_end_pool_reads_the_first_end_token():
    rng = np.random.default_rng(5)
    net = Model(C.EndPool(L.serial(L.Embedding(6, 4), transformer.PositionalEncoding(),
                                   L.LayerNorm()), end_id=1), input_shape=(5,), output="identity")
    p = random_params(net, rng)[0]
    toks = np.array([[3, 1, 0, 0, 0], [4, 5, 3, 1, 1], [1, 2, 2, 2, 2]], np.int32)
    out = net.batch_apply(p, toks)[0]
    # the row read is the first end token's: LayerNorm(E[end] + PE[its position])
    pe = transformer.sinusoidal_encoding(5, 4)
    for row, pos in zip(np.asarray(out), (1, 3, 0)):
        h = p[0]["E"][1] + pe[pos]
        want = (h - h.mean()) / np.sqrt(h.var() + 1e-5) * p[2]["gamma"] + p[2]["beta"]
        np.testing.assert_allclose(row, want, rtol=1e-4, atol=1e-5)


# --- gradients in float64 -------------------------------------------------------------------

def _loss_reference(p, X, Y):
    """The gradient of :func:`nets.clip.clip_loss` written by hand (NumPy): with ``S = I T^T``,
    ``s = exp(t)``, ``G = dL/dlogits = (softmax_rows(sS) + softmax_cols(sS) - 2 Id) / 2n``,
    ``dL/dI = s G T``, ``dL/dT = s G^T I``, ``dL/dt = s sum(G * S)``."""
    I, T, t = (np.asarray(p[k], np.float64) for k in ("I", "T", "t"))
    n, s = len(I), np.exp(t)
    S = I @ T.T
    rows, cols = np.exp(_log_softmax(s * S, 1)), np.exp(_log_softmax(s * S, 0))
    G = (rows + cols - 2 * np.eye(n)) / (2 * n)
    return {"I": s * G @ T, "T": s * G.T @ I, "t": s * np.sum(G * S)}


def _head(p, X, Y):
    return C.clip_loss(p["I"], p["T"], p["t"])


def test_gradient_of_the_loss_triangulates_in_float64():
    rng = np.random.default_rng(3)
    p = {"I": _unit(rng, 5, 3), "T": _unit(rng, 5, 3), "t": np.float64(math.log(6.0))}
    report = gradcheck.check(_head, p, None, None, reference=_loss_reference)
    assert report.worst < TOL, report
    # the check has teeth: the reference without its text->image term on I is off by O(1)
    I, T, s = p["I"], p["T"], 6.0
    G_rows = (np.exp(_log_softmax(s * I @ T.T, 1)) - np.eye(5)) / 10
    dropped = gradcheck.relative_error(s * G_rows @ T, _loss_reference(p, None, None)["I"],
                                       floor=report.floor)
    assert dropped > 1e-2


def test_gradient_of_the_whole_clip_loss_in_float64(setup):
    """jax.grad of the CLIP loss through both encoders (the CNN; the causal Transformer read
    at <end>), the projections, the normalisation and the temperature against central
    differences, 8 coordinates of every leaf, float64."""
    _, clip, params, images, ids = setup
    report = gradcheck.check(functools.partial(C.loss, clip), params, images, ids, max_coords=8)
    assert report.worst < TOL, report
    assert {r.path for r in report.rows} >= {"['log_scale']"}
    assert len(report.rows) == len(jax.tree.leaves(params))


# --- the tokenizer --------------------------------------------------------------------------

def test_tokenizer_round_trip_and_layout():
    tok = tk.build(CAPTIONS, extra_words=["nine"])
    assert tok.vocab[:3] == tk.SPECIALS and "nine" in tok.vocab
    assert tok.length == 7  # "the number 7 written by hand": 6 words + <end>
    for text in CAPTIONS + ["The  NUMBER 7 written by Hand"]:
        ids = tok.encode(text)
        assert ids.shape == (7,) and ids.dtype == np.int32
        assert tok.decode(ids) == " ".join(tk.words(text))
        n = len(tk.words(text))
        assert ids[n] == tok.end_id and np.all(ids[n + 1:] == tok.pad_id)
    assert tok.decode(tok.encode("a blurry seven")) == "a <unk> seven"
    assert tok.encode_batch(CAPTIONS).shape == (4, 7)
    assert tk.words("the 12th, digit!") == ["the", "12", "th", ",", "digit", "!"]
    assert tok.decode(tok.encode("seven.")) == "seven <unk>"  # "." is a word, not known
    assert tk.build(CAPTIONS) == tk.build(list(reversed(CAPTIONS)))  # sorted vocabulary


@pytest.mark.parametrize("call, error, match", [
    (lambda tok: tok.encode(7), TypeError, "text: expected a str"),
    (lambda tok: tok.encode("  , "[:1]), ValueError, "at least one word"),
    (lambda tok: tok.encode("a a a a a a a"), ValueError, "has 7 words.*length of 8.*is 7"),
    (lambda tok: tok.encode("a blurry seven", unknown="error"), ValueError, "'blurry'"),
    (lambda tok: tok.encode("a seven", unknown="skip"), ValueError, "unknown"),
    (lambda tok: tok.encode_batch("a seven"), TypeError, "texts"),
    (lambda tok: tok.encode_batch([]), ValueError, "texts"),
    (lambda tok: tok.decode(np.array([4.0, 1.0])), TypeError, "ids: expected integer"),
    (lambda tok: tok.decode(np.array([[4, 1]])), ValueError, "ids: expected one sequence"),
    (lambda tok: tok.decode(np.array([4, 99, 1])), ValueError, r"\[0, \d+\), got 99 at position 1"),
    (lambda tok: tok.decode(np.array([4, 0, 1])), ValueError, "padding token at position 1"),
    (lambda tok: tk.Tokenizer(("a", "b"), 4), ValueError, "special tokens"),
    (lambda tok: tk.Tokenizer((*tk.SPECIALS, "a", "a"), 4), ValueError, "duplicates"),
    (lambda tok: tk.Tokenizer((*tk.SPECIALS, "two words"), 4), ValueError, "single lower-case"),
    (lambda tok: tk.Tokenizer(tok.vocab, 1), ValueError, "length"),
    (lambda tok: tk.build("a seven"), TypeError, "texts"),
    (lambda tok: tk.build([]), ValueError, "texts"),
])
def test_tokenizer_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(tk.build(CAPTIONS))


# --- bad input, refused before anything is compiled ------------------------------------------

_COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration")


@pytest.fixture
def compiles():
    seen = []

    def listen(event, duration, **kwargs):
        if event in _COMPILE_EVENTS:
            seen.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listen)
    yield seen
    jax.monitoring.unregister_event_duration_listener(listen)


def test_bad_input_is_refused_before_compiling(setup, compiles):
    tok, clip, params, images, ids = setup
    no_end = ids.copy()
    no_end[2] = 4
    out_of_range = ids.copy()
    out_of_range[1, 0] = tok.vocab_size
    nan_images = images.copy()
    nan_images[0, 3, 3, 0] = np.nan
    wrong_params = {**params, "log_scale": np.zeros(2, np.float32)}
    step = C.make_step(clip, optax.sgd(0.1))
    state = C.CLIPState(params, ())
    cases = [
        (lambda: C.embed_images(clip, params, images[0]), ValueError, "images: expected a batch"),
        (lambda: C.embed_images(clip, params, nan_images), ValueError, "images: expected finite"),
        (lambda: C.embed_images(clip, params, images.astype(np.int32)), TypeError, "images"),
        (lambda: C.embed_texts(clip, params, ids[:, :5]), ValueError, r"ids: .*\(n, 8\)"),
        (lambda: C.embed_texts(clip, params, ids.astype(np.float32)), TypeError, "ids: expected integer"),
        (lambda: C.embed_texts(clip, params, out_of_range), ValueError, r"ids: .*got \d+ at ids\[1, 0\]"),
        (lambda: C.embed_texts(clip, params, no_end), ValueError, "ids: every caption needs the end"),
        (lambda: C.embed_texts(clip, wrong_params, ids), ValueError, "log_scale"),
        (lambda: C.embed_texts(clip, {"image": params["image"]}, ids), ValueError, "params"),
        (lambda: C.loss(clip, params, images, ids[:3]), ValueError, "ids: expected as many"),
        (lambda: C.clip_loss(np.ones((3, 4)), np.ones((2, 4)), 1.0), ValueError, "text_emb"),
        (lambda: C.clip_logits(np.ones((3, 4)), np.ones((3, 5)), 1.0), ValueError, "text_emb"),
        (lambda: C.contrastive_loss(np.ones((3, 2))), ValueError, "logits: expected a square"),
        (lambda: C.class_embeddings(np.ones(3)), ValueError, "text_emb"),
        (lambda: C.zero_shot_predict(np.ones((3, 4)), np.ones((10, 5))), ValueError, "class_emb"),
        (lambda: C.init(clip, key=0), TypeError, "key"),
        (lambda: C.init(clip.image, key=jax.random.key(0)), TypeError, "clip: expected"),
        (lambda: C.make_step(clip, "adam"), TypeError, "optimizer"),
        (lambda: jax.jit(step)(state, images, jax.random.key(0)), ValueError, "batch: expected a pair"),
        (lambda: jax.jit(step)(state, (images, ids[:3]), jax.random.key(0)), ValueError,
         "batch: expected as many"),
        (lambda: jax.jit(step)(state, (images, ids.astype(np.float32)), jax.random.key(0)),
         TypeError, r"batch\[1\]"),
        (lambda: C.CLIP(clip.image, clip.text, tok.vocab_size, tok.vocab_size), ValueError, "end_id"),
        (lambda: C.CLIP(clip.image, clip.text, tok.vocab_size, 1, max_scale=1.0), ValueError,
         "max_scale"),
        (lambda: C.CLIP(clip.image, clip.text, tok.vocab_size, 1, init_temperature=0.001),
         ValueError, "init_temperature"),
        (lambda: C.CLIP(clip.image, clip.text, tok.vocab_size, 1, init_temperature=2.0),
         ValueError, r"init_temperature: expected a temperature in \[1 / max_scale, 1\]"),
        (lambda: C.logit_scale(1.0, max_scale=0.0), ValueError, "max_scale: expected"),
        (lambda: C.CLIP(C.image_encoder(embed_dim=3), clip.text, tok.vocab_size, 1), ValueError,
         "image, text"),
        (lambda: C.model(vocab_size=5, seq_len=4, end_id=7), ValueError, "end_id"),
        (lambda: C.image_encoder(embed_dim=4, channels=(0,)), ValueError, "channels"),
    ]
    jax.random.key(0)  # making a key compiles a tiny program once per process
    compiles.clear()
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
    assert not compiles, f"compiled {compiles} before refusing"


def test_tokenizer_refuses_non_ascii_letters_and_a_length_too_short():
    with pytest.raises(ValueError, match=r"text: expected ASCII .*'é' at position 5 of 'a café'"):
        tk.build(["a café"])
    tok = tk.build(["a handwritten seven"])
    with pytest.raises(ValueError, match="non-ASCII letter 'ï'"):
        tok.encode("a naïve seven")
    assert tk.words("a - b") == ["a", "-", "b"]  # ASCII punctuation stays one word
    with pytest.raises(ValueError, match=r"length: expected at least 4 .*texts\[1\]"):
        tk.build(["seven", "a handwritten seven"], length=3)
    assert tk.build(["a handwritten seven"], length=4).length == 4
