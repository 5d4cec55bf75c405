"""ResNet: vanishing gradients, per-layer gradient norms of deep plain nets vs residual nets.

The note: "ResNet tackles the vanishing gradient problem". For each activation (sigmoid,
tanh) and depth (5, 20, 50 weight layers, width 64, no normalisation), two nets with the
same layers and the same initial weights (:mod:`nets.resnet`, fan-in scaled LeCun-normal
init, ``Var W = 1 / fan_in``, zero biases): the plain MLP ``z^(l+1) = W^(l) g(z^(l)) + b``
and the residual net ``z^(l+1) = z^(l) + W^(l) g(z^(l)) + b`` (He et al. 2016,
arXiv:1512.03385; the pre-activation unit of arXiv:1603.05027, without batch norm).

Why the plain sigmoid net vanishes: backprop carries ``delta^(l) = g'(z^(l)) * (W^(l)^T
delta^(l+1))`` down the plain net, and with ``Var W = 1 / fan_in`` the product with
``W^T`` keeps ``||delta||`` about the same, so each layer multiplies it by about ``|g'|``,
and the sigmoid's ``|g'(z)| = s (1 - s) <= 1/4`` everywhere: the gradient of layer ``l``
(``dL/dW^(l) = delta^(l+1) g(z^(l))^T``) shrinks at least like ``4^-(distance to the
output)``, geometrically. In the residual net ``delta^(l) = delta^(l+1) + g'(z^(l)) *
(W^(l)^T delta^(l+1))``: the identity carries the output's gradient to every layer.
tanh has ``g'(0) = 1``: with a fan-in scaled start its plain net is near the critical scale
(Poole et al. 2016, arXiv:1606.05340), where gradients do not decay geometrically.

Measured: the Frobenius norm of ``dL/dW^(l)`` of every layer (the mean cross-entropy on the
whole training set, computed in float64 so that tiny norms do not underflow: in float32 the
first layers of the depth-50 plain sigmoid net get a gradient of exactly 0) at
initialisation and after training; the ratio of the first layer's norm to the last's, and
the geometric mean factor per layer from the last hidden block down to the stem,
``(||G^(0)|| / ||G^(depth-2)||)^(1 / (depth-2))`` (the head, ``W^(depth-1)``, is left out of
the factor: its gradient has another form). Every net is trained by ``train.fit`` with the
same SGD (momentum 0.9, batch 32, no weight decay) for the same epochs; history gives the
training loss and validation error per epoch, and the test error is reported.

Writes `grad_norms.png` (gradient norm per layer, log scale, at init and after training),
`training_curves.png` (training loss and validation error per epoch), `grad_norms.csv`
(every net, stage and layer) and `history.csv` (every net and epoch).

Full run: `python -m experiments run resnet` (defaults, seed 0; depths 5, 20, 50, width 64,
SGD alpha 0.005, momentum 0.9, batch 32, 30 epochs). Gradient norm of the first layer over
the last's at initialisation, and the factor per layer (from the last block down to the
stem):

* sigmoid, plain: depth 5 4.5e-3 (x0.26 per layer), depth 20 1.3e-12 (x0.24), depth 50
  1.4e-31 (x0.23): the geometric decay of ``g' <= 1/4``. After training the same (5.2e-12,
  8.7e-31 at depths 20 and 50): none of the plain sigmoid nets learned (training loss
  2.31 = log 10, test error 90%, chance), depth 5 included; with a 10 times larger step
  (`--set learning_rate=0.05 depths=5,20 activations=sigmoid`) still none did, while the
  residual twins reached 4.5% and 2.8% test error.
* sigmoid, residual: 0.24, 0.14, 0.26 (x1.04, x1.01, x1.01 per layer): no decay with depth;
  test error 11.1%, 8.6%, 7.0% (deeper is better here: 30 epochs of a small step).
* tanh, plain: 1.24, 0.70, 1.19 (x1.04, x0.98, x1.01): with ``Var W = 1/fan_in`` tanh
  starts at the critical scale and its gradients do not vanish at initialisation; depths 5
  and 20 train (test error 4.7%, 5.0%), but the depth-50 plain net, after creeping down to
  a training loss of 1.04 by epoch 11, blew up in epoch 14 (loss 2.48) and stayed at chance;
  its gradients then DID vanish: first / last 4.5e-4 after training (x0.85 per layer).
  This net is chaotic: the run of an earlier revision (below) blew up in epoch 4 instead.
* tanh, residual: 1.23, 1.28, 2.51 (x1.24, x1.08, x1.06); test error 3.3%, 3.1%, 6.4%.

In float32 the depth-50 plain sigmoid net's first layers get a gradient of exactly 0
(measured once, outside the run). Parameters: 17,290, 79,690, 204,490 at depths 5, 20, 50
(plain and residual alike). Wall time 363-668 s with a cold compilation cache, 134-401 s
warm, on a 2-core CPU shared with other jobs (load average 6-8; 114 s cold and 160 s warm
in a rerun at a load of 2-5): most of it is compiling
the depth-50 nets' unrolled programs. Three runs (one with a cold cache) wrote
byte-identical metrics.json, history.csv and grad_norms.csv. A run of an earlier revision,
with the same training code, had float32 losses that differed in the last bit from the
first epochs on (cause not found); the sigmoid numbers agreed to 3 digits, the tanh nets
did not (plain depth 20: test error 7.5%; residual depth 50: 5.3%).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.ticker import MaxNLocator

import train
from experiments._config import (
    Annotated, Count, Names, NonEmpty, OneOf, Positive, Probability, Range, Samples, Width)
from experiments._framework import progress, progress_enabled, write_csv
from experiments._plot import plt, savefig
from nets import activations as _activations
from nets import count_params
from nets import metrics as _metrics
from nets import objective as _objective
from nets import resnet as _resnet
from nets.layers import DENSE_INITS
from train import data as _data

KINDS = ("plain", "residual")


@dataclasses.dataclass(frozen=True)
class Config:
    # weight (Dense) layers per net, stem and head included
    depths: Annotated[tuple[int, ...], NonEmpty(), Range(3, 1_000)] = (5, 20, 50)
    width: Width = 64  # units per hidden layer
    activations: Names(_activations.ACTIVATIONS) = ("sigmoid", "tanh")  # g of every hidden layer
    # Dense init (fan-in scaled: Var W = 1/fan_in), the same for every net
    init: Annotated[str, OneOf(DENSE_INITS)] = "lecun"
    learning_rate: Positive = 0.005  # SGD step alpha, the same for every net
    momentum: Probability = 0.9  # SGD momentum
    batch_size: Samples = 32  # examples per SGD step
    epochs: Count = 30  # epochs per net
    seed: int = 0  # split, initial weights (shared by a plain net and its residual twin), order


SMOKE = {"depths": (4,), "activations": ("sigmoid",), "width": 8, "epochs": 1}


def init_params(net, key):
    """``net``'s parameters, by its layer's ``init`` run op by op: ``Model.init`` compiles
    the whole ``init`` into one program, which took 31 s for 50 unrolled LeCun-normal
    layers (2-core CPU, loaded); op by op, each draw's program is cached by shape and shared
    by every depth. The same draws as ``net.init(key)[0]`` (bit for bit at depth 6)."""
    return net.layer.init(key, net.input_shape)[1]


def grad_norms(net, X, y, *params) -> list[np.ndarray]:
    """``||dL/dW^(l)||_F`` per layer (input to output) for each of ``params``, ``L`` the
    mean cross-entropy over ``(X, y)``, computed in float64 (the plain sigmoid net's are
    below float32's range); one compiled gradient serves every ``params``."""
    with jax.enable_x64(True):
        grad = jax.jit(jax.grad(_objective.make(net, "cross_entropy")))
        X, y = jnp.asarray(X, jnp.float64), jnp.asarray(y)
        return [np.asarray(_resnet.weight_grad_norms(
                    grad(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), p), X, y)),
                np.float64) for p in params]


def summarise(norms: np.ndarray) -> dict:
    """The first layer's norm over the last's, and the geometric mean factor per layer from
    the last hidden block ``depth - 2`` down to the stem ``0`` (no factor when ``depth``
    is 2: no block)."""
    depth = len(norms)
    factor = ((norms[0] / norms[depth - 2]) ** (1.0 / (depth - 2)) if depth > 2 else None)
    return {"first_to_last": float(norms[0] / norms[-1]),
            "factor_per_layer": None if factor is None else float(factor)}


def _style(kind: str, depth: int, depths) -> dict:
    shade = {d: f"C{i}" for i, d in enumerate(sorted(depths))}
    return dict(color=shade[depth], linestyle="-" if kind == "plain" else "--",
                marker="o" if kind == "plain" else "s", markersize=3,
                label=f"{kind}, depth {depth}")


def _plot_grad_norms(norms: dict, config: Config, path) -> None:
    acts = config.activations
    fig, axes = plt.subplots(len(acts), 2, figsize=(13, 4.2 * len(acts)), squeeze=False,
                             layout="constrained", sharey="row")
    for r, act in enumerate(acts):
        for c, stage in enumerate(("init", "trained")):
            ax = axes[r, c]
            for kind in KINDS:
                for depth in config.depths:
                    n = norms[(act, kind, depth)][stage]
                    ax.plot(np.arange(1, depth + 1), n, **_style(kind, depth, config.depths))
            ax.set_yscale("log")
            when = "at initialisation" if stage == "init" else f"after {config.epochs} epochs"
            ax.set(xlabel="layer l (1 = the stem, next to the input; last = the head)",
                   ylabel="||dL/dW^(l)||  (Frobenius)", title=f"{act}: {when}")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(config.depths) * 2,
               fontsize=9)
    fig.suptitle(f"Gradient norm of every layer's weights, mean cross-entropy on the training "
                 f"digits (float64); width {config.width}, init {config.init} "
                 f"(Var W = 1/fan-in); solid: plain, dashed: residual", fontsize=11)
    savefig(fig, path)


def _plot_curves(histories: dict, config: Config, path) -> None:
    acts = config.activations
    fig, axes = plt.subplots(len(acts), 2, figsize=(13, 4.2 * len(acts)), squeeze=False,
                             layout="constrained")
    for r, act in enumerate(acts):
        for kind in KINDS:
            for depth in config.depths:
                h = histories[(act, kind, depth)]
                epochs = np.arange(1, len(h["loss"]) + 1)
                style = _style(kind, depth, config.depths)
                axes[r, 0].plot(epochs, h["loss"], **style)
                axes[r, 1].plot(epochs, h["val_error"], **style)
        axes[r, 0].set(title=f"{act}: training loss (mean cross-entropy in the epoch)",
                       yscale="log", ylabel="training loss")
        axes[r, 1].set(title=f"{act}: validation error", ylabel="fraction misclassified",
                       ylim=(0, 1))
        for ax in axes[r]:
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(config.depths) * 2,
               fontsize=9)
    fig.suptitle(f"Digits, the same SGD for every net (alpha={config.learning_rate:g}, "
                 f"momentum {config.momentum:g}, batch {config.batch_size}); chance error "
                 f"is 0.9; solid: plain, dashed: residual", fontsize=11)
    savefig(fig, path)


def run(config: Config, outdir) -> dict:
    if not config.depths or min(config.depths) < 3:
        raise ValueError(f"depths: expected depths >= 3 (a stem, a block, a head), got "
                         f"{config.depths}")
    key_split, key_init, key_order = jax.random.split(jax.random.key(config.seed), 3)
    split = _data.load_digits(key=key_split)
    X_train, y_train = split.train
    X_test, y_test = (jnp.asarray(a) for a in split.test)
    optimizer = train.sgd(config.learning_rate, momentum=config.momentum)

    norms, histories, rows, history_rows, results, parameters = {}, {}, [], [], {}, {}
    nets_ = [(act, kind, depth) for act in config.activations for kind in KINDS
             for depth in config.depths]
    for act, kind, depth in progress(nets_, desc="resnet"):
        net = _resnet.model(depth, width=config.width, activation=act,
                            residual=kind == "residual", init=config.init)
        # The same initial weights for the plain net and its residual twin.
        params0 = init_params(net, jax.random.fold_in(key_init, depth))
        parameters[f"depth_{depth}"] = count_params(params0)  # plain and residual alike
        fitted = train.fit(_objective.make(net, "cross_entropy"), params0, split.train,
                           optimizer=optimizer, epochs=config.epochs,
                           batch_size=config.batch_size, key=jax.random.fold_in(key_order, depth),
                           validation=split.val, num_classes=10,
                           metrics={"error": net.metric(_metrics.error_rate)},
                           progress=progress_enabled())
        stages = dict(zip(("init", "trained"),
                          grad_norms(net, X_train, y_train, params0, fitted.params)))
        norms[(act, kind, depth)] = stages
        histories[(act, kind, depth)] = fitted.history
        for stage, n in stages.items():
            rows += [{"activation": act, "net": kind, "depth": depth, "stage": stage,
                      "layer": l + 1, "grad_norm": float(v)} for l, v in enumerate(n)]
        history_rows += [{"activation": act, "net": kind, "depth": depth, "epoch": e + 1,
                          **{k: float(fitted.history[k][e])
                             for k in ("loss", "error", "val_loss", "val_error")}}
                         for e in range(len(fitted.history["loss"]))]
        test_error = float(net.metric(_metrics.error_rate)(fitted.params, X_test, y_test))
        results.setdefault(act, {}).setdefault(kind, {})[f"depth_{depth}"] = {
            "grad_init": summarise(stages["init"]),
            "grad_trained": summarise(stages["trained"]),
            "train_loss": float(fitted.history["loss"][-1]),
            "val_error": float(fitted.history["val_error"][-1]),
            "test_error": test_error,
            "stop_reason": fitted.stop_reason,
        }
        s = results[act][kind][f"depth_{depth}"]
        print(f"  {act:<8} {kind:<8} depth {depth:>3}: grad first/last init "
              f"{s['grad_init']['first_to_last']:.3g} (x{s['grad_init']['factor_per_layer']:.3g}"
              f" per layer), trained {s['grad_trained']['first_to_last']:.3g}; train loss "
              f"{s['train_loss']:.3g}, test error {test_error:.4f}")

    write_csv(outdir / "grad_norms.csv", rows)
    write_csv(outdir / "history.csv", history_rows)
    _plot_grad_norms(norms, config, outdir / "grad_norms.png")
    _plot_curves(histories, config, outdir / "training_curves.png")
    return {"nets": results, "depths": list(config.depths), "parameters": parameters}
