"""DenseNet: dense blocks (each layer sees all earlier maps) vs a plain CNN of equal size on digits.

The note lists DenseNet among the architectures. :mod:`nets.densenet` builds it from
:mod:`nets.layers` (Huang et al. 2017, arXiv:1608.06993): in a dense block layer ``l``
computes ``x_l = H_l([x_0, x_1, ..., x_{l-1}])``, ``H_l`` = BN -> ReLU -> Conv 3x3 with
``growth`` maps, on the concatenation of the block input and every earlier layer's output;
transitions (BN -> ReLU -> Conv 1x1 keeping half the maps -> 2x2 average pooling) between
blocks; BN -> ReLU -> global average pooling -> Dense at the end. The counterpart
(:func:`nets.densenet.matched_plain`) is the plain CNN of the same depth and layout
(stem, the same number of BN-ReLU-Conv 3x3 layers per block, the same transitions and
head) with ``x_l = H_l(x_{l-1})``, its one width chosen so that its parameter count is the
nearest to the DenseNet's: the two differ in connectivity, not in size or depth.

Both nets are trained on scikit-learn's 8x8 digits (the split of ``seed``: 1,079 / 359 /
359 images, grey levels / 16) by ``train.fit`` with the same protocol: Adam, minibatches,
early stopping on the validation loss (the best epoch's parameters and batch-norm
statistics kept). Replicate ``i`` takes its initial weights and data order from
``jax.random.key(seed + i)``; the DenseNet and the plain net of one replicate share that
key, and every replicate is scored on the same test images, so seeds are paired. The
replicates run one after another through one compiled program per net, not in one
``train.sweep``: stacking convolution kernels under ``jax.vmap`` turns each convolution
into a grouped one, which XLA runs slower on CPU (measured once, warm, on the shared
2-core CPU: 5.5 s per DenseNet and epoch in one sweep of 5 against 2.8 s one at a time).
The protocol is the cnn experiment's CNN one (Adam 3e-3, batch 32), with patience 8 and a
40-epoch cap; nothing was tuned on these nets.

Writes ``test_error.png`` (test error of each net, mean +- sd and every seed, paired lines;
the parameter and connection counts), ``learning_curves.png`` (training loss and
validation error per epoch, a line per seed), ``weights.png`` (the trained DenseNet's mean
``|w|`` from each source ``x_s`` to each layer ``l`` of each block, the paper's Figure 5),
``history.csv`` (net, seed, epoch) and ``timings.json``.

Full run: ``python -m experiments run densenet --no-progress`` (seed 0: seeds 0-4 on seed
0's split; growth 8, blocks of 4 and 4 layers, a 16-map stem, compression 0.5). Test error
on 359 images, mean +- sd over the 5 seeds (range):

    DenseNet   1.62% +- 0.64 (0.84-2.23)  21,018 parameters, 778,938 connections
    plain CNN  2.12% +- 0.94 (1.11-3.06)  21,770 parameters (width 17, +3.6%), 867,588 conn.

Paired by seed, DenseNet minus plain: -0.50 +- 1.41 points, the DenseNet lower on 3 of 5
seeds and higher on 2: **no difference beyond the seed spread** at this size (0.50 points
is 1.8 of 359 test images; the paired sd is 5 images). Validation error 0.56% vs 0.78%.
The DenseNet reached its lowest validation loss sooner on 4 of 5 seeds (best epochs 18,
11, 7, 20, 15 against 19, 26, 39, 27, 14; one plain seed ran to the 40-epoch cap with its
best at epoch 39, so a longer cap might lower the plain net's error). ``weights.png``: in
every layer the trained kernel's mean ``|w|`` is about the same on each source (within a
row, where every source starts from the same He-normal scale, the largest is at most 1.33
times the smallest, to the 2 decimals shown; in block 2 the block input ``x_0`` is the
lowest, 0.06-0.07 against 0.08-0.09 on the newest maps): each layer uses the block input and
all earlier layers' maps, not only the latest, as Huang et al. found (their Figure 5).

Wall time 1,514 s (DenseNet 654 s, plain 848 s: more epochs) with a cold compilation cache
on a 2-core CPU shared with other jobs (load average 8-10; 11 min 48 s of CPU time).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
import optax
from matplotlib.ticker import MaxNLocator

import train
from experiments._config import (
    Annotated, Count, NonEmpty, Positive, Range, Replicates, Samples, Width)
from experiments._framework import progress_enabled, write_csv, write_json
from experiments._plot import plt, savefig
from nets import cnn, densenet, metrics, objective

NETS = ("densenet", "plain")
LABELS = {"densenet": "DenseNet", "plain": "plain CNN"}


@dataclasses.dataclass(frozen=True)
class Config:
    growth: Width = 8  # k: maps each dense layer adds
    # layers per dense block (a transition between blocks)
    blocks: Annotated[tuple[int, ...], NonEmpty(), Range(1, 100)] = (4, 4)
    stem: Width | None = None  # maps of the first 3x3 convolution; None: 2 * growth
    # theta: a transition keeps floor(theta m) of its m maps
    compression: Annotated[float, Range(0, 1, lo_open=True)] = 0.5
    batch_norm: bool = True  # BN in every composite H_l, transition and head (both nets)
    # training images used (the first of the split); None: all 1079
    n_train: Annotated[int, Range(10, 1079)] | None = None
    learning_rate: Positive = 3e-3  # Adam step, both nets
    batch_size: Samples = 32  # examples per step
    epochs: Count = 40  # most epochs
    patience: Count = 8  # stop after this many epochs without a lower validation loss
    # Replicate i: initial weights and data order from jax.random.key(seed + i), the same
    # for both nets; the split is always seed's.
    seeds: Replicates = 5
    seed: int = 0  # the split and the first replicate


SMOKE = {"growth": 2, "blocks": (1,), "n_train": 64, "epochs": 1, "patience": 1, "seeds": 1}


def _spread(values) -> dict:
    """Mean, sample standard deviation, range and the values themselves (one per seed)."""
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "per_seed": [float(x) for x in v]}


def _images(pair):
    X, y = pair
    return np.asarray(X).reshape(-1, 8, 8, 1), np.asarray(y)


def check(config: Config) -> None:
    if config.seeds < 1:
        raise ValueError(f"seeds: expected at least 1, got {config.seeds}")
    if config.n_train is not None and not 10 <= config.n_train <= 1079:
        raise ValueError(f"n_train: expected 10 to 1079 training images or None (all), got "
                         f"{config.n_train}")
    if config.epochs < 1:
        raise ValueError(f"epochs: expected at least 1, got {config.epochs}")


def build(config: Config) -> dict:
    """``{"densenet": Model, "plain": Model}`` and the plain net's width, for ``config``."""
    kw = dict(blocks=config.blocks, batch_norm=config.batch_norm)
    net = densenet.model(growth=config.growth, stem=config.stem,
                         compression=config.compression, **kw)
    twin, width = densenet.matched_plain(densenet.n_params(net), **kw)
    return {"densenet": net, "plain": twin}, width


def run(config: Config, outdir) -> dict:
    check(config)
    models, width = build(config)  # bad architecture arguments raise here, before compiling
    seeds = [config.seed + i for i in range(config.seeds)]
    split = train.data.load_digits(key=jax.random.split(jax.random.key(config.seed), 3)[0])
    tr, va, te = _images(split.train), _images(split.val), _images(split.test)
    if config.n_train is not None:
        tr = (tr[0][:config.n_train], tr[1][:config.n_train])

    optimizer = optax.adam(config.learning_rate)  # one object: one compiled program per net
    out, curves, trained, timings, history = {}, {}, {}, {}, []
    for name, model in models.items():
        loss = objective.make(model)
        error = model.metric(metrics.error_rate)
        start = time.perf_counter()
        test, val, best, ran, runs = [], [], [], [], []
        for s in seeds:
            _, key_init, key_order = jax.random.split(jax.random.key(s), 3)
            params, state = model.init(key_init)
            r = train.fit(loss, params, tr, model_state=state if model.stateful else None,
                          optimizer=optimizer, epochs=config.epochs,
                          batch_size=config.batch_size, key=key_order, validation=va,
                          patience=config.patience, num_classes=10,
                          metrics={"error": error}, progress=progress_enabled())
            test.append(float(error(r.params, *te, model_state=r.model_state)))
            val.append(float(error(r.params, *va, model_state=r.model_state)))
            best.append(int(r.best_epoch))
            ran.append(int(r.epochs_run))
            runs.append(r)
            history += [{"net": name, "seed": s, "epoch": e,
                         **{k: float(r.history[k][e - 1])
                            for k in ("loss", "error", "val_loss", "val_error")}}
                        for e in r.history["epoch"]]
        timings[name] = time.perf_counter() - start
        curves[name] = [{k: np.asarray(r.history[k], np.float64)
                         for k in ("loss", "val_error")} for r in runs]
        trained[name] = [r.params for r in runs]
        out[name] = {"test_error": _spread(test), "val_error": _spread(val),
                     "best_epoch": best, "epochs_run": ran,
                     "params": densenet.n_params(model),
                     "connections": cnn.connections(model)}
        print(f"  {LABELS[name]}: test error {100 * np.mean(test):.2f}% +- "
              f"{100 * out[name]['test_error']['sd']:.2f}, {out[name]['params']:,} "
              f"parameters, best epochs {best}, {timings[name]:.1f} s")

    d = (np.asarray(out["densenet"]["test_error"]["per_seed"])
         - np.asarray(out["plain"]["test_error"]["per_seed"]))
    n_dense, n_plain = out["densenet"]["params"], out["plain"]["params"]
    result = {
        "seeds": seeds,
        "split": {"n_train": int(len(tr[1])), "n_val": int(len(va[1])),
                  "n_test": int(len(te[1]))},
        **out,
        "plain_width": width,
        "params_relative_difference": (n_plain - n_dense) / n_dense,
        "densenet_minus_plain": {"mean_test_error_difference": float(d.mean()),
                                 "sd_test_error_difference": (float(d.std(ddof=1))
                                                              if d.size > 1 else 0.0),
                                 "seeds_densenet_lower": int(np.sum(d < 0)),
                                 "seeds_tied": int(np.sum(d == 0)),
                                 "seeds_plain_lower": int(np.sum(d > 0))},
        "test_error": out["densenet"]["test_error"]["mean"],
    }
    write_csv(outdir / "history.csv", history)
    _plot_test_error(result, config, outdir / "test_error.png")
    _plot_curves(curves, result, config, outdir / "learning_curves.png")
    _plot_weights(trained["densenet"], config, outdir / "weights.png")
    write_json(outdir / "timings.json", {"seconds": timings, "device": str(jax.devices()[0])})
    return result


# --- figures ---------------------------------------------------------------------------------

def _plot_test_error(result, config, path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.8), layout="constrained")
    errors = {n: 100 * np.asarray(result[n]["test_error"]["per_seed"]) for n in NETS}
    for i, n in enumerate(NETS):
        e = errors[n]
        sd = e.std(ddof=1) if e.size > 1 else 0.0
        ax.scatter(np.full(e.size, i), e, s=16, color=f"C{i}", zorder=3,
                   label="one seed" if i == 0 else None)
        ax.errorbar(i + 0.18, e.mean(), yerr=sd, color=f"C{i}", marker="D", capsize=5,
                    zorder=3, label="mean ± sd" if i == 0 else None)
        ax.annotate(f"{e.mean():.2f} ± {sd:.2f}%", (i + 0.25, e.mean()), fontsize=9,
                    va="center")
    for a, b in zip(errors["densenet"], errors["plain"]):  # paired: same seed, same images
        ax.plot([0, 1], [a, b], color="0.6", linewidth=0.8, zorder=1)
    ax.set_xticks([0, 1], [f"{LABELS[n]}\n{result[n]['params']:,} parameters\n"
                           f"{result[n]['connections']:,} connections" for n in NETS])
    ax.set_xlim(-0.4, 1.8)
    ax.set_ylim(0, 1.2 * max(float(e.max()) for e in errors.values()) + 0.1)
    n = result["split"]["n_test"]
    ax.set_ylabel(f"test error, % of {n} images (one image = {100 / n:.2f}%)")
    c = result["densenet_minus_plain"]
    ax.set_title(f"8x8 digits, {result['split']['n_train']} training images; growth "
                 f"{config.growth}, blocks {config.blocks}\nDenseNet lower on "
                 f"{c['seeds_densenet_lower']} of {len(result['seeds'])} seeds, tied on "
                 f"{c['seeds_tied']} (grey lines join the seeds)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="y")
    savefig(fig, path)


def _plot_curves(curves, result, config, path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
    for i, n in enumerate(NETS):
        for j, c in enumerate(curves[n]):
            epochs = np.arange(1, len(c["loss"]) + 1)
            label = LABELS[n] + ", a line per seed" if j == 0 else None
            style = dict(color=f"C{i}", linewidth=0.9, alpha=0.8, label=label,
                         marker="o" if len(epochs) == 1 else None)  # one epoch: a dot
            axes[0].plot(epochs, c["loss"], **style)
            axes[1].plot(epochs, 100 * c["val_error"], **style)
            b = result[n]["best_epoch"][j]
            if b >= 1:
                axes[1].scatter([b], [100 * c["val_error"][b - 1]], color=f"C{i}", s=16,
                                zorder=3, label=f"{LABELS[n]}: best epoch (kept)" if j == 0
                                else None)
    axes[0].set(yscale="log", xlabel="epoch", ylabel="training loss (mean cross-entropy)",
                title="Training loss per epoch")
    top = max(float(np.nanmax(100 * c["val_error"][min(2, len(c["val_error"]) - 1):]))
              for n in NETS for c in curves[n])
    axes[1].set_ylim(0, min(100.0, max(2.0, 1.1 * top)))
    axes[1].set(xlabel="epoch", ylabel="validation error, % (first epochs may run off the top)",
                title=f"Validation error per epoch; early stopping, patience {config.patience}")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    savefig(fig, path)


def _plot_weights(params_per_seed, config, path) -> None:
    """The paper's Figure 5: mean |w| of layer l's 3x3 kernel on the maps of source x_s,
    averaged over seeds, one heat map per block."""
    per_seed = [densenet.source_weights(p, config.blocks) for p in params_per_seed]
    mats = [np.mean([m[b] for m in per_seed], axis=0) for b in range(len(config.blocks))]
    fig, axes = plt.subplots(1, len(mats), figsize=(0.6 + 3.4 * len(mats), 3.6),
                             layout="constrained", squeeze=False)
    for b, (ax, m) in enumerate(zip(axes[0], mats)):
        im = ax.imshow(m, cmap="viridis", vmin=0, interpolation="nearest")
        n = m.shape[0]
        ax.set_xticks(range(n), ["x0\n(input)"] + [f"x{s}" for s in range(1, n)], fontsize=8)
        ax.set_yticks(range(n), [f"layer {l}" for l in range(1, n + 1)], fontsize=8)
        ax.set_xlabel("source maps")
        ax.set_title(f"block {b + 1}", fontsize=10)
        for l in range(n):
            for s in range(l + 1):
                ax.text(s, l, f"{m[l, s]:.2f}", ha="center", va="center", fontsize=7,
                        color="w" if m[l, s] < 0.6 * np.nanmax(m) else "k")
        fig.colorbar(im, ax=ax, fraction=0.05, label="mean |w|")
    fig.suptitle(f"Trained DenseNet: mean |w| from source x_s to layer l (mean over "
                 f"{len(per_seed)} seeds; blank: not connected)", fontsize=10)
    savefig(fig, path)
