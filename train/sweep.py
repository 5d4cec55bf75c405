"""Many models trained as ONE compiled program: ``vmap`` over seeds and hyperparameters.

:func:`sweep` stacks the models along a leading *model axis* and ``jax.vmap``-s the tracked
epoch of :func:`train.loop.make_tracked_epoch`, the very function :func:`train.fit` jits,
over it. Seeds (initial parameters, data-order keys) and continuous hyperparameters
(``learning_rate``, ``l2``, ... injected into the optimizer state by
``optax.inject_hyperparams``, see :func:`train.optim.set_hyperparams`) are arrays with that
axis, so one compilation serves the whole grid, and each model ends where :func:`train.fit`
would have taken it alone (up to float32 rounding: batched and unbatched matrix products
may sum in different orders). Early stopping runs per model inside the ``vmap``: best
parameters are kept with ``jnp.where`` and a stopped model is frozen while the others train.

On several devices (GPUs, or CPU cores exposed as devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``) the model axis is split across them:
a ``Mesh`` over the devices with axis name ``"models"`` and ``NamedSharding(mesh,
P("models"))`` on every stacked array, the data replicated. When the number of models is not
a multiple of the number of devices, the grid is padded with copies of its last model, which
are trained and then dropped from the result.

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
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from train import loop as _loop
from train import optim as _optim

__all__ = ["sweep", "sweep_structural", "grid", "SweepResult"]

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What :func:`sweep` returns; every array has a leading axis of ``models``."""

    params: Any  # stacked (models, ...): best-validation params with patience, else final
    history: dict[str, np.ndarray]  # name -> (models, E): as fit's history; NaN once stopped
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


def _leading(tree) -> set[int]:
    return {np.shape(leaf)[0] if np.ndim(leaf) else -1 for leaf in jax.tree.leaves(tree)}


def _pad(tree, extra: int):
    """Appends ``extra`` copies of the last model along the leading axis."""
    if extra == 0:
        return tree
    return jax.tree.map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)], axis=0), tree)


def _unpad(tree, models: int, padded: bool):
    return jax.tree.map(lambda a: a[:models], tree) if padded else tree


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
    metrics: Mapping[str, Callable] | None = None,
    order: str = "random",
    has_aux: bool = False,
    loss_takes_key: bool = False,
    model_state: Any = None,
    num_classes: int | None = None,
    progress: bool | None = None,
    devices: Sequence[jax.Device] | None = None,
    epochs_per_call: int = 1,
) -> SweepResult:
    """Trains ``models`` models at once, all on the same data, with one compiled program.

    Model ``i`` is trained exactly as ``train.fit(loss_fn, params_i, data,
    optimizer=optimizer_i, key=keys[i], ...)`` with the same remaining arguments, where
    ``params_i`` is row ``i`` of every leaf of ``params`` and ``optimizer_i`` is
    ``optimizer`` with the injected hyperparameters set to ``hyperparams[name][i]``.

    Args:
      loss_fn: as in :func:`train.fit` (contract in :mod:`train.loop`).
      params: stacked initial parameters, every leaf of shape ``(models, ...)``, e.g.
        ``jax.vmap(lambda k: mlp.init(k, sizes))(init_keys)``.
      data: ``(X, Y)`` shared by all models.
      optimizer: an optax optimizer; to sweep its hyperparameters it must be built with
        ``optax.inject_hyperparams`` (:func:`train.sgd` is).
      keys: ``(models,)`` typed PRNG keys: each model's data order and loss keys.
      epochs, batch_size, validation, patience, metrics, order, has_aux, loss_takes_key,
        num_classes, progress: as in :func:`train.fit`, the same for every model.
      hyperparams: ``{name: values}``, each a scalar or ``(models,)`` array, set into the
        optimizer state (names among :func:`train.optim.get_hyperparams`), e.g.
        ``{"learning_rate": lrs, "l2": lams}`` or :func:`grid`'s output.
      model_state: stacked non-trained state (every leaf ``(models, ...)``) or ``None``.
      devices: the devices to spread the models over; default all of ``jax.devices()``.
      epochs_per_call: epochs per compiled call (one ``lax.scan`` over epochs,
        :func:`train.loop.make_epochs`): raise it when an epoch is a few steps, so the run
        does not return to Python after every one. Results equal ``1``'s up to rounding.

    Returns:
      A :class:`SweepResult`. The loop over epochs ends early once every model has stopped,
      so its histories have ``E <= epochs`` columns.
    """
    # --- checks, before anything is compiled ---
    _loop._check_common(loss_fn, optimizer, epochs, patience, metrics, order, validation)
    _loop._check_int(epochs_per_call, "epochs_per_call", 1)
    _loop._check_key(keys, "keys", tuple(getattr(keys, "shape", ())))  # the type only
    if keys.ndim != 1 or keys.shape[0] < 1:
        raise ValueError(f"keys: expected a 1-D array of keys, one per model (e.g. "
                         f"jax.random.split(key, models)), got shape {keys.shape}")
    models = int(keys.shape[0])
    _loop._check_params(params)
    if _leading(params) != {models}:
        raise ValueError(
            f"params: expected every leaf to have a leading model axis of length {models} "
            f"(one row per key), got leading sizes {sorted(_leading(params))}; stack models "
            "with jax.vmap(init)(init_keys)")
    if model_state is not None and _leading(model_state) - {models}:
        raise ValueError(f"model_state: expected every leaf to have a leading model axis of "
                         f"length {models}, got leading sizes {sorted(_leading(model_state))}")
    train_np, val_np = _loop._check_data(data, validation, num_classes)
    n = train_np[0].shape[0]
    _loop._check_batching(n, batch_size, order)
    if progress not in (None, True, False):
        raise TypeError(f"progress: expected True, False or None, got {progress!r}")
    one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], a.dtype), params)
    hp = _loop._check_hyperparams(optimizer, one, hyperparams, models)
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices: expected at least one device, got none")

    # --- the stacked, padded, sharded carry ---
    n_dev = len(devices)
    padded_models = math.ceil(models / n_dev) * n_dev
    extra = padded_models - models
    params, keys, model_state = _pad((params, keys, model_state), extra)
    hp = {k: np.concatenate([v, np.repeat(v[-1:], extra)]) for k, v in hp.items()}

    def init_one(p, k, ms):
        return _loop.init_state(p, optimizer, key=k, model_state=ms)

    state = jax.vmap(init_one)(params, keys, model_state)
    if hp:
        state = state.replace(opt_state=_optim.set_hyperparams(state.opt_state, **hp))
    carry = _loop.Carry(state=state, tracker=jax.vmap(_loop.init_tracker)(state))

    train_data, val_data = _loop._to_device(train_np), _loop._to_device(val_np)
    run, mesh, traces = _program(
        loss_fn, optimizer, batch_size, order, has_aux, loss_takes_key,
        tuple((metrics or {}).items()), patience, tuple(devices), epochs_per_call)
    traced_before = traces[0]
    if mesh is not None:
        stacked, replicated = NamedSharding(mesh, P("models")), NamedSharding(mesh, P())
        carry = jax.device_put(carry, stacked)
        train_data, val_data = jax.device_put((train_data, val_data), replicated)
    else:
        carry = jax.device_put(carry, devices[0])
        train_data, val_data = jax.device_put((train_data, val_data), devices[0])
    _loop._check_probe(run, carry, train_data, val_data, 1)

    # --- the epochs ---
    records: list[dict[str, np.ndarray]] = []
    bar = tqdm(total=epochs, desc=f"sweep ({models} models)", unit="epoch",
               disable=None if progress is None else not progress, leave=False)
    try:
        done = 0
        while done < epochs:
            active = min(epochs_per_call, epochs - done)
            carry, chunk = run(carry, train_data, val_data, active)
            chunk = jax.device_get(chunk)  # each (epochs_per_call, models)
            records.extend({k: v[i] for k, v in chunk.items()} for i in range(active))
            done += active
            stopped = np.asarray(jax.device_get(carry.tracker.stopped))[:models]
            bar.update(active)
            bar.set_postfix(stopped=f"{int(stopped.sum())}/{models}")
            if stopped.all():
                break
    finally:
        bar.close()

    tracker = carry.tracker
    padded = extra > 0
    ran = int(np.max(jax.device_get(tracker.epoch)[:models]))  # epochs after the last stop: NaN
    history = {name: np.stack([r[name] for r in records[:ran]], axis=1)[:models]
               for name in records[0]}
    reasons = np.asarray(jax.device_get(tracker.reason))[:models]
    use_best = patience is not None
    best_params = _unpad(tracker.best_params, models, padded)
    best_ms = _unpad(tracker.best_model_state, models, padded)
    final = _unpad(carry.state, models, padded)
    return SweepResult(
        params=best_params if use_best else final.params,
        history=history,
        best_epoch=np.asarray(jax.device_get(tracker.best_epoch))[:models],
        stop_reason=[_loop.STOP_REASONS[int(r)] for r in reasons],
        epochs_run=np.asarray(jax.device_get(tracker.epoch))[:models],
        hyperparams={k: np.asarray(v)[:models] for k, v in jax.device_get(
            _optim.get_hyperparams(final.opt_state)).items()},
        best_params=best_params,
        model_state=best_ms if use_best else final.model_state,
        state=final,
        mesh=mesh,
        compilations=traces[0] - traced_before,
    )


def _build_program(loss_fn, optimizer, batch_size, order, has_aux, loss_takes_key, metrics,
                   patience, devices, epochs_per_call):
    """The jitted, vmapped tracked epoch, its mesh (None on one device), a trace counter."""
    tracked = _loop.make_tracked_epoch(
        loss_fn, optimizer, batch_size=batch_size, order=order, has_aux=has_aux,
        loss_takes_key=loss_takes_key, metrics=dict(metrics), patience=patience)
    traces = [0]

    epochs = _loop.make_epochs(jax.vmap(tracked, in_axes=(0, None, None)), epochs_per_call)

    def program(carry, train, val, active):
        traces[0] += 1  # runs once per trace, i.e. once per compilation
        return epochs(carry, train, val, active)

    if len(devices) == 1:
        return jax.jit(program), None, traces
    mesh = Mesh(np.array(devices), ("models",))
    # The carry is stacked over models; the records are (epochs_per_call, models).
    shardings = (NamedSharding(mesh, P("models")), NamedSharding(mesh, P(None, "models")))
    return jax.jit(program, out_shardings=shardings), mesh, traces


# Sweeps with the same loss function, optimizer object, settings and devices share one
# program (like train.fit's): a second sweep of the same shapes does not compile again.
_program = _loop.memoize(_build_program, maxsize=8)


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
