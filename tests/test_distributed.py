"""Scale out (issue 11): data-parallel fit, run and sweep on a mesh, two processes with
jax.distributed on loopback, and sharded checkpoints restored on another topology.

Every run with several devices or processes is a subprocess (``tests/_distributed_run.py``),
so the rest of the suite keeps one device; one subprocess with 4 CPU devices serves the
mesh tests (module-scoped), three serve the two-process test.
"""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

import train
from tests import _distributed_run as runs
from train import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300
F32 = dict(rtol=1e-5, atol=2e-6)  # float32: the sharded sums add in another order


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "force_host_platform_device_count" not in f)
    return env


def _python(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "tests._distributed_run", *map(str, args)],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _finish(proc):
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, err if err is not None else out


@pytest.fixture(scope="module", autouse=True)
def _room():
    """This process's JAX caches are dropped (and its heap trimmed) before the subprocesses
    start: three processes of ~360 MB at once beside both pytest workers were the suite's
    memory peak."""
    from tests import _memory

    _memory.release("test_distributed")
    yield


@pytest.fixture(scope="module")
def mesh_run(tmp_path_factory):
    """The 4-device process's report (tests/_distributed_run.py, mode ``mesh``)."""
    out = tmp_path_factory.mktemp("mesh") / "report.json"
    rc, err = _finish(_python("mesh", out))
    assert rc == 0, err[-4000:]
    return json.loads(out.read_text())


def test_data_parallel_fit_on_a_mesh_matches_one_device(mesh_run):
    r = mesh_run["fit"]
    assert r["devices"] == 4
    assert r["diff"] < 2e-6  # parameters: float32 rounding of the all-reduced gradients
    one, four = r["history"]
    assert one["epoch"] == four["epoch"] == [1, 2, 3, 4]
    for name in ("loss", "val_loss"):
        np.testing.assert_allclose(four[name], one[name], **F32)
    # observed inside the loss: training batches split over "data" (the 1-row tail of the
    # 13-row validation set cannot be, and is replicated); params and optimizer replicated
    assert r["batch_specs"] == ["P('data',)", "P()"]
    assert r["params_specs"] == ["P()"] and r["opt_specs"] == ["P()"]
    assert mesh_run["bad_batch"].startswith("batch_size: expected a multiple of the mesh's 'data' "
                                     "axis (4 devices")


def test_data_on_devices_fit_matches_one_device_with_batches_split_inside_the_program(mesh_run):
    """``data_on_devices=True``: the data set replicated on the 4 devices and an epoch one
    program; the batches are split over "data" inside it, as the host-fed path splits them."""
    r, one = mesh_run["resident_fit"], mesh_run["fit"]["history"][0]
    assert r["devices"] == 4 and r["diff"] < 2e-6
    assert r["batch_specs"] == ["P('data',)", "P()"]  # the 1-row validation tail: replicated
    assert r["params_specs"] == ["P()"] and r["opt_specs"] == ["P()"]
    assert r["history"]["epoch"] == one["epoch"]
    for name in ("loss", "val_loss"):
        np.testing.assert_allclose(r["history"][name], one[name], **F32)


def test_step_form_on_a_mesh_matches_one_device_and_never_holds_the_data_set(mesh_run):
    r = mesh_run["step"]
    assert r["diff"] < 1e-6 and r["stream_diff"] < 1e-6  # array data and a stream
    np.testing.assert_allclose(r["loss"][1], r["loss"][0], **F32)
    assert r["specs"] == ["P()"]
    # the largest array alive on any device while evaluating: the 48-row data set on one
    # device; on the mesh one 8-row batch at most (the data set stays in host memory)
    assert r["live_rows_one"] == runs.N and r["live_rows_four"] == 8
    # data_on_devices=True trades that for speed: the data set on every device, as on one
    assert r["resident_diff"] < 1e-6 and r["resident_specs"] == ["P()"]
    assert r["live_rows_resident"] == runs.N
    np.testing.assert_allclose(r["loss"][2], r["loss"][0], **F32)


def test_the_benchmark_model_rows_also_train_data_parallel(mesh_run):
    """experiments/benchmark.py's CNN row in a process with several CPU devices: the library
    on one device and data parallel on 2 (its rate in ``library_devices``)."""
    r = mesh_run["benchmark_rows"]
    assert r["devices"] == 2
    assert set(r["rate"]) == {"library", "library_devices", "library_conv"}
    assert all(np.isfinite(v) for v in r["rate"].values())  # timings: not asserted


def test_sweep_of_two_models_on_a_4_device_mesh_trains_two(mesh_run):
    r = mesh_run["sweep"]
    assert r["mesh"] == {"models": 2, "data": 2} and r["devices"] == 4
    assert r["shape"] == [2, 8, 4] and r["spec"] == "P('models',)"
    assert r["shard_shape"] == [1, 8, 4]  # one model per device pair: none padded
    assert "P('models', 'data')" in r["batch_specs"]
    assert r["diff"] < 1e-6  # the same two models trained on one device


def test_meshes_from_jax_make_mesh_and_a_data_only_sweep_mesh(mesh_run):
    """jax.make_mesh's default axes are Explicit, which the library's sharding constraints
    reject inside vmap: it trains on the same devices with Auto axes; a sweep's mesh with a
    'data' axis alone has one model slot."""
    for name, diff in mesh_run["user_meshes"].items():
        assert diff < 1e-5, (name, diff)


def test_sharded_checkpoint_restores_on_another_device_count(mesh_run):
    r = mesh_run["checkpoint"]
    assert r["folder"] == ["1", "2"] and r["part_epochs"] == 2  # Orbax steps, two kept
    assert r["to_one"] < 2e-6  # 4 devices (Orbax folder) -> resumed on 1 device
    assert r["to_four"] < 2e-6 and r["to_four_specs"] == ["P()"]  # 1 (file) -> 4 devices
    # data_on_devices: 2 epochs to a folder, resumed on the 4 devices to the end
    assert r["resident_resumed"] < 2e-6 and r["resident_resumed_specs"] == ["P()"]
    one, to_one, to_four = r["histories"]
    np.testing.assert_allclose(to_one, one, **F32)
    np.testing.assert_allclose(to_four, one, **F32)


def test_distributed_two_processes_train_as_one_and_resume_in_one(tmp_path, monkeypatch,
                                                                  capsys):
    """Two processes on loopback (train.launch, jax.distributed, gloo collectives) train as
    one process does; the same run, SIGKILLed after its epoch-2 checkpoint, resumes in one
    process. The launcher's `main` (what `python -m train.launch` runs) runs in this
    process: a launcher process of its own held ~190 MB (it imports train) beside the two
    workers while the suite's other worker ran, and pushed the suite past 2 GiB."""
    ckpt = tmp_path / "ckpt"
    monkeypatch.chdir(ROOT)
    for name, value in _env().items():
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)
    rc = launch.main(["-n", "2", "--timeout", str(TIMEOUT - 30), "tests/_distributed_run.py",
                      "worker", str(ckpt), str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 128 + signal.SIGKILL, out[-4000:]  # killed, as a shell reports it
    assert "should have been killed" not in out, out[-4000:]
    assert sorted(os.listdir(ckpt)) == ["1", "2"]  # the kill came after epoch 2's commit
    rc, err = _finish(_python("resume", ckpt, tmp_path / "resume.json"))
    assert rc == 0, err[-4000:]
    w0, w1 = (json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2))
    one = json.loads((tmp_path / "resume.json").read_text())
    assert w0["processes"] == 2 and w0["devices"] == 2 and one["devices"] == 1
    for a, b in zip(w0["params"], one["alone"]):  # two processes = one process
        np.testing.assert_allclose(a, b, **F32)
    for a, b in zip(w0["params"], w1["params"]):  # every process ends with the same values
        np.testing.assert_array_equal(a, b)
    for a, b in zip(one["resumed"], one["alone"]):  # resumed in one process: the same end
        np.testing.assert_allclose(a, b, **F32)
    assert one["history"]["epoch"] == [1, 2, 3, 4]
    np.testing.assert_allclose(one["history"]["val_loss"], one["alone_history"]["val_loss"],
                               **F32)
    np.testing.assert_allclose(w0["history"]["loss"], one["alone_history"]["loss"], **F32)


def test_mesh_arguments_are_refused_before_compiling(tmp_path):
    """In this (one-device) process: bad meshes and checkpoints, before anything compiles."""
    X = np.zeros((8, 2), np.float32)

    def step(state, batch, key):
        raise AssertionError("traced before the arguments were checked")

    kw = dict(epochs=1, batch_size=4, key=jax.random.key(0), progress=False)
    state = {"w": np.zeros(2, np.float32)}
    with pytest.raises(ValueError, match=r"mesh: expected 1 <= devices <= 1 .*got 2"):
        train.run(step, state, X, mesh=2, **kw)
    with pytest.raises(TypeError, match=r"mesh: expected a jax.sharding.Mesh .*got str"):
        train.run(step, state, X, mesh="data", **kw)
    batch_mesh = jax.make_mesh((1,), ("batch",))
    assert isinstance(batch_mesh, Mesh)
    with pytest.raises(ValueError, match=r"mesh: expected an axis named 'data', got axes "
                                         r"\('batch',\)"):
        train.run(step, state, X, mesh=batch_mesh, **kw)
    with pytest.raises(ValueError, match=r"mesh: pass either mesh= or devices=, not both"):
        train.run(step, {"w": np.zeros((2, 2), np.float32)}, X, models=2,
                  key=jax.random.split(jax.random.key(0), 2), mesh=1, devices=jax.devices(),
                  epochs=1, batch_size=4, progress=False)
    no_mesh = r"data_on_devices: expected it with mesh= .*got data_on_devices=True without a mesh"
    with pytest.raises(ValueError, match=no_mesh):
        train.run(step, state, X, data_on_devices=True, **kw)
    with pytest.raises(ValueError, match=no_mesh):
        train.fit(lambda p, x, y: (p["w"] ** 2).sum(), state, (X, None),
                  optimizer=train.sgd(0.1), data_on_devices=True, **kw)
    with pytest.raises(ValueError, match=r"num_processes: expected an int >= 1, got 0"):
        train.distributed.launch(0, [sys.executable, "-c", "pass"])
    with pytest.raises(ValueError, match=r"command: expected the program to run"):
        train.distributed.launch(2, [])
    with pytest.raises(ValueError, match=r"coordinator_address: expected 'host:port'"):
        train.distributed.initialize("localhost", num_processes=2, process_id=0)
    with pytest.raises(ValueError, match=r"process_id: expected 0 <= process_id < "
                                         r"num_processes = 2, got 2"):
        train.distributed.initialize("localhost:1", num_processes=2, process_id=2)
