"""Issue 12 (reliability): checkpoints are verified, the previous one is kept, kills leave
nothing that breaks the next run, and two runs cannot share an output folder.

Cheap on purpose: the checkpoint tests use NumPy states (no program is compiled); the kill
test trains one tiny stream in two short subprocesses and in this process.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import UsageError, _framework
from tests import _killed_run
from train import checkpoint, runner

ROOT = Path(__file__).resolve().parents[1]


def _state(step: int) -> dict:
    """A run's state in miniature: weights, momentum, best parameters, counters, a list."""
    rng = np.random.default_rng(step)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    return {"params": {"W": w, "b": np.zeros(3, np.float32)},
            "opt": {"momentum": 0.1 * w, "count": np.int32(step)},
            "best": {"W": w - 1.0, "epoch": step - 1},
            "history": [0.5, 0.25], "note": "digits", "step": step}


def _equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.asarray(x).tobytes() == np.asarray(y).tobytes() and type(x) is type(y)
        for x, y in zip(la, lb))


def _flip(path: Path, position: int, xor: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= xor
    path.write_bytes(bytes(data))


def _dead_pid() -> int:
    """The pid of a process that has exited (as a killed writer's)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# --- integrity ---------------------------------------------------------------------------------


def test_every_flipped_byte_is_detected_and_names_the_file(tmp_path):
    """Defect: 145 of 150 single-byte flips restored silently with wrong numbers."""
    path = tmp_path / "ckpt.msgpack"
    checkpoint.save(path, _state(3))
    good = path.read_bytes()
    like = _state(0)
    rng = np.random.default_rng(0)
    # every byte of the header, then evenly spread over the payload: >= 200 positions
    positions = sorted(set(range(64)) | set(np.linspace(0, len(good) - 1, 200).astype(int)))
    assert len(positions) >= 200
    silent = []
    for i, pos in enumerate(positions):
        path.write_bytes(good)
        _flip(path, pos, int(rng.integers(1, 256)) if i % 2 else 0xFF)
        try:
            back = checkpoint.restore(path, like=like)
        except ValueError as e:
            assert "ckpt.msgpack" in str(e), str(e)
            continue
        silent.append((pos, _equal(back, _state(3))))
    assert silent == [], f"{len(silent)} of {len(positions)} flips restored without an error"
    # truncated, extended and emptied files too
    for data in (good[:-1], good + b"\x00", good[:30], b""):
        path.write_bytes(data)
        with pytest.raises(ValueError, match=r"ckpt\.msgpack"):
            checkpoint.restore(path)


def test_a_corrupt_latest_falls_back_to_the_previous_with_a_warning(tmp_path):
    path = tmp_path / "ckpt.msgpack"
    checkpoint.save(path, _state(1))
    checkpoint.save(path, _state(2))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.msgpack", "ckpt.msgpack.prev"]
    _flip(path, len(path.read_bytes()) - 5)  # a weight's byte
    with pytest.warns(RuntimeWarning, match=r"ckpt\.msgpack' is corrupt: SHA-256 checksum "
                                            r"mismatch.*restored the previous checkpoint "
                                            r".*ckpt\.msgpack\.prev'"):
        back = checkpoint.restore(path, like=_state(0))
    assert _equal(back, _state(1))
    # the next save replaces the corrupt file but does not rotate it over the good previous
    with pytest.warns(RuntimeWarning, match=r"is corrupt.*not kept as .*ckpt\.msgpack\.prev"):
        checkpoint.save(path, _state(3))
    assert _equal(checkpoint.restore(path, like=_state(0)), _state(3))
    assert _equal(checkpoint.restore(tmp_path / "ckpt.msgpack.prev", like=_state(0)), _state(1))
    # a missing latest falls back too
    path.unlink()
    with pytest.warns(RuntimeWarning, match=r"no checkpoint at .*restored the previous"):
        assert _equal(checkpoint.restore(path, like=_state(0)), _state(1))


def test_corrupt_latest_and_previous_is_an_error_naming_both(tmp_path):
    path = tmp_path / "ckpt.msgpack"
    checkpoint.save(path, _state(1))
    checkpoint.save(path, _state(2))
    _flip(path, 70)
    _flip(tmp_path / "ckpt.msgpack.prev", 3)  # in the header's magic
    with pytest.raises(checkpoint.CheckpointCorruptError,
                       match=r"ckpt\.msgpack' is corrupt: SHA-256.*previous checkpoint: .*"
                             r"ckpt\.msgpack\.prev' is corrupt: its header is damaged"):
        checkpoint.restore(path)


def test_resume_falls_back_to_the_previous_checkpoint(tmp_path):
    """The runner's resume reads through the same verification (no program compiled)."""
    tracker = runner.Tracker(
        epoch=np.int32(0), steps=np.int32(0), best_value=np.float32(np.inf),
        best_epoch=np.int32(0), best={"w": np.zeros(3, np.float32)}, bad_evals=np.int32(0),
        stopped=np.bool_(False), reason=np.int32(0))
    carry = runner.Carry(state={"w": np.zeros(3, np.float32)}, key=jax.random.key(0),
                         tracker=tracker)
    settings = {"batch_size": 8, "order": "shuffled"}
    path = tmp_path / "run.msgpack"
    for epoch in (1, 2):
        c = carry.replace(state={"w": np.full(3, epoch, np.float32)},
                          tracker=tracker.replace(epoch=np.int32(epoch)))
        runner._save(path, c, {"epoch": list(range(1, epoch + 1)),
                               "loss": [0.5] * epoch}, settings)
    _flip(path, len(path.read_bytes()) // 2)
    with pytest.warns(RuntimeWarning, match=r"run\.msgpack' is corrupt.*run\.msgpack\.prev"):
        back, history = runner._restore(path, carry, settings, ["loss"], None)
    assert history == {"epoch": [1], "loss": [0.5]}
    assert int(back.tracker.epoch) == 1 and np.asarray(back.state["w"]).tolist() == [1, 1, 1]


def test_checkpoints_without_a_checksum_are_still_read_with_a_warning(tmp_path):
    """Files written before the header existed: plain flax msgpack."""
    from flax import serialization

    path = tmp_path / "old.msgpack"
    path.write_bytes(serialization.msgpack_serialize(serialization.to_state_dict(_state(4))))
    with pytest.warns(RuntimeWarning, match=r"old\.msgpack' has no checksum"):
        assert _equal(checkpoint.restore(path, like=_state(0)), _state(4))
    # such a file is a checkpoint: save replaces it (and keeps it as the previous one); a file
    # that starts like msgpack but does not decode as it is not, and is never replaced
    checkpoint.save(path, _state(5))
    assert _equal(checkpoint.restore(path, like=_state(0)), _state(5))
    assert (tmp_path / "old.msgpack.prev").exists()
    other = tmp_path / "other.bin"
    other.write_bytes(b"\x81\xc1 not msgpack")
    with pytest.raises(FileExistsError, match=r"other\.bin' exists and is not a checkpoint"):
        checkpoint.save(other, _state(5))
    assert other.read_bytes() == b"\x81\xc1 not msgpack"


# --- litter --------------------------------------------------------------------------------------


def test_an_orphan_temporary_file_is_ignored_then_removed(tmp_path):
    """Defect: a writer killed mid-write left its `.tmp` file forever."""
    path = tmp_path / "ckpt.msgpack"
    checkpoint.save(path, _state(1))
    data = path.read_bytes()
    orphan = tmp_path / f".ckpt.msgpack.{_dead_pid()}-0123456789ab.tmp"
    orphan.write_bytes(data[: len(data) // 2])  # killed half-way through the write
    live = tmp_path / f".ckpt.msgpack.{os.getppid()}-0123456789ab.tmp"  # a writer still at it
    live.write_bytes(b"")
    host = checkpoint.owner().rpartition("-")[0]
    mine = tmp_path / f".ckpt.msgpack.{host}-{_dead_pid()}-0123456789ab.tmp"  # this host's, dead
    mine.write_bytes(b"")
    # another host's writer (a folder shared by a multi-host run): its pid means nothing here
    other = tmp_path / f".ckpt.msgpack.another_host-{_dead_pid()}-0123456789ab.tmp"
    other.write_bytes(b"")
    assert _equal(checkpoint.restore(path, like=_state(0)), _state(1))
    checkpoint.save(path, _state(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, other.name, "ckpt.msgpack", "ckpt.msgpack.prev"])


def _experiment(run) -> types.ModuleType:
    """An experiment module whose run is `run(config, outdir)`: no JAX, no figure."""
    module = types.ModuleType("tests.fake_experiment")

    @dataclasses.dataclass(frozen=True)
    class Config:
        seed: int = 0

    module.Config, module.SMOKE, module.run = Config, {}, run
    return module


@pytest.fixture
def no_compilation_cache(monkeypatch):
    monkeypatch.setattr(_framework, "enable_compilation_cache", lambda: None)


def test_a_killed_runs_staging_folder_is_removed_by_the_next_run(tmp_path, no_compilation_cache):
    """Defect: a killed run left `<folder>.partial-<pid>` forever."""
    runs = tmp_path / "runs"
    stale = runs / f"a.partial-{_dead_pid()}"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "history.csv").write_text("x")
    (runs / "a.lock").write_text("")  # its lock file, no longer held
    live = runs / f"b.partial-{os.getppid()}"  # a run still going
    live.mkdir()
    host = checkpoint.owner().rpartition("-")[0]
    (runs / f"d.partial-{host}-{_dead_pid()}").mkdir()  # this host's, killed
    other = runs / f"e.partial-another_host-{_dead_pid()}"  # another host's: not ours to judge
    other.mkdir()
    seen = []
    module = _experiment(lambda config, outdir: seen.append(outdir.name)
                         or (outdir / "f.txt").write_text("ok") and {})
    _, out = _framework.execute(module, out=runs / "c")
    assert out == runs / "c" and (out / "f.txt").read_text() == "ok"
    assert seen == [f"c.partial-{checkpoint.owner()}"]
    assert sorted(p.name for p in runs.iterdir()) == sorted([live.name, other.name, "c"])


def test_a_second_run_into_the_same_folder_is_refused_at_its_start(tmp_path,
                                                                   no_compilation_cache):
    """Defect: the second of two runs into one --out lost all its work at the end with
    `OSError: Directory not empty`."""
    out, seen = tmp_path / "out", []

    def second(config, outdir):
        seen.append("second ran")
        return {}

    def first(config, outdir):
        with pytest.raises(UsageError, match=rf"output folder {out} is being written by "
                                             r"another run right now; wait for it"):
            _framework.execute(_experiment(second), out=out)
        (outdir / "result.txt").write_text("first")
        return {"done": 1}

    metrics, folder = _framework.execute(_experiment(first), out=out)
    assert seen == [] and metrics == {"done": 1}
    assert (folder / "result.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no lock, no staging left
    # and once it is done, a later run into the (now full) folder is refused as before
    with pytest.raises(UsageError, match="exists and is not an empty folder"):
        _framework.execute(_experiment(second), out=out)


# --- SIGKILL mid-epoch and mid-checkpoint, then a bitwise resume ---------------------------------

def test_sigkill_mid_epoch_and_mid_checkpoint_then_a_bitwise_resume(tmp_path):
    """Killed half-way through epoch 4, resumed and killed inside epoch 5's checkpoint write
    (tests/_killed_run.py), then resumed here: bitwise the uninterrupted run."""
    ckpt = str(tmp_path / "run.msgpack")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for mode in ("epoch", "checkpoint"):
        out = subprocess.run(
            [sys.executable, "-m", "tests._killed_run", ckpt, mode, str(tmp_path / "xla")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == -signal.SIGKILL, (mode, out.returncode, out.stderr[-2000:])
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != "xla")
    assert len(left) == 3 and left[0].endswith(".tmp"), left  # epoch 5's file, never renamed
    reference = _killed_run.run()
    resumed = _killed_run.run(ckpt, resume=ckpt)
    assert _equal(resumed.state, reference.state) and resumed.history == reference.history
    assert resumed.history["epoch"] == list(range(1, _killed_run.EPOCHS + 1))
    assert sorted(os.listdir(tmp_path)) == ["run.msgpack", "run.msgpack.prev", "xla"]
