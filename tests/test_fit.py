"""train.loop and train.fit: steps, epochs, minibatch rules, the loss contract, early
stopping, divergence, checkpoints and resume, bad inputs, and accuracy on the digits."""

import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nets
import train
from nets import mlp, objective, penalties
from train import loop


SIZES = (4, 8, 3)  # one MLP shape for most tests: its initializers compile once


def _rng(key):
    """A NumPy generator seeded by a JAX key (test data without compiling JAX samplers)."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)))


def _toy(key, n=40, d=4, classes=3):
    rng = _rng(key)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    return X, y


def _tanh_loss(p, X, y):
    return objective.mlp_objective(p, X, y, activation="tanh")


def _noisy_loss(p, X, y, *, key, train):
    """Cross-entropy on inputs with Gaussian noise in training; none at evaluation."""
    if train:
        X = X + 0.3 * jax.random.normal(key, X.shape)
    return _tanh_loss(p, X, y)


def _error(p, X, y):
    Z = jax.vmap(lambda x: mlp.apply(p, x, activation="tanh"))(X)
    return nets.metrics.error_rate(Z, y)


def _trees_equal(a, b) -> bool:
    a = jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(
        x.dtype, jax.dtypes.prng_key) else x, a)
    b = jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(
        x.dtype, jax.dtypes.prng_key) else x, b)
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# --- the step --------------------------------------------------------------------------------


class StepVariantsTest(chex.TestCase):
    """The pure step, jitted and not, against the update written out by hand."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_step_matches_the_update_formula(self):
        key = jax.random.key(11)
        k_p, k_d, k_s = jax.random.split(key, 3)
        X, y = _toy(k_d, n=8)
        params = mlp.init(k_p, SIZES)
        alpha, lam = 0.2, 0.01
        opt = train.sgd(alpha, l2=lam)
        state = train.init_state(params, opt)
        step = self.variant(train.make_step(_noisy_loss, opt, loss_takes_key=True, jit=False))
        new, metrics = step(state, (X, y), k_s)

        loss, grads = jax.jit(jax.value_and_grad(_noisy_loss), static_argnames="train")(
            params, X, y, key=k_s, train=True)
        mask = penalties.weight_mask(params)
        expected = jax.tree.map(lambda p, g, m: p - alpha * (g + lam * p * m), params, grads, mask)
        chex.assert_trees_all_close(new.params, expected, atol=1e-6, rtol=1e-6)
        np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
        assert int(new.step) == 1


# --- minibatches -----------------------------------------------------------------------------


def test_sequential_order_reads_the_data_as_a_cycle():
    idx = lambda step, n, b: train.minibatch_indices(  # noqa: E731
        jax.random.key(0), step, n=n, batch_size=b, order="sequential").tolist()
    assert idx(0, 10, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # n // B = 2 steps
    assert idx(2, 10, 4) == [[8, 9, 0, 1], [2, 3, 4, 5]]  # the leftovers open the next epoch
    assert idx(4, 10, 4) == [[6, 7, 8, 9], [0, 1, 2, 3]]
    assert idx(7, 6, 3) == [[3, 4, 5], [0, 1, 2]]  # B divides n: always the same pass
    assert idx(3, 5, 5) == [[0, 1, 2, 3, 4]]  # full batch
    assert idx(0, 3, 1) == [[0], [1], [2]]  # online
    # the cursor arithmetic does not overflow int32 for large n * batch_size
    n, b, a = 1_000_003, 4096, 999_999
    assert int(loop._mulmod(jnp.int32(a), b, n)) == (a * b) % n


def test_random_order_is_a_fresh_permutation_each_epoch(key):
    k1, k2 = jax.random.split(key)
    a = np.asarray(train.minibatch_indices(k1, 0, n=11, batch_size=3))
    b = np.asarray(train.minibatch_indices(k2, 0, n=11, batch_size=3))
    assert a.shape == b.shape == (3, 3)  # 11 // 3 steps; 2 examples left out this epoch
    assert len(set(a.ravel())) == 9 and a.min() >= 0 and a.max() < 11
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("n", [1, 2, 3, 33, 1079, 1626, 5000, 1 << 16, (1 << 16) + 1])
def test_random_order_is_jax_random_permutation_element_for_element(n):
    """The radix-sorted permutation equals JAX's key-value-sorted one (one round up to
    n = 1625, two beyond; JAX's own above 2**16), for one key and for a vmapped batch."""
    keys = jax.random.split(jax.random.key(n), 4)
    ours = jax.jit(jax.vmap(lambda k: loop.permutation(k, n)))(keys)
    for k, got in zip(keys, np.asarray(ours)):
        np.testing.assert_array_equal(got, np.asarray(jax.random.permutation(k, n)))


def test_the_stable_argsort_keeps_equal_keys_in_index_order():
    """Ties in the 32-bit keys (rare in a shuffle, so forced here), in the low half, the
    high half and both: the order of np.argsort(kind="stable")."""
    rng = np.random.default_rng(0)
    for high, low in [(4, 1 << 16), (1 << 16, 4), (3, 3), (1, 1)]:
        bits = (rng.integers(0, high, 5000, dtype=np.uint32) << 16) | rng.integers(
            0, low, 5000, dtype=np.uint32)
        got = np.asarray(jax.jit(loop._stable_argsort_u32)(jnp.asarray(bits)))
        np.testing.assert_array_equal(got, np.argsort(bits, kind="stable"))


def test_epoch_is_n_over_b_steps_and_averages_aux(key):
    """An epoch takes n // batch_size steps; aux values are averaged over them."""
    X, y = _toy(key, n=12)
    params = mlp.init(key, SIZES)

    def loss(p, X, y):
        return _tanh_loss(p, X, y), {"x_mean": jnp.mean(X)}

    opt = train.sgd(0.1)
    for b, order in [(5, "random"), (4, "sequential")]:
        epoch = train.make_epoch(loss, opt, batch_size=b, order=order, has_aux=True)
        state, means = epoch(train.init_state(params, opt), (X, y), key)
        assert int(state.step) == 12 // b
        if 12 % b == 0:  # every example seen once: the mean of batch means is the mean
            np.testing.assert_allclose(means["x_mean"], X.mean(), rtol=1e-5, atol=1e-6)


def test_per_example_grads_average_to_the_batch_gradient(key):
    X, y = _toy(key, n=6)
    params = mlp.init(key, SIZES)
    g = jax.jit(lambda p, X, y: train.per_example_grads(_tanh_loss, p, X, y))(params, X, y)
    chex.assert_tree_shape_prefix(g, (6,))
    chex.assert_trees_all_close(jax.tree.map(lambda a: a.mean(0), g),
                                jax.jit(jax.grad(_tanh_loss))(params, X, y), atol=1e-6)


# --- fit: the loss contract ------------------------------------------------------------------


def test_fit_any_pytree_adam_and_no_targets(key):
    """A dict of parameters, optax.adam, Y=None (a linear autoencoder)."""
    X, _ = _toy(key, n=32)
    params = {"enc": {"W": 0.1 * jnp.ones((2, 4))}, "dec": {"W": 0.1 * jnp.eye(4, 2)}}

    def loss(p, X, Y):
        assert Y is None
        recon = X @ p["enc"]["W"].T @ p["dec"]["W"].T
        return jnp.mean((recon - X) ** 2)

    result = train.fit(loss, params, (X, None), optimizer=optax.adam(0.05), epochs=15,
                       batch_size=8, key=key, validation=(X[:8], None), progress=False)
    assert result.history["loss"][-1] < 0.8 * result.history["loss"][0]
    assert result.stop_reason == "epochs" and result.epochs_run == 15


def test_fit_with_aux_metrics_and_a_key(key):
    """Aux averaged into history (train and val_), metrics on both sets, train=False at
    evaluation, the same key gives the same run."""
    k_d, k_p, k_f = jax.random.split(key, 3)
    X, y = _toy(k_d, n=24)
    Xv, yv = _toy(jax.random.fold_in(k_d, 1), n=10)
    params = mlp.init(k_p, SIZES)

    def loss(p, X, y, *, key, train):
        return _noisy_loss(p, X, y, key=key, train=train), {"x_mean": jnp.mean(X)}

    kwargs = dict(optimizer=train.sgd(0.3), epochs=3, batch_size=6, key=k_f,
                  validation=(Xv, yv), metrics={"error": _error}, has_aux=True,
                  loss_takes_key=True, order="sequential", progress=False)
    result = train.fit(loss, params, (X, y), **kwargs)
    h = result.history
    assert sorted(h) == ["epoch", "error", "loss", "val_error", "val_loss", "val_x_mean",
                         "x_mean"]
    assert h["epoch"] == [1, 2, 3]
    np.testing.assert_allclose(h["x_mean"], X.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h["val_x_mean"], Xv.mean(), rtol=1e-5, atol=1e-6)
    # evaluation ran in evaluation mode (train=False: no input noise) on the final parameters
    np.testing.assert_allclose(h["val_loss"][-1], _tanh_loss(result.params, Xv, yv), rtol=1e-5)
    np.testing.assert_allclose(h["error"][-1], _error(result.params, X, y), rtol=1e-6)
    again = train.fit(loss, params, (X, y), **kwargs)
    assert _trees_equal(again.params, result.params) and again.history == h


def test_a_loop_of_fits_traces_once_and_still_checks_labels(key, monkeypatch):
    """A fit repeated with the same loss, optimizer and shapes reads the abstract trace and
    state of the first (no jax.eval_shape), ends where the first ends, and still refuses
    labels out of range; new shapes trace again."""
    X, y = _toy(key, n=24)
    params = mlp.init(key, SIZES)
    kwargs = dict(optimizer=train.sgd(0.3, l2=1e-3), epochs=2, batch_size=6, key=key,
                  validation=(X[:8], y[:8]), progress=False)
    first = train.fit(_tanh_loss, params, (X, y), **kwargs)
    traced = []
    real = jax.eval_shape
    monkeypatch.setattr(jax, "eval_shape", lambda *a, **k: traced.append(1) or real(*a, **k))
    again = train.fit(_tanh_loss, params, (X, y), **kwargs)
    assert traced == [] and _trees_equal(again.params, first.params)
    assert again.history == first.history
    bad = y.copy()
    bad[3] = SIZES[-1]
    with pytest.raises(ValueError, match=r"Y: expected class labels in \[0, 3\)"):
        train.fit(_tanh_loss, params, (X, bad), **kwargs)
    train.fit(_tanh_loss, params, (X[:18], y[:18]), **kwargs)
    assert traced  # 18 rows: a new signature


@pytest.mark.parametrize("first", ["int64 labels", "float64 inputs"])
def test_labels_are_checked_after_a_fit_on_data_jit_converts_to_the_same_types(key, first):
    """int64 labels and float64 inputs are int32 and float32 to ``jax.jit`` (x64 off), so a
    second fit reuses the first one's trace: its label check must still know the classes
    (it trained to NaN on labels 1..10 when the memory was keyed on NumPy's dtypes)."""
    X, y = _toy(key, n=24)
    params = mlp.init(key, SIZES)
    kwargs = dict(optimizer=train.sgd(0.3), epochs=1, batch_size=6, key=key, progress=False)
    data = (X, y.astype(np.int64)) if first == "int64 labels" else (X.astype(np.float64), y)
    train.fit(_tanh_loss, params, data, **kwargs)
    with pytest.raises(ValueError, match=r"Y: expected class labels in \[0, 3\)"):
        train.fit(_tanh_loss, params, (X, y + 1), **kwargs)

def test_model_state_is_threaded_through_training_not_evaluation(key):
    """A model state counting the training examples the loss has seen."""
    X, y = _toy(key, n=20)
    params = mlp.init(key, SIZES)

    def loss(p, X, y, *, model_state, train):
        return _tanh_loss(p, X, y), {"seen": model_state["seen"] + X.shape[0]}

    result = train.fit(loss, params, (X, y), optimizer=train.sgd(0.1), epochs=3, batch_size=5,
                       key=key, validation=(X, y), model_state={"seen": jnp.zeros(())},
                       progress=False)
    assert float(result.state.model_state["seen"]) == 60  # 3 epochs x 4 steps x 5 examples
    assert float(result.model_state["seen"]) == 60

    # with has_aux the new model state comes last: (loss, aux, model_state)
    def loss_aux(p, X, y, *, model_state, train):
        return _tanh_loss(p, X, y), {"n": jnp.asarray(X.shape[0], float)}, model_state + 1.0

    opt = train.sgd(0.1)
    step = train.make_step(loss_aux, opt, has_aux=True)
    state, metrics = step(train.init_state(params, opt, model_state=jnp.zeros(())), (X, y), key)
    assert float(state.model_state) == 1.0 and float(metrics["n"]) == 20


# --- fit: early stopping, divergence ---------------------------------------------------------


def test_early_stopping_returns_the_best_validation_epoch(key):
    """Random labels: the net memorises the training set and the validation loss turns up."""
    k_d, k_v, k_p = jax.random.split(key, 3)
    X, y = _toy(k_d, n=16)
    Xv, yv = _toy(k_v, n=16)
    patience = 3
    result = train.fit(_tanh_loss, mlp.init(k_p, SIZES), (X, y),
                       optimizer=train.sgd(0.5, momentum=0.9), epochs=200, batch_size=4,
                       key=key, validation=(Xv, yv), patience=patience, progress=False)
    val = np.asarray(result.history["val_loss"])
    assert result.stop_reason == "early_stopping"
    assert result.best_epoch == int(np.argmin(val)) + 1
    assert result.epochs_run == result.best_epoch + patience == len(val)
    # the returned parameters are those of the best epoch, not the last
    np.testing.assert_allclose(_tanh_loss(result.params, Xv, yv), val.min(), rtol=1e-6)
    assert not _trees_equal(result.params, result.state.params)
    assert _trees_equal(result.params, result.best_params)


def test_divergence_stops_cleanly_with_finite_parameters(key):
    """A huge learning rate on least squares: the fit stops at the epoch the loss turns
    non-finite, names it, and returns the last finite parameters."""
    X = 3.0 * _rng(key).normal(size=(32, 3)).astype(np.float32)
    y = X @ np.array([1.0, -2.0, 0.5], np.float32)

    def loss(p, X, y):
        return jnp.mean((X @ p["w"] + p["b"] - y) ** 2)

    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    with pytest.warns(RuntimeWarning, match=r"became non-finite in epoch (\d+) .*stopped "
                                            r"and returned the last finite parameters"):
        result = train.fit(loss, params, (X, y), optimizer=train.sgd(1.0), epochs=100,
                           batch_size=8, key=key, progress=False)
    e = result.non_finite_epoch
    assert result.stop_reason == "non_finite" and e is not None and e > 1
    assert result.epochs_run == e == len(result.history["loss"])
    assert np.all(np.isfinite(result.history["loss"][:-1]))
    assert not np.isfinite(result.history["loss"][-1])
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(result.params))
    assert _trees_equal(result.params, result.state.params)
    assert int(result.state.step) == (e - 1) * 4  # the state after epoch e - 1


# --- checkpoints and resume ------------------------------------------------------------------


def test_resume_from_a_checkpoint_is_bitwise_identical(key, tmp_path):
    k_d, k_v, k_p, k_f = jax.random.split(key, 4)
    X, y = _toy(k_d, n=30)
    val = _toy(k_v, n=10)
    params = mlp.init(k_p, SIZES)
    kwargs = dict(optimizer=train.sgd(0.2, l2=1e-3, momentum=0.9), batch_size=4, key=k_f,
                  validation=val, patience=50, metrics={"error": _error},
                  loss_takes_key=True, progress=False)
    whole = train.fit(_noisy_loss, params, (X, y), epochs=6, **kwargs)

    path = tmp_path / "run" / "fit.msgpack"
    first = train.fit(_noisy_loss, params, (X, y), epochs=3, checkpoint=path,
                      checkpoint_every=2, **kwargs)
    assert path.exists() and first.epochs_run == 3
    resumed = train.fit(_noisy_loss, params, (X, y), epochs=6, resume=path, **kwargs)

    assert _trees_equal(resumed.state, whole.state)  # params, opt_state, key, step
    assert _trees_equal(resumed.params, whole.params)
    assert resumed.history == whole.history
    assert (resumed.best_epoch, resumed.epochs_run) == (whole.best_epoch, 6)

    with pytest.raises(ValueError, match=r"resume: the checkpoint .* was written with "
                                         r"batch_size=4, this run has batch_size=5"):
        train.fit(_noisy_loss, params, (X, y), epochs=6, resume=path,
                  **{**kwargs, "batch_size": 5})


def test_resume_refuses_what_it_would_silently_drop(key, tmp_path):
    """New hyperparameters (a new optimizer's or hyperparams=), another optimizer, fewer
    epochs than the checkpoint ran; settings the user did not pass are named as passed."""
    X, y = _toy(key, n=24)
    params = mlp.init(key, SIZES)
    path = tmp_path / "fit.msgpack"
    kwargs = dict(batch_size=6, key=key, validation=(X[:8], y[:8]), progress=False)
    train.fit(_tanh_loss, params, (X, y), optimizer=train.sgd(0.1), epochs=2, checkpoint=path,
              **kwargs)
    again = dict(epochs=4, resume=path, **kwargs)
    with pytest.raises(ValueError, match=r"resume: the checkpoint .* trained with "
                                         r"learning_rate=0.1, this run asks for "
                                         r"learning_rate=0.5; a resumed run continues"):
        train.fit(_tanh_loss, params, (X, y), optimizer=train.sgd(0.5), **again)
    with pytest.raises(ValueError, match=r"trained with l2=0, this run asks for l2=0.01"):
        train.fit(_tanh_loss, params, (X, y), optimizer=train.sgd(0.1),
                  hyperparams={"l2": 0.01}, **again)
    with pytest.raises(ValueError, match=r"holds the state of another optimizer"):
        train.fit(_tanh_loss, params, (X, y), optimizer=optax.adam(0.1), **again)
    with pytest.raises(ValueError, match=r"epochs: the checkpoint .* has run 2 epochs, more "
                                         r"than epochs=1"):
        train.fit(_tanh_loss, params, (X, y), optimizer=train.sgd(0.1),
                  **{**again, "epochs": 1})
    with pytest.raises(ValueError, match=r"written with patience=None, this run has "
                                         r"patience=2"):
        train.fit(_tanh_loss, params, (X, y), optimizer=train.sgd(0.1), patience=2, **again)
    with pytest.raises(ValueError, match=r"eval_batch_size=8, this run has eval_batch_size=6 "
                                         r"\(by default the validation set's rows"):
        train.fit(_tanh_loss, params, (X, y), optimizer=train.sgd(0.1),
                  **{**again, "validation": (X[:6], y[:6])})
    done = train.fit(_tanh_loss, params, (X, y), optimizer=train.sgd(0.1), **again)
    assert done.epochs_run == 4
    notes = tmp_path / "notes.txt"  # not a checkpoint: refused before training, kept
    notes.write_text("my notes")
    with pytest.raises(FileExistsError, match=r"checkpoint: .*notes.txt' exists and is not a "
                                              r"checkpoint"):
        train.fit(_never_called, params, (X, y), optimizer=train.sgd(0.1), epochs=1,
                  checkpoint=notes, batch_size=6, key=key, progress=False)
    assert notes.read_text() == "my notes"


# --- accuracy on the handwritten digits ------------------------------------------------------


def test_digits_reach_97_percent_test_accuracy(key):
    """64-100-10 ReLU net, He init, SGD + momentum, l2 = 1e-3, batch 32, early stopping."""
    start = time.perf_counter()
    k_split, k_init, k_fit = jax.random.split(key, 3)
    split = train.data.load_digits(key=k_split)
    (X, y), val, (Xt, yt) = split.train, split.val, split.test

    def loss(p, X, y):
        return objective.mlp_objective(p, X, y, activation="relu")

    def error(p, X, y):
        Z = jax.vmap(lambda x: mlp.apply(p, x, activation="relu"))(X)
        return nets.metrics.error_rate(Z, y)

    result = train.fit(loss, mlp.init(k_init, (64, 100, 10), scheme="he"), (X, y),
                       optimizer=train.sgd(0.02, l2=1e-3, momentum=0.9), epochs=100,
                       batch_size=32, key=k_fit, validation=val, patience=10,
                       metrics={"error": error}, num_classes=10, progress=False)
    accuracy = 1.0 - float(error(result.params, Xt, yt))
    print(f"digits: test accuracy {accuracy:.4f}, best epoch {result.best_epoch}, "
          f"{result.epochs_run} epochs, {time.perf_counter() - start:.1f} s")
    assert accuracy >= 0.97
    assert result.history["val_error"][result.best_epoch - 1] < 0.05


# --- bad inputs: all caught before compilation, with messages ---------------------------------


def _never_called(*args, **kwargs):
    raise AssertionError("the loss must not be traced before the arguments are checked")


_X = np.zeros((20, 4), np.float32)
_Y = np.zeros(20, np.int32)
_P = [{"W": jnp.zeros((3, 4)), "b": jnp.zeros(3)}]


def _base(**overrides):
    kwargs = dict(loss_fn=_never_called, params=_P, data=(_X, _Y), optimizer=train.sgd(0.1),
                  epochs=2, batch_size=4, key=jax.random.key(0), progress=False)
    kwargs.update(overrides)
    return kwargs


_NAN_X = _X.copy()
_NAN_X[3, 1] = np.nan


@pytest.mark.parametrize("overrides, error, match", [
    ({"loss_fn": "mse"}, TypeError, r"loss_fn: expected a function loss_fn\(params, X, Y\), got str"),
    ({"optimizer": "sgd"}, TypeError, r"optimizer: expected an optax.GradientTransformation"),
    ({"epochs": 0}, ValueError, r"epochs: expected an int >= 1, got 0"),
    ({"epochs": 2.5}, TypeError, r"epochs: expected an int >= 1, got float 2.5"),
    ({"batch_size": 0}, ValueError, r"batch_size: expected 1 <= batch_size <= n = 20 .*got 0"),
    ({"batch_size": 21}, ValueError, r"batch_size: expected 1 <= batch_size <= n = 20 .*got 21"),
    ({"batch_size": 4.0}, TypeError, r"batch_size: expected an int, got float"),
    ({"patience": 0, "validation": (_X, _Y)}, ValueError, r"patience: expected an int >= 1, got 0"),
    ({"patience": 3}, ValueError, r"patience: early stopping monitors the validation loss"),
    ({"order": "shuffled"}, ValueError, r"order: expected one of \('random', 'sequential'\), got 'shuffled'"),
    ({"metrics": {"error": nets.metrics.error_rate}}, TypeError,
     r"metrics\['error'\]: expected a function fn\(params, X, Y\) -> batch mean, got "
     r"error_rate\(Z, y.*model.metric\(nets.metrics.error_rate\)"),
    ({"key": jax.random.key_data(jax.random.key(0))}, TypeError, r"key: expected a typed PRNG key .*legacy"),
    ({"key": 0}, TypeError, r"key: expected a typed PRNG key from jax.random.key\(seed\), got int"),
    ({"key": jax.random.split(jax.random.key(0), 2)}, ValueError, r"key: expected a key array of shape \(\), got \(2,\)"),
    ({"data": _X}, TypeError, r"data: expected a pair \(X, Y\)"),
    ({"data": (_NAN_X, _Y)}, ValueError, r"X: expected finite values.*X\[3, 1\] = nan"),
    ({"data": (_X, _Y[:19])}, ValueError, r"X has 20 rows but Y has 19"),
    ({"data": (_X[:, 0], _Y)}, ValueError, r"X must be at least 2-D"),
    ({"data": (_X, _Y + 2), "num_classes": 2}, ValueError, r"Y must hold labels in \[0, 2\)"),
    ({"data": (_X, None), "num_classes": 2}, ValueError, r"num_classes: expected integer labels Y .*got Y=None"),
    ({"validation": (_X[:, :3], _Y)}, ValueError, r"validation: expected X_val of shape \(m, \.\.\.\) with trailing shape \(4,\) like X \(20, 4\), got \(20, 3\)"),
    ({"validation": (_X, _Y[:, None])}, ValueError, r"validation: expected Y_val .* trailing shape \(\) like Y \(20,\), got \(20, 1\)"),
    ({"validation": (_X, None)}, ValueError, r"validation: expected Y_val to be an array like Y, got None"),
    ({"validation": (_X, _Y.astype(np.float32))}, TypeError, r"validation: expected Y_val of the kind of Y \(dtype int32\), got dtype float32"),
    ({"validation": _X}, TypeError, r"validation: expected a pair \(X_val, Y_val\)"),
    ({"validation": (_X[:5], _Y)}, ValueError, r"X_val has 5 rows but Y_val has 20"),
    ({"params": [{"W": jnp.zeros((3, 4), jnp.int32)}]}, TypeError, r"params\[0\]\['W'\]: expected a floating-point array, got .* int32"),
    ({"params": []}, ValueError, r"params: expected a pytree with at least one array"),
    ({"metrics": {"loss": _error}}, ValueError, r"metrics: expected names other than 'loss'"),
    ({"metrics": {"error": 0.5}}, TypeError, r"metrics\['error'\]: expected a function"),
    ({"metrics": [_error]}, TypeError, r"metrics: expected a dict name -> fn"),
    ({"checkpoint_every": 2}, ValueError, r"checkpoint_every: expected a checkpoint path"),
    ({"checkpoint_every": 0, "checkpoint": "x"}, ValueError, r"checkpoint_every: expected an int >= 1, got 0"),
    ({"progress": "yes"}, TypeError, r"progress: expected True, False or None, got 'yes'"),
    ({"has_aux": 1}, TypeError, r"has_aux: expected a bool, got int 1"),
])
def test_fit_rejects_bad_arguments_before_compiling(overrides, error, match):
    with pytest.raises(error, match=match):
        train.fit(**_base(**overrides))


@pytest.mark.parametrize("loss_fn, overrides, match", [
    (lambda p, X, y: jnp.zeros(3), {}, r"loss_fn: expected a scalar loss .*got .* shape \(3,\)"),
    (lambda p, X, y: jnp.zeros(()), {"has_aux": True}, r"loss_fn: expected it to return \(loss, aux\) \(has_aux=True\)"),
    (lambda p, X, y: (jnp.zeros(()), {}), {}, r"loss_fn: expected a scalar loss.*pass has_aux=True"),
    (lambda p, X, y: (jnp.zeros(()), jnp.zeros(())), {"has_aux": True}, r"loss_fn: with has_aux=True expected aux to be a dict"),
    (lambda p, X, y, *, model_state, train: jnp.zeros(()), {"model_state": jnp.zeros(())}, r"loss_fn: expected it to return \(loss, new_model_state\)"),
])
def test_fit_rejects_a_loss_breaking_the_contract(loss_fn, overrides, match):
    with pytest.raises(TypeError, match=match):
        train.fit(**_base(loss_fn=loss_fn, **overrides))


def _aux_loss(p, X, y):
    return jnp.zeros(()), {"error": jnp.zeros(())}


@pytest.mark.parametrize("loss_fn, overrides, error, match", [
    (lambda p, X, y: (jnp.zeros(()), {"loss": jnp.zeros(())}), {"has_aux": True}, ValueError,
     r"loss_fn: the aux dict may not use the name 'loss'"),
    (lambda p, X, y: (jnp.zeros(()), {"a": jnp.zeros(2)}), {"has_aux": True}, TypeError,
     r"loss_fn: expected aux to map names to scalars, got aux\['a'\] of shape \(2,\)"),
    (_aux_loss, {"has_aux": True, "metrics": {"error": lambda p, X, y: jnp.zeros(())}},
     ValueError, r"metrics: the name 'error' is both a training-set evaluation .*rename one"),
    (lambda p, X, y: jnp.zeros(()), {"metrics": {"e": lambda p, X, y: jnp.zeros(2)}},
     TypeError, r"metrics\['e'\]: expected a scalar, got shape \(2,\)"),
    (lambda p, X, y, *, model_state, train: (jnp.zeros(()), {"a": model_state}),
     {"model_state": jnp.zeros(())}, TypeError,
     r"loss_fn: expected the returned model state to have the structure of the model_state"),
    (lambda p, X, y: jnp.zeros(()), {"hyperparams": {"momentum": 0.9}}, ValueError,
     r"hyperparams: expected names among the optimizer's injected hyperparameters "
     r"\['l2', 'learning_rate'\], got 'momentum'"),
    (lambda p, X, y: jnp.zeros(()), {"hyperparams": {"l2": [0.1, 0.2]}}, ValueError,
     r"hyperparams\['l2'\]: expected a scalar, got shape \(2,\)"),
    (lambda p, X, y: jnp.zeros(()), {"hyperparams": {"l2": "big"}}, TypeError,
     r"hyperparams\['l2'\]: expected a number, got str 'big'"),
    (lambda p, X, y: jnp.zeros(()), {"hyperparams": [("l2", 0.1)]}, TypeError,
     r"hyperparams: expected a dict name -> value, got list"),
    (lambda p, X, y: jnp.zeros(()), {"loss_takes_key": "yes"}, TypeError,
     r"loss_takes_key: expected a bool, got str 'yes'"),
])
def test_fit_rejects_more_contract_and_setting_errors(loss_fn, overrides, error, match):
    with pytest.raises(error, match=match):
        train.fit(**_base(loss_fn=loss_fn, **overrides))


def test_step_and_epoch_builders_reject_bad_settings(key):
    with pytest.raises(ValueError, match=r"order: expected one of \('random', 'sequential'\), "
                                         r"got 'cyclic'"):
        train.make_epoch(_tanh_loss, train.sgd(0.1), batch_size=2, order="cyclic")
    with pytest.raises(ValueError, match=r"batch_size: expected 1 <= batch_size <= n = 5 .*"
                                         r"got 6"):
        train.minibatch_indices(key, 0, n=5, batch_size=6)
    epoch = train.make_epoch(_tanh_loss, train.sgd(0.1), batch_size=50)
    X, y = _toy(key, n=10)
    with pytest.raises(ValueError, match=r"batch_size: expected 1 <= batch_size <= n = 10"):
        epoch(train.init_state(mlp.init(key, SIZES), train.sgd(0.1)), (X, y), key)


def test_fit_resume_from_a_missing_file(tmp_path):
    """Defect: a missing resume= path was a FileNotFoundError only after the state was built
    (about 20 small compilations). Now refused first, with what to do."""
    compiles = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        with pytest.raises(FileNotFoundError, match=r"resume: expected a checkpoint written by "
                                                    r"train.fit or train.run .*none': no "
                                                    r"checkpoint at that path .*none.prev'\); "
                                                    r"to resume only when a checkpoint exists, "
                                                    r"pass resume=path if "
                                                    r"os.path.exists\(path\) else None"):
            train.fit(**_base(loss_fn=lambda p, X, y: jnp.zeros(()), resume=tmp_path / "none"))
        with pytest.raises(FileNotFoundError, match=r"resume: expected a checkpoint"):
            train.run(lambda s, b, k: (s, {}), {"w": jnp.zeros(())}, _X, epochs=1,
                      batch_size=4, key=jax.random.key(0), resume=tmp_path / "none",
                      progress=False)
        with pytest.raises(TypeError, match=r"resume: expected a path \(str or os.PathLike\) "
                                            r"or None, got int 3"):
            train.fit(**_base(resume=3))
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiles == []


# --- findings of the audits: float64 fits, resumes, loss signatures -------------------------


def _lsq(p, X, Y):
    return jnp.mean((X @ p["w"] - Y) ** 2)


def test_a_float64_fit_stops_on_float64_validation_losses(key, x64):
    """Defect: a float64 fit's validation loss, falling by about 1e-11 an epoch, was recorded
    in float32 (flat) and early stopping ended the run at epoch 3 with best epoch 1."""
    rng = _rng(key)
    X = rng.normal(size=(32, 3))
    Y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=32)
    params = {"w": jnp.zeros(3, jnp.float64)}
    kw = dict(optimizer=optax.sgd(1e-12), batch_size=32, key=key, validation=(X, Y),
              patience=2, progress=False)
    r = train.fit(_lsq, params, (X, Y), epochs=6, **kw)
    assert (r.stop_reason, r.best_epoch, r.epochs_run) == ("epochs", 6, 6)
    assert jax.tree.leaves(r.params)[0].dtype == jnp.float64
    val = np.asarray(r.history["val_loss"])
    assert (np.diff(val) < 0).all() and (np.diff(val.astype(np.float32)) == 0).any()
    assert val[-1] == float(_lsq(r.params, X, Y))  # the float64 value, not float32's


def test_an_older_float64_checkpoint_with_a_float32_best_value_resumes(key, x64, tmp_path):
    """Checkpoints of float64 fits written before the tracker was float64 hold a float32
    best value: the resumed run widens it (exactly) and goes on in float64."""
    rng = _rng(key)
    X = rng.normal(size=(16, 3))
    Y = X @ np.array([1.0, -2.0, 0.5])
    params = {"w": jnp.zeros(3, jnp.float64)}
    path = tmp_path / "old.msgpack"
    kw = dict(optimizer=optax.sgd(0.01), batch_size=8, key=key, validation=(X, Y),
              patience=3, progress=False)
    train.fit(_lsq, params, (X, Y), epochs=2, checkpoint=path, **kw)
    raw = train.checkpoint.restore(path)
    best = raw["carry"]["tracker"]["best_value"]
    assert best.dtype == np.float64
    raw["carry"]["tracker"]["best_value"] = best.astype(np.float32)  # as written before
    raw["config"].pop("optimizer")  # nor was the optimizer's fingerprint stored then
    train.checkpoint.save(path, raw, keep_previous=False)
    resumed = train.fit(_lsq, params, (X, Y), epochs=4, resume=path, **kw)
    assert resumed.epochs_run == 4
    assert np.asarray(train.checkpoint.restore(path)["carry"]["tracker"]["best_value"]).dtype \
        == np.float32  # (a resume without checkpoint= leaves the file as it was)
    whole = train.fit(_lsq, params, (X, Y), epochs=4, **kw)
    np.testing.assert_allclose(resumed.history["val_loss"], whole.history["val_loss"],
                               rtol=1e-6)


def test_resume_under_a_plain_optax_optimizer_with_other_hyperparameters_is_refused(
        key, tmp_path):
    """Defect: a checkpoint of optax.adam(1e-2) resumed under optax.adam(5e-2), and
    optax.sgd(0.05) under optax.sgd(0.5), silently: only injected hyperparameters and other
    state structures were compared. The checkpoint now stores the optimizer's fingerprint."""
    X, y = _toy(key, n=24)
    params = mlp.init(key, SIZES)
    kw = dict(batch_size=6, key=key, progress=False)
    for old, new in [(optax.adam(1e-2), optax.adam(5e-2)), (optax.sgd(0.05), optax.sgd(0.5)),
                     (optax.adam(optax.linear_schedule(1e-2, 0.0, 10)),
                      optax.adam(optax.linear_schedule(2e-2, 0.0, 10)))]:
        path = tmp_path / "run.msgpack"
        train.fit(_tanh_loss, params, (X, y), optimizer=old, epochs=1, checkpoint=path, **kw)
        with pytest.raises(ValueError, match=r"resume: the checkpoint .* was written with an "
                                             r"optimizer whose hyperparameters differ from "
                                             r"this run's .*start a new run \(without "
                                             r"resume=\) from its parameters: .*"
                                             r"restore_params"):
            train.fit(_tanh_loss, params, (X, y), optimizer=new, epochs=2, resume=path, **kw)
    # the same optimizer built again resumes, and so does a checkpoint written before
    # fingerprints were stored
    path = tmp_path / "same.msgpack"
    train.fit(_tanh_loss, params, (X, y), optimizer=optax.adam(1e-2), epochs=1,
              checkpoint=path, **kw)
    assert train.fit(_tanh_loss, params, (X, y), optimizer=optax.adam(1e-2), epochs=2,
                     resume=path, **kw).epochs_run == 2
    raw = train.checkpoint.restore(path)
    del raw["config"]["optimizer"]
    train.checkpoint.save(path, raw, keep_previous=False)
    assert train.fit(_tanh_loss, params, (X, y), optimizer=optax.adam(5e-2), epochs=2,
                     resume=path, **kw).epochs_run == 2
    # what the message proposes: a new run from the checkpoint's parameters
    start = train.checkpoint.restore_params(path, like=params)
    assert jax.tree.structure(start) == jax.tree.structure(params)
    assert _trees_equal(start, train.fit(_tanh_loss, params, (X, y), optimizer=optax.adam(1e-2),
                                         epochs=1, **kw).state.params)


def test_a_resume_given_another_key_or_params_continues_the_checkpoints_run(key, tmp_path):
    """What resume means (documented in fit's ``resume``): the checkpoint's state and key
    replace the ones passed; they are not compared."""
    X, y = _toy(key, n=24)
    params = mlp.init(key, SIZES)
    kw = dict(optimizer=optax.adam(1e-2), batch_size=6, progress=False)
    path = tmp_path / "run.msgpack"
    whole = train.fit(_tanh_loss, params, (X, y), epochs=3, key=key, **kw)
    train.fit(_tanh_loss, params, (X, y), epochs=1, key=key, checkpoint=path, **kw)
    other = jax.tree.map(lambda a: a + 1.0, params)
    resumed = train.fit(_tanh_loss, other, (X, y), epochs=3, key=jax.random.key(99),
                        resume=path, **kw)
    assert _trees_equal(resumed.state, whole.state)
    assert "another key continues the checkpoint's run as it was" in " ".join(
        train.fit.__doc__.split())


def _takes_key_only(p, X, Y, *, key):
    raise AssertionError("never called: the signature is checked first")


def _positional_key(p, X, Y, key):
    raise AssertionError("never called: the signature is checked first")


def _plain(p, X, Y):
    raise AssertionError("never called: the signature is checked first")


def _keyed(p, X, Y, *, key, train):
    raise AssertionError("never called: the signature is checked first")


@pytest.mark.parametrize("loss_fn, takes_key, match", [
    (_takes_key_only, True, r"loss_fn: expected a function that can be called as "
                            r"loss_fn\(params, X, Y, key=\.\.\., train=\.\.\.\) "
                            r"\(loss_takes_key=True\), got _takes_key_only\(p, X, Y, \*, "
                            r"key\), which cannot \(got an unexpected keyword argument "
                            r"'train'\); it must accept train= as well"),
    (_positional_key, None, r"loss_fn\(params, X, Y\) \(loss_takes_key=False\), got "
                            r"_positional_key\(p, X, Y, key\), which cannot \(missing a "
                            r"required argument: 'key'\); it needs key=: pass "
                            r"loss_takes_key=True"),
    (_keyed, False, r"missing a required argument: 'key'\); it needs key=: pass "
                    r"loss_takes_key=True"),
    (_plain, True, r"got an unexpected keyword argument 'key'\); it takes no key=: pass "
                   r"loss_takes_key=False"),
])
def test_a_loss_whose_signature_does_not_fit_the_call_is_named_before_tracing(
        loss_fn, takes_key, match):
    """Defect: bare Python errors from inside the runner ("loss() got an unexpected keyword
    argument 'train'", "missing 2 required keyword-only arguments")."""
    kwargs = _base(loss_fn=loss_fn, loss_takes_key=takes_key)
    with pytest.raises(TypeError, match=match):
        train.fit(**kwargs)
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), _P)
    kwargs = {k: v for k, v in kwargs.items() if k != "key"}
    with pytest.raises(TypeError, match=match):
        train.sweep(**{**kwargs, "params": stacked}, keys=jax.random.split(jax.random.key(0), 2))


def test_a_loss_with_a_model_state_is_called_with_model_state_and_train(key):
    def loss(p, X, Y, *, train):
        raise AssertionError("never called")

    with pytest.raises(TypeError, match=r"called as loss_fn\(params, X, Y, model_state=\.\.\., "
                                        r"train=\.\.\.\) \(loss_takes_key=False, and a "
                                        r"model_state\).*unexpected keyword argument "
                                        r"'model_state'"):
        train.fit(**_base(loss_fn=loss, model_state={"m": jnp.zeros(2)}))
    # a loss without a signature to read is called as it is
    from train.fit import _check_loss_signature
    _check_loss_signature(max, False, False)  # a builtin: no error


def test_has_aux_with_a_scalar_loss_names_a_scalar_array_not_a_tracer(key):
    """Defect: "expected it to return (loss, aux) (has_aux=True), got LinearizeTracer"."""
    X, y = _toy(key, n=20)
    with pytest.raises(TypeError, match=r"loss_fn: expected it to return \(loss, aux\) "
                                        r"\(has_aux=True\), got a scalar array \(float32\)(\n|$)"):
        train.fit(_tanh_loss, mlp.init(key, SIZES), (X, y), optimizer=train.sgd(0.1),
                  epochs=1, batch_size=4, key=key, has_aux=True, progress=False)


def test_raw_uint8_pixels_into_a_model_without_embedding_get_a_warning():
    import warnings as _warnings
    net = mlp.model((2, 4, 2))
    params, _ = net.init(jax.random.key(0))
    X = np.random.default_rng(0).integers(0, 256, (16, 2)).astype(np.uint8)
    y = np.arange(16) % 2
    kw = dict(optimizer=optax.sgd(0.01), epochs=1, batch_size=8, key=jax.random.key(1),
              progress=False)
    with pytest.warns(UserWarning, match=r"X is uint8 with values up to \d+, read by the "
                                         r"model as numbers .*X.astype\(np.float32\) / 255"):
        train.fit(objective.make(net), params, (X, y), **kw)
    with _warnings.catch_warnings():
        _warnings.simplefilter("error")
        train.fit(objective.make(net), params, (X.astype(np.float32) / 255, y), **kw)
        tokens = nets.transformer.model(vocab_size=256, n_classes=2, seq_len=2, d_model=4)
        t_params, _ = tokens.init(jax.random.key(0))
        train.fit(objective.make(tokens), t_params, (X, np.stack([y, y], 1)), **kw)
