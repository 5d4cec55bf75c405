"""Adversarial examples: FGSM and PGD against the digits MLP and CNN; PGD adversarial training.

The note: "Adversarial examples are inputs to neural networks that are designed to fool the
network ... small perturbations to regular inputs ... imperceptible to humans." On
scikit-learn's 8x8 digits (grey levels 0..16, fed to the nets as grey / 16 in [0, 1]; the
split 1,079 / 359 / 359 of ``train.data.load_digits``) two classifiers are trained with
``train.fit`` and early stopping on the validation loss: the digits MLP (64-256-10 ReLU,
the note's SGD step with momentum 0.9, lambda 3e-4, batch 16: ``experiments/digits.py``'s
first phase) and the small CNN of ``experiments/cnn.py`` (:func:`nets.cnn.modern_cnn`,
Adam 3e-3, batch 32). Each is attacked on the 359 test images by :mod:`nets.adversarial`:

* FGSM (Goodfellow et al. 2015, arXiv:1412.6572): ``x + eps * sign(grad_x L)``, clipped to
  the valid range [0, 16] grey levels;
* PGD (Madry et al. 2018, arXiv:1706.06083): ``pgd_steps`` signed steps of ``2.5 eps /
  steps`` from a uniform random start in the ball, each projected back onto the L-inf ball
  of radius eps intersected with [0, 16].

eps is given in grey levels (``eps_grey``; the attack works on grey / 16, so eps / 16
there): the accuracy against eps for both attacks and both models is one compiled program per
architecture (``jax.vmap`` over the radii, which are traced). Accuracy counts an image as
correct when the attacked image is still classified as its label.

Adversarial training (Madry et al. eq. 2.1, ``min_W E max_{||delta|| <= eps} L``): each net
is trained again from the same initial weights on PGD examples at ``eps_train_grey``
(``train_pgd_steps`` steps from a random start), generated inside the jitted training step
for the current weights: the loss given to ``train.fit`` attacks its batch and returns the
cross-entropy at the attacked batch (``nets.adversarial`` stops the gradient through the
attack, Danskin's theorem). The radius is a traced value in the fit's model state, and a
``jax.lax.cond`` skips the attack at radius 0, so ONE compiled training program per
architecture serves the standard and the adversarial run (:func:`training_loss`). The
validation loss, which early stopping monitors, is the same robust loss; the clean error
and the error on the attacked batches (``adv_error``) are in the history, per epoch (means
over the epoch's batches for training, the validation set's for ``val_*``). The gain is the
PGD accuracy at ``eps_train_grey`` of the trained-under-attack net minus the standard
one's; the cost is the clean test accuracy lost.
A stronger PGD (``check_steps`` steps, ``check_restarts`` random starts; an image counts as
correct only if no start fools the net) at ``eps_train_grey`` checks that the robust
accuracy is not an artefact of a weak attack (gradient masking would show as a large drop).
The nets' training settings are those of the two experiments they come from, unchanged; the
attack and adversarial-training settings were fixed before the first run, not tuned.

Writes ``accuracy_vs_eps.png`` (test accuracy against eps, FGSM and PGD, standard and
adversarially trained, one panel per net; the strong PGD's accuracy marked),
``examples.png`` (one test image per class: clean, FGSM and PGD versions at
``eps_train_grey`` against each net, the perturbation, with true and predicted labels),
``history.csv`` (every training run, per epoch) and ``timings.json``.

Full run: ``python -m experiments run adversarial --no-progress`` (seed 0; eps 0-8 grey
levels; PGD-20 with a random start; adversarial training with PGD-7 at 2 grey levels; the
check PGD-100 with 5 starts). Test accuracy, % of 359 images, against eps in grey levels:

    eps (grey levels)        0    0.5    1    1.5    2     3     4     6     8
    MLP         FGSM       96.9  92.5  82.7  65.7  45.4  10.0   0.3   0.0   0.0
                PGD-20     96.9  92.5  81.9  63.5  38.2   4.2   0.0   0.0   0.0
    MLP, adv.   FGSM       97.2  96.1  92.2  85.5  78.8  56.0  30.6  13.4   3.1
                PGD-20     97.2  96.1  91.1  84.1  75.5  45.1  14.2   0.0   0.0
    CNN         FGSM       97.8  92.2  82.7  65.7  46.5  17.3   8.1   1.4   0.3
                PGD-20     97.8  91.9  79.9  56.8  34.3   3.9   0.0   0.0   0.0
    CNN, adv.   FGSM       97.2  95.3  92.5  87.7  81.6  58.8  35.7   7.2   1.9
                PGD-20     97.2  95.3  91.6  84.4  73.8  40.9   7.2   0.0   0.0

Half a grey level (1/32 of the range) costs both standard nets 4-6 points; two grey levels
cost them about 60 (in ``examples.png`` a grey haze on the white background; every digit
stays readable); from four on PGD fools them on every image.
PGD is at or below FGSM everywhere, clearly below from 2 levels on. The CNN (a third of the
MLP's parameters, higher clean accuracy) is no more robust than the MLP.

**Adversarial training at 2 grey levels raises the accuracy under attack** there, by the
check PGD-100 with 5 starts, from 37.0% to **72.4%** (MLP) and from 29.2% to **71.3%**
(CNN); PGD-20 says 38.2 to 75.5% and 34.3 to 73.8%: the stronger attack takes 1-5 more
points, no sign of gradient masking. It also lifts the whole curve from 1 to 4 levels, and
at 6-8 levels PGD still fools every net. **Clean-accuracy cost at this radius: none that
359 images can show**: MLP 96.9% to 97.2% (one image more right), CNN 97.8% to 97.2% (two
fewer). The cost grows with the training radius (MLP only, ``--set nets=mlp --set
eps_train_grey=E``, the same standard MLP; accuracy under the check PGD at E):

    E (grey levels)                  1       2       3       4
    clean accuracy, adv. trained   98.6%   97.2%   91.6%   74.4%   (standard: 96.9%)
    PGD accuracy at E, standard    81.3%   37.0%    3.1%    0.0%
    PGD accuracy at E, adv.        93.0%   72.4%   35.1%   16.2%

so at 1-2 levels adversarial training is free here (at 1 level it even helps, as Goodfellow
et al. saw on MNIST: 6 images, one seed), at 3 levels it costs 5.3 points and at 4 levels
22.6 (81 images).

Wall time 479 s on a 2-core CPU shared with other jobs (load average 8-10), the CNN's
programs compiled afresh (CNN adversarial training 197 s, standard training with its
compilation 87 s, the CNN attacks, PGD-100 x 5 included, 47-75 s each; the MLP's runs 48 s
in all); 253 s with every program in the compilation cache (load average 4-7; CNN
adversarial training 128 s). The two runs wrote byte-identical metrics.json and history.csv,
and the MLP's numbers are those of ``--set nets=mlp`` (every net has its own keys), byte for
byte. A later rerun with the machine less loaded (load average 2-5): 127 s cold (CNN
adversarial training 64 s, standard training 13 s, the CNN attacks 17-22 s each, the MLP's
runs 7 s), 160 s warm.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

import train
from experiments._config import (
    Annotated, Count, Distinct, NonEmpty, NonNegative, Positive, Probability, Range, Replicates,
    Samples, Widths)
from experiments._framework import progress_enabled, write_csv, write_json
from experiments._plot import plt, savefig, tile
from nets import adversarial, cnn, count_params, losses, metrics, mlp

GREY = 16.0  # the digits' grey levels run 0..16; the nets see grey / 16 in [0, 1]
NETS = ("mlp", "cnn")


@dataclasses.dataclass(frozen=True)
class Config:
    # the classifiers attacked
    nets: Annotated[tuple[Literal["mlp", "cnn"], ...], NonEmpty(), Distinct()] = NETS
    # Attacks (test set), eps in grey levels 0..16
    eps_grey: Annotated[tuple[float, ...], NonEmpty(), Range(0, GREY)] = (  # radii
        0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
    pgd_steps: Count = 20  # PGD steps of 2.5 eps / pgd_steps each, from a random start
    check_steps: Count = 100  # the stronger check PGD at eps_train_grey: steps ...
    check_restarts: Replicates = 5  # ... and random starts (correct only if no start fools the net)
    # Adversarial training (Madry et al.): PGD examples in every training step
    adversarial_training: bool = True  # also train each net on PGD examples
    # its radius, grey levels (also the examples' radius)
    eps_train_grey: Annotated[float, Range(0, GREY, lo_open=True)] = 2.0
    train_pgd_steps: Count = 7  # its PGD steps (2.5 eps / steps each, random start)
    # The digits MLP (experiments/digits.py's first phase)
    mlp_hidden: Widths = (256,)  # hidden widths (ReLU, He init)
    mlp_learning_rate: Positive = 0.1  # SGD step alpha
    mlp_momentum: Probability = 0.9  # heavy-ball momentum
    mlp_l2: NonNegative = 3e-4  # quadratic penalty lambda (weights only)
    mlp_batch_size: Samples = 16  # examples per step
    mlp_epochs: Count = 300  # most epochs
    mlp_patience: Count = 20  # epochs without a lower validation loss before stopping
    # The small CNN (experiments/cnn.py's modern CNN)
    cnn_features: Widths = (16, 32)  # channels of the conv 3x3 - ReLU - max pool blocks
    cnn_learning_rate: Positive = 3e-3  # Adam step
    cnn_batch_size: Samples = 32  # examples per step
    cnn_epochs: Count = 100  # most epochs
    cnn_patience: Count = 10  # epochs without a lower validation loss before stopping
    seed: int = 0  # split, initial weights, data order and attack starts from jax.random.key(seed)


SMOKE = {"nets": ("mlp",), "eps_grey": (0.0, 2.0), "pgd_steps": 1, "check_steps": 1,
         "check_restarts": 1, "train_pgd_steps": 1, "mlp_hidden": (32,), "mlp_epochs": 1,
         "mlp_patience": 1}


def check(config: Config) -> None:
    if not config.nets or len(set(config.nets)) != len(config.nets) or any(
            n not in NETS for n in config.nets):
        raise ValueError(f"nets: expected distinct names among {NETS}, got {config.nets}")
    if not config.eps_grey or any(not 0 <= e <= GREY for e in config.eps_grey):
        raise ValueError(f"eps_grey: expected radii in [0, {GREY:g}] grey levels, got "
                         f"{config.eps_grey}")
    if not 0 < config.eps_train_grey <= GREY:
        raise ValueError(f"eps_train_grey: expected a radius in (0, {GREY:g}] grey levels, "
                         f"got {config.eps_train_grey}")
    for name in ("pgd_steps", "check_steps", "check_restarts", "train_pgd_steps"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name}: expected at least 1, got {getattr(config, name)}")


def _images(X):
    return np.asarray(X).reshape(-1, 8, 8, 1)


def _setups(config: Config) -> dict:
    """``name -> (model, inputs, optimizer, batch size, epochs, patience, description)``."""
    out = {}
    if "mlp" in config.nets:
        sizes = (64, *config.mlp_hidden, 10)
        out["mlp"] = (mlp.model(sizes, activation="relu", scheme="he"), np.asarray,
                      train.sgd(config.mlp_learning_rate, l2=config.mlp_l2,
                                momentum=config.mlp_momentum or None),
                      config.mlp_batch_size, config.mlp_epochs, config.mlp_patience,
                      "-".join(map(str, sizes)) + " ReLU MLP")
    if "cnn" in config.nets:
        net = cnn.modern_cnn(features=config.cnn_features)
        out["cnn"] = (net.model, _images, optax.adam(config.cnn_learning_rate),
                      config.cnn_batch_size, config.cnn_epochs, config.cnn_patience,
                      "CNN " + net.description)
    return out


def training_loss(model, steps: int):
    """The loss given to ``train.fit`` for standard AND adversarial training, one compiled
    program for both: the radius is the traced ``model_state["eps"]`` (in [0, 1] units), not
    a Python constant. With ``eps > 0`` it is Madry et al.'s robust loss, the mean
    cross-entropy at the batch's PGD examples (``steps`` steps from a random start drawn from
    ``key``) for the current weights; with ``eps = 0`` the attack is skipped
    (``jax.lax.cond``: no PGD is computed) and it is the batch's mean cross-entropy. ``aux``:
    ``error`` on the clean batch and ``adv_error`` on the attacked one (the same at
    ``eps = 0``). The attack runs in both modes of the loss, so the validation loss, which
    early stopping monitors, is the robust one too. The model state is returned unchanged."""
    cross_entropy = losses.get("cross_entropy").fn

    def loss(params, X, Y, *, key, train, model_state):
        eps = model_state["eps"]
        Z, _ = model.batch_apply(params, X, train=train)

        def attacked():
            X_adv = adversarial.pgd(adversarial.input_loss(model, params, Y), X, eps,
                                    steps=steps, lo=0.0, hi=1.0, random_start=True, key=key)
            return model.batch_apply(params, X_adv, train=train)[0]

        Z_adv = jax.lax.cond(eps > 0, attacked, lambda: Z)
        aux = {"error": metrics.error_rate(Z, Y), "adv_error": metrics.error_rate(Z_adv, Y)}
        return jnp.mean(jax.vmap(cross_entropy)(Z_adv, Y)), aux, model_state

    loss.takes_key = True
    return loss


def make_evaluation(model, *, pgd_steps: int, check_steps: int, check_restarts: int):
    """One compiled program per architecture:
    ``evaluate(params, X, y, radii, show, key)`` returns the clean test accuracy, the
    accuracy under FGSM and PGD at every radius of ``radii`` (``jax.vmap`` over the traced
    radii), the accuracy under the stronger PGD at the LAST radius, and the FGSM and PGD
    versions of the images ``X[show]`` at the last radius with the predicted classes."""

    def predict(params, X):
        return metrics.predicted_class(model.batch_apply(params, X)[0])

    def evaluate(params, X, y, radii, show, key):
        loss_of_x = adversarial.input_loss(model, params, y)
        k_sweep, k_check = jax.random.split(key)

        def at(eps):
            X_f = adversarial.fgsm(loss_of_x, X, eps, lo=0.0, hi=1.0)
            X_p = adversarial.pgd(loss_of_x, X, eps, steps=pgd_steps, lo=0.0, hi=1.0,
                                  random_start=True, key=k_sweep)
            p_f, p_p = predict(params, X_f), predict(params, X_p)
            return {"fgsm": jnp.mean(p_f == y), "pgd": jnp.mean(p_p == y),
                    "show": {"fgsm": X_f[show], "pgd": X_p[show], "fgsm_pred": p_f[show],
                             "pgd_pred": p_p[show]}}

        swept = jax.vmap(at)(radii)

        def one_start(correct, k):
            X_p = adversarial.pgd(loss_of_x, X, radii[-1], steps=check_steps, lo=0.0, hi=1.0,
                                  random_start=True, key=k)
            return correct & (predict(params, X_p) == y), None

        pred = predict(params, X)
        correct, _ = jax.lax.scan(one_start, pred == y, jax.random.split(k_check, check_restarts))
        show_adv = jax.tree.map(lambda a: a[-1], swept["show"])
        return {"clean": jnp.mean(pred == y), "fgsm": swept["fgsm"], "pgd": swept["pgd"],
                "check": jnp.mean(correct), "show": {"clean_pred": pred[show], **show_adv}}

    return jax.jit(evaluate)


def _history_rows(name, h) -> list[dict]:
    cols = ("loss", "val_loss", "error", "val_error", "adv_error", "val_adv_error")
    return [{"model": name, "epoch": e + 1,
             **{c: float(h[c][e]) if c in h else float("nan") for c in cols}}
            for e in range(len(h["loss"]))]


def run(config: Config, outdir) -> dict:
    check(config)
    k_split, k_init, k_order, k_adv_order, k_attack = jax.random.split(
        jax.random.key(config.seed), 5)
    split = train.data.load_digits(key=k_split)  # grey / 16 in [0, 1]
    (X_tr, y_tr), (X_va, y_va), (X_te, y_te) = split.train, split.val, split.test
    show = np.array([int(np.flatnonzero(y_te == c)[0]) for c in range(10)])  # one per class
    eps = np.asarray(config.eps_grey, np.float32) / GREY
    eps_train = config.eps_train_grey / GREY
    timings, history, results, shown = {}, [], {}, {}

    for name, (model, shape, optimizer, batch, epochs, patience, text) in \
            _setups(config).items():
        params0, _ = model.init(jax.random.fold_in(k_init, NETS.index(name)))
        evaluate = make_evaluation(model, pgd_steps=config.pgd_steps,
                                   check_steps=config.check_steps,
                                   check_restarts=config.check_restarts)
        loss = training_loss(model, config.train_pgd_steps)  # one program for both runs
        runs = {name: (0.0, k_order)}
        if config.adversarial_training:
            runs[f"{name}_adv"] = (eps_train, k_adv_order)
        for run_name, (eps_fit, k_fit) in runs.items():
            start = time.perf_counter()
            fit = train.fit(loss, params0, (shape(X_tr), y_tr), optimizer=optimizer,
                            epochs=epochs, batch_size=batch,
                            key=jax.random.fold_in(k_fit, NETS.index(name)),
                            validation=(shape(X_va), y_va), patience=patience,
                            has_aux=True, model_state={"eps": jnp.float32(eps_fit)},
                            num_classes=10, progress=progress_enabled())
            timings[f"{run_name}_fit"] = time.perf_counter() - start
            start = time.perf_counter()
            out = jax.tree.map(np.asarray, evaluate(
                fit.params, shape(X_te), y_te, np.append(eps, np.float32(eps_train)), show,
                k_attack))
            timings[f"{run_name}_attacks"] = time.perf_counter() - start
            history += _history_rows(run_name, fit.history)
            shown[run_name] = out["show"]
            results[run_name] = {
                "architecture": text, "params": count_params(fit.params),
                "training": ("standard" if run_name == name else
                             f"PGD-{config.train_pgd_steps} at eps {config.eps_train_grey:g} "
                             f"grey levels"),
                "best_epoch": int(fit.best_epoch), "epochs_run": int(fit.epochs_run),
                "clean_test_accuracy": float(out["clean"]),
                "fgsm_accuracy": [float(a) for a in out["fgsm"][:-1]],
                "pgd_accuracy": [float(a) for a in out["pgd"][:-1]],
                "strong_pgd_accuracy_at_eps_train": float(out["check"]),
            }
            r = results[run_name]
            print(f"  {run_name}: clean {100 * r['clean_test_accuracy']:.1f}%, PGD at "
                  f"{config.eps_train_grey:g} grey levels "
                  f"{100 * r['strong_pgd_accuracy_at_eps_train']:.1f}% (strong), best epoch "
                  f"{r['best_epoch']}, {timings[f'{run_name}_fit']:.1f} s + "
                  f"{timings[f'{run_name}_attacks']:.1f} s")

    gains = {}
    if config.adversarial_training:
        at = [i for i, e in enumerate(config.eps_grey) if e == config.eps_train_grey]
        for name in config.nets:
            std, rob = results[name], results[f"{name}_adv"]
            gains[name] = {
                "clean_accuracy_standard": std["clean_test_accuracy"],
                "clean_accuracy_adversarial": rob["clean_test_accuracy"],
                "clean_accuracy_cost": std["clean_test_accuracy"] - rob["clean_test_accuracy"],
                "strong_pgd_accuracy_standard": std["strong_pgd_accuracy_at_eps_train"],
                "strong_pgd_accuracy_adversarial": rob["strong_pgd_accuracy_at_eps_train"],
                "strong_pgd_accuracy_gain": (rob["strong_pgd_accuracy_at_eps_train"]
                                             - std["strong_pgd_accuracy_at_eps_train"]),
            }
            if at:
                gains[name]["pgd_accuracy_gain"] = (rob["pgd_accuracy"][at[0]]
                                                    - std["pgd_accuracy"][at[0]])

    write_csv(outdir / "history.csv", history)
    _plot_accuracy(results, config, len(y_te), outdir / "accuracy_vs_eps.png")
    _plot_examples(_images(X_te[show]), y_te[show], shown, config, outdir / "examples.png")
    write_json(outdir / "timings.json", {"seconds": timings, "device": str(jax.devices()[0])})
    return {"eps_grey": [float(e) for e in config.eps_grey],
            "eps_train_grey": float(config.eps_train_grey),
            "n_test": len(y_te), "models": results, "adversarial_training": gains}


# --- figures ---------------------------------------------------------------------------------

_TITLES = {"mlp": "digits MLP (ReLU, fully connected)",
           "cnn": "small CNN (conv 3x3, ReLU, max pool) x 2, dense"}


def _plot_accuracy(results, config, n_test, path) -> None:
    nets = list(config.nets)
    fig, axes = plt.subplots(1, len(nets), figsize=(6.4 * len(nets), 4.8), squeeze=False,
                             layout="constrained", sharey=True)
    eps = np.asarray(config.eps_grey)
    for ax, name in zip(axes[0], nets):
        for run_name, color, label in ((name, "C0", "standard training"),
                                       (f"{name}_adv", "C3", "PGD adversarial training")):
            if run_name not in results:
                continue
            r = results[run_name]
            ax.plot(eps, 100 * np.asarray(r["fgsm_accuracy"]), color=color, linestyle="--",
                    marker="o", markersize=4, label=f"{label}: FGSM")
            ax.plot(eps, 100 * np.asarray(r["pgd_accuracy"]), color=color, linestyle="-",
                    marker="s", markersize=4,
                    label=f"{label}: PGD-{config.pgd_steps} (clean "
                          f"{100 * r['clean_test_accuracy']:.1f}%)")
            ax.scatter([config.eps_train_grey], [100 * r["strong_pgd_accuracy_at_eps_train"]],
                       color=color, marker="x", s=60, zorder=4,
                       label=f"{label}: PGD-{config.check_steps}, {config.check_restarts} "
                             f"start{'s' if config.check_restarts > 1 else ''} "
                             f"({100 * r['strong_pgd_accuracy_at_eps_train']:.1f}%)")
        if config.adversarial_training:
            ax.axvline(config.eps_train_grey, color="0.5", linestyle=":", linewidth=1)
            ax.annotate(" training eps", (config.eps_train_grey, 2), fontsize=8, color="0.4")
        ax.axhline(10, color="0.6", linewidth=0.8)
        ax.annotate("chance", (eps.max(), 10), fontsize=8, color="0.4", ha="right",
                    va="bottom")
        ax.set(xlabel="eps, grey levels (pixels run 0..16; L-inf ball)",
               ylabel=f"test accuracy under attack, % of {n_test} images", ylim=(0, 101),
               title=f"{_TITLES[name]}\n({results[name]['params']:,} parameters)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper right", handlelength=3.5)  # long enough to show dashes
    fig.suptitle("8x8 digits: accuracy against the attack radius (FGSM dashed, PGD solid, "
                 "random start, step 2.5 eps / steps)", fontsize=11)
    savefig(fig, path)


def _label(run_name: str) -> str:
    net, _, adv = run_name.partition("_")
    return net.upper() + (", adv. trained" if adv else "")


def _plot_examples(X, y, shown, config, path) -> None:
    """Rows: the clean image, then for each trained net its FGSM and PGD examples at
    eps_train_grey, and the PGD perturbation against the first net; columns: one image
    per class. Titles: the predicted class, red when wrong."""
    rows = [("clean", X[..., 0], None, None)]
    first = config.nets[0]
    for run_name, s in shown.items():
        label = _label(run_name)
        rows.append((f"FGSM vs {label}", s["fgsm"].reshape(X.shape)[..., 0], s["fgsm_pred"],
                     None))
        rows.append((f"PGD vs {label}", s["pgd"].reshape(X.shape)[..., 0], s["pgd_pred"], None))
        if run_name == first:
            delta = (s["pgd"].reshape(X.shape) - X)[..., 0] * GREY
            rows.append((f"PGD - clean\n({label}), grey levels", delta, None, "delta"))
    n, eps = len(y), config.eps_train_grey
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.0 * n + 1.8, 1.25 * len(rows) + 0.5),
                             squeeze=False, layout="constrained")
    for ax, (text, images, pred, kind) in zip(axes[:, 0], rows):
        canvas = tile(images, shape=(8, 8), ncols=n, pad=2)
        if kind == "delta":
            ax.imshow(canvas, cmap="RdBu_r", vmin=-eps, vmax=eps, interpolation="nearest")
        else:
            ax.imshow(canvas, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_ylabel(text, fontsize=8, rotation=0, ha="right", va="center")
        for c in range(n):
            x = c * 10 + 3.5  # the centre of tile c (8 pixels + 2 of padding)
            if kind is None and pred is None:
                missed = [_label(r) for r, s in shown.items() if int(s["clean_pred"][c]) != y[c]]
                ax.text(x, -1.2, f"true {int(y[c])}", ha="center", fontsize=9,
                        fontweight="bold")
                if missed:  # a net that already misclassifies the clean image
                    ax.text(x, 9.5, "clean wrong:\n" + "\n".join(missed), ha="center",
                            va="top", fontsize=6, color="darkorange")
            elif pred is not None:
                wrong = int(pred[c]) != int(y[c])
                ax.text(x, -1.2, f"pred {int(pred[c])}", ha="center", fontsize=9,
                        color="red" if wrong else "green",
                        fontweight="bold" if wrong else "normal")
    fig.suptitle(f"Test digits and their adversarial versions at eps = {eps:g} grey levels "
                 f"(of 16); red: misclassified. Perturbation row: blue -{eps:g}, red +{eps:g}",
                 fontsize=10)
    savefig(fig, path)
