"""Run an experiment: a config and a seed in, a folder with everything the run produced out.

A run folder (default `runs/<name>/<UTC time>-seed<N>`) holds:

- `config.json`: every config field, written before the run starts;
- `metrics.json`: exactly what `run` returned, as deterministic JSON (same seed, same
  machine and number of devices: byte-identical files). No timings here: the run's wall time goes to
  `environment.json`, an experiment's own timings to its `timings.json`.
  Non-finite floats are written as the strings `"nan"`, `"inf"`, `"-inf"` (a diverged
  run is a result, not an error);
- `environment.json`: library versions, backend and devices, x64 flag, command line,
  start time and wall time;
- whatever `run` wrote (PNG figures, `history.csv`, `timings.json`).

The run writes into a staging folder `<folder>.partial-<host>-<pid>` beside the target, renamed
to the target only on success; on any failure it is removed and the error re-raised. A run
holds `<folder>.lock` while it runs: a second run into the same folder is refused at its
start. Staging folders of killed runs are removed by the next run into the same parent.
"""

import contextlib
import csv
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
import types
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import experiments
from experiments import UsageError
from experiments._config import convert, describe_fields, make_config, validate  # noqa: F401

_PACKAGES = ("jax", "jaxlib", "optax", "flax", "chex", "numpy", "scikit-learn", "matplotlib")
_progress_on = True  # set by `execute(progress=...)` for the length of a run


# --- configs --------------------------------------------------------------------------------

# `--set` parsing, each field's constraints and `make_config` live in `experiments._config`
# (imported above: it needs no JAX).

def _resolve(name_or_module) -> tuple[types.ModuleType, str]:
    if isinstance(name_or_module, str):
        module, name = experiments.load(name_or_module), name_or_module
    else:
        module = name_or_module
        name = module.__name__.rpartition(".")[2].lstrip("_").replace("_", "-")
    for attr in ("Config", "SMOKE", "run"):
        if not hasattr(module, attr):
            raise TypeError(f"experiment module {module.__name__} has no {attr}")
    if not (dataclasses.is_dataclass(module.Config)
            and "seed" in {f.name for f in dataclasses.fields(module.Config)}):
        raise TypeError(f"{module.__name__}.Config must be a dataclass with a `seed: int` field")
    return module, name


# --- files -----------------------------------------------------------------------------------

def to_jsonable(obj: Any) -> Any:
    """`obj` with numpy/jax scalars and arrays as Python numbers and lists, tuples as lists,
    dict keys as strings, and non-finite floats as the strings "nan", "inf", "-inf".
    Floats below 64 bits keep the shortest decimals that round-trip in their precision.

    >>> to_jsonable({"err": np.float32(0.1), "curve": np.array([1.0, np.inf]), 3: (1, None)})
    {'err': 0.1, 'curve': [1.0, 'inf'], '3': [1, None]}
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (jax.Array, np.ndarray, np.generic)):
        a = np.asarray(obj)
        if jnp.issubdtype(a.dtype, jnp.floating) and a.dtype.itemsize < 8:
            # float32, bfloat16...: the shortest decimals that give back the same value
            a = np.array([float(str(v)) for v in a.ravel()]).reshape(a.shape)
        return to_jsonable(a.tolist())
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "nan" if math.isnan(obj) else "inf" if obj > 0 else "-inf"
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    raise TypeError(f"{obj!r} of type {type(obj).__name__} cannot be written as JSON")


def dumps(obj: Any) -> str:
    """Deterministic JSON text of `to_jsonable(obj)`: sorted keys, indent 2, final newline."""
    return json.dumps(to_jsonable(obj), sort_keys=True, indent=2, allow_nan=False) + "\n"


def write_json(path, obj: Any) -> None:
    """Write `obj` to `path` as deterministic JSON (see `dumps`)."""
    Path(path).write_text(dumps(obj))


def write_csv(path, rows: list[dict] | dict[str, Any]) -> None:
    """Write a table to `path`: a list of row dicts, or a dict of equal-length columns
    (sequences or 1-D arrays). Values as in `to_jsonable` (floats exactly, `nan` for NaN)."""
    if isinstance(rows, dict):
        columns = {k: to_jsonable(v if isinstance(v, (list, tuple, np.ndarray, jax.Array))
                                  else list(v)) for k, v in rows.items()}
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns of unequal lengths: {lengths}")
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    else:
        rows = [to_jsonable(r) for r in rows]
    fieldnames = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


# --- run-time helpers ------------------------------------------------------------------------

def predict(model, params, X, chunk: int = 256) -> np.ndarray:
    """``model``'s evaluation-mode outputs for ``X`` (a stateless :class:`nets.Model`),
    ``chunk`` examples per call: one compiled program per model and chunk shape (the last
    chunk is padded with copies of the last example, whose outputs are dropped)."""
    n = len(X)
    size = min(chunk, n)
    pad = -n % size
    Xp = np.concatenate([X, np.repeat(X[-1:], pad, axis=0)]) if pad else X
    out = [np.asarray(model.batch_apply(params, Xp[i:i + size])[0])
           for i in range(0, len(Xp), size)]
    return np.concatenate(out)[:n]


def progress_enabled() -> bool:
    """Whether this run shows progress bars: off under `--no-progress` or when stderr is not a
    terminal. Pass it on as `train.fit(..., progress=progress_enabled())` (and `train.sweep`)."""
    return _progress_on and sys.stderr.isatty()


def progress(iterable, enabled: bool | None = None, **kwargs):
    """`iterable` under a tqdm bar on stderr (`**kwargs` go to tqdm).

    `enabled=None`: on unless the run was started with `--no-progress` (`execute(progress=False)`)
    or stderr is not a terminal. A disabled bar still accepts `set_postfix` and the like.
    """
    if enabled is None:
        enabled = progress_enabled()
    return tqdm(iterable, disable=not enabled, **kwargs)


def enable_compilation_cache(path=None) -> Path:
    """Turn on JAX's persistent compilation cache at `path`, `$JAXNETS_CACHE_DIR` or
    `~/.cache/jaxnets/xla` (first set wins), caching every compiled program; returns the folder."""
    from jax.experimental.compilation_cache import compilation_cache

    path = path or os.environ.get("JAXNETS_CACHE_DIR") or "~/.cache/jaxnets/xla"
    path = Path(path).expanduser()
    if jax.config.jax_compilation_cache_dir != str(path):
        jax.config.update("jax_compilation_cache_dir", str(path))
        compilation_cache.reset_cache()  # JAX sets its cache up once; a new folder needs a reset
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    # -1, not 0: 0 lets JAX substitute a filesystem-dependent minimum size.
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "__main__.py" and Path(argv[0]).parent.name == "experiments":
        argv[:1] = ["python", "-m", "experiments"]
    return shlex.join(argv)


def environment(started: datetime.datetime, wall_time_s: float) -> dict:
    """Versions, platform, devices, x64 flag, command line, start time and wall time of a run."""
    devices = jax.devices()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": {p: _version(p) for p in _PACKAGES},
        "backend": jax.default_backend(),
        "device_kinds": sorted({d.device_kind for d in devices}),
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "x64": bool(jax.config.jax_enable_x64),
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
        "command": _command_line(),
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_time_s": round(wall_time_s, 3),
    }


def _writable_out(out) -> Path:
    """`out` as a path that a new run folder can take, checked before anything is written:
    UsageError if it is the current folder or above it (`.`, `..`, `/`), or if its nearest
    existing ancestor is not a folder or not writable."""
    path = Path(out).expanduser()
    absolute = Path(os.path.abspath(path))  # `.`, `..` resolved; symbolic links kept
    if absolute == Path(absolute.anchor) or Path.cwd().is_relative_to(absolute):
        raise UsageError(f"output folder {str(out)!r} is the current folder or one above it; "
                         "give a new folder's path (the run folder is created there)")
    parent = absolute.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"output folder {str(out)!r} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {str(out)!r} cannot be created: {parent} is not "
                         "writable by this user")
    return path


def _target(name: str, seed: int, out, now: datetime.datetime) -> Path:
    if out is not None:
        out = _writable_out(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"output folder {out} exists and is not an empty folder; "
                             "give a new one (an earlier run is never overwritten)")
        return out
    base = Path("runs") / name / f"{now:%Y%m%dT%H%M%SZ}-seed{seed}"
    path, i = base, 1
    while path.exists():
        path, i = base.with_name(f"{base.name}-{i}"), i + 1
    return path


@contextlib.contextmanager
def _progress(enabled: bool):
    global _progress_on
    saved, _progress_on = _progress_on, enabled
    try:
        yield
    finally:
        _progress_on = saved


# --- one run per folder, no litter -----------------------------------------------------------

def _claim(target: Path):
    """Claims `target` for this run; returns the function that gives it back.

    The claim is an exclusive `fcntl.flock` on `<target>.lock` beside the folder, which the OS
    drops when the process dies, so a killed run never blocks the next one (without flock, on
    Windows: the lock file's exclusive creation). A second run into the same folder is refused
    here, at its start, instead of losing its work at its end. Staging folders
    `*.partial-<host>-<pid>` (and their lock files) that killed runs left in the same parent
    are removed: the process that wrote one must be gone from this machine (another host's
    are left alone: a folder shared by the hosts of a multi-host run).
    """
    import re

    from train.checkpoint import owner_gone

    try:
        import fcntl
    except ImportError:  # Windows
        fcntl = None
    target.parent.mkdir(parents=True, exist_ok=True)

    def take(lock: Path):
        """An open descriptor holding `lock`, or None where another process holds it."""
        while True:
            flags = os.O_RDWR | os.O_CREAT | (0 if fcntl else os.O_EXCL)
            try:
                fd = os.open(lock, flags, 0o666)
            except FileExistsError:
                return None
            if fcntl is None:
                return fd
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            try:  # the holder before us may have removed the file after we opened it
                if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def give_back(lock: Path, fd: int) -> None:
        if fcntl is not None:  # removed while held: a process that opened it meanwhile retries
            lock.unlink(missing_ok=True)
            os.close(fd)
        else:
            os.close(fd)
            lock.unlink(missing_ok=True)

    lock = target.with_name(f"{target.name}.lock")
    fd = take(lock)
    if fd is None:
        hint = "" if fcntl else f" (if no run is writing there, delete {lock})"
        raise UsageError(f"output folder {target} is being written by another run right now"
                         f"{hint}; wait for it to finish or give another folder")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        give_back(lock, fd)  # a run that finished after our first look
        raise UsageError(f"output folder {target} exists and is not an empty folder; "
                         "give a new one (an earlier run is never overwritten)")
    for stale in target.parent.iterdir():
        m = re.fullmatch(r"(.+)\.partial-((?:[A-Za-z0-9_]+-)?\d+)", stale.name)
        if m and stale.is_dir() and owner_gone(m.group(2)):
            shutil.rmtree(stale, ignore_errors=True)
            other = stale.with_name(f"{m.group(1)}.lock")
            if other != lock and fcntl is not None and other.exists():
                held = take(other)
                if held is not None:
                    give_back(other, held)
    return lambda: give_back(lock, fd)


def execute(name_or_module, config=None, *, out=None, smoke=False, overrides=None, seed=None,
            progress=True) -> tuple[dict, Path]:
    """Run an experiment into a new folder; returns (metrics as in metrics.json, the folder).

    Args:
      name_or_module: a registered experiment name, or an experiment module.
      config: a `Config` instance to start from (default `Config()`).
      out: the run folder (must not exist, or be empty); default `runs/<name>/<UTC time>-seed<N>`.
      smoke: apply the module's `SMOKE` overrides.
      overrides: `{field: value}`; string values are parsed by the field's type (see `convert`).
      seed: replaces `config.seed`.
      progress: False turns `progress` bars off for this run.

    Raises UsageError, before anything runs or is written, on an unknown name, key or value
    (every field is checked: `experiments._config`), or an `out` that is not empty, is the
    current folder or above it, or cannot be created. Anything the run raises propagates, and no run folder is left.
    """
    module, name = _resolve(name_or_module)
    config = make_config(module, config, smoke=smoke, overrides=overrides, seed=seed)
    now = datetime.datetime.now(datetime.timezone.utc)
    target = _target(name, config.seed, out, now)
    enable_compilation_cache()

    try:
        release = _claim(target)  # one run per folder; staging folders of killed runs removed
    except OSError as e:  # what `_target`'s look could not tell (a read-only mount, a quota)
        raise UsageError(f"output folder {target} cannot be created: "
                         f"{e.strerror or e}") from None
    from train.checkpoint import owner

    staging = target.with_name(f"{target.name}.partial-{owner()}")
    if target.exists():  # empty (checked): replaced by the run's folder at the end, so
        try:             # a folder that cannot be (a mount point) is refused before the run
            target.rmdir()
        except OSError as e:
            release()
            raise UsageError(f"output folder {target} is empty but cannot be replaced by the "
                             f"run's folder ({e.strerror or e}: a mount point?); give a new "
                             f"folder inside it, e.g. --out {target / 'run'}") from None
    try:
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed process with our pid
        staging.mkdir(parents=True)
        write_json(staging / "config.json", dataclasses.asdict(config))
        start = time.perf_counter()
        with _progress(progress):
            metrics = module.run(config, staging)
        wall_time_s = time.perf_counter() - start
        if not isinstance(metrics, dict):
            raise TypeError(f"{module.__name__}.run returned {type(metrics).__name__}, not a dict")
        metrics = to_jsonable(metrics)
        write_json(staging / "metrics.json", metrics)
        write_json(staging / "environment.json", environment(now, wall_time_s))
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        release()
    return metrics, target


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and len(v) > 4:
        return f"[{len(v)} values]"
    return str(v) if not isinstance(v, list) else "[" + ", ".join(map(_short, v)) + "]"


def format_summary(metrics: dict, outdir: Path) -> str:
    """The metrics on one line each, then the folder and the files in it; last, a warning
    naming every metric that says a training run became non-finite (a ``stop_reason`` of
    ``"non_finite"``), which a headline number alone would hide."""
    flat = _flatten(metrics)
    lines = [f"  {k} = {_short(v)}" for k, v in sorted(flat.items())]
    files = sorted(str(p.relative_to(outdir)) for p in Path(outdir).rglob("*") if p.is_file())
    diverged = sorted(k for k, v in flat.items() if v == "non_finite")
    warning = ([f"warning: a training run became non-finite ({', '.join(diverged)}): its "
                f"numbers are those of its last finite epoch; try a smaller learning rate"]
               if diverged else [])
    return "\n".join(["metrics:", *lines, f"wrote {outdir}/", *(f"  {f}" for f in files),
                      *warning])
