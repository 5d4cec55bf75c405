"""Autoencoders: a linear AE spans PCA's subspace; a deep AE beats PCA at the same code size.

The note's "nonlinear principal components" (ESL 14.5.3). On the digits (grey levels / 16,
64 pixels; fitted on the 1079 training images, scored on the 359 test images), for each
code size k (2, 5, 10):

* PCA with k components (:func:`nets.autoencoder.pca`, float64 SVD of the centred training
  data): the best rank-k affine reconstruction of the training set (Eckart-Young).
* The linear autoencoder ``x_hat = B (A x + a) + b`` (:func:`nets.autoencoder.linear`),
  trained on the mean reconstruction error ``(1/n) sum_i ||x_i - x_hat_i||^2`` to
  convergence: full-batch Adam (batch = n) through ``train.fit`` with a cosine-decayed step,
  many epochs per compiled call. Baldi & Hornik (1989): its minima span the top-k principal
  subspace. Checked: the largest principal angle between the column space of ``B`` and
  PCA's subspace (``scipy.linalg.subspace_angles``) must be below 0.01 rad, and its training
  error within 0.5% of PCA's (both in ``claims``).
* A deep autoencoder (:func:`nets.autoencoder.deep`: 64-128-64-k-64-128-64, ELU, linear code
  and output) trained by minibatch Adam with early stopping on the validation images'
  reconstruction error; it should reconstruct the TEST images better than PCA with the
  same k.

Writes `reconstructions.png` (test digits, one per class: the original, then PCA, linear
AE and deep AE for each k), `codes.png` (the 2-D codes of the test images coloured by digit,
PCA against the deep autoencoder; with k = 2 among the code sizes), `error_vs_k.png`
(reconstruction error on the test images against k) and `history.csv` (every net and epoch).

Full run: `python -m experiments run autoencoder` (defaults, seed 0). Every claim holds.
Reconstruction error on the 359 test images (mean ``||x - x_hat||^2``; the pixels' total
variance, PCA's error with k = 0, is 4.68 on the training set):

    k     PCA     linear AE   deep AE   deep / PCA    linear AE: largest angle, train gap
    2     3.374   3.374       2.271     0.67          1.6e-6 rad, -3.5e-10
    5     2.136   2.136       1.230     0.58          6.1e-6 rad, -3.8e-11
    10    1.243   1.243       0.675     0.54          1.0e-4 rad, +3.8e-8

The linear autoencoder lands on PCA's subspace (angles 100 times below the 0.01 rad bound)
and on PCA's training error to float32 rounding (3,000 full-batch Adam steps). The deep
autoencoder beats PCA at every k on the test images (training errors 2.11, 0.96, 0.49
against PCA's 3.33, 2.13, 1.22); its validation error was still falling at epoch 200 (best
epochs 200, 197, 199), so longer training would widen the gap. In the 2-D codes the deep
autoencoder separates 0, 6, 2 and 1 into their own clusters, where PCA's overlap. Wall time
105 s with a cold compilation cache, 55 s warm, on a 2-core CPU shared with other jobs
(44 s and 40 s in a rerun with the machine less loaded). Two
runs (cold and warm cache) wrote byte-identical metrics.json and history.csv.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg

import train
from experiments._config import Annotated, Count, NonEmpty, OneOf, Positive, Range, Samples, Widths
from experiments._framework import progress, progress_enabled, write_csv
from experiments._plot import plt, savefig, tile
from nets import activations as _activations
from nets import autoencoder as _ae
from train import data as _data


@dataclasses.dataclass(frozen=True)
class Config:
    # k: PCA components = code units of both AEs
    code_sizes: Annotated[tuple[int, ...], NonEmpty(), Range(1, 64)] = (2, 5, 10)
    # Linear AE: full-batch Adam, step cosine-decayed from linear_learning_rate to 1e-3 of it.
    linear_learning_rate: Positive = 0.03
    linear_epochs: Count = 3000  # full-batch steps
    epochs_per_call: Count = 500  # epochs in one compiled call (full-batch steps are tiny)
    hidden: Widths = (128, 64)  # deep AE: widths from the input to the code (mirrored)
    activation: Annotated[str, OneOf(_activations.ACTIVATIONS)] = "elu"  # deep AE hidden g
    deep_learning_rate: Positive = 1e-3  # deep AE: Adam step
    deep_batch_size: Samples = 32  # deep AE: examples per step
    deep_epochs: Count = 200  # deep AE: most epochs
    patience: Count = 20  # deep AE: stop after this many epochs without a lower validation error
    max_angle: Positive = 0.01  # claim: largest principal angle (rad) of the linear AE below this
    max_gap: Positive = 0.005  # claim: linear AE training error within this fraction of PCA's
    seed: int = 0  # split, initial weights and data order derive from jax.random.key(seed)


SMOKE = {"code_sizes": (2,), "linear_epochs": 40, "epochs_per_call": 20, "hidden": (16,),
         "deep_epochs": 2}


def max_principal_angle(B, components) -> float:
    """The largest principal angle (radians) between the column space of ``B`` ``(n_in, k)``
    and the row space of ``components`` ``(k, n_in)``."""
    return float(np.max(scipy.linalg.subspace_angles(np.asarray(B, np.float64),
                                                     np.asarray(components, np.float64).T)))


def _fit_linear(config: Config, k: int, X, key_init, key_order):
    ae = _ae.linear(X.shape[1], k)
    params, _ = ae.init(key_init)
    schedule = optax.cosine_decay_schedule(config.linear_learning_rate, config.linear_epochs,
                                           alpha=1e-3)
    fitted = train.fit(ae.objective(), params, (X, X), optimizer=optax.adam(schedule),
                       epochs=config.linear_epochs, batch_size=len(X), key=key_order,
                       epochs_per_call=config.epochs_per_call, progress=progress_enabled())
    return ae, fitted


def _fit_deep(config: Config, k: int, split, key_init, key_order):
    X, X_val = split.train[0], split.val[0]
    ae = _ae.deep(X.shape[1], k, config.hidden, activation=config.activation)
    params, _ = ae.init(key_init)
    fitted = train.fit(ae.objective(), params, (X, X), optimizer=optax.adam(
                           config.deep_learning_rate), epochs=config.deep_epochs,
                       batch_size=config.deep_batch_size, key=key_order,
                       validation=(X_val, X_val), patience=config.patience,
                       progress=progress_enabled())
    return ae, fitted


def _examples(y, per_class: int = 1) -> np.ndarray:
    """Indices of the first ``per_class`` examples of each class, in class order."""
    return np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)])


def _plot_reconstructions(X, rows: list, path) -> None:
    """``rows``: ``(label, images (m, 64))``; the originals ``X`` first."""
    rows = [("original", X), *rows]
    fig, axes = plt.subplots(len(rows), 1, figsize=(7.5, 0.78 * len(rows) + 0.6),
                             layout="constrained")
    for ax, (label, images) in zip(np.atleast_1d(axes), rows):
        ax.imshow(tile(np.clip(images, 0, 1), ncols=len(images)), cmap="gray_r", vmin=0,
                  vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("Test digits and their reconstructions (grey levels / 16, clipped to [0, 1])\n"
                 "error = mean ||x - x_hat||^2 over all test images", fontsize=10)
    savefig(fig, path)


def _plot_codes(codes: dict, y, path) -> None:
    fig, axes = plt.subplots(1, len(codes), figsize=(6 * len(codes), 5.4), layout="constrained")
    for ax, (title, C) in zip(np.atleast_1d(axes), codes.items()):
        for c in range(10):
            m = y == c
            ax.scatter(C[m, 0], C[m, 1], s=9, color=f"C{c}", alpha=0.75, label=str(c))
            centre = np.median(C[m], axis=0)
            ax.annotate(str(c), centre, fontsize=14, weight="bold", ha="center", va="center",
                        color="k", bbox=dict(boxstyle="circle,pad=0.15", fc=f"C{c}", alpha=0.8))
        ax.set(title=title, xlabel="code 1", ylabel="code 2")
        ax.grid(alpha=0.3)
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", title="digit", markerscale=2)
    fig.suptitle("2-D codes of the test digits (numbers: each digit's median code)")
    savefig(fig, path)


def _plot_errors(results: dict, path) -> None:
    ks = sorted(int(k) for k in results)
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for name, style in (("pca", dict(marker="o", color="C0", linewidth=3, alpha=0.5)),
                        ("linear", dict(marker="x", color="k", linestyle="--")),
                        ("deep", dict(marker="s", color="C3"))):
        ax.plot(ks, [results[str(k)][name]["test_error"] for k in ks], label={
            "pca": "PCA", "linear": "linear autoencoder", "deep": "deep autoencoder"}[name],
            **style)
    ax.set(xlabel="code size k (PCA components)", ylabel="mean ||x - x_hat||^2, test digits",
           title="Reconstruction error on the test digits against the code size", xticks=ks)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    savefig(fig, path)


def run(config: Config, outdir) -> dict:
    if not config.code_sizes or min(config.code_sizes) < 1 or max(config.code_sizes) > 64:
        raise ValueError(f"code_sizes: expected sizes in [1, 64], got {config.code_sizes}")
    key_split, key_init, key_order = jax.random.split(jax.random.key(config.seed), 3)
    split = _data.load_digits(key=key_split)
    X, X_test, y_test = split.train[0], split.test[0], split.test[1]
    shown = _examples(y_test)
    results, history, recon_rows, codes = {}, [], [], {}
    for k in progress(config.code_sizes, desc="autoencoder"):
        pc = _ae.pca(X, k)
        lin, lin_fit = _fit_linear(config, k, X, jax.random.fold_in(key_init, 2 * k),
                                   jax.random.fold_in(key_order, 2 * k))
        deep, deep_fit = _fit_deep(config, k, split, jax.random.fold_in(key_init, 2 * k + 1),
                                   jax.random.fold_in(key_order, 2 * k + 1))
        recon = {"pca": {s: pc.reconstruct(A) for s, A in (("train", X), ("test", X_test))}}
        for name, ae, fitted in (("linear", lin, lin_fit), ("deep", deep, deep_fit)):
            recon[name] = {s: np.asarray(ae.reconstruct(fitted.params, jnp.asarray(A)))
                           for s, A in (("train", X), ("test", X_test))}
            history += [{"net": name, "k": k, "epoch": e + 1,
                         **{m: float(v[e]) for m, v in fitted.history.items() if m != "epoch"}}
                        for e in range(fitted.epochs_run)]
        err = {name: {f"{s}_error": _ae.reconstruction_error(A, r[s])
                      for s, A in (("train", X), ("test", X_test))}
               for name, r in recon.items()}
        angle = max_principal_angle(lin_fit.params[1]["W"], pc.components)
        gap = err["linear"]["train_error"] / err["pca"]["train_error"] - 1.0
        results[str(k)] = {
            "pca": {**err["pca"], "train_error_from_eigenvalues": pc.error},
            "linear": {**err["linear"], "max_principal_angle": angle,
                       "train_gap_vs_pca": gap, "stop_reason": lin_fit.stop_reason},
            "deep": {**err["deep"], "best_epoch": deep_fit.best_epoch,
                     "epochs_run": deep_fit.epochs_run, "stop_reason": deep_fit.stop_reason,
                     "test_error_over_pca": err["deep"]["test_error"]
                     / err["pca"]["test_error"]},
            "claims": {"linear_angle_below_max": bool(angle < config.max_angle),
                       "linear_within_gap_of_pca": bool(abs(gap) < config.max_gap),
                       "deep_beats_pca_on_test": bool(err["deep"]["test_error"]
                                                      < err["pca"]["test_error"])},
        }
        recon_rows += [(f"{label}, k={k}\nerror {err[name]['test_error']:.3f}",
                        recon[name]["test"][shown])
                       for name, label in (("pca", "PCA"), ("linear", "linear AE"),
                                           ("deep", "deep AE"))]
        if k == 2:
            codes = {f"PCA (test error {err['pca']['test_error']:.3f})": pc.encode(X_test),
                     f"deep autoencoder, {config.activation} (test error "
                     f"{err['deep']['test_error']:.3f})":
                         np.asarray(deep.encode(deep_fit.params, jnp.asarray(X_test)))}
        r = results[str(k)]
        print(f"  k={k:<3} test error: PCA {r['pca']['test_error']:.4f}, linear AE "
              f"{r['linear']['test_error']:.4f}, deep AE {r['deep']['test_error']:.4f}; linear "
              f"AE angle {angle:.2e} rad, train gap {gap:+.2e}")

    write_csv(outdir / "history.csv", history)
    _plot_reconstructions(X_test[shown], recon_rows, outdir / "reconstructions.png")
    if codes:
        _plot_codes(codes, y_test, outdir / "codes.png")
    _plot_errors(results, outdir / "error_vs_k.png")
    claims = [c for r in results.values() for c in r["claims"].values()]
    return {"code_sizes": list(config.code_sizes), "results": results,
            "all_claims_hold": all(claims),
            "eigenvalues": [float(v) for v in _ae.pca(X, 1).variances[:max(config.code_sizes)
                                                                      + 1]]}
