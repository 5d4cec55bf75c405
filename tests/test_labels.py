"""Labels for cross-entropy: static checks when a loss is traced (float labels, (n, 1)
labels, a target of the wrong shape), the trace-time record of the number of classes, and
the value check of concrete labels against it (labels 1..M for M outputs).

Before these checks, labels 1..10 for 10 outputs trained to a NEGATIVE loss (one_hot(10)
is all zeros, so the loss of that example is logsumexp(z)), float labels passed with a
deprecation warning, and (n, 1) labels were read as probability vectors of length 1 (the
loss ran to -1e25)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train
from nets import _checks, losses, mlp, objective

SIZES = (4, 5, 10)


def _problem(key, n=12):
    params = mlp.init(key, SIZES)
    X = np.asarray(jax.random.normal(key, (n, SIZES[0])))
    y = (np.arange(n) % SIZES[-1]).astype(np.int32)
    return params, X, y


def _loss(p, X, y):
    return objective.mlp_objective(p, X, y, activation="tanh")


def _trace(p, X, y):
    """Trace the batch objective as train.fit's probe does: nothing is compiled."""
    return jax.eval_shape(lambda p, X, y: _loss(p, X, y), p, X, y)


# --- static checks (shape and dtype), at trace time ------------------------------------------


def test_integer_labels_and_probabilities_pass(key):
    params, X, y = _problem(key)
    assert _trace(params, X, y).shape == ()
    P = np.full((len(y), SIZES[-1]), 1.0 / SIZES[-1], np.float32)
    assert _trace(params, X, P).shape == ()
    assert float(losses.cross_entropy(jnp.zeros(3), 1)) == pytest.approx(np.log(3))


def test_float_labels_are_a_type_error(key):
    params, X, y = _problem(key)
    with pytest.raises(TypeError, match=r"cross_entropy: target y: expected an integer class "
                       r"label \(shape \(\), integer dtype\) or a floating probability vector "
                       r"of shape \(10,\), got a scalar of dtype float32 \(float labels\? pass "
                       r"Y.astype\(np.int32\)\)"):
        _trace(params, X, y.astype(np.float32))
    with pytest.raises(TypeError, match=r"got a scalar of dtype float32"):
        losses.cross_entropy(jnp.zeros(3), 1.0)


def test_column_labels_are_a_value_error(key):
    """(n, 1) labels are not probability vectors of length 1 for a 10-output network."""
    params, X, y = _problem(key)
    for column in (y[:, None], y[:, None].astype(np.float32)):
        with pytest.raises(ValueError, match=r"cross_entropy: target y: expected .* got dtype "
                           r".*, shape \(1,\) \(labels of shape \(n, 1\) read as probability "
                           r"vectors of length 1\? pass Y.ravel\(\) for labels of shape "
                           r"\(n,\)\)"):
            _trace(params, X, column)


def test_other_class_targets(key):
    params, X, y = _problem(key)
    onehot = np.eye(SIZES[-1], dtype=np.int32)[y]
    with pytest.raises(TypeError, match=r"got dtype int32, shape \(10,\) \(one-hot integers\? "
                       r"pass Y.argmax\(axis=-1\)"):
        _trace(params, X, onehot)
    with pytest.raises(ValueError, match=r"got dtype float32, shape \(3,\)"):
        _trace(params, X, np.ones((len(y), 3), np.float32))
    with pytest.raises(ValueError, match=r"a batch of logits and labels\? cross_entropy is for "
                       r"ONE example: use jax.vmap"):
        losses.cross_entropy(jnp.zeros((4, 10)), jnp.arange(4))


def test_real_and_binary_targets():
    z = jnp.zeros(3)
    assert float(losses.squared_error(jnp.zeros((1, 3)), jnp.ones(3))) == 3.0  # broadcasts exactly
    assert float(losses.squared_error(jnp.zeros(1), 2.0)) == 4.0
    assert float(losses.squared_error(jnp.zeros(()), jnp.ones(1))) == 1.0
    with pytest.raises(ValueError, match=r"squared_error: target y: expected shape \(3,\) like "
                       r"the output z \(one example\), got dtype float32, shape \(\)"):
        losses.squared_error(z, jnp.float32(1.0))  # would broadcast to every output
    with pytest.raises(ValueError, match=r"got dtype float32, shape \(3, 1\)"):
        losses.squared_error(jnp.zeros((1, 3)), jnp.ones((3, 1)))  # would broadcast to (3, 3)
    with pytest.raises(ValueError, match=r"expected shape \(3,\) .* got dtype float32, shape "
                       r"\(1, 3\)"):
        losses.squared_error(z, jnp.ones((1, 3)))
    assert float(losses.binary_cross_entropy(jnp.zeros(1), jnp.ones(1))) > 0
    with pytest.raises(ValueError, match=r"binary_cross_entropy: target y: expected shape \(\) "
                       r"or \(1,\) \(one example\), got dtype float32, shape \(2,\)"):
        losses.binary_cross_entropy(jnp.zeros(1), jnp.ones(2))
    with pytest.raises(ValueError, match=r"binary_cross_entropy: expected one output"):
        losses.binary_cross_entropy(jnp.zeros(2), 1.0)


def test_fit_rejects_float_and_column_labels_before_compiling(key):
    """Without num_classes, train.fit's abstract probe raises the loss's static errors."""
    params, X, y = _problem(key)
    kw = dict(optimizer=train.sgd(0.1), epochs=1, batch_size=4, key=key, progress=False)
    with pytest.raises(TypeError, match=r"cross_entropy: target y: .*float labels\?"):
        train.fit(_loss, params, (X, y.astype(np.float32)), **kw)
    with pytest.raises(ValueError, match=r"pass Y.ravel\(\)"):
        train.fit(_loss, params, (X, y[:, None]), **kw)


# --- the record of label ranges and the value check ------------------------------------------


def test_record_label_ranges_sees_every_cross_entropy_traced(key):
    params, X, y = _problem(key)
    with losses.record_label_ranges() as seen:
        _trace(params, X, y)
    assert seen == [SIZES[-1]]
    with losses.record_label_ranges() as outer:
        with losses.record_label_ranges() as inner:
            jax.eval_shape(jax.vmap(losses.cross_entropy), jnp.zeros((2, 7)), jnp.zeros(2, int))
        P = jnp.ones((2, 7)) / 7  # probabilities need no range: not recorded
        jax.eval_shape(jax.vmap(losses.cross_entropy), jnp.zeros((2, 7)), P)
    assert inner == [7] and outer == [7]
    _trace(params, X, y)  # outside the context nothing is recorded
    assert outer == [7]


def test_traced_label_classes_survives_jax_trace_cache(key):
    """JAX caches traces; a fresh wrapper makes the loss's Python run every time."""
    params, X, y = _problem(key)
    jitted = jax.jit(_loss)
    jitted(params, X, y)  # traced and cached
    for _ in range(2):
        assert losses.traced_label_classes(_loss, params, X[:1], y[:1]) == (SIZES[-1],)
    spec = jax.ShapeDtypeStruct((1,), jnp.int32)
    assert losses.traced_label_classes(_loss, params, X[:1], spec) == (SIZES[-1],)
    P = np.ones((1, SIZES[-1]), np.float32) / SIZES[-1]
    assert losses.traced_label_classes(_loss, params, X[:1], P) == ()
    sq = lambda p, X, Y: objective.mlp_objective(p, X, Y, loss="squared_error")  # noqa: E731
    assert losses.traced_label_classes(sq, params, X[:1], P) == ()


def test_check_labels_one_based(key):
    """Labels 1..10 for 10 outputs: fit's check names the mistake; the loss of a label out of
    range is NaN (it was logsumexp(z), a plausible number that trained to a negative loss)."""
    params, X, y = _problem(key)
    one_based = y + 1
    z = jnp.array([0.5, -1.0, 2.0])  # label 3 of 3 classes
    assert np.isnan(float(losses.cross_entropy(z, 3)))
    assert np.isnan(float(jax.jit(losses.cross_entropy)(z, 3)))
    (M,) = losses.traced_label_classes(_loss, params, X[:1], one_based[:1])
    with pytest.raises(ValueError, match=r"^Y: expected class labels in \[0, 10\), got values "
                       r"in \[1, 10\] for a network with 10 outputs; labels 1..10\? subtract 1 "
                       r"\(Y - 1\)$"):
        _checks.check_labels(one_based, M, "Y")
    assert _checks.check_labels(y, M, "Y") is not None


def test_check_labels_other_values():
    with pytest.raises(ValueError, match=r"Y_val: expected class labels in \[0, 3\), got values "
                       r"in \[0, 4\] for a network with 3 outputs; 5 or more classes\? give the "
                       r"network 5 outputs$"):
        _checks.check_labels(np.array([0, 4, 1]), 3, "Y_val")
    with pytest.raises(ValueError, match=r"got values in \[-1, 1\] for a network with 3 "
                       r"outputs$"):
        _checks.check_labels(np.array([-1, 1]), 3)
    with pytest.raises(TypeError, match=r"Y: expected integer class labels, got dtype float64"):
        _checks.check_labels(np.array([0.0, 1.0]), 3)
    with pytest.raises(TypeError, match=r"num_classes: expected an int >= 1, got 0"):
        _checks.check_labels(np.array([0]), 0)


# --- values that tracing cannot see: NaN in the loss, refused by train.fit -------------------


def test_negative_labels_and_binary_targets_outside_0_1_give_nan():
    """-1 is not the last class (jnp.take would read it from the end), and a binary target
    of 2 or -1 is not a plausible loss."""
    z = jnp.array([0.0, 1.0, 2.0])
    assert np.isnan(losses.cross_entropy(z, -1)) and np.isnan(losses.cross_entropy(z, 3))
    assert np.isfinite(losses.cross_entropy(z, 2))
    for y in (-1, 2, -0.5, 1.5):
        assert np.isnan(losses.binary_cross_entropy(jnp.array([0.3]), y))
    for y in (0, 1, 0.25):
        assert np.isfinite(losses.binary_cross_entropy(jnp.array([0.3]), y))


def _binary_loss(p, X, y):
    return objective.mlp_objective(p, X, y, activation="tanh", loss="binary_cross_entropy")


@pytest.mark.parametrize("y", [[-1, 1], [0, 2], [-1.0, 1.0], [0.0, 1.5]])
def test_fit_refuses_binary_targets_outside_0_1(key, y):
    params = mlp.init(key, (4, 3, 1))
    X = np.zeros((8, 4), np.float32)
    Y = np.resize(np.array(y, np.float32 if isinstance(y[0], float) else np.int32), 8)
    kwargs = dict(optimizer=train.sgd(0.1), epochs=1, batch_size=4, key=key, progress=False)
    with pytest.raises(ValueError, match=r"Y: expected binary targets in \[0, 1\]"):
        train.fit(_binary_loss, params, (X, Y), **kwargs)
    good = (np.arange(8) % 2).astype(Y.dtype)
    with pytest.raises(ValueError, match=r"Y_val: expected binary targets in \[0, 1\]"):
        train.fit(_binary_loss, params, (X, good), validation=(X, Y), **kwargs)


def test_fit_refuses_token_ids_outside_the_vocabulary(key):
    """X of an embedding's token ids against its vocabulary, before compiling (an id V is a
    NaN row, and in a Transformer the NaN reaches every position through P V)."""
    import nets
    from nets import layers as L
    model = nets.Model(L.serial(L.Embedding(5, 4), L.Flatten(), L.Dense(3)), input_shape=(6,))
    params, _ = model.init(key)
    X = (np.arange(48) % 5).reshape(8, 6).astype(np.int32)
    y = (np.arange(8) % 3).astype(np.int32)
    kwargs = dict(optimizer=train.sgd(0.1), epochs=1, batch_size=4, key=key, progress=False)
    for bad in (5, -1):
        Xb = X.copy()
        Xb[2, 3] = bad
        with pytest.raises(ValueError, match=r"X: expected token ids in \[0, 5\)"):
            train.fit(objective.make(model), params, (Xb, y), **kwargs)
        with pytest.raises(ValueError, match=r"X_val: expected token ids in \[0, 5\)"):
            train.fit(objective.make(model), params, (X, y), validation=(Xb, y), **kwargs)
