"""nets.rnn: shapes and parameters; the RNN and LSTM layers are their equations (a NumPy loop
over time as the oracle); a scan continues from its carry; jit and no-jit agree; readouts;
bad arguments. A handful of small programs are compiled."""

import functools
import zlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import backprop_sequence, rnn
from nets import layers as L
from nets.model import Model
from tests._random import random_params
from tests.test_transformer import check_dropout_option

T, D, N = 5, 3, 4


@pytest.fixture
def rng(request):
    """A NumPy generator seeded by the test's node id, so a failure replays."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def _params(rng, gates):
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return {"W": f32(rng.normal(size=(gates * N, D))), "U": f32(rng.normal(size=(gates * N, N))),
            "b": f32(rng.normal(size=gates * N))}


def test_shapes_and_initial_parameters():
    lstm = Model(rnn.LSTM(N), input_shape=(T, D))
    assert lstm.output_shape == (T, N)
    params, state = lstm.init(jax.random.key(0))
    assert {k: v.shape for k, v in params.items()} == {"W": (4 * N, D), "U": (4 * N, N),
                                                       "b": (4 * N,)}
    np.testing.assert_array_equal(params["b"], np.r_[np.zeros(N), np.ones(N), np.zeros(2 * N)])
    U_i = np.asarray(params["U"][:N])  # each gate's recurrent block is orthogonal
    np.testing.assert_allclose(U_i.T @ U_i, np.eye(N), atol=1e-5)
    assert state == ()
    assert Model(rnn.LSTM(N, return_sequences=False), input_shape=(T, D)).output_shape == (N,)
    assert Model(rnn.RNN(N), input_shape=(T, D)).output_shape == (T, N)
    assert Model(rnn.RNN(N, return_sequences=False), input_shape=(T, D)).output_shape == (N,)


def test_layers_are_their_equations_and_jit_agrees(rng):
    """h_t = tanh(W x_t + U h_{t-1} + b) and the LSTM's gates, by a NumPy loop over time;
    the layers' apply op by op and compiled give the same."""
    xs = rng.normal(size=(T, D)).astype(np.float32)
    p_rnn, p_lstm = _params(rng, 1), _params(rng, 4)
    h, want_rnn = np.zeros(N), []
    for t in range(T):
        h = np.tanh(p_rnn["W"] @ xs[t] + p_rnn["U"] @ h + p_rnn["b"])
        want_rnn.append(h)
    want_lstm = backprop_sequence.lstm_forward(p_lstm, xs)["h"][1:]  # the module doc's loop

    layers = (rnn.RNN(N), rnn.LSTM(N))

    def both(p_rnn, p_lstm, xs):
        return tuple(layer.apply(p, (), xs)[0] for layer, p in zip(layers, (p_rnn, p_lstm)))

    eager, jitted = both(p_rnn, p_lstm, xs), jax.jit(both)(p_rnn, p_lstm, xs)
    chex.assert_trees_all_close(eager, jitted, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jitted[0], np.array(want_rnn), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jitted[1], want_lstm, rtol=1e-5, atol=1e-5)
    last = rnn.LSTM(N, return_sequences=False).apply(p_lstm, (), xs)[0]
    np.testing.assert_allclose(last, jitted[1][-1], rtol=1e-6, atol=1e-6)


def test_the_scan_carries_the_initial_state(rng):
    """lstm(params, xs, carry0) continues from carry0: two halves equal the whole."""
    p, xs = _params(rng, 4), rng.normal(size=(T, D)).astype(np.float32)
    whole, end = rnn.lstm(p, xs)
    first, mid = rnn.lstm(p, xs[:2])
    second, end2 = rnn.lstm(p, xs[2:], mid)
    np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(end, end2, rtol=1e-6, atol=1e-6)


def test_lstm_step_takes_a_pair_as_documented(rng):
    """lstm_step's carry is (h_{t-1}, c_{t-1}): a plain pair works like an LSTMState and
    the step returns an LSTMState; anything else is a clear TypeError."""
    p, x = _params(rng, 4), rng.normal(size=D).astype(np.float32)
    h, c = rng.normal(size=(2, N)).astype(np.float32)
    want_carry, want_h = rnn.lstm_step(p, rnn.LSTMState(h, c), x)
    carry, out = rnn.lstm_step(p, (h, c), x)
    assert isinstance(carry, rnn.LSTMState)
    chex.assert_trees_all_close((carry, out), (want_carry, want_h), atol=0)
    with pytest.raises(TypeError, match=r"carry: lstm_step expected an LSTMState"):
        rnn.lstm_step(p, h, x)


def test_token_model_and_readouts(rng):
    """An embedding, an LSTM and a per-position classifier over token ids: batch shapes;
    "last" and "mean" read the same scores as "all" (the readout has no parameters)."""
    kw = dict(vocab_size=6, n_classes=3, seq_len=T, d_model=4, d_hidden=N)
    nets = {r: rnn.model(readout=r, **kw) for r in ("all", "last", "mean")}
    params, state = random_params(nets["all"], rng)
    X = rng.integers(0, 6, size=(2, T))

    @jax.jit
    def outputs(params, X):  # one program for the three readouts
        return {r: jax.vmap(lambda x: net.layer.apply(params, state, x)[0])(X)
                for r, net in nets.items()}

    out = jax.tree.map(np.asarray, outputs(params, X))
    assert {r: o.shape[1:] for r, o in out.items()} == {r: n.output_shape for r, n in nets.items()}
    assert out["all"].shape == (2, T, 3) and out["last"].shape == (2, 3)
    np.testing.assert_allclose(out["last"], out["all"][:, -1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["mean"], out["all"].mean(1), rtol=1e-5, atol=1e-6)
    assert rnn.model(cell="rnn", **kw).output_shape == (T, 3)
    assert rnn.model(d_in=2, n_classes=3, seq_len=T).input_shape == (T, 2)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"d_hidden: LSTM: expected an int >= 1, got 0"):
        rnn.LSTM(0)
    with pytest.raises(ValueError, match=r"input_shape: LSTM expected one sequence \(T, d\)"):
        Model(rnn.LSTM(3), input_shape=(5,)).output_shape
    with pytest.raises(ValueError, match=r"x: RNN expected one sequence of shape \(T, 3\)"):
        rnn.RNN(2).apply({"W": jnp.zeros((2, 3)), "U": jnp.zeros((2, 2)), "b": jnp.zeros(2)},
                         (), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"cell: rnn.model expected 'lstm' or 'rnn'"):
        rnn.model(vocab_size=3, n_classes=2, seq_len=4, cell="gru")
    with pytest.raises(ValueError, match=r"rnn.model: expected exactly one of vocab_size"):
        rnn.model(vocab_size=3, d_in=2, n_classes=2, seq_len=4)
    with pytest.raises(ValueError, match=r"readout: expected one of"):
        rnn.model(vocab_size=3, n_classes=2, seq_len=4, readout="first")
    with pytest.raises(ValueError, match=r"per_position expected a sequence"):
        Model(L.serial(rnn.per_position(L.Dense(2))), input_shape=(4,)).output_shape


def test_initial_states_and_sequences_are_checked_by_name():
    _, pl, _ = rnn.LSTM(6).init(jax.random.key(0), (5, 4))
    _, pr, _ = rnn.RNN(6).init(jax.random.key(0), (5, 4))
    xs = jnp.ones((5, 4))
    cases = [
        (lambda: rnn.rnn(pr, xs, jnp.zeros(5)), ValueError, r"h0: rnn expected shape \(6,\)"),
        (lambda: rnn.rnn(pr, xs, jnp.zeros((2, 6))), ValueError, r"h0: .*got shape \(2, 6\)"),
        (lambda: rnn.rnn(pr, xs, jnp.zeros(6, int)), TypeError, "h0: rnn expected a floating"),
        (lambda: rnn.rnn(pr, jnp.ones(4)), ValueError, r"xs: rnn expected .*\(T, 4\)"),
        (lambda: rnn.lstm(pl, xs, rnn.LSTMState(jnp.zeros(6), jnp.zeros(5))), ValueError,
         r"c0 \(carry0.c\): lstm expected shape \(6,\)"),
        (lambda: rnn.lstm(pl, jnp.ones((2, 5, 4))), ValueError, "xs: lstm .*a batch"),
        (lambda: rnn.lstm(pl, jnp.ones((5, 5))), ValueError, r"xs: lstm .*got shape \(5, 5\)"),
        (lambda: rnn.lstm(pl, xs, jnp.zeros(6)), TypeError, "carry0"),
        (lambda: rnn.LSTM(6, forget_bias="high"), TypeError, "forget_bias: expected"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
    # valid states give the numbers they gave before (and under jit)
    hs, hT = jax.jit(rnn.rnn)(pr, xs, jnp.zeros(6))
    np.testing.assert_array_equal(hs, rnn.rnn(pr, xs)[0])
    hs, _ = rnn.lstm(pl, xs, rnn.LSTMState(jnp.zeros(6), jnp.zeros(6)))
    np.testing.assert_array_equal(hs, rnn.lstm(pl, xs)[0])


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_dropout_between_layers_and_before_the_head(key, rng, cell):
    """drop_rate=: on the non-recurrent connections (Zaremba et al. 2014), after the input
    layer and after each of the 2 recurrent layers, 3 in all
    (tests.test_transformer.check_dropout_option: eval mode is drop_rate=0, train mode draws
    reproducible masks, the model is stateful, bad rates, train.fit)."""
    make = functools.partial(rnn.model, vocab_size=5, n_classes=3, seq_len=T, d_model=4,
                             d_hidden=N, n_layers=2, cell=cell)
    X, Y = rng.integers(0, 5, size=(8, T)), rng.integers(0, 3, size=(8, T))
    check_dropout_option(make, "rnn.model", 3, X, Y, key)
