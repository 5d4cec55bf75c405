"""CLIP on the 8x8 digits: captions from templates, contrastive training, zero-shot accuracy.

Radford et al.'s CLIP (2021, arXiv:2103.00020) at the scale of scikit-learn's digits
(:mod:`nets.clip`): a CNN image encoder and a causal Transformer text encoder (read at the
``<end>`` token), each with a linear projection into a shared space of ``embed_dim``
dimensions, L2-normalised; logits ``exp(t) cos(I_e, T_e)`` with the learned log-scale ``t``
(initialised to ``log(1/0.07)``, clipped at a scale of 100); the symmetric cross-entropy
over each batch of image-caption pairs. Both encoders and ``t`` are one parameter tree,
trained with Adam through ``train.run`` (:func:`nets.clip.make_step`).

**Captions.** Every training image is paired with one caption per *training template*
(``TRAIN_TEMPLATES``, six, e.g. ``"a handwritten seven"``, ``"the number 7 written by
hand"``): 1,079 images x 6 = 6,474 pairs, shuffled each epoch. The captions are tokenised by
the word-level tokenizer of :mod:`nets.tokenizer`, whose vocabulary is built from every
template (training and held-out) with every class's number word and numeral. Several
images of one class in a batch share identical or equivalent captions, so their pairs are
*false negatives* for each other (the loss cannot reach 0; with 10 classes and a batch of
128 about 13 images share a class): the price of captions made from labels.

**Zero-shot classification** of the 359 held-out test digits (never trained on): each
image's class is the one whose caption is nearest in the embedding space. The headline uses
a template NEVER seen in training, ``UNSEEN_TEMPLATES[0]`` = ``"a drawing of the numeral
{word}"`` (``drawing`` and ``numeral`` occur in no training caption: their embeddings are
still the random initial ones); ``UNSEEN_TEMPLATES`` holds two more, one of seen words in a
new order; each is reported, and so is their prompt ensemble (the renormalised mean of the
three class embeddings, Radford et al. section 3.1.4). Reported beside them: zero-shot
accuracy with each training template, and two baselines on the same frozen image
embeddings with the training labels: the nearest class mean (cosine) and a linear probe
(multinomial logistic regression, scikit-learn, as the paper's linear probes). Chance is
10%. The validation images (359, also held out) are scored every epoch (zero-shot accuracy
with the unseen and the first seen template, and the zero-shot cross-entropy with the
unseen template at the learned scale); nothing is selected on them.

Writes ``similarity.png`` (cosine similarities of 20 held-out images, two per class,
against the 10 class captions of the unseen template, images drawn above their columns,
each column's largest marked), ``curves.png`` (training loss against its floor, the logit
scale, validation zero-shot accuracy and cross-entropy per epoch), ``history.csv`` (per
epoch), ``zero_shot.csv`` (per template: seen or not, accuracy on the test digits) and
``timings.json`` (training seconds, compilation included; timings stay out of
``metrics.json``, which the same seed reproduces byte for byte).

Full run: ``python -m experiments run clip --no-progress`` (seed 0; embedding 32; image CNN
16-32 channels and a dense layer of 64; text Transformer of 2 causal pre-LN blocks, width 32,
2 heads; a vocabulary of 42 words, captions of at most 6 words and ``<end>``; 42,689
parameters; Adam 1e-3, batches of 128 pairs, 20 epochs of 50 steps; settings fixed before
the first full run). Zero-shot accuracy on the 359 held-out test digits (chance 10%):

    template                                    in training        accuracy
    "a drawing of the numeral {word}"  HEADLINE   no (2 new words)   97.5%
    "the handwritten digit {digit}"               no (a new order)   97.5%
    "a blurry sketch of a {word}"                 no (2 new words)   94.2%
    the three unseen ones, prompt ensemble        no                 97.5%
    each of the six training templates            yes                97.5-97.8%
    on the same image embeddings, with the training labels:
      nearest class mean 97.5%, linear probe (logistic regression) 97.5%

**Zero-shot with a template never seen in training is as accurate as a linear probe** on the
same embeddings (350 of 359 digits each): the text encoder places "a drawing of the numeral
seven", two of whose words it never trained on (their embeddings are still the random
initial ones), next to the images of sevens. The template with two unknown words in front
of the class word ("a blurry sketch of a ...") costs 3 points. Per epoch, the validation
zero-shot accuracy with the unseen template rises from 73.5% (epoch 1) to 96.7% (epoch 20),
with a training template from 74.4% to 98.1% (``curves.png``). The contrastive loss ends at
2.59 against 2.58 for its floor with same-class pairs in a batch (``E log n_class``, batch
128): the model separates the classes, which is all the captions allow. The learned scale
hardly moves (14.3 at the start, 14.2-14.4 throughout), so the clip at 100 is never active
in this run (its behaviour is tested in tests/test_clip.py). ``similarity.png``: for each of the
20 images shown, the caption of its own class is the most similar of the 10 (cosine 0.6-0.8,
the others -0.6-0.5).

Wall time 141-144 s (training 108-132 s, compilation included; 54-65 s of CPU) on the
shared 2-core CPU under load (load average 9-10, other jobs running); one run with the
compilation cache warm took 81 s. Three runs gave identical metrics.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import train
from experiments._config import (
    Annotated,
    Count,
    Positive,
    Range,
    Samples,
    Width,
)
from experiments._framework import progress_enabled, write_csv, write_json
from experiments._plot import plt, savefig
from nets import clip as C
from nets import tokenizer as tk

N_DIGITS = 1797  # scikit-learn's digits
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

TRAIN_TEMPLATES = (  # the captions of the training pairs
    "a handwritten {word}",
    "a photo of the digit {word}",
    "the number {digit} written by hand",
    "a scan of a handwritten {digit}",
    "an image of the number {word}",
    "a small picture of a {word}",
)
UNSEEN_TEMPLATES = (  # never in a training caption; the first is the headline
    "a drawing of the numeral {word}",  # two new words
    "the handwritten digit {digit}",  # seen words, a new order and a numeral
    "a blurry sketch of a {word}",  # two new words
)


def caption(template: str, label: int) -> str:
    """``template`` for class ``label``: ``{word}`` the number word, ``{digit}`` the numeral.

    >>> caption(TRAIN_TEMPLATES[2], 7)
    'the number 7 written by hand'
    """
    return template.format(word=WORDS[label], digit=str(label))


@dataclasses.dataclass(frozen=True)
class Config:
    embed_dim: Width = 32  # d, the shared embedding space
    image_channels: Annotated[tuple[int, ...], Range(1, 1024)] = (16, 32)  # conv 3x3 + pool 2
    image_hidden: Width = 64  # the image encoder's dense layer before the projection
    d_model: Width = 32  # the text Transformer's width
    n_heads: Annotated[int, Range(1, 64)] = 2  # attention heads (must divide d_model)
    n_layers: Annotated[int, Range(1, 16)] = 2  # text Transformer blocks (causal, pre-LN)
    learning_rate: Positive = 1e-3  # Adam's step, all parameters (t included)
    batch_size: Samples = 128  # image-caption pairs per step (the contrastive batch)
    epochs: Count = 20  # passes over the 6 x n_train pairs
    init_temperature: Annotated[float, Range(0.01, 1.0)] = 0.07  # tau at the start
    max_scale: Annotated[float, Range(1.0, 1000.0, lo_open=True)] = 100.0  # the clip of exp(t)
    val_fraction: Annotated[float, Range(0.05, 0.45)] = 0.2  # digits held out, scored per epoch
    test_fraction: Annotated[float, Range(0.05, 0.45)] = 0.2  # held out: the zero-shot accuracy
    seed: int = 0  # the split, initial weights, data order


SMOKE = {"embed_dim": 8, "image_channels": (4,), "image_hidden": 8, "d_model": 8,
         "n_layers": 1, "batch_size": 256, "epochs": 2}


def check(config: Config) -> None:
    """Checks across fields (and the ones a Config built by hand could break)."""
    if config.d_model % config.n_heads:
        raise ValueError(f"n_heads: expected a divisor of d_model={config.d_model}, got "
                         f"{config.n_heads}")
    if not 1 <= len(config.image_channels) <= 3:
        raise ValueError(f"image_channels: expected 1 to 3 convolutions (each halves the 8x8 "
                         f"image), got {config.image_channels}")
    if not (0.05 <= config.val_fraction <= 0.45 and 0.05 <= config.test_fraction <= 0.45):
        raise ValueError(f"val_fraction, test_fraction: expected numbers in [0.05, 0.45], got "
                         f"{config.val_fraction} and {config.test_fraction}")
    pairs = n_train(config) * len(TRAIN_TEMPLATES)
    if config.batch_size > pairs:
        raise ValueError(f"batch_size: expected at most the {pairs} training pairs "
                         f"({n_train(config)} images x {len(TRAIN_TEMPLATES)} templates), got "
                         f"{config.batch_size}")
    if 1.0 / config.init_temperature > config.max_scale:
        raise ValueError(f"init_temperature: expected 1 / init_temperature <= max_scale = "
                         f"{config.max_scale}, got {config.init_temperature}")
    for name in ("embed_dim", "image_hidden", "d_model", "batch_size", "epochs"):
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if not config.learning_rate > 0:
        raise ValueError(f"learning_rate: expected a positive number, got "
                         f"{config.learning_rate}")


def n_train(config: Config) -> int:
    """Training images of the split (``train.data.random_split``'s set sizes: the test and
    validation sets ``round(n * fraction)``, halves up; the rest trains)."""
    rounded = lambda f: int(math.floor(N_DIGITS * f + 0.5))  # noqa: E731
    return N_DIGITS - rounded(config.test_fraction) - rounded(config.val_fraction)


def _captions(tok: tk.Tokenizer, templates) -> np.ndarray:
    """Token ids ``(P, 10, T)``: each template's caption of each class."""
    return np.stack([tok.encode_batch([caption(t, k) for k in range(10)]) for t in templates])


def _make_evaluate(clip: C.CLIP, unseen_ids: np.ndarray, seen_ids: np.ndarray):
    """``evaluate(state, (images, ids), key)`` on validation pairs whose captions are the
    seen template's (``seen_ids[label]``, the structure ``train.run`` asks of validation
    data): the label is the class whose caption the pair holds. Zero-shot accuracy with the
    unseen and the seen template, and the zero-shot cross-entropy with the unseen one."""
    def evaluate(state, batch, key):
        images, ids = batch
        labels = jnp.argmax(jnp.all(ids[:, None, :] == seen_ids[None], axis=-1), axis=1)
        p = state.params
        i_e = C._image_features(clip, p, images)
        both = C._text_features(clip, p, jnp.asarray(np.concatenate([unseen_ids, seen_ids])))
        unseen, seen = both[:10], both[10:]  # (10, d) each
        logits = C.clip_logits(i_e, unseen, p["log_scale"], clip.max_scale)  # (b, 10)
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)
        return {"zero_shot": jnp.mean(jnp.argmax(logits, 1) == labels),
                "zero_shot_seen": jnp.mean(C.zero_shot_predict(i_e, seen) == labels),
                "zero_shot_loss": jnp.mean(ce)}
    return evaluate


def _probe(train_emb, y_train, test_emb, y_test) -> dict:
    """Nearest class mean (cosine) and a linear probe on frozen image embeddings."""
    from sklearn.linear_model import LogisticRegression

    means = np.stack([train_emb[y_train == k].mean(0) for k in range(10)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    ncm = float(np.mean(np.argmax(test_emb @ means.T, axis=1) == y_test))
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(train_emb, y_train)
    return {"nearest_class_mean_accuracy": ncm,
            "linear_probe_accuracy": float(lr.score(test_emb, y_test))}


def _class_floor(labels: np.ndarray, batch_size: int, seed: int, draws: int = 200) -> float:
    """``E[mean_i log n_c(i)]`` over random batches, ``n_c(i)`` the pairs of image ``i``'s
    class in its batch: the loss, at any scale, of a model that ranks every caption of the
    right class first but cannot tell them apart (nor can any model: a caption's template
    says nothing of which image of its class it came with). Both directions share it."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(draws):
        batch = labels[rng.choice(len(labels), batch_size, replace=False)]
        total += np.mean(np.log(np.bincount(batch, minlength=10)[batch]))
    return float(total / draws)


def run(config: Config, outdir) -> dict:
    check(config)
    key_data, key_init, key_run = jax.random.split(jax.random.key(config.seed), 3)
    split = train.data.load_digits(key=key_data, val_fraction=config.val_fraction,
                                   test_fraction=config.test_fraction)
    image = lambda X: np.asarray(X, np.float32).reshape(-1, 8, 8, 1)  # noqa: E731
    (X_train, y_train), (X_val, y_val), (X_test, y_test) = (
        (image(X), np.asarray(y)) for X, y in (split.train, split.val, split.test))

    templates = TRAIN_TEMPLATES + UNSEEN_TEMPLATES
    tok = tk.build([caption(t, k) for t in templates for k in range(10)])
    table = _captions(tok, templates)  # (P, 10, T)
    n_seen = len(TRAIN_TEMPLATES)
    train_words = {w for t in TRAIN_TEMPLATES for k in range(10) for w in tk.words(caption(t, k))}
    new_words = {t: sorted(set(tk.words(t.format(word="", digit=""))) - train_words)
                 for t in UNSEEN_TEMPLATES}

    # the training pairs: each image with each training template's caption of its label
    pair_images = np.repeat(X_train, n_seen, axis=0)  # (n * P_seen, 8, 8, 1)
    pair_ids = table[np.tile(np.arange(n_seen), len(X_train)), np.repeat(y_train, n_seen)]
    n_pairs = len(pair_images)

    clip = C.model(vocab_size=tok.vocab_size, seq_len=tok.length, end_id=tok.end_id,
                   embed_dim=config.embed_dim, image_channels=config.image_channels,
                   image_hidden=config.image_hidden, d_model=config.d_model,
                   n_heads=config.n_heads, n_layers=config.n_layers,
                   max_scale=config.max_scale, init_temperature=config.init_temperature)
    optimizer = optax.adam(config.learning_rate)
    state = jax.jit(lambda k: C.init_state(clip, optimizer, key=k))(key_init)  # one program
    step = C.make_step(clip, optimizer)
    evaluate = _make_evaluate(clip, table[n_seen], table[0])
    floor = _class_floor(np.repeat(y_train, n_seen), config.batch_size, config.seed)
    start = time.perf_counter()
    r = train.run(step, state, (pair_images, pair_ids), epochs=config.epochs,
                  batch_size=config.batch_size, key=key_run, evaluate=evaluate,
                  validation=(X_val, table[0][y_val]), best_of=lambda s: (),  # final state
                  progress=progress_enabled(), desc="clip")
    seconds = time.perf_counter() - start
    params = r.state.params

    # zero-shot on the held-out test digits, every template; baselines on the same embeddings
    # (one program per modality; the rest in NumPy)
    emb = np.asarray(C.embed_images(clip, params, np.concatenate([X_train, X_test])))
    train_emb, test_emb = emb[:len(X_train)], emb[len(X_train):]
    cap_emb = np.asarray(C.embed_texts(clip, params, table.reshape(-1, tok.length)))
    cap_emb = cap_emb.reshape(len(templates), 10, -1)  # (P, 10, d)
    predict = lambda class_emb: np.argmax(test_emb @ class_emb.T, axis=1)  # noqa: E731
    acc = {t: float(np.mean(predict(cap_emb[i]) == y_test)) for i, t in enumerate(templates)}
    ensemble = cap_emb[n_seen:].mean(0)  # prompt ensembling: the renormalised mean
    ensemble /= np.linalg.norm(ensemble, axis=1, keepdims=True)
    ens_acc = float(np.mean(predict(ensemble) == y_test))
    probes = _probe(train_emb, y_train, test_emb, y_test)
    headline = acc[UNSEEN_TEMPLATES[0]]
    h = r.history
    metrics = {
        "zero_shot_accuracy": headline,
        "test_error": 1.0 - headline,
        "chance": 0.1,
        "unseen_template": UNSEEN_TEMPLATES[0],
        "zero_shot_accuracy_unseen": {t: acc[t] for t in UNSEEN_TEMPLATES},
        "zero_shot_accuracy_seen": {t: acc[t] for t in TRAIN_TEMPLATES},
        "mean_zero_shot_accuracy_unseen": float(np.mean([acc[t] for t in UNSEEN_TEMPLATES])),
        "mean_zero_shot_accuracy_seen": float(np.mean([acc[t] for t in TRAIN_TEMPLATES])),
        "zero_shot_accuracy_unseen_ensemble": ens_acc,
        **probes,
        "new_words": new_words,
        "final_logit_scale": float(min(np.exp(float(params["log_scale"])), clip.max_scale)),
        "final_train_loss": float(h["loss"][-1]),
        "class_floor": floor,
        "final_val_zero_shot_accuracy": float(h["val_zero_shot"][-1]),
        "n_train_pairs": n_pairs, "n_test": len(y_test), "vocab_size": tok.vocab_size,
        "seq_len": tok.length, "steps_per_epoch": n_pairs // config.batch_size,
        "n_params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
    }
    print(f"  zero-shot accuracy on {len(y_test)} held-out digits, unseen template "
          f"{UNSEEN_TEMPLATES[0]!r}: {100 * headline:.1f}% (chance 10%); seen template "
          f"{TRAIN_TEMPLATES[0]!r}: {100 * acc[TRAIN_TEMPLATES[0]]:.1f}%; linear probe "
          f"{100 * probes['linear_probe_accuracy']:.1f}%")

    write_csv(outdir / "history.csv", [
        {"epoch": e + 1, **{k: float(v[e]) for k, v in h.items()}}
        for e in range(len(h["loss"]))])
    write_json(outdir / "timings.json", {"train_seconds": seconds,
                                         "device": str(jax.devices()[0])})
    write_csv(outdir / "zero_shot.csv", [
        {"template": t, "seen_in_training": t in TRAIN_TEMPLATES, "accuracy": acc[t]}
        for t in templates])
    _plot_similarity(test_emb, cap_emb[n_seen], X_test, y_test, metrics,
                     outdir / "similarity.png")
    _plot_curves(h, metrics, config, outdir / "curves.png")
    return metrics


# --- figures ---------------------------------------------------------------------------------

def _plot_similarity(test_emb, class_emb, X_test, y_test, metrics, path) -> None:
    pick = np.concatenate([np.flatnonzero(y_test == k)[:2] for k in range(10)])
    sim = class_emb @ test_emb[pick].T  # (10 captions, n images)
    n = len(pick)
    fig, (top, ax) = plt.subplots(2, 1, figsize=(0.5 * n + 4, 7.0), sharex=True,
                                  height_ratios=(1, 8), layout="constrained")
    for j, i in enumerate(pick):  # each image above its column
        top.imshow(X_test[i, :, :, 0], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest",
                   extent=(j - 0.45, j + 0.45, 0, 1))
    top.set(xlim=(-0.5, n - 0.5), ylim=(0, 1), yticks=[], aspect="auto")
    top.tick_params(bottom=False)
    for side in top.spines.values():
        side.set_visible(False)
    im = ax.imshow(sim, cmap="viridis", aspect="auto")
    best = sim.argmax(0)
    for j in range(n):
        right = best[j] == y_test[pick[j]]
        ax.scatter(j, best[j], marker="o" if right else "x", s=40,
                   color="white" if right else "red", linewidths=1.5)
    ax.set_xticks(range(n), [str(int(y_test[i])) for i in pick])
    ax.set_yticks(range(10), [caption(metrics["unseen_template"], k) for k in range(10)])
    ax.set_xlabel("held-out test image (its true class); o: its most similar caption, "
                  "right; x: wrong")
    fig.colorbar(im, ax=[top, ax], label="cosine similarity", shrink=0.8)
    fig.suptitle(f"Image-caption cosine similarity, a template never seen in training: "
                 f"zero-shot accuracy {100 * metrics['zero_shot_accuracy']:.1f}% on "
                 f"{metrics['n_test']} held-out digits (chance 10%)", fontsize=10)
    savefig(fig, path)


def _plot_curves(h, metrics, config, path) -> None:
    e = np.arange(1, len(h["loss"]) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
    axes[0].plot(e, h["loss"], marker="o", ms=3, label="contrastive loss (epoch mean)")
    axes[0].axhline(metrics["class_floor"], color="C0", linestyle="--", linewidth=0.9,
                    label=f"its floor with same-class pairs in a batch\n"
                          f"(E log n_class, batch {config.batch_size}): "
                          f"{metrics['class_floor']:.2f}")
    axes[0].plot(e, h["val_zero_shot_loss"], marker="o", ms=3, color="C1",
                 label="validation zero-shot cross-entropy\n(unseen template, 10 classes)")
    axes[0].set(xlabel="epoch", ylabel="loss", ylim=(0, None),
                title="Training loss and validation cross-entropy")
    axes[1].plot(e, h["logit_scale"], marker="o", ms=3, color="C2", label="exp(t), end of epoch")
    axes[1].axhline(config.max_scale, color="0.5", linewidth=0.8,
                    label=f"the clip at {config.max_scale:g}")
    axes[1].axhline(1 / config.init_temperature, color="0.5", linewidth=0.8, linestyle=":",
                    label=f"initial 1 / {config.init_temperature:g}")
    axes[1].set(xlabel="epoch", ylabel="exp(t)", title="Logit scale (1 / temperature)",
                ylim=(0, 1.08 * config.max_scale))
    axes[2].plot(e, 100 * np.asarray(h["val_zero_shot"]), marker="o", ms=3,
                 label="unseen template")
    axes[2].plot(e, 100 * np.asarray(h["val_zero_shot_seen"]), marker="o", ms=3,
                 label="a training template")
    axes[2].axhline(10, color="0.5", linewidth=0.8, label="chance (10%)")
    axes[2].set(xlabel="epoch", ylabel="accuracy, %", ylim=(0, 102),
                title="Zero-shot accuracy, validation digits (held out)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    savefig(fig, path)
