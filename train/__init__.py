"""Training: the note's optimizer, compiled steps and epochs, ``fit``, sweeps, and more.

* :mod:`train.optim`: :func:`sgd` (``W <- W - alpha (dW + lambda W)``), injected
  hyperparameters (:func:`get_hyperparams`, :func:`set_hyperparams`).
* :mod:`train.loop`: :class:`TrainState`, :func:`init_state`, :func:`make_step`,
  :func:`make_epoch` (one ``lax.scan``), :func:`make_evaluate`, :func:`per_example_grads`;
  the loss-function contract and the last-batch rule are in its docstring.
* :mod:`train.fit`: :func:`fit` and :class:`FitResult` (validation, early stopping,
  divergence, checkpoints and resume).
* :mod:`train.sweep`: :func:`sweep` (many models in one ``vmap``-ed program, spread over
  devices), :func:`sweep_structural`, :func:`grid`.
* :mod:`train.data`, :mod:`train.checkpoint`, :mod:`train.newton`.

``train.fit`` and ``train.sweep`` are the functions; their modules stay importable by name
(``from train.sweep import grid``).
"""

from train import checkpoint, data, loop, newton, optim
from train.fit import FitResult, fit
from train.loop import (
    Carry,
    TrainState,
    Tracker,
    init_state,
    make_epoch,
    make_evaluate,
    make_step,
    make_tracked_epoch,
    minibatch_indices,
    per_example_grads,
)
from train.optim import get_hyperparams, set_hyperparams, sgd
from train.sweep import SweepResult, grid, sweep, sweep_structural

__all__ = [
    "checkpoint", "data", "loop", "newton", "optim",
    "sgd", "get_hyperparams", "set_hyperparams",
    "TrainState", "Tracker", "Carry", "init_state", "make_step", "make_epoch",
    "make_evaluate", "make_tracked_epoch", "minibatch_indices", "per_example_grads",
    "fit", "FitResult",
    "sweep", "sweep_structural", "grid", "SweepResult",
]
