"""Optimizers: full-batch gradient descent vs SGD (batch 1, 32) vs Newton's method, one objective.

The note's "Gradient Descent", "Stochastic Gradient Descent" and "v.s. Newton's method", on a
problem where Newton's method is affordable: L2-penalised logistic regression on a binary
digits task (odd vs even digits, or 3 vs 8), standardised pixels, 64 weights and a bias,

    f(w, b) = (1/n) sum_i [softplus(z_i) - y_i z_i] + (lambda/2) ||w||^2,   z_i = w . x_i + b,

written as the library's MLP with no hidden layer (`nets.objective.mlp_objective`, binary
cross-entropy; the same number as `train.newton.logistic_regression_objective`, checked).
Every method starts at w = 0, b = 0 and is scored by the full penalised objective on the
whole training set, as the gap to the optimum f* (Newton's converged value, or the lowest
value any method reached if lower). First-order methods are the note's SGD step
`W <- W - alpha (dW + lambda W)` (`train.sgd`; `lambda W` is the gradient of the penalty
inside the minibatch loss, the full objective's penalty, so E[step] follows grad f) with
batch 1, 32 or n (batch n is full-batch gradient descent) and a constant alpha, each with
its best alpha from a grid (lowest final objective after the same budget; the grid runs as
one `train.sweep`), run with `train.make_epoch` (one `lax.scan` over the minibatches, a
fresh random order each epoch; for GD the same full pass), several epochs per compiled call
(a `lax.scan` over epochs that also returns each epoch's parameters, so that a 40-microsecond
GD step is not timed as a Python dispatch); Newton's method is `train.newton` (damped, Armijo
line search), one compiled iteration per call. Steps are parameter updates: minibatch steps,
or Newton iterations (each of which forms and solves with the 65 x 65 Hessian). Everything
runs in float64. Seconds count compiled work only: every program is compiled and run once
before timing, then every call is timed with `jax.block_until_ready` (a call's time is
spread evenly over its epochs; the objective evaluations between calls are not timed).

Writes `loss_vs_steps.png`, `loss_vs_seconds.png` (gap on a log scale), `history.csv` (one
row per method and epoch/iteration), `tuning.csv` (final objective per method and alpha) and
`timings.json` (seconds, kept out of the metrics).

Full run: `python -m experiments run optimizers` (defaults, seed 0): odd vs even, n = 1079,
lambda = 1e-3, f* = 0.1473220189. Tuned steps: GD alpha = 4 (1/L = 0.53 for the curvature
bound L = lambda_max(X~^T X~)/(4n) + lambda, reached at w = 0; near the optimum the
curvature is far smaller), SGD batch 32 alpha = 0.2, batch 1 alpha = 0.02. Newton:
converged in 9 iterations (gradient norm <= 1e-10), gap <= 1e-4 after 6. Full-batch GD:
gap <= 1e-4 after 174 steps, 2.8e-17 after 5,000. SGD batch 32: final gap 2.7e-4 after
3,300 steps (100 epochs); batch 1: 4.4e-3 after 21,580 steps (20 epochs): with a constant
step they stall at a noise floor above 1e-4 (the SGD gaps depend on the minibatch order:
3.4e-4 and 2.0e-3 with the data-order keys of train before commit b415028). Seconds
(timings.json; the machine was loaded, they vary run to run): Newton 19-36 ms in all,
14-26 ms to a gap of 1e-4 (1-4 ms per iteration); GD 8-15 ms to 1e-4, 0.38-0.39 s for its
5,000 steps. Wall time 20 s on a 2-core CPU (shared, loaded) with a warm compilation cache,
36 s in a run under heavier load. Two runs wrote byte-identical metrics.json and
history.csv. Figures: the legend sits below the axes; each SGD batch size has its own
markers, the smaller batch drawn thinner and on top.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

import train
from experiments._config import (
    Annotated, Count, MAX_COUNT, MAX_SAMPLES, NonEmpty, NonNegative, Positive, Positives, Range)
from experiments import UsageError
from experiments._framework import progress, write_csv, write_json
from experiments._plot import plt, savefig
from nets import objective as _objective
from train import data as _data
from train import newton as _newton


@dataclasses.dataclass(frozen=True)
class Config:
    task: Literal["odd-even", "3-vs-8"] = "odd-even"  # label 1: odd digits / the digit 8
    l2: NonNegative = 1e-3  # lambda of the penalty (lambda/2) ||w||^2 (the bias is not penalised)
    # Grid of constant steps alpha; each first-order method runs with the one that gives it
    # the lowest final objective, ties (to 1e-9) broken by the lowest mean loss over the
    # epochs (train.sweep: the whole grid in one compiled program).
    learning_rates: Positives = (8.0, 4.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005)
    # SGD batch sizes; 0 means n (full-batch GD)
    batch_sizes: Annotated[tuple[int, ...], NonEmpty(), Range(0, MAX_SAMPLES)] = (0, 32, 1)
    # epochs for each of batch_sizes
    epochs: Annotated[tuple[int, ...], NonEmpty(), Range(1, MAX_COUNT)] = (5000, 100, 20)
    min_steps_per_call: Count = 200  # run enough epochs per compiled call to make this many steps
    newton_max_iter: Count = 30  # cap on Newton iterations
    newton_tol: Positive = 1e-10  # Newton stops when ||grad f||_2 <= newton_tol
    target_gap: Positive = 1e-4  # report the steps each method takes to reach this gap
    seed: int = 0  # the split and the SGD data order derive from jax.random.key(seed)


SMOKE = {"batch_sizes": (0, 1), "epochs": (30, 1), "learning_rates": (1.0, 0.01),
         "newton_max_iter": 10}

_GAP_FLOOR = 1e-15  # gaps below this (float64 round-off of f ~ 0.1) are drawn at it


def _task(config: Config, key):
    """Standardised binary training set: ``X`` (n, 64) float64, ``y`` (n,) in {0, 1}."""
    split = _data.load_digits(key=key, standardize=False)
    X, digit = split.train
    if config.task == "odd-even":
        keep = np.ones(len(digit), bool)
        y = (digit % 2 == 1).astype(np.float64)
    elif config.task == "3-vs-8":
        keep = (digit == 3) | (digit == 8)
        y = (digit[keep] == 8).astype(np.float64)
    else:
        raise ValueError(f"task: expected 'odd-even' or '3-vs-8', got {config.task!r}")
    (X,), _, _ = _data.standardize(X[keep].astype(np.float64))
    return X, y


def _method_name(batch_size: int) -> str:
    return "gd" if batch_size == 0 else f"sgd-{batch_size}"


def _label(method: str, n: int, alpha: float | None) -> str:
    if method == "newton":
        return "Newton's method"
    batch = f"n={n}" if method == "gd" else method.split("-")[1]
    name = "full-batch GD" if method == "gd" else "SGD"
    return f"{name} (batch {batch}, alpha={alpha:g})"


def _run_first_order(loss, full, params0, data, *, batch: int, epochs: int, lr: float, key,
                     min_steps_per_call: int):
    """SGD epochs of train.make_epoch, ``k`` epochs per compiled call (a ``lax.scan`` over
    epochs that also returns the parameters after each epoch), so that per-call dispatch
    does not dominate the timing of cheap epochs (a full-batch epoch is one step). Returns
    per-epoch steps, full objective and cumulative seconds (a call's time spread evenly over
    its epochs), and the compile time."""
    n = data[0].shape[0]
    optimizer = train.sgd(lr, l2=0.0)  # the penalty is inside `loss`
    # Full batch: every epoch is the same pass, no permutation needed.
    order = "sequential" if batch == n else "random"
    epoch = train.make_epoch(loss, optimizer, batch_size=batch, order=order, jit=False)
    k = max(1, min(epochs, -(-min_steps_per_call // (n // batch))))

    @functools.partial(jax.jit, static_argnums=2)
    def epochs_call(carry, data, length):
        def body(carry, _):
            s, k = carry
            k, sub = jax.random.split(k)
            s, _ = epoch(s, data, sub)
            return (s, k), s.params

        return jax.lax.scan(body, carry, None, length=length)

    state = (train.init_state(params0, optimizer), key)
    lengths = [k] * (epochs // k) + ([epochs % k] if epochs % k else [])
    t0 = time.perf_counter()
    for length in sorted(set(lengths)):  # compile (and run once) before timing
        jax.block_until_ready(epochs_call(state, data, length))
    compile_s = time.perf_counter() - t0
    steps, values, seconds = [0], [float(full(params0))], [0.0]
    for length in lengths:
        t0 = time.perf_counter()
        state, params = jax.block_until_ready(epochs_call(state, data, length))
        elapsed = time.perf_counter() - t0
        start = seconds[-1]
        for j in range(length):
            p = jax.tree.map(lambda a: a[j], params)
            steps.append(steps[-1] + n // batch)
            values.append(float(full(p)))
            seconds.append(start + elapsed * (j + 1) / length)
    assert steps[-1] == int(state[0].step)
    return steps, values, seconds, compile_s


def _tune(loss, full, params0, data, *, batch: int, epochs: int, rates, key):
    """SGD with each constant step in ``rates``, all in one train.sweep: the final full
    objective of each, and its mean training loss over the epochs (NaN if it diverged)."""
    m = len(rates)
    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (m, *a.shape)), params0)
    order = "sequential" if batch == data[0].shape[0] else "random"
    result = train.sweep(loss, stacked, data, optimizer=train.sgd(1.0),
                         keys=jnp.stack([key] * m), epochs=epochs, batch_size=batch, order=order,
                         hyperparams={"learning_rate": np.asarray(rates, float)},
                         progress=False)
    finals = np.asarray(jax.vmap(full)(result.params), np.float64)
    diverged = np.array([reason == "non_finite" for reason in result.stop_reason])
    finals = np.where(diverged | ~np.isfinite(finals), np.nan, finals)
    history = np.asarray(result.history["loss"], np.float64)  # (models, epochs)
    means = np.where(np.isnan(finals), np.nan, np.mean(history, axis=1))
    return [float(v) for v in finals], [float(v) for v in means]


def _best(finals, means, rtol: float = 1e-9) -> int:
    """Index of the lowest final objective; finals within ``rtol`` of it (several steps
    reach the optimum to round-off) are ties, broken by the lowest mean training loss over
    the epochs (the fastest)."""
    finals, means = np.asarray(finals), np.asarray(means)
    if np.all(np.isnan(finals)):
        raise ValueError("learning_rates: every step size diverged; try smaller ones")
    lowest = np.nanmin(finals)
    tied = np.flatnonzero(finals <= lowest + rtol * abs(lowest))
    return int(tied[np.argmin(means[tied])])


def _run_newton(f, params0, *, max_iter: int, tol: float):
    """Newton iterations one compiled step at a time (train.newton.newton_update)."""
    state0 = _newton.newton_init(f, params0)
    t0 = time.perf_counter()
    jax.block_until_ready(_newton.newton_update(f, state0, tol=tol))  # compile first
    compile_s = time.perf_counter() - t0
    state = state0
    steps, values, seconds = [0], [float(state.value)], [0.0]
    while int(state.status) == _newton.RUNNING and int(state.iteration) < max_iter:
        t0 = time.perf_counter()
        state = jax.block_until_ready(_newton.newton_update(f, state, tol=tol))
        elapsed = time.perf_counter() - t0
        if int(state.iteration) > steps[-1]:  # an accepted step
            seconds.append(seconds[-1] + elapsed)
            steps.append(int(state.iteration))
            values.append(float(state.value))
    return steps, values, seconds, compile_s, _newton.STATUSES[int(state.status)], state


def _first_reaching(steps, gaps, target):
    for s, g in zip(steps, gaps):
        if g <= target:
            return int(s)
    return None


def _style(method: str, i: int, n_points: int) -> dict:
    """Line style per method: Newton black with dots; GD a plain line; each SGD batch size its
    own marker (at most ~25 per curve), the smaller the batch the thinner the line and the
    higher it is drawn, so a noisy short curve is not hidden under a longer one."""
    if method == "newton":
        return dict(color="k", marker="o", markersize=4, linewidth=1.5, zorder=6)
    if method == "gd":
        return dict(color=f"C{i}", linewidth=1.8, zorder=2)
    batch = int(method.split("-")[1])
    markers = ("s", "^", "v", "D", "P")
    return dict(color=f"C{i}", linewidth=1.0 if batch < 8 else 1.3, alpha=0.9,
                marker=markers[i % len(markers)], markersize=4 if batch < 8 else 3,
                markevery=max(1, n_points // 25), zorder=5 if batch < 8 else 3)


def _plot(records, x_key, n, config, f_star, rates, path):
    fig, ax = plt.subplots(figsize=(8, 6), layout="constrained")
    for i, (method, rec) in enumerate(records.items()):
        x = np.asarray(rec[x_key], float)
        gap = np.maximum(np.asarray(rec["gap"]), _GAP_FLOOR)
        keep = x > 0  # log x axis: the common starting point (x = 0) is left out
        ax.plot(x[keep], gap[keep], label=_label(method, n, rates.get(method)),
                **_style(method, i, int(keep.sum())))
    ax.axhline(config.target_gap, color="grey", linestyle="--", linewidth=1,
               label=f"gap {config.target_gap:g}")
    ax.axhline(_GAP_FLOOR, color="grey", linestyle=":", linewidth=1,
               label=f"gap <= {_GAP_FLOOR:g} (float64 round-off) drawn here")
    ax.set_xscale("log")
    ax.set_yscale("log")
    xlabel = ("optimizer steps (Newton: iterations), log scale" if x_key == "step"
              else "seconds of compiled work (cumulative), log scale")
    ax.set(xlabel=xlabel, ylabel="objective - f* (log scale)",
           title=f"Penalised logistic regression, digits {config.task} (n={n}, 65 parameters, "
                 f"lambda={config.l2:g})\nobjective gap vs "
                 + ("steps" if x_key == "step" else "wall-clock seconds")
                 + f", f* = {f_star:.6f}")
    ax.grid(alpha=0.3, which="both")
    fig.legend(loc="outside lower center", ncol=2, fontsize=9)  # below the axes: covers no curve
    savefig(fig, path)


def check(config: Config) -> None:
    """The checks across fields (make_config's hook; each field's own are in its type)."""
    if len(config.batch_sizes) != len(config.epochs):
        raise ValueError(f"epochs: expected one entry per batch size {config.batch_sizes}, "
                         f"got {config.epochs}")


def run(config: Config, outdir) -> dict:
    check(config)
    key_split, key_order = jax.random.split(jax.random.key(config.seed))
    X, y = _task(config, key_split)
    n, d = X.shape
    for b in config.batch_sizes:  # the task's n is known only now: still before any work
        if not 0 <= b <= n:
            raise UsageError(f"batch_sizes: expected sizes in [0, n={n}] (0 for n: the "
                             f"{config.task} task's training images), got {b}")
    if len({b or n for b in config.batch_sizes}) != len(config.batch_sizes):
        raise UsageError(f"batch_sizes: expected distinct sizes (0 is n={n}), got "
                         f"{config.batch_sizes}")

    with jax.enable_x64(True):
        Xj, yj = jnp.asarray(X), jnp.asarray(y)

        def loss(params, Xb, yb):  # the penalised objective on a minibatch
            return _objective.mlp_objective(params, Xb, yb, loss="binary_cross_entropy",
                                            l2=config.l2)

        def f(params):  # the full objective, the one every method is scored by
            return loss(params, Xj, yj)

        full = jax.jit(f)
        params0 = [{"W": jnp.zeros((1, d), jnp.float64), "b": jnp.zeros((1,), jnp.float64)}]
        # The same objective as train.newton's logistic regression (a cross-check).
        reference = _newton.logistic_regression_objective(X, y, config.l2)
        probe = [{"W": jnp.asarray(np.linspace(-0.1, 0.1, d)[None]), "b": jnp.array([0.3])}]
        same = abs(float(f(probe)) - float(reference({"w": probe[0]["W"][0],
                                                       "b": probe[0]["b"][0]})))
        if not same < 1e-12:
            raise AssertionError(f"objective differs from logistic_regression_objective by {same}")

        rates, tuning = {}, []
        for batch, epochs in progress(list(zip(config.batch_sizes, config.epochs)),
                                      desc="tuning alpha"):
            finals, means = _tune(loss, full, params0, (Xj, yj), batch=batch or n,
                                  epochs=epochs, rates=config.learning_rates, key=key_order)
            rates[batch or n] = config.learning_rates[_best(finals, means)]
            tuning += [{"method": _method_name(batch), "learning_rate": a, "final_objective": v,
                        "mean_epoch_loss": m}
                       for a, v, m in zip(config.learning_rates, finals, means)]

        records, compile_s = {}, {}
        methods = list(zip(config.batch_sizes, config.epochs))
        for batch, epochs in progress(methods, desc="optimizers"):
            name = _method_name(batch)
            steps, values, seconds, compile_s[name] = _run_first_order(
                loss, full, params0, (Xj, yj), batch=batch or n, epochs=epochs,
                lr=rates[batch or n], key=key_order,
                min_steps_per_call=config.min_steps_per_call)
            records[name] = {"epoch": list(range(epochs + 1)), "step": steps,
                             "objective": values, "seconds": seconds}
        steps, values, seconds, compile_s["newton"], status, state = _run_newton(
            f, params0, max_iter=config.newton_max_iter, tol=config.newton_tol)
        records["newton"] = {"epoch": steps, "step": steps, "objective": values,
                             "seconds": seconds}

    f_star = min(min(r["objective"]) for r in records.values())
    for rec in records.values():
        rec["gap"] = [v - f_star for v in rec["objective"]]

    history = [{"method": m, "epoch": e, "step": s, "objective": v, "gap": g}
               for m, r in records.items()
               for e, s, v, g in zip(r["epoch"], r["step"], r["objective"], r["gap"])]
    write_csv(outdir / "history.csv", history)
    write_csv(outdir / "tuning.csv", tuning)
    target = config.target_gap
    reach = {m: _first_reaching(r["step"], r["gap"], target) for m, r in records.items()}
    seconds_to = {m: (None if reach[m] is None else r["seconds"][r["step"].index(reach[m])])
                  for m, r in records.items()}
    write_json(outdir / "timings.json", {
        "note": "seconds of compiled work, measured with jax.block_until_ready; compile_s is "
                "the first (compiling) call, not counted in the curves",
        "device": str(jax.devices()[0]),
        "methods": {m: {"total_s": r["seconds"][-1], "compile_s": compile_s[m],
                        "seconds_to_target_gap": seconds_to[m], "cumulative_s": r["seconds"],
                        "step": r["step"]} for m, r in records.items()}})
    alphas = {_method_name(b): rates[b or n] for b in config.batch_sizes}
    _plot(records, "step", n, config, f_star, alphas, outdir / "loss_vs_steps.png")
    _plot(records, "seconds", n, config, f_star, alphas, outdir / "loss_vs_seconds.png")

    print(f"  n={n}, d={d}, lambda={config.l2:g}, f*={f_star:.10f}, alpha per batch size: "
          + ", ".join(f"{b}: {a:.4g}" for b, a in rates.items()))
    print(f"  {'method':<10}{'alpha':>7}{'steps':>9}{'final gap':>12}"
          f"{'steps to gap ' + format(target, 'g'):>22}{'seconds':>10}")
    for m, r in records.items():
        alpha = format(alphas[m], "g") if m in alphas else "-"
        print(f"  {m:<10}{alpha:>7}{r['step'][-1]:>9}{r['gap'][-1]:>12.3g}{str(reach[m]):>22}"
              f"{r['seconds'][-1]:>10.4f}")
    return {
        "n_train": n,
        "learning_rate": alphas,
        "objective_optimum": f_star,
        "final_gap": {m: r["gap"][-1] for m, r in records.items()},
        "steps": {m: r["step"][-1] for m, r in records.items()},
        "steps_to_target_gap": reach,
        "target_gap": target,
        "newton_iterations": int(state.iteration),
        "newton_status": status,
    }
