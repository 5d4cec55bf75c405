"""``fit``: minibatch training with validation, early stopping, checkpoints and resume.

:func:`fit` is a thin layer over :func:`train.runner.run`: it checks the loss-form arguments
and the data before anything is compiled, builds the step (:func:`train.loop.make_step`) and
the evaluation (:func:`train.loop.make_evaluate`) from ``loss_fn``, ``optimizer`` and
``metrics``, and lets the runner train, evaluate in batches, stop early, checkpoint and
resume. :func:`train.sweep` is the same with many models in one ``vmap``-ed program.

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
import inspect
import os
import warnings
import weakref
from typing import Any, Callable, Mapping

import jax
import numpy as np
import optax

from nets import _checks
from nets import layers as _layers
from nets import losses as _losses
from nets import objective as _objective
from nets.model import Model as _Model
from train import data as _data
from train import loop as _loop
from train import optim as _optim
from train import runner as _runner

__all__ = ["fit", "FitResult"]


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      params: the parameters to use: with ``patience`` (early stopping) the best epoch's
        (``best_params``), else those after the last epoch (after a non-finite epoch, the
        last finite ones). A pytree like the ``params`` given.
      history: ``{name: list of floats}``, one entry per epoch run (``epochs_run`` long;
        a resumed fit's from its first epoch): ``"epoch"`` (1, 2, ...); ``"loss"``, the mean
        over the epoch's steps of the training loss (each at the parameters before its
        step), and each aux value of the loss (``has_aux``), averaged alike; each metric
        ``name`` of ``metrics`` on the whole training set after the epoch (evaluation mode);
        with ``validation``, ``"val_loss"``, ``"val_<aux>"`` and ``"val_<metric>"`` after
        the epoch. Epochs that do not evaluate (``eval_every``) hold NaN in the evaluated
        names. Values are float32 (as Python floats), float64 in a float64 run.
      best_epoch: the 1-based epoch of the lowest monitored value (``val_loss`` with
        ``validation``, else ``loss``) by more than ``min_delta``; 0 when no epoch counted
        (the first one turned non-finite): then the initial parameters are the best.
      stop_reason: ``"epochs"`` (ran them all), ``"early_stopping"`` (``patience``
        evaluations without an improvement) or ``"non_finite"`` (an epoch turned NaN or
        infinite; it was undone, and a ``RuntimeWarning`` said so).
      non_finite_epoch: the epoch that turned non-finite, else ``None``.
      epochs_run: the epochs run, a non-finite one included (a resumed fit counts the
        checkpoint's); the length of every history list.
      best_params: the parameters after ``best_epoch`` (the initial ones when it is 0),
        kept with or without ``patience``.
      model_state: the model state that goes with ``params`` (the best epoch's with
        ``patience``); ``None`` without one.
      state: the final :class:`train.TrainState` (``params``, ``opt_state``, ``step``,
        ``model_state``) of the last finite epoch, whatever ``patience``.
    """

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
    min_delta: float = 0.0,
    metrics: Mapping[str, Callable] | None = None,
    eval_batch_size: int | None = None,
    eval_every: int = 1,
    order: str = "random",
    has_aux: bool = False,
    loss_takes_key: bool | None = None,
    model_state: Any = None,
    hyperparams: Mapping[str, float] | None = None,
    num_classes: int | None = None,
    progress: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: str | os.PathLike | None = None,
    epochs_per_call: int = 1,
    mesh: Any = None,
    data_on_devices: bool = False,
) -> FitResult:
    """Trains ``params`` by minibatch steps of ``optimizer`` on ``loss_fn`` over ``data``.

    Args:
      loss_fn: ``loss_fn(params, X, Y) -> scalar`` mean loss of a batch; the keyword and
        return extensions (``key``/``train``, ``aux``, ``model_state``) are in
        :mod:`train.loop`. ``nets.objective.make(model, ...)`` builds one from a model.
      params: any pytree of floating arrays (the MLP's list, a CNN's dict, ...). Float64
        params (under ``jax_enable_x64``) make a float64 run: its history and early
        stopping are float64 too (:mod:`train.runner`).
      data: ``(X, Y)``: ``X`` of shape ``(n, ...)`` (or a pytree of such arrays), ``Y``
        likewise or ``None``.
      optimizer: any ``optax.GradientTransformation``: :func:`train.sgd` (the note's SGD
        with the quadratic penalty), ``optax.adam(...)``, ...
      epochs: epochs to run in all (a resumed fit continues up to this number), ``>= 1``.
      batch_size: ``1 <= batch_size <= n``; an epoch is ``n // batch_size`` steps (the
        last-batch rule is in :mod:`train.loop`).
      key: a typed PRNG key (``jax.random.key``): the data order and the loss's keys.
      validation: ``(X_val, Y_val)`` shaped like ``data``; its loss is the monitored value.
      patience: stop after this many evaluations without a validation loss lower than the
        best by more than ``min_delta``, and return the best epoch's parameters (needs
        ``validation``).
      min_delta: the smallest decrease of the validation loss that counts as an improvement.
      metrics: ``{name: fn(params, X, Y) -> batch mean}`` evaluated on the training set
        (``name``) and the validation set (``"val_" + name``), e.g.
        ``{"error": model.metric(nets.metrics.error_rate)}``.
      eval_batch_size: examples per evaluation batch (default up to 1024); the sets are
        evaluated in batches, exactly (see :mod:`train.runner`).
      eval_every: evaluate every this many epochs (and after the last); NaN in between.
      order: ``"random"`` (a fresh permutation every epoch) or ``"sequential"``.
      has_aux: the loss returns ``(loss, aux_dict)``; aux is averaged over each epoch.
      loss_takes_key: the loss takes ``key=`` and ``train=``; default: the loss's own
        ``takes_key`` attribute (set by :func:`nets.objective.make`), else ``False``.
      model_state: non-trained state passed to the loss as ``model_state=`` (batch norm).
      hyperparams: ``{name: value}`` set into the optimizer state after ``init``, for an
        optimizer built with ``optax.inject_hyperparams`` (:func:`train.sgd` is), e.g.
        ``{"learning_rate": 0.3}``. Fits with one optimizer object that differ only in
        these values share one compiled program. A hyperparameter the optimizer computes
        from a schedule is refused (the schedule would overwrite it at every step).
      num_classes: if given, ``Y`` must be integer labels in ``[0, num_classes)``.
      progress: a tqdm bar over epochs: ``True``, ``False``, or ``None`` (on in terminals).
      checkpoint: a file to save the whole run to (state, key, tracker, history and the
        run's settings), atomically, every ``checkpoint_every`` epochs (default 1) and at
        the end; on a mesh, an Orbax checkpoint folder written by every process (see
        :func:`train.run`). A fit resumes from either on any number of devices.
      checkpoint_every: epochs between checkpoints (needs ``checkpoint``); with
        ``epochs_per_call > 1`` a checkpoint is written after the call that reaches or passes
        a multiple (every 3 with calls of 2 epochs: after epochs 4, 6, ...).
      resume: a checkpoint written by ``fit`` with the same settings, functions and data:
        the run continues from it and ends with exactly the numbers of an uninterrupted run.
        A checkpoint of a different configuration is refused: batch size, metrics,
        patience, ..., another optimizer (another state structure), other injected
        hyperparameters (``train.sgd(0.5)`` or ``hyperparams=``; the message names them),
        or an optimizer with other hyperparameters (``optax.adam(5e-2)`` for
        ``optax.adam(1e-2)``, another schedule: their :func:`train.optim.fingerprint`
        differ; the message cannot say which). The functions and the data are yours to keep
        the same. The checkpoint's state and key replace ``params``, ``model_state`` and
        ``key``: a resume given other initial parameters or another key continues the
        checkpoint's run as it was (they are not compared). To go on with other settings,
        start a new run from its parameters
        (``train.checkpoint.restore_params(path, like=params)``). A missing checkpoint (nor
        its ``.prev``) is a ``FileNotFoundError`` before anything is compiled; to resume
        only when one exists, pass ``resume=path if os.path.exists(path) else None``.
        ``epochs`` may extend a finished run; with ``eval_every > 1`` the extended run
        keeps the evaluation the shorter one made at its last epoch (its history shows it,
        and ``patience`` counts it). A checkpoint written before fingerprints were stored
        resumes without that comparison; one written under another optax version whose
        transformations capture other settings is refused as another optimizer.
      epochs_per_call: epochs run in one compiled call (a ``lax.scan`` over epochs) before
        returning to Python for the history, the progress bar and checkpoints. Raise it when
        an epoch is a few steps (full-batch gradient descent); results are those of ``1`` up
        to float rounding.
      mesh: train data parallel: a number of devices (``mesh=4``, ``mesh=jax.device_count()``
        across processes) or a ``jax.sharding.Mesh`` with an axis ``"data"``; each batch
        is split over ``"data"``, the parameters and optimizer state are replicated, and
        the fit ends where the one-device fit ends (same batches, same order) up to float
        rounding. ``batch_size`` must be a multiple of the data axis. Default: one device.
        See :mod:`train.distributed` (several processes) and :func:`train.run`.
      data_on_devices: with ``mesh`` (refused without it) in one process: the data set
        copied to every device and each epoch one compiled program (no host round trip per
        step; faster for small models, e.g. a CPU's cores as devices by
        ``jax_num_cpu_devices``); default: each batch fed from the host. See :func:`train.run`.

    Returns:
      A :class:`FitResult`.

    Raises:
      TypeError, ValueError: a bad argument or data set (checked before any compilation);
        the message names the argument, what was expected and what was given.

    Warns:
      RuntimeWarning: the run turned non-finite; the fit stopped there and returned the
        last finite parameters.
    """
    loss_takes_key = _resolve_takes_key(loss_fn, loss_takes_key)
    _check_loss_args(loss_fn, optimizer, metrics, has_aux, validation, patience,
                     loss_takes_key, model_state is not None)
    _checks.check_key(key, "key")
    _checks.check_float_tree(params)
    _check_model_shapes(loss_fn, data, validation)
    train_np, val_np = _loop._check_data(data, validation, num_classes)
    hp = _loop._check_hyperparams(optimizer, params, hyperparams)
    _runner.check_settings(
        epochs=epochs, eval_every=eval_every, epochs_per_call=epochs_per_call, models=None,
        key=key, patience=patience, min_delta=min_delta, progress=progress,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, order=order,
        eval_batch_size=eval_batch_size, n=_rows(train_np), batch_size=batch_size, mesh=mesh,
        data_on_devices=data_on_devices, resume=resume)
    _runner._check_state(params, None, what="state.params")

    def make_state(params, model_state, hp):
        state = _loop.init_state(params, optimizer, model_state=model_state)
        if hp:
            state = state.replace(opt_state=_optim.set_hyperparams(state.opt_state, **hp))
        return state

    names = tuple((metrics or {}).keys())
    result = _runner.run(
        None, _loop.eval_shape_cached(make_state, ("fit", optimizer), params, model_state, hp),
        tuple(train_np), epochs=epochs,
        # optimizer.init runs eager ops: only after the labels are checked
        make_state=lambda: make_state(params, model_state, hp), key=key, batch_size=batch_size,
        validation=None if val_np is None else tuple(val_np), eval_batch_size=eval_batch_size,
        eval_every=eval_every, patience=patience, min_delta=min_delta, order=order,
        progress=progress, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
        resume=resume, epochs_per_call=epochs_per_call, desc="fit", mesh=mesh,
        data_on_devices=data_on_devices,
        probe=lambda trace: _check_labels(trace, loss_fn, params, train_np, val_np),
        factory=(_factory, (loss_fn, *(metrics or {}).values()),
                 (optimizer, has_aux, loss_takes_key, names)),
        config={"metrics": ",".join(names), "has_aux": has_aux,
                "loss_takes_key": loss_takes_key,
                # compared on resume (after the injected hyperparameters); only a checkpointed
                # or resumed fit needs it
                **({"optimizer": _optim.fingerprint(optimizer)}
                   if checkpoint is not None or resume is not None else {})})
    if result.non_finite_epoch is not None:
        e = result.non_finite_epoch
        hint = _target_hint(train_np[1])
        warnings.warn(
            f"fit: the run became non-finite in epoch {e} (a NaN or infinity in the loss, the "
            f"monitored value or the new state); stopped and returned the last finite "
            f"parameters (those after epoch {e - 1}). "
            + (hint if hint else "Try a smaller learning rate."), RuntimeWarning, stacklevel=2)
    elif result.stop_reason == "epochs":  # early stopping returned the best epoch's instead
        _warn_if_diverged(result.history, "fit")
    best_params, best_ms = result.best
    use_best = patience is not None
    return FitResult(
        params=best_params if use_best else result.state.params,
        history=result.history,
        best_epoch=result.best_epoch,
        stop_reason=result.stop_reason,
        non_finite_epoch=result.non_finite_epoch,
        epochs_run=result.epochs_run,
        best_params=best_params,
        model_state=best_ms if use_best else result.state.model_state,
        state=result.state,
    )


def _factory(loss_fn, *rest):
    """``(step, evaluate, train_evaluate, best_of)`` of the loss form, for the runner."""
    *metric_fns, optimizer, has_aux, loss_takes_key, names = rest
    metrics = dict(zip(names, metric_fns))
    step = _loop.make_step(loss_fn, optimizer, has_aux=has_aux, loss_takes_key=loss_takes_key,
                           jit=False)
    evaluate = _loop.make_evaluate(loss_fn, metrics=metrics, has_aux=has_aux,
                                   loss_takes_key=loss_takes_key, jit=False)
    train_evaluate = _loop.make_evaluate(loss_fn, metrics=metrics, include_loss=False,
                                         jit=False) if metrics else None
    return step, evaluate, train_evaluate, _params_and_model_state


def _params_and_model_state(state):
    return state.params, state.model_state


def _resolve_takes_key(loss_fn, loss_takes_key):
    if loss_takes_key is None:
        loss_takes_key = bool(getattr(loss_fn, "takes_key", False))
    if not isinstance(loss_takes_key, bool):
        raise TypeError(f"loss_takes_key: expected a bool, got {type(loss_takes_key).__name__} "
                        f"{loss_takes_key!r}")
    return loss_takes_key


def _check_loss_args(loss_fn, optimizer, metrics, has_aux, validation, patience,
                     loss_takes_key: bool, stateful: bool) -> None:
    _loop._check_common(loss_fn, optimizer, 1, patience, metrics, "random", validation)
    if not isinstance(has_aux, bool):
        raise TypeError(f"has_aux: expected a bool, got {type(has_aux).__name__} {has_aux!r}")
    _check_loss_signature(loss_fn, loss_takes_key, stateful)


def _check_loss_signature(loss_fn, loss_takes_key: bool, stateful: bool) -> None:
    """The loss's signature against the call the loop makes (:mod:`train.loop`'s contract):
    ``loss_fn(params, X, Y)``, with ``key=`` and ``train=`` when ``loss_takes_key``, with
    ``model_state=`` and ``train=`` with a model state. A loss whose signature cannot be read
    (some builtins and C callables) is called as it is, and so is a wrapper whose own
    signature takes the call where the function it wraps (``functools.wraps``) does not."""
    keywords = (["key"] if loss_takes_key else []) + (["model_state"] if stateful else []) + (
        ["train"] if loss_takes_key or stateful else [])
    problem = signature = None
    for follow_wrapped in (True, False):
        try:
            seen = inspect.signature(loss_fn, follow_wrapped=follow_wrapped)
        except (TypeError, ValueError):
            return
        try:
            seen.bind(None, None, None, **dict.fromkeys(keywords))
            return
        except TypeError as err:
            if signature is None:
                signature, problem = seen, str(err)
    parameters = signature.parameters
    any_keyword = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    required = {name for name, p in parameters.items()
                if p.default is p.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    call = "loss_fn(params, X, Y" + "".join(f", {k}=..." for k in keywords) + ")"
    why = f"loss_takes_key={loss_takes_key}" + (", and a model_state" if stateful else "")
    if not loss_takes_key and "key" in required:
        hint = ("; it needs key=: pass loss_takes_key=True (it is then called with key= and "
                "train=, True in a training step and False at evaluation)")
    elif loss_takes_key and "key" not in parameters and not any_keyword:
        hint = "; it takes no key=: pass loss_takes_key=False"
    elif "train" in keywords and "train" not in parameters and not any_keyword:
        hint = ("; it must accept train= as well (True in a training step, False at "
                f"evaluation), e.g. def loss(params, X, Y, *, {', '.join(keywords)})")
    else:
        hint = ""
    name = getattr(loss_fn, "__qualname__", None) or getattr(loss_fn, "__name__", None) \
        or type(loss_fn).__name__
    raise TypeError(f"loss_fn: expected a function that can be called as {call} ({why}), "
                    f"got {name}{signature}, which cannot ({problem}){hint}")


# What the losses of a loss function were traced with, per loss function (held weakly) and
# shapes: the numbers of classes of its cross-entropies, whether it has a binary
# cross-entropy, and the vocabulary sizes of its embeddings. JAX reuses a program's trace (and
# so does the runner), so a second fit of the same loss records nothing and reads what the
# first one recorded.
_LABEL_CLASSES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _check_labels(trace, loss_fn, params, train_np, val_np) -> None:
    """Concrete data against what the loss was traced with, before compiling: runs the
    runner's one trace inside the recorders of :mod:`nets.losses` and :mod:`nets.layers`,
    which learn the number of classes ``M`` of every cross-entropy traced on integer labels,
    whether a binary cross-entropy was traced, and the vocabulary size of every embedding
    traced on token ids. Then every integer leaf of ``Y`` (and ``Y_val``) is checked against
    ``[0, M)`` (:func:`nets._checks.check_labels`; a leaf with two or more axes, ``(n, T)``,
    holds per-position labels, where ``nets.losses.IGNORE``, -1, is allowed), every leaf of
    ``Y`` of a binary cross-entropy against ``[0, 1]``, and every integer leaf of ``X`` (and
    ``X_val``) against ``[0, V)`` for the largest vocabulary ``V``."""
    with _losses.record_label_ranges() as seen, \
            _losses.record_binary_targets() as binary, \
            _layers.record_token_ranges() as vocab:
        trace()
    signature = _loop.signature((params, train_np))
    try:
        per_shape = _LABEL_CLASSES.setdefault(loss_fn, {})
    except TypeError:  # not weakly referenceable: no memory across fits
        per_shape = {}
    if seen or binary or vocab:
        per_shape[signature] = (tuple(sorted(set(seen))), bool(binary), max(vocab, default=0))
    classes, is_binary, vocab_size = per_shape.get(signature, ((), False, 0))
    model_vocab, pad_ids = _model_facts(loss_fn, train_np[0])
    vocab_size = max(vocab_size, model_vocab)
    sets = (("", train_np), ("_val", val_np))
    for suffix, pair in sets:
        if pair is None:
            continue
        for path, leaf in jax.tree_util.tree_leaves_with_path(pair[1]):
            name = "Y" + suffix + jax.tree_util.keystr(path)
            leaf = np.asarray(leaf)
            if leaf.dtype.kind in "iu":
                for M in classes:
                    ignore = _losses.IGNORE if leaf.ndim >= 2 else None
                    _checks.check_labels(leaf, M, name, ignore=ignore)
            if is_binary and leaf.dtype.kind in "iuf" and leaf.size and (
                    leaf.min() < 0 or leaf.max() > 1):
                raise ValueError(
                    f"{name}: expected binary targets in [0, 1] for binary_cross_entropy, got "
                    f"values in [{leaf.min()}, {leaf.max()}]"
                    + ("; labels -1/+1? pass (Y + 1) // 2" if leaf.min() == -1 else ""))
        if vocab_size:
            for path, leaf in jax.tree_util.tree_leaves_with_path(pair[0]):
                leaf = np.asarray(leaf)
                if leaf.dtype.kind in "iu":
                    _objective.check_token_ids(
                        leaf, vocab_size, f"X{suffix}{jax.tree_util.keystr(path)}")
        for pad_id in pad_ids:  # a model built with pad_id: right padding, -1 labels there
            _objective.check_right_padding(pair[0], pad_id, f"X{suffix}")
            if isinstance(pair[1], np.ndarray) and pair[1].dtype.kind in "iu":
                _objective.check_padding_labels(pair[0], pair[1], pad_id, f"X{suffix}",
                                                f"Y{suffix}")


def _model_facts(loss_fn, X) -> tuple[int, tuple[int, ...]]:
    """The largest vocabulary of the embeddings of ``loss_fn.model`` (a
    :class:`nets.Model`, as :func:`nets.objective.make` builds) on integer inputs ``X``
    and the pad ids of its padded layers (:func:`nets.objective.model_facts`); ``(0, ())``
    otherwise."""
    model = getattr(loss_fn, "model", None)
    if not isinstance(model, _Model) or not isinstance(X, np.ndarray) \
            or X.dtype.kind not in "iu" or X.shape[1:] != tuple(model.input_shape):
        return 0, ()
    return _objective.model_facts(model, X.dtype)


def _check_model_shapes(loss_fn, data, validation) -> None:
    """The data as passed against the model of an objective of a :class:`nets.Model`
    (:meth:`nets.objective.Objective.check_shapes`): ``X`` ``(n, *input_shape)`` and ``Y``
    a target of the model's output, by name, before anything is batched or traced. Other
    losses are left to the checks of :mod:`train.loop` and to tracing."""
    check = getattr(loss_fn, "check_shapes", None)
    if not isinstance(getattr(loss_fn, "model", None), _Model) or not callable(check):
        return
    for pair, suffix in ((data, ""), (validation, "_val")):
        if isinstance(pair, (tuple, list)) and len(pair) == 2:
            check(pair[0], pair[1], "X" + suffix, "Y" + suffix)
    _warn_if_raw_pixels(loss_fn.model, data)


def _warn_if_raw_pixels(model, data) -> None:
    """A warning for uint8 inputs above 1 into a model without an embedding: raw pixels
    read as numbers (losses in the hundreds, and nothing said why)."""
    X = data[0] if isinstance(data, (tuple, list)) and data else None
    if isinstance(X, np.ndarray) and X.dtype == np.uint8 and X.size and X.max() > 1 \
            and X.shape[1:] == tuple(model.input_shape) \
            and not _objective.embedding_vocab(model, X.dtype):
        warnings.warn(f"fit: X is uint8 with values up to {X.max()}, read by the model as "
                      f"numbers (it has no embedding): raw pixels? scale them, "
                      f"X.astype(np.float32) / 255", UserWarning, stacklevel=4)


def _diverged(loss) -> str | None:
    """Why a finite training-loss curve (one value per epoch) looks diverged, or None: it
    ended above its first value and more than 1.5 times its lowest (an unstable step size
    or momentum; noise and overfitting do not raise the TRAINING loss that much)."""
    loss = np.asarray(loss, dtype=np.float64)
    if loss.size < 2 or not np.isfinite(loss).all():
        return None
    low = int(np.argmin(loss))
    if loss[-1] > loss[0] and loss[-1] > 1.5 * loss[low]:
        return (f"the training loss rose from {loss[low]:.4g} (epoch {low + 1}) to "
                f"{loss[-1]:.4g} (epoch {loss.size}), above its first value {loss[0]:.4g}")
    return None


def _warn_if_diverged(history, who: str, models: int | None = None, ran_out=None) -> None:
    """A RuntimeWarning for runs whose training loss diverged but stayed finite (with
    ``models``: those of ``ran_out``, the models that ran all their epochs)."""
    if "loss" not in history:
        return
    curves = [history["loss"]] if models is None else list(np.asarray(history["loss"]))
    why = [(i, w) for i, w in enumerate(map(_diverged, curves))
           if w and (ran_out is None or i in ran_out)]
    if not why:
        return
    head = (f"{who}: " if models is None else
            f"{who}: {len(why)} of {models} models diverged (models "
            f"{[i for i, _ in why][:10]}{' ...' if len(why) > 10 else ''}); model {why[0][0]}: ")
    warnings.warn(head + why[0][1] + ". The run diverged without becoming non-finite; try a "
                  "smaller learning rate (or less momentum).", RuntimeWarning, stacklevel=3)


def _rows(train_np) -> int:
    return int(np.shape(jax.tree.leaves(train_np[0])[0])[0])


def _target_hint(Y) -> str | None:
    """:func:`train.data.target_scale_hint` for real-valued array targets, else None."""
    if Y is None or not hasattr(Y, "dtype") or Y.dtype.kind != "f":
        return None
    return _data.target_scale_hint(Y)
