"""Regularization on 300 digits: a vmapped lambda sweep, early stopping, several penalty terms.

Three parts, all on a 300-image training subset of ``train.data.load_digits`` (standardised
with the training statistics; validation and test sets of 359 images each), with the note's
MLP (64-128-10, ReLU, He init) and minibatch SGD with momentum. The inputs are standardised,
unlike the digits experiment's default (grey levels / 16): standardising inflates the rarely
inked border pixels, which is what a penalty has to tame, so lambda matters more (with grey
levels / 16 the validation error hardly moved for lambda below 1e-2).

(a) **lambda sweep**: the quadratic penalty ``(lambda/2) sum ||W||^2`` as the note's update
    ``W <- W - alpha (dW + lambda W)`` (``train.sgd(l2=...)``), for lambda = 0 and
    ``n_lambdas`` values on a log grid, each with ``seeds`` initialisations, all trained for a
    fixed number of epochs (no early stopping, so lambda is the only regularizer) as ONE
    compiled program (``train.sweep``, lambda injected into the optimizer state). Each seed
    uses the same initial weights and minibatch order for every lambda, so the curves differ
    by lambda alone. The best lambda has the lowest mean validation error (ties: the lower
    mean validation loss).
(b) **early stopping**: one long run with lambda = ``es_l2`` and no patience, its training and
    validation loss per epoch, and the epoch that early stopping with ``patience`` would have
    kept (run separately with ``train.fit(patience=...)`` from the same key: the same
    trajectory, cut short). Test error at that epoch against the last epoch.
(c) **several penalty terms** (the note: "there may be multiple regularization terms, each
    with their own lambda"): the objective ``(1/n) sum L + sum_j lambda_j J_j(W)`` from
    ``nets.objective.make(apply, penalties={...})`` with combinations of L2, L1 and weight
    elimination (ESL eq. 11.17), and hidden-unit dropout, one program per combination with the
    seeds vmapped inside (``train.sweep_structural``). Reported: validation and test error, and
    how sparse the weights are: ``share_abs_below_1e-3`` and ``share_abs_below_1e-6`` (shares
    of weights with |W| below 1e-3 and 1e-6) and ``share_exactly_zero``. The L1 term is
    trained by (sub)gradient SGD, not by a proximal (soft-thresholding) step, so it makes
    weights small, never exactly zero.

Seeds: (a) and (c) run ``seeds`` initialisations and minibatch orders (3 by default) on one
split; ``sweep.best_vs_zero`` compares the best lambda with lambda = 0 seed by seed, and says
whether the gain exceeds the spread over the seeds (lower on every seed and the two ranges
apart: ``beyond_seed_spread``).

Full run (2-core CPU, shared)::

    python -m experiments run regularization

    (a) 21 lambdas x 3 seeds = 63 models, 1 compilation. Mean validation error 7.5% at
        lambda = 0, lowest 6.8% at lambda = 2.3e-3 (best; tied with 1.3e-3, 1.2e-2 and
        2.0e-2, broken by the validation loss, which is lowest there too: 0.236 against
        0.339 at lambda = 0). **The error gain is within the spread over the seeds**: 0.74
        points (2-3 of 359 images per seed), lower on each of the 3 seeds, but the seeds'
        ranges overlap (6.4-7.2% against 7.0-8.1%), and it does not carry over to the test
        set (6.3% at the best lambda, 6.4% at lambda = 0). A 10-seed run (``--set seeds=10``)
        does not rescue it: lambda = 2.3e-3 was lower on 9 of 10 seeds (0.75 points), but
        the lowest mean validation error moved to lambda = 0.034, whose test error was 1.5
        points worse than lambda = 0's: at this size, choosing lambda by validation error is
        choosing by noise. What is resolved is the validation loss: 0.104 nats lower at the
        best lambda, the seeds' ranges apart. lambda >= 0.06 underfits (training error 1.2%
        at 0.06, 20% at 0.3).
    (b) lambda = 0: early stopping (patience 20) keeps epoch 31 (the lowest validation loss
        of the whole 300 epochs) and stops at 51. Validation error 7.0% there against 7.2%
        after 300 epochs, test error 6.7% at both; the validation loss climbs from 0.389 to
        0.409 while the training loss falls from 4.1e-3 to 3.4e-4.
    (c) validation / test error (mean of 3 seeds); shares of weights with |W| < 1e-3, with
        |W| < 1e-6, exactly 0:
        none 7.5 / 6.4%: 0.4%, 0%, 0;  l2 7.0 / 6.3%: 1.7%, 0%, 0;
        l1 7.6 / 6.7%: 64.4%, 2.2%, 0;  weight_elimination 6.9 / 6.1%: 1.2%, 0%, 0;
        l2+l1 7.3 / 6.8%: 73.2%, 3.6%, 0;  l2+weight_elimination 7.1 / 6.6%: 3.8%, 0%, 0;
        dropout 0.5: 7.1 / 5.5%: 0.3%, 0%, 0.
        L1 (subgradient SGD) leaves 62% of the weights between 1e-6 and 1e-3 (most near
        1e-5), none exactly 0, for 0.1-0.3 points of error. The combinations' validation
        errors all lie within one another's ranges over the seeds (ranges up to 1.7 points
        wide): no penalty is resolved as better than none at 3 seeds.

    Wall time 77 s for the command on a loaded machine with a warm compilation cache
    (sweep 42 s, early stopping 3 s, the 7 penalty programs 23 s); 106 s in a run under
    heavier load; 43 s on a quiet machine (this session, with (a)'s 3 seeds trained as groups
    that share their data order, ``train.sweep``: every number above unchanged).
    Two runs wrote byte-identical metrics.json.

Files: ``lambda_sweep.png``, ``early_stopping.png``, ``penalties.png``, ``history.csv``
(the long run of (b), per epoch), ``sweep.csv`` (every model of (a): lambda, seed, final
errors and losses), ``penalties.csv`` (the table of (c)), ``timings.json``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

import train
from experiments._config import (
    Annotated, Count, Distinct, MAX_REPLICATES, NonEmpty, NonNegative, Positive, Probability,
    Range, Replicates, Rule, Samples, Widths, at_most)
from experiments._framework import progress_enabled, write_csv, write_json
from experiments._plot import plt, savefig
from nets import losses, mlp, objective
from nets import metrics as nets_metrics
from nets import penalties as nets_penalties

# (c) sparsity: the share of weights with |W| below each threshold, and of exact zeros. The L1
# term is trained by (sub)gradient SGD, not a proximal / soft-thresholding step, so it makes
# weights small, not exactly zero: the thresholds say how small.
SMALL = (1e-3, 1e-6)


def _share_key(threshold: float) -> str:
    """The metric name for the share of weights with |W| < threshold, e.g.
    ``share_abs_below_1e-3`` (no dot: metric names are flattened with dots)."""
    mantissa, exponent = f"{threshold:.0e}".split("e")
    return f"share_abs_below_{mantissa}e{int(exponent)}"


_TERMS = ("l2", "l1", "weight_elimination", "dropout")


def _is_combination(combo: str) -> bool:
    terms = [t.strip() for t in combo.split("+")]
    return terms == ["none"] or (set(terms) <= set(_TERMS) and len(set(terms)) == len(terms))


Combinations = Annotated[tuple[str, ...], NonEmpty(), Distinct(), Rule(
    "'none' or '+'-joined names among " + ", ".join(_TERMS), _is_combination)]


@dataclasses.dataclass(frozen=True)
class Config:
    n_train: Annotated[int, Range(1, 1079)] = 300  # training images (first of the split's 1079)
    hidden: Widths = (128,)  # widths of the hidden layers
    activation: Literal["sigmoid", "tanh", "relu", "elu", "softplus"] = "relu"  # hidden g
    init: Literal["esl", "glorot", "he"] = "he"  # weight initialisation scheme
    learning_rate: Positive = 0.02  # SGD step size alpha
    momentum: Probability = 0.9  # heavy-ball momentum (0: the note's plain SGD)
    batch_size: Samples = 16  # examples per step
    epochs: Count = 200  # epochs of every model in (a) and (c) (no early stopping there)
    # (a) log-spaced lambdas from lambda_min to lambda_max, plus 0
    n_lambdas: Annotated[int, Range(1, MAX_REPLICATES)] = 20
    lambda_min: Positive = 1e-5  # (a) smallest nonzero lambda
    lambda_max: Positive = 0.3  # (a) largest lambda
    seeds: Replicates = 3  # (a), (c) initialisations (and minibatch orders) per setting
    es_epochs: Count = 300  # (b) length of the run without early stopping
    patience: Count = 20  # (b) early-stopping patience, in epochs
    es_l2: NonNegative = 0.0  # (b) lambda of the quadratic penalty in both runs
    l2: NonNegative = 3e-3  # (c) lambda of (1/2) sum W^2 (in the loss)
    l1: NonNegative = 3e-4  # (c) lambda of sum |W|
    weight_elimination: NonNegative = 1e-3  # (c) lambda of sum W^2 / (1 + W^2)
    drop_rate: Probability = 0.5  # (c) dropout probability of each hidden unit
    combinations: Combinations = (  # (c) "+"-joined terms among l2, l1, weight_elimination,
        "none", "l2", "l1", "weight_elimination", "l2+l1",  # dropout; "none": no penalty
        "l2+weight_elimination", "dropout")
    seed: int = 0  # PRNG seed: data split, initial weights, minibatch order, dropout masks


SMOKE = {"n_lambdas": 3, "seeds": 2, "epochs": 4, "es_epochs": 8, "patience": 2,
         "hidden": (16,), "combinations": ("none", "l2+l1+weight_elimination", "dropout")}


def run(config: Config, outdir) -> dict:
    combos = _combinations(config)  # (c)'s settings, checked before anything runs
    k_data, k_init, k_order, k_es = jax.random.split(jax.random.key(config.seed), 4)
    split = train.data.load_digits(key=k_data, standardize=True)
    X_tr, y_tr = (a[:config.n_train] for a in split.train)
    val, test = split.val, split.test
    sizes = (X_tr.shape[1], *config.hidden, 10)
    init_keys = jax.random.split(k_init, config.seeds)  # seed j: the same start for every setting
    order_keys = jax.random.split(k_order, config.seeds)

    def apply(params, x):
        return mlp.apply(params, x, activation=config.activation)

    def error(params, X, y):
        Z = jax.vmap(apply, in_axes=(None, 0))(params, X)
        return nets_metrics.error_rate(Z, y)

    def cross_entropy(params, X, y):  # the data loss alone (the training loss may add penalties)
        return objective.mean_loss(apply, params, X, y, "cross_entropy")

    common = dict(metrics={"error": error}, num_classes=10, validation=val,
                  batch_size=config.batch_size, progress=progress_enabled())
    timings = {}

    # --- (a) the lambda sweep: one vmapped program ---------------------------------------
    start = time.perf_counter()
    lambdas = np.concatenate([[0.0], np.geomspace(config.lambda_min, config.lambda_max,
                                                  config.n_lambdas)])
    L, S = len(lambdas), config.seeds
    lam_of = np.repeat(lambdas, S)  # model i = (lambda index i // S, seed i % S)
    seed_of = np.tile(np.arange(S), L)
    params = jax.vmap(lambda k: mlp.init(k, sizes, scheme=config.init))(init_keys[seed_of])
    sweep = train.sweep(
        objective.make(apply, "cross_entropy"), params, (X_tr, y_tr),
        optimizer=train.sgd(config.learning_rate, l2=0.0, momentum=config.momentum or None),
        keys=order_keys[seed_of], hyperparams={"l2": lam_of}, epochs=config.epochs, **common)
    timings["sweep_s"] = time.perf_counter() - start
    stacked_error = jax.jit(jax.vmap(error, in_axes=(0, None, None)))
    # One model at a time (lax.map), not vmap: jitted on this CPU backend (jax 0.10.2), a
    # vmapped cross-entropy against labels shared by the models comes out wrong for the
    # models past the first 32,768 (model, example) rows (e.g. beyond model 91 of a 359-image
    # set): logsumexp(z) - onehot(y).z, fused over the broadcast labels.
    stacked_loss = jax.jit(lambda P, X, y: jax.lax.map(lambda p: cross_entropy(p, X, y), P))
    final = {  # each (L, S): the final parameters (the last finite ones if a model diverged)
        "loss": stacked_loss(sweep.params, X_tr, y_tr),
        "error": stacked_error(sweep.params, X_tr, y_tr),
        "val_loss": stacked_loss(sweep.params, *val),
        "val_error": stacked_error(sweep.params, *val),
        "test_error": stacked_error(sweep.params, *test),
    }
    final = {k: np.asarray(v, np.float64).reshape(L, S) for k, v in final.items()}
    mean_val = final["val_error"].mean(axis=1)
    ties = np.flatnonzero(np.isclose(mean_val, mean_val.min()))
    best = int(ties[np.argmin(final["val_loss"].mean(axis=1)[ties])])
    best_by_loss = int(np.argmin(final["val_loss"].mean(axis=1)))
    gain = _gain_over_seeds(final, best)
    write_csv(outdir / "sweep.csv", {
        "lambda": lam_of, "seed": seed_of,
        **{name: final[name].ravel() for name in
           ("loss", "error", "val_loss", "val_error", "test_error")}})
    _plot_sweep(lambdas, final, best, best_by_loss, gain, config, outdir / "lambda_sweep.png")

    # --- (b) early stopping: a long run, and the run early stopping would make -----------
    start = time.perf_counter()
    p0 = mlp.init(init_keys[0], sizes, scheme=config.init)  # seed 0's start in (a) and (c)
    es_opt = train.sgd(config.learning_rate, l2=config.es_l2, momentum=config.momentum or None)
    fit_args = dict(common, optimizer=es_opt, epochs=config.es_epochs, key=k_es,
                    metrics={"error": error, "cross_entropy": cross_entropy})
    data_loss = objective.make(apply, "cross_entropy")
    long = train.fit(data_loss, p0, (X_tr, y_tr), **fit_args)
    stopped = train.fit(data_loss, p0, (X_tr, y_tr), patience=config.patience, **fit_args)
    timings["early_stopping_s"] = time.perf_counter() - start
    picked = _early_stopping_epoch(long.history["val_loss"], config.patience)
    es = {
        "picked_epoch": stopped.best_epoch,
        "stopped_at_epoch": stopped.epochs_run,
        "stop_reason": stopped.stop_reason,
        "same_as_replay": picked == (stopped.best_epoch, stopped.epochs_run),
        "lowest_val_loss_epoch": long.best_epoch,
        "test_error_at_picked_epoch": float(error(stopped.params, *test)),
        "test_error_at_last_epoch": float(error(long.params, *test)),
        "val_error_at_picked_epoch": float(error(stopped.params, *val)),
        "val_error_at_last_epoch": float(error(long.params, *val)),
    }
    h = long.history
    history = {"epoch": h["epoch"], "train_loss": h["cross_entropy"], "train_error": h["error"],
               "val_loss": h["val_loss"], "val_error": h["val_error"],
               "minibatch_loss": h["loss"]}
    write_csv(outdir / "history.csv", history)
    _plot_early_stopping(history, es, config, outdir / "early_stopping.png")

    # --- (c) several penalty terms, each with its own lambda; dropout ---------------------
    start = time.perf_counter()

    def build(name):
        penalties, drop = combos[name]
        penalized = objective.make(apply, "cross_entropy", penalties)
        ce = losses.get("cross_entropy").fn

        def loss_fn(params, X, y, *, key, train):  # train=False: evaluation (no dropout)
            if not train or drop == 0:
                return penalized(params, X, y)
            keys = jax.random.split(key, X.shape[0])
            Z = jax.vmap(lambda x, k: mlp.apply(params, x, activation=config.activation,
                                                drop_rate=drop, key=k))(X, keys)
            return jnp.mean(jax.vmap(ce)(Z, y)) + sum(
                (lam * p.fn(params) for p, lam in nets_penalties.terms(penalties)), jnp.zeros(()))

        stacked = jax.vmap(lambda k: mlp.init(k, sizes, scheme=config.init))(init_keys)
        return loss_fn, stacked

    results = train.sweep_structural(
        list(combos), build, (X_tr, y_tr), log=lambda _: None,
        optimizer=train.sgd(config.learning_rate, momentum=config.momentum or None),
        keys=order_keys, epochs=config.epochs, loss_takes_key=True, **common)
    timings["penalties_s"] = time.perf_counter() - start
    table = {}
    for name, res in zip(combos, results):
        W = [np.asarray(layer["W"]) for layer in res.params]  # each (seeds, n_out, n_in)
        flat = np.concatenate([w.reshape(S, -1) for w in W], axis=1)  # (seeds, n_weights)
        val_errors = np.asarray(stacked_error(res.params, *val))  # (seeds,)
        table[name] = {
            "val_error": float(np.mean(val_errors)),
            "test_error": float(np.mean(stacked_error(res.params, *test))),
            "train_error": float(np.mean(stacked_error(res.params, X_tr, y_tr))),
            **{_share_key(t): float(np.mean(np.abs(flat) < t)) for t in SMALL},
            "share_exactly_zero": float(np.mean(flat == 0)),
            "val_error_range": [float(np.min(val_errors)), float(np.max(val_errors))],
            "abs_weights": np.abs(flat).ravel(),  # for the figure; dropped from the metrics
        }
    write_csv(outdir / "penalties.csv", [
        {"combination": name, **{k: v for k, v in row.items()
                                 if k not in ("abs_weights", "val_error_range")}}
        for name, row in table.items()])
    _plot_penalties(table, config, outdir / "penalties.png")
    write_json(outdir / "timings.json", timings)

    # --- summary ----------------------------------------------------------------------------
    print(f"(a) lambda sweep: {L} lambdas x {S} seeds = {L * S} models in "
          f"{sweep.compilations} compilation(s); validation error {100 * mean_val[0]:.1f}% at "
          f"lambda=0, best {100 * mean_val[best]:.1f}% at lambda={lambdas[best]:.3g} (test "
          f"{100 * final['test_error'][best].mean():.1f}%); the gain "
          + ("exceeds" if gain["beyond_seed_spread"] else "is within")
          + f" the spread over the seeds (lower on {gain['seeds_best_lower']} of {S} seeds)")
    print(f"(b) early stopping (patience {config.patience}) keeps epoch {es['picked_epoch']} "
          f"(stops at {es['stopped_at_epoch']}): test error "
          f"{100 * es['test_error_at_picked_epoch']:.1f}% there, "
          f"{100 * es['test_error_at_last_epoch']:.1f}% after {long.epochs_run} epochs")
    print("(c) combination              val err  test err"
          + "".join(f"  |W|<{t:.0e}" for t in SMALL) + "  W == 0")
    for name, row in table.items():
        print(f"    {name:<24} {100 * row['val_error']:6.1f}%  {100 * row['test_error']:7.1f}%"
              + "".join(f"  {100 * row[_share_key(t)]:8.1f}%" for t in SMALL)
              + f"  {100 * row['share_exactly_zero']:5.1f}%")

    return {
        "test_error": float(final["test_error"][best].mean()),  # at the best lambda of (a)
        "sweep": {
            "compilations": sweep.compilations,
            "models": L * S,
            "lambdas": lambdas,
            "val_error_mean": mean_val,
            "val_loss_mean": final["val_loss"].mean(axis=1),
            "train_error_mean": final["error"].mean(axis=1),
            "test_error_mean": final["test_error"].mean(axis=1),
            "best_lambda": float(lambdas[best]),
            "best_val_error": float(mean_val[best]),
            "best_lambda_by_val_loss": float(lambdas[best_by_loss]),
            "val_error_at_zero": float(mean_val[0]),
            "test_error_at_best": float(final["test_error"][best].mean()),
            "test_error_at_zero": float(final["test_error"][0].mean()),
            "best_vs_zero": gain,
        },
        "early_stopping": es,
        "penalties": {name: {k: v for k, v in row.items() if k != "abs_weights"}
                      for name, row in table.items()},
        "n_train": int(len(y_tr)),
        "n_val": int(len(val[1])),
        "n_test": int(len(test[1])),
    }


def _gain_over_seeds(final: dict, best: int) -> dict:
    """The best lambda (row ``best``) against lambda = 0 (row 0), seed by seed (a seed has the
    same start and minibatch order at every lambda, so the pairs differ by lambda alone):
    whether its validation-error gain is larger than the spread over the seeds, i.e. lower
    on every seed and the two ranges over the seeds apart."""
    zero, at_best = final["val_error"][0], final["val_error"][best]
    loss0, loss_best = final["val_loss"][0], final["val_loss"][best]
    lower, higher = int(np.sum(at_best < zero)), int(np.sum(at_best > zero))
    apart = bool(at_best.max() < zero.min())
    return {
        "val_error_gain": float(zero.mean() - at_best.mean()),  # > 0: the best lambda is better
        "val_error_at_zero_per_seed": zero, "val_error_at_best_per_seed": at_best,
        "seeds_best_lower": lower, "seeds_tied": len(zero) - lower - higher,
        "seeds_best_higher": higher,
        "val_error_ranges_apart": apart,
        "beyond_seed_spread": bool(apart and lower == len(zero)),
        "test_error_gain": float(final["test_error"][0].mean() - final["test_error"][best].mean()),
        "val_loss_gain": float(loss0.mean() - loss_best.mean()),
        "val_loss_ranges_apart": bool(loss_best.max() < loss0.min()),
    }


def check(config: Config) -> None:
    """The checks across fields (make_config's hook; each field's own are in its type)."""
    if config.lambda_min > config.lambda_max:
        raise ValueError(f"lambda_min: expected at most lambda_max={config.lambda_max:g}, got "
                         f"{config.lambda_min:g}")
    at_most(config, "batch_size", "n_train", " (the training images)")


def _combinations(config: Config) -> dict[str, tuple[dict, float]]:
    """Each of ``config.combinations`` -> (penalty spec for nets.objective.make, dropout rate)."""
    lambdas = {"l2": config.l2, "l1": config.l1, "weight_elimination": config.weight_elimination}
    combos = {}
    for combo in config.combinations:
        terms = [t.strip() for t in combo.split("+")]
        if not _is_combination(combo):
            raise ValueError(f"combinations: expected '+'-joined names among "
                             f"{sorted(lambdas)} and 'dropout', or 'none'; got {combo!r}")
        penalties = {t: lambdas[t] for t in terms if t in lambdas}
        combos[combo] = (penalties, config.drop_rate if "dropout" in terms else 0.0)
    if not combos:
        raise ValueError("combinations: expected at least one, got none")
    return combos


def _early_stopping_epoch(val_loss, patience: int) -> tuple[int, int]:
    """Replays early stopping on a validation-loss curve: (kept epoch, stopping epoch)."""
    best, best_epoch, bad = np.inf, 0, 0
    for epoch, value in enumerate(val_loss, 1):
        if value < best:
            best, best_epoch, bad = value, epoch, 0
        else:
            bad += 1
            if bad >= patience:
                return best_epoch, epoch
    return best_epoch, len(val_loss)


# --- figures ---------------------------------------------------------------------------------

def _plot_sweep(lambdas, final, best, best_by_loss, gain, config, path):
    lam = lambdas[1:]
    fig, (ax_e, ax_l) = plt.subplots(1, 2, figsize=(11.5, 4.4))
    for ax, key, scale, label in ((ax_e, "val_error", 100, "misclassified (%)"),
                                  (ax_l, "val_loss", 1,
                                   "validation cross-entropy (nats, log scale)")):
        v = scale * final[key]
        mean = v.mean(axis=1)
        ax.fill_between(lam, v[1:].min(axis=1), v[1:].max(axis=1), color="C1", alpha=0.25,
                        label=f"validation: range over {v.shape[1]} seeds")
        ax.plot(lam, mean[1:], "o-", color="C1", ms=3, label="validation: mean")
        ax.axhline(mean[0], color="C1", ls=":", lw=1.2,
                   label=f"validation at lambda = 0: {mean[0]:.3g}{'%' if scale == 100 else ''}")
        ax.set_xscale("log")
        ax.set_xlabel("lambda (weight of (1/2) sum W^2; log scale)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    ax_e.plot(lam, 100 * final["error"][1:].mean(axis=1), "s--", color="C0", ms=3,
              label="training error: mean")
    ax_e.axvline(lambdas[best], color="k", ls="--", lw=1,
                 label=f"best lambda = {lambdas[best]:.2g} (lowest mean validation error)")
    ax_l.axvline(lambdas[best_by_loss], color="0.4", ls="--", lw=1,
                 label=f"lowest mean validation loss: lambda = {lambdas[best_by_loss]:.2g}")
    top = 100 * final["val_error"].mean(axis=1)
    ax_e.set_ylim(0, min(100, 2.5 * float(np.median(top))))  # large lambdas run off the top
    ax_l.set_yscale("log")
    S = final["val_error"].shape[1]
    verdict = ("beyond the spread over the seeds" if gain["beyond_seed_spread"]
               else "WITHIN the spread over the seeds")
    note = (f"Best lambda vs lambda = 0: validation error "
            f"{100 * gain['val_error_gain']:.2f} points lower, {verdict}"
            f"\n(lower on {gain['seeds_best_lower']} of {S} seeds; ranges over seeds "
            f"{'apart' if gain['val_error_ranges_apart'] else 'overlap'}); test error "
            f"{100 * gain['test_error_gain']:.2f} points lower. Validation loss "
            f"{gain['val_loss_gain']:.3f} nats lower (ranges over seeds "
            f"{'apart' if gain['val_loss_ranges_apart'] else 'overlap'}).")
    ax_e.set_title("Error against lambda (large lambdas run off the top)")
    ax_l.set_title("Validation loss against lambda")
    for ax in (ax_e, ax_l):
        ax.legend(fontsize=7.5, loc="upper left")
    fig.suptitle(f"Weight decay sweep: {len(lambdas)} lambdas x {final['val_error'].shape[1]} "
                 f"seeds in one vmapped program ({config.n_train} training digits, "
                 f"{config.epochs} epochs, no early stopping)", fontsize=10)
    fig.tight_layout()
    fig.text(0.5, 0.0, note, ha="center", va="top", fontsize=9,
             bbox=dict(facecolor="white", edgecolor="0.7"))
    savefig(fig, path)


def _plot_early_stopping(history, es, config, path):
    epoch = np.asarray(history["epoch"])
    val_loss = np.asarray(history["val_loss"])
    fig, (ax_l, ax_z, ax_e) = plt.subplots(1, 3, figsize=(15, 4.4))
    ax_l.plot(epoch, history["train_loss"], color="C0", label="training")
    ax_l.plot(epoch, val_loss, color="C1", label="validation")
    ax_l.set_yscale("log")
    ax_l.set_ylabel("mean cross-entropy (nats, log scale)")
    ax_l.set_title("Training and validation loss")
    ax_z.plot(epoch, val_loss, color="C1", label="validation")
    low = float(np.min(val_loss))
    ax_z.set_ylim(low - 0.05 * low, low + 0.5 * (float(np.median(val_loss)) - low) + 0.1 * low)
    ax_z.set_ylabel("mean cross-entropy (nats)")
    ax_z.set_title("Validation loss, zoomed (what early stopping watches)")
    ax_e.plot(epoch, 100 * np.asarray(history["train_error"]), color="C0", label="training")
    ax_e.plot(epoch, 100 * np.asarray(history["val_error"]), color="C1", label="validation")
    ax_e.set_ylabel("misclassified (%)")
    ax_e.set_ylim(0, max(5.0, 1.5 * 100 * float(np.median(history["val_error"]))))
    ax_e.set_title("Error rate")
    for ax in (ax_l, ax_z, ax_e):
        ax.axvline(es["picked_epoch"], color="k", ls="--", lw=1,
                   label=f"early stopping keeps epoch {es['picked_epoch']}")
        ax.axvline(es["stopped_at_epoch"], color="0.5", ls=":", lw=1,
                   label=f"... and stops at {es['stopped_at_epoch']} (patience {config.patience})")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Early stopping (lambda = {config.es_l2:g}, {config.n_train} training digits): "
                 f"test error {100 * es['test_error_at_picked_epoch']:.1f}% at the kept epoch, "
                 f"{100 * es['test_error_at_last_epoch']:.1f}% after {len(epoch)} epochs",
                 fontsize=10)
    fig.tight_layout()
    savefig(fig, path)


def _plot_penalties(table, config, path):
    names = list(table)
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ax = axes[0]
    ax.bar(x - 0.2, [100 * table[n]["val_error"] for n in names], 0.4, color="C1",
           label="validation")
    lo = [100 * (table[n]["val_error"] - table[n]["val_error_range"][0]) for n in names]
    hi = [100 * (table[n]["val_error_range"][1] - table[n]["val_error"]) for n in names]
    ax.errorbar(x - 0.2, [100 * table[n]["val_error"] for n in names], yerr=[lo, hi],
                fmt="none", color="k", lw=1, capsize=2)
    ax.bar(x + 0.2, [100 * table[n]["test_error"] for n in names], 0.4, color="C2",
           label="test")
    ax.set_ylabel(f"error (%), mean of {config.seeds} seeds")
    ax.set_title("Error per penalty combination\n(bars on validation: range over seeds)",
                 fontsize=10)
    top = max(table[n]["val_error_range"][1] for n in names)
    top = max(top, *(table[n]["test_error"] for n in names))
    ax.set_ylim(0, 100 * top * 1.3)  # room above the bars for the legend
    ax.legend(fontsize=8, loc="upper center", ncols=2)
    ax = axes[1]
    counts = [(_share_key(t), f"|W| < {t:g}", f"C{4 + i}") for i, t in enumerate(SMALL)]
    counts.append(("share_exactly_zero", "W exactly 0", "k"))
    width = 0.8 / len(counts)
    for i, (key, label, color) in enumerate(counts):
        shares = [100 * table[n][key] for n in names]
        ax.bar(x + (i - (len(counts) - 1) / 2) * width, shares, width, color=color, label=label)
        if key == "share_exactly_zero":  # often 0: write the number, a bar of 0 is invisible
            for xi, v in zip(x + (i - (len(counts) - 1) / 2) * width, shares):
                ax.text(xi, v + 1, f"{v:.0f}", ha="center", va="bottom", fontsize=6)
    ax.set_ylabel("share of weights (%)")
    ax.set_ylim(0, 115)
    ax.legend(fontsize=8, loc="upper center", ncols=len(counts))
    ax.set_title("Sparsity: shares of small and of exactly zero weights\n(L1 by subgradient "
                 "SGD makes weights small, not 0)", fontsize=10)
    for ax in axes[:2]:
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    ax = axes[2]
    bins = np.linspace(-8, 1, 46)
    for i, name in enumerate(names):
        logw = np.log10(np.maximum(table[name]["abs_weights"], 1e-8))
        ax.hist(logw, bins=bins, histtype="step", lw=1.4, color=f"C{i}", label=name,
                density=True)
    for t, ls in zip(SMALL, (":", "-.")):
        ax.axvline(np.log10(t), color="k", ls=ls, lw=1, label=f"|W| = {t:g}")
    ax.set_xlabel("log10 |W| (all weights; |W| < 1e-8 drawn at -8)")
    ax.set_ylabel("density")
    ax.set_title("Distribution of weight magnitudes", fontsize=10)
    ax.legend(fontsize=7)
    lams = (f"lambda: L2 {config.l2:g}, L1 {config.l1:g}, weight elimination "
            f"{config.weight_elimination:g}; dropout rate {config.drop_rate:g}")
    fig.suptitle(f"Several penalty terms, each with its own lambda ({lams}; "
                 f"{config.epochs} epochs, {config.n_train} training digits)", fontsize=10)
    fig.tight_layout()
    savefig(fig, path)
