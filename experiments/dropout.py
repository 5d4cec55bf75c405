"""Dropout on 250 digits: a large MLP with and without dropout, every rate in one program.

The note: "Dropout tackles overfitting". A net far larger than its data (64-512-512-10 ReLU,
301,066 parameters, trained on 250 images of ``train.data.load_digits``, grey levels / 16)
is trained with inverted dropout (Srivastava et al. 2014, JMLR 15) on its inputs (rate from
``input_rates``) and after each hidden activation (rate from ``hidden_rates``); rate 0 is no
dropout. Every pair of rates, times ``seeds`` initialisations, is ONE compiled program: a
rate lives in its Dropout layer's state (:func:`nets.layers.Dropout`), a number that
``train.sweep`` stacks along the model axis like a learning rate, so all the models share
one ``vmap``-ed step. Seed ``j`` has the same initial weights, minibatch order and dropout
keys at every rate (so the masks are nested: a unit dropped at rate 0.3 is dropped at 0.5
too), and the settings differ by their rates alone. Every model runs the same number of
epochs of SGD with momentum: no early stopping and no penalty, so dropout is the only
regularizer.

Recorded every ``eval_every`` epochs (and after the last), in evaluation mode (no dropout):
the error and the cross-entropy on the whole training set and on the test set (359 images);
the train/test gap is their difference. After training, every model is evaluated once more
on the training, validation (359 images) and test sets. The pair of rates is chosen by the
lowest mean validation error (ties: the lower rates), and the headline ``test_error`` is the
test error at that pair; ``versus_no_dropout`` compares it, the best hidden rate alone and
the best input rate alone (each chosen on validation) with no dropout, seed by seed. The
curves and every per-setting number are on the test set, where nothing is chosen, except
``best_test_error`` (the lowest test error over the epochs: chosen on the test set, an
optimistic, oracle number, reported beside the final one). A model that turns non-finite
stops with its last finite parameters (``diverged`` counts them).

Full run (seed 0)::

    python -m experiments run dropout

    30 models (2 input rates x 5 hidden rates x 3 seeds) in 1 compilation. Test error after
    200 epochs, mean over 3 seeds (range); training error; test cross-entropy:

    input  hidden  test error          training  test xent
    0      0       7.52% (7.0-7.8)     0.00%     0.254     no dropout
    0      0.1     7.24% (6.7-7.5)     0.00%     0.261
    0      0.3     7.24% (6.7-7.8)     0.00%     0.262
    0      0.5     7.15% (7.0-7.2)     0.00%     0.261
    0      0.7     6.04% (4.5-7.0)     0.00%     0.250     chosen on validation
    0.2    0       5.57% (5.3-5.8)     0.00%     0.189
    0.2    0.1     5.39% (5.0-5.8)     0.00%     0.187
    0.2    0.3     5.48% (4.5-6.1)     0.00%     0.199
    0.2    0.5     5.01% (5.0-5.0)     0.13%     0.192     lowest test error
    0.2    0.7     8.45% (7.8-8.9)     1.20%     0.247     too much: underfits

    * Without dropout the net overfits: training error 0 from epoch 10 on, training
      cross-entropy 7e-4, test error 7.5%, a gap of 7.5 points; the test cross-entropy is
      lowest at epoch 20 (0.216) and climbs to 0.254 while the training one keeps falling.
    * Dropout on the hidden units ALONE does not stop the memorisation: the evaluation-mode
      net still classifies all 250 training images correctly at every rate (its training
      cross-entropy even falls, to 4e-5 at rate 0.5), and the test cross-entropy does not
      improve (0.25-0.26). The test error falls a little with the rate, to 6.04% at 0.7,
      lower on each of the 3 seeds but WITHIN the spread over the seeds (the ranges
      overlap). The lowest test error over the epochs (an oracle) falls more, from 7.15% to
      5.2-5.9% at rates 0.3-0.7: these nets pass through lower test errors, noisily.
    * Dropout on the INPUTS (0.2) is what helps here: 5.57% test error with no hidden
      dropout, 1.95 points lower than without dropout, lower on every seed and beyond the
      spread over the seeds; the test cross-entropy falls from 0.254 to 0.189 and its gap
      to the training one from 0.254 to 0.188 nats. With hidden dropout on top, 5.0-5.5%
      up to rate 0.5 (within input dropout's own spread); with both rates high (0.2 and
      0.7) the net underfits (training error 1.2%, test 8.5%).
    * Choosing the rates on the 359 validation images picks hidden 0.7 without input
      dropout (validation error 5.20%, against 6.31% for input 0.2 alone), the reverse of
      the test set's ranking: the headline test error is 6.04% (7.52% without dropout), not
      the 5.0-5.6% that input dropout reaches on the test set. The claim "dropout lowers
      test error" is resolved for input dropout; for hidden-unit dropout alone it is a
      trend within the noise of 3 seeds and 359 images.
    * How fragile the finer numbers are: three versions of ``train.sweep`` ran these same
      seeds, equal to 4e-16 in float64 but rounding differently in float32 (one model per
      program lane; each seed's 10 models as one ``vmap``-ed group; the groups one after
      the other, this version). After 200 epochs they give, for hidden 0.7 alone, 6.78%,
      6.78%, 6.04%; for input 0.2 with hidden 0, 0.1, 0.3, 0.5, 0.7: 5.57 / 5.48 / 5.57,
      5.20 / 5.39 / 5.39, 5.48 / 5.29 / 5.48, 5.76 / 5.01 / 5.01, 7.89 / 8.26 / 8.45%; and
      the validation choice hidden 0.7 alone, input 0.2 with hidden 0.1, hidden 0.7 alone.
      The no-dropout row, hidden rates 0.1-0.5 alone, and the conclusions above did not
      move: input dropout helps beyond the seed spread in all three, hidden dropout alone
      does not. Which hidden rate is "best" is float rounding at this size.

    Wall time 73 s on a quiet 2-core CPU (this session); earlier 465 s and 296 s on a CPU
    shared with other jobs (load average 7-9; 3.6 and 3.4 CPU-minutes), where two runs
    wrote byte-identical metrics.json, history.csv and models.csv.

Files: ``curves.png`` (training and test error against epoch, a panel per pair of rates;
the test minus training cross-entropy against epoch, a line per hidden rate), ``rate.png``
(test error against the hidden rate, a line per input rate, bars: range over seeds;
cross-entropy against the rate), ``history.csv`` (every model and evaluated epoch's numbers,
NaN in between), ``models.csv`` (every model's final numbers).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import warnings
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

import train
from experiments._config import (
    Annotated, Count, Positive, Probability, Range, Rates, Replicates, Samples, Widths)
from experiments._framework import progress_enabled, write_csv
from experiments._plot import plt, savefig
from nets import _checks, count_params, losses, objective
from nets import layers as L
from nets import metrics as nets_metrics
from nets.model import Model


@dataclasses.dataclass(frozen=True)
class Config:
    # training images (the first of the shuffled digits training split)
    n_train: Annotated[int, Range(1, 1079)] = 250
    hidden: Widths = (512, 512)  # widths of the hidden layers (a Dropout after each)
    activation: Literal["sigmoid", "tanh", "relu", "elu", "softplus"] = "relu"  # hidden g
    init: Literal["glorot", "he", "lecun"] = "he"  # Dense weight initialisation
    inputs: Literal["unit", "standardize"] = "unit"  # grey levels / 16, or per-pixel z-scores
    hidden_rates: Rates = (0.0, 0.1, 0.3, 0.5, 0.7)  # increasing, with 0
    input_rates: Rates = (0.0, 0.2)  # drop rates of the 64 pixels; with 0
    seeds: Replicates = 3  # initialisations (and minibatch orders, dropout keys) per pair of rates
    learning_rate: Positive = 0.02  # SGD step size alpha
    momentum: Probability = 0.9  # heavy-ball momentum
    batch_size: Samples = 25  # examples per step
    epochs: Count = 200  # epochs of every model (no early stopping)
    eval_every: Count = 10  # epochs between evaluations on the training and test sets
    seed: int = 0  # PRNG seed: data split, initial weights, minibatch order, dropout masks


SMOKE = {"n_train": 40, "hidden": (8,), "hidden_rates": (0.0, 0.5), "seeds": 2,
         "epochs": 3, "batch_size": 10, "eval_every": 1}


def _rates(rates, name: str) -> tuple[float, ...]:
    rates = tuple(rates)
    if not rates:
        raise ValueError(f"{name}: expected at least one drop rate, got none")
    rates = tuple(_checks.check_real(r, name, minimum=0.0, maximum=1.0) for r in rates)
    if 0.0 not in rates:
        raise ValueError(f"{name}: expected 0 among the rates (no dropout, the baseline), "
                         f"got {rates}")
    if any(b <= a for a, b in itertools.pairwise(rates)):
        raise ValueError(f"{name}: expected strictly increasing rates, got {rates}")
    return rates


def check_config(config: Config) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(input_rates, hidden_rates)`` as floats, after the checks the sweep does not make
    itself (it checks the batch size, epochs and the optimizer's numbers before compiling)."""
    if not config.hidden:
        raise ValueError("hidden: expected at least one hidden layer, got none")
    _checks.check_int(config.seeds, "seeds", 1)
    _checks.check_int(config.n_train, "n_train", 1)
    _checks.check_int(config.eval_every, "eval_every", 1)
    return _rates(config.input_rates, "input_rates"), _rates(config.hidden_rates, "hidden_rates")


check = check_config  # make_config's hook: checked before anything runs


def keys(config: Config) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(data key, init keys (seeds,), order keys (seeds,))``: seed ``j`` of every setting
    starts from ``init_keys[j]`` and draws its minibatch order and dropout masks from
    ``order_keys[j]``."""
    k_data, k_init, k_order = jax.random.split(jax.random.key(config.seed), 3)
    return k_data, jax.random.split(k_init, config.seeds), jax.random.split(k_order, config.seeds)


def net(config: Config, *, dropout: bool = True) -> tuple[Model, int | None, tuple[int, ...]]:
    """``(model, position of the input Dropout, positions of the hidden Dropouts)`` in the
    ``serial`` stack ``[Dropout] Dense g [Dropout] ... Dense(10)``. The Dropout layers are
    built with a placeholder rate: each model's rates are set in its state. With
    ``dropout=False``: the same stack without them (the same Dense layers, in order).
    One architecture gives one model (and its compiled programs) per process."""
    return _net(tuple(config.hidden), config.activation, config.init, dropout)


@functools.lru_cache(maxsize=8)
def _net(hidden, activation, init, dropout):
    layers, at_input, at_hidden = [], None, []
    if dropout:
        at_input = len(layers)
        layers.append(L.Dropout(0.5))
    for width in hidden:
        layers += [L.Dense(width, init=init), L.Activation(activation)]
        if dropout:
            at_hidden.append(len(layers))
            layers.append(L.Dropout(0.5))
    layers.append(L.Dense(10, init=init))
    return Model(L.serial(*layers), (64,)), at_input, tuple(at_hidden)


def _mean_cross_entropy(Z, y):
    """``(1/n) sum_i [logsumexp(z_i) - z_i,y_i]``, for ``Model.metric``."""
    return jnp.mean(jax.vmap(losses.get("cross_entropy").fn)(Z, y))


def run(config: Config, outdir) -> dict:
    input_rates, hidden_rates = check_config(config)
    k_data, init_keys, order_keys = keys(config)
    split = train.data.load_digits(key=k_data, inputs=config.inputs)
    if config.n_train > len(split.train[1]):
        raise ValueError(f"n_train: expected at most {len(split.train[1])} (the training "
                         f"split), got {config.n_train}")
    X_tr, y_tr = (a[:config.n_train] for a in split.train)
    model, at_input, at_hidden = net(config)

    # model m = (input rate i, hidden rate h, seed s), s fastest
    I, H, S = len(input_rates), len(hidden_rates), config.seeds
    grid = np.stack(np.meshgrid(np.arange(I), np.arange(H), np.arange(S), indexing="ij"),
                    -1).reshape(-1, 3)
    input_of = np.asarray(input_rates, np.float32)[grid[:, 0]]
    hidden_of = np.asarray(hidden_rates, np.float32)[grid[:, 1]]
    seed_of = grid[:, 2]
    inits = [model.init(k) for k in init_keys]  # one compiled init; stacked by seed below
    params, states = jax.tree.map(lambda *a: np.stack(a)[seed_of], *inits)
    states = list(states)
    states[at_input] = {"drop_rate": jnp.asarray(input_of)}
    for i in at_hidden:
        states[i] = {"drop_rate": jnp.asarray(hidden_of)}
    sweep = train.sweep(
        objective.make(model, "cross_entropy"), params, (X_tr, y_tr),
        optimizer=train.sgd(config.learning_rate, momentum=config.momentum or None),
        keys=order_keys[seed_of], model_state=tuple(states), epochs=config.epochs,
        batch_size=config.batch_size, validation=split.test,
        metrics={"error": model.metric(nets_metrics.error_rate),
                 "xent": model.metric(_mean_cross_entropy)},
        eval_every=config.eval_every, num_classes=10, progress=progress_enabled())
    for i, want in [(at_input, input_of)] + [(i, hidden_of) for i in at_hidden]:
        got = np.asarray(sweep.model_state[i]["drop_rate"])  # each model kept its own rate
        if not np.array_equal(got, want):
            raise RuntimeError(f"Dropout layer {i}: the models carry the rates {got}, "
                               f"expected {want}")

    def shape(a):  # (models, ...) -> (I, H, S, ...)
        return np.asarray(a, np.float64).reshape(I, H, S, *np.shape(a)[1:])

    h = sweep.history
    epoch = np.arange(1, np.shape(h["loss"])[1] + 1)
    evaluated = (epoch % config.eval_every == 0) | (epoch == config.epochs)
    curves = {  # each (I, H, S, E); NaN between evaluations and after a model diverged
        "train_error": shape(h["error"]), "test_error": shape(h["val_error"]),
        "train_xent": shape(h["xent"]), "test_xent": shape(h["val_loss"]),
        "minibatch_loss": shape(h["loss"])}

    def per_example(params, state, X, y):  # one model, evaluation mode: (n,) each
        Z, _ = model.batch_apply(params, X, state=state, train=False)
        return (nets_metrics.predicted_class(Z) != y,
                jax.vmap(losses.get("cross_entropy").fn)(Z, y))

    # One compiled evaluation of every model on the three sets at once, split afterwards.
    sets = {"train": (X_tr, y_tr), "val": split.val, "test": split.test}
    wrong, xent = (np.asarray(a, np.float64) for a in jax.jit(jax.vmap(
        per_example, in_axes=(0, 0, None, None)))(
        sweep.params, sweep.model_state, *(np.concatenate(a) for a in zip(*sets.values()))))
    final, start = {}, 0  # each (I, H, S): the final (last finite) parameters
    for name, (_, y) in sets.items():
        rows = slice(start, start + len(y))
        final[f"{name}_error"] = shape(wrong[:, rows].mean(1))
        final[f"{name}_xent"] = shape(xent[:, rows].mean(1))
        start += len(y)
    diverged = shape([r == "non_finite" for r in sweep.stop_reason]).astype(bool)
    best_test = np.fmin.reduce(  # the lowest over the evaluations and the end (fmin skips NaN)
        np.concatenate([curves["test_error"], final["test_error"][..., None]], -1), axis=-1)

    mean_val = final["val_error"].mean(-1)  # (I, H); ties go to the lower rates
    chosen = np.unravel_index(np.argmin(mean_val), (I, H))
    none = (0, 0)  # rates increase from 0
    test = final["test_error"]
    by_setting = {  # each (I, H): mean (or spread) over the seeds
        "test_error_mean": test.mean(-1),
        "test_error_sd": test.std(-1, ddof=1) if S > 1 else np.zeros((I, H)),
        "test_error_min": test.min(-1), "test_error_max": test.max(-1),
        "best_test_error_mean": best_test.mean(-1),
        "train_error_mean": final["train_error"].mean(-1),
        "val_error_mean": final["val_error"].mean(-1),
        "gap_mean": (test - final["train_error"]).mean(-1),
        "train_xent_mean": final["train_xent"].mean(-1),
        "test_xent_mean": final["test_xent"].mean(-1),
        "xent_gap_mean": (final["test_xent"] - final["train_xent"]).mean(-1),
        "diverged": diverged.sum(-1),
    }
    with warnings.catch_warnings():  # columns where every model has diverged: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        gap_curves = {"error": np.nanmean(curves["test_error"] - curves["train_error"], 2),
                      "xent": np.nanmean(curves["test_xent"] - curves["train_xent"], 2)}
    def rates_of(i, j):
        return {"input_rate": input_rates[i], "hidden_rate": hidden_rates[j]}

    comparisons = {  # each chosen on validation, its test error against no dropout
        "chosen": (chosen, "both rates"),
        "best_hidden_only": ((0, int(np.argmin(mean_val[0]))), "hidden rate, input rate 0"),
        "best_input_only": ((int(np.argmin(mean_val[:, 0])), 0), "input rate, hidden rate 0"),
    }
    comparisons = {name: {**rates_of(*at), "chosen_among": among,
                          **_versus_none(test[at], test[none])}
                   for name, (at, among) in comparisons.items()}

    write_csv(outdir / "history.csv", [
        {**rates_of(i, j), "seed": s, "epoch": int(e),
         **{k: v[i, j, s, t] for k, v in curves.items()}}
        for i in range(I) for j in range(H) for s in range(S) for t, e in enumerate(epoch)])
    write_csv(outdir / "models.csv", [
        {**rates_of(i, j), "seed": s, **{k: v[i, j, s] for k, v in final.items()},
         "best_test_error": best_test[i, j, s], "diverged": bool(diverged[i, j, s])}
        for i in range(I) for j in range(H) for s in range(S)])
    _plot_curves(epoch, evaluated, curves, gap_curves["xent"], input_rates, hidden_rates,
                 config, outdir / "curves.png")
    _plot_rate(final, best_test, input_rates, hidden_rates, chosen, config, outdir / "rate.png")

    n_params = count_params(jax.tree.map(lambda a: a[0], sweep.params))
    print(f"{I} input rates x {H} hidden rates x {S} seeds = {I * H * S} models in "
          f"{sweep.compilations} compilation(s), {n_params:,} parameters each, "
          f"{config.n_train} training images, {len(epoch)} epochs")
    print("  input hidden   test error (final)         best over epochs  train err  "
          "val err  xent train / test")
    for i, ri in enumerate(input_rates):
        for j, rh in enumerate(hidden_rates):
            b = {k: v[i, j] for k, v in by_setting.items()}
            print(f"  {ri:5.2f} {rh:6.2f}   {100 * b['test_error_mean']:5.2f} +- "
                  f"{100 * b['test_error_sd']:4.2f}% ({100 * b['test_error_min']:.1f}-"
                  f"{100 * b['test_error_max']:.1f})   {100 * b['best_test_error_mean']:5.2f}%"
                  f"            {100 * b['train_error_mean']:5.2f}%   "
                  f"{100 * b['val_error_mean']:5.2f}%  {b['train_xent_mean']:.4f} / "
                  f"{b['test_xent_mean']:.3f}" + (f"  ({b['diverged']} diverged)"
                                                  if b["diverged"] else ""))
    c = comparisons["chosen"]
    print(f"chosen on validation: input rate {input_rates[chosen[0]]:g}, hidden rate "
          f"{hidden_rates[chosen[1]]:g}: test error {100 * test[chosen].mean():.2f}% against "
          f"{100 * test[none].mean():.2f}% without dropout (lower on {c['seeds_lower']} of {S} "
          f"seeds, ranges {'apart' if c['ranges_apart'] else 'overlap'})")

    return {
        "test_error": float(test[chosen].mean()),  # at the pair of rates chosen on validation
        "test_error_no_dropout": float(test[none].mean()),
        "chosen": {"input_rate": input_rates[chosen[0]], "hidden_rate": hidden_rates[chosen[1]]},
        "input_rates": list(input_rates),
        "hidden_rates": list(hidden_rates),
        "by_setting": by_setting,  # arrays (input rates, hidden rates)
        "per_seed": {k: final[k] for k in ("test_error", "train_error", "val_error")},
        "versus_no_dropout": comparisons,
        "gap_over_epochs": {"epoch": epoch[evaluated],  # (input, hidden, evaluations)
                            "error": gap_curves["error"][..., evaluated],
                            "xent": gap_curves["xent"][..., evaluated]},
        "compilations": sweep.compilations,
        "models": I * H * S,
        "parameters": n_params,
        "n_train": len(y_tr),
        "n_val": len(split.val[1]),
        "n_test": len(split.test[1]),
    }


def _versus_none(at, at_none) -> dict:
    """Test errors ``at`` of one setting against ``at_none`` without dropout, both
    ``(seeds,)``, seed by seed (a seed has the same start, minibatch order and keys in every
    setting): whether it is lower on every seed and the two ranges over the seeds are apart
    (``beyond_seed_spread``)."""
    lower, higher = int(np.sum(at < at_none)), int(np.sum(at > at_none))
    apart = bool(at.max() < at_none.min())
    return {"test_error": float(at.mean()), "test_error_no_dropout": float(at_none.mean()),
            "test_error_gain": float(at_none.mean() - at.mean()),
            "seeds_lower": lower, "seeds_tied": len(at) - lower - higher,
            "seeds_higher": higher, "ranges_apart": apart,
            "beyond_seed_spread": bool(apart and lower == len(at))}


# --- figures ---------------------------------------------------------------------------------

def _band(ax, x, values, color, label, **style):
    """The mean over seeds (rows of ``values``) as a line, their range as a band; columns
    where every seed has diverged (NaN) are left out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, mean, hi = (f(values, axis=0) for f in (np.nanmin, np.nanmean, np.nanmax))
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
    ax.plot(x, mean, color=color, lw=1.5, label=label, **style)


def _title(ri, rh):
    return ("no dropout" if ri == rh == 0 else f"input {ri:g}, hidden {rh:g}")


def _plot_curves(epoch, evaluated, curves, gap_xent, input_rates, hidden_rates, config, path):
    I, H, S = curves["test_error"].shape[:3]
    x = epoch[evaluated]
    fig, axes = plt.subplots(I, H + 1, figsize=(2.9 * (H + 1) + 0.6, 2.9 * I + 0.7),
                             sharex=True, squeeze=False, layout="constrained")
    late = curves["test_error"][..., evaluated][..., len(x) // 4:]
    top = 100 * float(np.nanmax(late)) if np.isfinite(late).any() else 100.0
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, H))
    for i, ri in enumerate(input_rates):
        for j, rh in enumerate(hidden_rates):
            ax = axes[i, j]
            train_e = 100 * curves["train_error"][i, j][:, evaluated]
            test_e = 100 * curves["test_error"][i, j][:, evaluated]
            _band(ax, x, train_e, "C0", "training")
            _band(ax, x, test_e, "C1", "test")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                final = np.nanmean(test_e[:, -1]), np.nanmean(test_e[:, -1] - train_e[:, -1])
            ax.set_title(f"{_title(ri, rh)}\nfinal: test {final[0]:.1f}%, gap {final[1]:.1f} "
                         "points", fontsize=9)
            ax.set_ylim(0, 1.25 * top)
            if j:
                ax.tick_params(labelleft=False)
            ax.grid(alpha=0.3)
            axes[i, H].plot(x, gap_xent[i, j][evaluated], color=colors[j],
                            lw=1.6 if rh else 2.2, ls="-" if rh else "--",
                            label=f"hidden rate {rh:g}")
        axes[i, 0].set_ylabel("misclassified (%)")
        axes[i, H].set_title(f"input rate {ri:g}: test minus training\ncross-entropy (nats)",
                             fontsize=9)
        axes[i, H].grid(alpha=0.3)
        if i:
            axes[i, H].sharey(axes[0, H])  # one scale for every input rate
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    axes[0, 0].legend(fontsize=8, loc="upper right")
    axes[0, H].legend(fontsize=7)
    fig.suptitle(f"Training and test error over the epochs (evaluated without dropout every "
                 f"{config.eval_every} epochs), {config.n_train} training digits, MLP "
                 f"{'-'.join(map(str, (64, *config.hidden, 10)))} ({config.activation}); "
                 f"mean over {S} seeds, band: range.\nRows: input drop rate; columns: hidden "
                 f"drop rate; last column: the gap in cross-entropy (dashed: no hidden "
                 f"dropout)", fontsize=10)
    savefig(fig, path)


def _plot_rate(final, best_test, input_rates, hidden_rates, chosen, config, path):
    I, H, S = final["test_error"].shape
    x = np.asarray(hidden_rates)
    fig, (ax_e, ax_x) = plt.subplots(1, 2, figsize=(12.5, 4.8), layout="constrained")
    for i, ri in enumerate(input_rates):
        color = f"C{i}"
        test = 100 * final["test_error"][i]
        mean = test.mean(-1)
        ax_e.errorbar(x, mean, yerr=[mean - test.min(-1), test.max(-1) - mean], fmt="o-",
                      color=color, capsize=4, lw=1.6,
                      label=f"input rate {ri:g}: test (final), bars: range over {S} seeds")
        ax_e.plot(x, 100 * best_test[i].mean(-1), "v:", color=color, ms=4, lw=1,
                  label=f"input rate {ri:g}: test, lowest over epochs (oracle)")
        ax_e.plot(x, 100 * final["val_error"][i].mean(-1), "x-.", color=color, ms=5, lw=1,
                  label=f"input rate {ri:g}: validation (chooses the rates)")
        ax_e.plot(x, 100 * final["train_error"][i].mean(-1), "s--", color=color, ms=3,
                  lw=1, alpha=0.7, label=f"input rate {ri:g}: training")
        for key, ls in (("train_xent", "--"), ("test_xent", "-")):
            v = final[key][i]
            ax_x.errorbar(x, v.mean(-1), yerr=[v.mean(-1) - v.min(-1), v.max(-1) - v.mean(-1)],
                          fmt="o" + ls, color=color, capsize=3, ms=4, label=f"input rate "
                          f"{ri:g}: {'training' if key == 'train_xent' else 'test'}")
    ax_e.plot(hidden_rates[chosen[1]], 100 * final["test_error"][chosen].mean(), "*",
              color="k", ms=14, zorder=5,
              label=f"chosen on validation (input {input_rates[chosen[0]]:g}, hidden "
                    f"{hidden_rates[chosen[1]]:g})")
    ax_e.set(xlabel="hidden drop rate (probability of zeroing a hidden unit)",
             ylabel="misclassified (%)", title="Error against the drop rate (after the last "
             "epoch)")
    ax_e.set_ylim(bottom=0)
    ax_e.legend(fontsize=7)
    ax_x.set_yscale("log")
    ax_x.set(xlabel="hidden drop rate", ylabel="mean cross-entropy (nats, log scale)",
             title="Cross-entropy against the drop rate (bars: range over seeds)")
    ax_x.legend(fontsize=7)
    for ax in (ax_e, ax_x):
        ax.set_xticks(x)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"Dropout: {I} x {H} pairs of rates x {S} seeds trained as one compiled "
                 f"program ({config.n_train} training digits, {config.epochs} epochs; "
                 f"evaluation without dropout)", fontsize=11)
    savefig(fig, path)
