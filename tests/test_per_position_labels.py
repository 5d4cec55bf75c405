"""Per-position labels for sequence models (issue 9): logits ``(T, M)`` per example, integer
labels ``(T,)`` (``(n, T)`` for a batch), ``-1`` (``nets.losses.IGNORE``) where a position is
not scored. The loss is the mean over the scored positions of the per-position
cross-entropies (held against NumPy by hand), its hand-derived ``dL/dz`` against
``jax.grad``, the metrics count scored positions, and ``train.fit`` refuses bad labels
(another length T, floats, out of range) with a clear error BEFORE compiling anything.

Nothing here trains: parameters are NumPy draws from abstract shapes, and fit's refusals are
traced (``jax.eval_shape``), never compiled; the compilation counter proves it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import train
from nets import _checks, losses, metrics, objective, rnn
from tests._random import random_params

T, M, VOCAB = 6, 4, 5
loss_jit = jax.jit(losses.per_position_cross_entropy)  # one program per target kind, not op by op


def _ce_by_hand(z, y):
    """Mean over scored positions of -log softmax(z_t)[y_t], in NumPy float64."""
    z = np.asarray(z, np.float64)
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    per_t = [lse[t] - z[t, y[t]] for t in range(len(y)) if y[t] != losses.IGNORE]
    return np.mean(per_t) if per_t else 0.0


@pytest.fixture(scope="module")
def net():
    return rnn.model(vocab_size=VOCAB, n_classes=M, seq_len=T, d_model=4, d_hidden=5, cell="rnn")


@pytest.fixture(scope="module")
def problem(net):
    rng = np.random.default_rng(0)
    params, _ = random_params(net, rng)
    X = rng.integers(0, VOCAB, (8, T)).astype(np.int32)
    Y = rng.integers(0, M, (8, T)).astype(np.int32)
    Y[:, :2] = losses.IGNORE  # the first two positions are not scored
    return params, X, Y


def test_loss_is_the_mean_of_per_position_cross_entropies():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(T, M)).astype(np.float32) * 3
    for y in (rng.integers(0, M, T), np.array([losses.IGNORE, 2, losses.IGNORE, 0, 3, 1]),
              np.full(T, losses.IGNORE)):
        got = float(loss_jit(z, y.astype(np.int32)))
        assert got == pytest.approx(_ce_by_hand(z, y), rel=1e-5, abs=1e-6)
    P = rng.dirichlet(np.ones(M), T).astype(np.float32)  # probabilities: every position
    want = np.mean([-(P[t] * np.log(np.exp(z[t]) / np.exp(z[t]).sum())).sum() for t in range(T)])
    assert float(loss_jit(z, P)) == pytest.approx(want, rel=1e-5)
    bad = np.array([0, 1, M, 0, 1, 2], np.int32)  # a label out of range: NaN, never plausible
    assert np.isnan(float(loss_jit(z, bad)))
    assert np.isnan(float(loss_jit(z, bad - 3)))  # -3 is not IGNORE


def test_hand_derived_grad_is_autodiff():
    loss = losses.get("per_position_cross_entropy")
    rng = np.random.default_rng(2)
    z = rng.normal(size=(T, M))
    y = np.array([losses.IGNORE, 2, 1, losses.IGNORE, 3, 0], np.int32)
    P = rng.dirichlet(np.ones(M), T)
    with jax.enable_x64(True):
        both = jax.jit(lambda z, t: (loss.grad(z, t), jax.grad(loss.fn)(z, t)))
        for target in (y, P):
            by_hand, autodiff = both(z, target)
            np.testing.assert_allclose(by_hand, autodiff, rtol=1e-12, atol=1e-15)
            if target is y:
                assert not np.any(np.asarray(by_hand)[[0, 3]])  # nothing from unscored positions


def test_objective_picks_the_per_position_loss(net, problem):
    params, X, Y = problem
    obj = objective.make(net, "cross_entropy")
    assert obj.loss.name == "per_position_cross_entropy"
    Z = np.asarray(net.batch_apply(params, X)[0])  # (n, T, M)
    want = np.mean([_ce_by_hand(z, y) for z, y in zip(Z, Y)])
    assert float(obj(params, X, Y)) == pytest.approx(want, rel=1e-5)
    # the per-example loss keeps refusing (T, M) logits with (T,) labels: a batch looks the same
    with pytest.raises(ValueError, match=r"a batch of logits and labels\?"):
        losses.cross_entropy(jnp.zeros((T, M)), jnp.zeros(T, jnp.int32))
    with pytest.raises(ValueError, match=r"^Y: expected per-position class labels in \[0, 4\) "
                       r"or -1 \(not scored\), got values in \[0, 4\]"):
        obj(params, X, np.where(Y == 3, 4, Y))


def test_metrics_count_scored_positions():
    Z = np.zeros((2, 3, M), np.float32)
    Z[..., 1] = 1.0  # predicts class 1 everywhere
    Y = np.array([[1, 0, losses.IGNORE], [losses.IGNORE, losses.IGNORE, 1]], np.int32)
    assert float(metrics.accuracy(Z, Y)) == pytest.approx(2 / 3)
    assert float(metrics.error_rate(Z, np.eye(M, dtype=np.float32)[np.zeros((2, 3), int)])) == 1.0
    with pytest.raises(ValueError, match=r"y: expected per-position labels of shape \(2, 3\)"):
        metrics.accuracy(Z, Y[:, :2])


def test_validate_accepts_a_label_per_position():
    X = np.zeros((4, T), np.int32)
    Y = np.full((4, T), losses.IGNORE, np.int32)
    Y[:, -1] = np.arange(4) % M
    assert train.data.validate(X, Y, num_classes=M)[1] is Y
    with pytest.raises(ValueError, match=r"y: expected per-position class labels in \[0, 4\) "
                       r"or -1 \(not scored\), got values in \[-2, 3\]"):
        train.data.validate(X, np.where(Y == 1, -2, Y), num_classes=M)
    with pytest.raises(ValueError, match=r"y: expected some scored labels"):
        _checks.check_labels(np.full((2, T), -1), M, "y", ignore=losses.IGNORE)


# --- train.fit: bad labels refused before anything compiles ---------------------------------

_COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration")


@pytest.fixture
def compiles():
    seen = []

    def listen(event, duration, **kwargs):
        if event in _COMPILE_EVENTS:
            seen.append(kwargs.get("fun_name"))

    jax.random.key(0)  # a key's two tiny programs, once per process
    jax.monitoring.register_event_duration_secs_listener(listen)
    yield seen
    jax.monitoring.unregister_event_duration_listener(listen)


@pytest.mark.parametrize("bad, error, match", [
    ("short", ValueError, r"^Y: expected shape \(n, 6\) \(integer labels, -1 where not scored\) "
     r"or \(n, 6, 4\) \(probabilities\) for the model's output_shape \(6, 4\), got \(8, 5\)$"),
    ("per_sequence", ValueError, r"^Y: expected shape \(n, 6\) .* got \(8,\)$"),
    ("x_length", ValueError, r"^X: expected shape \(n, 6\) for the model's input_shape \(6,\), "
     r"got \(8, 9\)$"),
    ("x_val_length", ValueError, r"^X_val: expected shape \(n, 6\) for the model's input_shape "
     r"\(6,\), got \(8, 9\)$"),
    ("token", ValueError, r"^X: expected token ids in \[0, 5\) \(the model's embedding has "
     r"vocab_size 5\), got values in \[-1, 4\]; the first outside is X\[2, 3\] = -1$"),
    ("float", TypeError, r"per_position_cross_entropy: target y: .* got dtype float32, shape "
     r"\(6,\) \(float labels\? pass Y.astype\(np.int32\)\)"),
    ("range", ValueError, r"^Y: expected per-position class labels in \[0, 4\) or -1 \(not "
     r"scored\), got values in \[0, 7\]"),
    ("negative", ValueError, r"^Y_val: expected per-position class labels in \[0, 4\) or -1 "
     r"\(not scored\), got values in \[-3, 3\]"),
], ids=["short", "per_sequence", "x_length", "x_val_length", "token", "float", "range",
        "negative"])
def test_fit_refuses_bad_labels_before_compiling(net, problem, compiles, bad, error, match):
    params, X, Y = problem
    data, val = (X, Y), None
    if bad == "short":
        data = (X, Y[:, :-1])
    elif bad == "per_sequence":  # one label per sequence for a per-position model
        data = (X, Y[:, -1])
    elif bad == "x_length":  # the X passed is named, not a batch of it
        data = (np.zeros((8, 9), np.int32), np.zeros((8, 9), np.int32))
    elif bad == "x_val_length":
        val = (np.zeros((8, 9), np.int32), np.zeros((8, 9), np.int32))
    elif bad == "token":
        X = X.copy()
        X[2, 3] = -1
        data = (X, Y)
    elif bad == "float":
        data = (X, Y.astype(np.float32))
    elif bad == "range":
        data = (X, np.where(Y == 3, 7, Y))
    else:
        val = (X, np.where(Y == 0, -3, Y))
    with pytest.raises(error, match=match):
        train.fit(objective.make(net, "cross_entropy"), params, data, validation=val,
                  optimizer=optax.sgd(0.1), epochs=1, batch_size=4, key=jax.random.key(1),
                  progress=False)
    assert compiles == []


def test_an_objective_called_by_hand_checks_concrete_token_ids(net, problem):
    """An id outside [0, vocab_size) is a row of NaN in the embedding: the objective refuses
    concrete ones by name and index (as it refuses labels), and traced ones pass."""
    params, X, Y = problem
    obj = objective.make(net, "cross_entropy")
    for bad, where in ((VOCAB, "X\\[1, 4\\] = 5"), (-1, "X\\[1, 4\\] = -1")):
        Xbad = X.copy()
        Xbad[1, 4] = bad
        with pytest.raises(ValueError, match=r"^X: expected token ids in \[0, 5\) .* the first "
                           r"outside is " + where + "$"):
            obj(params, Xbad, Y)
    assert np.isfinite(obj(params, X, Y))
    Xbad = X.copy()
    Xbad[1, 4] = VOCAB
    assert np.isnan(jax.jit(obj)(params, Xbad, Y))  # traced: unchecked, NaN as documented
