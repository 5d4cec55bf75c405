"""Training: the note's optimizer, one loop for every model, ``fit``, sweeps, and more.

* :mod:`train.runner`: :func:`run`, the one loop: any ``step(state, batch, key)`` over any
  state pytree, with history, evaluation in batches, early stopping, checkpoints, bitwise
  resume, progress, several epochs per call and many models in one ``vmap``.
* :mod:`train.optim`: :func:`sgd` (``W <- W - alpha (dW + lambda W)``), injected
  hyperparameters (:func:`get_hyperparams`, :func:`set_hyperparams`), and
  :func:`train.optim.fingerprint`, the digest of an optimizer's settings that a checkpoint
  of ``fit`` stores and a resume compares.
* :mod:`train.loop`: the loss form: :class:`TrainState`, :func:`init_state`,
  :func:`make_step`, :func:`make_evaluate`, :func:`make_epoch` (one ``lax.scan``),
  :func:`per_example_grads`; the loss-function contract and the last-batch rule.
* :mod:`train.fit`: :func:`fit` and :class:`FitResult`, the loss form over :func:`run`.
* :mod:`train.sweep`: :func:`sweep` (many models in one ``vmap``-ed program, spread over
  devices), :func:`sweep_structural`, :func:`grid`.
* :mod:`train.distributed`: several devices and processes (``jax.distributed``, meshes,
  feeding each process's shards); :mod:`train.sharded_checkpoint`: Orbax checkpoints of
  runs on a mesh. ``fit``, ``run`` and ``sweep`` take ``mesh=``.
* :mod:`train.data`, :mod:`train.checkpoint` (``restore_params``: a new run from a
  checkpoint's parameters), :mod:`train.newton`.

``train.fit``, ``train.run`` and ``train.sweep`` are the functions; their modules stay
importable by name (``from train.sweep import grid``).
"""

from train import checkpoint, data, distributed, loop, newton, optim, runner
from train.fit import FitResult, fit
from train.loop import (
    TrainState,
    init_state,
    make_epoch,
    make_evaluate,
    make_step,
    minibatch_indices,
    per_example_grads,
)
from train.optim import get_hyperparams, set_hyperparams, sgd
from train.runner import RunResult, run
from train.sweep import SweepResult, grid, sweep, sweep_structural

__all__ = [
    "checkpoint", "data", "distributed", "loop", "newton", "optim", "runner",
    "sgd", "get_hyperparams", "set_hyperparams",
    "TrainState", "init_state", "make_step", "make_epoch", "make_evaluate",
    "minibatch_indices", "per_example_grads",
    "run", "RunResult", "fit", "FitResult",
    "sweep", "sweep_structural", "grid", "SweepResult",
]
