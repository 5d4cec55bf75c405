"""train.run: the one loop under fit and sweep, for any step over any state pytree."""

import gc
import os
import subprocess
import sys
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nets
import train
from tests._child import env_with_devices
from nets import mlp, objective
from train import runner

# --- a two-player GAN on 1-D data, written as ONE step over a state of two players ---------

OPT_D, OPT_G = optax.adam(0.05), optax.adam(0.05)


def _gan_state(key):
    kd, kg = jax.random.split(key)
    d = {"w": 0.1 * jax.random.normal(kd, (2,)), "b": jnp.zeros(())}
    g = {"mu": jnp.zeros(()), "log_s": 0.1 * jax.random.normal(kg, ())}
    return {"d": d, "g": g, "od": OPT_D.init(d), "og": OPT_G.init(g)}


def _disc(d, x):
    return d["w"][0] * x + d["w"][1] * x ** 2 + d["b"]


def _fake(g, key, n):
    return g["mu"] + jnp.exp(g["log_s"]) * jax.random.normal(key, (n,))


def gan_step(state, batch, key):
    """Discriminator update then generator update (non-saturating loss), one compiled step."""
    kd, kg = jax.random.split(key)
    n = batch.shape[0]

    def d_loss(d):
        fake = _fake(state["g"], kd, n)
        return jnp.mean(jax.nn.softplus(-_disc(d, batch)) + jax.nn.softplus(_disc(d, fake)))

    def g_loss(g):
        return jnp.mean(jax.nn.softplus(-_disc(d_new, _fake(g, kg, n))))

    ld, gd = jax.value_and_grad(d_loss)(state["d"])
    upd, od = OPT_D.update(gd, state["od"])
    d_new = optax.apply_updates(state["d"], upd)
    lg, gg = jax.value_and_grad(g_loss)(state["g"])
    upd, og = OPT_G.update(gg, state["og"])
    g_new = optax.apply_updates(state["g"], upd)
    return {"d": d_new, "g": g_new, "od": od, "og": og}, {"d_loss": ld, "g_loss": lg}


def gan_evaluate(state, batch, key):
    """Evaluation: the distance of the generator's mean and scale from the data's."""
    return {"mean_gap": jnp.abs(state["g"]["mu"] - jnp.mean(batch)),
            "d_real": jnp.mean(jax.nn.sigmoid(_disc(state["d"], batch)))}


def _gan_data(key, n=512):
    return np.asarray(2.0 + 0.5 * jax.random.normal(key, (n,)), np.float32)


def _equal(a, b) -> bool:
    a, b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(a) == len(b) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                    for x, y in zip(a, b))


def test_a_two_player_gan_trains_with_history_checkpoints_and_bitwise_resume(key, tmp_path):
    k_s, k_d, k_v, k_r = jax.random.split(key, 4)
    X, V = _gan_data(k_d), _gan_data(k_v, 256)
    kwargs = dict(epochs=8, batch_size=64, key=k_r, evaluate=gan_evaluate, validation=V,
                  progress=False)
    full = train.run(gan_step, _gan_state(k_s), X, **kwargs)
    h = full.history
    assert sorted(h) == ["d_loss", "epoch", "g_loss", "val_d_real", "val_mean_gap"]
    assert h["epoch"] == list(range(1, 9)) and full.stop_reason == "epochs"
    assert h["val_mean_gap"][-1] < 0.5 * h["val_mean_gap"][0]  # the generator moved to the data

    # interrupted after 3 epochs (checkpointed), resumed to 8: the same numbers, bitwise
    ckpt = tmp_path / "gan.msgpack"
    part = train.run(gan_step, _gan_state(k_s), X, **{**kwargs, "epochs": 3},
                     checkpoint=ckpt)
    assert part.history["epoch"] == [1, 2, 3] and ckpt.exists()
    resumed = train.run(gan_step, _gan_state(k_s), X, **kwargs, resume=ckpt, checkpoint=ckpt)
    assert _equal(resumed.state, full.state)
    assert resumed.history == full.history
    # and the checkpoint of a differently configured run is refused
    with pytest.raises(ValueError, match=r"resume: the checkpoint .* was written with "
                                         r"batch_size=64, this run has batch_size=32"):
        train.run(gan_step, _gan_state(k_s), X, **{**kwargs, "batch_size": 32}, resume=ckpt)


def test_several_epochs_per_call_and_a_stream_give_the_same_run(key):
    k_s, k_d = jax.random.split(key)
    X = _gan_data(k_d, 256)
    base = dict(epochs=5, key=jax.random.key(3), progress=False)
    one = train.run(gan_step, _gan_state(k_s), X, batch_size=64, order="sequential", **base)
    many = train.run(gan_step, _gan_state(k_s), X, batch_size=64, order="sequential",
                     epochs_per_call=3, **base)
    np.testing.assert_allclose(many.history["d_loss"], one.history["d_loss"], rtol=1e-5)
    # the same batches as a stream: a function epoch -> iterable of batches
    stream = lambda epoch: [X[i:i + 64] for i in range(0, 256, 64)]  # noqa: E731
    streamed = train.run(gan_step, _gan_state(k_s), stream, **base)
    np.testing.assert_allclose(streamed.history["d_loss"], one.history["d_loss"], rtol=1e-5)
    # a generator function (a fresh iterator every epoch) is a stream too
    def generator(epoch):
        for i in range(0, 256, 64):
            yield X[i:i + 64]

    generated = train.run(gan_step, _gan_state(k_s), generator, **base)
    assert generated.history == streamed.history
    # a one-shot iterator cannot be replayed: a clear error, not a silently empty epoch 2
    with pytest.raises(TypeError, match=r"data: a one-shot iterator \(got generator\) cannot "
                                        r"be replayed"):
        train.run(gan_step, _gan_state(k_s), generator(0), **base)
    with pytest.raises(TypeError, match=r"validation: a one-shot iterator \(got list_iterator"):
        train.run(gan_step, _gan_state(k_s), stream, validation=iter([X[:64]]),
                  evaluate=lambda s, b, k: {"m": jnp.mean(b)}, **base)
    shared = iter([X[:64]])  # the same iterator every epoch: empty from epoch 2 on
    with pytest.raises(ValueError, match=r"data: the stream gave no batches in epoch 1 \(a "
                                         r"function returning the same iterator"):
        train.run(gan_step, _gan_state(k_s), lambda e: shared, **base)


def test_a_stream_resumes_bitwise(key, tmp_path):
    k_s, k_d = jax.random.split(key)
    X = _gan_data(k_d, 256)

    def stream(epoch):  # a different order every epoch, a function of the epoch alone
        perm = np.random.default_rng(epoch).permutation(256)
        return [X[perm[i:i + 50]] for i in range(0, 200, 50)]

    kwargs = dict(key=jax.random.key(1), evaluate=gan_evaluate, validation=[X[:100], X[100:]],
                  progress=False)
    full = train.run(gan_step, _gan_state(k_s), stream, epochs=4, **kwargs)
    ckpt = tmp_path / "s.msgpack"
    train.run(gan_step, _gan_state(k_s), stream, epochs=2, checkpoint=ckpt, **kwargs)
    resumed = train.run(gan_step, _gan_state(k_s), stream, epochs=4, resume=ckpt, **kwargs)
    assert _equal(resumed.state, full.state) and resumed.history == full.history
    # the validation stream is evaluated exactly: weighted by batch size
    want = float(jnp.abs(full.state["g"]["mu"] - X.mean()))
    np.testing.assert_allclose(full.history["val_mean_gap"][-1], want, rtol=1e-5)


# --- evaluation in batches -------------------------------------------------------------------


def _wide_problem(key, m):
    params = mlp.init(key, (16, 512, 10), scheme="he")
    X = np.asarray(jax.random.normal(key, (m, 16)), np.float32)
    y = np.asarray(jax.random.randint(key, (m,), 0, 10), np.int32)
    return params, X, y


def _ce(p, X, y):
    return objective.mlp_objective(p, X, y, activation="relu")


def test_evaluation_in_batches_equals_one_batch_and_its_memory_does_not_grow(key):
    params, X, y = _wide_problem(key, 20_000)
    evaluate = train.make_evaluate(_ce, jit=False)
    state = train.init_state(params, optax.sgd(0.1))
    k = jax.random.key(0)
    batched = jax.jit(lambda s, d: runner._evaluate(evaluate, s, d, k, 256))
    whole = jax.jit(lambda s, d: runner._evaluate(evaluate, s, d, k, 20_000))
    a, b = batched(state, (X, y)), whole(state, (X, y))
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)  # 78 full batches + 32 rows
    np.testing.assert_allclose(a["loss"], _ce(params, X, y), rtol=1e-5)

    def temp_bytes(fn, m):
        _, Xm, ym = _wide_problem(key, m)
        return fn.lower(state, (Xm, ym)).compile().memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(batched, 5_000), temp_bytes(batched, 20_000)
    one_small, one_large = temp_bytes(whole, 5_000), temp_bytes(whole, 20_000)
    assert large <= small + 64 * 1024  # batches of 256: independent of the set's size
    assert one_large > 3 * one_small  # the whole set at once: grows with it


def test_fit_evaluates_in_batches_and_every_k_epochs(key):
    params, X, y = _wide_problem(key, 600)
    kwargs = dict(optimizer=train.sgd(0.05), epochs=5, batch_size=100, key=key,
                  validation=(X[:250], y[:250]), progress=False)
    one = train.fit(_ce, params, (X, y), **kwargs)
    batched = train.fit(_ce, params, (X, y), eval_batch_size=64, **kwargs)
    np.testing.assert_allclose(batched.history["val_loss"], one.history["val_loss"], rtol=1e-5)
    sparse = train.fit(_ce, params, (X, y), eval_every=2, **kwargs)
    v = np.asarray(sparse.history["val_loss"])
    assert np.isnan(v[[0, 2]]).all()  # epochs 1 and 3 skip evaluation
    np.testing.assert_allclose(v[[1, 3, 4]], np.asarray(one.history["val_loss"])[[1, 3, 4]],
                               rtol=1e-5)  # 2, 4 and the last one evaluate


# --- stopping ----------------------------------------------------------------------------------


def test_min_delta_stops_on_a_plateau(key):
    """A loss that falls by less than min_delta per epoch does not count as improving."""

    def step(state, batch, key):
        return {"x": state["x"] * 0.999}, {"loss": state["x"]}

    kwargs = dict(epochs=50, batch_size=4, key=key, patience=3, monitor="loss",
                  progress=False)
    X = np.zeros((4, 1), np.float32)
    never = train.run(step, {"x": jnp.ones(())}, X, **kwargs)
    assert never.stop_reason == "epochs"
    stops = train.run(step, {"x": jnp.ones(())}, X, min_delta=0.01, **kwargs)
    assert stops.stop_reason == "early_stopping" and stops.epochs_run == 4
    assert stops.best_epoch == 1
    numpy = train.run(step, {"x": jnp.ones(())}, X, min_delta=np.float32(0.01), **kwargs)
    assert numpy.history == stops.history  # a NumPy scalar from a config is a number too


def test_a_leading_minus_maximises_the_monitored_value(key):
    """monitor="-acc": the best epoch is the highest accuracy, early stopping counts the
    evaluations since it last rose (by more than min_delta)."""
    accs = jnp.array([0.3, 0.6, 0.8, 0.8, 0.7, 0.75, 0.5, 0.9])

    def step(state, batch, key):
        return {"i": state["i"] + 1}, {}

    def train_evaluate(state, batch, key):
        return {"acc": accs[state["i"] - 1]}

    X = np.zeros((4, 1), np.float32)
    kwargs = dict(epochs=8, batch_size=4, key=key, train_evaluate=train_evaluate,
                  progress=False, best_of=lambda s: s["i"])
    r = train.run(step, {"i": jnp.zeros((), jnp.int32)}, X, monitor="-acc", patience=3,
                  **kwargs)
    assert r.history["acc"] == pytest.approx([0.3, 0.6, 0.8, 0.8, 0.7, 0.75])
    assert (r.best_epoch, r.stop_reason, int(r.best)) == (3, "early_stopping", 3)
    whole = train.run(step, {"i": jnp.zeros((), jnp.int32)}, X, monitor="-acc", **kwargs)
    assert whole.best_epoch == 8
    with pytest.raises(ValueError, match=r"monitor: expected one of the recorded names "
                                         r"\['acc'\] \(a leading '-' to maximise one\), got "
                                         r"'-accuracy'"):
        train.run(step, {"i": jnp.zeros((), jnp.int32)}, X, monitor="-accuracy", **kwargs)


@pytest.mark.parametrize("how", ["early_stopping", "non_finite", "epochs"])
def test_the_call_dispatched_ahead_changes_nothing(key, tmp_path, how):
    """`run` dispatches the next compiled call before reading the last one's results (not
    when a checkpoint falls between them). A run that stops ends with a call dispatched on
    its stopped carry, which the program freezes: the run must equal, bit for bit, one that
    checkpoints every epoch (and so never looks ahead)."""
    X = np.asarray(jax.random.normal(key, (24, 3)), np.float32)

    def step(state, batch, key):
        w = state["w"] - 0.05 * (state["w"] - jnp.mean(batch)) + 0.01 * jax.random.normal(key)
        if how == "non_finite":
            w = jnp.where(state["t"] >= 4, jnp.inf, w)
        return {"w": w, "t": state["t"] + 1}, {"loss": jnp.sum((w - 1.0) ** 2)}

    kwargs = dict(epochs=12, batch_size=8, key=key, monitor="loss", progress=False,
                  patience=2 if how == "early_stopping" else None)
    state = {"w": jnp.full(3, 3.0), "t": jnp.zeros((), jnp.int32)}
    ahead = train.run(step, state, X, **kwargs)
    synced = train.run(step, state, X, checkpoint=str(tmp_path / "c.npz"), checkpoint_every=1,
                       **kwargs)
    assert ahead.stop_reason == synced.stop_reason == how
    if how != "epochs":
        assert ahead.epochs_run < 12
    assert ahead.epochs_run == synced.epochs_run and ahead.best_epoch == synced.best_epoch
    assert ahead.history.keys() == synced.history.keys()
    for name in ahead.history:
        np.testing.assert_array_equal(ahead.history[name], synced.history[name])
    assert _equal(ahead.state, synced.state)


def test_nan_in_the_optimizer_state_stops_the_run(key):
    """Defect: the divergence check read only the loss and the parameters, so a NaN in an
    optimizer's momentum (or batch-norm statistics) trained on as if finite."""
    X = np.ones((8, 1), np.float32)

    def step(state, batch, key):
        broken = jnp.where(state["t"] >= 2, jnp.nan, state["momentum"])
        return ({"w": state["w"] - 0.1, "momentum": broken, "t": state["t"] + 1},
                {"loss": jnp.sum(state["w"] ** 2)})

    state = {"w": jnp.ones(()), "momentum": jnp.zeros(()), "t": jnp.zeros((), jnp.int32)}
    r = train.run(step, state, X, epochs=10, batch_size=8, key=key, progress=False)
    assert r.stop_reason == "non_finite" and r.non_finite_epoch == 3
    assert np.isfinite(float(r.state["momentum"])) and int(r.state["t"]) == 2


def test_non_finite_initial_parameters_are_refused(key):
    params = mlp.init(key, (4, 3, 2))
    params[0]["W"] = params[0]["W"].at[1, 2].set(jnp.nan)
    X, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int32)
    with pytest.raises(ValueError, match=r"state\.params\[0\]\['W'\]: expected finite values"):
        train.fit(_ce, params, (X, y), optimizer=train.sgd(0.1), epochs=2, batch_size=4,
                  key=key, progress=False)


# --- configuration errors: refused before compiling -------------------------------------------


def test_a_schedule_is_not_silently_overridden_by_hyperparams(key):
    """Defect: train.sgd(schedule) with hyperparams={"learning_rate": ...} ignored the value."""
    params, X, y = _wide_problem(key, 64)
    opt = train.sgd(optax.linear_schedule(0.1, 0.0, 100))
    with pytest.raises(ValueError, match=r"hyperparams\['learning_rate'\]: the optimizer "
                                         r"computes learning_rate from a schedule"):
        train.fit(_ce, params, (X, y), optimizer=opt, hyperparams={"learning_rate": 1e-6},
                  epochs=1, batch_size=8, key=key, progress=False)
    stacked = jax.tree.map(lambda a: jnp.stack([a] * 3), params)
    with pytest.raises(ValueError, match=r"from a schedule"):
        train.sweep(_ce, stacked, (X, y), optimizer=opt, keys=jax.random.split(key, 3),
                    hyperparams={"learning_rate": [1e-6, 0.1, 10.0]}, epochs=1, batch_size=8,
                    progress=False)
    with pytest.raises(ValueError, match=r"hyperparams\['learning_rate'\]: expected values "
                                         r"in \(0.0, inf\)"):
        train.fit(_ce, params, (X, y), optimizer=train.sgd(0.1),
                  hyperparams={"learning_rate": -1.0}, epochs=1, batch_size=8, key=key,
                  progress=False)


def test_resume_with_other_metrics_is_refused(key, tmp_path):
    """Defect: a resume with a changed metrics dict returned history lists of different
    lengths (epoch 4, acc 2)."""
    params, X, y = _wide_problem(key, 64)
    err = lambda p, X, y: nets.metrics.error_rate(  # noqa: E731
        jax.vmap(lambda x: mlp.apply(p, x, activation="relu"))(X), y)
    kwargs = dict(optimizer=train.sgd(0.1), batch_size=16, key=key, validation=(X, y),
                  progress=False)
    ckpt = tmp_path / "fit.msgpack"
    train.fit(_ce, params, (X, y), epochs=2, metrics={"error": err}, checkpoint=ckpt, **kwargs)
    with pytest.raises(ValueError, match=r"resume: the checkpoint .* was written with "
                                         r"metrics='error', this run has metrics='error,acc'"):
        train.fit(_ce, params, (X, y), epochs=4, metrics={"error": err, "acc": err},
                  resume=ckpt, **kwargs)


def test_a_bad_checkpoint_path_fails_before_training(key, tmp_path):
    params, X, y = _wide_problem(key, 64)
    kwargs = dict(optimizer=train.sgd(0.1), epochs=1, batch_size=16, key=key, progress=False)
    with pytest.raises(ValueError, match=r"checkpoint: .* is a folder"):
        train.fit(_ce, params, (X, y), checkpoint=tmp_path, **kwargs)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"checkpoint: cannot create .*: .* is a file"):
        train.fit(_ce, params, (X, y), checkpoint=tmp_path / "file" / "ckpt", **kwargs)


def test_user_arrays_survive_the_donated_carry(key):
    params, X, y = _wide_problem(key, 64)
    before = jax.tree.map(np.asarray, params)
    train.fit(_ce, params, (X, y), optimizer=train.sgd(0.1), epochs=2, batch_size=16,
              key=key, progress=False)
    assert _equal(params, before)  # still readable and unchanged


def test_the_program_cache_does_not_keep_user_closures_alive(key):
    """Defect: memoize kept up to 24 user closures and all they captured alive."""
    params, X, y = _wide_problem(key, 64)

    class Big:  # stands for a large array captured by the loss
        pass

    big = Big()
    ref = weakref.ref(big)

    def make_loss(captured):
        def loss(p, X, y):
            assert captured is not None
            return _ce(p, X, y)
        return loss

    loss = make_loss(big)
    train.fit(loss, params, (X, y), optimizer=train.sgd(0.1), epochs=1, batch_size=16,
              key=key, progress=False)
    del loss, big
    gc.collect()
    assert ref() is None


def test_sweep_mesh_uses_only_the_devices_it_needs():
    """Defect: 2 models on 8 devices trained 8 (the model axis padded to all devices). Now
    2 models on 4 devices train 2 models on a 2 x 2 mesh, the spare devices along "data"."""
    assert runner._devices_for(2, 8) == 2
    assert runner._devices_for(8, 8) == 8
    assert runner._devices_for(9, 8) == 5  # two slots per device, one padded model
    assert runner._devices_for(3, 1) == 1
    code = """
import jax, numpy as np, train
from nets import mlp, objective
X = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
y = (X[:, 0] > 0).astype(np.int32)
loss = lambda p, X, y: objective.mlp_objective(p, X, y, activation="tanh")
keys = jax.random.split(jax.random.key(0), 2)
params = jax.vmap(lambda k: mlp.init(k, (4, 8, 2)))(keys)
r = train.sweep(loss, params, (X, y), optimizer=train.sgd(0.1), keys=keys, epochs=2,
                batch_size=8, progress=False)
print(len(jax.devices()), r.mesh.devices.size, r.history["loss"].shape,
      r.state.params[0]["W"].shape[0], r.mesh.shape["models"], r.mesh.shape["data"])
"""
    from tests import _memory
    _memory.release("test_runner")  # this worker's caches out before the child starts
    env = env_with_devices(4)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "4", "(2,", "2)", "2", "2", "2"]


def test_run_rejects_bad_arguments_before_tracing(key):
    def step(state, batch, key):
        raise AssertionError("traced before the arguments were checked")

    X = np.zeros((8, 2), np.float32)
    s = {"w": jnp.zeros(())}
    cases = [
        (dict(epochs=0), ValueError, r"epochs: expected an int >= 1, got 0"),
        (dict(batch_size=9), ValueError, r"batch_size: expected 1 <= batch_size <= n = 8"),
        (dict(batch_size=None), TypeError, r"batch_size: expected an int for array data"),
        (dict(eval_every=0), ValueError, r"eval_every: expected an int >= 1"),
        (dict(min_delta=-1.0), ValueError, r"min_delta: expected a finite number >= 0"),
        (dict(validation=X), ValueError, r"validation: a validation set needs an evaluate"),
        (dict(evaluate=lambda s, b, k: {}), ValueError, r"evaluate: it evaluates the "
                                                          r"validation set, and there is none"),
        (dict(patience=2, monitor="val_loss"), ValueError, r"patience: early stopping monitors"),
        (dict(key=jax.random.split(key, 2)), ValueError, r"key: expected a key array of "
                                                        r"shape \(\)"),
        (dict(data_on_devices="yes"), TypeError, r"data_on_devices: expected True or False"),
        (dict(data_on_devices=True, models=2, key=jax.random.split(key, 2),
              state={"w": jnp.zeros((2,))}), ValueError,
         r"data_on_devices: expected False for a sweep"),
        (dict(data_on_devices=True, batch_size=None, data=[X[:4], X[4:]]), ValueError,
         r"data_on_devices: a stream's batches come from the host"),
    ]
    for overrides, error, match in cases:
        kwargs = {**dict(epochs=2, batch_size=4, key=key, progress=False, state=s, data=X),
                  **overrides}
        with pytest.raises(error, match=match):
            train.run(step, kwargs.pop("state"), kwargs.pop("data"), **kwargs)
    with pytest.raises(ValueError, match=r"monitor: expected one of the recorded names "
                                         r"\['loss'\] \(a leading '-' to maximise one\), "
                                         r"got 'val_loss'"):
        train.run(lambda s, b, k: (s, {"loss": jnp.zeros(())}), s, X, epochs=1, batch_size=4,
                  key=key, monitor="val_loss", progress=False)
    # a step that changes a leaf's shape or dtype: the library's message, not lax.scan's
    for changed in (jnp.zeros(3), jnp.zeros((), jnp.int32)):
        with pytest.raises(TypeError, match=r"step: expected the returned state to keep every "
                                            r"leaf's shape and dtype .* state\['w'\] changed "
                                            r"from float32\[\] to"):
            train.run(lambda s, b, k, c=changed: ({"w": c}, {}), s, X, epochs=1, batch_size=4,
                      key=key, progress=False)


@pytest.mark.parametrize("labels, error, match", [
    (np.arange(40) % 10 + 1, ValueError, r"Y: expected class labels in \[0, 10\), got values "
                                         r"in \[1, 10\] .*subtract 1"),
    ((np.arange(40) % 10).astype(np.float32), TypeError, r"float labels\? pass "
                                                         r"Y.astype\(np.int32\)"),
    ((np.arange(40) % 10)[:, None], ValueError, r"pass Y.ravel\(\)"),
])
def test_bad_labels_are_clear_errors_before_compiling_even_after_a_good_fit(labels, error,
                                                                          match, key):
    """Defect: labels 1..10 for 10 outputs trained to a negative loss, float labels were
    accepted and (n, 1) labels read as probabilities, with or without num_classes."""
    X = np.asarray(jax.random.normal(key, (40, 4)), np.float32)
    params = mlp.init(key, (4, 8, 10))
    kwargs = dict(optimizer=train.sgd(0.1), epochs=1, batch_size=8, key=key, progress=False)
    train.fit(_ce, params, (X, np.arange(40) % 10), **kwargs)  # the program is now cached
    with pytest.raises(error, match=match):
        train.fit(_ce, params, (X, labels), **kwargs)
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), params)
    with pytest.raises(error, match=match):
        train.sweep(_ce, stacked, (X, labels), keys=jax.random.split(key, 2),
                    **{k: v for k, v in kwargs.items() if k != "key"})


def test_a_diverging_regression_names_the_scale_of_its_targets(key):
    """Defect: a fit on raw regression targets (diabetes: y up to 346, sd 77) that diverged
    said only "try a smaller learning rate", where the scale of y is the first suspect."""
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X, y = (X / X.std(0)).astype(np.float32), y.astype(np.float32)[:, None]
    params = mlp.init(key, (10, 20, 1), scheme="he")
    loss = lambda p, X, Y: objective.mlp_objective(  # noqa: E731
        p, X, Y, activation="identity", loss="squared_error")
    kwargs = dict(optimizer=train.sgd(0.5), epochs=5, batch_size=32, key=key, progress=False)
    with pytest.warns(RuntimeWarning, match=r"became non-finite .*Y has standard deviation "
                                            r"77\.0.*standardi[sz]e the targets"):
        r = train.fit(loss, params, (X, y), **kwargs)
    assert r.stop_reason == "non_finite"
    scaled = train.data.standardize_targets(y).arrays[0]  # same divergence, no target hint
    with pytest.warns(RuntimeWarning, match=r"became non-finite .*Try a smaller learning rate"):
        train.fit(loss, params, (X, scaled), **kwargs)


# --- a float64 run tracks in float64 -------------------------------------------------------


def _creeping_step(state, batch, key):
    """A float64 loss that falls by 1e-10 an epoch: below float32's resolution at 1.0."""
    x = state["x"] - 1e-10
    return {"x": x}, {"loss": 1.0 + x + 0 * jnp.sum(batch)}


def _creeping_eval(state, batch, key):
    return {"loss": 1.0 + state["x"] + 0 * jnp.sum(batch)}


def test_a_float64_run_records_and_stops_in_float64(x64):
    """Defect: under x64 a float64 run's records, monitored value and best value were float32,
    so a loss falling by 1e-10 an epoch read as flat and early stopping ended the run at
    epoch 3 with best epoch 1. Array data, a stream and models= alike."""
    X = np.zeros((4, 1))
    kw = dict(epochs=6, key=jax.random.key(0), patience=2, progress=False,
              evaluate=_creeping_eval)
    want = [1.0 - 1e-10 * e for e in range(1, 7)]  # float64 arithmetic, as the step does it
    state = {"x": jnp.zeros((), jnp.float64)}
    for name, r in [
            ("arrays", train.run(_creeping_step, state, X, batch_size=4, validation=X, **kw)),
            ("stream", train.run(_creeping_step, state, [X], validation=[X], **kw)),
            ("every 2", train.run(_creeping_step, state, X, batch_size=4, validation=X,
                                  eval_every=2, **kw))]:
        assert (r.stop_reason, r.epochs_run, r.best_epoch) == ("epochs", 6, 6), name
        np.testing.assert_allclose(r.history["loss"], want, rtol=0, atol=1e-15, err_msg=name)
        val = np.asarray(r.history["val_loss"])
        if name == "every 2":
            val = val[1::2]
            np.testing.assert_allclose(val, want[1::2], rtol=0, atol=1e-15)
        else:
            np.testing.assert_allclose(val, want, rtol=0, atol=1e-15, err_msg=name)
    many = train.run(_creeping_step, {"x": jnp.zeros((2,), jnp.float64)}, X, batch_size=4,
                     models=2, **{**kw, "key": jax.random.split(jax.random.key(0), 2)},
                     validation=X)
    assert list(many.best_epoch) == [6, 6] and many.stop_reason == ["epochs"] * 2
    np.testing.assert_allclose(many.history["val_loss"][0], want, rtol=0, atol=1e-15)


def test_a_float32_fit_gives_the_same_bits_with_x64_on_or_off(key):
    """The float64 tracking is for float64 runs only: a float32 fit records and compares in
    float32 whatever jax_enable_x64 says, so it ends with the same bits either way (and its
    tracker and checkpoint hold float32 as before)."""
    X = np.asarray(jax.random.normal(key, (48, 4)), np.float32)
    y = (X[:, 0] > 0).astype(np.int32)
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), mlp.init(key, (4, 8, 2)))
    kwargs = dict(optimizer=train.sgd(0.2, l2=1e-3, momentum=0.9), epochs=4, batch_size=8,
                  key=jax.random.key(1), validation=(X[:16], y[:16]), patience=3,
                  metrics={"error": lambda p, X, y: nets.metrics.error_rate(
                      jax.vmap(lambda x: mlp.apply(p, x, activation="tanh"))(X), y)},
                  progress=False)
    off = train.fit(_ce, params, (X, y), **kwargs)
    with jax.enable_x64(True):
        on = train.fit(_ce, params, (X, y), **kwargs)
        dtype = runner._run_dtype(on.state)
    assert dtype == np.float32
    assert _equal(on.params, off.params) and _equal(on.state, off.state)
    assert on.history == off.history and on.best_epoch == off.best_epoch


def test_a_float64_run_on_a_mesh_tracks_in_float64():
    """The data-parallel paths (batches fed from the host, the data set on the devices, a
    stream on a mesh) and a sweep spread over two devices track a float64 run in float64."""
    code = """
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np, train
from tests.test_runner import _creeping_step, _creeping_eval
X = np.zeros((4, 1))
kw = dict(epochs=5, patience=2, progress=False, evaluate=_creeping_eval)
s = {"x": jnp.zeros((), jnp.float64)}
for r in (train.run(_creeping_step, s, X, batch_size=4, validation=X, mesh=2,
                    key=jax.random.key(0), **kw),
          train.run(_creeping_step, s, X, batch_size=4, validation=X, mesh=2,
                    data_on_devices=True, key=jax.random.key(0), **kw),
          train.run(_creeping_step, s, [X], validation=[X], mesh=2, key=jax.random.key(0),
                    **kw)):
    print(r.stop_reason, r.best_epoch, repr(r.history["val_loss"][-1]))
r = train.run(_creeping_step, {"x": jnp.zeros((2,), jnp.float64)}, X, batch_size=4,
              validation=X, models=2, key=jax.random.split(jax.random.key(0), 2), **kw)
print(r.stop_reason[0], r.best_epoch[0], repr(float(r.history["val_loss"][0, -1])),
      r.mesh.shape["models"])
"""
    from tests import _memory
    _memory.release("test_runner")  # this worker's caches out before the child starts
    out = subprocess.run([sys.executable, "-c", code], env=env_with_devices(2),
                         capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    want = repr(1.0 - 5e-10)
    assert lines[:3] == [f"epochs 5 {want}"] * 3, out.stdout
    assert lines[3] == f"epochs 5 {want} 2", out.stdout
