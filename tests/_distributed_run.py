"""Runs for tests/test_distributed.py, each in its own process (the suite keeps one device).

``python -m tests._distributed_run mesh OUT``: one process with 4 CPU devices
(``jax_num_cpu_devices``): a data-parallel fit, a step-form run (array data and a stream)
and a 2-model sweep, each against the same run on one device, the shardings they saw, and
checkpoints moved between 4 devices and 1. Writes a JSON report to OUT.

``python -m train.launch -n 2 tests/_distributed_run.py worker CKPT OUT``: each of the
2 processes (jax.distributed on localhost, gloo collectives, 1 CPU device each) fits on
both processes' devices and writes its parameters to ``OUT/worker<process>.json``; then
runs the same fit with an Orbax checkpoint per epoch in CKPT and is SIGKILLed right after
the checkpoint of epoch ``KILL_AT``.

``python -m tests._distributed_run resume CKPT OUT``: one process, one device: resumes the
killed two-process run from CKPT to the end, and trains the same fit uninterrupted.
"""

import json
import os
import signal
import sys

import jax

if __package__ in (None, ""):  # run as a script by train.launch: tests/ is sys.path[0]
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EPOCHS, KILL_AT, N = 4, 2, 48


def _problem():
    import numpy as np
    from nets import objective
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int32)
    val = (X[:13] + 0.1, y[:13])
    params = _mlp(rng)
    seen = []

    def loss(p, X, y):  # records the sharding of every batch it is traced with
        jax.debug.inspect_array_sharding(X, callback=lambda s: seen.append(
            str(s.spec) if hasattr(s, "spec") else "one device"))  # the abstract trace
        return objective.mlp_objective(p, X, y, activation="tanh")

    return X, y, val, params, loss, seen


def _mlp(rng, models=()):
    """A (4, 8, 2) MLP (``models`` stacked) drawn by NumPy: no eager JAX ops to compile."""
    import numpy as np
    return [{"W": rng.uniform(-0.7, 0.7, models + (o, i)).astype(np.float32),
             "b": rng.uniform(-0.7, 0.7, models + (o,)).astype(np.float32)}
            for i, o in ((4, 8), (8, 2))]


def _fit(mesh=None, epochs=EPOCHS, batch_size=8, **kwargs):
    import train
    X, y, val, params, loss, _ = _PROBLEM
    return train.fit(loss, params, (X, y), optimizer=train.sgd(0.3, momentum=0.9),
                     epochs=epochs, batch_size=batch_size, key=jax.random.key(1),
                     validation=val, eval_batch_size=4, progress=False, mesh=mesh, **kwargs)


def _leaves(tree):
    import numpy as np
    return [np.asarray(a).tolist() for a in jax.tree.leaves(tree)]


def _diff(a, b) -> float:
    import numpy as np
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _specs(tree):
    return sorted({str(a.sharding.spec) for a in jax.tree.leaves(tree)})


def mesh(out_path: str) -> None:
    jax.config.update("jax_num_cpu_devices", 4)
    import jax.numpy as jnp
    import numpy as np
    import train
    global _PROBLEM
    _PROBLEM = _problem()
    X, y, val, _, loss, seen = _PROBLEM
    assert jax.device_count() == 4, jax.devices()
    out = {}

    # fit: 4 devices against 1
    one = _fit()
    seen.clear()
    four = _fit(mesh=4)
    out["fit"] = {"diff": _diff(one.params, four.params), "batch_specs": sorted(set(seen)),
                  "history": [one.history, four.history],
                  "params_specs": _specs(four.params), "opt_specs": _specs(four.state.opt_state),
                  "devices": len(four.params[0]["W"].sharding.device_set)}
    try:
        _fit(mesh=4, batch_size=6)
    except ValueError as e:
        out["bad_batch"] = str(e)
    # the same fit with the data set on every device (an epoch one program)
    seen.clear()
    resident = _fit(mesh=4, data_on_devices=True)
    out["resident_fit"] = {"diff": _diff(one.params, resident.params),
                           "batch_specs": sorted(set(seen)), "history": resident.history,
                           "params_specs": _specs(resident.params),
                           "opt_specs": _specs(resident.state.opt_state),
                           "devices": len(resident.params[0]["W"].sharding.device_set)}

    # the step form: a noisy momentum step; array data and a stream of the same batches
    def step(state, batch, key):
        value, g = jax.value_and_grad(lambda w: jnp.mean((batch @ w - 1.0) ** 2))(state["w"])
        m = 0.9 * state["m"] + g
        return {"w": state["w"] - 0.05 * m + 1e-3 * jax.random.normal(key, (4,)),
                "m": m}, {"loss": value}

    rows = []

    def evaluate(state, batch, key):  # records the largest live array while it runs
        jax.debug.callback(lambda: rows.append(max(a.shape[0] if a.ndim else 0
                                                   for a in jax.live_arrays())))
        return {"loss": jnp.mean((batch @ state["w"] - 1.0) ** 2)}

    state = {"w": jnp.zeros(4), "m": jnp.zeros(4)}
    kw = dict(epochs=3, key=jax.random.key(5), progress=False, evaluate=evaluate,
              validation=X[:16], eval_batch_size=8)
    r1 = train.run(step, state, X, batch_size=8, order="sequential", **kw)
    rows_one = max(rows)
    rows.clear()
    r4 = train.run(step, state, X, batch_size=8, order="sequential", mesh=4, **kw)
    rows_four = max(rows)
    rows.clear()
    d4 = train.run(step, state, X, batch_size=8, order="sequential", mesh=4,
                   data_on_devices=True, **kw)
    rows_resident = max(rows)
    stream = [X[i:i + 8] for i in range(0, N, 8)]
    s4 = train.run(step, state, stream, mesh=4, **kw)
    out["step"] = {"diff": _diff(r1.state, r4.state), "stream_diff": _diff(r1.state, s4.state),
                   "resident_diff": _diff(r1.state, d4.state),
                   "specs": _specs(r4.state), "resident_specs": _specs(d4.state),
                   "live_rows_one": rows_one, "live_rows_four": rows_four,
                   "live_rows_resident": rows_resident,
                   "loss": [r1.history["loss"], r4.history["loss"], d4.history["loss"]]}

    # a sweep of 2 models on 4 devices, against the same sweep on one device
    keys = jax.random.split(jax.random.key(3), 2)
    stacked = _mlp(np.random.default_rng(3), (2,))
    kw = dict(optimizer=train.sgd(0.3), keys=keys, epochs=2, batch_size=8, validation=val,
              progress=False, hyperparams={"learning_rate": [0.1, 0.3]})
    seen.clear()
    s_four = train.sweep(loss, stacked, (X, y), **kw)
    W = s_four.params[0]["W"]
    s_one = train.sweep(loss, stacked, (X, y), devices=jax.devices()[:1], **kw)
    out["sweep"] = {"diff": _diff(s_one.params, s_four.params), "mesh": dict(s_four.mesh.shape),
                    "shape": list(W.shape), "spec": str(W.sharding.spec),
                    "shard_shape": list(W.addressable_shards[0].data.shape),
                    "devices": len(W.sharding.device_set), "batch_specs": sorted(set(seen))}

    # meshes a user builds: jax.make_mesh's default Explicit axes, a data-only sweep mesh
    two = jax.devices()[:2]
    out["user_meshes"] = {
        "fit": _diff(one.params, _fit(mesh=jax.make_mesh((4,), ("data",))).params),
        "sweep_data": _diff(s_one.params, train.sweep(
            loss, stacked, (X, y), mesh=jax.make_mesh((2,), ("data",), devices=two), **kw).params),
        "sweep_models": _diff(s_one.params, train.sweep(
            loss, stacked, (X, y), mesh=jax.make_mesh((2,), ("models",), devices=two),
            **kw).params)}

    # checkpoints: 4 devices (an Orbax folder) -> 1 device, and a file on 1 -> 4 devices
    tmp = os.path.dirname(out_path)
    folder, file = os.path.join(tmp, "four"), os.path.join(tmp, "one.msgpack")
    part = _fit(mesh=4, epochs=2, checkpoint=folder)
    to_one = _fit(resume=folder)
    _fit(epochs=2, checkpoint=file)
    to_four = _fit(mesh=4, resume=file, checkpoint=os.path.join(tmp, "four-from-file"))
    # the data set on every device: 2 epochs to a folder, resumed the same way to the end
    _fit(mesh=4, epochs=2, checkpoint=os.path.join(tmp, "resident"), data_on_devices=True)
    resumed = _fit(mesh=4, resume=os.path.join(tmp, "resident"), data_on_devices=True)
    out["checkpoint"] = {"folder": sorted(os.listdir(folder)), "part_epochs": part.epochs_run,
                         "to_one": _diff(one.params, to_one.params),
                         "to_four": _diff(one.params, to_four.params),
                         "to_four_specs": _specs(to_four.params),
                         "resident_resumed": _diff(one.params, resumed.params),
                         "resident_resumed_specs": _specs(resumed.params),
                         "histories": [one.history["val_loss"], to_one.history["val_loss"],
                                       to_four.history["val_loss"]]}
    # the benchmark's model rows with the library also data parallel over 2 of the devices
    # (the programs above dropped first: this process's peak is part of the suite's)
    import dataclasses
    from experiments import benchmark
    from tests import _memory
    _memory.release("mesh")
    cfg = dataclasses.replace(benchmark.Config(), **{**benchmark.SMOKE, "models": ("cnn",)})
    rows = benchmark.models_vs_torch(cfg, False, benchmark._digits(0), lambda text: None,
                                     devices=2)["cnn"]
    out["benchmark_rows"] = {"devices": rows["devices"], "rate": rows["rate"]}
    with open(out_path, "w") as f:
        json.dump(out, f)


def worker(ckpt: str, out_dir: str) -> None:
    import train
    train.distributed.initialize()  # its place from train.launch's JAXNETS_* variables
    out_path = os.path.join(out_dir, f"worker{jax.process_index()}.json")
    from jax.experimental import multihost_utils
    from train import sharded_checkpoint
    global _PROBLEM
    _PROBLEM = _problem()
    full = _fit(mesh=jax.device_count())
    with open(out_path, "w") as f:
        json.dump({"processes": jax.process_count(), "devices": jax.device_count(),
                   "params": _leaves(full.params), "history": full.history}, f)
    save = sharded_checkpoint.Writer.save

    def save_then_die(self, step, *args):
        save(self, step, *args)
        if step == KILL_AT:
            multihost_utils.sync_global_devices("checkpoint written")
            os.kill(os.getpid(), signal.SIGKILL)

    sharded_checkpoint.Writer.save = save_then_die
    _fit(mesh=jax.device_count(), checkpoint=ckpt)
    raise AssertionError("the run should have been killed after its checkpoint")


def resume(ckpt: str, out_path: str) -> None:
    global _PROBLEM
    _PROBLEM = _problem()
    resumed = _fit(resume=ckpt)
    alone = _fit()
    with open(out_path, "w") as f:
        json.dump({"devices": jax.device_count(), "resumed": _leaves(resumed.params),
                   "alone": _leaves(alone.params), "history": resumed.history,
                   "alone_history": alone.history}, f)


if __name__ == "__main__":
    {"mesh": mesh, "worker": worker, "resume": resume}[sys.argv[1]](*sys.argv[2:])
