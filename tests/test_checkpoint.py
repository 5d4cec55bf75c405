"""Checkpoints: bitwise round trips, typed PRNG keys, template checks, atomic writes."""

from __future__ import annotations

import os
import pathlib
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from train import checkpoint


class TrainState(NamedTuple):
    params: dict  # {"W": (3, 2) float32, "b": (3,) float32}
    opt_state: Any  # optax.sgd(0.1, momentum=0.9) state: (TraceState(trace=params), EmptyState())
    key: jax.Array  # typed PRNG key array, shape (2,)
    step: int
    history: dict  # {"loss": [float, ...], "acc": [float, ...]}
    counts: np.ndarray  # (4,) int32, a NumPy leaf
    note: str
    extra: None


@struct.dataclass
class Config:
    lr: jax.Array  # () float32
    sizes: tuple = struct.field(pytree_node=False, default=(2, 3))


def _state(key) -> TrainState:
    k1, k2, k3 = jax.random.split(key, 3)
    params = {
        "W": jax.random.normal(k1, (3, 2), jnp.float32),
        "b": jnp.array([0.0, -0.0, jnp.nan], jnp.float32),  # signed zero and NaN, bitwise
    }
    opt = optax.sgd(0.1, momentum=0.9)
    opt_state = opt.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, opt_state = opt.update(grads, opt_state, params)  # a non-zero momentum trace
    return TrainState(
        params=params,
        opt_state=opt_state,
        key=jax.random.split(k2, 2),
        step=17,
        history={"loss": [2.5, 1.25, 0.625], "acc": [0.1, 0.5]},
        counts=np.arange(4, dtype=np.int32),
        note="digits, lambda=1e-3",
        extra=None,
    )


def _assert_bitwise_equal(a, b):
    """Same structure, leaf types, dtypes, shapes and bytes (keys compared by their bits)."""
    chex.assert_trees_all_equal_structs(a, b)

    def check(x, y):
        assert type(x) is type(y), (type(x), type(y))
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert str(jax.random.key_impl(x)) == str(jax.random.key_impl(y))
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        if isinstance(x, (jax.Array, np.ndarray)):
            x, y = np.asarray(x), np.asarray(y)
            assert x.dtype == y.dtype and x.shape == y.shape
            assert x.tobytes() == y.tobytes()
        else:
            assert x == y

    jax.tree.map(check, a, b)


def test_round_trip_is_bitwise(key, tmp_path):
    state = _state(key)
    path = tmp_path / "ckpt.msgpack"
    checkpoint.save(path, state)
    back = checkpoint.restore(path, like=state)
    assert isinstance(back, TrainState)
    assert isinstance(back.opt_state[0], optax.TraceState)
    _assert_bitwise_equal(back, state)
    # The restored key continues the same random stream.
    np.testing.assert_array_equal(
        jax.random.normal(back.key[1], (5,)), jax.random.normal(state.key[1], (5,))
    )


def test_round_trip_template_from_fresh_init(key, tmp_path):
    """The usual resume: the template is a new state of the same shapes, not the saved one."""
    state = _state(key)
    checkpoint.save(tmp_path / "c", state)
    template = _state(jax.random.key(0))
    back = checkpoint.restore(tmp_path / "c", like=template)
    _assert_bitwise_equal(back, state)


def test_struct_dataclass_and_scalars(tmp_path):
    cfg = {"config": Config(lr=jnp.float32(0.05), sizes=(64, 10)), "flag": True, "x": 1.5}
    checkpoint.save(tmp_path / "c", cfg)
    back = checkpoint.restore(tmp_path / "c", like=cfg)
    assert isinstance(back["config"], Config) and back["config"].sizes == (64, 10)
    assert back["flag"] is True and back["x"] == 1.5
    _assert_bitwise_equal(back, cfg)


def test_rbg_key_keeps_its_impl(tmp_path):
    k = jax.random.key(3, impl="rbg")
    checkpoint.save(tmp_path / "c", {"k": k})
    back = checkpoint.restore(tmp_path / "c", like={"k": k})["k"]
    assert str(jax.random.key_impl(back)) == "rbg"
    np.testing.assert_array_equal(jax.random.key_data(back), jax.random.key_data(k))


def test_float64_round_trip(x64, tmp_path):
    state = {"w": jnp.linspace(0.0, 1.0, 7, dtype=jnp.float64), "n": np.int64(3)}
    checkpoint.save(tmp_path / "c", state)
    back = checkpoint.restore(tmp_path / "c", like=state)
    assert back["w"].dtype == jnp.float64
    _assert_bitwise_equal(back, state)


def test_restore_without_template_gives_the_state_dict(key, tmp_path):
    state = _state(key)
    checkpoint.save(tmp_path / "c", state)
    raw = checkpoint.restore(tmp_path / "c")
    assert raw["history"]["loss"] == {"0": 2.5, "1": 1.25, "2": 0.625}
    assert raw["step"] == 17 and raw["note"] == state.note and raw["extra"] is None
    trace = raw["opt_state"]["0"]["trace"]  # the optax tuple and NamedTuple as dicts
    np.testing.assert_array_equal(trace["W"], state.opt_state[0].trace["W"])
    assert isinstance(raw["params"]["W"], np.ndarray)
    assert jax.dtypes.issubdtype(raw["key"].dtype, jax.dtypes.prng_key)


def test_template_of_shape_dtype_structs(key, tmp_path):
    params = {"W": jax.random.normal(key, (4, 3)), "b": jnp.zeros(4)}
    checkpoint.save(tmp_path / "c", params)
    abstract = jax.eval_shape(lambda: params)
    back = checkpoint.restore(tmp_path / "c", like=abstract)
    assert isinstance(back["W"], jax.Array)
    _assert_bitwise_equal(back, params)


def test_save_creates_parent_directories_and_accepts_str(tmp_path):
    path = os.path.join(str(tmp_path), "a", "b", "ckpt.msgpack")
    checkpoint.save(path, {"x": np.ones(2)})
    assert os.listdir(os.path.dirname(path)) == ["ckpt.msgpack"]
    np.testing.assert_array_equal(checkpoint.restore(path)["x"], np.ones(2))


def test_overwrite_replaces_the_checkpoint(tmp_path):
    path = tmp_path / "c"
    checkpoint.save(path, {"step": 1})
    checkpoint.save(path, {"step": 2})
    assert checkpoint.restore(path) == {"step": 2}
    assert sorted(os.listdir(tmp_path)) == ["c", "c.prev"]  # the one replaced is kept
    assert checkpoint.restore(checkpoint.previous_path(path)) == {"step": 1}
    checkpoint.save(path, {"step": 3}, keep_previous=False)
    assert checkpoint.restore(path) == {"step": 3}
    assert checkpoint.restore(tmp_path / "c.prev") == {"step": 1}  # untouched


@pytest.mark.parametrize("fail_at", ["fsync", "replace", "interrupt"])
def test_failed_write_leaves_previous_checkpoint_whole(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "ckpt.msgpack"
    checkpoint.save(path, {"W": np.arange(6.0), "step": 1})
    before = path.read_bytes()

    def boom(*args, **kwargs):
        if fail_at == "interrupt":
            raise KeyboardInterrupt
        raise OSError(f"simulated failure in {fail_at}")

    monkeypatch.setattr(os, "replace" if fail_at == "replace" else "fsync", boom)
    with pytest.raises(KeyboardInterrupt if fail_at == "interrupt" else OSError):
        checkpoint.save(path, {"W": np.arange(1000.0), "step": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.msgpack"]  # no temporary file left behind
    assert checkpoint.restore(path)["step"] == 1


def test_unserialisable_leaf_names_its_path_and_writes_nothing(tmp_path):
    with pytest.raises(TypeError, match=r"'params/act'.*got object"):
        checkpoint.save(tmp_path / "c", {"params": {"act": object(), "W": np.ones(2)}})
    assert os.listdir(tmp_path) == []


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "ckpt.msgpack"
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*nowhere.*ckpt\.msgpack"):
        checkpoint.restore(path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "c"
    checkpoint.save(path, {"W": np.ones((10, 10))})
    path.write_bytes(path.read_bytes()[:-7])  # truncated
    with pytest.raises(ValueError, match=r"checkpoint .*/c' is corrupt: the header promises "
                                         r"\d+ bytes of data, the file holds \d+ \(truncated"):
        checkpoint.restore(path)
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=r"is not a checkpoint written by train.checkpoint"):
        checkpoint.restore(path)


def test_shape_mismatch_names_the_leaf(tmp_path):
    checkpoint.save(tmp_path / "c", {"params": {"W": jnp.zeros((2, 3)), "b": jnp.zeros(2)}})
    like = {"params": {"W": jnp.zeros((3, 3)), "b": jnp.zeros(2)}}
    with pytest.raises(ValueError, match=r"at 'params/W': expected shape \(3, 3\), got \(2, 3\)"):
        checkpoint.restore(tmp_path / "c", like=like)


def test_dtype_mismatch_names_the_leaf(key, tmp_path):
    state = _state(key)
    checkpoint.save(tmp_path / "c", state)
    like = state._replace(counts=state.counts.astype(np.int64))
    with pytest.raises(ValueError, match=r"at 'counts': expected dtype int64, got int32"):
        checkpoint.restore(tmp_path / "c", like=like)
    trace = {"W": state.params["W"].astype(jnp.bfloat16), "b": state.params["b"]}
    like = state._replace(opt_state=(optax.TraceState(trace=trace), optax.EmptyState()))
    with pytest.raises(ValueError, match=r"at 'opt_state/0/trace/W': expected dtype bfloat16"):
        checkpoint.restore(tmp_path / "c", like=like)


def test_structure_mismatches(key, tmp_path):
    state = _state(key)
    checkpoint.save(tmp_path / "c", state)
    path = tmp_path / "c"
    with pytest.raises(ValueError, match=r"at 'history/loss': a list or tuple of length 3 was "
                       r"saved, the template has length 0"):
        checkpoint.restore(path, like=state._replace(history={"loss": [], "acc": [0.0, 0.0]}))
    with pytest.raises(ValueError, match=r"at 'params': keys missing from the checkpoint "
                       r"\['V'\], keys not in the template \['b'\]"):
        checkpoint.restore(path, like=state._replace(params={"W": 0, "V": 0}))
    with pytest.raises(ValueError, match=r"at 'params/W': the template has an array float32\[\], "
                       r"the checkpoint has a subtree with keys \['a'\]"):
        checkpoint.save(path, state._replace(params={"W": {"a": 1.0}, "b": 0.0}))
        checkpoint.restore(path, like=state._replace(params={"W": jnp.float32(0), "b": 0.0}))


def test_key_and_scalar_mismatches(key, tmp_path):
    state = _state(key)
    path = tmp_path / "c"
    checkpoint.save(path, state)
    with pytest.raises(ValueError, match=r"at 'key': expected key shape \(\), got \(2,\)"):
        checkpoint.restore(path, like=state._replace(key=jax.random.key(0)))
    with pytest.raises(ValueError, match=r"at 'key': expected an array uint32\[2, 2\], got a PRNG"):
        checkpoint.restore(path, like=state._replace(key=np.zeros((2, 2), np.uint32)))
    with pytest.raises(ValueError, match=r"at 'counts': expected a PRNG key array, got an array"):
        checkpoint.restore(path, like=state._replace(counts=jax.random.split(key, 4)))
    with pytest.raises(ValueError, match=r"at 'note': expected type int, got a value of type str"):
        checkpoint.restore(path, like=state._replace(note=0))


def test_pathlib_and_str_paths_agree(tmp_path):
    checkpoint.save(str(tmp_path / "c"), [1, 2.0])
    assert checkpoint.restore(pathlib.Path(tmp_path / "c"), like=[0, 0.0]) == [1, 2.0]


def test_a_leading_tilde_is_the_home_folder(tmp_path, monkeypatch):
    """"~/..." went to a folder literally named "~" under the current folder."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    checkpoint.save("~/runs/c", {"step": 1})
    checkpoint.save(pathlib.Path("~/runs/c"), {"step": 2})
    assert sorted(os.listdir(home / "runs")) == ["c", "c.prev"] and os.listdir(cwd) == []
    assert checkpoint.restore("~/runs/c", like={"step": 0}) == {"step": 2}
    assert checkpoint.read("~/runs/c") == ({"step": 2}, str(home / "runs" / "c"))
    assert checkpoint.previous_path("~/runs/c") == str(home / "runs" / "c.prev")


def test_a_python_scalar_template_restores_only_what_it_holds_exactly(tmp_path):
    """A saved float under an int template was truncated (1.7 -> 1) without a word."""
    path = tmp_path / "c"
    checkpoint.save(path, {"lr": 1.7, "step": 2, "flag": True, "big": 2 ** 53 + 1})
    like = {"lr": 0.0, "step": 0, "flag": False, "big": 0}
    assert checkpoint.restore(path, like=like) == {"lr": 1.7, "step": 2, "flag": True,
                                                   "big": 2 ** 53 + 1}
    back = checkpoint.restore(path, like={**like, "step": 0.0})  # an int as a float: exact
    assert type(back["step"]) is float and back["step"] == 2.0
    for key, template, got in [("lr", 0, "float \\(1.7\\)"), ("flag", 0, "bool \\(True\\)"),
                               ("step", False, "int \\(2\\)"),
                               ("big", 0.0, f"int \\({2 ** 53 + 1}\\)")]:
        with pytest.raises(ValueError, match=rf"at '{key}': expected type "
                                             rf"{type(template).__name__}, got a value of type "
                                             rf"{got}: a Python .* holds exactly"):
            checkpoint.restore(path, like={**like, key: template})


def test_none_in_the_template_where_a_value_was_saved_names_the_leaf(tmp_path):
    checkpoint.save(tmp_path / "c", {"x": 1.5, "p": {"W": np.ones(2)}})
    for like, where, saved in [({"x": None, "p": {"W": np.ones(2)}}, "x", "a value of type float"),
                               ({"x": 0.0, "p": {"W": None}}, "p/W", r"an array float64\[2\]"),
                               ({"x": 0.0, "p": None}, "p", r"a subtree with keys \['W'\]")]:
        with pytest.raises(ValueError, match=rf"does not match the template at '{where}': the "
                                             rf"template has None, the checkpoint has {saved} "
                                             r"\(None in a template matches only a saved None"):
            checkpoint.restore(tmp_path / "c", like=like)


def test_save_never_replaces_a_file_that_is_not_a_checkpoint(tmp_path):
    """It warned and replaced it (three weeks of notes lost); a pickle file was taken for an
    older checkpoint. A checkpoint, an older headerless one and an empty file are replaced."""
    import pickle

    notes, pkl = tmp_path / "notes.txt", tmp_path / "model.pkl"
    notes.write_text("three weeks of lab notes")
    pkl.write_bytes(pickle.dumps({"W": [1.0, 2.0]}))
    for path, what in [(notes, r"no header b'JAXNETS-CKPT\\n'"), (pkl, "a pickle file")]:
        before = path.read_bytes()
        for keep in (True, False):
            with pytest.raises(FileExistsError, match=rf"^checkpoint: '.*{path.name}' exists and "
                                                      rf"is not a checkpoint \({what}\); remove "
                                                      r"it or choose another path$"):
                checkpoint.save(path, {"step": 1}, keep_previous=keep)
        assert path.read_bytes() == before
    with pytest.raises(FileExistsError, match="is not a checkpoint"):
        checkpoint.check_destination(notes)  # the same refusal, before a run
    with pytest.raises(IsADirectoryError, match=r"^checkpoint: '.*' is a folder; expected a file"):
        checkpoint.save(tmp_path, {"step": 1})
    assert sorted(os.listdir(tmp_path)) == ["model.pkl", "notes.txt"]  # nothing left behind
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    checkpoint.save(empty, {"step": 1})
    assert checkpoint.restore(empty) == {"step": 1} and not os.path.exists(f"{empty}.prev")


def test_a_pickle_file_is_named_as_one_and_never_taken_for_an_older_checkpoint(tmp_path):
    import pickle
    import warnings

    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"W": [1.0, 2.0]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not "written by an older version" first
        with pytest.raises(checkpoint.CheckpointCorruptError,
                           match=r"model\.pkl' is a pickle file; checkpoints are never read "
                                 r"with pickle"):
            checkpoint.restore(path)


def test_restore_params_reads_a_fits_parameters_into_their_structure(key, tmp_path):
    """How to start a new run from a checkpoint (resume= continues the same run only)."""
    import train
    from nets import mlp, objective

    X = np.asarray(jax.random.normal(key, (16, 4)), np.float32)
    y = np.asarray(X[:, 0] > 0, np.int32)
    params = mlp.init(key, (4, 5, 2))
    path = tmp_path / "fit.msgpack"
    loss = lambda p, X, y: objective.mlp_objective(p, X, y, activation="tanh")  # noqa: E731
    r = train.fit(loss, params, (X, y), optimizer=optax.sgd(0.1), epochs=2, batch_size=8,
                  key=key, checkpoint=path, progress=False)
    back = checkpoint.restore_params(path, like=params)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back),
                                                    jax.tree.leaves(r.state.params)))
    with pytest.raises(ValueError, match=r"does not match the template at '0/W': expected "
                                         r"shape \(6, 4\)"):
        checkpoint.restore_params(path, like=mlp.init(key, (4, 6, 2)))
    other = tmp_path / "other.msgpack"
    checkpoint.save(other, {"W": np.zeros(2)})
    with pytest.raises(ValueError, match=r"expected a checkpoint written by train.fit "
                                         r"\(holding carry/state/params\).* read it with "
                                         r"train.checkpoint.restore\(path, like=...\)"):
        checkpoint.restore_params(other, like=params)
