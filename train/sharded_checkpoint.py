"""Checkpoints of sharded runs with Orbax: a folder written by every process, atomically.

A run on a mesh of several devices, or on several processes (``jax.distributed``), saves
with ``orbax.checkpoint.CheckpointManager``: one sub-folder per saved epoch, the arrays in
``state/`` (each process writes the shards it holds; a replicated array is written once),
the history and the run's settings as JSON in ``meta/`` (written by process 0). Orbax
writes a step into a temporary folder and renames it when every process has finished, so
a run killed mid-write leaves the previous epoch's checkpoint as the latest one; the two
latest are kept, and a latest that cannot be read falls back to the one before, with a
``RuntimeWarning`` (as ``<file>.prev`` does for :mod:`train.checkpoint`).

Restoring reads the arrays straight into the shardings of the run that resumes, whatever
its number of devices or processes: a 2-process run resumes on one device and the other
way round. The single-file format of :mod:`train.checkpoint` stays the one-device format;
a sharded run resumes from such a file too (every process reads it and keeps its shards).

Typed PRNG keys are stored as their raw bits (``jax.random.key_data``) and wrapped back
with the implementation of the resuming run's template.

Orbax is imported only when a sharded run checkpoints (its import takes about a second).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import jax
import numpy as np

from train import distributed as _dist

__all__ = ["Writer", "is_checkpoint_folder", "read_meta", "restore_carry"]

FORMAT = "jaxnets-run/1"


def _ocp():
    import orbax.checkpoint as ocp
    return ocp


def _manager(path: str, create: bool):
    ocp = _ocp()
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=create,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(path), options=options)


def is_checkpoint_folder(path) -> bool:
    """Whether ``path`` is a folder (an Orbax checkpoint, or where one goes)."""
    return path is not None and os.path.isdir(os.fspath(path))


def _encode(tree):
    """Typed PRNG keys as their raw bits (Orbax stores plain arrays)."""
    return jax.tree.map(lambda a: jax.random.key_data(a) if _dist._is_key(a) else a, tree)


def _json_history(history: dict) -> dict:
    out = {}
    for name, values in history.items():
        out[name] = [np.asarray(v).tolist() for v in values]
    return out


class Writer:
    """Saves a run's carry, history and settings at ``path`` (a folder) at epoch steps."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._mgr = None

    def save(self, step: int, carry, history: dict, config: dict) -> None:
        ocp = _ocp()
        if self._mgr is None:
            self._mgr = _manager(self.path, create=True)
        for old in self._mgr.all_steps():  # steps at or after this one are an earlier
            if old >= step:                 # run's (a fresh run into an old folder, or a
                self._mgr.delete(old)       # resumed one passing them again): superseded
        meta = {"format": FORMAT, "history": _json_history(history), "config": dict(config)}
        self._mgr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_encode(carry)), meta=ocp.args.JsonSave(meta)))
        self._mgr.wait_until_finished()

    def close(self) -> None:
        if self._mgr is not None:
            self._mgr.close()
            self._mgr = None


def read_meta(path) -> tuple[int, dict]:
    """The latest readable step of the Orbax checkpoint at ``path`` and its history and
    settings; a latest step whose metadata cannot be read falls back to the one before."""
    ocp = _ocp()
    path = os.fspath(path)
    mgr = _manager(path, create=False)
    try:
        steps = sorted(mgr.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"resume: {path!r} holds no finished checkpoint (an Orbax "
                                    "checkpoint folder written by train.run/fit on a mesh)")
        errors = []
        for step in steps:
            try:
                meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
                meta = meta["meta"]
                if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                    raise ValueError("not written by train.run/fit")
            except Exception as e:  # noqa: BLE001 - any unreadable step falls back
                errors.append(f"step {step}: {type(e).__name__}: {e}")
                continue
            if errors:
                warnings.warn(f"checkpoint {path!r}: the latest step could not be read "
                              f"({errors[0]}); restored step {step} instead", RuntimeWarning,
                              stacklevel=3)
            return step, meta
        raise ValueError(f"resume: no readable checkpoint in {path!r}: " + "; ".join(errors))
    finally:
        mgr.close()


def restore_carry(path, step: int, like):
    """The carry saved at ``step``, placed with the shardings of ``like`` (the resuming run's
    own carry: its structure, shapes, dtypes and placement)."""
    ocp = _ocp()

    def abstract(a):
        if _dist._is_key(a):
            a = jax.random.key_data(a)
        return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding)

    target = jax.tree.map(abstract, like)
    mgr = _manager(os.fspath(path), create=False)
    try:
        raw = mgr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))["state"]
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"resume: the checkpoint {os.fspath(path)!r} (step {step}) does not "
                         f"match this run's state ({type(e).__name__}: {e})") from e
    finally:
        mgr.close()
    return jax.tree.map(
        lambda t, v: jax.random.wrap_key_data(v, impl=jax.random.key_impl(t))
        if _dist._is_key(t) else v, like, raw)


def history_from_meta(meta: dict, models) -> dict:
    history = {}
    for name, values in meta["history"].items():
        if name == "epoch":
            history[name] = [int(v) for v in values]
        elif models is None:
            history[name] = [float(v) for v in values]
        else:
            history[name] = [np.asarray(v, np.float64) for v in values]
    return history


def config_from_meta(meta: dict) -> Any:
    return meta["config"]
