"""CLIP (Radford et al. 2021): an image encoder and a text encoder trained contrastively.

Two encoders map their inputs into one embedding space of ``d`` dimensions, each followed by
a linear projection (no bias) and L2 normalisation (Radford et al. Figure 3):

    I_e = normalize(W_i f(image))        f: a CNN from nets.layers over ONE (8, 8, 1) image
    T_e = normalize(W_t g(token ids))    g: a causal Transformer (nets.transformer), its
                                         output at the <end> token (the paper's [EOS])

For a batch of ``n`` matching pairs ``(image_k, text_k)`` the logits are the cosine
similarities scaled by a learned temperature, ``logits = exp(t) I_e T_e^T`` ``(n, n)``; the
loss is the symmetric cross-entropy with the matching pairs on the diagonal,

    L = ( CE(logits, labels = 0..n-1, rows) + CE(logits^T, labels, rows) ) / 2

the mean of the image->text and the text->image cross-entropies (Figure 3's pseudocode;
:func:`contrastive_loss`). It is symmetric in the two modalities: swapping ``I_e`` and
``T_e`` transposes the logits and swaps the two terms. With all logits equal (zero
embeddings, or every similarity the same) both terms are ``log n``.

**The temperature.** ``t`` is the log of the logit scale ``1 / tau``, initialised to
``log(1 / 0.07)`` and "clipped to prevent scaling the logits by more than 100" (section
2.5). Here the clip is in two places: the forward pass reads ``scale = exp(min(t,
log 100))`` (:func:`logit_scale`: ``exp(t)`` up to the boundary, 100 exactly above it), so
no parameter value scales the logits by more than 100 (at the boundary itself, up to one
rounding of ``exp``); and :func:`make_step` projects ``t`` back into ``[0, log 100]`` after
every update, as OpenAI's and open_clip's training code clamp the parameter. The derivative
of the loss with respect to ``t`` is ``scale * dL/dscale`` for ``t <= log 100``, the
boundary included (the clip is written with ``where(t <= log 100, ...)``, not ``minimum``,
whose derivative at a tie is 1/2), and exactly 0 for ``t > log 100``; the projection keeps
``t`` where the derivative is live, so the scale can come down again once it has reached
100.

**Zero-shot classification** (section 3.1.2): the class embeddings are the text embeddings
of one caption per class (``"a photo of a {label}"``), or the renormalised mean over several
templates (prompt ensembling, section 3.1.4; :func:`class_embeddings`); an image's class is
the one whose embedding is most similar (:func:`zero_shot_predict`).

Training through :func:`train.run`: :func:`make_step` returns ``step(state, batch, key)``
with ``batch = (images (b, 8, 8, 1), token ids (b, T))``; both encoders and ``t`` are ONE
parameter tree ``{"image", "text", "log_scale"}`` updated by one optax transformation.

>>> from nets import tokenizer
>>> tok = tokenizer.build(["a handwritten seven", "the number 7"])
>>> clip = model(vocab_size=tok.vocab_size, seq_len=tok.length, end_id=tok.end_id,
...              embed_dim=8, image_channels=(4,), image_hidden=8, d_model=8, n_layers=1)
>>> clip.image.input_shape, clip.text.input_shape, clip.embed_dim
((8, 8, 1), (4,), 8)
>>> import jax.numpy as jnp
>>> round(float(contrastive_loss(jnp.zeros((5, 5)))), 4)   # equal logits: log 5
1.6094
>>> float(logit_scale(jnp.log(1000.0)))                     # clipped at 100
100.0

References:
  Radford, Kim, Hallacy, Ramesh, Goh, Agarwal, Sastry, Askell, Mishkin, Clark, Krueger &
  Sutskever, Learning Transferable Visual Models From Natural Language Supervision, ICML
  2021, https://arxiv.org/abs/2103.00020 (Figure 3, sections 2.4, 2.5, 3.1.2, 3.1.4).
  van den Oord, Li & Vinyals, Representation Learning with Contrastive Predictive Coding,
  2018, https://arxiv.org/abs/1807.03748 (InfoNCE). Sohn, Improved Deep Metric Learning
  with Multi-class N-pair Loss Objective, NeurIPS 2016. Zhang, Jiang, Miura, Manning &
  Langlotz, Contrastive Learning of Medical Visual Representations from Paired Images and
  Text (ConVIRT), 2020, https://arxiv.org/abs/2010.00747 (the symmetric loss CLIP adopts).
  Ilharco et al., OpenCLIP, https://github.com/mlfoundations/open_clip (the clamp of the
  logit scale after each step).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nets import _checks, transformer
from nets import layers as L
from nets.model import Model

NORM_EPS = 1e-12  # normalize: ||x|| below this counts as this (a zero vector stays zero)


# ---------------------------------------------------------------------------------------
# encoders


def image_encoder(*, embed_dim: int, channels=(16, 32), hidden: int = 64,
                  input_shape=(8, 8, 1)) -> Model:
    """A CNN ``(8, 8, 1) -> (embed_dim,)``: for each entry of ``channels`` a 3x3 convolution
    (SAME), ReLU and 2x2 max-pooling; flatten; ``Dense(hidden)``, ReLU; then the projection
    ``W_i`` into the shared space, ``Dense(embed_dim, bias=False)``. Output ``"identity"``
    (the embedding before normalisation)."""
    _checks.check_int(embed_dim, "embed_dim", 1)
    _checks.check_int(hidden, "hidden", 1)
    if not isinstance(channels, (tuple, list)) or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
        raise ValueError(f"channels: image_encoder expected a tuple of positive ints, got "
                         f"{channels!r}")
    layers = []
    for c in channels:
        layers += [L.Conv2D(c, 3, init="he"), L.Relu(), L.MaxPool(2)]
    layers += [L.Flatten(), L.Dense(hidden, init="he"), L.Relu(),
               L.Dense(embed_dim, bias=False)]  # W_i: the projection into the shared space
    return Model(L.serial(*layers), input_shape=tuple(input_shape), output="identity")


def EndPool(trunk: L.Layer, end_id: int) -> L.Layer:
    """``trunk`` over token ids ``(T,) -> (T, d)``, read at the first ``end_id`` token:
    ``(T,) -> (d,)`` (CLIP's [EOS] feature). Ids without an end token would read position 0:
    :func:`embed_texts` refuses them; a traced caller must make sure of it."""
    trunk = L._as_layer(trunk, "EndPool: trunk")
    end_id = _checks.check_int(end_id, "end_id", 0)

    def init(key, input_shape):
        out, params, state = trunk.init(key, input_shape)
        if len(out) != 2:
            raise ValueError(f"EndPool: expected the trunk to map ids (T,) to (T, d), got "
                             f"output shape {tuple(out)}")
        return (out[1],), params, state

    def apply(params, state, ids, *, train=False, key=None):
        h, state = trunk.apply(params, state, ids, train=train, key=key)  # (T, d)
        return h[jnp.argmax(ids == end_id)], state  # the first end token's row, (d,)

    return L.Layer(init, apply)


def text_encoder(*, vocab_size: int, seq_len: int, end_id: int, embed_dim: int,
                 d_model: int = 32, n_heads: int = 2, n_layers: int = 2,
                 d_mlp: int | None = None) -> Model:
    """A causal Transformer over token ids ``(seq_len,) -> (embed_dim,)``: embedding,
    sinusoidal positions, ``n_layers`` pre-LN blocks with causal attention
    (:func:`nets.transformer.block`), layer norm, the output at the first ``end_id`` token
    (:func:`EndPool`), then the projection ``W_t``, ``Dense(embed_dim, bias=False)``.
    Causal attention makes the padding after the end token irrelevant (Radford et al. use
    masked self-attention too). Output ``"identity"``."""
    who = "text_encoder"
    for name, v in (("vocab_size", vocab_size), ("seq_len", seq_len), ("embed_dim", embed_dim),
                    ("d_model", d_model), ("n_layers", n_layers)):
        _checks.check_int(v, f"{name}: {who}", 1)
    _checks.check_int(end_id, f"end_id: {who}", 0, vocab_size - 1)
    d_mlp = 4 * d_model if d_mlp is None else d_mlp
    trunk = L.serial(L.Embedding(vocab_size, d_model), transformer.PositionalEncoding(),
                     *[transformer.block(n_heads, d_mlp, causal=True) for _ in range(n_layers)],
                     L.LayerNorm())
    return Model(L.serial(EndPool(trunk, end_id), L.Dense(embed_dim, bias=False)),
                 input_shape=(seq_len,), output="identity")


@dataclasses.dataclass(frozen=True)
class CLIP:
    """The two encoders and the temperature's settings, bound once (hashable, so compiled
    programs are cached per CLIP).

    Attributes:
      image: a Model, one image -> ``(d,)`` (the projection included, not normalised).
      text: a Model, token ids ``(T,)`` -> ``(d,)``.
      vocab_size: token ids lie in ``[0, vocab_size)``.
      end_id: the end token, present in every caption (the text encoder reads there).
      max_scale: the logit scale's clip (the paper's 100).
      init_temperature: ``tau`` at initialisation, ``t = log(1 / tau)`` (the paper's 0.07);
        in ``[1 / max_scale, 1]``, the range the projection of :func:`make_step` keeps.
    """

    image: Model
    text: Model
    vocab_size: int
    end_id: int
    max_scale: float = 100.0
    init_temperature: float = 0.07

    def __post_init__(self):
        for name in ("image", "text"):
            if not isinstance(getattr(self, name), Model):
                raise TypeError(f"{name}: expected a nets.Model, got "
                                f"{type(getattr(self, name)).__name__}")
        _checks.check_int(self.vocab_size, "vocab_size", 1)
        _checks.check_int(self.end_id, "end_id", 0, self.vocab_size - 1)
        if len(self.text.input_shape) != 1:
            raise ValueError(f"text: expected token ids of shape (T,), got input shape "
                             f"{self.text.input_shape}")
        si, st = self.image.output_shape, self.text.output_shape
        if len(si) != 1 or si != st:
            raise ValueError(f"image, text: expected both encoders to output vectors of one "
                             f"dimension, got {si} and {st}")
        _checks.check_real(self.max_scale, "max_scale", minimum=1, strict=True)
        _checks.check_real(self.init_temperature, "init_temperature", minimum=0, strict=True)
        if 1.0 / self.init_temperature > self.max_scale:
            raise ValueError(f"init_temperature: expected 1 / init_temperature <= max_scale = "
                             f"{self.max_scale}, got {self.init_temperature} (scale "
                             f"{1 / self.init_temperature:g})")
        if self.init_temperature > 1.0:  # t = log(1 / tau) < 0: make_step projects t onto 0
            raise ValueError(f"init_temperature: expected a temperature in [1 / max_scale, 1] = "
                             f"[{1 / self.max_scale:g}, 1] (each step projects t = log(1 / "
                             f"init_temperature) into [0, log max_scale], so a scale below 1 "
                             f"would jump to 1 at the first step), got {self.init_temperature}")

    @property
    def embed_dim(self) -> int:
        """``d``, the dimension of the shared embedding space."""
        return self.image.output_shape[0]

    @property
    def seq_len(self) -> int:
        """``T``, the length of one caption's token ids."""
        return self.text.input_shape[0]


def model(*, vocab_size: int, seq_len: int, end_id: int, embed_dim: int = 32,
          image_channels=(16, 32), image_hidden: int = 64, d_model: int = 32,
          n_heads: int = 2, n_layers: int = 2, d_mlp: int | None = None,
          max_scale: float = 100.0, init_temperature: float = 0.07) -> CLIP:
    """A :class:`CLIP` of :func:`image_encoder` (8x8 grey digits) and :func:`text_encoder`."""
    return CLIP(image=image_encoder(embed_dim=embed_dim, channels=image_channels,
                                    hidden=image_hidden),
                text=text_encoder(vocab_size=vocab_size, seq_len=seq_len, end_id=end_id,
                                  embed_dim=embed_dim, d_model=d_model, n_heads=n_heads,
                                  n_layers=n_layers, d_mlp=d_mlp),
                vocab_size=vocab_size, end_id=end_id, max_scale=max_scale,
                init_temperature=init_temperature)


def _check_clip(clip) -> None:
    if not isinstance(clip, CLIP):
        raise TypeError(f"clip: expected a nets.clip.CLIP, got {type(clip).__name__}")


def init(clip: CLIP, *, key: jax.Array) -> dict:
    """``{"image": ..., "text": ..., "log_scale": ()}``: both encoders' parameters (from
    ``key``) and ``t = log(1 / init_temperature)`` (float32), one tree."""
    _check_clip(clip)
    _checks.check_key(key, "key")
    ki, kt = jax.random.split(key)
    image, _ = clip.image.init(ki)
    text, _ = clip.text.init(kt)
    return {"image": image, "text": text,
            "log_scale": jnp.asarray(math.log(1.0 / clip.init_temperature), jnp.float32)}


def _check_params(clip: CLIP, params) -> None:
    if not isinstance(params, dict) or set(params) != {"image", "text", "log_scale"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a dict with keys image, text, log_scale (as "
                         f"clip.init makes it), got {got}")
    clip.image._check_params(params["image"])
    clip.text._check_params(params["text"])
    t = params["log_scale"]
    if jnp.shape(t) != () or not jnp.issubdtype(jnp.result_type(t), jnp.floating):
        raise ValueError(f"params['log_scale']: expected a floating-point scalar, got shape "
                         f"{jnp.shape(t)} of dtype {jnp.result_type(t)}")


# ---------------------------------------------------------------------------------------
# the loss


def normalize(z: jax.Array, eps: float = NORM_EPS) -> jax.Array:
    """``z / max(||z||, eps)`` along the last axis: unit rows; a zero row stays zero (and
    its derivative is finite: the norm is floored before the square root)."""
    return z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), eps * eps))


def logit_scale(log_scale, max_scale: float = 100.0) -> jax.Array:
    """``exp(min(t, log max_scale))``: ``exp(t)`` up to and at ``t = log max_scale`` (there
    ``max_scale`` up to one rounding of ``exp``), ``max_scale`` exactly above it; the
    derivative with respect to ``t`` is live up to and at the boundary, 0 above it (module
    doc)."""
    log_max = math.log(_checks.check_real(max_scale, "max_scale", minimum=0, strict=True))
    t = jnp.asarray(log_scale)
    live = t <= log_max
    # exp of the clipped t (finite, so the unused branch adds no NaN to the derivative); above
    # the clip the constant itself, so the scale there is max_scale exactly
    return jnp.where(live, jnp.exp(jnp.where(live, t, log_max)), max_scale)


def contrastive_loss(logits: jax.Array) -> jax.Array:
    """The symmetric cross-entropy of a square ``(n, n)`` logit matrix whose row ``i`` is
    image ``i`` against every text and whose matching pairs are on the diagonal:
    ``(mean_i -log softmax(logits[i])[i] + mean_j -log softmax(logits[:, j])[j]) / 2``."""
    if jnp.ndim(logits) != 2 or jnp.shape(logits)[0] != jnp.shape(logits)[1]:
        raise ValueError(f"logits: expected a square matrix (n, n) of image-text logits, got "
                         f"shape {jnp.shape(logits)}")
    image_to_text = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=1)))
    text_to_image = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=0)))
    return (image_to_text + text_to_image) / 2


def clip_logits(image_emb: jax.Array, text_emb: jax.Array, log_scale,
                max_scale: float = 100.0) -> jax.Array:
    """``logit_scale(t) * I_e T_e^T``: ``(n, m)`` for unit rows ``(n, d)`` and ``(m, d)``."""
    for name, e in (("image_emb", image_emb), ("text_emb", text_emb)):
        if jnp.ndim(e) != 2:
            raise ValueError(f"{name}: expected embeddings of shape (n, d), got shape "
                             f"{jnp.shape(e)}")
    if jnp.shape(image_emb)[1] != jnp.shape(text_emb)[1]:
        raise ValueError(f"text_emb: expected embeddings of dimension "
                         f"{jnp.shape(image_emb)[1]} like image_emb, got shape "
                         f"{jnp.shape(text_emb)}")
    return logit_scale(log_scale, max_scale) * (image_emb @ text_emb.T)


def clip_loss(image_emb: jax.Array, text_emb: jax.Array, log_scale,
              max_scale: float = 100.0) -> jax.Array:
    """:func:`contrastive_loss` of :func:`clip_logits`: the loss of ``n`` matching pairs
    given their (normalised) embeddings, both ``(n, d)``."""
    if jnp.shape(image_emb) != jnp.shape(text_emb):
        raise ValueError(f"text_emb: expected the shape of image_emb {jnp.shape(image_emb)} "
                         f"(n matching pairs), got {jnp.shape(text_emb)}")
    return contrastive_loss(clip_logits(image_emb, text_emb, log_scale, max_scale))


# ---------------------------------------------------------------------------------------
# embeddings: traced (inside a step) and checked (on concrete inputs)


def _image_features(clip: CLIP, params, images):
    return normalize(jax.vmap(lambda x: clip.image.apply(params["image"], x))(images))


def _text_features(clip: CLIP, params, ids):
    return normalize(jax.vmap(lambda s: clip.text.apply(params["text"], s))(ids))


def _check_images(clip: CLIP, images, name="images") -> None:
    shape = tuple(jnp.shape(images))
    want = clip.image.input_shape
    if len(shape) != len(want) + 1 or shape[1:] != want or shape[0] == 0:
        raise ValueError(f"{name}: expected a batch of images of shape (n, "
                         f"{', '.join(map(str, want))}) with n >= 1, got shape {shape}")
    _checks.check_input(images, name)
    if not jnp.issubdtype(jnp.result_type(images), jnp.floating):
        raise TypeError(f"{name}: expected floating-point images, got dtype "
                        f"{jnp.result_type(images)}")


def _check_ids(clip: CLIP, ids, name="ids") -> None:
    shape = tuple(jnp.shape(ids))
    if len(shape) != 2 or shape[1] != clip.seq_len or shape[0] == 0:
        raise ValueError(f"{name}: expected token ids of shape (n, {clip.seq_len}) with n >= 1, "
                         f"got shape {shape}")
    dtype = jnp.result_type(ids)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{name}: expected integer token ids, got dtype {dtype}")
    if isinstance(ids, jax.core.Tracer):
        return
    arr = np.asarray(ids)
    bad = np.argwhere((arr < 0) | (arr >= clip.vocab_size))
    if bad.size:
        i, j = bad[0]
        raise ValueError(f"{name}: expected token ids in [0, {clip.vocab_size}), got "
                         f"{int(arr[i, j])} at {name}[{i}, {j}]")
    missing = np.flatnonzero(~np.any(arr == clip.end_id, axis=1))
    if missing.size:
        raise ValueError(f"{name}: every caption needs the end token (id {clip.end_id}), the "
                         f"text encoder reads its feature there; row {int(missing[0])} has none "
                         f"({missing.size} rows in all)")


@functools.lru_cache(maxsize=64)
def _compiled(clip: CLIP, what: str):
    fn = {"images": _image_features, "texts": _text_features}[what]
    return jax.jit(functools.partial(fn, clip))


def embed_images(clip: CLIP, params, images) -> jax.Array:
    """Unit image embeddings ``(n, d)`` of ``images`` ``(n, 8, 8, 1)`` (one compiled program
    per CLIP and shape)."""
    _check_clip(clip)
    _check_images(clip, images)
    _check_params(clip, params)
    return _compiled(clip, "images")(params, images)


def embed_texts(clip: CLIP, params, ids) -> jax.Array:
    """Unit text embeddings ``(n, d)`` of token ids ``(n, T)``, each row with an end token."""
    _check_clip(clip)
    _check_ids(clip, ids)
    _check_params(clip, params)
    return _compiled(clip, "texts")(params, ids)


def loss(clip: CLIP, params, images, ids) -> jax.Array:
    """The CLIP loss of ``n`` matching pairs: images ``(n, 8, 8, 1)``, token ids ``(n, T)``
    (traceable: shapes are checked at trace time, values only when concrete)."""
    _check_clip(clip)
    _check_images(clip, images)
    _check_ids(clip, ids)
    if jnp.shape(images)[0] != jnp.shape(ids)[0]:
        raise ValueError(f"ids: expected as many captions as images ({jnp.shape(images)[0]}), "
                         f"got {jnp.shape(ids)[0]}")
    _check_params(clip, params)
    return clip_loss(_image_features(clip, params, images), _text_features(clip, params, ids),
                     params["log_scale"], clip.max_scale)


# ---------------------------------------------------------------------------------------
# training


class CLIPState(NamedTuple):
    """What :func:`train.run` carries."""

    params: Any  # {"image": ..., "text": ..., "log_scale": ()}
    opt_state: Any  # the optimizer's state for params


def init_state(clip: CLIP, optimizer, *, key: jax.Array) -> CLIPState:
    """:func:`init`'s parameters and ``optimizer.init`` of them."""
    _check_optimizer(optimizer)
    params = init(clip, key=key)
    return CLIPState(params, optimizer.init(params))


def _check_optimizer(optimizer) -> None:
    if not (callable(getattr(optimizer, "init", None))
            and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"optimizer: expected an optax GradientTransformation, got "
                        f"{type(optimizer).__name__}")


def make_step(clip: CLIP, optimizer):
    """``step(state, batch, key) -> (state, metrics)`` for :func:`train.run`.

    ``batch = (images (b, 8, 8, 1), ids (b, T))``, ``b`` matching pairs. One
    ``optimizer`` update of the whole tree on ``jax.grad`` of :func:`loss`, then the
    projection ``t <- clip(t, 0, log max_scale)`` (module doc). Metrics: ``loss`` (before the
    step) and ``logit_scale`` (after it).
    """
    _check_clip(clip)
    _check_optimizer(optimizer)
    log_max = math.log(clip.max_scale)

    def objective(params, images, ids):
        return clip_loss(_image_features(clip, params, images),
                         _text_features(clip, params, ids), params["log_scale"], clip.max_scale)

    def step(state: CLIPState, batch, key):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise ValueError(f"batch: expected a pair (images, ids), got "
                             f"{type(batch).__name__}")
        images, ids = batch
        _check_images(clip, images, "batch[0]")
        _check_ids(clip, ids, "batch[1]")
        if images.shape[0] != ids.shape[0]:
            raise ValueError(f"batch: expected as many captions as images, got "
                             f"{images.shape[0]} images and {ids.shape[0]} captions")
        value, grad = jax.value_and_grad(objective)(state.params, images, ids)
        updates, opt_state = optimizer.update(grad, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        params = {**params, "log_scale": jnp.clip(params["log_scale"], 0.0, log_max)}
        return CLIPState(params, opt_state), {
            "loss": value, "logit_scale": logit_scale(params["log_scale"], clip.max_scale)}

    return step


# ---------------------------------------------------------------------------------------
# zero-shot classification


def class_embeddings(text_emb: jax.Array) -> jax.Array:
    """Class embeddings ``(K, d)`` from caption embeddings: ``(K, d)`` (one template)
    returned as they are, or ``(P, K, d)`` (``P`` templates) averaged over the templates and
    renormalised (prompt ensembling, Radford et al. section 3.1.4)."""
    if jnp.ndim(text_emb) == 2:
        return text_emb
    if jnp.ndim(text_emb) == 3:
        return normalize(jnp.mean(text_emb, axis=0))
    raise ValueError(f"text_emb: expected caption embeddings (K, d) or (P, K, d), got shape "
                     f"{jnp.shape(text_emb)}")


def zero_shot_predict(image_emb: jax.Array, class_emb: jax.Array) -> jax.Array:
    """The class ``argmax_k <I_e, C_k>`` of each image: ``(n,)`` int from unit image
    embeddings ``(n, d)`` and class embeddings ``(K, d)`` (the logit scale does not change
    the argmax)."""
    if jnp.ndim(image_emb) != 2 or jnp.ndim(class_emb) != 2 or (
            jnp.shape(image_emb)[1] != jnp.shape(class_emb)[1]):
        raise ValueError(f"image_emb, class_emb: expected (n, d) and (K, d), got shapes "
                         f"{jnp.shape(image_emb)} and {jnp.shape(class_emb)}")
    return jnp.argmax(image_emb @ class_emb.T, axis=1)


__all__ = ["CLIP", "CLIPState", "NORM_EPS", "image_encoder", "text_encoder", "EndPool", "model",
           "init", "init_state", "normalize", "logit_scale", "contrastive_loss", "clip_logits",
           "clip_loss", "embed_images", "embed_texts", "loss", "make_step", "class_embeddings",
           "zero_shot_predict"]
