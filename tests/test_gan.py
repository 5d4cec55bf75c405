"""nets.gan: the losses against Goodfellow et al.'s formulas (and the non-saturating loss's
gradient where the minimax one vanishes); the ring data and its mode metrics; bad players
refused before compiling; the two-player step (packed) trains through train.run."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nets import gan


def test_losses_are_goodfellow_et_al():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=7) * 3, rng.normal(size=5) * 3
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    want_d = -np.mean(np.log(sig(real))) - np.mean(np.log(1 - sig(fake)))
    np.testing.assert_allclose(gan.discriminator_loss(real, fake), want_d, rtol=1e-6)
    np.testing.assert_allclose(gan.generator_loss(fake), -np.mean(np.log(sig(fake))),
                               rtol=1e-6)
    np.testing.assert_allclose(gan.generator_loss(fake, "minimax"),
                               np.mean(np.log(1 - sig(fake))), rtol=1e-6)
    # D rejects the fakes confidently (logit -8): the minimax loss's gradient vanishes
    # (sigmoid(-8) = 3e-4 per sample), the non-saturating one's does not (1 - 3e-4)
    g_ns = jax.grad(gan.generator_loss)(jnp.full(4, -8.0))
    g_mm = jax.grad(lambda f: gan.generator_loss(f, "minimax"))(jnp.full(4, -8.0))
    np.testing.assert_allclose(g_ns * 4, -(1 - 1 / (1 + np.exp(8))), rtol=1e-5)
    np.testing.assert_allclose(g_mm * 4, -1 / (1 + np.exp(8)), rtol=1e-4)
    with pytest.raises(ValueError, match="kind"):
        gan.generator_loss(fake, "wasserstein")


def test_ring_data_and_mode_metrics(key):
    c = gan.ring_centres(8, 2.0)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 2.0)
    x = gan.ring_data(key, 4000)
    m = gan.mode_metrics(x, c, 0.02)
    assert x.shape == (4000, 2) and x.dtype == np.float32
    assert m["modes_covered"] == 8 and m["high_quality"] > 0.98  # 3 sd in 2-D: 98.9%
    assert abs(max(m["mode_share"]) - 1 / 8) < 0.03
    # all on two modes: 2 covered; half of them 5 sd away: high quality 1/2
    two = np.repeat(c[:2], 50, axis=0)
    assert gan.mode_metrics(two, c, 0.02)["modes_covered"] == 2
    off = two + np.where(np.arange(100)[:, None] % 2, 0.1, 0.0)
    m = gan.mode_metrics(off, c, 0.02)
    assert m["high_quality"] == 0.5 and m["counts"][:3] == [25, 25, 0]
    # a mode with 2 stray samples of 100 is not covered (1/5 of a fair share is 2.5)
    stray = np.concatenate([np.repeat(c[:1], 98, axis=0), np.repeat(c[1:2], 2, axis=0)])
    assert gan.mode_metrics(stray, c, 0.02)["modes_covered"] == 1
    with pytest.raises(ValueError, match="samples"):
        gan.mode_metrics(np.ones((5, 3)), c, 0.02)


def test_bad_players_are_refused_before_compiling():
    g = gan.mlp_player((4,), n_in=3, n_out=2)
    d = gan.mlp_player((4,), n_in=2, n_out=1)
    opt = optax.sgd(0.1)
    with pytest.raises(ValueError, match="pack 2"):
        gan.make_step(g, d, opt, opt, pack=2)
    with pytest.raises(ValueError, match="one output logit"):
        gan.make_step(g, gan.mlp_player((4,), n_in=2, n_out=2), opt, opt)
    with pytest.raises(ValueError, match="loss"):
        gan.make_step(g, d, opt, opt, loss="hinge")
    with pytest.raises(TypeError, match="nets.Model"):
        gan.make_step(g.layer, d, opt, opt)
    with pytest.raises(ValueError, match="hidden"):
        gan.mlp_player((0,), n_in=2, n_out=2)


def test_packed_two_player_step_trains(key):
    # data N((2, -1), 0.1^2 I); the generator starts near 0 and must move there. PacGAN's
    # packing (pack 2) and two discriminator steps per generator step exercise the options.
    # (train.run drives the same step in tests/test_exp_gan.py; here the step alone, jitted.)
    k_data, k_init, k_run, k_eval = jax.random.split(key, 4)
    target = np.array([2.0, -1.0], np.float32)
    data = target + 0.1 * np.asarray(jax.random.normal(k_data, (64, 2)))
    g = gan.mlp_player((16,), n_in=2, n_out=2)
    d = gan.mlp_player((16,), n_in=4, n_out=1)
    opt = optax.adam(3e-3, b1=0.5)
    state = gan.init(g, d, opt, opt, key=k_init)
    step = jax.jit(gan.make_step(g, d, opt, opt, pack=2, d_steps=2))
    z = jax.random.normal(k_eval, (256, 2))
    draw = lambda p: np.asarray(jax.vmap(lambda z: g.apply(p, z))(z))  # noqa: E731
    before = draw(state.g)
    for i in range(150):
        state, m = step(state, data, jax.random.fold_in(k_run, i))
    assert set(m) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(np.isfinite(float(v)) for v in m.values())
    far, near = (np.linalg.norm(x.mean(0) - target) for x in (before, draw(state.g)))
    assert near < 0.3 * far, (far, near)
    with pytest.raises(ValueError, match="multiple of pack=2"):
        step(state, data[:63], k_run)
