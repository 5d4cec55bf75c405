"""nets.mamba: the parallel scan (jax.lax.associative_scan) equals the sequential recurrence
(jax.lax.scan), values and gradients, in float64 to 1e-10: the scan alone at lengths 1 and 7,
and a whole Mamba block (projections, convolution, S6, gating) at length 4,096; S6 is Gu &
Dao's equations (a NumPy loop as the oracle); the convolution and the model are causal;
initial values; shapes; bad arguments.

Cheap by construction: each length compiles one program holding both scans and their
gradients (the parallel scan's gradient is most of the cost: about 1 s of compilation at
T = 64, 3 s at T = 4,096, so 4,096 is compiled once); states are small.
"""

import functools
import zlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import gradcheck, mamba
from nets.model import Model
from tests._random import random_params
from tests.test_transformer import check_dropout_option

LONG = 4096  # the "sequence lengths up to at least 4,096"
E, N = 3, 4  # channels, state entries per channel

err = functools.partial(gradcheck.relative_error, floor=1e-3)


@pytest.fixture
def rng(request):
    """A NumPy generator seeded by the test's node id, so a failure replays."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@jax.jit
def _both_scans(a, b, r):
    """Both scans of ``h_t = a_t h_{t-1} + b_t`` and the gradients of ``sum(r * h)`` w.r.t.
    ``(a, b)`` through each."""
    out = {}
    for name, scan in (("parallel", mamba.scan_parallel), ("sequential", mamba.scan_sequential)):
        h, vjp = jax.vjp(scan, a, b)
        out[name] = (h, *vjp(r))
    return out


@pytest.mark.parametrize("T", [1, 7])
def test_parallel_scan_equals_sequential_in_float64(rng, T):
    """Decays a in (0.5, 1) and inputs b ~ N(0, 1): per element to 1e-10, values and both
    gradients; and the recurrence by hand."""
    with jax.enable_x64(True):
        a = rng.uniform(0.5, 1.0, size=(T, E, N))
        b, r = rng.normal(size=(T, E, N)), rng.normal(size=(T, E, N))
        out = jax.tree.map(np.asarray, _both_scans(a, b, r))
    for par, seq, what in zip(out["parallel"], out["sequential"], ("h", "dL/da", "dL/db")):
        assert par.dtype == np.float64
        assert err(par, seq) <= 1e-10, (T, what, err(par, seq))
    h, want = np.zeros((E, N)), []
    for t in range(T):
        h = a[t] * h + b[t]
        want.append(h)
    np.testing.assert_allclose(out["sequential"][0], np.array(want), rtol=1e-12)


def test_mamba_block_parallel_equals_sequential_at_4096(rng):
    """The whole block with either scan, its parameters drawn as its initialisation draws
    them (decays exp(Delta A) between 0.67 and 0.999: memory over hundreds of steps;
    NumPy, so nothing but the test program compiles): outputs and the gradients
    w.r.t. every parameter and the input agree per element to 1e-10 in float64 at
    T = 4,096."""
    d, Eb, K = 2, 4, 3  # width, channels (expand 2), convolution length
    layers = {s: mamba.MambaBlock(N, expand=2, d_conv=K, scan=s) for s in mamba.SCANS}
    dt = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), Eb))  # as MambaBlock.init, in NumPy
    params = {"W_in": rng.normal(size=(2 * Eb, d)) / np.sqrt(d),
              "conv": {"w": rng.uniform(-1, 1, (K, Eb)) / np.sqrt(K), "b": np.zeros(Eb)},
              "s6": {"W_x": rng.normal(size=(1 + 2 * N, Eb)) / 2, "W_dt": rng.normal(size=(Eb, 1)),
                     "b_dt": dt + np.log(-np.expm1(-dt)), "D": np.ones(Eb),
                     "A_log": np.log(np.tile(np.arange(1.0, N + 1), (Eb, 1)))},
              "W_out": rng.normal(size=(d, Eb)) / 2}
    abstract = jax.eval_shape(Model(layers["parallel"], input_shape=(LONG, d)).init,
                              jax.random.key(0))[0]
    assert jax.tree.map(np.shape, abstract) == jax.tree.map(np.shape, params)

    @jax.jit
    def run(params, x, r):
        out = {}
        for s, layer in layers.items():
            y, vjp = jax.vjp(lambda p, x: layer.apply(p, (), x)[0], params, x)
            out[s] = (y, vjp(r))
        return out

    with jax.enable_x64(True):
        x, r = rng.normal(size=(LONG, d)), rng.normal(size=(LONG, d))
        out = jax.tree.map(np.asarray, run(params, x, r))
    (y_par, g_par), (y_seq, g_seq) = out["parallel"], out["sequential"]
    assert y_par.shape == (LONG, d) and y_par.dtype == np.float64
    assert np.abs(y_par).max() > 1e-2 and np.abs(g_par[1]).max() > 1e-2
    errors = jax.tree.map(lambda p, s: err(p, s), (y_par, g_par), (y_seq, g_seq))
    assert max(jax.tree.leaves(errors)) <= 1e-10, errors


def test_s6_is_the_papers_equations(rng):
    """Delta_t = softplus(W_dt delta_t + b_dt), Abar = exp(Delta A), Bbar u = Delta B u,
    h_t = Abar h_{t-1} + Bbar u_t, y_t = C_t h_t + D u_t: a NumPy loop over time."""
    T, R = 6, 2
    p = {"W_x": rng.normal(size=(R + 2 * N, E)), "W_dt": rng.normal(size=(E, R)),
         "b_dt": rng.normal(size=E), "A_log": rng.normal(size=(E, N)), "D": rng.normal(size=E)}
    p = jax.tree.map(lambda v: v.astype(np.float32), p)
    u = rng.normal(size=(T, E)).astype(np.float32)
    h, want = np.zeros((E, N)), []
    A = -np.exp(p["A_log"])
    for t in range(T):
        proj = p["W_x"] @ u[t]
        delta, B, C = proj[:R], proj[R:R + N], proj[R + N:]
        dt = np.log1p(np.exp(p["W_dt"] @ delta + p["b_dt"]))  # softplus
        h = np.exp(dt[:, None] * A) * h + (dt * u[t])[:, None] * B[None, :]
        want.append(h @ C + p["D"] * u[t])
    got = jax.jit(mamba.selective_scan, static_argnames="scan")(p, u, scan="parallel")
    np.testing.assert_allclose(got, np.array(want), rtol=1e-4, atol=1e-5)
    eager = mamba.selective_scan(p, u, scan="sequential")  # op by op
    chex.assert_trees_all_close(eager, got, rtol=1e-5, atol=1e-5)


def test_causal_conv_sees_the_past_only(rng):
    K, T = 3, 5
    p = {"w": rng.normal(size=(K, E)), "b": rng.normal(size=E)}
    u = rng.normal(size=(T, E))
    y = np.asarray(mamba.causal_conv(p, u))
    for t in range(T):
        want = p["b"] + sum(p["w"][k] * u[t - K + 1 + k] for k in range(K) if t - K + 1 + k >= 0)
        np.testing.assert_allclose(y[t], want, rtol=1e-5, atol=1e-6)


def test_model_output_at_t_does_not_depend_on_inputs_after_t(rng):
    """Through a block (convolution, S6, gating, layer norm) and the head: d z_t / d x_s = 0
    exactly for s > t, nonzero for s <= t."""
    T = 6
    net = mamba.model(d_in=2, n_classes=2, seq_len=T, d_model=4, n_layers=1, d_state=N)
    params, state = random_params(net, rng)
    x = rng.normal(size=(T, 2)).astype(np.float32)
    J = jax.jit(jax.jacrev(lambda x: net.layer.apply(params, state, x)[0]))(x)  # (T, 2, T, 2)
    per_pair = np.abs(np.asarray(J)).max(axis=(1, 3))  # [t, s]
    assert np.all(per_pair[np.triu_indices(T, 1)] == 0.0)
    assert np.all(per_pair[np.tril_indices(T)] > 0.0)


def test_shapes_and_initial_values():
    net = mamba.model(vocab_size=5, n_classes=3, seq_len=7, d_model=8, d_state=N, n_layers=1,
                      readout="last")
    assert net.input_shape == (7,) and net.output_shape == (3,)
    params = jax.eval_shape(net.init, jax.random.key(0))[0]
    blk = params[1][1]  # (embedding, residual(serial(LN, block)), LN, head, readout)
    assert blk["W_in"].shape == (32, 8) and blk["W_out"].shape == (8, 16)
    assert blk["conv"]["w"].shape == (4, 16) and blk["s6"]["W_x"].shape == (1 + 2 * N, 16)
    s6 = Model(mamba.S6(N, dt_rank=2), input_shape=(5, E)).init(jax.random.key(1))[0]
    np.testing.assert_allclose(-np.exp(s6["A_log"]), -np.tile(np.arange(1, N + 1), (E, 1)),
                               rtol=1e-6)  # S4D-real: A[e, n] = -(n + 1)
    dt = np.log1p(np.exp(np.asarray(s6["b_dt"])))  # softplus(b_dt) in [1e-3, 1e-1]
    assert np.all((dt >= 1e-3 * 0.999) & (dt <= 1e-1 * 1.001))
    np.testing.assert_array_equal(s6["D"], np.ones(E))
    assert s6["W_x"].shape == (2 + 2 * N, E) and s6["W_dt"].shape == (E, 2)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"scan: expected one of \('parallel', 'sequential'\)"):
        mamba.MambaBlock(scan="blelloch")
    with pytest.raises(ValueError, match=r"d_state: S6: expected an int >= 1, got 0"):
        mamba.S6(0)
    with pytest.raises(ValueError, match=r"input_shape: MambaBlock expected one sequence"):
        Model(mamba.MambaBlock(), input_shape=(8, 8, 1)).output_shape
    with pytest.raises(ValueError, match=r"x: MambaBlock expected one sequence of shape"):
        params = Model(mamba.MambaBlock(2), input_shape=(3, 2))
        mamba.MambaBlock(2).apply(jax.eval_shape(params.init, jax.random.key(0))[0], (),
                                  jnp.zeros((3, 5)))


def test_s6_step_range_batches_and_empty_sequences():
    for lo, hi, match in [(0.0, 0.1, "dt_min: expected"), (-1e-3, 0.1, "dt_min: expected"),
                          (1e-3, float("nan"), "dt_max: expected"),
                          (0.5, 0.01, r"dt_min, dt_max: S6 expected 0 < dt_min <= dt_max")]:
        with pytest.raises(ValueError, match=match):
            mamba.S6(4, dt_min=lo, dt_max=hi)
    _, p, _ = mamba.S6(2).init(jax.random.key(0), (3, 4))
    with pytest.raises(ValueError, match=r"u: selective_scan expected .*\(T, 4\).*a batch"):
        mamba.selective_scan(p, jnp.ones((2, 3, 4)))
    a = b = jnp.ones((0, 2))
    for f in (mamba.scan_parallel, mamba.scan_sequential):
        assert f(a, b).shape == (0, 2)
        with pytest.raises(ValueError, match="a, b: "):
            f(jnp.ones((3, 2)), jnp.ones((3, 1)))


def test_dropout_on_each_blocks_output_and_off_in_eval_mode(key, rng):
    """dropout=: one Dropout per block, on Mamba(LN(x)) before the residual sum
    (tests.test_transformer.check_dropout_option: eval mode is drop_rate=0, train mode draws
    reproducible masks, the model is stateful, bad rates, train.fit)."""
    make = functools.partial(mamba.model, vocab_size=5, n_classes=3, seq_len=6, d_model=4,
                             d_state=N, n_layers=2)
    X, Y = rng.integers(0, 5, size=(8, 6)), rng.integers(0, 3, size=(8, 6))
    check_dropout_option(make, "mamba.model", 2, X, Y, key)
