"""Denoising diffusion probabilistic models (DDPM, Ho, Jain & Abbeel 2020).

**Forward process** (Ho et al. eq. 2). ``T`` steps of Gaussian noising with variances
``beta_1 .. beta_T``:

    q(x_t | x_{t-1}) = N(x_t; sqrt(1 - beta_t) x_{t-1}, beta_t I)

so that, with ``alpha_t = 1 - beta_t`` and ``alpha_bar_t = prod_{s=1..t} alpha_s``, the
marginal has the closed form (eq. 4)

    q(x_t | x_0) = N(x_t; sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)

(:func:`q_sample`). Ho et al.'s *linear schedule* (section 4): ``beta_t`` linear from
``1e-4`` to ``0.02`` over ``T = 1000`` steps, which leaves ``alpha_bar_T = 4.04e-5``: x_T
is noise up to a factor of 0.006 of the data (:func:`linear_schedule`). A
:class:`Schedule` holds arrays of length ``T + 1`` indexed by the paper's ``t``: entry 0 is
``t = 0`` (``beta_0 = 0``, ``alpha_bar_0 = 1``), entry ``t`` is step ``t``.

**Loss** (eq. 14, ``L_simple``). A network ``eps_theta(x_t, t)`` predicts the noise:
``E_{t, x_0, eps} ||eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t)||^2``
with ``t`` uniform on ``{1, ..., T}`` and ``eps ~ N(0, I)`` (:func:`loss`; here the
squared error is averaged over the coordinates as well as the batch).

**Ancestral sampling** (Algorithm 2). ``x_T ~ N(0, I)``; for ``t = T, ..., 1``:

    x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) / sqrt(alpha_t) + sigma_t z

with ``z ~ N(0, I)`` for ``t > 1`` and ``z = 0`` at ``t = 1``, ``sigma_t^2 = beta_t`` (one
of Ho et al.'s two choices). :func:`sample` runs it as ONE ``jax.lax.scan`` over ``t``,
compiled once per model, and can keep ``x_t`` at chosen steps (the reverse process).

**Denoiser.** :func:`denoiser` is an MLP from :mod:`nets.layers` on the concatenation of
``x_t`` and a sinusoidal embedding of ``t`` (:func:`time_embedding`, the Transformer's
positional encoding, as Ho et al. use for their U-Net).

**Training** through :func:`train.run`'s step form: :func:`make_step` returns
``step(state, batch, key)`` that takes an optax step on the loss and updates an
exponential moving average of the parameters (Ho et al. sample with an EMA, decay 0.9999),
all in the step; :func:`make_evaluate` scores the EMA parameters on held-out data.
:func:`energy_distance` compares samples with held-out data (Szekely & Rizzo 2013).

>>> import jax, jax.numpy as jnp
>>> s = linear_schedule()
>>> s.T, round(float(s.alpha_bars[-1]) * 1e5, 3)
(1000, 4.036)
>>> x0 = jnp.ones((3, 2))
>>> x_T = q_sample(s, x0, jnp.array([1000, 1000, 1000]), jnp.zeros((3, 2)))  # sqrt(abar_T) x0
>>> round(float(x_T[0, 0]), 4)
0.0064

References:
  Ho, Jain & Abbeel, Denoising Diffusion Probabilistic Models, NeurIPS 2020,
  https://arxiv.org/abs/2006.11239 (eqs. 2, 4, 11, 14; Algorithms 1 and 2; section 4).
  Sohl-Dickstein, Weiss, Maheswaranathan & Ganguli, Deep Unsupervised Learning using
  Nonequilibrium Thermodynamics, ICML 2015, https://arxiv.org/abs/1503.03585 .
  Vaswani et al., Attention Is All You Need, 2017, https://arxiv.org/abs/1706.03762
  (section 3.5, the sinusoidal embedding). Szekely & Rizzo, Energy statistics: A class of
  statistics based on distances, J. Stat. Plan. Inference 143 (2013).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nets import _checks
from nets import layers as L
from nets.model import Model


class Schedule(NamedTuple):
    """The noise schedule, arrays of shape ``(T + 1,)`` indexed by the paper's ``t``."""

    betas: jax.Array  # (T + 1,) beta_t; betas[0] = 0
    alphas: jax.Array  # (T + 1,) alpha_t = 1 - beta_t; alphas[0] = 1
    alpha_bars: jax.Array  # (T + 1,) alpha_bar_t = prod_{s <= t} alpha_s; alpha_bars[0] = 1

    @property
    def T(self) -> int:
        """The number of diffusion steps."""
        return int(self.betas.shape[0]) - 1


def linear_schedule(T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02,
                    dtype=jnp.float32) -> Schedule:
    """Ho et al.'s linear schedule: ``beta_t`` linear from ``beta_1`` (t = 1) to ``beta_T``
    (t = T). ``alpha_bar`` is the cumulative product, computed in float64 and then cast to
    ``dtype``."""
    _checks.check_int(T, "T", 1)
    _checks.check_real(beta_1, "beta_1", minimum=0, strict=True, maximum=1)
    _checks.check_real(beta_T, "beta_T", minimum=0, strict=True, maximum=1)
    betas = np.concatenate([[0.0], np.linspace(beta_1, beta_T, T, dtype=np.float64)])
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    return Schedule(*(jnp.asarray(a, dtype) for a in (betas, alphas, abar)))


def _check_schedule(schedule) -> None:
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule: expected a nets.diffusion.Schedule (linear_schedule(...)), "
                        f"got {type(schedule).__name__}")


def _per_example(v: jax.Array, x: jax.Array) -> jax.Array:
    """``v`` (shape ``()`` or ``(n,)``) broadcast against ``x`` along its trailing axes."""
    v = jnp.asarray(v)
    return v.reshape(v.shape + (1,) * (jnp.ndim(x) - v.ndim))


def _check_t(t, T: int, x0) -> None:
    """``t``: integer steps, a scalar or one per example of ``x0``; concrete ones in
    ``[0, T]`` (a traced ``t`` is checked on its dtype and shape only)."""
    try:
        dtype = None if isinstance(t, bool) else (
            t.dtype if hasattr(t, "dtype") else np.asarray(t).dtype)
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
        got = (f"dtype {dtype}" if dtype is not None and hasattr(t, "dtype")
               else f"{type(t).__name__} {t!r}")
        raise TypeError(f"t: expected an int or integer steps in [0, {T}], got {got} (the "
                        f"paper's t indexes the schedule: pass integers)")
    shape, n = tuple(jnp.shape(t)), (jnp.shape(x0)[0] if jnp.ndim(x0) >= 2 else None)
    if shape != () and shape != (n,):
        want = "()" if n is None else f"() or ({n},), one step per example of x0"
        raise ValueError(f"t: expected shape {want}, got shape {shape}")
    if isinstance(t, jax.core.Tracer):
        return
    values = np.asarray(t)
    if values.size and (values.min() < 0 or values.max() > T):
        raise ValueError(f"t: expected steps in [0, T] = [0, {T}], got values in "
                         f"[{values.min()}, {values.max()}]")


def q_sample(schedule: Schedule, x0: jax.Array, t, noise: jax.Array) -> jax.Array:
    """``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise`` (Ho et al. eq. 4).

    ``x0`` one example or a batch ``(n, ...)``; ``t`` an int or an integer array of shape
    ``(n,)`` with values in ``[0, T]``; ``noise`` shaped like ``x0`` (``N(0, I)`` draws)."""
    _check_schedule(schedule)
    if jnp.shape(noise) != jnp.shape(x0):
        raise ValueError(f"noise: expected the shape of x0, {jnp.shape(x0)}, got "
                         f"{jnp.shape(noise)}")
    _check_t(t, schedule.T, x0)
    abar = _per_example(schedule.alpha_bars[t], x0)
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def time_embedding(t, dim: int, *, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal embedding ``[sin(t w_k), cos(t w_k)]_{k < dim/2}``, ``w_k =
    max_period^(-k / (dim/2))`` (Vaswani et al. section 3.5); ``t`` of shape ``s`` gives
    ``s + (dim,)``. ``dim`` must be even."""
    _checks.check_int(dim, "dim", 2)
    if dim % 2:
        raise ValueError(f"dim: time_embedding expected an even int (sin and cos halves), "
                         f"got {dim}")
    half = dim // 2
    w = jnp.exp(-jnp.log(max_period) * jnp.arange(half) / half)  # (dim/2,)
    angle = jnp.asarray(t, jnp.float32)[..., None] * w
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)


class Denoiser(NamedTuple):
    """``eps_theta``: an MLP :class:`nets.Model` on ``[x_t, time_embedding(t)]``."""

    model: Model  # input (data_dim + emb_dim,), output (data_dim,)
    data_dim: int
    emb_dim: int

    def init(self, key):
        """``(params, state)`` of the MLP (state is empty)."""
        return self.model.init(key)

    def apply(self, params, x: jax.Array, t) -> jax.Array:
        """``eps_theta(x_t, t)`` for ONE example ``x`` of shape ``(data_dim,)``."""
        return self.model.apply(params, jnp.concatenate([x, time_embedding(t, self.emb_dim)]))

    def batch_apply(self, params, X: jax.Array, t) -> jax.Array:
        """``eps_theta`` for a batch ``X`` ``(n, data_dim)``, ``t`` an int or ``(n,)``."""
        t = jnp.broadcast_to(jnp.asarray(t), (X.shape[0],))
        return jax.vmap(lambda x, s: self.apply(params, x, s))(X, t)


def denoiser(data_dim: int, hidden=(128, 128, 128), *, emb_dim: int = 32,
             activation: str = "relu") -> Denoiser:
    """The noise predictor ``eps_theta(x_t, t)``: ``Dense(h) -> g`` for each ``h`` in
    ``hidden``, then ``Dense(data_dim)``, on ``[x_t, time_embedding(t, emb_dim)]``."""
    _checks.check_int(data_dim, "data_dim", 1)
    _checks.check_int(emb_dim, "emb_dim", 2)
    if emb_dim % 2:
        raise ValueError(f"emb_dim: expected an even int (sin and cos halves), got {emb_dim}")
    if not isinstance(hidden, (tuple, list)) or any(
            isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"hidden: denoiser expected a tuple of positive ints, got {hidden!r}")
    layers = []
    for h in hidden:
        layers += [L.Dense(h), L.Activation(activation)]
    model = Model(L.serial(*layers, L.Dense(data_dim)), input_shape=(data_dim + emb_dim,),
                  output="identity")
    return Denoiser(model, data_dim, emb_dim)


def _check_denoiser(net) -> None:
    if not isinstance(net, Denoiser):
        raise TypeError(f"net: expected a nets.diffusion.Denoiser (denoiser(...)), got "
                        f"{type(net).__name__}")


def loss(net: Denoiser, params, x0: jax.Array, key: jax.Array, schedule: Schedule) -> jax.Array:
    """Ho et al.'s ``L_simple`` (eq. 14, Algorithm 1) on a batch ``x0`` ``(n, data_dim)``:
    ``t ~ U{1..T}``, ``eps ~ N(0, I)``, the mean over the batch and the coordinates of
    ``(eps - eps_theta(x_t, t))^2``."""
    kt, ke = jax.random.split(key)
    t = jax.random.randint(kt, (x0.shape[0],), 1, schedule.T + 1)
    eps = jax.random.normal(ke, x0.shape, x0.dtype)
    eps_hat = net.batch_apply(params, q_sample(schedule, x0, t, eps), t)
    return jnp.mean((eps - eps_hat) ** 2)


class DiffusionState(NamedTuple):
    """What :func:`make_step` carries through :func:`train.run`."""

    params: Any  # the denoiser's parameters, trained
    opt_state: Any  # the optimizer's state
    ema: Any  # exponential moving average of params (used for sampling and evaluation)


def init_state(net: Denoiser, optimizer, *, key: jax.Array) -> DiffusionState:
    """Fresh parameters from ``key``, the optimizer state, and the EMA equal to them."""
    _check_denoiser(net)
    _checks.check_key(key, "key")
    params, _ = net.init(key)
    return DiffusionState(params, optimizer.init(params), jax.tree.map(jnp.copy, params))


def _check_batch(batch, data_dim: int) -> None:
    """The step's ``batch``: an array ``(b, data_dim)`` (Python-level, before tracing on)."""
    if not hasattr(batch, "ndim"):
        hint = ("; the DDPM trains on X alone: pass X, not (X, y)"
                if isinstance(batch, (tuple, list)) and len(batch) == 2 else "")
        raise TypeError(f"batch: expected an array of shape (b, {data_dim}), got a "
                        f"{type(batch).__name__}{hint}")


def make_step(net: Denoiser, optimizer, schedule: Schedule, *, ema_decay: float = 0.999):
    """``step(state, batch, key) -> (state, {"loss"})`` for :func:`train.run`: one optax
    step on :func:`loss`, then ``ema <- ema_decay * ema + (1 - ema_decay) * params``."""
    _check_denoiser(net)
    _check_schedule(schedule)
    _checks.check_real(ema_decay, "ema_decay", minimum=0, maximum=1)

    def step(state: DiffusionState, batch, key):
        _check_batch(batch, net.data_dim)
        if batch.ndim != 2 or batch.shape[1] != net.data_dim:
            raise ValueError(f"batch: expected shape (b, {net.data_dim}), got {batch.shape}")
        value, grad = jax.value_and_grad(loss, argnums=1)(net, state.params, batch, key,
                                                          schedule)
        updates, opt_state = optimizer.update(grad, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema,
                           params)
        return DiffusionState(params, opt_state, ema), {"loss": value}

    return step


def make_evaluate(net: Denoiser, schedule: Schedule):
    """``evaluate(state, batch, key) -> {"loss"}``: :func:`loss` of the EMA parameters (the
    noise and the steps drawn from ``key``), for :func:`train.run`'s ``evaluate``."""
    _check_denoiser(net)
    _check_schedule(schedule)
    return lambda state, batch, key: {"loss": loss(net, state.ema, batch, key, schedule)}


def _reverse(net: Denoiser, params, schedule: Schedule, key, n: int, keep: tuple):
    """Algorithm 2 as one ``lax.scan`` over ``t = T .. 1``; keeps ``x_t`` for ``t`` in
    ``keep``."""
    T = schedule.T
    slots = np.full(T + 1, -1, np.int32)
    for i, t in enumerate(keep):
        slots[t] = i
    slots = jnp.asarray(slots)
    k0, k_steps = jax.random.split(key)
    x = jax.random.normal(k0, (n, net.data_dim))  # x_T ~ N(0, I)
    buf = jnp.zeros((max(len(keep), 1), n, net.data_dim), x.dtype)

    def record(buf, t, x):
        slot = slots[t]
        i = jnp.maximum(slot, 0)
        return buf.at[i].set(jnp.where(slot >= 0, x, buf[i]))

    def body(carry, t):
        x, buf = carry
        beta, alpha, abar = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]
        eps = net.batch_apply(params, x, t)  # eps_theta(x_t, t), (n, d)
        mean = (x - beta / jnp.sqrt(1.0 - abar) * eps) / jnp.sqrt(alpha)  # Algorithm 2, line 4
        z = jax.random.normal(jax.random.fold_in(k_steps, t), x.shape, x.dtype)
        x = mean + jnp.where(t > 1, jnp.sqrt(beta), 0.0) * z  # sigma_t^2 = beta_t, z = 0 at t=1
        return (x, record(buf, t - 1, x)), None

    (x, buf), _ = jax.lax.scan(body, (x, record(buf, T, x)), jnp.arange(T, 0, -1))
    return x, buf[:len(keep)]


@functools.lru_cache(maxsize=32)
def _compiled_reverse(net: Denoiser, n: int, keep: tuple):
    return jax.jit(lambda params, schedule, key: _reverse(net, params, schedule, key, n, keep))


def sample(net: Denoiser, params, schedule: Schedule, n: int, *, key: jax.Array,
           keep=()) -> tuple[jax.Array, jax.Array]:
    """``n`` ancestral samples (Algorithm 2): ``(x_0, kept)``, ``x_0`` of shape
    ``(n, data_dim)`` and ``kept`` ``(len(keep), n, data_dim)`` the states ``x_t`` for
    ``t`` in ``keep`` (values in ``[0, T]``; ``T`` is the starting noise, ``0`` the sample).
    Compiled once per (denoiser, ``n``, ``keep``); the schedule and parameters are traced."""
    _check_denoiser(net)
    _check_schedule(schedule)
    _checks.check_int(n, "n", 1)
    _checks.check_key(key, "key")
    keep = tuple(keep)
    for t in keep:
        _checks.check_int(t, "keep", 0, schedule.T, what=" (a step of the reverse process)")
    return _compiled_reverse(net, n, tuple(int(t) for t in keep))(params, schedule, key)


def energy_distance(X, Y) -> float:
    """The squared energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (Szekely & Rizzo
    2013) between samples ``X`` ``(n, d)`` and ``Y`` ``(m, d)``, in float64 on the host;
    the within-sample means leave out the pairs of a point with itself (U-statistics), so it
    is unbiased and near 0 (either sign) for two samples of one distribution."""
    X = _checks.as_finite_array(X, "X", ndim=2).astype(np.float64)
    Y = _checks.as_finite_array(Y, "Y", ndim=2).astype(np.float64)
    if X.shape[1] != Y.shape[1] or len(X) < 2 or len(Y) < 2:
        raise ValueError(f"Y: expected at least 2 points of the dimension of X, {X.shape[1]}; "
                         f"got X {X.shape}, Y {Y.shape}")

    def mean_dist(A, B, same):
        d = np.sqrt(np.maximum((A * A).sum(1)[:, None] + (B * B).sum(1)[None, :]
                               - 2 * A @ B.T, 0.0))
        if same:
            return (d.sum() - np.trace(d)) / (len(A) * (len(A) - 1))
        return d.mean()

    return float(2 * mean_dist(X, Y, False) - mean_dist(X, X, True) - mean_dist(Y, Y, True))


__all__ = ["Schedule", "linear_schedule", "q_sample", "time_embedding", "Denoiser",
           "denoiser", "loss", "DiffusionState", "init_state", "make_step", "make_evaluate",
           "sample", "energy_distance"]
