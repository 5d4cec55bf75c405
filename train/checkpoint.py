"""Checkpoints without pickle: msgpack via `flax.serialization`, checksummed, written atomically.

A checkpoint is one file holding one pytree: arrays, Python scalars and strings, `None`,
dicts, lists, tuples, NamedTuples (optax optimizer states among them) and `flax.struct`
dataclasses. The payload is flax's msgpack format, so a file never executes code when read.

**Integrity.** The file is a 54-byte header (the magic `JAXNETS-CKPT\\n`, a format version,
the payload's length and its SHA-256) followed by the payload. `restore` checks all four
before decoding anything, so a flipped byte, a truncated or an extended file is an error
naming the file (`CheckpointCorruptError`), never a state with wrong numbers.

**The previous checkpoint is kept.** `save` writes the new file beside the destination,
fsyncs it, reads it back and verifies its checksum; only then does the current checkpoint
(if it verifies) become `<path>.prev` and the new file replace `<path>` (`os.replace`). A
kill at any point leaves `<path>` whole, old or new. When `<path>` is missing or corrupt,
`restore` falls back to `<path>.prev` with a `RuntimeWarning` naming both files; when both
are unreadable it raises an error naming both. `save` never replaces a file that is not a
checkpoint (a `FileExistsError`: its data would be lost), and `restore` names a pickle file
as one (checkpoints are never read with pickle). A leading `~` in a path is the home folder.

**Litter.** A writer killed mid-write leaves a temporary file
`.<name>.<host>-<pid>-<hex>.tmp`; `restore` never reads one, and the next `save` into the
folder removes those whose process, on this host, is no longer alive (another host's are
left to it: a shared folder in a multi-host run).

**Older files.** Checkpoints written before the header existed (plain msgpack) are still
read, with a `RuntimeWarning` that their contents cannot be verified; the next `save` writes
the new format (a resumed run does so after its first checkpoint interval).

Typed PRNG keys (`jax.random.key(...)`) cannot be serialised as such: `save` stores their raw
bits (`jax.random.key_data`) together with the implementation name, and `restore` wraps them
back with `jax.random.wrap_key_data`, so a run resumes with exactly the same random stream.

Example:
    >>> import os, tempfile
    >>> import jax, jax.numpy as jnp
    >>> from train import checkpoint
    >>> state = {"params": {"W": jnp.ones((2, 3))}, "key": jax.random.key(0), "step": 7}
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "run", "ckpt.msgpack")
    >>> checkpoint.save(path, state)
    >>> back = checkpoint.restore(path, like=state)
    >>> back["step"], back["params"]["W"].shape, str(jax.random.key_impl(back["key"]))
    (7, (2, 3), 'threefry2x32')
    >>> bool((jax.random.key_data(back["key"]) == jax.random.key_data(state["key"])).all())
    True
    >>> checkpoint.save(path, {**state, "step": 8})  # the step-7 file becomes ckpt.msgpack.prev
    >>> sorted(os.listdir(os.path.dirname(path)))
    ['ckpt.msgpack', 'ckpt.msgpack.prev']
    >>> tmp.cleanup()
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
import struct
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

__all__ = ["CheckpointCorruptError", "check_destination", "conform", "previous_path", "read",
           "restore", "restore_params", "save"]

# The marker that replaces a typed PRNG key array in the stored state dict:
# {_KEY_MARKER: impl name (e.g. "threefry2x32"), _KEY_DATA: uint32 array of key bits}.
_KEY_MARKER = "__jaxnets_prng_key_impl__"
_KEY_DATA = "__jaxnets_prng_key_data__"

_SCALARS = (bool, int, float, complex)
_STORABLE = (np.ndarray, np.generic, str, bytes, type(None)) + _SCALARS


def _is_key_array(x: Any) -> bool:
    """True for a typed PRNG key array (dtype `key<impl>`), False for anything else."""
    dtype = getattr(x, "dtype", None)
    return (
        isinstance(x, jax.Array)
        and dtype is not None
        and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    )


def _join(path: str, name: Any) -> str:
    return f"{path}/{name}" if path else str(name)


def _encode(tree: Any, path: str = "") -> Any:
    """Replaces key arrays by markers and jax arrays by NumPy arrays in a flax state dict."""
    if isinstance(tree, dict):
        return {k: _encode(v, _join(path, k)) for k, v in tree.items()}
    if _is_key_array(tree):
        return {
            _KEY_MARKER: str(jax.random.key_impl(tree)),
            _KEY_DATA: np.asarray(jax.random.key_data(tree)),
        }
    if isinstance(tree, jax.Array):
        return np.asarray(tree)
    if isinstance(tree, _STORABLE):
        return tree
    raise TypeError(
        f"cannot checkpoint the leaf at {path or '<root>'!r}: expected an array, a Python "
        f"scalar, a string or None, got {type(tree).__name__}. Register the type with "
        "flax.serialization.register_serialization_state or make it a flax.struct dataclass."
    )


def _is_key_marker(tree: Any) -> bool:
    return isinstance(tree, dict) and set(tree) == {_KEY_MARKER, _KEY_DATA}


def _decode(tree: Any) -> Any:
    """Wraps key markers of a restored state dict back into typed PRNG key arrays."""
    if _is_key_marker(tree):
        return jax.random.wrap_key_data(jnp.asarray(tree[_KEY_DATA]), impl=tree[_KEY_MARKER])
    if isinstance(tree, dict):
        return {k: _decode(v) for k, v in tree.items()}
    return tree


# The file format: a fixed header, then the msgpack payload.
_MAGIC = b"JAXNETS-CKPT\n"
_VERSION = 1
_HEADER = struct.Struct(f"<{len(_MAGIC)}sBQ32s")  # magic, version, payload bytes, SHA-256
_MSGPACK_MAPS = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])  # how an older (headerless) file starts
# pickle's PROTO opcode and a protocol number (2 to 5). A msgpack file starting with 0x80 is
# the empty map and nothing after it, so the two are never confused.
_PICKLE = re.compile(rb"\A\x80[\x02-\x05]")

# A temporary file of `save`: .<name>.<owner>-<hex>.tmp (the new checkpoint) or
# .<name>.prev.<owner>-<hex>.tmp (the previous one, on its way to <name>.prev); <owner> is
# `owner()`, <host>-<pid> (files of older versions: <pid> alone).
_TMP = r"^\.{name}(?:\.prev)?\.((?:[A-Za-z0-9_]+-)?\d+)-[0-9a-f]+\.tmp$"


class CheckpointCorruptError(ValueError):
    """A checkpoint file failed its integrity check (or is not a checkpoint at all)."""


def previous_path(path: str | os.PathLike) -> str:
    """Where `save` keeps the checkpoint before the latest one: `<path>.prev` (`~` expanded)."""
    return _path(path) + ".prev"


def _path(path: str | os.PathLike) -> str:
    """A path argument as a string, with a leading `~` expanded to the home folder (as a
    shell would: the checkpoint of `"~/runs/ckpt.msgpack"` goes to the home folder, not to a
    folder named `~`)."""
    return os.path.expanduser(os.fspath(path))


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def owner() -> str:
    """``<host>-<pid>``: names this process's temporary files and staging folders, so that
    litter is told from live work by host AND process (a folder shared by several machines,
    as in a multi-host run, holds files of processes this machine cannot see)."""
    return f"{_host()}-{os.getpid()}"


def owner_gone(token: str) -> bool:
    """Whether the writer ``token`` (``owner()``, or a bare pid of an older version) is a
    process of THIS machine that is no longer alive. Another host's files are never litter
    here: they are that host's to clean up."""
    host, _, pid = token.rpartition("-")
    if host and host != _host():
        return False
    return not process_alive(int(pid))


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (True where that cannot be told: Windows,
    another user's process, this process itself). Used to tell litter from live work."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, someone else's
        return True
    return True


def _pack(payload: bytes) -> bytes:
    return _HEADER.pack(_MAGIC, _VERSION, len(payload), hashlib.sha256(payload).digest()) + payload


def _payload(path: str, data: bytes) -> bytes | None:
    """The verified payload of a checkpoint file's bytes; None for an older headerless file.

    Raises:
        CheckpointCorruptError: a wrong header, version, length or checksum (names `path`).
    """

    def corrupt(what: str) -> CheckpointCorruptError:
        return CheckpointCorruptError(f"checkpoint {path!r} is corrupt: {what}")

    kind = _kind(data)
    if kind == "older":
        return None  # written before checksums: plain msgpack of a state dict
    if kind == "damaged":
        raise corrupt("its header is damaged")
    if kind != "checkpoint":
        raise CheckpointCorruptError(f"{path!r} {_not_a_checkpoint(kind)}")
    if len(data) < _HEADER.size:
        raise corrupt(f"truncated inside its header ({len(data)} bytes)")
    _, version, length, digest = _HEADER.unpack_from(data)
    if version != _VERSION:
        raise corrupt(f"format version {version}, expected {_VERSION} (the file is damaged, or "
                      "a newer version of this library wrote it)")
    payload = data[_HEADER.size:]
    if len(payload) != length:
        raise corrupt(f"the header promises {length} bytes of data, the file holds "
                      f"{len(payload)} (truncated or extended)")
    if hashlib.sha256(payload).digest() != digest:
        raise corrupt("SHA-256 checksum mismatch (a damaged byte)")
    return payload


def _kind(head: bytes) -> str:
    """What a file is, from its first bytes (at least ``len(_MAGIC)`` of them, or all):
    ``"checkpoint"`` (the header's magic), ``"damaged"`` (a magic with a few bytes changed),
    ``"older"`` (a headerless msgpack map, as written before checksums), ``"pickle"``,
    ``"empty"`` or ``"other"``."""
    n = len(_MAGIC)
    if head[:n] == _MAGIC:
        return "checkpoint"
    if not head:
        return "empty"
    if _PICKLE.match(head):
        return "pickle"
    same = sum(a == b for a, b in zip(head[:n], _MAGIC))
    if same > n // 2:
        return "damaged"
    return "older" if head[0] in _MSGPACK_MAPS else "other"


def _not_a_checkpoint(kind: str) -> str:
    if kind == "pickle":
        return ("is a pickle file; checkpoints are never read with pickle (unpickling runs "
                "arbitrary code): train.checkpoint reads only files that train.checkpoint.save "
                "wrote")
    return (f"is not a checkpoint written by train.checkpoint (it does not start with the "
            f"header {_MAGIC!r})")


def _read_one(path: str) -> Any:
    """One file's state dict, verified (an older headerless file with a warning)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path!r}") from None
    payload = _payload(path, data)
    if payload is None:
        warnings.warn(
            f"checkpoint {path!r} has no checksum (written by an older version of "
            "train.checkpoint), so its contents cannot be verified; the next save writes it "
            "with one", RuntimeWarning, stacklevel=4)
        payload = data
    try:
        return _decode(serialization.msgpack_restore(payload))
    except Exception as e:  # msgpack raises several unrelated types on corrupt input
        raise CheckpointCorruptError(
            f"{path!r} is not a readable msgpack checkpoint ({type(e).__name__}: {e})"
        ) from e


def _remove_stale_temporaries(directory: str, name: str) -> None:
    """Removes the temporary files of `save`s into `directory`/`name` killed mid-write."""
    pattern = re.compile(_TMP.format(name=re.escape(name)))
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry)
        if m and owner_gone(m.group(1)):
            try:
                os.remove(os.path.join(directory, entry))
            except OSError:
                pass


def _write_synced(path: str, data: bytes) -> None:
    # O_EXCL: never clobber another writer's temporary file; mode 0o666 lets umask decide.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _keep_as_previous(path: str, staged: str) -> None:
    """Makes the current checkpoint at `path` the previous one, `<path>.prev`, if it verifies.

    `path` stays in place (a hard link, or a copy where links are not supported, is renamed
    over `<path>.prev`), so a kill at any moment leaves `path` whole."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return
    if not data:
        return  # an empty file (a path from tempfile.mkstemp): nothing to keep
    try:
        _payload(path, data)
    except CheckpointCorruptError as e:
        warnings.warn(f"{e}; it is replaced and not kept as {previous_path(path)!r}",
                      RuntimeWarning, stacklevel=3)
        return
    prev = previous_path(path)
    if os.path.exists(prev) and os.path.samefile(path, prev):
        return  # already kept (a save killed after keeping it, before replacing `path`)
    try:
        os.link(path, staged)
    except OSError:
        shutil.copyfile(path, staged)
        with open(staged, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(staged, prev)


def save(path: str | os.PathLike, state: Any, *, keep_previous: bool = True) -> None:
    """Writes a pytree to `path` atomically (checksummed msgpack, no pickle).

    The state is serialised to bytes in memory first, written to a temporary file in the
    destination's directory, flushed, `fsync`-ed, read back and verified; then the current
    checkpoint, if it verifies, becomes `<path>.prev` and the new file is renamed over `path`
    with `os.replace`. Any failure removes the temporary files and leaves an existing
    checkpoint at `path` untouched. Parent directories are created; temporary files of
    writers killed earlier (their process gone) are removed.

    Args:
        path: destination file, e.g. `"runs/digits/ckpt.msgpack"` (`~` is expanded).
        state: a pytree of arrays (NumPy or JAX, including typed PRNG key arrays), Python
            scalars, strings and `None`, in dicts (string or int keys), lists, tuples, NamedTuples
            and `flax.struct` dataclasses. Arrays must be fully addressable from this process
            (on several hosts, gather first and save from process 0).
        keep_previous: keep the checkpoint being replaced as `<path>.prev` (`restore` falls
            back to it when `path` is corrupt).

    Raises:
        TypeError: a leaf of a type msgpack cannot store; the message names its path.
        FileExistsError: `path` is an existing file that is not a checkpoint (it is never
            replaced; an existing checkpoint is).
        IsADirectoryError: `path` is a folder.
        OSError: the file could not be written, or did not read back intact.
    """
    path = _path(path)
    check_destination(path)
    data = _pack(serialization.msgpack_serialize(_encode(serialization.to_state_dict(state))))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    name = os.path.basename(path)
    _remove_stale_temporaries(directory, name)
    token = f"{owner()}-{secrets.token_hex(6)}"
    tmp = os.path.join(directory, f".{name}.{token}.tmp")
    staged_prev = os.path.join(directory, f".{name}.prev.{token}.tmp")
    try:
        _write_synced(tmp, data)
        with open(tmp, "rb") as f:
            written = f.read()
        if written != data:
            raise OSError(f"checkpoint {path!r}: the file written did not read back intact "
                          f"({tmp!r}); the disk or file system is failing")
        if keep_previous:
            _keep_as_previous(path, staged_prev)
        os.replace(tmp, path)
    except BaseException:
        for leftover in (tmp, staged_prev):
            try:
                os.remove(leftover)
            except OSError:
                pass
        raise
    _fsync_directory(directory)


def check_destination(path: str | os.PathLike) -> None:
    """Raises what `save(path, ...)` would raise for its destination, without writing: a
    folder (`IsADirectoryError`), or an existing file that is not a checkpoint
    (`FileExistsError`: its data would be lost). A checkpoint, also a damaged one or one of
    the older headerless format, and an empty file are replaced. Call it before a long run
    that saves at its end."""
    path = _path(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"checkpoint: {path!r} is a folder; expected a file path such "
                                f"as {os.path.join(path, 'ckpt.msgpack')!r}")
    try:
        with open(path, "rb") as f:
            kind = _kind(f.read(len(_MAGIC)))
            if kind == "older":  # a headerless checkpoint only if it decodes as msgpack
                f.seek(0)
                try:
                    serialization.msgpack_restore(f.read())
                except Exception:  # msgpack raises several unrelated types
                    kind = "other"
    except FileNotFoundError:
        return
    if kind in ("pickle", "other"):
        what = "a pickle file" if kind == "pickle" else f"no header {_MAGIC!r}"
        raise FileExistsError(f"checkpoint: {path!r} exists and is not a checkpoint ({what}); "
                              "remove it or choose another path")


def _fsync_directory(directory: str) -> None:
    """Makes the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read(path: str | os.PathLike) -> tuple[Any, str]:
    """The verified state dict of a checkpoint, and the file it came from.

    Reads `path`; when it is missing or corrupt and `<path>.prev` verifies, warns
    (`RuntimeWarning`, naming both files and what was wrong) and reads that one instead.

    Returns:
        `(state, source)`: the raw nested state dict (as `restore` without a template) and
        `path` or `<path>.prev`.

    Raises:
        FileNotFoundError: neither file exists.
        CheckpointCorruptError (a ValueError): `path` is corrupt and there is no readable
            `<path>.prev`; the message names both files.
    """
    path = _path(path)
    try:
        return _read_one(path), path
    except (FileNotFoundError, CheckpointCorruptError) as e:
        latest = e
    prev = previous_path(path)
    if not os.path.exists(prev):
        raise latest
    try:
        state = _read_one(prev)
    except CheckpointCorruptError as e:
        raise CheckpointCorruptError(
            f"no readable checkpoint: {latest}; and the previous checkpoint: {e}. Nothing can "
            "be restored from them: start afresh (or from another copy)") from e
    warnings.warn(
        f"{latest}; restored the previous checkpoint {prev!r} instead (one checkpoint "
        "interval older)", RuntimeWarning, stacklevel=2)
    return state, prev


def restore(path: str | os.PathLike, like: Any = None) -> Any:
    """Reads a checkpoint written by `save`, verified (falling back to `<path>.prev`, see `read`).

    Args:
        path: the checkpoint file (`~` is expanded).
        like: optional template pytree with the structure, shapes and dtypes of the saved
            state (e.g. a freshly initialised state, or `jax.eval_shape` of one: leaves may be
            `jax.ShapeDtypeStruct`). Lists in the template must have the saved length.

    Returns:
        With `like`: a pytree of the same structure and leaf types as `like` (JAX arrays
        placed with the template's sharding where the template holds JAX arrays or
        `ShapeDtypeStruct`s with a sharding, NumPy arrays where it holds NumPy arrays, Python
        scalars where it holds Python scalars). Without `like`: the raw nested state dict
        (lists, tuples and NamedTuples appear as dicts keyed `"0"`, `"1"`, ...; arrays as NumPy;
        typed PRNG keys re-wrapped as JAX key arrays).

    Raises:
        FileNotFoundError: no file at `path` (nor at `<path>.prev`).
        CheckpointCorruptError (a ValueError): the file failed its checksum, or is not a
            checkpoint, and there is no readable `<path>.prev`; the message names the files.
        ValueError: the structure, a leaf's shape or a leaf's dtype differs from `like`; the
            message names the leaf's path.
    """
    state, source = read(path)
    return state if like is None else conform(state, like, source)


def restore_params(path: str | os.PathLike, like: Any) -> Any:
    """The parameters saved in a checkpoint of `train.fit` (the file its `checkpoint=`
    writes), in the structure, shapes and dtypes of `like`: how to start a NEW run from a
    checkpoint, with another optimizer or other settings (`resume=` continues the same run,
    and refuses those).

    They are the parameters of the checkpoint's last epoch (`carry/state/params`), verified
    like any read (`read`: `<path>.prev` with a warning when `path` is corrupt). A model
    state (batch-norm statistics) is `conform(read(path)[0]["carry"]["state"]["model_state"],
    like=model_state)`.

    Args:
        path: a single-file checkpoint written by `train.fit`.
        like: a pytree like the parameters (the initial parameters given to `fit`).

    Raises:
        FileNotFoundError, CheckpointCorruptError: as `read`.
        ValueError: not a checkpoint of `train.fit`, or parameters that do not match `like`
            (the message names the leaf).
    """
    state, source = read(path)
    try:
        params = state["carry"]["state"]["params"]
    except (KeyError, TypeError):
        raise ValueError(f"checkpoint {source!r}: expected a checkpoint written by train.fit "
                         f"(holding carry/state/params), got one without parameters there (a "
                         f"pytree written by train.checkpoint.save? read it with "
                         f"train.checkpoint.restore(path, like=...))") from None
    return conform(params, like, source)


def conform(state: Any, like: Any, source: str = "<state>") -> Any:
    """A raw state dict (from `read`) in the structure and leaf types of the template `like`.

    `source` names the file in error messages. See `restore` for the template's rules.
    """
    path = source
    _check_structure(serialization.to_state_dict(like), state, "", path)
    try:
        restored = serialization.from_state_dict(like, state)
    except Exception as e:
        raise ValueError(f"checkpoint {path!r} does not match the template: {e}") from e
    try:
        return jax.tree_util.tree_map_with_path(
            lambda p, t, v: _restore_leaf(_slash_path(p), t, v, path),
            like,
            restored,
        )
    except ValueError as e:
        if str(e).startswith("checkpoint "):
            raise
        raise ValueError(f"checkpoint {path!r} does not match the template: {e}") from e


def _slash_path(keypath: tuple) -> str:
    """A JAX key path in the state dict's notation, e.g. `opt/0/trace/W`."""
    parts = []
    for k in keypath:
        for attr in ("key", "idx", "name"):  # DictKey, SequenceKey/FlattenedIndexKey, GetAttrKey
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts) or "<root>"


def _describe(x: Any) -> str:
    if _is_key_marker(x) or _is_key_array(x):
        return "a PRNG key array"
    if isinstance(x, dict):
        return f"a subtree with keys {sorted(x)}"
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"an array {x.dtype}{list(x.shape)}"
    return f"a value of type {type(x).__name__}"


def _check_structure(template: Any, saved: Any, where: str, path: str) -> None:
    """Compares the nested-dict skeletons of the template and the saved state dict."""
    name = where or "<root>"
    if isinstance(template, dict):
        if not isinstance(saved, dict) or _is_key_marker(saved):
            raise ValueError(
                f"checkpoint {path!r} does not match the template at {name!r}: the "
                f"template has a subtree with keys {sorted(map(str, template))}, the "
                f"checkpoint has {_describe(saved)}"
            )
        want, got = set(map(str, template)), set(saved)
        if want != got:
            if all(k.isdigit() for k in want | got):
                what = (
                    f"a list or tuple of length {len(got)} was saved, the template has "
                    f"length {len(want)}"
                )
            else:
                what = (
                    f"keys missing from the checkpoint {sorted(want - got)}, keys not in the "
                    f"template {sorted(got - want)}"
                )
            raise ValueError(
                f"checkpoint {path!r} does not match the template at {name!r}: {what}"
            )
        for k, v in template.items():
            _check_structure(v, saved[str(k)], _join(where, k), path)
    elif template is None and saved is not None:
        raise ValueError(
            f"checkpoint {path!r} does not match the template at {name!r}: the template has "
            f"None, the checkpoint has {_describe(saved)} (None in a template matches only a "
            f"saved None; put a value of the saved kind there, e.g. a jax.ShapeDtypeStruct)"
        )
    elif isinstance(saved, dict) and not _is_key_marker(saved):
        raise ValueError(
            f"checkpoint {path!r} does not match the template at {name!r}: the template has "
            f"{_describe(template)}, the checkpoint has {_describe(saved)}"
        )


def _scalar_kind(value: Any) -> str:
    """``"b"``, ``"i"``, ``"f"`` or ``"c"``: bool, integer, real or complex (Python or NumPy)."""
    if isinstance(value, np.generic):
        return {"u": "i"}.get(value.dtype.kind, value.dtype.kind)
    return ("b" if isinstance(value, bool) else "i" if isinstance(value, int)
            else "f" if isinstance(value, float) else "c")


def _holds(kind: type, value: Any) -> bool:
    """Whether a saved scalar ``value`` restores as the template's Python type ``kind``
    exactly: a bool only as a bool, an int as an int (or as a float or complex that holds it
    exactly), a float as a float or complex; never a float as an int (1.7 -> 1)."""
    got = _scalar_kind(value)
    want = {bool: "b", int: "i", float: "f", complex: "c"}[kind]
    if got == want:
        return True
    if got == "i" and want in "fc":
        return kind(value) == value  # exact (an int beyond 2**53 is not)
    return got == "f" and want == "c"


def _restore_leaf(where: str, template: Any, value: Any, path: str) -> Any:
    """Checks one restored leaf against its template leaf and gives it the template's type."""

    def mismatch(what: str) -> ValueError:
        return ValueError(
            f"checkpoint {path!r} does not match the template at {where!r}: {what}"
        )

    if _is_key_array(template):
        if not _is_key_array(value):
            raise mismatch(f"expected a PRNG key array, got {_describe(value)}")
        want, got = str(jax.random.key_impl(template)), str(jax.random.key_impl(value))
        if want != got:
            raise mismatch(f"expected PRNG key impl {want}, got {got}")
        if template.shape != value.shape:
            raise mismatch(f"expected key shape {template.shape}, got {value.shape}")
        return value
    if isinstance(template, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct)):
        if _is_key_array(value) or not isinstance(value, (np.ndarray, np.generic)):
            raise mismatch(
                f"expected an array {template.dtype}{list(template.shape)}, "
                f"got {_describe(value)}"
            )
        if value.shape != template.shape:
            raise mismatch(f"expected shape {template.shape}, got {value.shape}")
        if value.dtype != template.dtype:
            raise mismatch(f"expected dtype {template.dtype}, got {value.dtype}")
        if isinstance(template, np.generic):
            return value[()] if isinstance(value, np.ndarray) else value
        if isinstance(template, np.ndarray):
            return np.asarray(value)
        sharding = getattr(template, "sharding", None)
        return jax.device_put(value, sharding) if sharding is not None else jnp.asarray(value)
    if isinstance(template, _SCALARS):
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value[()]
        kind = type(template)
        if not isinstance(value, (*_SCALARS, np.generic)):
            raise mismatch(f"expected type {kind.__name__}, got {_describe(value)}")
        if not _holds(kind, value):
            raise mismatch(
                f"expected type {kind.__name__}, got {_describe(value)} ({value!r}): a Python "
                f"{kind.__name__} in the template restores only a saved value it holds exactly "
                f"(nothing is truncated or rounded); put a {type(value).__name__} there")
        return kind(value)
    if template is not None and not isinstance(value, type(template)):
        raise mismatch(f"expected type {type(template).__name__}, got {_describe(value)}")
    return value
