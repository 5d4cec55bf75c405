"""Models composed from nets.layers train through train.fit / train.sweep, with explicit
evaluation mode, batch-norm running statistics at evaluation and traced dropout rates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nets
import train
from nets import layers as L


@pytest.fixture(scope="module")
def digits():
    split = train.data.load_digits(key=jax.random.key(0))  # grey levels / 16
    img = lambda X: X.reshape(-1, 8, 8, 1)  # noqa: E731
    return (img(split.train[0])[:400], split.train[1][:400]), (img(split.val[0]),
                                                                split.val[1])


def _fit(model, digits, *, epochs=6, key=jax.random.key(1), **kwargs):
    params, state = model.init(jax.random.key(0))
    (X, y), val = digits
    loss = nets.objective.make(model, "cross_entropy")
    return train.fit(loss, params, (X, y), optimizer=optax.adam(3e-3), epochs=epochs,
                     batch_size=32, key=key, validation=val,
                     model_state=state if model.stateful else None,
                     metrics={"error": model.metric(nets.metrics.error_rate)}, progress=False,
                     **kwargs), params, state


def test_a_small_cnn_trains_through_fit(digits):
    cnn = nets.Model(L.serial(L.Conv2D(8, 3), L.Relu(), L.MaxPool(2), L.Flatten(),
                              L.Dense(10)), input_shape=(8, 8, 1))
    result, params, _ = _fit(cnn, digits, epochs=12)
    h = result.history
    assert h["val_error"][-1] < 0.2 and h["loss"][-1] < h["loss"][0]
    assert nets.count_params(params) == 3 * 3 * 1 * 8 + 8 + 4 * 4 * 8 * 10 + 10
    # the history's validation error is the model's, evaluated in evaluation mode
    Xv, yv = digits[1]
    Z, _ = cnn.batch_apply(result.params, Xv)
    np.testing.assert_allclose(h["val_error"][-1], nets.metrics.error_rate(Z, yv), atol=1e-6)


def test_a_residual_batch_norm_model_uses_running_statistics_at_evaluation(digits):
    block = L.residual(L.serial(L.Conv2D(8, 3), L.BatchNorm(), L.Relu()))
    model = nets.Model(L.serial(L.Conv2D(8, 3), block, L.AvgPool(2), L.Flatten(),
                                L.Dense(10)), input_shape=(8, 8, 1))
    assert model.stateful
    result, _, state0 = _fit(model, digits)
    assert result.history["val_error"][-1] < 0.25
    # training moved the running statistics; evaluation reads them, not the batch's
    stats = jax.tree.leaves(result.model_state)
    assert any(not np.allclose(a, b) for a, b in zip(stats, jax.tree.leaves(state0)))
    Xv, yv = digits[1]
    Z_eval, same = model.batch_apply(result.params, Xv, state=result.model_state, train=False)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(same), stats))
    Z_one, _ = model.batch_apply(result.params, Xv[:1], state=result.model_state, train=False)
    np.testing.assert_allclose(Z_one[0], Z_eval[0], rtol=1e-5, atol=1e-5)  # batch-independent
    np.testing.assert_allclose(result.history["val_error"][-1],
                               nets.metrics.error_rate(Z_eval, yv), atol=1e-6)
    # and a batch of 8 in train mode normalises with its own statistics: different outputs
    Z_train, _ = model.batch_apply(result.params, Xv[:8], state=result.model_state,
                                   train=True, key=jax.random.key(0))
    assert not np.allclose(Z_train, Z_eval[:8], atol=1e-3)


def test_dropout_rates_sweep_in_one_program(digits):
    """The rate lives in the model state, so rates are swept like any other number."""
    model = nets.mlp.model((64, 64, 10), activation="relu", drop_rate=0.5)
    (X, y), val = digits
    X, Xv = X.reshape(len(X), -1), val[0].reshape(len(val[0]), -1)
    keys = jax.random.split(jax.random.key(2), 3)
    inits = [model.init(k) for k in keys]
    params = jax.tree.map(lambda *a: jnp.stack(a), *[p for p, _ in inits])
    states = jax.tree.map(lambda *a: jnp.stack(a), *[s for _, s in inits])
    rates = jnp.array([0.0, 0.3, 0.6], jnp.float32)
    states = optax.tree_utils.tree_set(states, drop_rate=rates)
    result = train.sweep(nets.objective.make(model), params, (X, y), optimizer=optax.adam(3e-3),
                         keys=keys, epochs=3, batch_size=32, validation=(Xv, val[1]),
                         model_state=states, progress=False)
    assert result.compilations <= 1 and result.history["loss"].shape == (3, 3)
    np.testing.assert_allclose(optax.tree_utils.tree_get(result.model_state, "drop_rate"),
                               rates)
    # more dropout, higher training loss (noisier steps) on the same data and starts
    loss = result.history["loss"][:, -1]
    assert loss[0] < loss[2]
