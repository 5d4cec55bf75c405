"""``fit``: minibatch training with validation, early stopping, checkpoints and resume.

:func:`fit` checks every argument and the data (with :func:`train.data.validate`) before
anything is compiled, puts the data on the device once, compiles ONE program, the tracked
epoch of :func:`train.loop.make_tracked_epoch` (a ``lax.scan`` over minibatches, then
evaluation and early-stopping bookkeeping), and calls it once per epoch from a Python loop
that keeps the history, draws the progress bar and writes checkpoints. :func:`train.sweep`
``vmap``-s the same program over many models.

>>> import jax, numpy as np
>>> from nets import mlp, objective
>>> from train import optim
>>> X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
>>> y = (X[:, 0] > 0).astype(np.int32)
>>> loss = lambda p, X, y: objective.mlp_objective(p, X, y, activation="tanh")
>>> result = fit(loss, mlp.init(jax.random.key(0), (4, 8, 3)), (X, y),
...              optimizer=optim.sgd(0.5), epochs=20, batch_size=8, key=jax.random.key(1),
...              progress=False)
>>> result.stop_reason, len(result.history["loss"])
('epochs', 20)
>>> result.history["loss"][-1] < result.history["loss"][0]
True
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any, Callable, Mapping

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from train import checkpoint as _checkpoint
from train import loop as _loop
from train import optim as _optim

__all__ = ["fit", "FitResult"]


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns."""

    params: Any  # the best-validation params with early stopping (patience), else the final
    history: dict[str, list[float]]  # per epoch: "epoch", "loss", aux, metrics, "val_*"
    best_epoch: int  # 1-based epoch of the lowest monitored value (val_loss, else loss); 0: none
    stop_reason: str  # "epochs" (ran them all), "early_stopping" or "non_finite"
    non_finite_epoch: int | None  # the epoch whose loss turned non-finite, else None
    epochs_run: int  # epochs run, a non-finite one included (== len of each history list)
    best_params: Any  # params after best_epoch (the initial params when best_epoch == 0)
    model_state: Any  # the model state that goes with `params` (None without one)
    state: _loop.TrainState  # the final TrainState (last finite params and model state)


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------


def fit(
    loss_fn: Callable,
    params: Any,
    data: tuple[Any, Any],
    *,
    optimizer: optax.GradientTransformation,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    validation: tuple[Any, Any] | None = None,
    patience: int | None = None,
    metrics: Mapping[str, Callable] | None = None,
    order: str = "random",
    has_aux: bool = False,
    loss_takes_key: bool = False,
    model_state: Any = None,
    hyperparams: Mapping[str, float] | None = None,
    num_classes: int | None = None,
    progress: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: str | os.PathLike | None = None,
    epochs_per_call: int = 1,
) -> FitResult:
    """Trains ``params`` by minibatch steps of ``optimizer`` on ``loss_fn`` over ``data``.

    Args:
      loss_fn: ``loss_fn(params, X, Y) -> scalar`` mean loss of a batch; the keyword and
        return extensions (``key``, ``aux``, ``model_state``) are in :mod:`train.loop`.
      params: any pytree of floating arrays (the MLP's list, a CNN's dict, ...).
      data: ``(X, Y)``: ``X`` of shape ``(n, ...)``, ``Y`` of shape ``(n, ...)`` or ``None``.
      optimizer: any ``optax.GradientTransformation``: :func:`train.sgd` (the note's SGD
        with the quadratic penalty), ``optax.adam(...)``, ...
      epochs: epochs to run in all (a resumed fit continues up to this number), ``>= 1``.
      batch_size: ``1 <= batch_size <= n``; an epoch is ``n // batch_size`` steps (the
        last-batch rule is in :mod:`train.loop`).
      key: a typed PRNG key (``jax.random.key``): the data order and the loss's keys.
      validation: ``(X_val, Y_val)`` shaped like ``data``; its loss is the monitored value.
      patience: stop after this many epochs without a lower validation loss and return the
        best epoch's parameters (needs ``validation``).
      metrics: ``{name: fn(params, X, Y) -> scalar}`` evaluated after every epoch on the
        training set (``name``) and the validation set (``"val_" + name``).
      order: ``"random"`` (a fresh permutation every epoch) or ``"sequential"``.
      has_aux: the loss returns ``(loss, aux_dict)``; aux is averaged over each epoch.
      loss_takes_key: the loss takes ``key=`` (``None`` at evaluation).
      model_state: non-trained state passed to the loss as ``model_state=`` (batch norm).
      hyperparams: ``{name: value}`` set into the optimizer state after ``init``, for an
        optimizer built with ``optax.inject_hyperparams`` (:func:`train.sgd` is), e.g.
        ``{"learning_rate": 0.3}``. Fits with one optimizer object that differ only in
        these values share one compiled program.
      num_classes: if given, ``Y`` must be integer labels in ``[0, num_classes)``.
      progress: a tqdm bar over epochs: ``True``, ``False``, or ``None`` (on in terminals).
      checkpoint: a file to save the whole run to (TrainState, tracker, history) with
        :func:`train.checkpoint.save`, every ``checkpoint_every`` epochs (default 1) and at
        the end.
      checkpoint_every: epochs between checkpoints (needs ``checkpoint``).
      epochs_per_call: epochs run in one compiled call (a ``lax.scan`` over epochs, see
        :func:`train.loop.make_epochs`) before returning to Python for the history, the
        progress bar and checkpoints. Raise it when an epoch is a few steps (full-batch
        gradient descent); results are those of ``1`` up to float rounding. Checkpoints and
        early stopping are checked between calls (a stopped run is frozen inside one).
      resume: a checkpoint written by ``fit`` with the same arguments: the run continues
        from it (its TrainState, optimizer hyperparameters included, its tracker and its
        history; ``params`` and ``key`` given here only fix the structure), and ends with
        exactly the numbers of an uninterrupted run.

    Returns:
      A :class:`FitResult`.

    Raises:
      TypeError, ValueError: a bad argument or data set (checked before any compilation);
        the message names the argument, what was expected and what was given.

    Warns:
      RuntimeWarning: the loss turned non-finite; the fit stopped there and returned the
        last finite parameters.

    Notes:
      fit runs on one device, the default one (:func:`train.sweep` spreads models over
      several). Its compiled program is kept (the 16 most recent) keyed by the identity of
      ``loss_fn``, ``optimizer`` and the metric functions and by the settings, so a fit
      repeated, resumed, or re-run with other ``hyperparams`` or data of the same shapes
      does not compile again; as with ``jax.jit``, a function's closure is read when it is
      first traced.
    """
    # --- every check before anything is compiled ---
    _loop._check_common(loss_fn, optimizer, epochs, patience, metrics, order, validation)
    _loop._check_key(key, "key")
    _loop._check_params(params)
    train_np, val_np = _loop._check_data(data, validation, num_classes)
    n = train_np[0].shape[0]
    _loop._check_batching(n, batch_size, order)
    _loop._check_int(epochs_per_call, "epochs_per_call", 1)
    if checkpoint_every is not None:
        _loop._check_int(checkpoint_every, "checkpoint_every", 1)
        if checkpoint is None:
            raise ValueError("checkpoint_every: expected a checkpoint path to go with it, "
                             "got checkpoint=None")
    if progress not in (None, True, False):
        raise TypeError(f"progress: expected True, False or None, got {progress!r}")
    for name, flag in (("has_aux", has_aux), ("loss_takes_key", loss_takes_key)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected a bool, got {type(flag).__name__} {flag!r}")
    hp = _loop._check_hyperparams(optimizer, params, hyperparams)
    config = {"n": n, "batch_size": batch_size, "order": order,
              "patience": -1 if patience is None else patience,
              "validation": validation is not None}

    train_data, val_data = _loop._to_device(train_np), _loop._to_device(val_np)
    tracked = _compiled_epoch(loss_fn, optimizer, batch_size, order, has_aux, loss_takes_key,
                              tuple((metrics or {}).items()), patience, epochs_per_call)
    state = _loop.init_state(params, optimizer, key=key, model_state=model_state)
    if hp:
        state = state.replace(opt_state=_optim.set_hyperparams(state.opt_state, **hp))
    carry = _loop.Carry(state=state, tracker=_loop.init_tracker(state))
    _loop._check_probe(tracked, carry, train_data, val_data, 1)

    history: dict[str, list[float]] = {}
    if resume is not None:
        carry, history = _restore(resume, carry, config)
    # Committed to one device, fresh and restored carries alike, so both hit one compilation.
    carry, train_data, val_data = jax.device_put((carry, train_data, val_data),
                                                 _default_device())
    done = int(carry.tracker.epoch)

    every = checkpoint_every or 1
    bar = tqdm(total=epochs, initial=min(done, epochs), desc="fit", unit="epoch",
               disable=None if progress is None else not progress, leave=False)
    try:
        while done < epochs and not bool(carry.tracker.stopped):
            before = done
            carry, records = tracked(carry, train_data, val_data, min(epochs_per_call,
                                                                     epochs - done))
            done = int(carry.tracker.epoch)
            records = jax.device_get(records)  # each (epochs_per_call,): rows past `done` unused
            for i in range(done - before):
                history.setdefault("epoch", []).append(before + i + 1)
                for name, values in records.items():
                    history.setdefault(name, []).append(float(values[i]))
            bar.update(done - before)
            bar.set_postfix({k: f"{history[k][-1]:.4g}" for k in ("loss", "val_loss")
                             if k in history})
            if checkpoint is not None and (done // every > before // every or done == epochs
                                           or bool(carry.tracker.stopped)):
                _save(checkpoint, carry, history, config)
    finally:
        bar.close()

    tracker = carry.tracker
    reason = _loop.STOP_REASONS[int(tracker.reason)]
    non_finite_epoch = int(tracker.epoch) if reason == "non_finite" else None
    if non_finite_epoch is not None:
        warnings.warn(
            f"fit: the loss became non-finite in epoch {non_finite_epoch}; stopped and "
            f"returned the last finite parameters (those after epoch {non_finite_epoch - 1}). "
            "Try a smaller learning rate.", RuntimeWarning, stacklevel=2)
    use_best = patience is not None
    result = FitResult(
        params=tracker.best_params if use_best else carry.state.params,
        history=history,
        best_epoch=int(tracker.best_epoch),
        stop_reason=reason,
        non_finite_epoch=non_finite_epoch,
        epochs_run=int(tracker.epoch),
        best_params=tracker.best_params,
        model_state=tracker.best_model_state if use_best else carry.state.model_state,
        state=carry.state,
    )
    return result


def _default_device() -> jax.Device:
    """The device JAX computes on by default (``jax.default_device`` respected)."""
    device = jax.config.jax_default_device
    if isinstance(device, str):
        return jax.devices(device)[0]
    return device if device is not None else jax.devices()[0]


def _build_epoch(loss_fn, optimizer, batch_size, order, has_aux, loss_takes_key, metrics,
                 patience, epochs_per_call):
    return jax.jit(_loop.make_epochs(_loop.make_tracked_epoch(
        loss_fn, optimizer, batch_size=batch_size, order=order, has_aux=has_aux,
        loss_takes_key=loss_takes_key, metrics=dict(metrics), patience=patience),
        epochs_per_call))


# fit calls with the same loss function, optimizer object and settings share one jitted
# program (and so its compilations): re-running a fit, resuming one, or fitting several
# seeds with one optimizer compiles once. Keyed by identity, like jax.jit itself.
_compiled_epoch = _loop.memoize(_build_epoch, maxsize=16)


def _save(path, carry, history, config) -> None:
    _checkpoint.save(path, {
        "carry": carry,
        "history": {k: np.asarray(v, np.float64) for k, v in history.items()},
        "config": dict(config),
    })


def _restore(path, carry, config):
    """Reads a fit checkpoint into the structure of ``carry``; checks the run's settings."""
    raw = _checkpoint.restore(path)
    if not isinstance(raw, dict) or set(raw) != {"carry", "history", "config"}:
        raise ValueError(f"resume: {os.fspath(path)!r} is not a checkpoint written by "
                         "train.fit (expected entries carry, history, config)")
    saved = raw["config"]
    for name, value in config.items():
        got = saved.get(name)
        if isinstance(got, np.generic):
            got = got.item()
        if got != value:
            raise ValueError(
                f"resume: the checkpoint {os.fspath(path)!r} was written with {name}={got!r}, "
                f"this fit has {name}={value!r}; resume with the same settings")
    like = {"carry": carry, "history": raw["history"], "config": saved}
    restored = _checkpoint.restore(path, like=like)
    history = {}
    for name, values in restored["history"].items():
        values = np.asarray(values).tolist()
        history[name] = [int(v) for v in values] if name == "epoch" else values
    return restored["carry"], history
