"""Checkpoints without pickle: msgpack via `flax.serialization`, written atomically.

A checkpoint is one file holding one pytree: arrays, Python scalars and strings, `None`,
dicts, lists, tuples, NamedTuples (optax optimizer states among them) and `flax.struct`
dataclasses. The bytes are flax's msgpack format, so a file never executes code when read.

Typed PRNG keys (`jax.random.key(...)`) cannot be serialised as such: `save` stores their raw
bits (`jax.random.key_data`) together with the implementation name, and `restore` wraps them
back with `jax.random.wrap_key_data`, so a run resumes with exactly the same random stream.

`save` writes the whole file next to the destination first and renames it into place with
`os.replace`, so an interrupted or failed write leaves the previous checkpoint intact.

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
    >>> tmp.cleanup()
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

__all__ = ["save", "restore"]

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


def save(path: str | os.PathLike, state: Any) -> None:
    """Writes a pytree to `path` atomically (msgpack, no pickle).

    The state is serialised to bytes in memory first, written to a temporary file in the
    destination's directory, flushed and `fsync`-ed, then renamed over `path` with
    `os.replace`. Any failure removes the temporary file and leaves an existing checkpoint at
    `path` untouched. Parent directories are created.

    Args:
        path: destination file, e.g. `"runs/digits/ckpt.msgpack"`.
        state: a pytree of arrays (NumPy or JAX, including typed PRNG key arrays), Python
            scalars, strings and `None`, in dicts (string or int keys), lists, tuples, NamedTuples
            and `flax.struct` dataclasses. Arrays must be fully addressable from this process
            (on several hosts, gather first and save from process 0).

    Raises:
        TypeError: a leaf of a type msgpack cannot store; the message names its path.
    """
    path = os.fspath(path)
    data = serialization.msgpack_serialize(_encode(serialization.to_state_dict(state)))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # O_EXCL: never clobber another writer's temporary file; mode 0o666 lets umask decide.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


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


def restore(path: str | os.PathLike, like: Any = None) -> Any:
    """Reads a checkpoint written by `save`.

    Args:
        path: the checkpoint file.
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
        FileNotFoundError: no file at `path`.
        ValueError: the file is not a msgpack checkpoint, or its structure, a leaf's shape or a
            leaf's dtype differs from `like`; the message names the leaf's path.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path!r}") from None
    try:
        raw = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated types on corrupt input
        raise ValueError(
            f"{path!r} is not a readable msgpack checkpoint ({type(e).__name__}: {e})"
        ) from e
    state = _decode(raw)
    if like is None:
        return state
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
    elif isinstance(saved, dict) and not _is_key_marker(saved) and template is not None:
        raise ValueError(
            f"checkpoint {path!r} does not match the template at {name!r}: the template has "
            f"{_describe(template)}, the checkpoint has {_describe(saved)}"
        )


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
        if not isinstance(value, (*_SCALARS, np.generic)) or (
            isinstance(value, (complex, np.complexfloating))
            and not isinstance(template, complex)
        ):
            raise mismatch(f"expected type {type(template).__name__}, got {_describe(value)}")
        return type(template)(value)
    if template is not None and not isinstance(value, type(template)):
        raise mismatch(f"expected type {type(template).__name__}, got {_describe(value)}")
    return value
