"""The one training loop: any ``step(state, batch, key)`` over any state pytree.

:func:`run` trains a user-written step for ``epochs`` epochs with the bookkeeping every model
needs: the history, evaluation in batches, early stopping, divergence detection, checkpoints,
a resume that ends bitwise identical to an uninterrupted run, a progress bar, several epochs
per compiled call and, with ``models=``, many models in ONE ``vmap``-ed program.
:func:`train.fit` (a loss function and an optimizer) and :func:`train.sweep` are thin layers
over it; a GAN's two players, a diffusion model's EMA or anything else that is not "one loss,
one optimizer" write their step and call :func:`run` directly.

**The step contract.** ``step(state, batch, key) -> (state, metrics)``: ``state`` any pytree
of arrays (two parameter trees and two optax states for a GAN), ``batch`` a minibatch of the
data pytree (every leaf sliced along its leading axis), ``key`` a fresh PRNG key for this
step, ``metrics`` a dict of scalars (averaged over the epoch's steps into the history).

**The evaluation contract.** ``evaluate(state, batch, key) -> {name: scalar}``, the batch
MEAN of each quantity, in evaluation mode (the function decides what that means: no dropout,
batch-norm running statistics). It runs on the validation set (history names ``val_<name>``)
and, given as ``train_evaluate``, on the training set (names as returned). A set is evaluated
in batches of ``eval_batch_size``: ``m // eval_batch_size`` full batches in one ``lax.scan``,
then the ``m % eval_batch_size`` remaining examples as one smaller batch (nothing is dropped),
and the batch means are combined weighted by batch size, so a mean over examples equals the
one-batch result up to float rounding while device memory holds one batch of activations.

**Epochs.** With array data (a pytree whose leaves have ``n`` rows), an epoch is
``n // batch_size`` steps in ONE ``jax.lax.scan``; the last-batch rule and the two orders are
those of :func:`train.loop.minibatch_indices`. With a stream (``data`` a function
``epoch -> iterable of batches``, or a re-iterable such as a list of batches), an epoch is
one pass over ``data(epoch)`` (``epoch`` counts from 0), each batch moved to the device and
stepped by one compiled call: the stream decides the order and the batch sizes, and a
resumed run asks it for the same epochs again, so it resumes bitwise when ``data(epoch)``
is a function of ``epoch`` alone.

**Several devices and processes.** With ``mesh=`` (a number of devices, or a
``jax.sharding.Mesh`` with an axis ``"data"``) the same loop runs data parallel: the data
set stays in host memory, each global batch (the one-device run's batch, in its order) is
gathered on the host and sent split over ``"data"`` (every process sends only its own
devices' rows, :func:`train.distributed.feed_rows`) to ONE compiled step with the state
replicated and donated; XLA all-reduces the gradients. Device memory holds the state, at
most two batches and one step's activations, whatever the size of the data set. With
``data_on_devices=True`` (one process, array data) the data set is instead copied to every
device and an epoch is one ``lax.scan`` as on one device, each batch split over ``"data"``
inside the program: faster for small models, whose steps are short next to a host round
trip. A stream
on a mesh yields each process's own rows of every batch
(:func:`train.distributed.feed_local`). A sweep (``models=``) splits its models over
``"models"`` and, with devices to spare, its batches over ``"data"``. Checkpoints of such
runs are Orbax folders (:mod:`train.sharded_checkpoint`); a run resumes from a folder or a
file on any number of devices and processes.

**Randomness.** The run's key is carried; each epoch splits it into the next carried key and
the keys of the epoch (order, steps, evaluations); step ``i`` of an epoch gets
``fold_in(steps_key, i)``. The same carry always continues the same way.

**Stopping.** The *monitored* value (``monitor``, by default ``"val_loss"`` with a validation
set and ``"loss"`` without) improves when it falls below the best so far by more than
``min_delta``; the state's ``best_of(state)`` (default: the whole state) is kept at the best
epoch. ``patience`` evaluations without an improvement stop the run. The best value and the
monitored value are float32, or float64 in a *float64 run* (a floating leaf of the initial
state is float64, under ``jax_enable_x64``), where the records keep float64 values float64
too: such a run sees improvements below float32's resolution, and a float32 run gives the
same bits with x64 on or off. An epoch whose step
metrics, monitored value or NEW STATE (every floating leaf: parameters, optimizer moments,
batch-norm statistics, ...) hold a NaN or an infinity is undone and the run stops with reason
``"non_finite"``.

>>> import jax, jax.numpy as jnp, numpy as np, optax
>>> opt = optax.sgd(0.1)
>>> def step(state, batch, key):  # fit a mean by SGD on (x - mu)^2
...     loss, g = jax.value_and_grad(lambda p: jnp.mean((batch - p["mu"]) ** 2))(state["p"])
...     upd, o = opt.update(g, state["opt"])
...     return {"p": optax.apply_updates(state["p"], upd), "opt": o}, {"loss": loss}
>>> p = {"mu": jnp.zeros(())}
>>> X = 3.0 + np.random.default_rng(0).normal(size=64).astype(np.float32)
>>> r = run(step, {"p": p, "opt": opt.init(p)}, X, epochs=20, batch_size=16,
...         key=jax.random.key(0), progress=False)
>>> r.stop_reason, len(r.history["loss"]), round(float(r.state["p"]["mu"]), 1)
('epochs', 20, 3.1)
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import math
import os
import weakref
from typing import Any, Callable, Iterable, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from nets import _checks
from train import checkpoint as _checkpoint
from train import distributed as _dist
from train import loop as _loop
from train import optim as _optim

__all__ = ["run", "RunResult", "Tracker", "Carry", "STOP_REASONS"]

STOP_REASONS = ("epochs", "early_stopping", "non_finite")
_RUNNING, _EARLY, _NON_FINITE = 0, 1, 2

DEFAULT_EVAL_BATCH_SIZE = 1024


@flax.struct.dataclass
class Tracker:
    """Early stopping and divergence bookkeeping across epochs (a pytree; vmapped in sweeps)."""

    epoch: jax.Array  # () int32: epochs run so far (one that turned non-finite included)
    steps: jax.Array  # () int32: steps taken so far (the sequential order resumes from it)
    best_value: jax.Array  # () float32, float64 in a float64 run (:func:`_run_dtype`): lowest
    #                          monitored value so far (+inf before any)
    best_epoch: jax.Array  # () int32: 1-based epoch of best_value (0: the initial state)
    best: Any  # pytree like best_of(state): kept at best_epoch
    bad_evals: jax.Array  # () int32: evaluations since the monitored value last improved
    stopped: jax.Array  # () bool: no further updates (early stopping or a non-finite epoch)
    reason: jax.Array  # () int32: index into STOP_REASONS (0 while running)


@flax.struct.dataclass
class Carry:
    """What the compiled epoch carries (and a checkpoint stores): state, key and tracker."""

    state: Any  # the user's state pytree
    key: jax.Array  # () typed PRNG key, split once per epoch
    tracker: Tracker


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What :func:`run` returns. With ``models=``, every array has a leading model axis.

    Attributes:
      state: the final state (the last finite one after a non-finite epoch).
      best: ``best_of(state)`` at ``best_epoch`` (of the initial state when it is 0).
      history: ``{name: list of floats}`` per epoch, with ``"epoch"`` (1, 2, ...): the
        step metrics averaged over the epoch, ``train_evaluate``'s names and
        ``val_<name>`` of ``evaluate`` (NaN at epochs that do not evaluate); float32
        values, float64 ones in a float64 run. With ``models=``: ``{name: (models, E)
        array}`` without ``"epoch"`` (column ``j`` is epoch ``j + 1``).
      best_epoch: the 1-based epoch of the best monitored value (0: none improved).
      stop_reason: ``"epochs"``, ``"early_stopping"`` or ``"non_finite"`` (a list with
        ``models=``).
      epochs_run: the epochs run, a non-finite one included.
      non_finite_epoch: the epoch that turned non-finite, else ``None`` (per model: 0).
      compilations: programs traced by this call (0 when an earlier run's was reused).
      mesh: the mesh of a run on several devices (``"data"``, or a sweep's ``"models"``
        and ``"data"``); ``None`` on one device.
    """

    state: Any  # the final state (the last finite one after a non-finite epoch)
    best: Any  # best_of(state) at best_epoch (best_of of the initial state when it is 0)
    history: dict  # name -> list of floats per epoch, with "epoch"; with models=: name ->
    # (models, E) arrays, without "epoch" (the column index is the epoch - 1)
    best_epoch: Any  # int, 1-based epoch of the best monitored value (0: none improved)
    stop_reason: Any  # "epochs", "early_stopping" or "non_finite" (a list with models=)
    epochs_run: Any  # epochs run, a non-finite one included
    non_finite_epoch: Any  # the epoch that turned non-finite, else None (per model: 0)
    compilations: int  # programs traced by this call (0 when an earlier run's was reused)
    mesh: Any = None  # the mesh of a run on several devices ("data", or a sweep's "models"
    #                    and "data"); None on one device


# --------------------------------------------------------------------------------------------
# The pure pieces of one epoch
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Spec:
    """The static configuration of a compiled epoch (hashable: it keys the program cache)."""

    step: Callable
    evaluate: Callable | None
    train_evaluate: Callable | None
    best_of: Callable | None
    batch_size: int | None  # None: a stream
    order: str
    eval_batch_size: int
    eval_every: int
    patience: int | None
    monitor: str
    min_delta: float
    rows: Any = None  # data parallel on one process: the NamedSharding of a batch's rows


def _shard_rows(rows, batch):
    """``batch`` split over the data axis (``rows``: ``Spec.rows``), where its rows divide
    evenly; unchanged when ``rows`` is None."""
    if rows is None:
        return batch
    parts = int(dict(rows.mesh.shape)[_dist.DATA])
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, rows)
                        if a.ndim and a.shape[0] % parts == 0 else a, batch)


def _best_of(spec: Spec, state):
    return state if spec.best_of is None else spec.best_of(state)


def _split_epoch_key(key):
    """carried key, order key, steps key, training-evaluation key, validation key."""
    return tuple(jax.random.split(key, 5))


def _run_dtype(state) -> np.dtype:
    """The float dtype a run tracks in: float64 when a floating leaf of ``state`` is float64
    (possible only with ``jax_enable_x64``), else float32.

    The tracker's best value and the monitored value are kept in it, and a float64 run's
    records keep their own precision (float64 values stay float64), so a float64 run sees
    improvements far below float32's resolution; a float32 run records and compares in
    float32 whether x64 is on or not (the same bits either way). The state's dtypes are those
    of the initial state at every step (the loop checks it), so every compiled piece decides
    alike."""
    for leaf in jax.tree.leaves(state):
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.floating) and \
                jax.dtypes.canonicalize_dtype(dtype) == np.float64:
            return np.dtype(np.float64)
    return np.dtype(np.float32)


def _as_record(value, dtype) -> jax.Array:
    """A recorded scalar in a run tracked in ``dtype`` (:func:`_run_dtype`): float32 in a
    float32 run; in a float64 run ``promote_types(value's dtype, float32)``."""
    if dtype == np.float32:
        return jnp.asarray(value, jnp.float32)
    return jnp.asarray(value, jnp.promote_types(jnp.result_type(value), jnp.float32))


def _eval_batch(evaluate, state, batch, key) -> dict:
    """``evaluate`` on one batch, its output checked: a dict of scalars (:func:`_as_record`)."""
    out = evaluate(state, batch, key)
    if not isinstance(out, Mapping):
        raise TypeError(f"evaluate: expected a dict of scalars, got {type(out).__name__}")
    for name, v in out.items():
        if jnp.shape(v) != ():
            raise TypeError(f"evaluate: expected scalars (batch means), got {name!r} of "
                            f"shape {jnp.shape(v)}")
    dtype = _run_dtype(state)
    return {k_: _as_record(v, dtype) for k_, v in out.items()}


def _evaluate(evaluate, state, data, key, batch_size: int, rows=None) -> dict:
    """``evaluate`` over a whole array data set in batches, combined weighted by size
    (``rows``: each batch split over a data axis, :func:`_shard_rows`)."""
    m = _loop._num_examples(data)
    b = min(batch_size, m)
    full, rest = divmod(m, b)

    def one(batch, k):
        return _eval_batch(evaluate, state, batch, k)

    def body(_, i):
        batch = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, i * b, b), data)
        return None, one(_shard_rows(rows, batch), jax.random.fold_in(key, i))

    _, means = jax.lax.scan(body, None, jnp.arange(full))  # name -> (full,) batch means
    total = {k: b * jnp.sum(v) for k, v in means.items()}
    if rest:
        tail = jax.tree.map(lambda a: a[full * b:], data)
        out = one(_shard_rows(rows, tail), jax.random.fold_in(key, full))
        total = {k: total[k] + rest * out[k] for k in total}
    return {k: v / m for k, v in total.items()}


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


_select = optax.tree_utils.tree_where  # (pred, on_true, on_false), leaf by leaf


def _nan_like(record):
    """NaN scalars with the names and dtypes of ``record`` (arrays or their shapes)."""
    return {k: jnp.full((), jnp.nan, v.dtype) for k, v in record.items()}


def _evaluations(spec: Spec, state, train, val, k_train, k_val, evaluated, eval_fn):
    """The evaluation part of a record: metrics on ``train`` and ``val_*`` on ``val``,
    computed only when ``evaluated`` (a traced bool, unbatched under vmap), else NaN."""

    def compute(state):
        out = {}
        if spec.train_evaluate is not None:
            out.update(eval_fn(spec.train_evaluate, state, train, k_train))
        if spec.evaluate is not None and val is not None:
            out.update({f"val_{k}": v for k, v in
                        eval_fn(spec.evaluate, state, val, k_val).items()})
        return out

    if spec.eval_every == 1:  # every epoch evaluates: no branch (and one trace less)
        return compute(state)
    shape = jax.eval_shape(compute, state)
    if not shape:
        return {}
    return jax.lax.cond(evaluated, compute, lambda s: _nan_like(shape), state)


def _track(spec: Spec, carry: Carry, new_state, key, steps, means: dict, evals: dict,
           evaluated) -> tuple[Carry, dict]:
    """Early stopping, divergence and freezing: the carry after an epoch, and its record."""
    tr = carry.tracker
    record = dict(means)
    for name, value in evals.items():
        if name in record:
            raise ValueError(f"metrics: the name {name!r} is both a training-set evaluation "
                             f"(train_evaluate, or fit's metrics=) and a metric the step "
                             f"returns (the loss's aux dict in fit); rename one of them")
        record[name] = value
    monitor = spec.monitor
    if monitor is None:  # the default: the validation loss, else the training loss, else none
        monitor = next((m for m in ("val_loss", "loss") if m in record), None)
        if monitor is None and spec.patience is not None:
            raise ValueError(f"patience: early stopping needs a monitored value; the run "
                             f"records {sorted(record)}: pass monitor=<one of them>")
    sign = 1.0
    if monitor is not None and monitor.startswith("-"):  # "-val_accuracy": maximised
        monitor, sign = monitor[1:], -1.0
    if monitor is not None and monitor not in record:
        raise ValueError(f"monitor: expected one of the recorded names {sorted(record)} (a "
                         f"leading '-' to maximise one), got {spec.monitor!r}")
    # Without a monitored value every finite epoch counts as the best so far. Compared in
    # the tracker's dtype: float64 in a float64 run, float32 otherwise (_run_dtype).
    dtype = tr.best_value.dtype
    monitored = (sign * jnp.asarray(record[monitor], dtype) if monitor is not None
                 else -(tr.epoch + 1).astype(dtype))
    is_eval_name = monitor in evals
    checked = evaluated if is_eval_name else jnp.array(True)
    finite = _all_finite(means) & _all_finite(new_state) & (jnp.isfinite(monitored) | ~checked)
    improved = finite & checked & (monitored < tr.best_value - spec.min_delta)
    epoch_no = tr.epoch + 1
    bad = jnp.where(improved, 0, tr.bad_evals + checked.astype(jnp.int32))
    early = (bad >= spec.patience) if spec.patience is not None else jnp.array(False)
    early = finite & early
    fresh = Tracker(
        epoch=epoch_no,
        steps=steps,
        best_value=jnp.where(improved, monitored, tr.best_value),
        best_epoch=jnp.where(improved, epoch_no, tr.best_epoch),
        best=_select(improved, _best_of(spec, new_state), tr.best),
        bad_evals=bad,
        stopped=~finite | early,
        reason=jnp.where(~finite, _NON_FINITE, jnp.where(early, _EARLY, _RUNNING)),
    )
    # A non-finite epoch is undone: the state and key from before it are kept.
    state = _select(finite, new_state, carry.state)
    key = _select(finite, key, carry.key)
    new = Carry(state=state, key=key, tracker=fresh)
    # A carry that had already stopped is frozen (a sweep runs it along with the others).
    new = _select(tr.stopped, carry, new)
    record = {k: jnp.where(tr.stopped, jnp.nan, _as_record(v, dtype))
              for k, v in record.items()}
    return new, record


def make_epoch(spec: Spec, group: bool = False) -> Callable:
    """``epoch(carry, train, val, evaluate_now) -> (carry, record)`` on array data.

    ``evaluate_now`` is an unbatched scalar, so under the sweep's ``vmap`` the evaluation
    stays a real branch, skipped on the epochs between evaluations.

    ``group=True``: ``carry`` holds a group of models (every leaf a leading member axis)
    that share their key, so they share the data order and the step keys: the order is
    drawn once, and each step gathers the batch once and runs the members' steps in one
    ``vmap`` with the batch unbatched (JAX folds the member axis of the weights into one
    matrix product by the batch). The group's key and step count are those of its first
    member still training (a stopped member is frozen; it keeps what it had).
    """
    members = (lambda f, axes: jax.vmap(f, in_axes=axes)) if group else (lambda f, axes: f)

    def epoch(carry: Carry, train, val, evaluate_now):
        n = _loop._num_examples(train)
        lead = jnp.argmax(~carry.tracker.stopped) if group else None
        pick = (lambda a: a[lead]) if group else (lambda a: a)
        key, k_order, k_steps, k_train, k_val = _split_epoch_key(pick(carry.key))
        idx = _loop.minibatch_indices(k_order, pick(carry.tracker.steps), n=n,
                                      batch_size=spec.batch_size, order=spec.order)
        one_step = members(functools.partial(_call_step, spec.step), (0, None, None))

        def body(state, xs):
            i, batch_idx = xs
            return one_step(state, _shard_rows(spec.rows, _loop._take(train, batch_idx)),
                            jax.random.fold_in(k_steps, i))

        steps = idx.shape[0]
        state, metrics = jax.lax.scan(body, carry.state, (jnp.arange(steps), idx))

        def finish(carry, state, metrics):
            means = {k: jnp.mean(v, axis=0) for k, v in metrics.items()}
            evals = _evaluations(spec, state, train, val, k_train, k_val, evaluate_now,
                                 lambda f, s, d, k: _evaluate(f, s, d, k, spec.eval_batch_size,
                                                           spec.rows))
            return _track(spec, carry, state, key, carry.tracker.steps + steps, means, evals,
                          evaluate_now)

        return members(finish, (0, 0, 1))(carry, state, metrics)

    return epoch


def _over_models(epoch: Callable, unit: int, lanes: int = 1, chunk: int | None = None
                 ) -> Callable:
    """``epoch`` over a carry of ``models`` models, the model axis split into units: groups of
    ``unit`` models that share their key (``epoch`` is ``make_epoch(spec, group=True)``), or
    single models (``unit == 1``, the plain epoch). The result joined again.

    ``chunk=None``: every unit at once (``vmap``; an accelerator). Else (a CPU) the units
    ``chunk`` at a time, one chunk after the other by ``lax.map``, within each of ``lanes``
    slices of the model axis (``vmap``-ed: a slice per device of a ``"models"`` axis).
    XLA:CPU runs a sweep's many small operations faster on a few models at a time than on
    all of them at once (their data stay in the cache from one operation to the next; a
    group's products have one batch axis instead of two): W3's 64-model sweep, 1.3x in
    chunks of 8 models, 1.46x as 8 groups of 8 one after the other, in probes.
    """
    per_unit = (unit,) if unit > 1 else ()
    lead = (-1, *per_unit) if chunk is None else (lanes, -1, chunk, *per_unit)
    split = lambda t: jax.tree.map(lambda a: a.reshape(*lead, *a.shape[1:]), t)  # noqa: E731
    join = lambda t: jax.tree.map(  # noqa: E731
        lambda a: a.reshape(-1, *a.shape[len(lead):]), t)
    units = jax.vmap(epoch, in_axes=(0, None, None, None))
    if chunk is None:
        run_all = units
    else:
        def lane(carry, train, val, evaluate_now):
            return jax.lax.map(lambda c: units(c, train, val, evaluate_now), carry)
        run_all = jax.vmap(lane, in_axes=(0, None, None, None))

    def many(carry, train, val, evaluate_now):
        carry, record = run_all(split(carry), train, val, evaluate_now)
        return join(carry), join(record)

    return many


def _chunk(units_per_lane: int, unit: int, platform: str, models: int = 8) -> int | None:
    """Units per ``lax.map`` step of :func:`_over_models`: on a CPU the most that hold at most
    ``models`` models (at least one unit) and divide the lane's units; elsewhere ``None``."""
    if platform != "cpu":
        return None
    fit = max(1, models // unit)
    chunk = max(d for d in range(1, min(fit, units_per_lane) + 1) if units_per_lane % d == 0)
    return None if chunk == units_per_lane else chunk


def _call_step(step, state, batch, key):
    out = step(state, batch, key)
    if not isinstance(out, tuple) or len(out) != 2 or not isinstance(out[1], Mapping):
        raise TypeError(f"step: expected it to return (state, metrics) with metrics a dict of "
                        f"scalars, got {type(out).__name__}")
    new, metrics = out
    if jax.tree.structure(new) != jax.tree.structure(state):
        raise TypeError(f"step: expected the returned state to have the structure of the state "
                        f"passed in, {jax.tree.structure(state)}, got {jax.tree.structure(new)}")
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(new)):
        if jnp.shape(a) != jnp.shape(b) or jnp.result_type(a) != jnp.result_type(b):
            raise TypeError(
                f"step: expected the returned state to keep every leaf's shape and dtype (the "
                f"loop carries it), got state{jax.tree_util.keystr(path)} changed from "
                f"{jnp.result_type(a)}{list(jnp.shape(a))} to {jnp.result_type(b)}"
                f"{list(jnp.shape(b))}")
    for name, v in metrics.items():
        if not isinstance(name, str) or jnp.shape(v) != ():
            raise TypeError(f"step: expected metrics to map names to scalars, got {name!r} of "
                            f"shape {jnp.shape(v)}")
    dtype = _run_dtype(state)
    return new, {k: _as_record(v, dtype) for k, v in metrics.items()}


def make_epochs(epoch: Callable, epochs_per_call: int) -> Callable:
    """``epochs_per_call`` calls of ``epoch`` in ONE ``lax.scan``:
    ``run(carry, train, val, first, active, evaluate_mask) -> (carry, records)``. Epoch
    ``i`` of the call takes effect only when ``i < active``, so the last, shorter call of a
    run reuses the program; ``evaluate_mask[i]`` says whether epoch ``i`` evaluates."""

    def many(carry, train, val, active, evaluate_mask):
        def body(c, i):
            new, record = epoch(c, train, val, evaluate_mask[i])
            return _select(i < active, new, c), record
        return jax.lax.scan(body, carry, jnp.arange(epochs_per_call))

    return many


# --------------------------------------------------------------------------------------------
# The program cache: identical settings reuse one jitted program, without keeping the user's
# functions alive (entries hold them weakly and disappear with them).
# --------------------------------------------------------------------------------------------


class _WeakCallable:
    """Calls a function through a weak reference, so a cached program does not keep it alive."""

    def __init__(self, fn):
        self._ref = weakref.ref(fn)
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, *args, **kwargs):
        fn = self._ref()
        if fn is None:  # cannot happen while a run that uses it is on the stack
            raise RuntimeError(f"{self.__name__}: the function was garbage-collected")
        return fn(*args, **kwargs)


_PROGRAMS: dict = {}
_CACHE_SIZE = 16


def cached(build: Callable, functions: tuple, settings: tuple):
    """``build(functions, settings)``, cached on the functions' identities and the hashable
    ``settings`` (as ``jax.jit`` caches on a function's identity), so a fit repeated, resumed
    or re-run with new data of the same shapes does not compile again.

    The cache holds the functions WEAKLY (``build`` receives weak proxies): an entry goes
    when one of its functions is garbage-collected, so a user's closures and everything they
    capture are freed with them. ``None`` entries are allowed; an object that cannot be
    weakly referenced (a bound method, a builtin) or an unhashable setting builds afresh."""
    try:
        key = (build, tuple(id(f) for f in functions), settings)
        hash(key)
        refs = tuple(None if f is None else weakref.ref(f) for f in functions)
        if any(hasattr(f, "__func__") for f in functions):  # bound methods are ephemeral
            raise TypeError
    except TypeError:
        return build(functions, settings)
    entry = _PROGRAMS.get(key)
    if entry is not None and all((r is None and f is None) or (r is not None and r() is f)
                                 for r, f in zip(entry[0], functions)):
        return entry[1]
    program = build(tuple(None if f is None else _WeakCallable(f) for f in functions), settings)
    _PROGRAMS[key] = (refs, program)
    for f in functions:
        if f is not None:
            weakref.finalize(f, _PROGRAMS.pop, key, None)
    while len(_PROGRAMS) > _CACHE_SIZE:
        _PROGRAMS.pop(next(iter(_PROGRAMS)))
    return program


# The record names of a program's abstract trace, per program (held weakly) and input
# signature: a run repeated with the same program and shapes (a loop of fits) reads them
# instead of tracing again, as JAX reuses a jitted function's trace.
_TRACED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _mesh_id(mesh) -> tuple | None:
    return None if mesh is None else (tuple(dict(mesh.shape).items()),
                                      tuple(d.id for d in mesh.devices.flat))


class _Counted:
    """A jitted function and the number of times it was traced (= compiled)."""

    def __init__(self, fn, **jit_kwargs):
        self.traces = 0

        def counted(*args):
            self.traces += 1
            return fn(*args)

        self.jitted = jax.jit(counted, **jit_kwargs)

    def __call__(self, *args):
        return self.jitted(*args)


def _plain(step, evaluate, train_evaluate, best_of):
    """The factory of :func:`run`: the user's functions as they are."""
    return step, evaluate, train_evaluate, best_of


def _build_programs(functions, settings):
    """The compiled program of a run (a :class:`_Streamed` for a stream). ``functions`` go
    to the factory, with its static settings, to make ``step, evaluate, train_evaluate,
    best_of``; the rest of ``settings`` configure the loop."""
    (factory, factory_static, batch_size, order, eval_batch_size, eval_every, patience,
     monitor, min_delta, epochs_per_call, vmapped, (group, lanes, chunk), shardings,
     rows) = settings
    step, evaluate, train_evaluate, best_of = factory(*functions, *factory_static)
    spec = Spec(step, evaluate, train_evaluate, best_of, batch_size, order, eval_batch_size,
                eval_every, patience, monitor, min_delta, rows)
    if batch_size is None:  # a stream: one compiled step, evaluation per batch, tracking
        def one_step(state, batch, steps_key, i):
            return _call_step(spec.step, state, batch, jax.random.fold_in(steps_key, i))

        def finish(carry, state, key, steps, means, evals, evaluated):
            return _track(spec, carry, state, key, steps, means, evals, evaluated)

        def eval_batch(state, batch, key, i):
            out = spec.evaluate(state, batch, jax.random.fold_in(key, i))
            dtype = _run_dtype(state)
            return {k: _as_record(v, dtype) for k, v in out.items()}

        streamed = _Streamed(_Counted(one_step, donate_argnums=0), jax.jit(finish),
                             jax.jit(eval_batch), jax.jit(_split_epoch_key))
        streamed.best_of = functools.partial(_best_of, spec)
        return streamed
    if vmapped:
        epoch = _over_models(make_epoch(spec, group=group > 1), group, lanes, chunk)
    else:
        epoch = make_epoch(spec)
    kwargs = {"donate_argnums": 0}
    if shardings is not None:
        kwargs["out_shardings"] = shardings
    program = _Counted(make_epochs(epoch, epochs_per_call), **kwargs)
    program.best_of = functools.partial(_best_of, spec)
    return program


class _Streamed:
    def __init__(self, one_step, finish, eval_batch, split_key):
        self.one_step, self.finish = one_step, finish
        self.eval_batch, self.split_key = eval_batch, split_key

    @property
    def traces(self):
        fed = getattr(self, "fed", None)  # a stream on a mesh: the sharded step's count
        return fed.traces if fed is not None else self.one_step.traces


# --------------------------------------------------------------------------------------------
# Data parallel on a mesh: the steps of make_epoch, each batch fed from the host
# --------------------------------------------------------------------------------------------


class _Fed:
    """The compiled pieces of a run on a mesh with a ``"data"`` axis (or several processes).

    An epoch is the epoch of :func:`make_epoch` taken apart: ``plan`` splits the carried key
    and draws the epoch's minibatch indices exactly as on one device (so the global batches
    and their order are the same); the host gathers each global batch from the data set it
    keeps in host memory and sends every device its shard (:func:`train.distributed
    .feed_rows`); ``step`` is ONE compiled, sharded step (the state replicated, or split
    over ``"models"`` in a sweep; the batch split over ``"data"``; the gradients all-reduced
    by XLA) that donates its input state; evaluation runs the same batches as
    :func:`_evaluate`; ``finish`` averages and tracks as the scan does. Device memory holds
    the state (twice: the carry and the epoch's working copy), at most two batches' shards
    (the host waits for step ``i - 1`` before it sends batch ``i + 1``) and a step's
    activations, never the data set."""

    def __init__(self, spec: Spec, vmapped: bool, mesh):
        self.spec, self.vmapped, self.mesh = spec, vmapped, mesh
        MODELS = _dist.MODELS
        self.data_parts = int(dict(mesh.shape).get(_dist.DATA, 1))
        DATA = _dist.DATA if _dist.DATA in mesh.axis_names else None
        self.state_sh = NamedSharding(mesh, P(MODELS) if vmapped else P())
        self.rep = NamedSharding(mesh, P())
        self.batch_sh = NamedSharding(mesh, P(MODELS, DATA) if vmapped else P(DATA))
        self.eval_sh = NamedSharding(mesh, P(DATA))  # a set's batch: shared by the models
        over = (lambda f, axes: jax.vmap(f, in_axes=axes)) if vmapped else (lambda f, axes: f)

        def plan(carry, n):
            key, k_order, k_steps, k_train, k_val = _split_epoch_key(carry.key)
            idx = _loop.minibatch_indices(k_order, carry.tracker.steps, n=n,
                                          batch_size=spec.batch_size, order=spec.order)
            # the epoch's working copy of the state (fresh buffers: `step` donates them)
            state = _fresh(carry.state)
            return key, k_steps, k_train, k_val, idx, state

        def step(state, batch, k_steps, i):
            return _call_step(spec.step, state, batch, jax.random.fold_in(k_steps, i))

        def evaluate(fn, state, batch, key, i):
            return _eval_batch(fn, state, batch, jax.random.fold_in(key, i))

        sh = self.state_sh
        self.plan = jax.jit(over(plan, (0, None)), static_argnums=1,
                            out_shardings=(sh, sh, sh, sh, self.rep, sh))
        self.step = _Counted(over(step, (0, 0, 0, None)), donate_argnums=0,
                             out_shardings=(sh, sh))
        self.evaluate = {
            name: jax.jit(over(functools.partial(evaluate, fn), (0, None, 0, None)),
                          out_shardings=sh)
            for name, fn in (("train", spec.train_evaluate), ("val", spec.evaluate))
            if fn is not None}
        self._over, self._finish, self._names = over, {}, {}
        self.best_of = functools.partial(_best_of, spec)

    @property
    def traces(self):
        return self.step.traces

    def finish(self, sizes):
        """``finish(carry, state, key, step_metrics, train_outs, val_outs, evaluated)``:
        the epoch's means, the sets' evaluations (``_evaluate``'s arithmetic), tracking."""
        if sizes not in self._finish:
            spec = self.spec

            def combine(outs, size):
                full_outs, tail = outs
                b, rest, m = size
                total = {k: b * jnp.sum(jnp.stack([o[k] for o in full_outs]), axis=0)
                         for k in full_outs[0]} if full_outs else \
                    {k: jnp.zeros_like(v) for k, v in tail.items()}
                if tail is not None:
                    total = {k: total[k] + rest * tail[k] for k in total}
                return {k: v / m for k, v in total.items()}

            def finish(carry, state, key, metrics, train_outs, val_outs, evaluated):
                means = {k: jnp.mean(jnp.stack([m[k] for m in metrics]), axis=0)
                         for k in metrics[0]}
                evals = {}
                if train_outs is not None:
                    evals.update(combine(train_outs, sizes[0]))
                if val_outs is not None:
                    evals.update({f"val_{k}": v for k, v in combine(val_outs, sizes[1]).items()})
                return _track(spec, carry, state, key, carry.tracker.steps + len(metrics),
                              means, evals, evaluated)

            sh = self.state_sh
            self._finish[sizes] = jax.jit(self._over(finish, (0, 0, 0, 0, 0, 0, None)),
                                          donate_argnums=0, out_shardings=(sh, sh))
        return self._finish[sizes]

    def evaluate_set(self, name, state, data, key, batch_size, evaluated):
        """``(full batch outputs, tail output)`` over a host data set, batch by batch (NaN
        placeholders of the same structure when this epoch does not evaluate)."""
        m = _loop._num_examples(data)
        b = min(batch_size, m)
        full, rest = divmod(m, b)
        fn = self.evaluate[name]

        def batch(lo, hi):
            sh = self.eval_sh if (hi - lo) % self.data_parts == 0 else self.rep
            return _dist.feed_rows(data, np.arange(lo, hi), sh)

        if not evaluated:
            if (name, b, rest) not in self._names:
                like = lambda rows: jax.tree.map(  # noqa: E731
                    lambda a: jax.ShapeDtypeStruct((rows,) + a.shape[1:], a.dtype), data)
                self._names[(name, b, rest)] = jax.eval_shape(fn, state, like(b), key, 0)
            shape = self._names[(name, b, rest)]
            nan = lambda: jax.tree.map(  # noqa: E731
                lambda s: np.full(s.shape, np.nan, s.dtype), shape)
            outs = ([nan() for _ in range(full)], nan() if rest else None)
        else:
            outs = ([fn(state, batch(i * b, (i + 1) * b), key, i) for i in range(full)],
                    fn(state, batch(full * b, m), key, full) if rest else None)
        return outs, (b, rest, m)


def _fed_epoch(fed: _Fed, carry, train, val, eval_batch_size: int, evaluated: bool):
    """One epoch on a mesh (array data on the host): see :class:`_Fed`."""
    key, k_steps, k_train, k_val, idx, state = fed.plan(carry, _loop._num_examples(train))
    idx = _dist.fetch(idx)  # (steps, B), or (models, steps, B): the same on every process
    metrics = []
    for i in range(idx.shape[-2]):
        batch = _dist.feed_rows(train, idx[..., i, :], fed.batch_sh)
        state, m = fed.step(state, batch, k_steps, i)
        metrics.append(m)
        if i:  # back-pressure: step i-1 done before batch i+1 is sent (two batches at most
            jax.block_until_ready(metrics[i - 1])  # on the devices, however fast the host)
    train_outs = val_outs = None
    sizes = [None, None]
    if "train" in fed.evaluate:
        train_outs, sizes[0] = fed.evaluate_set("train", state, train, k_train,
                                                eval_batch_size, evaluated)
    if "val" in fed.evaluate and val is not None:
        val_outs, sizes[1] = fed.evaluate_set("val", state, val, k_val, eval_batch_size,
                                              evaluated)
    return fed.finish(tuple(sizes))(carry, state, key, metrics, train_outs, val_outs,
                                    np.bool_(evaluated))


def _build_fed(functions, settings):
    """The :class:`_Fed` program (a :class:`_Streamed` for a stream) of a run on a mesh."""
    (factory, factory_static, batch_size, order, eval_batch_size, eval_every, patience,
     monitor, min_delta, vmapped, mesh) = settings
    step, evaluate, train_evaluate, best_of = factory(*functions, *factory_static)
    spec = Spec(step, evaluate, train_evaluate, best_of, batch_size, order, eval_batch_size,
                eval_every, patience, monitor, min_delta)
    fed = _Fed(spec, vmapped, mesh)
    if batch_size is not None:
        return fed
    # A stream on a mesh: each process's batches (its own rows) become global arrays.
    feed = functools.partial(_dist.feed_local, sharding=fed.batch_sh)

    def one_step(state, batch, steps_key, i):
        return fed.step(state, feed(batch, name="data"), steps_key, i)

    def eval_batch(state, batch, key, i):
        return fed.evaluate["val"](state, feed(batch, name="validation"), key, i)

    def finish(carry, state, key, steps, means, evals, evaluated):
        return _track(spec, carry, state, key, steps, means, evals, evaluated)

    streamed = _Streamed(one_step, jax.jit(finish, out_shardings=(fed.state_sh, fed.rep)),
                         eval_batch, jax.jit(_split_epoch_key, out_shardings=fed.rep))
    streamed.best_of, streamed.fed = fed.best_of, fed
    return streamed


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


def _is_stream(data) -> bool:
    """A function ``epoch -> iterable of batches``, or a list of batches (several arrays of
    one data set go in a tuple or a dict, never a list)."""
    return callable(data) or isinstance(data, list)


def _stream_epoch(data, epoch: int) -> Iterable:
    """The batches of one epoch: the list, or what ``data(epoch)`` returns (an iterable, or
    a fresh iterator such as a generator's: a function called every epoch)."""
    return data(epoch) if callable(data) else data


def _check_not_one_shot(data, name: str) -> None:
    if isinstance(data, collections.abc.Iterator):
        raise TypeError(
            f"{name}: a one-shot iterator (got {type(data).__name__}) cannot be replayed epoch "
            "after epoch; pass a list of batches or a function epoch -> iterable of batches "
            "(a generator function is one)")


def run(
    step: Callable,
    state: Any,
    data: Any,
    *,
    epochs: int,
    key: jax.Array,
    batch_size: int | None = None,
    evaluate: Callable | None = None,
    train_evaluate: Callable | None = None,
    validation: Any = None,
    eval_batch_size: int | None = None,
    eval_every: int = 1,
    patience: int | None = None,
    monitor: str | None = None,
    min_delta: float = 0.0,
    best_of: Callable | None = None,
    order: str = "random",
    progress: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: str | os.PathLike | None = None,
    epochs_per_call: int = 1,
    models: int | None = None,
    group_size: int = 1,
    devices: Sequence[jax.Device] | None = None,
    mesh: Any = None,
    data_on_devices: bool = False,
    config: Mapping[str, Any] | None = None,
    desc: str = "run",
    factory: tuple | None = None,
    probe: Callable[[Callable[[], Any]], None] | None = None,
    make_state: Callable[[], Any] | None = None,
) -> RunResult:
    """Runs ``step`` over ``data`` for ``epochs`` epochs (contracts: the module docstring).

    Args:
      step: ``step(state, batch, key) -> (state, metrics)``.
      state: the initial state, any pytree of arrays (its floating leaves must be finite).
      data: a pytree of arrays with ``n`` rows each (an array, a tuple ``(X, Y)``, a dict,
        integer tokens), or a stream: a function ``epoch -> iterable of batches`` or a
        ``list`` of batches.
      epochs: epochs to run in all (a resumed run continues up to this number).
      key: a typed PRNG key (``jax.random.key``); with ``models``, ``(models,)`` keys.
      batch_size: examples per step with array data (``1 <= batch_size <= n``); ``None``
        with a stream.
      evaluate: ``evaluate(state, batch, key) -> {name: batch mean}`` in evaluation mode, on
        ``validation`` (history ``val_<name>``).
      train_evaluate: the same on the training data (history ``<name>``), array data only.
      validation: a pytree of arrays like ``data`` (or a list of batches).
      eval_batch_size: examples per evaluation batch (default ``min(m, 1024)``).
      eval_every: evaluate every this many epochs (and always after the last one); the
        history holds NaN in between.
      patience: stop after this many evaluations without an improvement of the monitored
        value, and report the best state (``best``).
      monitor: the history name to minimise (default ``"val_loss"`` when recorded, else
        ``"loss"`` when recorded, else none: every finite epoch is the best so far); with a
        leading ``-`` it is maximised (``monitor="-val_accuracy"``).
      min_delta: an improvement must lower the monitored value (raise it, with a leading
        ``-``) by more than this.
      best_of: ``state -> the part to keep at the best epoch`` (default the whole state).
      order: ``"random"`` or ``"sequential"`` (array data).
      progress: a tqdm bar: ``True``, ``False`` or ``None`` (on in terminals).
      checkpoint: a file to save the whole run to (carry, history, configuration) every
        ``checkpoint_every`` epochs (default 1) and at the end, atomically, with a SHA-256
        checksum; the one it replaces is kept as ``<checkpoint>.prev``. A run on a mesh
        (several devices along ``"data"``, or several processes) writes an Orbax checkpoint
        folder there instead, every process its own shards (:mod:`train.sharded_checkpoint`);
        so does any run given an existing Orbax checkpoint folder.
      resume: a checkpoint of a run with the same configuration (settings, ``config``,
        injected hyperparameters; the functions and data are the caller's to keep); the run
        continues from it (``epochs`` counts the whole run, at least the checkpoint's). The
        checkpoint's carry replaces ``state`` and ``key``: a resume given another initial
        state or key continues the checkpoint's run as it was (they are not compared).
        Verified first: a corrupt (or missing) file falls back to ``<resume>.prev`` with a
        warning; neither readable is an error (:mod:`train.checkpoint`); neither existing
        is a ``FileNotFoundError`` before anything is compiled (to resume only when a
        checkpoint exists: ``resume=path if os.path.exists(path) else None``). A file or an
        Orbax folder, whatever the devices and processes that wrote it.
      epochs_per_call: epochs per compiled call (one ``lax.scan`` over epochs; array data).
      models: train this many models at once: every leaf of ``state`` has a leading axis of
        this length, ``key`` has shape ``(models,)``; ONE ``vmap``-ed program (on a CPU it
        steps chunks of up to 8 models, or of whole groups, one after the other: faster
        there, the same models up to float rounding; :func:`_over_models`).
      group_size: with ``models``, consecutive groups of this many models share their key
        (``key = jnp.repeat(group_keys, group_size)``), hence their data order and step
        keys: each group's order is drawn once and its batches are gathered once, and the
        members' steps take the batch unbatched, so a first layer's products for the whole
        group are one matrix product. The results are those of ``group_size=1`` up to
        float rounding. Must divide ``models``; ignored on a ``"data"`` axis.
      devices: with ``models``, the devices to spread the models over (default all).
      mesh: the devices to train on, data parallel (:mod:`train.distributed`): a number of
        devices or a ``jax.sharding.Mesh`` with an axis ``"data"`` (with ``models``, the
        axes ``"models"`` and ``"data"``). Default: one device; with ``models``, all
        ``devices``: the model axis over as many as it needs and the spare ones over
        ``"data"``. On a ``"data"`` axis of several devices (or several processes) each
        batch is gathered on the host, split over ``"data"`` and stepped by one sharded
        program; the parameters and optimizer state are replicated, the batches and their
        order are those of one device, so the run ends where the one-device run ends up to
        float rounding. ``batch_size`` must be a multiple of the ``"data"`` axis; an
        evaluation batch that is not is computed whole on every device; ``epochs_per_call``
        has no effect there (except with ``data_on_devices``).
      data_on_devices: on a ``"data"`` axis of several devices in ONE process, with array
        data: copy the data set to every device and run each epoch as one compiled
        ``lax.scan``, as on one device, each batch's rows split over ``"data"`` inside the
        program. No host round trip per step (on the 2-core CPU, a small Transformer's step
        1.4-2x faster than one device, against 1.2x when fed from the host), at the cost of
        the data set in every device's memory. ``False`` (the default): batches fed from
        the host, device memory independent of the data set's size. Needs ``mesh=``; not
        for a stream, a sweep or several processes; the run ends where the host-fed run ends, up to float
        rounding.
      config: extra settings recorded in the checkpoint and compared on resume (strings,
        numbers, bools). ``{"optimizer": train.optim.fingerprint(opt)}`` refuses a resume
        under an optimizer with other hyperparameters, as ``train.fit`` does (a checkpoint
        without it is not compared).
      desc: the progress bar's label.
      factory: for layers over :func:`run` (``train.fit``): ``(make, functions, static)``
        where ``make(*functions, *static) -> (step, evaluate, train_evaluate, best_of)``;
        the compiled program is cached on the identities of ``functions`` (held weakly)
        and ``static``, not on the (freshly built) step.
      probe: ``probe(trace)`` runs the one trace of the program that precedes compilation
        (``trace()``, after every argument is checked) for a layer that wants to look at
        it, such as ``train.fit``'s label check; default: just ``trace()``.
    """
    # --- every check before anything is compiled ---
    if factory is None and not callable(step):
        raise TypeError(f"step: expected a function step(state, batch, key) -> (state, "
                        f"metrics), got {type(step).__name__}")
    for name, fn in (("evaluate", evaluate), ("train_evaluate", train_evaluate),
                     ("best_of", best_of)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name}: expected a function or None, got {type(fn).__name__}")
    check_settings(epochs=epochs, eval_every=eval_every, epochs_per_call=epochs_per_call,
                   models=models, key=key, patience=patience, min_delta=min_delta,
                   progress=progress, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                   order=order, eval_batch_size=eval_batch_size,
                   mesh=mesh if models is None else (mesh or devices or "auto"),
                   data_on_devices=data_on_devices, resume=resume)
    if validation is not None and evaluate is None and factory is None:
        raise ValueError("validation: a validation set needs an evaluate function")
    if validation is None and evaluate is not None and factory is None:
        raise ValueError("evaluate: it evaluates the validation set, and there is none; pass "
                         "validation=..., or train_evaluate= to evaluate the training data")
    if monitor is not None and not isinstance(monitor, str):
        raise TypeError(f"monitor: expected a history name, got {type(monitor).__name__}")
    if patience is not None and (monitor or "val_").lstrip("-").startswith("val_") \
            and validation is None \
            and (monitor is not None or factory is not None):
        raise ValueError(f"patience: early stopping monitors {monitor!r}; pass validation=..., "
                         "or patience=None")
    _check_state(state, models)
    group_size = _check_groups(key, models, group_size)

    checkpoint, resume = (None if p is None else os.path.expanduser(os.fspath(p))
                          for p in (checkpoint, resume))
    _check_not_one_shot(data, "data")
    _check_not_one_shot(validation, "validation")
    stream = _is_stream(data)
    if stream:
        if models is not None:
            raise ValueError("data: a stream of batches trains one model; for models= pass "
                             "arrays")
        if batch_size is not None:
            raise ValueError("batch_size: a stream of batches sets its own batch sizes; "
                             "pass batch_size=None")
        if epochs_per_call != 1:
            raise ValueError("epochs_per_call: a stream is stepped batch by batch; use 1")
        if data_on_devices:
            raise ValueError("data_on_devices: a stream's batches come from the host one by "
                             "one; pass arrays, or data_on_devices=False")
        if train_evaluate is not None:
            raise ValueError("train_evaluate: evaluating a stream's training data is not "
                             "supported; evaluate a validation set")
        n = None
    else:
        n = _check_array_data(data, "data")
        if data_on_devices and mesh is None:  # (a stream's own error comes first)
            _refuse_data_on_devices_without_mesh()
        if batch_size is None:
            raise TypeError("batch_size: expected an int for array data, got None")
        batch_size = _loop._check_batching(n, batch_size, order)
    val_stream = validation is not None and _is_stream(validation)
    m = None
    if validation is not None and not val_stream:
        m = _check_array_data(validation, "validation")
        _check_like(data, validation, stream)
    if eval_batch_size is None:
        eval_batch_size = min(m or DEFAULT_EVAL_BATCH_SIZE, DEFAULT_EVAL_BATCH_SIZE)
    else:
        eval_batch_size = _checks.check_int(eval_batch_size, "eval_batch_size", 1)

    settings = {"batch_size": -1 if batch_size is None else batch_size, "n": n or -1,
                "order": order, "patience": -1 if patience is None else patience,
                "monitor": monitor, "min_delta": float(min_delta), "eval_every": eval_every,
                "eval_batch_size": eval_batch_size, "validation": validation is not None,
                "epochs_per_call": epochs_per_call, "models": models or 0,
                "stream": stream, **({"group_size": group_size} if group_size > 1 else {}),
                **dict(config or {})}

    # --- placement and the compiled program ---
    # On one device: the data set on the device, an epoch one lax.scan (below). On a mesh
    # with a "data" axis of several devices, or on several processes: the `_Fed` program
    # (each batch fed from the host, split over "data"); a sweep spreads its models over
    # "models" and, with devices to spare, its batches over "data".
    requested, mesh, padded, fed = mesh, None, None, None
    if isinstance(devices, jax.Device):  # one device given bare
        devices = [devices]
    if models is not None:
        # the devices and the padding count whole groups (padding copies the last model,
        # so an added group's members share the last model's key)
        mesh, padded = _dist.sweep_mesh(models // group_size, requested, devices,
                                        None if stream else batch_size, _devices_for)
        padded *= group_size
        device = (list(devices)[0] if devices else None) or (
            mesh.devices.flat[0] if mesh is not None else jax.devices()[0])
        sharded = mesh is not None and (int(dict(mesh.shape).get(_dist.DATA, 1)) > 1
                                        or jax.process_count() > 1)
    else:
        mesh = _dist.resolve_mesh(requested, None if stream else batch_size)
        if mesh is not None and mesh.size == 1 and jax.process_count() == 1:
            device, mesh = mesh.devices.flat[0], None  # one device: the default path
        else:
            device = _default_device()
        sharded = mesh is not None
    # Data parallel in one process with array data: the data set replicated on every device
    # and an epoch ONE lax.scan, each batch's rows split over "data" inside the program
    # (no host round trip per step); several processes or a stream: the `_Fed` program.
    resident = bool(data_on_devices) and sharded
    checkpoint_kind = _checkpoint_kind(checkpoint, sharded)
    shardings = rows = None
    lanes = 1  # a grouped sweep's slices of the model axis: one per device along "models"
    if mesh is not None and not sharded:  # a sweep's models over devices, data on each
        shardings = (NamedSharding(mesh, P("models")), NamedSharding(mesh, P(None, "models")))
        lanes = int(dict(mesh.shape).get(_dist.MODELS, 1))
    if resident:
        shardings = (NamedSharding(mesh, P()),) * 2
        rows = NamedSharding(mesh, P(_dist.DATA))
    chunk = (None if models is None else
             _chunk(padded // group_size // lanes, group_size, _platform(device)))
    if factory is None:
        factory = (_plain, (step, evaluate, train_evaluate, best_of), ())
    common = (factory[0], factory[2], None if stream else batch_size, order, eval_batch_size,
              eval_every, patience, monitor, float(min_delta))
    built = None
    if sharded and not resident:
        built = cached(_build_fed, factory[1], common + (models is not None, mesh))
        fed = built.fed if stream else built
    program = built if sharded and stream else cached(
        _build_programs, factory[1], common + (epochs_per_call, models is not None,
                                               (group_size, lanes, chunk), shardings, rows))
    counted = built if built is not None else program
    traced_before = counted.traces

    # --- the carry: fresh buffers (the compiled calls donate them) ---
    keep = jax.vmap(program.best_of) if models is not None else program.best_of

    def tracker(best, dtype):
        return Tracker(epoch=jnp.zeros((), jnp.int32), steps=jnp.zeros((), jnp.int32),
                       best_value=jnp.full((), jnp.inf, dtype),
                       best_epoch=jnp.zeros((), jnp.int32), best=best,
                       bad_evals=jnp.zeros((), jnp.int32), stopped=jnp.zeros((), bool),
                       reason=jnp.zeros((), jnp.int32))

    def build(state, key, train_data, val_data, abstract=False):
        """The carry and the data on the device(s); run abstractly first (by ``trace``).
        On a mesh (``fed``) the data stay in host memory and the carry is replicated (split
        over ``"models"`` in a sweep) over every process's devices."""
        state = _fresh(state)
        best = _fresh(keep(state))
        dtype = _run_dtype(state)  # float64 tracking for a float64 run
        tr = (jax.vmap(lambda b: tracker(b, dtype))(best) if models is not None
              else tracker(best, dtype))
        carry = Carry(state=state, key=_fresh(key), tracker=tr)
        if padded is not None:
            carry = _pad(carry, padded - models)
        if fed is not None and not abstract:
            host = lambda d: None if d is None else jax.tree.map(  # noqa: E731
                lambda a: _dist.fetch(a) if isinstance(a, jax.Array) else np.asarray(a), d)
            return _dist.place(carry, fed.state_sh), host(train_data), host(val_data)
        if train_data is not None:
            train_data = _to_device(train_data)
        if val_data is not None:
            val_data = _to_device(val_data)
        if mesh is not None and (resident or not sharded):
            rep = NamedSharding(mesh, P())
            carry = jax.device_put(carry, rep if resident else NamedSharding(mesh, P("models")))
            if train_data is not None:
                train_data = jax.device_put(train_data, rep)
            if val_data is not None:
                val_data = jax.device_put(val_data, rep)
        else:
            carry = jax.device_put(carry, device)
            if train_data is not None:
                train_data = jax.device_put(train_data, device)
            if val_data is not None:
                val_data = jax.device_put(val_data, device)
        return carry, train_data, val_data

    arrays = (None if stream else data,
              None if validation is None or val_stream else validation)
    names = []

    def trace():  # once, abstractly: nothing is built or compiled before the checks pass
        if not stream:
            mask = np.ones(epochs_per_call, bool)

            def program_of(state, key, train_data, val_data):
                return program.jitted(*build(state, key, train_data, val_data, True), 1,
                                      mask)

            signature = _loop.signature((state, key, arrays, padded, _mesh_id(mesh)))
            known = _TRACED.setdefault(program, {})
            if signature not in known:
                if len(known) >= _CACHE_SIZE:
                    known.pop(next(iter(known)))
                known[signature] = tuple(jax.eval_shape(program_of, state, key, *arrays)[1])
            names.extend(known[signature])

    if probe is None:
        trace()
    else:
        probe(trace)
    if make_state is not None:  # `state` was its abstract shape: built only after the checks
        state = make_state()
        _check_state(state, models)
    carry, train_data, val_data = build(state, key, *arrays)
    names = names if not stream else None

    history: dict[str, list] = {}
    if resume is not None:
        carry, history = _restore(resume, carry, settings, names, models)
        if fed is not None:
            carry = _dist.place(carry, fed.state_sh)
        elif mesh is not None:
            carry = jax.device_put(carry, NamedSharding(mesh, P() if resident else P("models")))
        else:
            carry = jax.device_put(carry, device)
        # a fresh carry copies the state checked above; a restored one is checked here
        _check_state(carry.state, None if models is None else padded, what="the resumed state")

    # (epochs, stopped) of the carry, fetched with the records of the call that made it (one
    # device-to-host transfer per call instead of three); None: fetch them from the carry
    status = None

    def done_epochs():
        e = status[0] if status is not None else _dist.fetch(carry.tracker.epoch)
        return int(e.max()) if models is not None else int(e)

    def stopped_flags():
        return status[1] if status is not None else _dist.fetch(carry.tracker.stopped)

    def all_stopped():
        s = stopped_flags()
        return bool(s[:models].all()) if models is not None else bool(s)

    done = done_epochs() if models is None else (len(history.get("epoch", [])))
    if done > epochs:
        raise ValueError(f"epochs: the checkpoint {os.fspath(resume)!r} has run {done} epochs, "
                         f"more than epochs={epochs} (the whole run's epochs, resumed ones "
                         f"included); pass epochs >= {done}")
    every = checkpoint_every or 1
    bar = tqdm(total=epochs, initial=min(done, epochs), desc=desc, unit="epoch",
               disable=(None if progress is None else not progress) if _dist.is_primary()
               else True, leave=False)
    writer = None
    if checkpoint_kind == "orbax":
        from train import sharded_checkpoint as _sharded
        writer = _sharded.Writer(checkpoint)
    single = jax.process_count() == 1
    ahead = None  # (carry, records, (epoch, stopped), active) of a call dispatched ahead

    def launch(carry, before):
        """Dispatches the call that runs epochs ``before + 1 ...`` (asynchronously)."""
        active = min(epochs_per_call, epochs - before)
        mask = np.array([_evaluates(before + i + 1, epochs, eval_every)
                         for i in range(epochs_per_call)])
        carry, records = program(carry, train_data, val_data, active, mask)
        tracked = _tracked(carry.tracker) if single else None
        return carry, records, tracked, active

    try:
        while done < epochs and not all_stopped():
            before = done
            if stream:
                carry, record = _stream_epoch_run(
                    program, carry, data, validation, before,
                    _evaluates(before + 1, epochs, eval_every))
                records = {k: _dist.fetch(v)[None] for k, v in record.items()}
                active = 1
            elif fed is not None:
                carry, record = _fed_epoch(fed, carry, train_data, val_data, eval_batch_size,
                                           _evaluates(before + 1, epochs, eval_every))
                records = {k: _dist.fetch(v)[None] for k, v in record.items()}
                active = 1
            else:
                if ahead is None:
                    ahead = launch(carry, before)
                carry, records, tracked, active = ahead
                ahead = None
                after = before + active
                # Look ahead: dispatch the next call before reading this one's results, so
                # that the host's bookkeeping overlaps the device's next epochs. Not when a
                # checkpoint falls after this call (it needs this carry, which the next call
                # would consume) nor in a multi-process run (every process must agree).
                if (single and after < epochs and (checkpoint is None
                                                   or after // every == before // every)):
                    ahead = launch(carry, after)  # donates carry: read via `tracked` below
                records, status = jax.device_get((records, tracked))  # status None: fetch
                if ahead is not None and all_stopped():
                    # The call ahead ran on a stopped carry, which the program freezes: its
                    # carry is this one, bit for bit, and its records (NaN) are not kept.
                    carry, ahead = ahead[0], None
            if models is None:
                done = done_epochs()
                ran = done - before
            else:
                ran = active
                done = before + active
            for i in range(ran):
                history.setdefault("epoch", []).append(before + i + 1)
                for name, values in records.items():
                    v = np.asarray(values[i])
                    history.setdefault(name, []).append(
                        float(v) if models is None else v[:models].astype(np.float64))
            bar.update(ran)
            if models is None:
                bar.set_postfix({k: f"{history[k][-1]:.4g}" for k in ("loss", "val_loss")
                                 if k in history})
            else:
                stopped = stopped_flags()[:models]
                bar.set_postfix(stopped=f"{int(stopped.sum())}/{models}")
            if checkpoint is not None and (done // every > before // every or done >= epochs
                                           or all_stopped()):
                if writer is not None:
                    writer.save(done, carry, history, settings)
                else:
                    _save(checkpoint, carry, history, settings)
    finally:
        bar.close()
        if writer is not None:
            writer.close()

    return _result(carry, history, models, mesh,
                   counted.traces - traced_before)


@jax.jit
def _tracked(tracker):
    """Copies of the tracker's epoch and stop flag: read on the host after the carry that
    holds them is donated to the next call."""
    return tracker.epoch + 0, tracker.stopped | False


def check_settings(*, epochs, eval_every, epochs_per_call, models, key, patience, min_delta,
                   progress, checkpoint, checkpoint_every, order, eval_batch_size,
                   n: int | None = None, batch_size=None, mesh=None,
                   data_on_devices: bool = False, resume=None) -> None:
    """The checks of :func:`run`'s settings that need neither the state nor the functions;
    ``train.fit`` and ``train.sweep`` call it before they build a state (which may compile
    small programs), with ``n`` and ``batch_size`` for array data."""
    _checks.check_int(epochs, "epochs", 1)
    _checks.check_int(eval_every, "eval_every", 1)
    _checks.check_int(epochs_per_call, "epochs_per_call", 1)
    if models is not None:
        _checks.check_int(models, "models", 1)
    _checks.check_key(key, "key", () if models is None else (models,))
    if patience is not None:
        _checks.check_int(patience, "patience", 1)
    if not isinstance(min_delta, (int, float, np.integer, np.floating)) \
            or isinstance(min_delta, (bool, np.bool_)) or not (
            math.isfinite(min_delta) and min_delta >= 0):
        raise ValueError(f"min_delta: expected a finite number >= 0, got {min_delta!r}")
    if progress not in (None, True, False):
        raise TypeError(f"progress: expected True, False or None, got {progress!r}")
    if checkpoint_every is not None:
        _checks.check_int(checkpoint_every, "checkpoint_every", 1)
        if checkpoint is None:
            raise ValueError("checkpoint_every: expected a checkpoint path to go with it, "
                             "got checkpoint=None")
    if checkpoint is not None:
        _check_writable(checkpoint, "checkpoint",
                        folder_ok=mesh is not None or jax.process_count() > 1)
    if resume is not None:
        check_resume(resume)
    if order not in _loop.ORDERS:
        raise ValueError(f"order: expected one of {_loop.ORDERS}, got {order!r}")
    if eval_batch_size is not None:
        _checks.check_int(eval_batch_size, "eval_batch_size", 1)
    if not isinstance(data_on_devices, (bool, np.bool_)):
        raise TypeError(f"data_on_devices: expected True or False, got {data_on_devices!r}")
    if data_on_devices and models is not None:
        raise ValueError("data_on_devices: expected False for a sweep (models=), which keeps "
                         "the data set on each of its devices already, got True")
    if data_on_devices and mesh is None and n is not None:  # run() checks it for itself
        _refuse_data_on_devices_without_mesh()
    if data_on_devices and jax.process_count() > 1:
        raise ValueError(f"data_on_devices: expected False in a run of "
                         f"{jax.process_count()} processes (each feeds its own rows from the "
                         f"host), got True")
    if n is not None:
        if batch_size is None:
            raise TypeError("batch_size: expected an int for array data, got None")
        _loop._check_batching(n, batch_size, order)


def _refuse_data_on_devices_without_mesh():
    raise ValueError("data_on_devices: expected it with mesh= (the data set on every device "
                     "of the mesh), got data_on_devices=True without a mesh")


def check_resume(resume) -> str:
    """``resume`` as a path (``~`` expanded) where a checkpoint exists (the file or folder,
    or the ``<resume>.prev`` that reading falls back to), or a ``FileNotFoundError`` before
    anything is built or compiled."""
    try:
        path = os.path.expanduser(os.fspath(resume))
    except TypeError:
        raise TypeError(f"resume: expected a path (str or os.PathLike) or None, got "
                        f"{type(resume).__name__} {resume!r}") from None
    if os.path.exists(path) or os.path.exists(_checkpoint.previous_path(path)):
        return path
    raise FileNotFoundError(
        f"resume: expected a checkpoint written by train.fit or train.run (a file, or an Orbax "
        f"folder), got {path!r}: no checkpoint at that path (nor at its previous copy "
        f"{_checkpoint.previous_path(path)!r}); to resume only when a checkpoint exists, pass "
        f"resume=path if os.path.exists(path) else None")


def _evaluates(epoch_no: int, epochs: int, eval_every: int) -> bool:
    return epoch_no % eval_every == 0 or epoch_no >= epochs


def _stream_epoch_run(program: "_Streamed", carry, data, validation, epoch_index: int,
                      evaluated: bool):
    """One epoch over a stream: a compiled step per batch, then evaluation and tracking."""
    key, _, k_steps, _, k_val = program.split_key(carry.key)
    state = _fresh(carry.state)  # step donates it
    sums, count = None, 0
    for i, batch in enumerate(_stream_epoch(data, epoch_index)):
        state, metrics = program.one_step(state, batch, k_steps, i)
        sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
        count += 1
    if count == 0:
        raise ValueError(f"data: the stream gave no batches in epoch {epoch_index}" + (
            " (a function returning the same iterator every epoch? return a fresh one)"
            if callable(data) and epoch_index > 0 else ""))
    means = {k: v / count for k, v in sums.items()}
    evals = {}
    if validation is not None:
        val = _stream_evaluate(program, state, validation, k_val, probe=not evaluated)
        evals = {f"val_{k}": v if evaluated else np.full((), np.nan, v.dtype)
                 for k, v in val.items()}
    return program.finish(carry, state, key, carry.tracker.steps + count, means, evals,
                          jnp.asarray(evaluated))


def _stream_evaluate(program: "_Streamed", state, validation, key, probe: bool = False):
    """Evaluation over a validation stream (or one array batch), weighted by batch size."""
    batches = _stream_epoch(validation, 0) if _is_stream(validation) else [validation]
    total, m = None, 0
    for i, batch in enumerate(batches):
        out = program.eval_batch(state, batch, key, i)
        if probe:
            return out
        b = _loop._num_examples(batch)
        total = ({k: b * v for k, v in out.items()} if total is None else
                 {k: total[k] + b * out[k] for k in total})
        m += b
    if m == 0:
        raise ValueError("validation: the stream gave no batches")
    return {k: v / m for k, v in total.items()}


def _result(carry, history, models, mesh, compilations) -> RunResult:
    tr = carry.tracker
    tr = tr.replace(**{f: _dist.fetch(getattr(tr, f)) for f in ("epoch", "best_epoch", "reason")})
    if models is None:
        reason = STOP_REASONS[int(tr.reason)]
        return RunResult(
            state=carry.state, best=carry.tracker.best, history=history,
            best_epoch=int(tr.best_epoch), stop_reason=reason, epochs_run=int(tr.epoch),
            non_finite_epoch=int(tr.epoch) if reason == "non_finite" else None,
            compilations=compilations, mesh=mesh)
    cut = lambda t: jax.tree.map(  # noqa: E731  (no padding: kept as placed)
        lambda a: a if np.shape(a)[0] == models else a[:models], t)
    ran = int(np.max(np.asarray(tr.epoch)[:models])) if models else 0
    hist = {k: np.stack(v[:ran], axis=1) for k, v in history.items() if k != "epoch"}
    reasons = np.asarray(tr.reason)[:models]
    epochs_run = np.asarray(tr.epoch)[:models]
    return RunResult(
        state=cut(carry.state), best=cut(carry.tracker.best), history=hist,
        best_epoch=np.asarray(tr.best_epoch)[:models],
        stop_reason=[STOP_REASONS[int(r)] for r in reasons], epochs_run=epochs_run,
        non_finite_epoch=np.where(reasons == _NON_FINITE, epochs_run, 0),
        compilations=compilations, mesh=mesh)


# --------------------------------------------------------------------------------------------
# Placement, checks, checkpoints
# --------------------------------------------------------------------------------------------


def _devices_for(models: int, available: int) -> int:
    """How many devices a sweep of ``models`` uses: the fewest model slots per device, then the
    least padding (2 models on 8 devices use 2 devices; 9 on 8 use 5, two slots each)."""
    best = min(range(1, min(models, available) + 1),
               key=lambda d: (math.ceil(models / d), math.ceil(models / d) * d, -d))
    return best


def _platform(device) -> str:
    """The platform a sweep's program is built for (``_chunk`` reads it)."""
    return device.platform


def _check_groups(key, models: int | None, group_size) -> int:
    """``group_size`` checked: it divides ``models`` and every group's keys are equal."""
    group_size = _checks.check_int(group_size, "group_size", 1)
    if group_size == 1:
        return 1
    if models is None:
        raise ValueError(f"group_size: groups of models need models=, got group_size="
                         f"{group_size} for one model")
    if models % group_size:
        raise ValueError(f"group_size: expected a divisor of models={models}, got {group_size}")
    data = np.asarray(jax.random.key_data(key)).reshape(models // group_size, group_size, -1)
    unequal = np.flatnonzero((data != data[:, :1]).any(axis=(1, 2)))
    if unequal.size:
        g = int(unequal[0])
        raise ValueError(
            f"key: with group_size={group_size} the models of each group must share one key "
            f"(key = jnp.repeat(group_keys, {group_size})); models {g * group_size}.."
            f"{(g + 1) * group_size - 1} have different keys")
    return group_size


def _pad(tree, extra: int):
    if extra == 0:
        return tree
    return jax.tree.map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)], axis=0), tree)


def _default_device() -> jax.Device:
    """The device JAX computes on by default (``jax.default_device`` respected)."""
    device = jax.config.jax_default_device
    if isinstance(device, str):
        return jax.devices(device)[0]
    return device if device is not None else jax.devices()[0]


def _to_device(tree):
    return jax.tree.map(jnp.asarray, tree)


def _fresh(tree):
    """New buffers holding ``tree``'s arrays (the compiled calls donate theirs): one batched
    device-to-device copy, where ``jnp.array(a, copy=True)`` compiled a ``copy`` program per
    shape and dtype."""
    return jax.device_put(tree, may_alias=False)


def _check_state(state, models, what: str = "state") -> None:
    leaves = jax.tree_util.tree_leaves_with_path(state)
    if not leaves:
        raise ValueError(f"{what}: expected a pytree with at least one array, got {state!r}")
    floating = []
    for path, leaf in leaves:
        where = f"{what}{jax.tree_util.keystr(path)}"
        if not hasattr(leaf, "dtype") or not hasattr(leaf, "shape"):
            raise TypeError(f"{where}: expected an array, got {type(leaf).__name__}")
        if models is not None and (np.ndim(leaf) == 0 or np.shape(leaf)[0] != models):
            raise ValueError(f"{where}: expected a leading model axis of length {models}, got "
                             f"shape {np.shape(leaf)}")
        if jnp.issubdtype(leaf.dtype, jnp.inexact) and not isinstance(leaf, jax.ShapeDtypeStruct):
            floating.append((where, leaf))
    # on the host (an eager jnp.isfinite compiles two programs per leaf shape), in one
    # transfer where every array is addressable
    if all(not isinstance(a, jax.Array) or a.is_fully_addressable for _, a in floating):
        values = jax.device_get([a for _, a in floating])
    else:
        values = [_dist.fetch(a) for _, a in floating]
    for (where, _), value in zip(floating, values):
        if not np.isfinite(value).all():
            raise ValueError(f"{where}: expected finite values, got NaN or infinity; "
                             "training would start from a broken state")


def _check_array_data(data, name: str) -> int:
    leaves = jax.tree_util.tree_leaves_with_path(data)
    if not leaves:
        raise ValueError(f"{name}: expected arrays with one row per example, got no arrays")
    n = None
    for path, leaf in leaves:
        where = f"{name}{jax.tree_util.keystr(path)}"
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            try:
                leaf = np.asarray(leaf)
            except Exception:
                raise TypeError(f"{where}: expected an array, got {type(leaf).__name__}") \
                    from None
        if leaf.dtype == object or not (jnp.issubdtype(leaf.dtype, jnp.number)
                                        or leaf.dtype == bool):
            raise TypeError(f"{where}: expected a numeric array, got dtype {leaf.dtype}")
        if np.ndim(leaf) == 0:
            raise ValueError(f"{where}: expected one row per example, got a scalar")
        rows = np.shape(leaf)[0]
        if n is None:
            n = rows
        elif rows != n:
            raise ValueError(f"{where}: expected {n} rows like the first array, got shape "
                             f"{np.shape(leaf)}")
        if np.issubdtype(leaf.dtype, np.floating) and not np.all(np.isfinite(leaf)):
            raise ValueError(f"{where}: expected finite values, got NaN or infinity")
    if n == 0:
        raise ValueError(f"{name}: expected at least one example, got 0 rows")
    return n


def _check_like(data, validation, stream: bool) -> None:
    if stream:
        return
    a, b = jax.tree.structure(data), jax.tree.structure(validation)
    if a != b:
        raise ValueError(f"validation: expected the structure of data, {a}, got {b}")
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(data), jax.tree.leaves(validation)):
        if np.shape(x)[1:] != np.shape(y)[1:]:
            raise ValueError(f"validation{jax.tree_util.keystr(path)}: expected rows of shape "
                             f"{np.shape(x)[1:]} like data, got shape {np.shape(y)}")


def _is_orbax_folder(path) -> bool:
    """A folder holding an Orbax checkpoint's step folders (``0``, ``1``, ...)."""
    try:
        return any(e.isdigit() and os.path.isdir(os.path.join(path, e))
                   for e in os.listdir(path))
    except OSError:
        return False


def _checkpoint_kind(path, sharded: bool) -> str | None:
    """``"orbax"`` (a folder) for a run on a mesh or an existing Orbax folder, else
    ``"file"`` (:mod:`train.checkpoint`); a single file is refused for a sharded run."""
    if path is None:
        return None
    path = os.fspath(path)
    if sharded and os.path.isfile(path):
        raise ValueError(f"checkpoint: {path!r} is a single-file checkpoint; a run on a mesh "
                         "writes an Orbax checkpoint folder (every process its shards): pass a "
                         "new path (resume= may name the file)")
    if sharded or _is_orbax_folder(path):
        return "orbax"
    _check_writable(path, "checkpoint")
    _checkpoint.check_destination(path)  # an existing file that is not a checkpoint: refused
    return "file"


def _check_writable(path, name: str, folder_ok: bool = False) -> None:
    path = os.fspath(path)
    if os.path.isdir(path) and not folder_ok and not _is_orbax_folder(path):
        raise ValueError(f"{name}: {path!r} is a folder; expected a file path such as "
                         f"{os.path.join(path, 'ckpt.msgpack')!r} (a folder holds the Orbax "
                         "checkpoint of a run on a mesh)")
    parent = os.path.dirname(os.path.abspath(path))
    probe = parent
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ValueError(f"{name}: cannot create {path!r}: {probe!r} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise PermissionError(f"{name}: cannot write under {probe!r} (permission denied)")


def _save(path, carry, history, settings) -> None:
    _checkpoint.save(path, {
        "carry": carry,
        "history": {k: np.asarray(v, np.float64) for k, v in history.items()},
        "config": dict(settings),
    })


def _check_same_hyperparams(path, fresh, restored) -> None:
    """A resumed run continues the checkpoint's run exactly, with the hyperparameters it
    injected into its optimizer state: this run's own (a new ``train.sgd(0.5)``, or
    ``hyperparams=``) must equal them, or they would be silently replaced."""
    opt_state = getattr(fresh, "opt_state", None)
    if opt_state is None:
        return
    want = _optim.get_hyperparams(opt_state)
    got = _optim.get_hyperparams(getattr(restored, "opt_state", None))
    for name in sorted((set(want) & set(got)) - _optim.scheduled_hyperparams(opt_state)):
        a, b = _dist.fetch(want[name]), _dist.fetch(got[name])
        if a.shape == b.shape and not np.array_equal(a, b):
            show = lambda v: (f"{float(v.reshape(())):.6g}" if v.size == 1  # noqa: E731
                              else np.array2string(v, precision=6, threshold=8))
            raise ValueError(
                f"resume: the checkpoint {os.fspath(path)!r} trained with {name}={show(b)}, "
                f"this run asks for {name}={show(a)}; a resumed run continues the checkpoint's "
                f"run as it was. To go on with new values, start a new run from its "
                f"parameters (train.fit(..., result.params, hyperparams=...))")


def _upcast_best_value(raw, carry) -> None:
    """A float64 run's checkpoint written before float64 runs were tracked in float64 holds
    a float32 best value: resumed, it is widened to float64 (exactly; the comparisons go on
    in float64 from there). Every other leaf must match as it is. (An Orbax checkpoint is
    restored into the run's dtypes by Orbax itself.)"""
    want = getattr(getattr(carry, "tracker", None), "best_value", None)
    tracker = raw.get("carry", {}).get("tracker") if isinstance(raw.get("carry"), dict) else None
    if want is None or not isinstance(tracker, dict):
        return
    got = tracker.get("best_value")
    if isinstance(got, (np.ndarray, np.generic)) and got.dtype == np.float32 \
            and want.dtype == np.float64 and np.shape(got) == np.shape(want):
        tracker["best_value"] = np.asarray(got, np.float64)


def _restore(path, carry, settings, names, models):
    """Reads a run's checkpoint (a file, or an Orbax folder) into the structure and the
    placement of ``carry``; refuses a changed config (the settings, the injected
    hyperparameters in the restored state, then the optimizer's fingerprint)."""
    if os.path.isdir(os.fspath(path)):
        from train import sharded_checkpoint as _sharded
        step, meta = _sharded.read_meta(path)
        _check_resumable(path, meta["config"], settings, meta["history"], names)
        restored = _sharded.restore_carry(path, step, carry)
        _check_same_hyperparams(path, carry.state, restored.state)
        _check_same_optimizer(path, meta["config"], settings)
        return restored, _sharded.history_from_meta(meta, models)
    raw, path = _checkpoint.read(path)  # verified; <path>.prev (with a warning) if corrupt
    if not isinstance(raw, dict) or set(raw) != {"carry", "history", "config"}:
        raise ValueError(f"resume: {os.fspath(path)!r} is not a checkpoint written by "
                         "train.fit/train.run (expected entries carry, history, config)")
    _check_resumable(path, raw["config"], settings, raw["history"], names)
    _upcast_best_value(raw, carry)
    like = {"carry": carry, "history": raw["history"], "config": raw["config"]}
    try:
        restored = _checkpoint.conform(raw, like, path)
    except ValueError as e:
        if "carry/state/opt_state" not in str(e):
            raise
        raise ValueError(f"resume: the checkpoint {os.fspath(path)!r} holds the state of "
                         f"another optimizer than this run's (resume with the same optimizer): "
                         f"{e}") from e
    _check_same_hyperparams(path, carry.state, restored["carry"].state)
    _check_same_optimizer(path, raw["config"], settings)
    history = {}
    for name, values in restored["history"].items():
        values = np.asarray(values)
        if name == "epoch":
            history[name] = [int(v) for v in values.tolist()]
        elif models is None:
            history[name] = values.tolist()
        else:
            history[name] = list(values)
    return restored["carry"], history


# Settings stored as -1 where the run's argument was None, and what a setting the user may
# not have passed follows from.
_NONE_AS = {"batch_size": -1, "n": -1, "patience": -1}
_SETTING_HINTS = {
    "eval_batch_size": " (by default the validation set's rows, at most 1024: a different "
                       "validation set?)",
    "n": " (the number of training examples: different training data?)",
    "validation": " (a validation set given or not)",
}


# Settings compared only after the state is restored (by their own checks), and only when
# the checkpoint has them (older checkpoints do not).
_LATE_SETTINGS = ("optimizer",)


def _check_same_optimizer(path, saved, settings) -> None:
    """The optimizer's fingerprint (:func:`train.optim.fingerprint`, stored by ``train.fit``
    or a ``config={"optimizer": ...}`` of :func:`run`) against the checkpoint's; a checkpoint
    without one (written before fingerprints were stored) is not compared."""
    got, want = saved.get("optimizer"), settings.get("optimizer")
    if got is None or want is None or str(got) == str(want):
        return
    raise ValueError(
        f"resume: the checkpoint {os.fspath(path)!r} was written with an optimizer whose "
        f"hyperparameters differ from this run's optimizer's (their fingerprints, "
        f"train.optim.fingerprint, differ: a learning rate, a schedule, a coefficient or a "
        f"transformation of the chain changed; which one a checkpoint cannot tell); a resumed "
        f"run continues the checkpoint's run as it was: resume with the optimizer it was "
        f"written with, or start a new run (without resume=) from its parameters: "
        f"train.fit(loss_fn, train.checkpoint.restore_params({os.fspath(path)!r}, like=params),"
        f" ..., optimizer=<the new one>)")


def _check_resumable(path, saved, settings, saved_history, names) -> None:
    """The saved settings and recorded names against this run's."""
    for name in sorted(set(settings) | set(saved)):
        if name in _LATE_SETTINGS:
            continue
        got, want = saved.get(name), settings.get(name)
        if isinstance(got, np.generic):
            got = got.item()
        if isinstance(got, np.ndarray):
            got = got.tolist()
        if isinstance(want, tuple):
            want = list(want)
        if got != want:
            show = lambda v: None if name in _NONE_AS and v == _NONE_AS[name] else v  # noqa: E731
            raise ValueError(
                f"resume: the checkpoint {os.fspath(path)!r} was written with "
                f"{name}={show(got)!r}, this run has {name}={show(want)!r}"
                f"{_SETTING_HINTS.get(name, '')}; resume with the same settings")
    saved_names = set(saved_history) - {"epoch"}
    if names is not None and saved_names and saved_names != set(names):
        raise ValueError(
            f"resume: the checkpoint {os.fspath(path)!r} recorded {sorted(saved_names)}, this "
            f"run records {sorted(names)} (the metrics, aux values or evaluation changed); "
            "resume with the same functions")
