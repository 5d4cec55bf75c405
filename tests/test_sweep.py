"""train.sweep: one compilation for a grid of models, each equal to its own fit; per-model
early stopping and divergence; several devices; structural grids; bad inputs."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import nets
import train
from tests._child import env_with_devices
from nets import mlp, objective

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rng(key):
    """A NumPy generator seeded by a JAX key (test data without compiling JAX samplers)."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)))


def _toy(key, n, d=4, classes=3):
    rng = _rng(key)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    return X, y


def _stacked_mlp(key, models, sizes=(4, 8, 3)):
    """``models`` MLPs stacked on a leading axis, ESL-style uniform [-0.7, 0.7] weights."""
    rng = _rng(key)
    return [{"W": rng.uniform(-0.7, 0.7, (models, n_out, n_in)).astype(np.float32),
             "b": rng.uniform(-0.7, 0.7, (models, n_out)).astype(np.float32)}
            for n_in, n_out in zip(sizes[:-1], sizes[1:])]


def _tanh_loss(p, X, y):
    return objective.mlp_objective(p, X, y, activation="tanh")


def _error(p, X, y):
    Z = jax.vmap(lambda x: mlp.apply(p, x, activation="tanh"))(X)
    return nets.metrics.error_rate(Z, y)


def _row(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


def test_sweep_of_64_models_compiles_once_and_matches_fit(key):
    k_d, k_v, k_m = jax.random.split(key, 3)
    X, y = _toy(k_d, 32)
    val = _toy(k_v, 12)
    hp = train.grid(learning_rate=np.geomspace(0.05, 1.0, 8), l2=np.geomspace(1e-4, 1e-1, 8))
    init_key, key = jax.random.split(k_m)
    params = _stacked_mlp(init_key, 64)
    keys = jax.random.split(key, 64)

    chex.clear_trace_counter()
    # traced twice per compilation: the training step (inside the scan) and the validation loss
    loss = chex.assert_max_traces(_tanh_loss, n=2)
    kwargs = dict(epochs=6, batch_size=8, validation=val, patience=3,
                  metrics={"error": _error}, progress=False)
    result = train.sweep(loss, params, (X, y), optimizer=train.sgd(0.1), keys=keys,
                         hyperparams=hp, **kwargs)
    assert result.compilations == 1
    E = result.history["loss"].shape[1]
    assert all(h.shape == (64, E) for h in result.history.values())
    chex.assert_tree_shape_prefix(result.params, (64,))
    np.testing.assert_allclose(result.hyperparams["learning_rate"], hp["learning_rate"],
                               rtol=1e-6)
    np.testing.assert_allclose(result.hyperparams["l2"], hp["l2"], rtol=1e-6)

    # Each model, trained alone by fit, ends in the same place. Model 0 with its own
    # train.sgd(lr, l2); the others with that optimizer and its hyperparameters replaced,
    # which shares fit's compiled program.
    optimizer = train.sgd(float(hp["learning_rate"][0]), l2=float(hp["l2"][0]))
    for i in (0, 29, 63):
        alone = train.fit(_tanh_loss, _row(params, i), (X, y), key=keys[i], optimizer=optimizer,
                          hyperparams={"learning_rate": hp["learning_rate"][i],
                                       "l2": hp["l2"][i]}, **kwargs)
        chex.assert_trees_all_close(_row(result.params, i), alone.params, atol=2e-5, rtol=1e-4)
        assert result.best_epoch[i] == alone.best_epoch
        assert result.stop_reason[i] == alone.stop_reason
        assert result.epochs_run[i] == alone.epochs_run
        for name, values in alone.history.items():
            if name != "epoch":
                np.testing.assert_allclose(result.history[name][i, :len(values)], values,
                                           rtol=1e-4, atol=1e-5)
        assert np.all(np.isnan(result.history["loss"][i, alone.epochs_run:]))


def _noisy_least_squares():
    """``(loss, (X, y), validation)``: 10 noisy examples of a sparse linear model, 30 clean
    validation ones."""
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    w = np.array([1.0, -1.0, 0.5, 0.0, 0.0, 0.0], np.float32)
    X = _rng(k1).normal(size=(10, 6)).astype(np.float32)
    y = X @ w + _rng(k2).normal(size=10).astype(np.float32)
    Xv = _rng(k3).normal(size=(30, 6)).astype(np.float32)

    def loss(p, X, y):
        return jnp.mean((X @ p["w"] + p["b"] - y) ** 2)

    return loss, (X, y), (Xv, Xv @ w)


def test_sweep_stops_each_model_on_its_own(key):
    """Noisy least squares: a small rate runs all epochs, middle rates stop early, a huge
    rate diverges; each stopped model is frozen at its best (or last finite) parameters."""
    loss, data, val_data = _noisy_least_squares()
    params = {"w": jnp.zeros((4, 6)), "b": jnp.zeros((4,))}
    with pytest.warns(RuntimeWarning, match=r"sweep: 1 of 4 models became non-finite "
                                            r"\(models \[3\]\)"):
        result = train.sweep(loss, params, data, optimizer=train.sgd(0.1),
                             keys=jax.random.split(key, 4),
                             hyperparams={"learning_rate": [0.002, 0.05, 0.1, 30.0]},
                             epochs=15, batch_size=2, validation=val_data, patience=4,
                             progress=False)
    assert result.stop_reason == ["epochs", "early_stopping", "early_stopping", "non_finite"]
    val = result.history["val_loss"]
    for i in range(4):
        run = result.epochs_run[i]
        assert np.all(np.isnan(val[i, run:])) and not np.any(np.isnan(val[i, :run]))
        if result.stop_reason[i] != "non_finite":
            assert result.best_epoch[i] == np.nanargmin(val[i]) + 1
            np.testing.assert_allclose(loss(_row(result.params, i), *val_data),
                                       val[i, result.best_epoch[i] - 1], rtol=1e-5)
    assert result.epochs_run[1] == result.best_epoch[1] + 4
    assert not np.isfinite(val[3, result.epochs_run[3] - 1])
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(result.params))
    chex.assert_trees_all_equal(_row(result.params, 3), _row(result.state.params, 3))


def test_models_that_share_a_key_are_stepped_as_one_group(key, monkeypatch):
    """Keys [a, b, a, b, a, b]: two groups of three that share their data order, placed
    group by group for the program and put back. Each model still ends where its own fit
    does, also when the group's first model diverges or stops early before the others."""
    loss, data, val = _noisy_least_squares()
    ka, kb = jax.random.split(key)
    keys = jnp.stack([ka, kb, ka, kb, ka, kb])
    rates = np.array([30.0, 0.05, 0.002, 30.0, 0.1, 0.002])  # 0 and 3 lead, and diverge
    params = {"w": jnp.asarray(_rng(key).normal(size=(6, 6)), jnp.float32),
              "b": jnp.zeros((6,))}
    seen = []
    real_run = train.runner.run
    monkeypatch.setattr(train.runner, "run", lambda *a, **k: seen.append(k) or real_run(*a, **k))
    kw = dict(epochs=12, batch_size=2, validation=val, patience=3, progress=False)
    with pytest.warns(RuntimeWarning, match="2 of 6 models became non-finite"):
        result = train.sweep(loss, params, data, optimizer=train.sgd(0.1), keys=keys,
                             hyperparams={"learning_rate": rates}, **kw)
    assert seen[-1]["group_size"] == result.group_size == 3 and result.compilations == 1
    assert result.stop_reason[0] == result.stop_reason[3] == "non_finite"
    assert "early_stopping" in result.stop_reason and "epochs" in result.stop_reason
    np.testing.assert_allclose(result.hyperparams["learning_rate"], rates, rtol=1e-6)
    for i in range(6):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            alone = train.fit(loss, _row(params, i), data, optimizer=train.sgd(float(rates[i])),
                              key=keys[i], **kw)
        assert result.stop_reason[i] == alone.stop_reason
        assert result.epochs_run[i] == alone.epochs_run
        assert result.best_epoch[i] == alone.best_epoch
        np.testing.assert_allclose(result.history["val_loss"][i, :alone.epochs_run],
                                   alone.history["val_loss"], rtol=1e-5)
        chex.assert_trees_all_close(_row(result.params, i), alone.params, rtol=1e-5,
                                    atol=1e-6)


def test_grouped_models_with_state_and_dropout_match_their_fits(x64):
    """A group of 3 models sharing a key (so sharing dropout masks and batches) with batch
    norm (state updated every step, statistics across the batch), dropout (loss keys),
    metrics every 2 epochs and 2 epochs per call: each model as its own fit, in float64."""
    from nets import layers as L
    from nets.model import Model
    net = Model(L.serial(L.Dense(6), L.BatchNorm(), L.Activation("tanh"), L.Dropout(0.3),
                         L.Dense(3)), (4,))
    X, y = _toy(jax.random.key(3), 24)
    X = X.astype(np.float64)
    inits = [net.init(k) for k in jax.random.split(jax.random.key(4), 3)]
    params, state = jax.tree.map(
        lambda *a: np.stack(a).astype(np.float64) if np.asarray(a[0]).dtype.kind == "f"
        else np.stack(a), *inits)
    keys = jnp.stack([jax.random.key(5)] * 3)
    rates = np.array([0.05, 0.2, 0.5])
    kw = dict(epochs=5, batch_size=6, validation=_toy(jax.random.key(6), 9), eval_every=2,
              epochs_per_call=2, progress=False)
    loss = objective.make(net)
    r = train.sweep(loss, params, (X, y), optimizer=train.sgd(0.1), keys=keys,
                    model_state=state, hyperparams={"learning_rate": rates}, **kw)
    assert r.group_size == 3
    for i in range(3):
        alone = train.fit(loss, _row(params, i), (X, y), optimizer=train.sgd(float(rates[i])),
                          key=keys[i], model_state=_row(state, i), **kw)
        chex.assert_trees_all_close(_row(r.params, i), alone.params, rtol=1e-12, atol=1e-12)
        chex.assert_trees_all_close(_row(r.model_state, i), alone.model_state, rtol=1e-12,
                                    atol=1e-12)
        np.testing.assert_allclose(r.history["val_loss"][i], alone.history["val_loss"],
                                   rtol=1e-12)


@pytest.mark.parametrize("group", [2, 1])
def test_models_run_at_once_or_in_chunks_alike(group, x64, monkeypatch):
    """On a CPU a sweep runs its models (groups of a shared key, or single models) a few at a
    time, the chunks one after the other (lax.map); an accelerator vmaps them all. The two
    programs (the second forced here) give the same models, with models stopping early."""
    loss, data, val = _noisy_least_squares()
    models = 24  # 12 groups of 2: chunks of 4 groups; 24 single models: chunks of 8
    keys = jnp.repeat(jax.random.split(jax.random.key(7), models // group), group)
    params = {"w": jnp.asarray(_rng(jax.random.key(8)).normal(size=(models, 6))),
              "b": jnp.zeros(models)}
    kw = dict(optimizer=train.sgd(0.1), keys=keys, epochs=8, batch_size=2, validation=val,
              patience=2, hyperparams={"learning_rate": np.geomspace(0.002, 0.2, models)},
              progress=False)
    assert train.runner._chunk(models // group, group, "cpu") == 8 // group
    one_after = train.sweep(loss, params, data, **kw)
    monkeypatch.setattr(train.runner, "_platform", lambda device: "gpu")
    at_once = train.sweep(loss, params, data, **kw)
    assert one_after.group_size == at_once.group_size == group and at_once.compilations == 1
    assert "early_stopping" in at_once.stop_reason
    assert one_after.stop_reason == at_once.stop_reason
    np.testing.assert_array_equal(one_after.epochs_run, at_once.epochs_run)
    chex.assert_trees_all_close(one_after.params, at_once.params, rtol=1e-12, atol=1e-12)


def test_groups_of_unequal_size_are_not_grouped(key, monkeypatch):
    loss, data, _ = _noisy_least_squares()
    ka, kb = jax.random.split(key)
    seen = []
    real_run = train.runner.run
    monkeypatch.setattr(train.runner, "run", lambda *a, **k: seen.append(k) or real_run(*a, **k))
    r = train.sweep(loss, {"w": jnp.zeros((3, 6)), "b": jnp.zeros((3,))}, data,
                    optimizer=train.sgd(0.01), keys=jnp.stack([ka, ka, kb]), epochs=2,
                    batch_size=5, progress=False)
    assert seen[-1]["group_size"] == r.group_size == 1
    chex.assert_trees_all_close(_row(r.params, 0), _row(r.params, 1))  # same key, same model


@pytest.mark.parametrize("group_size, keys, match", [
    (3, jax.random.split(jax.random.key(0), 4), r"group_size: expected a divisor of models=4, got 3"),
    (2, jax.random.split(jax.random.key(0), 4), r"key: with group_size=2 the models of each group must share one key .* models 0..1 have different keys"),
    (0, jax.random.split(jax.random.key(0), 4), r"group_size: expected an int >= 1, got 0"),
])
def test_run_checks_its_groups_before_compiling(group_size, keys, match):
    state = {"mu": jnp.zeros((4,))}
    with pytest.raises(ValueError, match=match):
        train.run(_never_called, state, _X, epochs=1, batch_size=4, key=keys, models=4,
                  group_size=group_size, progress=False)
    with pytest.raises(ValueError, match=r"group_size: groups of models need models="):
        train.run(_never_called, {"mu": jnp.zeros(())}, _X, epochs=1, batch_size=4,
                  key=jax.random.key(0), group_size=2, progress=False)


_MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {root!r})
    from tests.test_sweep import _sweep_for_devices
    assert jax.device_count() == 2, jax.devices()
    out = {{}}
    for models in {models}:  # 3 models on 2 devices: padded to 4, the copy dropped; 6:
        r = _sweep_for_devices(models)  # 3 groups of 2 sharing keys, padded to 4 groups
        W = r.params[0]["W"]
        out[models] = {{
            "W": np.asarray(W).tolist(),
            "val_loss": np.asarray(r.history["val_loss"]).tolist(),
            "devices": len(W.sharding.device_set),
            "spec": str(getattr(W.sharding, "spec", None)),
            "mesh": dict(r.mesh.shape),
            "compilations": r.compilations,  # 3 models padded to 4 reuse the program
        }}
    print("RESULT" + json.dumps(out))
""")


_SGD = train.sgd(0.1)


def _sweep_for_devices(models, devices=None):
    """A small sweep shared by the multi-device test and its single-device reference; 6
    models are 3 groups of 2 that share a key (keys [a, a, b, b, c, c])."""
    k_d, k_v, k_m = jax.random.split(jax.random.key(42), 3)
    X, y = _toy(k_d, 24)
    init_key, key = jax.random.split(k_m)
    params = _stacked_mlp(init_key, 6)
    keys = jax.random.split(key, 4) if models < 6 else jnp.repeat(jax.random.split(key, 3), 2)
    return train.sweep(
        _tanh_loss, _row(params, slice(0, models)), (X, y), optimizer=_SGD,
        keys=keys[:models],
        hyperparams={"learning_rate": [0.1, 0.2, 0.4, 0.8, 0.3, 0.6][:models]},
        epochs=4, batch_size=6, validation=_toy(k_v, 8), patience=2, progress=False,
        devices=devices)


def test_sweep_spreads_models_over_two_devices():
    from tests import _memory
    _memory.release("test_sweep")  # this worker's caches out before the children start
    env = env_with_devices(2)
    out = {}
    for models in ((4, 3), (6,)):  # one process after the other: less memory at once
        proc = subprocess.run(
            [sys.executable, "-c", _MULTI_DEVICE_SCRIPT.format(root=ROOT, models=models)],
            capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
        out.update(json.loads(line[len("RESULT"):]))
    sharded = out["4"]
    assert sharded["devices"] == 2 and sharded["spec"] == str(P("models"))
    assert sharded["mesh"] == {"models": 2} and sharded["compilations"] == 1
    assert out["3"]["mesh"] == {"models": 2} and out["3"]["compilations"] == 0
    assert out["6"]["mesh"] == {"models": 2} and out["6"]["devices"] == 2
    for models in ("4", "3", "6"):
        m = int(models)
        reference = _sweep_for_devices(4 if m < 6 else 6, devices=jax.devices()[:1])
        assert reference.mesh is None
        np.testing.assert_allclose(out[models]["W"], np.asarray(reference.params[0]["W"])[:m],
                                   rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(out[models]["val_loss"],
                                   reference.history["val_loss"][:m], rtol=1e-6)


def test_sweep_structural_compiles_one_program_per_structure(key, caplog):
    X, y = _toy(key, 16)
    keys = jax.random.split(key, 2)

    def build(hidden):
        return _tanh_loss, _stacked_mlp(key, 2, (4, hidden, 3))

    with caplog.at_level("INFO", logger="train.sweep"):
        results = train.sweep_structural([3, 5], build, (X, y), optimizer=train.sgd(0.1),
                                         keys=keys, epochs=2, batch_size=8, progress=False)
    assert [r.params[0]["W"].shape for r in results] == [(2, 3, 4), (2, 5, 4)]
    assert [r.compilations for r in results] == [1, 1]
    messages = [rec.getMessage() for rec in caplog.records]
    assert messages == ["compiling program 1 of 2: 3", "compiling program 2 of 2: 5"]


def test_grid_is_the_cartesian_product():
    g = train.grid(l2=[0.0, 1e-3, 1e-2], learning_rate=[0.1, 0.2])
    assert g["l2"].tolist() == [0.0, 0.0, 1e-3, 1e-3, 1e-2, 1e-2]
    assert g["learning_rate"].tolist() == [0.1, 0.2] * 3
    with pytest.raises(ValueError, match=r"grid: expected at least one value for 'l2'"):
        train.grid(l2=[])
    with pytest.raises(ValueError, match=r"grid: expected at least one hyperparameter"):
        train.grid()


def _never_called(*args, **kwargs):
    raise AssertionError("the loss must not be traced before the arguments are checked")


_X = np.zeros((12, 4), np.float32)
_Y = np.zeros(12, np.int32)
_PARAMS = {"W": jnp.zeros((3, 2, 4)), "b": jnp.zeros((3, 2))}
_KEYS = jax.random.split(jax.random.key(0), 3)


@pytest.mark.parametrize("overrides, error, match", [
    ({"keys": jax.random.key(0)}, ValueError, r"keys: expected a 1-D array of keys, one per model .* got shape \(\)"),
    ({"keys": jax.random.key_data(jax.random.key(0))}, TypeError, r"keys: expected a typed PRNG key .*legacy"),
    ({"keys": list(_KEYS)}, TypeError, r"keys: expected a typed PRNG key from jax.random.key\(seed\), got list \(several keys\? stack them"),
    ({"keys": _KEYS[:2]}, ValueError, r"keys: expected one key per model of params, got 2 keys, and params whose every leaf has a leading axis of length 3 \(3 models stacked\): the keys and the params disagree"),
    ({"params": {"W": jnp.zeros((3, 2, 4)), "b": jnp.zeros((2,))}}, ValueError, r"params: expected every leaf .* got leading sizes \[2, 3\]"),
    ({"hyperparams": {"lr": [0.1, 0.2, 0.3]}}, ValueError, r"hyperparams: expected names among the optimizer's injected hyperparameters \['l2', 'learning_rate'\], got 'lr'"),
    ({"hyperparams": {"learning_rate": [0.1, 0.2]}}, ValueError, r"hyperparams\['learning_rate'\]: expected a scalar or shape \(3,\) .* got shape \(2,\)"),
    ({"hyperparams": {"l2": [0.1, np.nan, 0.3]}}, ValueError, r"hyperparams\['l2'\]: expected finite values"),
    ({"optimizer": __import__("optax").sgd(0.1), "hyperparams": {"learning_rate": 0.1}}, ValueError, r"injected hyperparameters \[\], got 'learning_rate'; build the optimizer with optax.inject_hyperparams"),
    ({"model_state": {"mean": jnp.zeros((2, 4))}}, ValueError, r"model_state: expected every leaf to have a leading model axis of length 3"),
    ({"devices": []}, ValueError, r"devices: expected at least one device"),
    ({"devices": ["cpu"]}, TypeError, r"devices: expected a list of jax devices .*got str 'cpu'"),
    ({"hyperparams": {"learning_rate": "0.1"}}, TypeError, r"hyperparams\['learning_rate'\]: expected a number or an array, got str '0.1'"),
    ({"epochs": 0}, ValueError, r"epochs: expected an int >= 1, got 0"),
    ({"batch_size": 13}, ValueError, r"batch_size: expected 1 <= batch_size <= n = 12"),
    ({"patience": 2}, ValueError, r"patience: early stopping monitors the validation loss"),
    ({"data": (_X, _Y[:5])}, ValueError, r"X has 12 rows but Y has 5"),
])
def test_sweep_rejects_bad_arguments_before_compiling(overrides, error, match):
    kwargs = dict(loss_fn=_never_called, params=_PARAMS, data=(_X, _Y),
                  optimizer=train.sgd(0.1), keys=_KEYS, epochs=2, batch_size=4, progress=False)
    kwargs.update(overrides)
    with pytest.raises(error, match=match):
        train.sweep(**kwargs)


def test_sweep_structural_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"structures: expected at least one structure"):
        train.sweep_structural([], lambda s: None, (_X, _Y))
    with pytest.raises(TypeError, match=r"build: expected build\(structure\) -> "
                                        r"\(loss_fn, params\), got int"):
        train.sweep_structural([1], 3, (_X, _Y))
    with pytest.raises(TypeError, match=r"build: expected it to return \(loss_fn, params\), "
                                        r"got dict for structure 8"):
        train.sweep_structural([8], lambda s: {}, (_X, _Y), log=lambda msg: None)


def test_several_epochs_per_call_give_the_same_runs(key):
    """epochs_per_call=k (k epochs in one lax.scan) follows epochs_per_call=1: the same
    histories, best epochs and parameters, early stops inside a call included, and the last,
    shorter call reuses the one program."""
    k_d, k_v, k_m = jax.random.split(key, 3)
    X, y = _toy(k_d, 24)
    val = _toy(k_v, 12)
    params = _stacked_mlp(k_m, 4)
    keys = jax.random.split(k_m, 4)
    kw = dict(optimizer=train.sgd(0.5, l2=0.0, momentum=0.9), keys=keys, epochs=23,
              batch_size=24, validation=val, patience=3, metrics={"error": _error},
              hyperparams={"learning_rate": np.array([0.05, 0.3, 1.0, 3.0])}, progress=False)
    one = train.sweep(_tanh_loss, params, (X, y), **kw)
    five = train.sweep(_tanh_loss, params, (X, y), epochs_per_call=5, **kw)
    assert five.compilations == 1
    assert one.history["loss"].shape == five.history["loss"].shape
    np.testing.assert_array_equal(one.best_epoch, five.best_epoch)
    np.testing.assert_array_equal(one.epochs_run, five.epochs_run)
    assert one.stop_reason == five.stop_reason and "early_stopping" in one.stop_reason
    np.testing.assert_allclose(one.history["val_loss"], five.history["val_loss"], rtol=1e-5)
    chex.assert_trees_all_close(one.params, five.params, atol=1e-5)

    fit_kw = dict(optimizer=train.sgd(0.3, momentum=0.9), epochs=23, batch_size=24,
                  key=keys[1], validation=val, patience=3, progress=False)
    a = train.fit(_tanh_loss, _row(params, 1), (X, y), **fit_kw)
    b = train.fit(_tanh_loss, _row(params, 1), (X, y), epochs_per_call=4, **fit_kw)
    assert a.history["epoch"] == b.history["epoch"] and a.best_epoch == b.best_epoch
    np.testing.assert_allclose(a.history["val_loss"], b.history["val_loss"], rtol=1e-5)
    chex.assert_trees_all_close(a.params, b.params, atol=1e-5)


def test_epochs_per_call_must_be_a_positive_int(key):
    X, y = _toy(key, 8)
    with pytest.raises(ValueError, match=r"epochs_per_call: expected an int >= 1, got 0"):
        train.sweep(_tanh_loss, _stacked_mlp(key, 2), (X, y), optimizer=train.sgd(0.1),
                    keys=jax.random.split(key, 2), epochs=2, batch_size=8, epochs_per_call=0)
    with pytest.raises(TypeError, match=r"epochs_per_call: expected an int >= 1, got float 2.0"):
        train.fit(_tanh_loss, _row(_stacked_mlp(key, 1), 0), (X, y), optimizer=train.sgd(0.1),
                  key=key, epochs=2, batch_size=8, epochs_per_call=2.0)


def test_a_float64_sweep_tracks_each_model_in_float64(x64):
    """Defect: under x64 a float64 sweep's histories were float32-rounded and a validation
    loss falling by ~1e-11 an epoch stopped every model at epoch 3 with best epoch 1."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 3))
    Y = X @ np.array([1.0, -2.0, 0.5])
    loss = lambda p, X, Y: jnp.mean((X @ p["w"] - Y) ** 2)  # noqa: E731
    keys = jax.random.split(jax.random.key(0), 2)
    s = train.sweep(loss, {"w": jnp.zeros((2, 3), jnp.float64)}, (X, Y),
                    optimizer=train.sgd(1e-12), keys=keys, epochs=5, batch_size=32,
                    validation=(X, Y), patience=2, progress=False)
    assert list(s.best_epoch) == [5, 5] and s.stop_reason == ["epochs"] * 2
    val = s.history["val_loss"]
    assert val.dtype == np.float64 and (np.diff(val, axis=1) < 0).all()
    assert (np.diff(val.astype(np.float32), axis=1) == 0).any()  # float32 could not see it


def test_the_docstrings_say_what_holds_and_name_what_exists():
    """Findings of an audit: sweep's docstring promised "exactly as" fit (it is up to float
    rounding), pointed to a module docstring that help(train.sweep) does not show (the
    package re-exports the function) and to a function that did not exist; the result
    classes documented their fields only in source comments."""
    import importlib
    import pathlib
    import re

    doc = " ".join(train.sweep.__doc__.split())
    assert "exactly as" not in doc and "up to float rounding" in doc
    assert "module docstring" not in doc and "share a key" in doc  # the groups, said here
    for cls in (train.FitResult, train.SweepResult):
        fields = [f.name for f in __import__("dataclasses").fields(cls)]
        assert "Attributes:" in cls.__doc__
        assert all(f"\n      {name}: " in cls.__doc__ for name in fields), cls
    # every :func:/:class:/:mod: reference to train.* or nets.* in train/ resolves
    missing = []
    for path in sorted(pathlib.Path(ROOT, "train").glob("*.py")):
        for name in re.findall(r":(?:func|class|mod|meth):`~?((?:train|nets)\.[\w.]+)`",
                               path.read_text()):
            parts, obj = name.split("."), None
            for i in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:i]))
                except ImportError:
                    continue
                rest = parts[i:]
                break
            for attr in rest:
                obj = getattr(obj, attr, None)
            if obj is None:
                missing.append(f"{path.name}: {name}")
    assert missing == []
