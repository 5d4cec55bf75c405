"""Adversarial examples: FGSM and PGD inside an L-inf ball and the valid input range.

The note: "Adversarial examples are inputs to neural networks that are designed to fool the
network. They are often created by applying small perturbations to regular inputs to cause
the network to misclassify the input, while the perturbations are imperceptible to humans."
Both attacks here look for such a perturbation ``delta`` of size ``||delta||_inf <= eps``
that raises the loss ``L(y, f(x + delta))``, keeping ``x + delta`` a valid input (pixels in
``[lo, hi]``):

* :func:`fgsm`, the fast gradient sign method (Goodfellow, Shlens & Szegedy 2015,
  arXiv:1412.6572): one step to the corner of the ball that a linear model of the loss
  rates highest, ``x_adv = clip(x + eps * sign(grad_x L), lo, hi)``.
* :func:`pgd`, projected gradient descent on the negative loss (Madry, Makelov, Schmidt,
  Tsipras & Vladu 2018, arXiv:1706.06083, eq. 2.1 and section 2.1): ``steps`` signed steps
  of size ``step_size``, each followed by :func:`project` back onto the set
  ``{x' : ||x' - x||_inf <= eps, lo <= x' <= hi}``, from ``x`` or from a uniform random
  point of the ball (``random_start=True``, with an explicit ``key``).

The attacked function is ``loss_of_x(x) -> scalar``, any differentiable function of the
input; :func:`input_loss` builds it for a :class:`nets.model.Model`, its parameters and the
true labels. ``x`` may be one example or a batch: when the examples do not interact (no
batch-norm statistics in train mode), row ``i`` of ``grad_x`` of the SUM of the examples'
losses is exactly the per-example gradient ``grad_{x_i} L(y_i, f(x_i))``, and a mean gives
the same signs, so one gradient call attacks every example at once. Only signs of the
gradient are used, so any positive scaling of the loss gives the same attack.

``eps`` and ``step_size`` may be traced (``jax.jit`` arguments, ``jax.vmap`` over an array of
radii: one compiled program sweeps every eps); ``steps`` and ``random_start`` are static
Python values. Arguments that are concrete are checked before anything is traced: a negative
or non-finite ``eps``, ``lo >= hi``, an ``x`` outside ``[lo, hi]``, a non-scalar loss, a
missing key. The returned example is wrapped in ``jax.lax.stop_gradient``: adversarial
training (Madry et al.) differentiates the loss at ``x_adv`` with respect to the
parameters with ``x_adv`` held fixed (Danskin's theorem), not through the attack.

>>> import jax.numpy as jnp
>>> w = jnp.array([1.0, -2.0, 0.0, 3.0])
>>> loss_of_x = lambda x: jnp.dot(w, x)  # grad_x = w, sign(w) = (1, -1, 0, 1)
>>> fgsm(loss_of_x, jnp.full(4, 0.5), 0.1, lo=0.0, hi=1.0)
Array([0.6, 0.4, 0.5, 0.6], dtype=float32)

References:
  Goodfellow, Shlens & Szegedy, *Explaining and harnessing adversarial examples*, ICLR 2015,
  https://arxiv.org/abs/1412.6572 (FGSM, section 4; adversarial training, section 6).
  Madry, Makelov, Schmidt, Tsipras & Vladu, *Towards deep learning models resistant to
  adversarial attacks*, ICLR 2018, https://arxiv.org/abs/1706.06083 (the saddle-point
  problem, eq. 2.1; PGD, section 2.1; random starts, section 3).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from nets import _checks
from nets import losses as _losses
from nets.model import Model

__all__ = ["fgsm", "pgd", "project", "input_loss", "default_step_size"]


# ---------------------------------------------------------------------------------------
# checks on concrete values (a traced value is checked for its shape only)


def _traced(value) -> bool:
    return isinstance(value, jax.core.Tracer)


def _check_x(x) -> jax.Array:
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        x = _checks.as_numeric(x, "x")
        dtype = x.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"x: expected a floating-point array (an input to differentiate), got "
                        f"dtype {dtype}" + ("; convert it, e.g. x.astype(jnp.float32)"
                                            if jnp.issubdtype(dtype, jnp.integer) else ""))
    if jnp.size(x) == 0:
        raise ValueError(f"x: expected a non-empty array, got shape {jnp.shape(x)}")
    return jnp.asarray(x)


def _check_scalar(value, name: str, what: str, *, positive: bool = False):
    """``value`` as a scalar: a concrete one must be finite and ``>= 0`` (``> 0``)."""
    if isinstance(value, (bool, np.bool_)) or value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name}: expected {what}, got {type(value).__name__} {value!r}")
    if jnp.ndim(value) != 0:
        raise ValueError(f"{name}: expected {what} (a scalar), got an array of shape "
                         f"{jnp.shape(value)}")
    if not _traced(value):
        _checks.check_real(value, name, minimum=0.0, strict=positive)
    return value


def _check_box(lo, hi):
    for name, v in (("lo", lo), ("hi", hi)):
        if isinstance(v, (bool, np.bool_)) or v is None or jnp.ndim(v) != 0:
            raise TypeError(f"{name}: expected a number (the smallest / largest valid input "
                            f"value, e.g. 0.0 and 1.0 for grey levels / 16), got {v!r}")
        if not _traced(v):
            _checks.check_real(v, name, finite=False)
    if not (_traced(lo) or _traced(hi)) and not float(lo) < float(hi):
        raise ValueError(f"lo, hi: expected lo < hi (the valid input range [lo, hi]), got "
                         f"lo={lo!r}, hi={hi!r}")


def _check_in_box(x, lo, hi) -> None:
    if _traced(x) or _traced(lo) or _traced(hi):
        return
    values = np.asarray(x)  # concrete: checked on the host, no program compiled
    xmin, xmax = float(values.min()), float(values.max())
    if not (np.isfinite(xmin) and np.isfinite(xmax)):
        raise ValueError("x: expected finite values, got NaN or infinity")
    if xmin < float(lo) or xmax > float(hi):
        hint = (f"; grey levels 0..{xmax:g}? scale x to [{lo}, {hi}] or pass hi={xmax:g}"
                if xmin >= 0 and xmax > float(hi) >= 1 else "")
        raise ValueError(f"x: expected values in [lo, hi] = [{lo}, {hi}] (the attack keeps "
                         f"inputs valid), got values in [{xmin:g}, {xmax:g}]{hint}")


def _check_loss(loss_of_x, x) -> None:
    if not callable(loss_of_x):
        raise TypeError(f"loss_of_x: expected a function loss_of_x(x) -> scalar loss, got "
                        f"{type(loss_of_x).__name__}")
    out = jax.eval_shape(loss_of_x, jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)))
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != () or not jnp.issubdtype(
            out.dtype, jnp.floating):
        got = (f"shape {out.shape} of dtype {out.dtype}" if isinstance(out, jax.ShapeDtypeStruct)
               else type(out).__name__)
        raise TypeError(f"loss_of_x: expected it to return a floating scalar (the sum or mean "
                        f"of the examples' losses), got {got}")


# ---------------------------------------------------------------------------------------
# the attacks


def project(x_adv: jax.Array, x: jax.Array, eps, *, lo, hi) -> jax.Array:
    """The Euclidean projection of ``x_adv`` onto the box
    ``{x' : ||x' - x||_inf <= eps} ∩ [lo, hi]^d``: a clip to
    ``[max(x - eps, lo), min(x + eps, hi)]``, elementwise. Shapes: ``x_adv`` and ``x``
    alike; the box is non-empty when ``lo <= x <= hi`` and ``eps >= 0``. The bounds are
    computed in ``x``'s dtype: ``fl(x + eps)`` may lie one unit in the last place past
    ``x + eps``, so ``|x_adv - x| <= eps`` holds to float rounding (in float32 with
    ``eps = 0.1``, up to 0.10000002)."""
    return jnp.clip(x_adv, jnp.maximum(x - eps, lo), jnp.minimum(x + eps, hi))


def fgsm(loss_of_x: Callable, x, eps, *, lo, hi) -> jax.Array:
    """The fast gradient sign method (Goodfellow et al. 2015, arXiv:1412.6572, section 4):

        x_adv = clip(x + eps * sign(grad_x loss_of_x(x)), lo, hi).

    Args:
      loss_of_x: ``loss_of_x(x) -> scalar``, the loss to raise (e.g. :func:`input_loss`).
      x: the clean input, one example or a batch, floating, every value in ``[lo, hi]``.
      eps: the L-inf radius ``>= 0`` (may be traced).
      lo, hi: the valid input range, ``lo < hi`` (e.g. ``0.0, 1.0`` for grey levels / 16).

    Returns:
      ``x_adv`` of ``x``'s shape and dtype, ``||x_adv - x||_inf <= eps`` (to float
      rounding: see :func:`project`), held fixed for differentiation (``stop_gradient``).
      A zero gradient entry leaves its input unchanged.
    """
    x = _check_x(x)
    eps = _check_scalar(eps, "eps", "a radius eps >= 0")
    _check_box(lo, hi)
    _check_in_box(x, lo, hi)
    _check_loss(loss_of_x, x)
    eps = jnp.asarray(eps, x.dtype)
    g = jax.grad(loss_of_x)(x)  # grad_x L, x's shape
    return jax.lax.stop_gradient(jnp.clip(x + eps * jnp.sign(g), lo, hi))


def default_step_size(eps, steps: int):
    """``2.5 * eps / steps``: the steps together travel 2.5 radii, enough to cross the ball
    from a random start to the far face and to change direction on the way (a common rule of
    thumb; Madry et al. travel 1.33 radii on MNIST, 40 steps of 0.01 at eps 0.3, and 1.75 on
    CIFAR-10, 7 steps of 2 at eps 8)."""
    return 2.5 * eps / steps


def pgd(loss_of_x: Callable, x, eps, *, steps: int, lo, hi, step_size=None,
        random_start: bool = False, key: jax.Array | None = None) -> jax.Array:
    """Projected gradient ascent on the loss in the L-inf ball (Madry et al. 2018,
    arXiv:1706.06083, section 2.1):

        x^0 = x                          (random_start=False)
        x^0 = P(x + U[-eps, eps]^d)      (random_start=True, uniform noise drawn from key)
        x^(t+1) = P(x^t + step_size * sign(grad_x loss_of_x(x^t))),   t = 0 .. steps - 1

    where ``P`` is :func:`project` onto ``{x' : ||x' - x||_inf <= eps} ∩ [lo, hi]^d``. One
    step from ``x`` with ``step_size = eps`` is :func:`fgsm`. The steps run in one
    ``jax.lax.fori_loop`` (``steps`` is static: a new value compiles a new program; ``eps``
    and ``step_size`` may be traced).

    Args:
      loss_of_x: ``loss_of_x(x) -> scalar``, the loss to raise (e.g. :func:`input_loss`).
      x: the clean input, one example or a batch, floating, every value in ``[lo, hi]``.
      eps: the L-inf radius ``>= 0`` (may be traced).
      steps: the number of projected steps, a Python int ``>= 1``.
      lo, hi: the valid input range, ``lo < hi``.
      step_size: the size of each signed step, ``> 0``; default
        :func:`default_step_size` ``= 2.5 * eps / steps`` (may be traced).
      random_start: start from a uniform random point of the ball (Madry et al.'s choice
        for training and evaluation) instead of ``x``; a static bool.
      key: a typed PRNG key (``jax.random.key``), required with ``random_start=True``
        and unused without it.

    Returns:
      ``x_adv`` of ``x``'s shape and dtype, inside the ball and ``[lo, hi]``, held fixed for
      differentiation (``stop_gradient``). The last iterate is returned, not the one of
      highest loss.
    """
    x = _check_x(x)
    eps = _check_scalar(eps, "eps", "a radius eps >= 0")
    steps = _checks.check_int(steps, "steps", 1, what=" (a static Python int)")
    if step_size is not None:
        step_size = _check_scalar(step_size, "step_size", "a step size > 0", positive=True)
    if not isinstance(random_start, (bool, np.bool_)):
        raise TypeError(f"random_start: expected a bool (static), got "
                        f"{type(random_start).__name__} {random_start!r}")
    if random_start:
        if key is None:
            raise ValueError("key: pgd with random_start=True draws its start from a PRNG key; "
                             "pass key=jax.random.key(seed), got None")
        _checks.check_key(key, "key")
    _check_box(lo, hi)
    _check_in_box(x, lo, hi)
    _check_loss(loss_of_x, x)

    eps = jnp.asarray(eps, x.dtype)
    alpha = jnp.asarray(default_step_size(eps, steps) if step_size is None else step_size,
                        x.dtype)
    grad = jax.grad(loss_of_x)
    x0 = x
    if random_start:
        noise = jax.random.uniform(key, jnp.shape(x), x.dtype, minval=-1.0, maxval=1.0)
        x0 = project(x + eps * noise, x, eps, lo=lo, hi=hi)

    def body(_, x_t):
        return project(x_t + alpha * jnp.sign(grad(x_t)), x, eps, lo=lo, hi=hi)

    # One step needs no loop (a straight-line program compiles faster than a while loop).
    x_adv = body(0, x0) if steps == 1 else jax.lax.fori_loop(0, steps, body, x0)
    return jax.lax.stop_gradient(x_adv)


# ---------------------------------------------------------------------------------------
# the loss of a model as a function of its inputs


def input_loss(model: Model, params, Y, *, loss="cross_entropy",
               model_state=None) -> Callable[[jax.Array], jax.Array]:
    """``loss_of_x(X) = sum_i L[y_i, f(x_i; params)]`` for a batch ``X`` of ``model``'s
    inputs, in evaluation mode (no dropout; batch-norm running statistics).

    The SUM over the batch, so that row ``i`` of ``grad_X`` is exactly the per-example
    gradient ``grad_{x_i} L(y_i, f(x_i))`` at its own scale (a mean divides it by ``n``;
    the signs, all the attacks use, are the same).

    Args:
      model: a :class:`nets.model.Model`; ``X`` has shape ``(n, *model.input_shape)``.
      params: its parameters (may be traced: inside a jitted training step).
      Y: the true targets of the ``n`` examples, e.g. integer labels ``(n,)``.
      loss: a name or :class:`nets.losses.Loss` (default the cross-entropy).
      model_state: the model's state (required for models with batch norm or dropout).

    Usage: ``fgsm(input_loss(model, params, y), X, eps, lo=0.0, hi=1.0)``.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a nets.model.Model, got {type(model).__name__} "
                        f"(for any other function write loss_of_x yourself)")
    loss = _losses.get(loss)
    n = jnp.shape(Y)[0] if jnp.ndim(Y) else None
    if n is None:
        raise ValueError(f"Y: expected the targets of a batch, shape (n, ...), got shape "
                         f"{jnp.shape(Y)}")

    def loss_of_x(X):
        if jnp.ndim(X) == 0 or jnp.shape(X)[0] != n:
            raise ValueError(f"X: expected a batch of the {n} examples Y labels, shape "
                             f"({n}, {', '.join(map(str, model.input_shape))}), got shape "
                             f"{jnp.shape(X)}")
        Z, _ = model.batch_apply(params, X, state=model_state, train=False)
        return jnp.sum(jax.vmap(loss.fn)(Z, Y))

    return loss_of_x
