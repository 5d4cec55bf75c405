"""ESL 11.6: test error / Bayes error against hidden units and weight decay, 10 starts each (Figures 11.6-11.8).

The simulation of Hastie, Tibshirani & Friedman, *The Elements of Statistical Learning*
(2nd ed.), section 11.6. Two additive-error models ``Y = f(X) + eps`` with signal-to-noise
ratio ``Var f(X) / Var eps = 4`` (:func:`train.data.esl_sum_of_sigmoids`,
:func:`train.data.esl_radial`): the sum of sigmoids ``sigma(a1.X) + sigma(a2.X)`` in
``p = 2`` inputs and the radial ``prod_m phi(X_m)`` in ``p = 10``. One training set of 100
examples and one test set of 10,000 per target (as in ESL, which generated a single
training set). Single-hidden-layer networks with 0 to 10 sigmoid units (0 units = the
linear model, sizes ``(p, 1)``), linear output, squared-error loss, 10 random starts each
(weights and biases uniform on ``[-0.7, 0.7]``, ESL 11.5.1: ``nets.mlp.init(...,
scheme="esl")``), with ESL's weight decays 0, 0.0005 (Figure 11.6) and 0.1 (Figure 11.7);
and, for the sum of sigmoids, a decay sweep 0, 0.01, ..., 0.15 at 10 hidden units (Figure
11.8). Reported: test error relative to the Bayes error, ``mean((y_test - f_hat)^2) /
Var(eps)``, as boxplots over the starts, and ESL's claims as booleans with the numbers
behind them. ``claims_checked`` says whether the run was large enough to test them (ESL's 10
starts and 10,000 test points, 20,000 epochs, the sizes and decays each claim needs:
``CLAIMS_NEED``); when it is false (a ``--smoke`` run always), ``claims_not_checked_because``
says why and the printed summary shows each claim as "n/a (not checked)".

How it is trained. One compiled program per number of hidden units (the width is
structural), looped over by :func:`train.sweep_structural`, which logs ``compiling program i
of k``; inside each program the model axis is ``decays x starts`` (decay slowest), trained
together by ``jax.vmap`` (:func:`train.sweep`); the starts share their initial weights
across decays. The optimizer is full-batch gradient descent (``batch_size = n = 100``, so
one step per epoch) with heavy-ball momentum 0.9, ``train.sgd(0.3, l2=..., momentum=0.9)``,
for 20,000 steps. ESL fits to convergence with a quasi-Newton method; gradient descent is
the note's algorithm, and the per-configuration convergence check (the drop of the
penalised training objective over the last 10% of the steps, relative to the Bayes error)
is in ``metrics.json`` and ``convergence.png``. In trials, learning rate 0.5 sent some
sum-of-sigmoids starts to the constant fit (relative error 5: saturated hidden units);
with 0.3 none ends there (the worst start is at 2.43).

Penalty scale. ESL minimises ``R + lambda J`` with ``R = sum_i (y_i - f_i)^2`` (summed) and
``J = sum W^2``; the library minimises ``(1/n) sum_i (y_i - f_i)^2 + (l2/2) sum W^2``
(:func:`nets.objective.mlp_objective`, the penalty that :func:`train.sgd`'s decay
implements). Multiplying the library's objective by ``n`` gives ``R + (n l2 / 2) J``, so
``l2 = 2 lambda / n``: with ``n = 100``, 0.0005 -> 1e-5 and 0.1 -> 2e-3. The run checks
``n * library objective == R + lambda J`` at its fitted parameters. The library's penalty,
and so this conversion, covers the weight matrices, not the biases.

Scale of y. The radial ``f`` is at most ``(2 pi)^-5 = 1e-4`` (``Var Y = 4.1e-11``). Its ``y`` is divided by the
population standard deviation of ``Y``, ``sqrt(Var f + Var eps) = sqrt(5 Var eps)`` (so the
scaled ``Var Y = 1`` and the scaled Bayes error is exactly 0.2), and the Bayes error with it
by the square of the factor; the ratio test error / Bayes error does not change. The penalty
is then applied to this standardised problem, as if the response had been standardised
before fitting: in the raw units ``R`` would be about 1e-9 and any ``lambda J`` with
``J = O(1)`` would swamp it (every net would shrink towards the constant fit, relative error
5), which is not what ESL reports at decay 0.0005 (nets "increasingly worse than the mean"). Rescaling ``y`` by ``c`` multiplies ``R`` by
``c^2`` and the output weights of the same fitted function by ``c``, but not the hidden
weights, so a given ``lambda`` acts differently on different scales of ``y``; ESL does not
say how its radial response was scaled. The sum of sigmoids (``Var Y = 0.41``) is fitted
in its own units.

Full run, 2-core CPU, shared: ``python -m experiments run esl-simulation`` (seed 0), wall
time 266 s (4.4 min; 23 compiled programs, 20,000 epochs each). Median relative test error
over the 10 starts (``relative_test_error`` in ``metrics.json``; ``docs/esl-simulation.md``
has the whole table):

    hidden units            0     1     2     3     4     5     6     7     8     9    10
    sigmoids, lambda=0     1.73  1.63  1.11  1.20  1.28  1.34  1.38  1.44  1.62  1.62  1.84
    sigmoids, 0.0005       1.73  1.63  1.10  1.19  1.27  1.33  1.41  1.51  1.54  1.60  1.80
    sigmoids, 0.1          1.73  1.63  1.11  1.12  1.12  1.12  1.12  1.12  1.12  1.12  1.12
    radial,   0.0005       5.34  6.05  30.0  31.5  19.4  20.5  18.9  18.4  21.7  22.0  17.6

Decay sweep at 10 units: 1.84 at 0, 1.41 at 0.01, 1.20 at 0.02, 1.12 at 0.1, lowest 1.116
at 0.12. Every claim checked holds: 2 units best with decay 0.0005 (1.10; 4 of the 10
starts stopped nearer the linear model); without decay the median rises from 1.11 (2
units) to 1.84 (10 units); with decay 0.1 it never rises by more than 2% with size (0 and
0.0005: by 66% and 64%); the radial target is well above the Bayes error at every size
(best: the linear model, 5.34; every net with hidden units is worse than the constant fit,
5); decay 0.1 is within 1% of the sweep's best. The penalty conversion is verified to
6e-8. Seed 1 (181 s) also makes every claim hold. Training length matters for the
unpenalised large nets: the 10-unit median without decay is 1.41 after 5,000 epochs, 1.84
after 20,000 and 2.07 after 40,000 (decay 0.1: 1.12 at all three).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.ticker
import numpy as np

import train
from experiments._config import (
    Annotated, Count, Distinct, MAX_WIDTH, NonEmpty, NonNegatives, Positive, Probability, Range,
    Replicates, Samples, Width)
from experiments._framework import progress, write_csv, write_json
from experiments._plot import plt, savefig
from nets import mlp, objective, penalties

TARGETS = ("sum_of_sigmoids", "radial")
_SIMULATE = {"sum_of_sigmoids": train.data.esl_sum_of_sigmoids, "radial": train.data.esl_radial}
_TITLE = {"sum_of_sigmoids": "Sum of sigmoids (p = 2)", "radial": "Radial (p = 10)"}
CLAIM_TOL = 0.05  # "near-best" / "not rising": within 5% of the reference median
WELL_ABOVE_BAYES = 2.0  # "well above the Bayes error": relative test error at least 2
# The least a run needs for its claims to be checked (``claims_checked`` in the metrics):
# ESL's 10 starts and 10,000 test points, and the training length the claims were verified
# at (shorter runs leave the unpenalised large nets short of convergence: the 10-unit median
# is 1.41 after 5,000 epochs, 1.84 after 20,000). A smaller run, a --smoke run above all,
# still computes every claim's boolean, but it means nothing.
CLAIMS_NEED = {"starts": 10, "n_test": 10_000, "epochs": 20_000}


@dataclasses.dataclass(frozen=True)
class Config:
    n_train: Samples = 100  # training examples, one training set per target (ESL: 100)
    n_test: Samples = 10_000  # test examples per target (ESL: 10,000)
    snr: Positive = 4.0  # signal-to-noise ratio Var f(X) / Var eps (ESL: 4)
    hidden_units: Annotated[tuple[int, ...], NonEmpty(), Distinct(), Range(0, MAX_WIDTH)] = (
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)  # 0: linear model
    decays: NonNegatives = (0.0, 0.0005, 0.1)  # ESL lambda (summed loss, J = sum W^2)
    sweep_decays: NonNegatives = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08,
                                  0.09, 0.1, 0.11, 0.12, 0.13, 0.14, 0.15)  # Fig. 11.8
    sweep_hidden: Width = 10  # hidden units of the decay sweep (sum of sigmoids only)
    starts: Replicates = 10  # random starting weights per (size, decay)
    init_scale: Positive = 0.7  # starting weights and biases uniform on [-init_scale, init_scale]
    learning_rate: Positive = 0.3  # gradient-descent step size (full batch)
    momentum: Probability = 0.9  # heavy-ball momentum
    epochs: Count = 20_000  # full-batch steps (one step per epoch: batch = n_train)
    history_every: Count = 100  # epochs between rows of history.csv (plus 60 log-spaced ones)
    seed: int = 0  # PRNG seed: data, starting weights
    # the claims' thresholds are the module constants CLAIM_TOL and WELL_ABOVE_BAYES


SMOKE = {"n_test": 100, "hidden_units": (0, 2), "starts": 2, "epochs": 30,
         "sweep_decays": (0.0, 0.05, 0.1), "sweep_hidden": 2, "history_every": 10}


# --------------------------------------------------------------------------------------------
# Penalty scale
# --------------------------------------------------------------------------------------------


def esl_to_l2(decay: float, n: int) -> float:
    """The library's ``l2`` for ESL's weight decay ``lambda``: ``l2 = 2 lambda / n``.

    ESL: ``sum_i L_i + lambda sum W^2``; the library: ``(1/n) sum_i L_i + (l2/2) sum W^2``;
    ``n`` times the second is the first when ``n l2 / 2 = lambda``.

    >>> esl_to_l2(0.0005, 100), esl_to_l2(0.1, 100)
    (1e-05, 0.002)
    """
    return 2.0 * decay / n


@jax.jit
def _check_penalty(params, X, y, decay):
    """``|n * library objective - (R + lambda J)| / (R + lambda J)`` at ``params`` (one model)."""
    n = X.shape[0]
    lib = objective.mlp_objective(params, X, y, activation="sigmoid", loss="squared_error",
                                  l2=esl_to_l2(decay, n))
    f = jax.vmap(mlp.apply, in_axes=(None, 0))(params, X)
    esl = jnp.sum((y - f) ** 2) + decay * 2.0 * penalties.l2(params)  # R + lambda sum W^2
    return jnp.abs(n * lib - esl) / esl


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _loss(params, X, Y):
    """Mean squared error (the data term; the decay lives in the optimizer), and half sum W^2."""
    mse = objective.mlp_objective(params, X, Y, activation="sigmoid", loss="squared_error")
    return mse, {"half_sum_w2": penalties.l2(params)}


def _sizes(p: int, hidden: int) -> tuple[int, ...]:
    return (p, hidden, 1) if hidden else (p, 1)


def _stacked_init(key, sizes, config: Config, n_decays: int):
    """Parameters for ``n_decays x starts`` models; start ``s`` is the same for every decay."""
    keys = jax.random.split(key, config.starts)
    init = jax.jit(jax.vmap(lambda k: mlp.init(k, sizes, scheme="esl", scale=config.init_scale)))
    return jax.tree.map(lambda a: jnp.concatenate([a] * n_decays, axis=0), init(keys))


def _relative_test_error(params, X, y, bayes):
    """``(models,)``: mean squared test error of each stacked model over the Bayes error."""
    def one(p):
        f = jax.vmap(mlp.apply, in_axes=(None, 0))(p, X)
        return jnp.mean((y - f) ** 2)
    return np.asarray(jax.jit(jax.vmap(one))(params)) / bayes


def _train_programs(structures, decays, data, init_key, order_key, config, bar,
                    log_prefix):
    """One :func:`train.sweep` per number of hidden units; model axis ``decays x starts``."""
    X, y = data
    p = X.shape[1]
    n = X.shape[0]
    l2 = np.repeat([esl_to_l2(d, n) for d in decays], config.starts)
    timings = []

    def build(hidden):
        params = _stacked_init(jax.random.fold_in(init_key, hidden), _sizes(p, hidden), config,
                               len(decays))
        return _loss, params

    def log(message):
        timings.append(time.perf_counter())
        print(f"{log_prefix}: {message} hidden units")
        bar.update(1)

    results = train.sweep_structural(
        structures, build, (X, y), log=log, optimizer=train.sgd(
            config.learning_rate, l2=0.0, momentum=config.momentum),
        keys=jax.random.split(order_key, len(l2)),  # unused by full-batch sequential GD
        hyperparams={"l2": l2}, epochs=config.epochs, batch_size=n, order="sequential",
        has_aux=True, progress=False)
    timings.append(time.perf_counter())
    for r in results:
        np.testing.assert_allclose(r.hyperparams["l2"], l2, rtol=1e-6)  # each model got its l2
    return results, np.diff(timings)


def _summarise_history(result, decays, starts, bayes, every, tags):
    """history.csv rows: medians over the starts of the relative training error and objective."""
    mse = result.history["loss"]  # (models, E), before each step
    obj = mse + result.hyperparams["l2"][:, None] * result.history["half_sum_w2"]
    E = mse.shape[1]
    log_spaced = np.unique(np.geomspace(1, E, 60).round().astype(int)).tolist()
    epochs = sorted(set(range(every, E + 1, every)) | set(log_spaced) | {1, E})
    rows = []
    for i, decay in enumerate(decays):
        sl = slice(i * starts, (i + 1) * starts)
        for e in epochs:
            rows.append({**tags, "decay": decay, "epoch": e,
                         "train_rel_error_median": np.median(mse[sl, e - 1]) / bayes,
                         "objective_rel_median": np.median(obj[sl, e - 1]) / bayes})
    return rows, obj


def _convergence(obj, decays, starts, bayes):
    """Per decay: the median over starts of the drop of the objective over the last 10% of
    the steps, relative to the Bayes error (small = the curve has flattened)."""
    E = obj.shape[1]
    ref = max(0, E - 1 - max(1, E // 10))
    drop = (obj[:, ref] - obj[:, -1]) / bayes
    return [float(np.median(drop[i * starts:(i + 1) * starts])) for i in range(len(decays))]


# --------------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------------


def _max_rise(medians: dict[int, float]) -> float | None:
    """Largest ``median(k) / min_{1 <= j < k} median(j)`` over sizes ``k >= 2`` (1: never rises).

    ``None`` when fewer than two sizes ``>= 1`` were run.
    """
    sizes = sorted(k for k in medians if k >= 1)
    rises = [medians[k] / min(medians[j] for j in sizes if j < k) for k in sizes[1:]]
    return max(rises) if rises else None


def _claims(table, sweep, hidden, snr, per_start=None) -> dict:
    """ESL's statements as booleans (``holds``) with the numbers behind them.

    Every claim is always present; one the run's grid cannot test (a size or decay missing,
    as at smoke size) has ``holds = False`` and a ``missing`` entry saying what it needs.
    ``per_start[target][decay]`` (``(starts, sizes)`` relative test errors), when given, adds
    to claim 1 the number of starts at 2 units that stopped nearer the linear model than the
    best start (ESL: "two of the ten starting weight configurations produced results no
    better than the linear model").
    """
    sig, rad = table["sum_of_sigmoids"], table["radial"]
    out = {}

    def med(t, d):
        key = f"decay={d}"
        return {k: float(m) for k, m in zip(hidden, t[key]["median"])} if key in t else None

    def missing(name, what):
        out[name] = {"holds": False, "missing": what}

    # (1) mild decay: 2 hidden units best or within CLAIM_TOL of the best (sum of sigmoids).
    m = med(sig, 0.0005)
    if m is None or 2 not in m:
        missing("c1_two_units_best_with_mild_decay", "decay 0.0005 and 2 hidden units")
    else:
        best = min(m.values())
        out["c1_two_units_best_with_mild_decay"] = {
            "holds": m[2] <= (1 + CLAIM_TOL) * best, "median_at_2": m[2], "best_median": best,
            "best_size": min(m, key=m.get), "tolerance": CLAIM_TOL}
        if per_start is not None and 0 in m:
            at2 = per_start["sum_of_sigmoids"][0.0005][:, list(hidden).index(2)]
            cut = (float(at2.min()) + m[0]) / 2
            out["c1_two_units_best_with_mild_decay"].update({
                "starts_at_2_nearer_linear_than_best": int(np.sum(at2 >= cut)),
                "starts": int(at2.size), "linear_median": m[0]})
    # (1b) no decay: the test error rises from 2 units to the largest size.
    m = med(sig, 0.0)
    if m is None or 2 not in m or max(m) <= 2:
        missing("c1b_overfits_without_decay", "decay 0, 2 hidden units and a larger size")
    else:
        out["c1b_overfits_without_decay"] = {
            "holds": m[max(m)] >= (1 + CLAIM_TOL) * m[2], "median_at_2": m[2],
            "largest_size": max(m), "median_at_largest": m[max(m)], "tolerance": CLAIM_TOL}
    # (2) decay 0.1: no rise of the median with size (sizes >= 1), against decay 0 and 0.0005.
    rises = {f"max_rise_decay={d}": _max_rise(med(sig, d))
             for d in (0.0, 0.0005, 0.1) if med(sig, d) is not None}
    r = rises.get("max_rise_decay=0.1")
    if r is None:
        missing("c2_strong_decay_removes_overfitting", "decay 0.1 and two sizes >= 1")
    else:
        out["c2_strong_decay_removes_overfitting"] = {
            "holds": r <= 1 + CLAIM_TOL, **rises, "tolerance": CLAIM_TOL,
            "definition": "max over k >= 2 of median(k) / min_{1 <= j < k} median(j)"}
    # (3) radial: well above the Bayes error at every size (ESL: worse than the mean, 1 + snr).
    m = med(rad, 0.0005)
    if m is None:
        missing("c3_radial_well_above_bayes", "decay 0.0005")
    else:
        best = min(m.values())
        hid = {k: v for k, v in m.items() if k >= 1}
        out["c3_radial_well_above_bayes"] = {
            "holds": best >= WELL_ABOVE_BAYES, "best_median": best,
            "best_size": min(m, key=m.get), "threshold": WELL_ABOVE_BAYES,
            "constant_fit": 1.0 + snr,
            "hidden_nets_worse_than_constant_fit": bool(hid) and min(hid.values()) > 1.0 + snr,
            "best_hidden_median": min(hid.values()) if hid else None}
    # (4) Figure 11.8: decay 0.1 approximately optimal at the sweep's size.
    meds = {} if sweep is None else {
        d: float(v) for d, v in zip(sweep["decays"], sweep["median"])}
    at = next((v for d, v in meds.items() if abs(d - 0.1) < 1e-12), None)
    if at is None:
        missing("c4_decay_0.1_near_optimal", "a decay sweep that includes 0.1")
    else:
        best = min(meds.values())
        out["c4_decay_0.1_near_optimal"] = {
            "holds": at <= (1 + CLAIM_TOL) * best, "median_at_0.1": at, "best_median": best,
            "best_decay": min(meds, key=meds.get), "tolerance": CLAIM_TOL}
    return out


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _boxes(ax, data, positions, labels):
    ax.boxplot(data, positions=positions, widths=0.6, tick_labels=labels,
               medianprops={"color": "tab:red"}, flierprops={"markersize": 3})


def _size_figure(path, target, rel, hidden, decays, snr, n_train):
    fig, axes = plt.subplots(1, len(decays), figsize=(4.2 * len(decays), 3.8), sharey=True,
                             squeeze=False)
    top = max(float(np.max(rel[d])) for d in decays)
    log = target == "radial"
    for ax, d in zip(axes[0], decays):
        _boxes(ax, [rel[d][:, i] for i in range(len(hidden))], range(len(hidden)),
               [str(h) for h in hidden])
        ax.axhline(1.0, color="k", ls="--", lw=1, label="Bayes error")
        if log:
            ax.axhline(1.0 + snr, color="tab:blue", ls=":", lw=1.2,
                       label=f"constant fit ({1 + snr:g})")
            ax.set_yscale("log")
            ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500) if t <= top * 1.5]
            ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"decay $\\lambda$ = {d:g} (l2 = {esl_to_l2(d, n_train):g})", fontsize=10)
        ax.set_xlabel("hidden units (0 = linear model)")
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("test error / Bayes error")
    axes[0, 0].legend(loc="lower right" if log else "upper left", fontsize=8)
    if not log:
        axes[0, 0].set_ylim(0.9, max(1.2, top * 1.05))
    starts = rel[decays[0]].shape[0]
    fig.suptitle(f"{_TITLE[target]}: relative test error over {starts} random starts "
                 "(cf. ESL Figures 11.6/11.7)", fontsize=11)
    savefig(fig, path)


def _sweep_figure(path, rel, decays, hidden, n_train):
    fig, ax = plt.subplots(figsize=(8, 3.8))
    _boxes(ax, [rel[:, i] for i in range(len(decays))], range(len(decays)),
           [f"{d:g}" for d in decays])
    ax.axhline(1.0, color="k", ls="--", lw=1, label="Bayes error")
    ax.set_ylim(0.9, max(1.2, float(np.max(rel)) * 1.05))
    ax.set_xlabel(f"weight decay $\\lambda$ (ESL scale; library l2 = 2$\\lambda$/{n_train})")
    ax.set_ylabel("test error / Bayes error")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"Sum of sigmoids, {hidden} hidden units: relative test error over "
                 f"{rel.shape[0]} starts against decay (cf. ESL Figure 11.8)", fontsize=10)
    savefig(fig, path)


def _convergence_figure(path, rows, hidden, decays):
    fig, axes = plt.subplots(len(TARGETS), len(decays), figsize=(4.4 * len(decays), 6.4),
                             sharex=True, squeeze=False, layout="constrained")
    cmap = plt.get_cmap("viridis")
    for r, target in enumerate(TARGETS):
        for c, d in enumerate(decays):
            ax = axes[r, c]
            for i, h in enumerate(hidden):
                pts = [(row["epoch"], row["objective_rel_median"]) for row in rows
                       if row["program"] == "grid" and row["target"] == target
                       and row["hidden_units"] == h and row["decay"] == d]
                e, v = zip(*pts)
                ax.plot(e, v, color=cmap(i / max(1, len(hidden) - 1)), lw=1,
                        label=f"{h}" if (r, c) == (0, 0) else None)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.axhline(1.0, color="k", ls="--", lw=0.8)
            ax.set_title(f"{_TITLE[target]}, $\\lambda$ = {d:g}", fontsize=9)
            ax.grid(alpha=0.3)
            if r == len(TARGETS) - 1:
                ax.set_xlabel("epoch (= full-batch step)")
            if c == 0:
                ax.set_ylabel("training objective / Bayes error\n(median over starts)")
    fig.legend(title="hidden\nunits", loc="outside right center", fontsize=8, title_fontsize=8)
    fig.suptitle("Convergence: penalised training objective (MSE + l2/2 sum W^2) against "
                 "gradient-descent steps", fontsize=11)
    savefig(fig, path)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def check(config: Config) -> None:
    if not config.hidden_units or min(config.hidden_units) < 0:
        raise ValueError(f"hidden_units: expected sizes >= 0, got {config.hidden_units}")
    if len(set(config.hidden_units)) != len(config.hidden_units):
        raise ValueError(f"hidden_units: expected distinct sizes, got {config.hidden_units}")
    if not config.decays or min(config.decays) < 0:
        raise ValueError(f"decays: expected decays >= 0, got {config.decays}")
    if config.sweep_decays and min(config.sweep_decays) < 0:
        raise ValueError(f"sweep_decays: expected decays >= 0, got {config.sweep_decays}")
    if config.starts < 1 or config.epochs < 1 or config.history_every < 1:
        raise ValueError("starts, epochs and history_every must be >= 1")


def run(config: Config, outdir) -> dict:
    check(config)
    outdir = Path(outdir)
    hidden = tuple(sorted(config.hidden_units))
    decays = tuple(config.decays)
    n_programs = len(TARGETS) * len(hidden) + (1 if config.sweep_decays else 0)
    bar = progress(range(n_programs), desc="esl-simulation programs", unit="program")
    keys = dict(zip(TARGETS, jax.random.split(jax.random.key(config.seed), len(TARGETS))))

    table, rel_all, rows, timings, convergence, data_info = {}, {}, [], {}, {}, {}
    penalty_checks = []
    sweep = sweep_rel = None
    for target in TARGETS:
        k_train, k_test, k_init, k_order = jax.random.split(keys[target], 4)
        tr = _SIMULATE[target](config.n_train, key=k_train, snr=config.snr)
        te = _SIMULATE[target](config.n_test, key=k_test, snr=config.snr)
        # Rescale y to unit population variance for the radial target (see the docstring).
        scale = 1.0 if target == "sum_of_sigmoids" else 1.0 / math.sqrt(
            tr.bayes_error * (1.0 + config.snr))
        X, y = tr.X, (tr.y * scale).astype(np.float32)
        Xt, yt = jnp.asarray(te.X), jnp.asarray(te.y * scale, jnp.float32)
        bayes = tr.bayes_error * scale**2
        data_info[target] = {"p": int(X.shape[1]), "bayes_error": tr.bayes_error,
                             "y_scale": scale, "bayes_error_scaled": bayes,
                             "train_var_y_scaled": float(np.var(y))}

        results, secs = _train_programs(hidden, decays, (X, y), k_init, k_order, config,
                                        bar, target)
        rel = np.stack([_relative_test_error(r.params, Xt, yt, bayes) for r in results], 1)
        rel = rel.reshape(len(decays), config.starts, len(hidden))  # (decays, starts, sizes)
        rel_all[target] = {d: rel[i] for i, d in enumerate(decays)}
        timings.update({f"{target}/hidden={h}": s for h, s in zip(hidden, secs)})
        table[target] = {}
        conv = {}
        for i, d in enumerate(decays):
            med = np.median(rel[i], axis=0)
            table[target][f"decay={d}"] = {
                "l2": esl_to_l2(d, config.n_train), "median": med,
                "mean": rel[i].mean(axis=0), "min": rel[i].min(axis=0),
                "max": rel[i].max(axis=0), "best_size": hidden[int(np.argmin(med))],
                "best_median": float(med.min())}
        for h, r in zip(hidden, results):
            new_rows, obj = _summarise_history(
                r, decays, config.starts, bayes, config.history_every,
                {"program": "grid", "target": target, "hidden_units": h})
            rows += new_rows
            conv[f"hidden={h}"] = dict(zip([f"decay={d}" for d in decays],
                                           _convergence(obj, decays, config.starts, bayes)))
        for i in (0, -1):  # smallest and largest net; its last model has the largest decay
            last = jax.tree.map(lambda a: a[-1], results[i].params)
            penalty_checks.append(float(_check_penalty(last, jnp.asarray(X), jnp.asarray(y),
                                                       decays[-1])))
        convergence[target] = conv

        if target == "sum_of_sigmoids" and config.sweep_decays:
            sd = tuple(config.sweep_decays)
            res, secs = _train_programs((config.sweep_hidden,), sd, (X, y), k_init, k_order,
                                        config, bar, f"{target} decay sweep")
            srel = _relative_test_error(res[0].params, Xt, yt, bayes).reshape(
                len(sd), config.starts).T  # (starts, decays)
            timings[f"{target}/decay_sweep"] = float(secs[0])
            new_rows, obj = _summarise_history(
                res[0], sd, config.starts, bayes, config.history_every,
                {"program": "decay_sweep", "target": target,
                 "hidden_units": config.sweep_hidden})
            rows += new_rows
            med = np.median(srel, axis=0)
            sweep = {"hidden_units": config.sweep_hidden, "decays": list(sd),
                     "l2": [esl_to_l2(d, config.n_train) for d in sd], "median": med,
                     "mean": srel.mean(axis=0), "best_decay": sd[int(np.argmin(med))],
                     "best_median": float(med.min()),
                     "convergence_drop": _convergence(obj, sd, config.starts, bayes)}
            sweep_rel = srel
    bar.close()

    # --- files ---
    write_csv(outdir / "history.csv", rows)
    write_csv(outdir / "test_errors.csv", [
        {"program": "grid", "target": t, "hidden_units": h, "decay": d, "start": s,
         "rel_test_error": rel_all[t][d][s, i]}
        for t in TARGETS for d in decays for i, h in enumerate(hidden)
        for s in range(config.starts)] + ([
        {"program": "decay_sweep", "target": "sum_of_sigmoids",
         "hidden_units": config.sweep_hidden, "decay": d, "start": s,
         "rel_test_error": sweep_rel[s, i]}
        for i, d in enumerate(sweep["decays"]) for s in range(config.starts)]
        if sweep is not None else []))
    write_json(outdir / "timings.json", {"seconds_per_program": timings})
    for target in TARGETS:
        _size_figure(outdir / f"{target}.png", target, rel_all[target], hidden, decays,
                     config.snr, config.n_train)
    if sweep is not None:
        _sweep_figure(outdir / "decay_sweep.png", sweep_rel, sweep["decays"],
                      config.sweep_hidden, config.n_train)
    _convergence_figure(outdir / "convergence.png", rows, hidden, decays)

    # --- metrics ---
    worst_check = max(penalty_checks)
    drops = [v for t in convergence.values() for c in t.values() for v in c.values()]
    flat = 0.01  # "flattened": the objective fell by less than 1% of the Bayes error
    claims = _claims(table, sweep, hidden, config.snr, rel_all)
    why_unchecked = _why_claims_unchecked(config, claims)
    metrics = {
        "hidden_units": list(hidden),
        "decays": list(decays),
        "data": data_info,
        "relative_test_error": table,
        "decay_sweep": sweep,
        "claims": claims,
        "claims_checked": not why_unchecked,
        "claims_not_checked_because": why_unchecked or None,
        "penalty_conversion": {
            "rule": "l2 = 2 * lambda_ESL / n_train",
            "n_train": config.n_train,
            "l2": {str(d): esl_to_l2(d, config.n_train) for d in decays},
            "verified": worst_check < 1e-5,
            "max_rel_diff_n_times_library_vs_esl": worst_check,
        },
        "convergence": {
            "definition": "median over starts of (objective at 90% of epochs - final) / "
                          "Bayes error",
            "threshold": flat,
            "flattened_fraction": float(np.mean(np.asarray(drops) < flat)),
            "largest_drop": float(max(drops)),
            "per_target": convergence,
        },
    }
    _print_summary(metrics, hidden, decays)
    return metrics


def _why_claims_unchecked(config, claims) -> str:
    """Why this run's claims cannot be checked ('' when they can): a config below
    ``CLAIMS_NEED``, or a grid missing a size or decay some claim needs."""
    words = {"starts": "starts", "n_test": "test points", "epochs": "epochs"}
    reasons = [f"{getattr(config, k):,} {words.get(k, k)} (needs >= {v:,})"
               for k, v in CLAIMS_NEED.items() if getattr(config, k) < v]
    absent = sorted(name for name, c in claims.items() if "missing" in c)
    if absent:
        reasons.append(f"the grid lacks what {', '.join(absent)} "
                       + ("needs" if len(absent) == 1 else "need"))
    if not reasons:
        return ""
    smoke = all(getattr(config, k) == v for k, v in SMOKE.items())
    return (("smoke run: " if smoke else "run too small: ") + "; ".join(reasons)
            + ". The claims' booleans are computed, but at this size they test nothing.")


def _print_summary(metrics, hidden, decays) -> None:
    print("\nmedian test error / Bayes error over the starts")
    head = "".join(f"{h:>7d}" for h in hidden)
    for target in TARGETS:
        print(f"  {target:<16s} hidden:{head}   best")
        for d in decays:
            row = metrics["relative_test_error"][target][f"decay={d}"]
            vals = "".join(f"{v:7.2f}" for v in row["median"])
            print(f"    lambda={d:<8g}        {vals}   {row['best_size']}")
    sweep = metrics["decay_sweep"]
    if sweep:
        print(f"  decay sweep at {sweep['hidden_units']} hidden units (sum of sigmoids):")
        print("    " + "  ".join(f"{d:g}:{m:.3f}" for d, m in zip(sweep["decays"],
                                                                  sweep["median"])))
    pc = metrics["penalty_conversion"]
    print(f"penalty: {pc['rule']} -> {pc['l2']} (verified: {pc['verified']}, max rel diff "
          f"{pc['max_rel_diff_n_times_library_vs_esl']:.1e})")
    cv = metrics["convergence"]
    print(f"convergence: {cv['flattened_fraction']:.0%} of (target, size, decay) flattened "
          f"(drop over the last 10% < {cv['threshold']} Bayes error); largest drop "
          f"{cv['largest_drop']:.3f}")
    checked = metrics["claims_checked"]
    print("ESL's claims:" if checked else
          f"ESL's claims: not checked ({metrics['claims_not_checked_because']})")
    for name, c in metrics["claims"].items():
        nums = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in c.items() if k not in ("holds", "definition"))
        verdict = c["holds"] if checked else "n/a (not checked)"
        print(f"  {name}: {verdict}  ({nums})")
