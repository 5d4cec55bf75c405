"""Generative adversarial networks (Goodfellow et al. 2014): two players in one training step.

A generator ``G`` maps noise ``z ~ N(0, I)`` to a sample ``G(z)``; a discriminator ``D``
maps a sample to a logit ``D(x)`` (the probability that ``x`` is real is
``sigmoid(D(x))``). Goodfellow et al.'s value function is

    V(D, G) = E_x[log sigmoid(D(x))] + E_z[log(1 - sigmoid(D(G(z))))]

which ``D`` maximises and ``G`` minimises. :func:`discriminator_loss` is ``-V`` (the
cross-entropy of "real" against "fake", in softplus form:
``-log sigmoid(a) = softplus(-a)``, ``-log(1 - sigmoid(a)) = softplus(a)``).
:func:`generator_loss` is by default the *non-saturating* loss of Goodfellow et al.
section 3, ``-E_z[log sigmoid(D(G(z)))]``: the same fixed point, but a strong gradient
when ``D`` rejects the fakes confidently, where the minimax ``E_z[log(1 - sigmoid(D(G(z))))]``
saturates (``kind="minimax"``).

:func:`make_step` returns ``step(state, batch, key) -> (state, metrics)`` for
:func:`train.run`: one (or ``d_steps``) Adam/SGD step of ``D`` on a real batch and fresh
fakes, then one step of ``G`` against the UPDATED ``D`` with fresh noise, all in one
compiled program. The state is a :class:`GANState` (both players' parameters and optax
states). ``pack > 1`` is PacGAN (Lin et al. 2018): ``D`` judges ``pack`` samples
concatenated, all real or all fake, so a generator that puts its samples on few modes
produces packs that look unlike real ones: a remedy for mode collapse that changes only
the discriminator's input.

Players are :class:`nets.model.Model` s composed from :mod:`nets.layers`
(:func:`mlp_player`); a sample is ONE example, batches come from ``jax.vmap``.

Mode metrics for a mixture of Gaussians (the ring of 8 Gaussians of Metz et al. 2017,
section 3.1: radius 2, standard deviation 0.02): :func:`ring_centres`, :func:`ring_data`
and :func:`mode_metrics` (each sample's nearest mode; a sample is *high quality* when it
is within 3 standard deviations of that mode, as in Srivastava et al. 2017 (VEEGAN) and Lin
et al. 2018; a mode is *covered* when it holds at least ``min_share`` of its fair share of
the high-quality samples).

>>> import jax.numpy as jnp, optax
>>> g = mlp_player((16,), n_in=2, n_out=2)                      # noise (2,) -> sample (2,)
>>> d = mlp_player((16,), n_in=2, n_out=1)                      # sample (2,) -> logit (1,)
>>> step = make_step(g, d, optax.adam(1e-3), optax.adam(1e-3))  # for train.run
>>> round(float(discriminator_loss(jnp.zeros(4), jnp.zeros(4))), 4)  # 2 log 2 at D = 1/2
1.3863
>>> m = mode_metrics(ring_centres() + 0.05, ring_centres(), std=0.02)  # 3.5 sd off: poor
>>> m["modes_covered"], m["high_quality"]
(0, 0.0)
>>> mode_metrics(ring_centres()[:2] + 0.01, ring_centres(), std=0.02)["modes_covered"]
2

References:
  Goodfellow, Pouget-Abadie, Mirza, Xu, Warde-Farley, Ozair, Courville & Bengio, Generative
  Adversarial Nets, NeurIPS 2014, https://arxiv.org/abs/1406.2661 (eq. 1, section 3).
  Metz, Poole, Pfau & Sohl-Dickstein, Unrolled Generative Adversarial Networks, ICLR 2017,
  https://arxiv.org/abs/1611.02163 (section 3.1, the ring of 8 Gaussians).
  Lin, Khetan, Fanti & Oh, PacGAN: The power of two samples in generative adversarial
  networks, NeurIPS 2018, https://arxiv.org/abs/1712.04086 (packing; the mode metrics).
  Srivastava, Valkov, Russell, Gutmann & Sutton, VEEGAN, NeurIPS 2017,
  https://arxiv.org/abs/1705.07761 (high-quality samples within 3 standard deviations).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nets import _checks
from nets import layers as L
from nets.model import Model

GENERATOR_LOSSES = ("non_saturating", "minimax")


class GANState(NamedTuple):
    """The two players' state, carried by :func:`train.run`."""

    g: Any  # generator parameters (the Model's params pytree)
    d: Any  # discriminator parameters
    opt_g: Any  # the generator optimizer's state
    opt_d: Any  # the discriminator optimizer's state


def mlp_player(hidden, *, n_in: int, n_out: int, activation: str = "relu") -> Model:
    """An MLP ``(n_in,) -> (n_out,)`` from :mod:`nets.layers`: ``Dense(h) -> g`` for each
    ``h`` in ``hidden``, then ``Dense(n_out)``; output ``"identity"`` (a generator's sample or
    a discriminator's logit; :func:`discriminator_loss` applies the sigmoid itself)."""
    if not isinstance(hidden, (tuple, list)) or any(
            isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"hidden: mlp_player expected a tuple of positive ints, got {hidden!r}")
    _checks.check_int(n_in, "n_in", 1)
    _checks.check_int(n_out, "n_out", 1)
    layers = []
    for h in hidden:
        layers += [L.Dense(h, init="he" if activation == "relu" else "glorot"),
                   L.Activation(activation)]
    return Model(L.serial(*layers, L.Dense(n_out)), input_shape=(n_in,), output="identity")


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """``-V(D, G)``: ``mean softplus(-D(x)) + mean softplus(D(G(z)))`` (Goodfellow et al.
    eq. 1, negated, ``-log sigmoid(a) = softplus(-a)``). Logits of any shapes; a scalar."""
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def generator_loss(fake_logits: jax.Array, kind: str = "non_saturating") -> jax.Array:
    """``"non_saturating"``: ``-mean log sigmoid(D(G(z))) = mean softplus(-D(G(z)))``
    (Goodfellow et al. section 3); ``"minimax"``: ``mean log(1 - sigmoid(D(G(z)))) =
    -mean softplus(D(G(z)))``, the value function's own term, whose gradient vanishes where
    ``D`` rejects the fakes."""
    if kind == "non_saturating":
        return jnp.mean(jax.nn.softplus(-fake_logits))
    if kind == "minimax":
        return -jnp.mean(jax.nn.softplus(fake_logits))
    raise ValueError(f"kind: expected one of {GENERATOR_LOSSES}, got {kind!r}")


def _check_players(generator, discriminator, pack: int):
    for name, m in (("generator", generator), ("discriminator", discriminator)):
        if not isinstance(m, Model):
            raise TypeError(f"{name}: expected a nets.Model, got {type(m).__name__}")
        if len(m.input_shape) != 1 or len(m.output_shape) != 1:
            raise ValueError(f"{name}: expected vector inputs and outputs, got "
                             f"{m.input_shape} -> {m.output_shape}")
    d_in = discriminator.input_shape[0]
    data = generator.output_shape[0]
    if discriminator.output_shape != (1,):
        raise ValueError(f"discriminator: expected one output logit, got output shape "
                         f"{discriminator.output_shape}")
    if d_in != pack * data:
        raise ValueError(f"discriminator: expected input shape ({pack * data},) = pack {pack} "
                         f"x the generator's samples ({data},), got {discriminator.input_shape}")


def init(generator: Model, discriminator: Model, g_optimizer, d_optimizer, *,
         key: jax.Array) -> GANState:
    """Both players' parameters (from ``key``) and optimizer states."""
    _checks.check_key(key, "key")
    kg, kd = jax.random.split(key)
    g, _ = generator.init(kg)
    d, _ = discriminator.init(kd)
    return GANState(g=g, d=d, opt_g=g_optimizer.init(g), opt_d=d_optimizer.init(d))


def sample(generator: Model, params, n: int, *, key: jax.Array) -> jax.Array:
    """``n`` samples ``G(z)``, ``z ~ N(0, I)``: shape ``(n, *generator.output_shape)``."""
    _checks.check_int(n, "n", 1)
    z = jax.random.normal(key, (n, *generator.input_shape))
    return generator.batch_apply(params, z)[0]


def _packed(x: jax.Array, pack: int) -> jax.Array:
    """``(b, d) -> (b // pack, pack * d)``: consecutive samples side by side."""
    return x.reshape(x.shape[0] // pack, pack * x.shape[1])


def make_step(generator: Model, discriminator: Model, g_optimizer, d_optimizer, *,
              loss: str = "non_saturating", d_steps: int = 1, pack: int = 1):
    """``step(state, batch, key) -> (state, metrics)`` for :func:`train.run`.

    Args:
      generator: a :class:`nets.Model` ``(latent,) -> (data,)``, output ``"identity"``.
      discriminator: a Model ``(pack * data,) -> (1,)`` returning a logit.
      g_optimizer, d_optimizer: optax transformations (the ones :func:`init` used).
      loss: the generator's loss, ``"non_saturating"`` or ``"minimax"``.
      d_steps: discriminator steps per generator step (each on the same real batch, fresh
        fakes).
      pack: PacGAN's packing degree (1: a plain GAN); the batch size must be a multiple.

    The step: ``d_steps`` times ``d <- d - update(grad_d discriminator_loss)`` on the real
    ``batch`` (shape ``(b, data)``) and ``b`` fresh fakes; then one
    ``g <- g - update(grad_g generator_loss)`` on ``b`` fresh fakes scored by the updated
    ``D``. Metrics (batch means): ``d_loss``, ``g_loss``, ``d_real`` (mean
    ``sigmoid(D(x))``) and ``d_fake`` (mean ``sigmoid(D(G(z)))``), from the last D step.
    """
    _checks.check_int(pack, "pack", 1)
    _checks.check_int(d_steps, "d_steps", 1)
    if loss not in GENERATOR_LOSSES:
        raise ValueError(f"loss: expected one of {GENERATOR_LOSSES}, got {loss!r}")
    _check_players(generator, discriminator, pack)
    latent = generator.input_shape

    def fakes(g, n, key):
        z = jax.random.normal(key, (n, *latent))  # z ~ N(0, I), (n, latent)
        return jax.vmap(lambda z: generator.apply(g, z))(z)  # G(z), (n, data)

    def logits(d, x):  # (b, data) -> (b // pack,) logits of the packs
        return jax.vmap(lambda v: discriminator.apply(d, v)[0])(_packed(x, pack))

    def step(state: GANState, batch, key):
        if not hasattr(batch, "ndim"):
            hint = ("; the GAN trains on X alone: pass X, not (X, y)"
                    if isinstance(batch, (tuple, list)) and len(batch) == 2 else "")
            raise TypeError(f"batch: expected an array of shape (b, "
                            f"{generator.output_shape[0]}), got a {type(batch).__name__}{hint}")
        b = batch.shape[0]
        if batch.ndim != 2 or batch.shape[1] != generator.output_shape[0] or b % pack:
            raise ValueError(f"batch: expected shape (b, {generator.output_shape[0]}) with b "
                             f"a multiple of pack={pack}, got {batch.shape}")
        keys = jax.random.split(key, d_steps + 1)
        fake_g = jax.lax.stop_gradient  # D's step does not differentiate through G

        def d_objective(d, k):
            real, fake = logits(d, batch), logits(d, fake_g(fakes(state.g, b, k)))
            return discriminator_loss(real, fake), (jax.nn.sigmoid(real).mean(),
                                                    jax.nn.sigmoid(fake).mean())

        d, opt_d = state.d, state.opt_d
        for i in range(d_steps):
            (d_loss, (d_real, d_fake)), grad = jax.value_and_grad(d_objective, has_aux=True)(
                d, keys[i])
            updates, opt_d = d_optimizer.update(grad, opt_d, d)
            d = optax.apply_updates(d, updates)

        g_loss, grad = jax.value_and_grad(
            lambda g: generator_loss(logits(d, fakes(g, b, keys[-1])), loss))(state.g)
        updates, opt_g = g_optimizer.update(grad, state.opt_g, state.g)
        g = optax.apply_updates(state.g, updates)
        return (GANState(g=g, d=d, opt_g=opt_g, opt_d=opt_d),
                {"d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake})

    return step


# ---------------------------------------------------------------------------------------
# The ring of Gaussians and its mode metrics


def ring_centres(n_modes: int = 8, radius: float = 2.0) -> np.ndarray:
    """``(n_modes, 2)`` centres ``radius (cos 2 pi k / n, sin 2 pi k / n)``."""
    _checks.check_int(n_modes, "n_modes", 1)
    _checks.check_real(radius, "radius", minimum=0, strict=True)
    angle = 2 * np.pi * np.arange(n_modes) / n_modes
    return radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)


def ring_data(key: jax.Array, n: int, *, n_modes: int = 8, radius: float = 2.0,
              std: float = 0.02) -> np.ndarray:
    """``n`` draws ``(n, 2)`` (float32) from the equal mixture of ``N(c_k, std^2 I)`` over
    the :func:`ring_centres` (Metz et al. 2017: 8 modes, radius 2, std 0.02), by NumPy's
    generator seeded with the key's data (host-side data, nothing to compile)."""
    _checks.check_key(key, "key")
    _checks.check_int(n, "n", 1)
    _checks.check_real(std, "std", minimum=0, strict=True)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))  # seeded by the key
    which = rng.integers(0, n_modes, n)
    x = ring_centres(n_modes, radius)[which] + std * rng.standard_normal((n, 2))
    return x.astype(np.float32)


def mode_metrics(samples, centres, std: float, *, min_share: float = 0.2) -> dict:
    """Mode coverage and sample quality of ``samples`` ``(n, d)`` against a mixture with
    modes ``centres`` ``(K, d)`` and per-coordinate standard deviation ``std`` (NumPy, on
    the host).

    Returns a dict: ``high_quality`` (the share of samples within ``3 std`` of their nearest
    mode), ``modes_covered`` (modes holding at least ``min_share * n_hq / K`` of the
    ``n_hq`` high-quality samples, and at least one), ``counts`` (high-quality samples per
    mode, a list) and ``mode_share`` (each mode's share of the high-quality samples).
    """
    x = _checks.as_finite_array(samples, "samples", ndim=2)
    c = _checks.as_finite_array(centres, "centres", ndim=2)
    if x.shape[1] != c.shape[1]:
        raise ValueError(f"samples: expected points of dimension {c.shape[1]} like centres, "
                         f"got shape {x.shape}")
    _checks.check_real(std, "std", minimum=0, strict=True)
    _checks.check_real(min_share, "min_share", minimum=0)
    dist = np.linalg.norm(x[:, None, :] - c[None, :, :], axis=-1)  # (n, K)
    nearest = dist.argmin(1)
    good = dist[np.arange(len(x)), nearest] <= 3 * std
    counts = np.bincount(nearest[good], minlength=len(c))
    n_hq = int(good.sum())
    covered = int(np.sum((counts >= max(1.0, min_share * n_hq / len(c))))) if n_hq else 0
    return {"high_quality": float(good.mean()), "modes_covered": covered,
            "counts": [int(k) for k in counts],
            "mode_share": [float(k / n_hq) if n_hq else 0.0 for k in counts]}


__all__ = ["GANState", "GENERATOR_LOSSES", "mlp_player", "discriminator_loss",
           "generator_loss", "init", "sample", "make_step", "ring_centres", "ring_data",
           "mode_metrics"]
