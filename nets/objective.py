"""The penalized objective of the note (CASI eq. 18.6):

    minimize_W  (1/n) sum_i L[y_i, f(x_i; W)]  +  sum_j lambda_j J_j(W).

:func:`mlp_objective` is the MLP's; :func:`make` builds the same objective for any model
``apply(params, x) -> z`` of :mod:`nets` (one example), so every architecture shares it.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from nets import losses as _losses
from nets import mlp as _mlp
from nets import penalties as _penalties


def mean_loss(apply_fn: Callable, params, X, Y, loss="cross_entropy") -> jax.Array:
    """``(1/n) sum_i L[y_i, apply_fn(params, x_i)]`` over a batch ``X`` of shape ``(n, ...)``."""
    loss = _losses.get(loss)
    Z = jax.vmap(apply_fn, in_axes=(None, 0))(params, X)
    return jnp.mean(jax.vmap(loss.fn)(Z, Y))


def make(apply_fn: Callable, loss="cross_entropy", penalties=None) -> Callable:
    """``objective(params, X, Y)``: the mean loss of ``apply_fn`` plus the penalty terms.

    ``penalties`` is a spec for :func:`nets.penalties.terms` (e.g. ``{"l2": 1e-3}``).
    """
    loss = _losses.get(loss)
    terms = _penalties.terms(penalties)

    def objective(params, X, Y):
        return mean_loss(apply_fn, params, X, Y, loss) + _penalties.total(params, terms)

    return objective


def mlp_objective(params, X, Y, *, activation="sigmoid", loss="cross_entropy", l2=0.0,
                  penalties=None) -> jax.Array:
    """The MLP's objective; ``l2=lam`` adds ``lam * (1/2) sum ||W||^2`` (the note's penalty).

    >>> import jax, jax.numpy as jnp
    >>> params = _mlp.init(jax.random.key(0), (4, 3, 2))
    >>> float(mlp_objective(params, jnp.zeros((5, 4)), jnp.zeros(5, int), l2=0.0)) > 0
    True
    """
    spec = _penalties.terms(penalties) + ([(_penalties.get("l2"), l2)] if _is_nonzero(l2) else [])

    def apply_fn(p, x):
        return _mlp.apply(p, x, activation=activation)

    return make(apply_fn, loss, spec)(params, X, Y)


def _is_nonzero(lam) -> bool:
    return not (isinstance(lam, (int, float)) and lam == 0)
