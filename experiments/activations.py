"""Activations: sigmoid, tanh, ReLU, ELU, softplus on the digits; saturation with unscaled inputs.

The note lists five nonlinearities g and warns that the "full range of x only use[s] part
of the range of [the] activation function". Part 1 trains the same MLP (64-32-10, ESL's
initialisation uniform on [-0.7, 0.7], the note's SGD with the same learning rate, batch,
epochs and seed) with each g on standardised digits, and records validation error per epoch
and test error. Part 2 measures saturation for the sigmoid and tanh: a hidden unit is in the
*flat part* of g on an example when ``g'(z) < flat_fraction * g'(0)`` (0.1: ``|z| > 3.64``
for the sigmoid, ``|z| > 1.82`` for tanh); the *saturation share* is the fraction of
(example, hidden unit) pairs of the training set in the flat part, at initialisation and
after training, with raw pixels (0..16, ``load_digits(standardize=False)``) and with
standardised pixels. The raw-input nets are trained with the same settings, so their test
error after the same number of epochs shows what saturation does to training.

Writes `activations.png` (g and g'), `learning_curves.png` (validation error per epoch),
`preactivations.png` (histograms of first-layer pre-activations z at initialisation, raw vs
standardised, the sigmoid's flat region shaded) and `history.csv` (one row per run and epoch).

Full run: `python -m experiments run activations` (defaults, seed 0: 64-32-10, SGD alpha 0.1,
batch 32, lambda 1e-4, 100 epochs). Standardised inputs, test error (359 images): sigmoid
0.0446, tanh 0.0669, ReLU 0.0529, ELU 0.0585, softplus 0.0501; final training loss: sigmoid
0.051, tanh 0.013, ReLU 0.0033, ELU 0.0032, softplus 0.0040 (the unbounded g's fit fastest,
the sigmoid, whose g' is at most 1/4, slowest). Saturation share (init -> trained): sigmoid
raw 0.894 -> 0.942, standardised 0.211 -> 0.358; tanh raw 0.946 -> 0.977, standardised
0.517 -> 0.601. (ESL's [-0.7, 0.7] start is meant for a few standardised inputs; with 64 of
them z has std 3.2 even so, against 29 with raw pixels.) Raw inputs, after the same 100
epochs: test error sigmoid 0.0669 (vs 0.0446), tanh 0.0975 (vs 0.0669); training loss
sigmoid 0.053 (vs 0.051), tanh 0.034 (vs 0.013). Wall time 12 s on a 2-core CPU (shared)
with a warm compilation cache, 36 s cold. Two runs wrote byte-identical metrics.json.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import train
from experiments._framework import progress, write_csv
from experiments._plot import plt, savefig
from nets import activations as _activations
from nets import backprop, mlp, objective
from train import data as _data


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple[int, ...] = (32,)  # hidden-layer widths (64 inputs and 10 outputs around them)
    activations: tuple[str, ...] = ("sigmoid", "tanh", "relu", "elu", "softplus")  # g compared
    saturating: tuple[str, ...] = ("sigmoid", "tanh")  # g also trained on raw pixels; saturation
    init_scale: float = 0.7  # ESL's start: weights and biases uniform on [-init_scale, init_scale]
    learning_rate: float = 0.1  # SGD step alpha, the same for every run
    l2: float = 1e-4  # the note's quadratic penalty lambda (W <- W - alpha (dW + lambda W))
    batch_size: int = 32  # examples per SGD step
    epochs: int = 100  # epochs per run, the same for every run
    flat_fraction: float = 0.1  # flat part of g: g'(z) < flat_fraction * g'(0)
    seed: int = 0  # split, initial weights and data order all derive from jax.random.key(seed)


SMOKE = {"epochs": 2, "activations": ("sigmoid", "relu"), "saturating": ("sigmoid",)}


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
        return jnp.mean(jnp.argmax(logits, axis=-1) != y)

    return error


def _train(config: Config, activation: str, params0, split, key) -> train.FitResult:
    def loss(params, X, y):  # the mean cross-entropy; the penalty is in the optimizer
        return objective.mlp_objective(params, X, y, activation=activation)

    return train.fit(loss, params0, split.train, optimizer=train.sgd(config.learning_rate,
                                                                      l2=config.l2),
                     epochs=config.epochs, batch_size=config.batch_size, key=key,
                     validation=split.val, metrics={"error": _error(activation)},
                     num_classes=10, progress=False)


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


def _plot_learning_curves(curves: dict, config: Config, path) -> None:
    """Training loss and validation error per epoch, one line per (activation, inputs)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    colors = {name: f"C{i}" for i, name in enumerate(config.activations)}
    for (name, inputs), history in curves.items():
        epochs = np.asarray(history["epoch"])
        raw = inputs == "raw"
        style = dict(color=colors.get(name, "k"), linestyle="--" if raw else "-",
                     label=f"{name}, {'raw pixels 0-16' if raw else 'standardised'}")
        axes[0].plot(epochs, history["loss"], **style)
        axes[1].plot(epochs, history["val_error"], **style)
    axes[0].set(ylabel="training loss (mean cross-entropy over the epoch, log scale)",
                title="Training loss per epoch")
    axes[1].set(ylabel="validation error (fraction misclassified, log scale)",
                title="Validation error per epoch")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(ncols=2, fontsize=9)
    fig.suptitle(f"Digits, MLP 64-{'-'.join(map(str, config.hidden))}-10, the same SGD for "
                 f"every activation (alpha={config.learning_rate:g}, batch {config.batch_size}, "
                 f"lambda={config.l2:g}, ESL init U[-{config.init_scale:g}, "
                 f"{config.init_scale:g}], one seed)")
    savefig(fig, path)


def _plot_preactivations(z: dict, z_trained: dict, shares: dict, thresholds: dict,
                         path) -> None:
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
                 "different x scales)")
    savefig(fig, path)


def run(config: Config, outdir) -> dict:
    if not set(config.saturating) <= set(config.activations):
        raise ValueError(f"saturating: expected a subset of activations {config.activations}, "
                         f"got {config.saturating}")
    thresholds = {name: _flat_threshold(_activations.get(name), config.flat_fraction)
                  for name in config.saturating}
    key_split, key_init, key_order = jax.random.split(jax.random.key(config.seed), 3)
    splits = {"standardized": _data.load_digits(key=key_split, standardize=True),
              "raw": _data.load_digits(key=key_split, standardize=False)}
    sizes = (64, *config.hidden, 10)
    params0 = mlp.init(key_init, sizes, scheme="esl", scale=config.init_scale)

    runs = [(name, "standardized") for name in config.activations]
    runs += [(name, "raw") for name in config.saturating]
    results, final_loss, curves, history, shares, trained = {}, {}, {}, [], {}, {}
    for name, inputs in progress(runs, desc="activations"):
        split = splits[inputs]
        result = _train(config, name, params0, split, key_order)
        X_test, y_test = split.test
        test_error = float(_error(name)(result.params, jnp.asarray(X_test), jnp.asarray(y_test)))
        results[(name, inputs)] = test_error
        final_loss[(name, inputs)] = result.history["loss"][-1]
        curves[(name, inputs)] = result.history
        if name == "sigmoid":
            trained[inputs] = result.params
        for i, epoch in enumerate(result.history["epoch"]):
            history.append({"activation": name, "inputs": inputs, "epoch": epoch,
                            **{k: result.history[k][i] for k in
                               ("loss", "error", "val_loss", "val_error")}})
        if name in config.saturating:
            X_train = split.train[0]
            shares[(name, inputs)] = {
                "init": saturation_share(params0, X_train, name, config.flat_fraction),
                "trained": saturation_share(result.params, X_train, name, config.flat_fraction),
            }
        print(f"  {name:<9} {inputs:<13} test error {test_error:.4f}"
              + (f"  saturation init {shares[(name, inputs)]['init']:.3f} -> trained "
                 f"{shares[(name, inputs)]['trained']:.3f}" if (name, inputs) in shares else ""))

    write_csv(outdir / "history.csv", history)
    _plot_activations(config, thresholds, outdir / "activations.png")
    _plot_learning_curves(curves, config, outdir / "learning_curves.png")

    def first_layer_z(params, inputs):
        return np.asarray(backprop.forward(params, jnp.asarray(splits[inputs].train[0]))[0][0])

    z = {inputs: first_layer_z(params0, inputs).ravel() for inputs in ("raw", "standardized")}
    z_trained = {inputs: first_layer_z(p, inputs).ravel() for inputs, p in trained.items()}
    _plot_preactivations(z, z_trained, shares, thresholds, outdir / "preactivations.png")

    return {
        "test_error": {name: results[(name, "standardized")] for name in config.activations},
        "test_error_raw": {name: results[(name, "raw")] for name in config.saturating},
        "train_loss": {name: final_loss[(name, "standardized")] for name in config.activations},
        "train_loss_raw": {name: final_loss[(name, "raw")] for name in config.saturating},
        "saturation": {name: {inputs: shares[(name, inputs)]
                              for inputs in ("raw", "standardized")}
                       for name in config.saturating},
        "flat_threshold": {name: round(thr, 6) for name, thr in thresholds.items()},
    }
