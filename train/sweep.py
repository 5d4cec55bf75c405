"""Many models trained as ONE compiled program: ``vmap`` over seeds and hyperparameters.

:func:`sweep` stacks the models along a leading *model axis* and ``jax.vmap``-s the
epoch of :func:`train.runner.make_epoch` (steps, evaluation, early stopping), the very epoch
:func:`train.fit` runs for one model, over it (``train.run(models=...)``). Seeds (initial
parameters, data-order keys) and continuous hyperparameters
(``learning_rate``, ``l2``, ... injected into the optimizer state by
``optax.inject_hyperparams``, see :func:`train.optim.set_hyperparams`) are arrays with that
axis, so one compilation serves the whole grid, and each model ends where :func:`train.fit`
would have taken it alone (up to float32 rounding: batched and unbatched matrix products
may sum in different orders). Early stopping runs per model inside the ``vmap``: best
parameters are kept with ``jnp.where`` and a stopped model is frozen while the others train.

Models that share a key share their data order (the usual design: one key per seed, the
same for every hyperparameter value, ``keys = seed_keys[np.arange(models) % seeds]``).
:func:`sweep` then trains each group of such models as one: the order is drawn and each
batch gathered once per group, and the members step in one ``vmap`` that takes the batch
unbatched, so a first layer's products for the whole group are one matrix product of the
batch by the stacked weights (``train.run(group_size=...)``; the models are placed group by
group and the results put back in the caller's order). It applies when every group has the
same size; the results are the per-model program's up to float rounding (equal to 1e-15 in
float64).

On a CPU the models run a few at a time: chunks of up to 8 models (or one group of shared
keys), one chunk after the other by ``lax.map`` on each device (XLA:CPU runs a sweep's many
small operations faster when their data stay in the cache from one operation to the next,
and a group's products with one batch axis rather than two); on an accelerator all at
once. W3 of the benchmark (64 models): 1.50 s with every model at once, 1.08-1.20 s in
chunks of 8, 0.95-1.09 s as 8 groups of 8 (keys per seed), on one device in probes.

On several devices (GPUs, or CPU cores exposed as devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``) the model axis is split across them:
a ``Mesh`` from ``jax.make_mesh`` with axis name ``"models"`` and ``NamedSharding(mesh,
P("models"))`` on every stacked array, the data replicated. It uses as many devices as give
the fewest models per device with the least padding (2 models on 8 devices use 2 devices,
9 use 5 with two slots each); padding slots are copies of the last model, trained and then
dropped from the result.

Structural choices (hidden units, activation, depth) change the program, not just its
inputs: :func:`sweep_structural` loops over them, one compiled program each, and logs
``compiling program i of k``.

Four models (two learning rates times two penalties), each with its own initial parameters
(stacked here from one ``init`` per key; ``jax.vmap(lambda k: mlp.init(k, sizes))(keys)``
builds the same stack in one compiled call) and its own data order:

>>> import jax, jax.numpy as jnp, numpy as np
>>> from nets import mlp, objective
>>> from train import optim
>>> X = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
>>> y = (X[:, 0] > 0).astype(np.int32)
>>> loss = lambda p, X, y: objective.mlp_objective(p, X, y, activation="tanh")
>>> hp = grid(learning_rate=[0.1, 0.5], l2=[0.0, 1e-3])  # 4 models
>>> init_key, key = jax.random.split(jax.random.key(0))
>>> inits = [mlp.init(k, (4, 8, 3)) for k in jax.random.split(init_key, 4)]
>>> params = jax.tree.map(lambda *leaves: jnp.stack(leaves), *inits)
>>> result = sweep(loss, params, (X, y), optimizer=optim.sgd(0.1),
...                keys=jax.random.split(key, 4), hyperparams=hp, epochs=5, batch_size=8,
...                progress=False)
>>> result.history["loss"].shape, result.params[0]["W"].shape, result.compilations
((4, 5), (4, 8, 4), 1)
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
import optax
from jax.sharding import Mesh

import warnings

from nets import _checks
from train.fit import (_check_labels, _check_loss_args, _factory, _warn_if_diverged,
                       _resolve_takes_key, _rows, _target_hint)
from train import distributed as _dist
from train import loop as _loop
from train import optim as _optim
from train import runner as _runner

__all__ = ["sweep", "sweep_structural", "grid", "SweepResult"]

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What :func:`sweep` returns; every array has a leading axis of ``models``, in the
    order of ``keys`` and ``params``.

    Attributes:
      params: the stacked parameters to use, every leaf ``(models, ...)``: with ``patience``
        each model's best epoch's (``best_params``), else those after its last epoch.
      history: ``{name: (models, E) array}``, :class:`train.FitResult`'s names without
        ``"epoch"`` (column ``j`` is epoch ``j + 1``); ``E <= epochs``, the most epochs any
        model ran (the loop ends once every model has stopped); NaN where a model had
        stopped or an epoch did not evaluate.
      best_epoch: ``(models,)`` ints: each model's 1-based epoch of its lowest monitored
        value (``val_loss`` with ``validation``, else ``loss``); 0 when none counted.
      stop_reason: a list, per model: ``"epochs"``, ``"early_stopping"`` or
        ``"non_finite"`` (as :class:`train.FitResult`).
      epochs_run: ``(models,)`` ints: the epochs each model ran (a non-finite one included).
      hyperparams: ``{name: (models,) array}``: every injected hyperparameter of each
        model's optimizer (those set by ``hyperparams=`` and the others).
      best_params: the stacked parameters after each model's ``best_epoch``.
      model_state: the stacked model state that goes with ``params`` (``None`` without one).
      state: the stacked final :class:`train.TrainState` (sharded over ``"models"`` on a
        mesh).
      mesh: the device mesh the models were spread over (``None``: one device).
      compilations: the programs this call traced and compiled: 1, or 0 when an earlier
        sweep with the same loss, optimizer object and settings had.
      group_size: the models per group of equal keys stepped as one (1: no groups).
    """

    params: Any  # stacked (models, ...): best-validation params with patience, else final
    history: dict[str, np.ndarray]  # name -> (models, E): fit's names without "epoch" (the
    # column index is the epoch - 1); NaN once a model stopped
    best_epoch: np.ndarray  # (models,) int: 1-based epoch of the lowest monitored value
    stop_reason: list[str]  # per model: "epochs", "early_stopping" or "non_finite"
    epochs_run: np.ndarray  # (models,) int: epochs each model ran (a non-finite one included)
    hyperparams: dict[str, np.ndarray]  # (models,) injected hyperparameters of each model
    best_params: Any  # stacked params after each model's best epoch
    model_state: Any  # stacked model state going with `params` (None without one)
    state: _loop.TrainState  # stacked final TrainState (sharded over "models" on a mesh)
    mesh: Mesh | None  # the device mesh the model axis was spread over (None: one device)
    compilations: int  # programs this call traced and compiled: 1, or 0 when an earlier
    #                    sweep with the same loss, optimizer object and settings did
    group_size: int = 1  # models per group of equal keys stepped as one (1: no groups)


def grid(**axes: Sequence[float]) -> dict[str, np.ndarray]:
    """The Cartesian product of hyperparameter values, flattened to one model axis.

    The first argument varies slowest. Pass the result as ``sweep(..., hyperparams=...)``.

    >>> {k: v.tolist() for k, v in grid(l2=[0.0, 0.1], learning_rate=[1.0, 2.0]).items()}
    {'l2': [0.0, 0.0, 0.1, 0.1], 'learning_rate': [1.0, 2.0, 1.0, 2.0]}
    """
    if not axes:
        raise ValueError("grid: expected at least one hyperparameter, got none")
    names = list(axes)
    values = [np.asarray(axes[k], dtype=float).ravel() for k in names]
    for name, v in zip(names, values):
        if v.size == 0:
            raise ValueError(f"grid: expected at least one value for {name!r}, got none")
    mesh = np.meshgrid(*values, indexing="ij")
    return {k: m.ravel() for k, m in zip(names, mesh)}


def _key_groups(keys) -> tuple[int, np.ndarray | None]:
    """``(size, order)``: models with equal keys form groups of ``size`` (1 when every key
    differs, or the groups differ in size); ``order`` lists the models group by group, in the
    order of each group's first model (``None`` when they already are)."""
    models = keys.shape[0]
    if not getattr(keys, "is_fully_addressable", True):  # spread over processes: not read
        return 1, None
    data = np.asarray(jax.random.key_data(keys)).reshape(models, -1)
    _, inverse, counts = np.unique(data, axis=0, return_inverse=True, return_counts=True)
    if len(counts) == models or (counts != counts[0]).any():
        return 1, None
    first = np.full(len(counts), models)  # each group's first model
    np.minimum.at(first, inverse.ravel(), np.arange(models))
    order = np.argsort(first[inverse.ravel()], kind="stable")
    return int(counts[0]), None if (order == np.arange(models)).all() else order


def _reorder(tree, order):
    """Every leaf's model axis taken in ``order`` (``None``: unchanged): the JAX arrays in
    one compiled call (an eager gather per leaf cost about 1 ms each), NumPy's on the host."""
    if order is None:
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    on_device = [i for i, a in enumerate(leaves) if isinstance(a, jax.Array)]
    taken = _take_models([leaves[i] for i in on_device], np.asarray(order, np.int32))
    leaves = [a if isinstance(a, jax.Array) else np.asarray(a)[order] for a in leaves]
    for i, a in zip(on_device, taken):
        leaves[i] = a
    return jax.tree.unflatten(treedef, leaves)


@jax.jit
def _take_models(arrays, order):
    return [a[order] for a in arrays]


def _leading(tree) -> set[int]:
    return {np.shape(leaf)[0] if np.ndim(leaf) else -1 for leaf in jax.tree.leaves(tree)}


def sweep(
    loss_fn: Callable,
    params: Any,
    data: tuple[Any, Any],
    *,
    optimizer: optax.GradientTransformation,
    keys: jax.Array,
    epochs: int,
    batch_size: int,
    hyperparams: Mapping[str, Any] | None = None,
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
    num_classes: int | None = None,
    progress: bool | None = None,
    devices: Sequence[jax.Device] | None = None,
    epochs_per_call: int = 1,
    mesh: Any = None,
) -> SweepResult:
    """Trains ``models`` models at once, all on the same data, with one compiled program.

    Model ``i`` is trained as ``train.fit(loss_fn, params_i, data, optimizer=optimizer_i,
    key=keys[i], model_state=model_state_i, ...)`` with the same remaining arguments would
    train it, where ``params_i`` is row ``i`` of every leaf of ``params`` and
    ``optimizer_i`` is ``optimizer`` with the injected hyperparameters set to
    ``hyperparams[name][i]``: the same initial parameters, data order, step keys and
    hyperparameters, with results equal up to float rounding, not bitwise (batched and
    unbatched matrix products may sum in different orders; an early-stopping decision that
    hinges on the last bits may then differ). On the digits MLP over 8 epochs (CPU): with
    distinct keys the parameters came out bitwise equal and the histories within 2.4e-7;
    with shared keys (groups, below) the parameters within 4.8e-7 in float32, 1e-15 in
    float64. A model state may differ per model too (a dropout rate kept in it, say), so
    structural-looking choices that are only numbers sweep in one program.

    Models that share a key share their data order and step keys (the usual design: one
    key per seed, the same for every hyperparameter value, ``keys =
    seed_keys[np.arange(models) % seeds]``, or ``seed_keys[g["seed"].astype(int)]`` for a
    ``g = grid(..., seed=[0, 1])``). When every such group has the same size, the sweep
    trains each group as one: the order is drawn and each batch gathered once per group,
    and the members step in one ``vmap`` that takes the batch unbatched, so a first layer's
    products are one matrix product of the batch by the group's stacked weights (faster;
    ``SweepResult.group_size`` reports it). The models are placed group by group and the
    results put back in the caller's order. Groups of unequal sizes, or all keys distinct:
    every model steps on its own.

    Args:
      loss_fn: as in :func:`train.fit` (contract in :mod:`train.loop`).
      params: stacked initial parameters, every leaf of shape ``(models, ...)``, e.g.
        ``jax.vmap(lambda k: mlp.init(k, sizes))(init_keys)``.
      data: ``(X, Y)`` shared by all models.
      optimizer: an optax optimizer; to sweep its hyperparameters it must be built with
        ``optax.inject_hyperparams`` (:func:`train.sgd` is).
      keys: ``(models,)`` typed PRNG keys: each model's data order and loss keys; models
        with equal keys are trained as groups (above), which is faster.
      epochs, batch_size, validation, patience, min_delta, metrics, eval_batch_size,
        eval_every, order, has_aux, loss_takes_key, num_classes, progress, epochs_per_call:
        as in :func:`train.fit`, the same for every model.
      hyperparams: ``{name: values}``, each a scalar or ``(models,)`` array, set into the
        optimizer state (names among :func:`train.optim.get_hyperparams`), e.g.
        ``{"learning_rate": lrs, "l2": lams}`` or :func:`grid`'s output.
      model_state: stacked non-trained state (every leaf ``(models, ...)``) or ``None``.
      devices: the devices to spread the models over; default all of ``jax.devices()``:
        the model axis over as many as give the fewest models per device with the least
        padding, the devices to spare split each batch along ``"data"`` (2 models on 4
        devices: a 2 x 2 mesh, 2 models trained, each on 2 devices).
      mesh: instead of ``devices``: a number of devices (the first ones, placed as above) or
        a ``jax.sharding.Mesh`` with the axes ``"models"`` and/or ``"data"``.

    Returns:
      A :class:`SweepResult`. The loop over epochs ends early once every model has stopped,
      so its histories have ``E <= epochs`` columns.
    """
    loss_takes_key = _resolve_takes_key(loss_fn, loss_takes_key)
    _check_loss_args(loss_fn, optimizer, metrics, has_aux, validation, patience,
                     loss_takes_key, model_state is not None)
    _checks.check_key(keys, "keys", tuple(getattr(keys, "shape", ())))  # the type only
    if keys.ndim != 1 or keys.shape[0] < 1:
        raise ValueError(f"keys: expected a 1-D array of keys, one per model (e.g. "
                         f"jax.random.split(key, models)), got shape {keys.shape}")
    models = int(keys.shape[0])
    _checks.check_float_tree(params)
    leading = _leading(params)
    if len(leading) == 1 and leading != {models} and -1 not in leading:
        (count,) = leading
        raise ValueError(
            f"keys: expected one key per model of params, got {models} keys, and params whose "
            f"every leaf has a leading axis of length {count} ({count} models stacked): the "
            f"keys and the params disagree on the number of models; pass {count} keys "
            f"(jax.random.split(key, {count})) or params stacked for {models} models "
            f"(jax.vmap(init)(init_keys))")
    if leading != {models}:
        raise ValueError(
            f"params: expected every leaf to have a leading model axis of length {models} "
            f"(one row per key), got leading sizes {sorted(_leading(params))}; stack models "
            "with jax.vmap(init)(init_keys)")
    if model_state is not None and _leading(model_state) - {models}:
        raise ValueError(f"model_state: expected every leaf to have a leading model axis of "
                         f"length {models}, got leading sizes {sorted(_leading(model_state))}")
    train_np, val_np = _loop._check_data(data, validation, num_classes)
    one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], a.dtype), params)
    hp = _loop._check_hyperparams(optimizer, one, hyperparams, models)
    _runner.check_settings(
        epochs=epochs, eval_every=eval_every, epochs_per_call=epochs_per_call, models=models,
        key=keys, patience=patience, min_delta=min_delta, progress=progress, checkpoint=None,
        checkpoint_every=None, order=order, eval_batch_size=eval_batch_size,
        n=_rows(train_np), batch_size=batch_size)
    _runner._check_state(params, models, what="state.params")
    # Models that share a key share their data order: ONE program step per group (a first
    # layer's products become one matrix product of the shared batch), the models placed
    # group by group here and put back in the caller's order below.
    group_size, placed = _key_groups(keys)
    params, keys, model_state = _reorder((params, keys, model_state), placed)
    hp = {k: v if np.ndim(v) == 0 else _reorder(v, placed) for k, v in hp.items()}

    def make_state(params, model_state, hp):
        state = jax.vmap(lambda p, ms: _loop.init_state(p, optimizer, model_state=ms))(
            params, model_state)
        if hp:
            state = state.replace(opt_state=_optim.set_hyperparams(state.opt_state, **hp))
        return state

    names = tuple((metrics or {}).keys())
    result = _runner.run(
        None, _loop.eval_shape_cached(make_state, ("sweep", optimizer), params, model_state,
                                      hp),
        tuple(train_np), epochs=epochs,
        # optimizer.init runs eager ops: only after the labels are checked
        make_state=lambda: make_state(params, model_state, hp), key=keys, batch_size=batch_size,
        validation=None if val_np is None else tuple(val_np), eval_batch_size=eval_batch_size,
        eval_every=eval_every, patience=patience, min_delta=min_delta, order=order,
        progress=progress, epochs_per_call=epochs_per_call, models=models,
        group_size=group_size, devices=devices,
        mesh=mesh,
        desc=f"sweep ({models} models"
             + (f", {models // group_size} groups of shared keys)" if group_size > 1 else ")"),
        probe=lambda trace: _check_labels(trace, loss_fn, one, train_np, val_np),
        factory=(_factory, (loss_fn, *(metrics or {}).values()),
                 (optimizer, has_aux, loss_takes_key, names)))
    if placed is not None:  # back in the caller's order
        back = np.argsort(placed)
        result = dataclasses.replace(
            result, state=_reorder(result.state, back), best=_reorder(result.best, back),
            history={k: v[back] for k, v in result.history.items()},
            best_epoch=result.best_epoch[back], epochs_run=result.epochs_run[back],
            stop_reason=[result.stop_reason[i] for i in back],
            non_finite_epoch=result.non_finite_epoch[back])
    diverged = [i for i, r in enumerate(result.stop_reason) if r == "non_finite"]
    if diverged:
        hint = _target_hint(train_np[1])
        warnings.warn(
            f"sweep: {len(diverged)} of {models} models became non-finite (models "
            f"{diverged[:10]}{' ...' if len(diverged) > 10 else ''}); each stopped with its last "
            f"finite parameters. " + (hint or "Try smaller learning rates."), RuntimeWarning,
            stacklevel=2)
    _warn_if_diverged(result.history, "sweep", models,
                      {i for i, r in enumerate(result.stop_reason) if r == "epochs"})
    best_params, best_ms = result.best
    use_best = patience is not None
    final = result.state
    return SweepResult(
        params=best_params if use_best else final.params,
        history=result.history,
        best_epoch=result.best_epoch,
        stop_reason=result.stop_reason,
        epochs_run=result.epochs_run,
        hyperparams={k: np.asarray(v) for k, v in _dist.fetch_tree(
            _optim.get_hyperparams(final.opt_state)).items()},
        best_params=best_params,
        model_state=best_ms if use_best else final.model_state,
        state=final,
        mesh=result.mesh,
        compilations=result.compilations,
        group_size=group_size,
    )


def sweep_structural(
    structures: Sequence[Any],
    build: Callable[[Any], tuple[Callable, Any]],
    data: tuple[Any, Any],
    *,
    log: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> list[SweepResult]:
    """A grid over structural choices: one compiled :func:`sweep` per structure.

    Hidden units, depth or the activation change the shapes or the code of the program, so
    they cannot share one compilation. This loops over ``structures``, logs ``compiling
    program i of k: <structure>`` before each, and runs :func:`sweep` (seeds and continuous
    hyperparameters still ``vmap``-ed inside each program).

    Args:
      structures: the structural settings, e.g. ``[(64, 10, 10), (64, 100, 10)]``.
      build: ``build(structure) -> (loss_fn, stacked_params)`` for one structure.
      data: ``(X, Y)`` for every program.
      log: where the progress lines go; default ``logging.getLogger("train.sweep").info``.
      **kwargs: the remaining :func:`sweep` arguments (``optimizer``, ``keys``, ``epochs``,
        ``batch_size``, ``hyperparams``, ...).

    Returns:
      One :class:`SweepResult` per structure, in order.
    """
    structures = list(structures)
    if not structures:
        raise ValueError("structures: expected at least one structure, got none")
    if not callable(build):
        raise TypeError(f"build: expected build(structure) -> (loss_fn, params), got "
                        f"{type(build).__name__}")
    log = _log.info if log is None else log
    results = []
    for i, structure in enumerate(structures, 1):
        log(f"compiling program {i} of {len(structures)}: {structure!r}")
        built = build(structure)
        if not isinstance(built, tuple) or len(built) != 2:
            raise TypeError(f"build: expected it to return (loss_fn, params), got "
                            f"{type(built).__name__} for structure {structure!r}")
        loss_fn, params = built
        results.append(sweep(loss_fn, params, data, **kwargs))
    return results
