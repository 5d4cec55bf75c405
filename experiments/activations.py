"""Activations: sigmoid, tanh, ReLU, ELU, softplus on the digits; saturation with unscaled inputs.

The note lists five nonlinearities g and warns that the "full range of x only use[s] part
of the range of [the] activation function". Part 1 trains the same MLP (64-32-10, ESL's
initialisation uniform on [-0.7, 0.7], the note's SGD with the same learning rate, batch,
epochs and seeds) with each g on standardised digits, and records validation error per epoch
and test error. Every run is repeated over ``seeds`` replicates (default 5) that differ in
initial weights and data order (replicate i as a one-seed run with seed + i; the split is
seed's, so every replicate and activation is scored on the same 359 test images), trained
together by one ``train.sweep`` per activation; metrics give each test error's mean, sd,
range and per-seed values, the activations' mean rank over the seeds, and for each one
against the lowest mean, the seeds on which it was beaten. Part 2 measures saturation for
the sigmoid and tanh: a hidden unit is in the *flat part* of g on an example when
``g'(z) < flat_fraction * g'(0)`` (0.1: ``|z| > 3.64`` for the sigmoid, ``|z| > 1.82`` for
tanh); the *saturation share* is the fraction of (example, hidden unit) pairs of the
training set in the flat part, at initialisation and after training (mean and sd over the
seeds), with raw pixels (0..16, ``load_digits(standardize=False)``) and with standardised
pixels. The raw-input nets are trained with the same settings, so their test error after
the same number of epochs shows what saturation does to training.

Writes `activations.png` (g and g'), `learning_curves.png` (training loss and validation
error per epoch: mean over the seeds, band their range), `test_error.png` (each seed's test
error, mean +- sd per activation, raw-pixel runs beside), `preactivations.png` (histograms
of first-layer pre-activations z, all seeds pooled, raw vs standardised, the sigmoid's flat
region shaded) and `history.csv` (one row per run, seed and epoch).

Full run: `python -m experiments run activations` (defaults, seeds 0-4: 64-32-10, SGD alpha
0.1, batch 32, lambda 1e-4, 100 epochs). Standardised inputs, test error (359 images),
mean +- sd over the 5 seeds (range): sigmoid 4.85% +- 0.67 (3.90-5.57), softplus 4.85% +-
0.94 (3.62-5.85), ELU 5.07% +- 0.60 (4.46-5.85), ReLU 5.18% +- 1.05 (4.18-6.69), tanh 6.13%
+- 0.44 (5.57-6.69); mean rank over the seeds 2.2, 2.4, 3.0, 2.9, 4.5. **The ranking holds
only for tanh**: it is worse than the sigmoid on all 5 seeds with the +-sd bars apart; the
sigmoid, softplus, ELU and ReLU lie within one another's spread (each beats the sigmoid on 2
of the 5 seeds), so the one-seed order of earlier versions (seed 0: sigmoid 16 errors, ReLU
19, softplus 18, ELU 21, tanh 24) was not resolved beyond tanh. Final training loss (mean):
sigmoid 0.048, tanh 0.012, ReLU 0.0034, ELU 0.0033, softplus 0.0041 (the unbounded g's fit
fastest, the sigmoid, whose g' is at most 1/4, slowest; the seed bands are narrow).
Saturation share (init -> trained, mean over seeds, sd <= 0.015): sigmoid raw 0.877 ->
0.926, standardised 0.203 -> 0.362; tanh raw 0.938 -> 0.972, standardised 0.511 -> 0.604.
(ESL's [-0.7, 0.7] start is meant for a few standardised inputs; with 64 of them z has std
3.1 even so, against 24.7 with raw pixels.) Raw inputs, after the same 100 epochs: test
error sigmoid 6.18% +- 0.41 (vs 4.85%), tanh 7.30% +- 0.99 (vs 6.13%), higher than
standardised on every seed; training loss sigmoid 0.045 (vs 0.048), tanh 0.026 (vs 0.012). Wall time 24 s on
a 2-core CPU (shared) with a warm compilation cache, 54 s cold. Seed 0's replicate reproduces the one-seed runs of earlier
versions except raw-pixel tanh (25 test errors now, 31 and 35 in earlier versions:
train.sweep and train.fit agree only to rounding, and raw-pixel tanh training amplifies it).
Two runs wrote byte-identical metrics.json (re-checked in a later session: the numbers above
are that run's).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.ticker import MaxNLocator

import train
from experiments._config import (
    Count, Fraction, Names, NonNegative, Positive, Replicates, Samples, Widths)
from experiments._framework import progress, write_csv
from experiments._plot import plt, savefig
from nets import activations as _activations
from nets import backprop, metrics, mlp, objective
from train import data as _data


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: Widths = (32,)  # hidden-layer widths (64 inputs and 10 outputs around them)
    activations: Names(_activations.ACTIVATIONS) = ("sigmoid", "tanh", "relu", "elu", "softplus")  # g compared
    # g also trained on raw pixels (a subset of activations, may be empty); saturation
    saturating: Names(_activations.ACTIVATIONS, empty=True) = ("sigmoid", "tanh")
    # ESL's start: weights and biases uniform on [-init_scale, init_scale]
    init_scale: Positive = 0.7
    learning_rate: Positive = 0.1  # SGD step alpha, the same for every run
    l2: NonNegative = 1e-4  # the note's quadratic penalty lambda (W <- W - alpha (dW + lambda W))
    batch_size: Samples = 32  # examples per SGD step
    epochs: Count = 100  # epochs per run, the same for every run
    # Replicates: replicate i takes its initial weights and data order from seed + i (all
    # trained together by one train.sweep per activation); the split is always seed's.
    seeds: Replicates = 5
    flat_fraction: Fraction = 0.1  # flat part of g: g'(z) < flat_fraction * g'(0)
    seed: int = 0  # split, initial weights and data order all derive from jax.random.key(seed)


SMOKE = {"epochs": 2, "seeds": 2, "activations": ("sigmoid", "relu"), "saturating": ("sigmoid",)}


def _flat_threshold(g: _activations.Activation, fraction: float) -> float:
    """The |z| beyond which g'(z) < fraction * g'(0), by bisection (g' even, decreasing in |z|)."""
    target = fraction * float(g.grad(jnp.asarray(0.0)))
    lo, hi = 0.0, 100.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if float(g.grad(jnp.asarray(mid))) >= target else (lo, mid)
    return hi


def saturation_share(params, X, activation: str, fraction: float) -> float:
    """Share of (example, hidden unit) pairs, over all hidden layers, in the flat part of g:
    ``g'(z) < fraction * g'(0)``, with ``z`` the pre-activations on the inputs ``X``."""
    g = _activations.get(activation)
    zs, _ = backprop.forward(params, jnp.asarray(X), activation)
    floor = fraction * g.grad(jnp.zeros((), zs[0].dtype))
    flat = [np.asarray(g.grad(z) < floor) for z in zs[:-1]]  # hidden layers only
    return float(np.mean(np.concatenate([f.ravel() for f in flat])))


def _error(activation):
    def error(params, X, y):
        logits = jax.vmap(lambda x: mlp.apply(params, x, activation=activation))(X)
        return metrics.error_rate(logits, y)

    return error


def _train(config: Config, activation: str, params0, split, keys) -> train.SweepResult:
    """One model per replicate (stacked ``params0``, ``keys``), trained together by train.sweep:
    model ``i`` as ``train.fit`` with ``params0[i]`` and ``keys[i]``, up to float rounding."""
    def loss(params, X, y):  # the mean cross-entropy; the penalty is in the optimizer
        return objective.mlp_objective(params, X, y, activation=activation)

    return train.sweep(loss, params0, split.train,
                       optimizer=train.sgd(config.learning_rate, l2=config.l2), keys=keys,
                       epochs=config.epochs, batch_size=config.batch_size,
                       validation=split.val, metrics={"error": _error(activation)},
                       num_classes=10, progress=False)


def _spread(values) -> dict:
    """Mean, sample standard deviation, range and the values themselves (one per seed)."""
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "per_seed": [float(x) for x in v]}


_STYLES = {"relu": dict(linewidth=3.5, alpha=0.55), "elu": dict(linestyle="--")}


def _plot_activations(config: Config, thresholds: dict, path) -> None:
    z = np.linspace(-5, 5, 401)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    colors = {name: f"C{i}" for i, name in enumerate(config.activations)}
    for name in config.activations:
        g = _activations.get(name)
        style = dict(color=colors[name], **_STYLES.get(name, {}))
        axes[0].plot(z, np.asarray(g.fn(jnp.asarray(z))), label=name, **style)
        axes[1].plot(z, np.asarray(g.grad(jnp.asarray(z))), label=name, **style)
    for name, thr in thresholds.items():
        for x in (-thr, thr):
            axes[1].axvline(x, color=colors[name], linestyle=":", linewidth=1)
        axes[1].plot([], [], color=colors[name], linestyle=":", linewidth=1,
                     label=f"{name} flat beyond |z| = {thr:.2f}")
    axes[0].set(title="Activation functions g(z)", xlabel="pre-activation z", ylabel="g(z)",
                ylim=(-1.5, 5))
    axes[1].set(title=f"Their derivatives g'(z); flat part: g'(z) < {config.flat_fraction:g} g'(0)",
                xlabel="pre-activation z", ylabel="g'(z)", ylim=(-0.05, 1.1))
    for ax in axes:
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.axvline(0, color="grey", linewidth=0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    savefig(fig, path)


def _plot_learning_curves(curves: dict, config: Config, n_seeds: int, path) -> None:
    """Training loss and validation error per epoch, one line per (activation, inputs): the
    mean over the seeds, the band their range."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    colors = {name: f"C{i}" for i, name in enumerate(config.activations)}
    for (name, inputs), history in curves.items():
        raw = inputs == "raw"
        color = colors.get(name, "k")
        style = dict(color=color, linestyle="--" if raw else "-",
                     label=f"{name}, {'raw pixels 0-16' if raw else 'standardised'}")
        for ax, key in zip(axes, ("loss", "val_error")):
            values = np.asarray(history[key], np.float64)  # (seeds, epochs)
            epochs = np.arange(1, values.shape[1] + 1)
            ax.plot(epochs, values.mean(axis=0), **style)
            if n_seeds > 1:
                ax.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=color,
                                alpha=0.12, linewidth=0)
    spread = f"mean over {n_seeds} seeds, band: their range" if n_seeds > 1 else "one seed"
    axes[0].set(ylabel="training loss (mean cross-entropy in the epoch)",
                title=f"Training loss per epoch ({spread})")
    axes[1].set(ylabel="validation error (fraction misclassified)",
                title=f"Validation error per epoch ({spread})")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=9)
    fig.suptitle(f"Digits, MLP 64-{'-'.join(map(str, config.hidden))}-10, the same SGD for "
                 f"every activation (alpha={config.learning_rate:g}, batch {config.batch_size}, "
                 f"lambda={config.l2:g}, ESL init U[-{config.init_scale:g}, "
                 f"{config.init_scale:g}])\nseeds differ in initial weights and data order; "
                 "log scales")
    savefig(fig, path)


def _ranking(errors: dict) -> dict:
    """How firmly the seeds rank the activations (``errors``: name -> test error per seed,
    every seed scored on the same test images): the order of the means, each activation's
    mean rank over the seeds (1 = lowest error on that seed, ties share the average rank),
    and for each activation against the lowest mean, on how many seeds it was beaten, tied
    or better, and whether mean +- sd intervals overlap. ``beyond_spread`` lists those the
    best beats on every seed with intervals apart; ``within_spread`` the others."""
    names = list(errors)
    E = np.stack([np.asarray(errors[n], np.float64) for n in names])  # (activations, seeds)
    ranks = np.stack([_average_ranks(E[:, j]) for j in range(E.shape[1])], axis=1)
    # Equal means (to round-off: errors are counts of test images) go by mean rank, then order.
    by_mean = sorted(names, key=lambda n: (round(float(E[names.index(n)].mean()), 9),
                                           float(ranks[names.index(n)].mean()), names.index(n)))
    best = by_mean[0]
    b = E[names.index(best)]
    sd = E.std(axis=1, ddof=1) if E.shape[1] > 1 else np.zeros(len(names))
    vs_best = {}
    for n in by_mean[1:]:
        i = names.index(n)
        vs_best[n] = {"seeds_best_lower": int(np.sum(b < E[i])),
                      "seeds_tied": int(np.sum(b == E[i])),
                      "seeds_best_higher": int(np.sum(b > E[i])),
                      "sd_intervals_overlap": bool(b.mean() + sd[names.index(best)]
                                                   >= E[i].mean() - sd[i])}
    beyond = [n for n, c in vs_best.items()
              if c["seeds_best_lower"] == E.shape[1] and not c["sd_intervals_overlap"]]
    return {"by_mean": by_mean, "mean_rank": {n: float(ranks[names.index(n)].mean())
                                              for n in names},
            "best_by_mean": best, "vs_best": vs_best, "beyond_spread": beyond,
            "within_spread": [n for n in vs_best if n not in beyond]}


def _average_ranks(values) -> np.ndarray:
    """Ranks 1..n of ``values`` (lowest first), tied values sharing their average rank."""
    values = np.asarray(values)
    return np.array([np.sum(values < v) + (np.sum(values == v) + 1) / 2 for v in values])


def _plot_test_errors(errors: dict, config: Config, seeds, n_test: int, ranking: dict,
                      path) -> None:
    """Test error per activation: each seed a dot, the mean with a +- 1 sd bar; raw-pixel
    runs beside the standardised ones."""
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    names = list(config.activations)
    offsets = {"standardized": -0.12, "raw": 0.12} if config.saturating else {"standardized": 0}
    for i, name in enumerate(names):
        for inputs, dx in offsets.items():
            if (name, inputs) not in errors:
                continue
            e = 100 * errors[(name, inputs)]
            raw = inputs == "raw"
            jitter = np.linspace(-0.05, 0.05, e.size) if e.size > 1 else np.zeros(1)
            ax.scatter(i + dx + jitter, e, s=14, color=f"C{i}", alpha=0.55,
                       marker="o" if not raw else "s", facecolors="none" if raw else None,
                       zorder=2)
            sd = e.std(ddof=1) if e.size > 1 else 0.0
            ax.errorbar(i + dx + 0.1, e.mean(), yerr=sd, color=f"C{i}", capsize=4,
                        marker="D" if not raw else "s", markersize=6,
                        markerfacecolor="white" if raw else f"C{i}", linewidth=1.5, zorder=3)
            ax.annotate(f"{e.mean():.2f}\n±{sd:.2f}", (i + dx + 0.14, e.mean()), fontsize=7,
                        va="center")
    ax.set_xticks(range(len(names)), names)
    ax.set_xlim(-0.6, len(names) - 0.2)
    ax.scatter([], [], color="grey", marker="o", label="standardised pixels, one seed")
    ax.errorbar([], [], yerr=[], color="grey", marker="D", capsize=4,
                label="standardised: mean ± sd over seeds")
    if config.saturating:
        ax.errorbar([], [], yerr=[], color="grey", marker="s", markerfacecolor="white",
                    capsize=4, label="raw pixels 0-16: mean ± sd (hollow squares: seeds)")
    ax.set(ylabel=f"test error, % of {n_test} images (one image = {100 / n_test:.2f}%)",
           title=f"Test error after {config.epochs} epochs, {len(seeds)} seeds "
                 f"({seeds[0]}-{seeds[-1]}: initial weights and data order; one split)"
                 f"\nmean rank over the seeds (1 = best): "
                 + ", ".join(f"{n} {ranking['mean_rank'][n]:.1f}" for n in ranking["by_mean"])
                 + f"\nworse than {ranking['best_by_mean']} (lowest mean) on every seed, "
                   f"sd bars apart: {', '.join(ranking['beyond_spread']) or 'none'}; "
                   f"within the spread: {', '.join(ranking['within_spread']) or 'none'}")
    ax.grid(alpha=0.3, axis="y")
    fig.legend(fontsize=8, loc="outside lower center", ncols=3)  # below the axes
    savefig(fig, path)


def _plot_preactivations(z: dict, z_trained: dict, shares: dict, thresholds: dict,
                         n_seeds: int, path) -> None:
    """Histograms of first-layer z (all example x unit pairs), raw vs standardised inputs."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    s_thr = thresholds.get("sigmoid")
    t_thr = thresholds.get("tanh")
    for ax, inputs in zip(axes, ("raw", "standardized")):
        values = z[inputs]
        lim = float(np.quantile(np.abs(values), 0.999)) * 1.05
        lim = max(lim, 1.3 * (s_thr or 0.0))
        if s_thr is not None:
            share = shares.get(("sigmoid", inputs), {})
            for lo, hi in ((-lim, -s_thr), (s_thr, lim)):
                ax.axvspan(lo, hi, color="C3", alpha=0.12, linewidth=0)
            ax.fill_between([], [], color="C3", alpha=0.12,
                            label=f"sigmoid flat: |z| > {s_thr:.2f}"
                                  + (f"\n({100 * share['init']:.0f}% of z at init, "
                                     f"{100 * share['trained']:.0f}% trained)" if share else ""))
        ax.hist(values, bins=120, range=(-lim, lim), density=True, color="C0", alpha=0.85,
                label=f"z at initialisation (std {np.std(values):.1f})", zorder=2)
        if inputs in z_trained:
            ax.hist(z_trained[inputs], bins=120, range=(-lim, lim), density=True,
                    histtype="step", color="k", linewidth=1.2, zorder=3,
                    label="z after training (sigmoid net)")
        if t_thr is not None:
            share = shares.get(("tanh", inputs), {})
            for x in (-t_thr, t_thr):
                ax.axvline(x, color="C1", linestyle=":", linewidth=1.5, zorder=4)
            ax.plot([], [], color="C1", linestyle=":", linewidth=1.5,
                    label=f"tanh flat: |z| > {t_thr:.2f}"
                          + (f"\n({100 * share['init']:.0f}% of z at init, "
                             f"{100 * share['trained']:.0f}% trained)" if share else ""))
        ax.set_xlim(-lim, lim)
        title = ("raw pixels (0-16)" if inputs == "raw" else "standardised pixels")
        ax.set(title=f"First-layer pre-activations z, {title}",
               xlabel="pre-activation z (every training example x hidden unit)",
               ylabel="density")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Saturation: where z = W x + b falls, ESL init U[-0.7, 0.7] (note the "
                 "different x scales)"
                 + (f"; the nets of all {n_seeds} seeds pooled" if n_seeds > 1 else ""))
    savefig(fig, path)


def check(config: Config) -> None:
    """The checks across fields (make_config's hook; each field's own are in its type)."""
    if not set(config.saturating) <= set(config.activations):
        raise ValueError(f"saturating: expected a subset of activations {config.activations}, "
                         f"got {config.saturating}")


def run(config: Config, outdir) -> dict:
    check(config)
    if config.seeds < 1:
        raise ValueError(f"seeds: expected at least 1, got {config.seeds}")
    thresholds = {name: _flat_threshold(_activations.get(name), config.flat_fraction)
                  for name in config.saturating}
    seeds = [config.seed + i for i in range(config.seeds)]
    # Replicate i: initial weights and data order from jax.random.key(seed + i), exactly as a
    # one-seed run with that seed; the split is always seed's, so every replicate and every
    # activation is scored on the same 359 test images (paired comparisons).
    keys = jax.vmap(lambda s: jax.random.split(jax.random.key(s), 3))(jnp.asarray(seeds))
    key_split = jax.random.split(jax.random.key(config.seed), 3)[0]
    key_init, key_order = keys[:, 1], keys[:, 2]
    splits = {"standardized": _data.load_digits(key=key_split, standardize=True),
              "raw": _data.load_digits(key=key_split, standardize=False)}
    sizes = (64, *config.hidden, 10)
    params0 = jax.vmap(lambda k: mlp.init(k, sizes, scheme="esl", scale=config.init_scale))(
        key_init)

    def replicate(params, i):
        return jax.tree.map(lambda a: a[i], params)

    runs = [(name, "standardized") for name in config.activations]
    runs += [(name, "raw") for name in config.saturating]
    errors, final_loss, curves, history, shares, trained = {}, {}, {}, [], {}, {}
    for name, inputs in progress(runs, desc="activations"):
        split = splits[inputs]
        result = _train(config, name, params0, split, key_order)
        X_test, y_test = (jnp.asarray(a) for a in split.test)
        errors[(name, inputs)] = np.asarray(
            jax.vmap(_error(name), in_axes=(0, None, None))(result.params, X_test, y_test),
            np.float64)
        final_loss[(name, inputs)] = float(np.mean(result.history["loss"][:, -1]))
        curves[(name, inputs)] = result.history
        if name == "sigmoid":
            trained[inputs] = result.params
        for i, seed in enumerate(seeds):
            for e in range(result.history["loss"].shape[1]):
                history.append({"activation": name, "inputs": inputs, "seed": seed,
                                "epoch": e + 1,
                                **{k: float(result.history[k][i, e]) for k in
                                   ("loss", "error", "val_loss", "val_error")}})
        if name in config.saturating:
            X_train = split.train[0]
            per_seed = {
                stage: [saturation_share(replicate(p, i), X_train, name, config.flat_fraction)
                        for i in range(len(seeds))]
                for stage, p in (("init", params0), ("trained", result.params))}
            shares[(name, inputs)] = {stage: float(np.mean(v)) for stage, v in per_seed.items()}
            shares[(name, inputs)].update({f"{stage}_sd": _spread(v)["sd"]
                                           for stage, v in per_seed.items()})
        e = errors[(name, inputs)]
        print(f"  {name:<9} {inputs:<13} test error {e.mean():.4f} +- {e.std(ddof=1) if e.size > 1 else 0:.4f}"
              f" ({e.min():.4f}-{e.max():.4f}, {len(seeds)} seeds)"
              + (f"  saturation init {shares[(name, inputs)]['init']:.3f} -> trained "
                 f"{shares[(name, inputs)]['trained']:.3f}" if (name, inputs) in shares else ""))

    write_csv(outdir / "history.csv", history)
    _plot_activations(config, thresholds, outdir / "activations.png")
    _plot_learning_curves(curves, config, len(seeds), outdir / "learning_curves.png")
    ranking = _ranking({name: errors[(name, "standardized")] for name in config.activations})
    _plot_test_errors(errors, config, seeds, splits["standardized"].test[1].shape[0], ranking,
                      outdir / "test_error.png")

    def first_layer_z(params, inputs):  # every replicate's z, pooled
        X = jnp.asarray(splits[inputs].train[0])
        return np.concatenate([np.asarray(backprop.forward(replicate(params, i), X)[0][0]).ravel()
                               for i in range(len(seeds))])

    z = {inputs: first_layer_z(params0, inputs) for inputs in ("raw", "standardized")}
    z_trained = {inputs: first_layer_z(p, inputs) for inputs, p in trained.items()}
    _plot_preactivations(z, z_trained, shares, thresholds, len(seeds),
                         outdir / "preactivations.png")

    return {
        "seeds": seeds,
        "test_error": {name: _spread(errors[(name, "standardized")])
                       for name in config.activations},
        "test_error_raw": {name: _spread(errors[(name, "raw")]) for name in config.saturating},
        "ranking": ranking,
        "train_loss": {name: final_loss[(name, "standardized")] for name in config.activations},
        "train_loss_raw": {name: final_loss[(name, "raw")] for name in config.saturating},
        "saturation": {name: {inputs: shares[(name, inputs)]
                              for inputs in ("raw", "standardized")}
                       for name in config.saturating},
        "flat_threshold": {name: round(thr, 6) for name, thr in thresholds.items()},
    }
