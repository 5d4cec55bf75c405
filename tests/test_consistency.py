"""Issue 12, item 7: the same kind of argument is treated the same way everywhere, and a run
that diverges without becoming non-finite says so (RELIABILITY.md)."""

import warnings

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import train
from nets import mlp, objective

SIZES = (4, 8, 3)


def _toy(n=40, d=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, classes, n).astype(np.int32)


def _loss(p, X, y):
    return objective.mlp_objective(p, X, y, activation="tanh")


def _fit(data, **kw):
    args = dict(optimizer=train.sgd(0.1), epochs=2, batch_size=8, key=jax.random.key(0),
                progress=False)
    return train.fit(_loss, mlp.init(jax.random.key(1), SIZES), data, **{**args, **kw})


def test_numpy_integers_are_accepted_for_every_count():
    """`epochs=np.int64` was accepted and `batch_size=np.int64` refused; both train alike."""
    data = _toy()
    plain = _fit(data)
    numpy = _fit(data, epochs=np.int64(2), batch_size=np.int64(8), eval_batch_size=np.int32(16))
    assert plain.epochs_run == numpy.epochs_run == 2
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(numpy.params)):
        np.testing.assert_array_equal(a, b)


def test_bfloat16_inputs_are_real_numbers():
    """bfloat16 inputs were refused as 'must hold real numbers'; they train like float32."""
    X, y = _toy()
    result = _fit((X.astype(ml_dtypes.bfloat16), y))
    assert result.stop_reason == "epochs"
    assert all(np.isfinite(np.asarray(a, np.float32)).all() for a in jax.tree.leaves(result.params))
    with pytest.raises(ValueError, match=r"non-finite"):  # the finiteness check reads bfloat16
        _fit((np.full_like(X, np.nan).astype(ml_dtypes.bfloat16), y))


def test_a_finite_divergence_is_warned():
    """Too large a step with heavy momentum: the loss climbs but stays finite. It ended as
    stop_reason 'epochs' with no word; now a RuntimeWarning says the loss rose."""
    X, y = _toy(n=64)
    with pytest.warns(RuntimeWarning, match=r"fit: the training loss rose from .* diverged"):
        result = _fit((X * 30, y), optimizer=train.sgd(5.0, momentum=0.99), epochs=6)
    loss = np.asarray(result.history["loss"])
    assert np.isfinite(loss).all() and loss[-1] > loss[0]
    assert result.stop_reason == "epochs"


def test_a_converging_run_is_not_warned():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = _fit(_toy(), epochs=4)
    assert np.asarray(result.history["loss"])[-1] < np.asarray(result.history["loss"])[0]


def test_sweep_names_the_models_that_diverged():
    """One of two models diverges (finite) and one trains: the warning names model 1 only."""
    X, y = _toy(n=64)
    params = jax.tree.map(lambda a: jnp.stack([a, a]), mlp.init(jax.random.key(1), SIZES))
    with pytest.warns(RuntimeWarning, match=r"sweep: 1 of 2 models diverged \(models \[1\]\)"):
        train.sweep(_loss, params, (X * 30, y), optimizer=train.sgd(0.1, momentum=0.99),
                    hyperparams={"learning_rate": jnp.array([1e-3, 5.0])}, epochs=6,
                    batch_size=8, keys=jax.random.split(jax.random.key(0), 2), progress=False)
