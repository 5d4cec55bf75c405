"""Several devices and several processes: meshes, ``jax.distributed`` and feeding the shards.

Data parallelism here is JAX's own machinery, nothing home-made and no ``pmap``: a ``Mesh``
from ``jax.make_mesh`` with an axis ``"data"``, ``NamedSharding`` on every array and
``jax.jit`` with output shardings; XLA's SPMD partitioner inserts the all-reduce of the
gradients. :func:`train.fit`, :func:`train.run` and :func:`train.sweep` take ``mesh=`` (a
``Mesh`` or a number of devices); this module holds the pieces they use and the ones a
script needs to start several processes:

* :func:`initialize`: ``jax.distributed.initialize`` with the CPU collectives (gloo) switched
  on, so the same script runs as several processes on one machine (started by
  ``python -m train.launch -n N script.py``, which tells each process its place through
  ``JAXNETS_*`` environment variables), on a GPU cluster or on a TPU pod (where JAX reads
  every argument from the cluster's environment).
* :func:`data_mesh`: a 1-D mesh over the devices of every process, axis ``"data"``.
* :func:`feed_rows`: rows of host arrays as one global array, each process materialising
  only the shards of its own devices (``jax.make_array_from_callback``);
  :func:`feed_local`: each process's own part of a batch as one global array
  (``jax.make_array_from_process_local_data``).
* :func:`fetch`: a global array back on the host of every process (a replicated one is read
  from a local copy; a sharded one is gathered with ``process_allgather``).

A two-process run on one machine (SCALING.md has a full script and what it printed)::

    python -m train.launch -n 2 --cpu-devices 2 script.py

    # script.py
    import jax, train
    train.distributed.initialize()  # this process's place, from the launcher or the cluster
    result = train.fit(loss, params, (X, y), ..., mesh=jax.device_count())

Every process runs the same script on the same data and the same seed; each one sends only
its rows of every batch to its devices, and all of them end with the same parameters.

References: JAX, "Distributed arrays and automatic parallelization" and "Multi-process
environments" (https://docs.jax.dev/en/latest/multi_process.html).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from nets import _checks

__all__ = ["initialize", "launch", "data_mesh", "feed_rows", "feed_local", "fetch",
           "is_primary"]

DATA, MODELS = "data", "models"

# How `launch` tells each process its place (read by `initialize` when not given).
ENV_COORDINATOR, ENV_PROCESSES, ENV_ID, ENV_CPU_DEVICES = (
    "JAXNETS_COORDINATOR", "JAXNETS_NUM_PROCESSES", "JAXNETS_PROCESS_ID", "JAXNETS_CPU_DEVICES")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids: Sequence[int] | None = None,
               cpu_devices: int | None = None, initialization_timeout: int = 300,
               fallback_to_single: bool = False) -> bool:
    """Joins this process to a multi-process JAX run (call it first, before any computation).

    Switches the CPU backend's collectives to gloo (``jax_cpu_collectives_implementation``;
    without it CPU processes cannot all-reduce), optionally exposes ``cpu_devices`` CPU
    devices in this process (``jax_num_cpu_devices``), then calls
    ``jax.distributed.initialize``. An argument left out is read from the environment
    variables :func:`launch` sets (``JAXNETS_COORDINATOR``, ``JAXNETS_NUM_PROCESSES``,
    ``JAXNETS_PROCESS_ID``, ``JAXNETS_CPU_DEVICES``); without them JAX detects a GPU cluster
    under SLURM or Open MPI and a Cloud TPU pod from their own environment.

    Args:
      coordinator_address: ``"host:port"`` of process 0 (e.g. ``"localhost:12355"``).
      num_processes: the number of processes in the run.
      process_id: this process's index, ``0 <= process_id < num_processes``.
      local_device_ids: the local accelerators this process uses (default all).
      cpu_devices: CPU devices per process (``None``: JAX's default, one).
      initialization_timeout: seconds to wait for all processes to join.
      fallback_to_single: when nothing says where the coordinator is (no argument, no
        ``JAXNETS_*`` variable, no cluster JAX recognises), run as the only process instead
        of raising, so one script runs alone, under :mod:`train.launch` or on a cluster.

    Returns:
      ``True`` when this process joined a ``jax.distributed`` run, ``False`` when it runs
      alone (``fallback_to_single``).
    """
    env = os.environ
    if coordinator_address is None:
        coordinator_address = env.get(ENV_COORDINATOR)
    if num_processes is None and ENV_PROCESSES in env:
        num_processes = _env_int(ENV_PROCESSES)
    if process_id is None and ENV_ID in env:
        process_id = _env_int(ENV_ID)
    if cpu_devices is None and ENV_CPU_DEVICES in env:
        cpu_devices = _env_int(ENV_CPU_DEVICES)
    if coordinator_address is not None and not (
            isinstance(coordinator_address, str) and coordinator_address.rpartition(":")[2]
            .isdigit()):
        raise ValueError(f"coordinator_address: expected 'host:port', got "
                         f"{coordinator_address!r}")
    if num_processes is not None:
        _checks.check_int(num_processes, "num_processes", 1)
    if process_id is not None:
        _checks.check_int(process_id, "process_id", 0)
        if num_processes is not None and process_id >= num_processes:
            raise ValueError(f"process_id: expected 0 <= process_id < num_processes = "
                             f"{num_processes}, got {process_id}")
    if cpu_devices is not None:
        _checks.check_int(cpu_devices, "cpu_devices", 1)
        jax.config.update("jax_num_cpu_devices", int(cpu_devices))
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   local_device_ids=local_device_ids,
                                   initialization_timeout=initialization_timeout)
    except ValueError as e:  # JAX found no cluster to read the coordinator from
        if fallback_to_single and coordinator_address is None and \
                "coordinator_address" in str(e):
            return False
        raise
    return True


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {os.environ[name]!r}") from None


# `launch` stops a process with SIGTERM, then SIGKILL after this many seconds: a process that
# has called `jax.distributed.initialize` catches SIGTERM (JAX's preemption notifier) and
# keeps running.
STOP_GRACE_S = 3.0

# Linux: a child exec'd through this stub gets SIGKILL when the launcher dies, even by
# SIGKILL (prctl PR_SET_PDEATHSIG, which survives exec); argv: launcher pid, command...
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n")


def launch(num_processes: int, command: Sequence[str], *, cpu_devices: int | None = None,
           port: int | None = None, timeout: float | None = None) -> int:
    """Runs ``command`` (e.g. ``[sys.executable, "script.py"]``) as ``num_processes``
    processes on this machine, each told its place through the ``JAXNETS_*`` variables
    that :func:`initialize` reads; their output lines are prefixed ``[i]``.

    Every process is polled: when one exits with a non-zero status, a line on stderr says
    which one and how, and the others are stopped at once. Stopping is SIGTERM to each
    process's group (every process starts in a session of its own), then SIGKILL to what is
    left after ``STOP_GRACE_S`` seconds. ``timeout`` (seconds) stops them all the same way
    and returns 124. SIGTERM or SIGINT to the launcher (when ``launch`` runs in the main
    thread) stops them too and returns ``-signal``. On Linux each process also gets
    SIGKILL if the launcher dies (``PR_SET_PDEATHSIG``), SIGKILL included; the signal
    follows the thread that called ``launch``, so call it from a thread that outlives the
    run.

    Returns:
      0 when every process succeeds; else the status of the first process seen to fail
      (``-N`` for signal N, as ``subprocess``), 124 on ``timeout``, or ``-N`` when the
      launcher itself was sent SIGTERM or SIGINT.
    """
    _checks.check_int(num_processes, "num_processes", 1)
    if cpu_devices is not None:
        _checks.check_int(cpu_devices, "cpu_devices", 1)
    command = [str(c) for c in command]
    if not command:
        raise ValueError("command: expected the program to run, got nothing")
    if port is None:
        with socket.socket() as s:
            s.bind(("localhost", 0))
            port = s.getsockname()[1]
    program = shutil.which(command[0])
    if program is None:
        raise FileNotFoundError(f"command: expected a program to run, got {command[0]!r} "
                                "(not found)")
    if sys.platform.startswith("linux"):
        command = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), program,
                   *command[1:]]
    received: list[int] = []
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(sig) is not signal.SIG_IGN:  # e.g. SIGINT under nohup
                handlers[sig] = signal.signal(sig, lambda signum, _: received.append(signum))
    procs: list[subprocess.Popen] = []
    threads = []
    try:
        for i in range(num_processes):
            env = dict(os.environ, **{ENV_COORDINATOR: f"localhost:{port}",
                                      ENV_PROCESSES: str(num_processes), ENV_ID: str(i)})
            if cpu_devices is not None:
                env[ENV_CPU_DEVICES] = str(cpu_devices)
            procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True, bufsize=1,
                                          start_new_session=True))
            threads.append(threading.Thread(target=_prefix, args=(procs[-1].stdout, f"[{i}] "),
                                            daemon=True))
            threads[-1].start()
        deadline = None if timeout is None else time.monotonic() + timeout
        status = 0
        while True:
            codes = [p.poll() for p in procs]  # every process, every round
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i, status = failed[0]
                how = (f"killed by signal {-status} ({signal.Signals(-status).name})"
                       if status < 0 else f"exit status {status}")
                _say(f"process {i} failed ({how})"
                     + ("; stopping the others" if None in codes else ""))
                break
            if None not in codes:
                break
            if received:
                status = -received[0]
                _say(f"received {signal.Signals(received[0]).name}; stopping the processes")
                break
            if deadline is not None and time.monotonic() > deadline:
                status = 124
                _say(f"timeout after {timeout:g} s; stopping the processes")
                break
            time.sleep(0.05)
    finally:
        _stop(procs)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    for t in threads:
        t.join(timeout=5)
    return status


def _say(message: str) -> None:
    sys.stdout.flush()
    print(f"train.launch: {message}", file=sys.stderr, flush=True)


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)  # the process's own group: what it started goes too
        except (ProcessLookupError, PermissionError):
            pass


def _stop(procs: Sequence[subprocess.Popen], grace: float | None = None) -> None:
    """SIGTERM to every running process, SIGKILL to those left after ``grace`` seconds."""
    grace = STOP_GRACE_S if grace is None else grace
    for p in procs:
        _signal_group(p, signal.SIGTERM)
    end = time.monotonic() + grace
    while any(p.poll() is None for p in procs) and time.monotonic() < end:
        time.sleep(0.05)
    for p in procs:
        _signal_group(p, signal.SIGKILL)
    for p in procs:
        p.wait()


def _prefix(stream, prefix: str) -> None:
    for line in stream:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


def is_primary() -> bool:
    """Whether this is process 0 (the one that prints, plots and writes single files)."""
    return jax.process_index() == 0


def data_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with the axis ``"data"``: over ``devices`` (a list), the first ``devices``
    of ``jax.devices()`` (an int), or all devices of all processes (``None``)."""
    if devices is None or isinstance(devices, (int, np.integer)) and not isinstance(
            devices, bool):
        count = jax.device_count() if devices is None else int(devices)
        if not 1 <= count <= jax.device_count():
            raise ValueError(f"mesh: expected 1 <= devices <= {jax.device_count()} (the "
                             f"devices JAX sees), got {devices}")
        devs = jax.devices()[:count]
    else:
        devs = list(devices)
        if not devs or not all(isinstance(d, jax.Device) for d in devs):
            raise TypeError(f"devices: expected a non-empty list of jax devices, got {devices!r}")
    return jax.make_mesh((len(devs),), (DATA,), devices=devs,
                         axis_types=(jax.sharding.AxisType.Auto,))


def _axis(mesh: Mesh, name: str) -> int:
    return int(dict(mesh.shape).get(name, 1))


def _auto_axes(mesh: Mesh) -> Mesh:
    """``mesh`` with every axis ``AxisType.Auto``: the library places its arrays by sharding
    constraints, which ``Explicit`` axes (``jax.make_mesh``'s default) reject inside
    ``vmap``; the same devices and axis names."""
    auto = jax.sharding.AxisType.Auto
    if all(t == auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(auto,) * len(mesh.axis_names))


def resolve_mesh(mesh, batch_size: int | None) -> Mesh | None:
    """``fit``/``run``'s ``mesh=`` as a mesh with a ``"data"`` axis, or None for one device.

    ``None``: one device (in a multi-process run an error: pass a mesh). An int ``N``: a data
    mesh over the first ``N`` devices. A ``Mesh``: it must have the axis ``"data"``, every
    other axis of size 1. The global batch must split evenly over the data axis."""
    if mesh is None:
        if jax.process_count() > 1:
            raise ValueError(
                f"mesh: this is one of {jax.process_count()} processes (jax.distributed); "
                f"pass mesh=jax.device_count() (data parallel over every process's devices) "
                "or a Mesh with a 'data' axis")
        return None
    if isinstance(mesh, (int, np.integer)) and not isinstance(mesh, bool):
        mesh = data_mesh(int(mesh))
    elif not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a jax.sharding.Mesh with a 'data' axis or a number "
                        f"of devices, got {type(mesh).__name__}")
    mesh = _auto_axes(mesh)
    shape = dict(mesh.shape)
    if DATA not in shape:
        raise ValueError(f"mesh: expected an axis named 'data', got axes {tuple(shape)}")
    others = {k: v for k, v in shape.items() if k != DATA and v != 1}
    if others:
        raise ValueError(f"mesh: one model is sharded along 'data' only; expected the other "
                         f"axes to have size 1, got {others} (train.sweep uses 'models')")
    check_divides(batch_size, _axis(mesh, DATA), "batch_size")
    _check_every_process(mesh)
    return mesh


def _check_every_process(mesh: Mesh) -> None:
    """In a multi-process run every process must own devices of the mesh (it feeds them)."""
    have = {d.process_index for d in mesh.devices.flat}
    if jax.process_count() > 1 and have != set(range(jax.process_count())):
        raise ValueError(
            f"mesh: expected devices of all {jax.process_count()} processes, got devices of "
            f"processes {sorted(have)} (pass mesh=jax.device_count() for all of them)")


def check_divides(rows: int | None, parts: int, name: str) -> None:
    if rows is not None and rows % parts:
        raise ValueError(f"{name}: expected a multiple of the mesh's 'data' axis ({parts} "
                         f"devices: the global batch is split evenly over them), got {rows}")


def sweep_mesh(models: int, mesh, devices, batch_size: int | None,
               devices_for) -> tuple[Mesh | None, int]:
    """A sweep's mesh (axes ``"models"`` and ``"data"``) and its padded number of models.

    Default (``mesh=None``): the model axis takes ``devices_for(models, available)`` devices
    (the fewest model slots per device, then the least padding) and the spare devices go to
    ``"data"`` (the largest count that divides ``batch_size``): 2 models on 4 devices make a
    2 x 2 mesh and train 2 models, not 4. An int: the same over the first ``mesh`` devices.
    A ``Mesh``: its ``"models"`` and ``"data"`` axes (either may be missing: size 1)."""
    if mesh is not None and devices is not None:
        raise ValueError("mesh: pass either mesh= or devices=, not both")
    if isinstance(mesh, Mesh):
        shape = dict(mesh.shape)
        extra = set(shape) - {DATA, MODELS}
        if extra:
            raise ValueError(f"mesh: expected the axes 'models' and/or 'data', got "
                             f"{tuple(shape)}")
        if MODELS not in shape:  # a data-only mesh: one model slot, a models axis of size 1
            mesh = Mesh(np.expand_dims(mesh.devices, 0), (MODELS, *mesh.axis_names))
        mesh = _auto_axes(mesh)
        used = _axis(mesh, MODELS)
        check_divides(batch_size, _axis(mesh, DATA), "batch_size")
        _check_every_process(mesh)
        return mesh, math.ceil(models / used) * used
    if mesh is not None:
        if isinstance(mesh, bool) or not isinstance(mesh, (int, np.integer)):
            raise TypeError(f"mesh: expected a jax.sharding.Mesh or a number of devices, got "
                            f"{type(mesh).__name__}")
        if not 1 <= int(mesh) <= jax.device_count():
            raise ValueError(f"mesh: expected 1 <= devices <= {jax.device_count()}, got {mesh}")
        devs = jax.devices()[:int(mesh)]
    else:
        try:
            devs = list(jax.devices() if devices is None else devices)
        except TypeError:
            raise TypeError(f"devices: expected a list of jax devices, got "
                            f"{type(devices).__name__}") from None
        bad = [d for d in devs if not isinstance(d, jax.Device)]
        if bad:
            raise TypeError(f"devices: expected a list of jax devices (jax.devices()), got "
                            f"{type(bad[0]).__name__} {bad[0]!r} among them")
    if not devs:
        raise ValueError("devices: expected at least one device, got none")
    used = devices_for(models, len(devs))
    data = len(devs) // used
    while batch_size is not None and batch_size % data:
        data -= 1
    padded = math.ceil(models / used) * used
    if used * data == 1 and jax.process_count() == 1:
        return None, padded
    auto = jax.sharding.AxisType.Auto
    if data == 1 and jax.process_count() == 1:  # the models alone, the data on each device
        return jax.make_mesh((used,), (MODELS,), devices=devs[:used], axis_types=(auto,)), padded
    mesh = jax.make_mesh((used, data), (MODELS, DATA), devices=devs[:used * data],
                         axis_types=(auto, auto))
    _check_every_process(mesh)
    return mesh, padded


# --------------------------------------------------------------------------------------------
# Placing and fetching
# --------------------------------------------------------------------------------------------


def _is_key(x) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def place(tree, sharding: NamedSharding):
    """Every leaf of ``tree`` (host or single-device arrays, PRNG keys) as a global array with
    ``sharding``; every process passes the same values and keeps only its own shards."""

    def one(x):
        if _is_key(x):
            data = one(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        host = np.asarray(fetch(x)) if isinstance(x, jax.Array) else np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree)


def feed_rows(data, rows: np.ndarray, sharding: NamedSharding):
    """``data[rows]`` for every leaf of the host pytree ``data`` (rows of shape ``(B,)``, or
    ``(M, B)`` for a sweep's models), as global arrays with ``sharding``: each device's shard
    is gathered on the host of its own process and sent to it, nothing else."""

    def one(leaf):
        shape = rows.shape + leaf.shape[1:]

        def shard(index):
            k = rows.ndim
            return leaf[rows[index[:k]]][(slice(None),) * k + tuple(index[k:])]

        return jax.make_array_from_callback(shape, sharding, shard)

    return jax.tree.map(one, data)


def feed_local(batch, sharding: NamedSharding, name: str = "data"):
    """Each process's own part of a batch (its rows) as one global array per leaf, split
    along the mesh's ``"data"`` axis (``jax.make_array_from_process_local_data``)."""
    parts = _axis(sharding.mesh, DATA) // max(1, jax.process_count())

    def one(path, leaf):
        leaf = np.asarray(leaf)
        if leaf.ndim == 0 or leaf.shape[0] % max(parts, 1):
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)}: expected a batch whose rows split evenly "
                f"over this process's {parts} devices along 'data', got shape {leaf.shape}")
        return jax.make_array_from_process_local_data(sharding, leaf)

    return jax.tree_util.tree_map_with_path(one, batch)


def fetch(x) -> np.ndarray:
    """A (possibly global) array's value on this host."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.sharding.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def fetch_tree(tree) -> Any:
    return jax.tree.map(fetch, tree)
