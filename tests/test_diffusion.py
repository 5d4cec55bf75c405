"""nets.diffusion: the linear schedule's alpha_bar_T; the closed form of q(x_t | x_0) against
repeated noising in float64 (exact moments and a Monte Carlo check); shapes and bad input;
jit and no-jit agree; the step (with its EMA) trains through train.run."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nets import diffusion


@pytest.fixture
def rng(request):
    """A NumPy generator seeded by the test's node id, so a failure replays."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def test_linear_schedule_values_and_alpha_bar_T(x64):
    s = diffusion.linear_schedule(dtype=jnp.float64)  # Ho et al.: 1e-4 .. 0.02, T = 1000
    betas = np.linspace(1e-4, 0.02, 1000)
    assert s.T == 1000 and s.betas.shape == s.alpha_bars.shape == (1001,)
    assert s.betas[0] == 0 and s.alpha_bars[0] == 1 and s.alphas[0] == 1
    np.testing.assert_allclose(s.betas[1:], betas, rtol=1e-15, atol=0)
    np.testing.assert_allclose(s.alpha_bars[-1], np.prod(1.0 - betas), rtol=1e-12, atol=0)
    np.testing.assert_allclose(s.alpha_bars[-1], 4.0358e-5, rtol=1e-4, atol=0)
    f32 = diffusion.linear_schedule()
    assert f32.alpha_bars.dtype == jnp.float32
    np.testing.assert_allclose(f32.alpha_bars[-1], 4.0358e-5, rtol=1e-4, atol=0)
    assert bool(jnp.all(jnp.diff(s.alpha_bars) < 0))  # strictly decreasing: noise grows


def test_closed_form_equals_repeated_noising_moments_exactly(x64):
    # x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps_t, applied t times to a fixed x_0, is
    # Gaussian with mean m_t = sqrt(alpha_t) m_{t-1} and variance v_t = alpha_t v_{t-1} +
    # beta_t; eq. 4 says m_t = sqrt(alpha_bar_t) x_0 and v_t = 1 - alpha_bar_t.
    s = diffusion.linear_schedule(dtype=jnp.float64)
    x0 = np.array([1.5, -0.25, 3.0])
    m, v = x0.copy(), 0.0
    means, variances = [], []
    for t in range(1, s.T + 1):
        a = float(s.alphas[t])
        m, v = np.sqrt(a) * m, a * v + float(s.betas[t])
        means.append(m)
        variances.append(v)
    t = np.arange(1, s.T + 1)
    closed_mean = diffusion.q_sample(s, np.tile(x0, (s.T, 1)), t, np.zeros((s.T, 3)))
    closed_sd = diffusion.q_sample(s, np.zeros((s.T, 3)), t, np.ones((s.T, 3)))
    np.testing.assert_allclose(closed_mean, np.array(means), rtol=0, atol=1e-13)
    np.testing.assert_allclose(closed_sd[:, 0] ** 2, np.array(variances), rtol=0, atol=1e-13)


def test_closed_form_matches_repeated_noising_in_distribution(x64):
    # The same by sampling: 4000 chains noised step by step against 4000 closed-form draws,
    # at several t; means and sds agree within 5 standard errors.
    s = diffusion.linear_schedule(dtype=jnp.float64)
    rng = np.random.default_rng(0)
    n, x0 = 4000, np.array([2.0, -1.0])
    x = np.tile(x0, (n, 1))
    checked = {1: None, 10: None, 100: None, 400: None, 1000: None}
    for t in range(1, s.T + 1):
        x = np.sqrt(float(s.alphas[t])) * x + np.sqrt(float(s.betas[t])) * rng.normal(size=x.shape)
        if t in checked:
            checked[t] = x.copy()
    key = jax.random.key(0)
    for t, chain in checked.items():
        noise = jax.random.normal(jax.random.fold_in(key, t), (n, 2), jnp.float64)
        closed = np.asarray(diffusion.q_sample(s, jnp.tile(x0, (n, 1)), t, noise))
        sd = np.sqrt(1.0 - float(s.alpha_bars[t]))
        se = sd / np.sqrt(n)
        for sample in (chain, closed):
            np.testing.assert_allclose(sample.mean(0), np.sqrt(float(s.alpha_bars[t])) * x0,
                                       atol=5 * se, rtol=0)
            np.testing.assert_allclose(sample.std(0), sd, rtol=5 / np.sqrt(2 * n), atol=0)


def test_shapes_and_bad_input():
    s = diffusion.linear_schedule(8)
    X = jnp.ones((5, 3))
    assert diffusion.q_sample(s, X, jnp.arange(5), X).shape == (5, 3)
    assert diffusion.q_sample(s, jnp.ones(3), 4, jnp.ones(3)).shape == (3,)
    assert diffusion.time_embedding(jnp.arange(5), 6).shape == (5, 6)
    with pytest.raises(ValueError, match="noise: expected the shape of x0"):
        diffusion.q_sample(s, X, 1, jnp.ones((5, 2)))
    with pytest.raises(TypeError, match="schedule"):
        diffusion.q_sample(np.ones(9), X, 1, X)
    with pytest.raises(ValueError, match="emb_dim"):
        diffusion.denoiser(2, emb_dim=7)
    with pytest.raises(ValueError, match="hidden"):
        diffusion.denoiser(2, hidden=(0,))
    with pytest.raises(TypeError, match="T"):
        diffusion.linear_schedule(10.0)
    with pytest.raises(ValueError, match="beta_T"):
        diffusion.linear_schedule(10, beta_T=1.5)
    net = diffusion.denoiser(3, hidden=(4,), emb_dim=4)
    params = _params(np.random.default_rng(0), hidden=4)
    with pytest.raises(ValueError, match="keep"):
        diffusion.sample(net, params, s, 2, key=jax.random.key(0), keep=(9,))
    with pytest.raises(TypeError, match="key"):
        diffusion.sample(net, params, s, 2, key=0)
    with pytest.raises(TypeError, match="Denoiser"):
        diffusion.make_step(net.model, optax.sgd(0.1), s)


def _params(rng, d=3, hidden=8, emb=4):
    """Random parameters of ``denoiser(d, (hidden,), emb_dim=emb)`` built in NumPy (no init
    program to compile): serial(Dense, ReLU, Dense)."""
    f = lambda *shape: rng.normal(size=shape).astype(np.float32) / 2  # noqa: E731
    return ({"W": f(hidden, d + emb), "b": f(hidden)}, (), {"W": f(d, hidden), "b": f(d)})


def _eps_numpy(params, X, t, emb):
    """eps_theta by hand in float64: ReLU MLP on [x, sin(t w), cos(t w)]."""
    w = np.exp(-np.log(10_000.0) * np.arange(emb // 2) / (emb // 2))
    t = np.broadcast_to(np.asarray(t, np.float64), (len(X),))[:, None] * w
    a = np.concatenate([X, np.sin(t), np.cos(t)], axis=1)
    z = a @ np.float64(params[0]["W"]).T + params[0]["b"]
    h = np.maximum(z, 0)
    return h @ np.float64(params[2]["W"]).T + params[2]["b"]


def test_sampler_and_loss_against_algorithms_1_and_2_by_hand(rng):
    s = diffusion.linear_schedule(6)
    net = diffusion.denoiser(3, hidden=(8,), emb_dim=4)
    params = _params(rng)
    key = jax.random.key(2)
    x0, kept = diffusion.sample(net, params, s, 4, key=key, keep=(6, 3, 0))
    assert x0.shape == (4, 3) and kept.shape == (3, 4, 3)
    # Algorithm 2 in NumPy with the same draws: x_T, then x_{t-1} from x_t
    k0, k_steps = jax.random.split(key)
    x = np.asarray(jax.random.normal(k0, (4, 3)), np.float64)
    want = {6: x}
    b, a, abar = (np.asarray(v, np.float64) for v in s)
    for t in range(6, 0, -1):
        mean = (x - b[t] / np.sqrt(1 - abar[t]) * _eps_numpy(params, x, t, 4)) / np.sqrt(a[t])
        z = np.asarray(jax.random.normal(jax.random.fold_in(k_steps, t), (4, 3)), np.float64)
        x = mean + (np.sqrt(b[t]) * z if t > 1 else 0.0)
        want[t - 1] = x
    np.testing.assert_allclose(kept, np.stack([want[6], want[3], want[0]]), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_array_equal(kept[-1], x0)  # x_0 is the sample
    # Algorithm 1's loss, jitted, against NumPy with the same t and eps
    X0 = rng.normal(size=(5, 3)).astype(np.float32)
    kt, ke = jax.random.split(key)
    t = np.asarray(jax.random.randint(kt, (5,), 1, 7))
    eps = np.asarray(jax.random.normal(ke, (5, 3)), np.float64)
    xt = np.sqrt(abar[t])[:, None] * X0 + np.sqrt(1 - abar[t])[:, None] * eps
    want_loss = np.mean((eps - _eps_numpy(params, xt, t, 4)) ** 2)
    got = jax.jit(diffusion.loss, static_argnums=0)(net, params, X0, key, s)
    np.testing.assert_allclose(got, want_loss, rtol=1e-5, atol=1e-6)


def test_q_sample_jit_and_no_jit_agree(rng):
    s = diffusion.linear_schedule(100)
    X, N = rng.normal(size=(2, 6, 5)).astype(np.float32)
    t = np.array([1, 2, 50, 99, 100, 0])
    eager = diffusion.q_sample(s, X, t, N)
    np.testing.assert_allclose(jax.jit(diffusion.q_sample)(s, X, t, N), eager, rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_array_equal(eager[-1], X[-1])  # t = 0: x_0 itself


def test_step_with_ema_trains(key):
    # 2-D points near (1.5, -1): the noise-prediction loss falls and the EMA is the formula.
    # (train.run drives the same step, and make_evaluate, in tests/test_exp_diffusion.py;
    # here the step alone, jitted.)
    s = diffusion.linear_schedule(50)
    net = diffusion.denoiser(2, hidden=(32,), emb_dim=8)
    opt = optax.adam(3e-3)
    k_data, k_init, k_run = jax.random.split(key, 3)
    data = np.asarray(jnp.array([1.5, -1.0]) + 0.1 * jax.random.normal(k_data, (64, 2)))
    state = diffusion.init_state(net, opt, key=k_init)
    step = jax.jit(diffusion.make_step(net, opt, s, ema_decay=0.9))
    new, _ = step(state, data, k_run)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # noqa: E731
    jax.tree.map(lambda e, e0, p: close(e, 0.9 * e0 + 0.1 * p), new.ema, state.ema, new.params)
    losses = []
    for i in range(120):
        new, m = step(new, data, jax.random.fold_in(k_run, i))
        losses.append(float(m["loss"]))
    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:20])
    with pytest.raises(ValueError, match="batch"):
        step(new, data[:, :1], k_run)


def test_energy_distance():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 2)), rng.normal(size=(300, 2))
    shifted = b + np.array([1.0, 0.0])
    same, far = diffusion.energy_distance(a, b), diffusion.energy_distance(a, shifted)
    assert abs(same) < 0.02 and far > 0.3
    # 2 E|X - Y| - E|X - X'| - E|Y - Y'| on two points each, by hand
    X, Y = np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([[0.0, 3.0], [0.0, 4.0]])
    cross = np.mean([np.linalg.norm(x - y) for x in X for y in Y])
    assert np.isclose(diffusion.energy_distance(X, Y), 2 * cross - 1.0 - 1.0)
    with pytest.raises(ValueError, match="Y"):
        diffusion.energy_distance(a, np.ones((4, 3)))
