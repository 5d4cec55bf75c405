"""Padded sequences: with pad_id a model's predictions ignore the padding; without it they drift.

Sequences of different lengths are right-padded to one length ``T`` with a pad token, id 0
(:mod:`nets._sequence`, "Padding"). A model built with ``pad_id=0`` hides the padding from
attention and reads only the real positions at its readout, so every sequence gets what a
model of its own length would give it; a model without ``pad_id`` reads the pad token as
one more token. The experiment trains both on the same data from the same initial weights
and then pads the test sequences further, to longer lengths ``T'`` never seen in training
(the same params in a model built for ``T'``: embeddings, sinusoidal positions, attention
and the LSTM's weights do not depend on ``T``).

The task ("majority"): ``k ~ U{min_length..max_length}`` real tokens among ids ``1..vocab``,
each drawn uniformly; the label is 1 if token 1 occurs more often than token 2, else 0 (ties
are drawn again); the other ids are noise. Padded to ``max_length`` for training. Models:

* an encoder Transformer (``causal=False``, ``readout="mean"``: the mean of the per-position
  scores, ``n_layers`` pre-LN blocks of 2 heads, width ``d_model``);
* an LSTM (``lstm_hidden`` units over a ``d_model`` embedding, ``readout="last"``: its score
  after the last real token with ``pad_id``, after the last pad without);
* Mamba (``n_layers`` blocks of width ``d_model``, state ``mamba_state``, the sequential
  scan; ``readout="mean"``: causal, so the mask matters at the readout only).

Each trains through ``train.fit`` (cross-entropy, Adam ``learning_rate``, ``epochs`` of
minibatches of ``batch_size``), with and without ``pad_id`` from the same initial weights
and data order. Measured: test accuracy at every padded length in ``eval_lengths``, accuracy
by real length, and the largest change of a masked model's scores between the training
length and any longer padding (float32 rounding: the claim ``masked_invariant`` is that it
stays below ``1e-4`` and the predicted classes are the same).

Writes ``padding.png`` (test accuracy and the largest change of the scores against the
padded length, masked against unmasked, a column per model), ``history.csv``
(training loss per epoch) and ``results.csv`` (model, masked, padded length: accuracy).

Full run: ``python -m experiments run padding`` (seed 0, defaults: vocabulary 6, real
lengths 4..16 padded to 16 for training, evaluated padded to 16, 32, 64, 128, 256; 4,096
training and 2,048 test sequences; 20 epochs of batch 64, Adam 3e-3). Both claims hold.
Test accuracy at each padded length ``T'``:

    T'                              16      32      64      128     256     largest change
    Transformer, pad_id=0           1.000   1.000   1.000   1.000   1.000   1.4e-6
    Transformer, no pad_id          1.000   1.000   0.963   0.671   0.493   11.4
    LSTM, pad_id=0                  1.000   1.000   1.000   1.000   1.000   0 (exactly)
    LSTM, no pad_id                 1.000   1.000   1.000   1.000   1.000   4.8
    Mamba, pad_id=0                 0.998   0.998   0.998   0.998   0.998   0 (exactly)
    Mamba, no pad_id                0.998   0.992   0.995   0.792   0.574   22.6

At the training length the models are equally right (final training losses 2.8e-5 to
6.7e-5; Mamba's 1.0e-3 and 1.6e-3). Padded further, the masked models give the same scores
to float32 rounding (the LSTM and Mamba bit for bit: causal, they compute the real
positions through the same operations, and the readout reads only those). The unmasked
encoder averages ever more pad positions into its readout and attends to them from every
real position: its scores move by up to 11.4 and it falls to chance at 256. Unmasked Mamba
averages the pad positions' scores into its mean too: 0.574 at 256. The unmasked LSTM's
state settles to a fixed point over the pads (its scores move by 4.8 at ``T' = 32`` and no
further), which here keeps every sign: it still reads the right class, by a margin the
padding has changed. Wall time 123 s with a cold compilation cache (a test run beside
it), 72 s warm, on the 2-core CPU; two runs wrote byte-identical ``metrics.json``,
``results.csv`` and ``history.csv``.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax

import train
from experiments._config import (
    Annotated, Count, Distinct, Increasing, Names, NonEmpty, Positive, Range, Samples, Width,
    at_most, even)
from experiments._framework import predict, progress, progress_enabled, write_csv
from experiments._plot import plt, savefig
from nets import metrics as _metrics
from nets import mamba, objective, rnn, transformer
from nets.model import Model

PAD = 0  # the pad token's id
KINDS = ("transformer", "lstm", "mamba")
LABELS = {"transformer": "encoder Transformer, mean readout", "lstm": "LSTM, last readout",
          "mamba": "Mamba, mean readout"}
MAX_LENGTH = 1024


@dataclasses.dataclass(frozen=True)
class Config:
    models: Names(KINDS) = KINDS  # the models compared, each with and without pad_id
    # real token ids 1..vocab: 1 and 2 are counted, the rest are noise
    vocab: Annotated[int, Range(3, 256)] = 6
    min_length: Annotated[int, Range(1, MAX_LENGTH)] = 4  # shortest real sequence
    max_length: Annotated[int, Range(1, MAX_LENGTH)] = 16  # longest real sequence = training T
    # padded lengths T' of the test sequences (each >= max_length)
    eval_lengths: Annotated[tuple[int, ...], NonEmpty(), Distinct(), Increasing(),
                            Range(1, MAX_LENGTH)] = (16, 32, 64, 128, 256)
    d_model: Width = 16  # width of the Transformer, embedding of the LSTM
    n_layers: Annotated[int, Range(1, 16)] = 2  # Transformer blocks
    lstm_hidden: Width = 32  # LSTM units
    mamba_state: Width = 4  # Mamba's state size N per channel (its blocks: n_layers)
    n_train: Samples = 4096  # training sequences
    n_test: Samples = 2048  # test sequences
    epochs: Count = 20  # passes over the training sequences
    batch_size: Samples = 64  # sequences per step
    learning_rate: Positive = 3e-3  # Adam's step
    seed: int = 0  # data (NumPy), initial weights and data order (jax.random.key(seed))


SMOKE = {"n_train": 128, "n_test": 64, "epochs": 1, "batch_size": 32, "d_model": 8,
         "n_layers": 1, "lstm_hidden": 8, "mamba_state": 2, "eval_lengths": (16, 24)}


def check(config: Config) -> None:
    """Checks across fields."""
    if config.min_length > config.max_length:
        raise ValueError(f"min_length: expected at most max_length={config.max_length}, got "
                         f"{config.min_length}")
    if config.eval_lengths[0] < config.max_length:
        raise ValueError(f"eval_lengths: expected lengths >= max_length={config.max_length} "
                         f"(the test sequences are padded to them), got {config.eval_lengths}")
    at_most(config, "batch_size", "n_train")
    even(config, "d_model", "2 attention heads")


def majority(rng: np.random.Generator, n: int, config: Config, T: int):
    """``(X, y, lengths)``: ``n`` sequences of ``k`` real tokens (ids ``1..vocab``) then pads
    (id 0) to length ``T``; ``y = 1`` if token 1 occurs more often than token 2, else 0
    (sequences with a tie are drawn again)."""
    lengths = rng.integers(config.min_length, config.max_length + 1, n)
    X = np.zeros((n, T), np.int32)
    todo = np.arange(n)
    while todo.size:
        for i in todo:
            X[i, :lengths[i]] = rng.integers(1, config.vocab + 1, lengths[i])
        ones, twos = (X[todo] == 1).sum(1), (X[todo] == 2).sum(1)
        todo = todo[ones == twos]
    return X, ((X == 1).sum(1) > (X == 2).sum(1)).astype(np.int32), lengths


def pad_to(X: np.ndarray, T: int) -> np.ndarray:
    """``X`` (n, t) right-padded with the pad id to ``(n, T)``."""
    return np.pad(X, ((0, 0), (0, T - X.shape[1])), constant_values=PAD)


def build(kind: str, T: int, masked: bool, config: Config) -> Model:
    """The ``kind`` classifier of sequences of length ``T`` (2 classes), with ``pad_id`` when
    ``masked``."""
    io = dict(vocab_size=config.vocab + 1, n_classes=2, seq_len=T, d_model=config.d_model,
              pad_id=PAD if masked else None)
    if kind == "transformer":
        return transformer.model(causal=False, readout="mean", n_heads=2,
                                 n_layers=config.n_layers, d_mlp=2 * config.d_model, **io)
    if kind == "mamba":  # the sequential scan: faster on a CPU, the same function
        return mamba.model(n_layers=config.n_layers, d_state=config.mamba_state,
                           readout="mean", scan="sequential", **io)
    return rnn.model(d_hidden=config.lstm_hidden, readout="last", **io)


def run(config: Config, outdir) -> dict:
    check(config)
    rng_train, rng_test = (np.random.default_rng([config.seed, s]) for s in (0, 1))
    X, y, _ = majority(rng_train, config.n_train, config, config.max_length)
    X_test, y_test, len_test = majority(rng_test, config.n_test, config, config.max_length)
    key_init, key_order = jax.random.split(jax.random.key(config.seed))
    results, history, rows = {}, [], []
    for kind in progress(config.models, desc="padding"):
        params0, _ = build(kind, config.max_length, True, config).init(
            jax.random.fold_in(key_init, KINDS.index(kind)))
        for masked in (True, False):
            net = build(kind, config.max_length, masked, config)
            fitted = train.fit(objective.make(net, "cross_entropy"), params0, (X, y),
                               optimizer=optax.adam(config.learning_rate),
                               epochs=config.epochs, batch_size=config.batch_size,
                               key=jax.random.fold_in(key_order, KINDS.index(kind)),
                               progress=progress_enabled())
            name = f"{kind}_{'masked' if masked else 'unmasked'}"
            history += [{"model": kind, "masked": masked, "epoch": e,
                         "loss": fitted.history["loss"][e - 1]}
                        for e in fitted.history["epoch"]]
            scores = {T: predict(build(kind, T, masked, config), fitted.params,
                                 pad_to(X_test, T), chunk=512) for T in config.eval_lengths}
            accuracy = {T: float(_metrics.accuracy(Z, y_test)) for T, Z in scores.items()}
            base = scores[config.eval_lengths[0]]
            change = {T: float(np.max(np.abs(Z - base))) for T, Z in scores.items()}
            drift = max(change.values())
            same = all(np.array_equal(Z.argmax(1), base.argmax(1)) for Z in scores.values())
            longest = scores[config.eval_lengths[-1]].argmax(1) == y_test
            by_length = {int(k): float(np.mean(longest[len_test == k]))
                         for k in np.unique(len_test)}
            results[name] = {"accuracy": {str(T): a for T, a in accuracy.items()},
                             "score_change": {str(T): c for T, c in change.items()},
                             "max_score_change": drift, "same_predictions": same,
                             "accuracy_by_real_length_at_longest": by_length,
                             "final_loss": float(fitted.history["loss"][-1])}
            rows += [{"model": kind, "masked": masked, "padded_length": T, "accuracy": a}
                     for T, a in accuracy.items()]
            print(f"  {name:<22} accuracy at T' = "
                  + ", ".join(f"{T}: {a:.3f}" for T, a in accuracy.items())
                  + f"; largest score change {drift:.2e}")
    write_csv(outdir / "history.csv", history)
    write_csv(outdir / "results.csv", rows)
    _plot(config, results, outdir / "padding.png")
    claims = {f"{kind}_masked_invariant": bool(results[f"{kind}_masked"]["max_score_change"]
                                               < 1e-4
                                               and results[f"{kind}_masked"]["same_predictions"])
              for kind in config.models}
    return {"results": results, "claims": claims, "all_claims_hold": all(claims.values()),
            "eval_lengths": list(config.eval_lengths),
            "test_accuracy": {name: r["accuracy"][str(config.max_length)]
                              for name, r in results.items()}}


def _plot(config: Config, results: dict, path) -> None:
    kinds = config.models
    fig, axes = plt.subplots(2, len(kinds), figsize=(6.2 * len(kinds), 8.0), squeeze=False,
                             layout="constrained")
    Ts = list(config.eval_lengths)
    for j, kind in enumerate(kinds):
        top, bottom = axes[0, j], axes[1, j]
        for masked, style in ((True, dict(color="C0", marker="o", linewidth=4, alpha=0.6,
                                          markersize=9)),
                              (False, dict(color="C3", marker="s", linestyle="--"))):
            r = results[f"{kind}_{'masked' if masked else 'unmasked'}"]
            change = r["max_score_change"]
            label = (f"pad_id=0 (largest change {change:.1e})" if masked and change else
                     "pad_id=0 (no change: exactly the same scores)" if masked else
                     f"no pad_id (largest change {change:.2g})")
            top.plot(Ts, [r["accuracy"][str(T)] for T in Ts], label=label, **style)
            bottom.plot(Ts, [r["score_change"][str(T)] for T in Ts], label=label, **style)
        top.set(title=LABELS[kind], ylabel="test accuracy", ylim=(0.0, 1.05))
        top.axhline(0.5, color="gray", linestyle=":", linewidth=0.8)
        top.text(Ts[-1], 0.51, "chance", color="gray", fontsize=8, ha="right", va="bottom")
        highest = max(max(results[f"{kind}_{m}"]["score_change"].values())
                      for m in ("masked", "unmasked"))
        bottom.set_ylim(-0.05 * highest, 1.4 * highest if highest else 1.0)  # legend room
        bottom.set(title="largest change of a test sequence's scores",
                   ylabel=f"max |z(T') - z({Ts[0]})| over the test set")
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xticks(Ts, [str(T) for T in Ts])
            ax.minorticks_off()
            ax.set_xlabel(f"padded length T' of the test sequences (trained at "
                          f"{config.max_length})")
            ax.grid(alpha=0.3)
        top.legend(loc="lower left")
        bottom.legend(loc="upper left")
    fig.suptitle(f"Is token 1 more frequent than token 2? {config.min_length}..{config.max_length} "
                 f"real tokens, right-padded; the same weights evaluated at longer padding")
    savefig(fig, path)
