"""Penalties ``J(W)`` on the weights (never the biases), each with its gradient.

A leaf of a parameter pytree counts as a *weight* when it has two or more axes (matrices,
convolution kernels); vectors (biases, normalisation scales) are not penalised. For the MLP
these are exactly the ``W`` matrices. :func:`weight_mask` gives that choice as a boolean
pytree (the ``mask`` optax's ``add_decayed_weights`` takes).

- ``l2``: ``J = 1/2 sum W^2`` (CASI section 18.2): its gradient is ``W``, so a gradient
  step on ``L + lambda J`` is the note's ``W <- W - alpha (dW + lambda W)``.
  ESL (eq. 11.16) writes ``J = sum W^2`` on a summed loss: ``lambda_ESL = lambda n / 2``.
- ``l1``: ``J = sum |W|`` (subgradient ``sign(W)``, 0 at 0).
- ``weight_elimination``: ``J = sum W^2 / (1 + W^2)`` (ESL eq. 11.17).

>>> import jax.numpy as jnp
>>> params = [{"W": jnp.array([[3.0, -4.0]]), "b": jnp.array([10.0])}]
>>> float(l2(params)), float(l1(params))
(12.5, 7.0)
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp


def weight_mask(params):
    """Boolean pytree: ``True`` on weights (leaves with ``ndim >= 2``), ``False`` elsewhere."""
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def _sum_over_weights(f, params):
    leaves = [f(p) for p in jax.tree.leaves(params) if jnp.ndim(p) >= 2]
    return sum(jnp.sum(leaf) for leaf in leaves) if leaves else jnp.zeros(())


def _grad_over_weights(g, params):
    return jax.tree.map(lambda p: g(p) if jnp.ndim(p) >= 2 else jnp.zeros_like(p), params)


def l2(params) -> jax.Array:
    """``1/2 sum ||W||^2`` over the weights."""
    return _sum_over_weights(lambda W: 0.5 * W**2, params)


def l1(params) -> jax.Array:
    """``sum |W|`` over the weights."""
    return _sum_over_weights(jnp.abs, params)


def weight_elimination(params) -> jax.Array:
    """``sum W^2 / (1 + W^2)`` over the weights (ESL eq. 11.17)."""
    return _sum_over_weights(lambda W: W**2 / (1.0 + W**2), params)


class Penalty(NamedTuple):
    """A penalty ``J(params)`` and its hand-derived gradient ``dJ/dparams`` (a pytree)."""

    name: str
    fn: Callable
    grad: Callable


PENALTIES: dict[str, Penalty] = {
    "l2": Penalty("l2", l2, lambda p: _grad_over_weights(lambda W: W, p)),
    "l1": Penalty("l1", l1, lambda p: _grad_over_weights(jnp.sign, p)),
    "weight_elimination": Penalty(
        "weight_elimination", weight_elimination,
        lambda p: _grad_over_weights(lambda W: 2.0 * W / (1.0 + W**2) ** 2, p)),
}


def get(penalty: str | Penalty) -> Penalty:
    """Look up a penalty by name; raise ``ValueError`` listing the valid names."""
    if isinstance(penalty, Penalty):
        return penalty
    if not isinstance(penalty, str) or penalty not in PENALTIES:
        raise ValueError(f"penalties: expected names in {sorted(PENALTIES)}, got {penalty!r}")
    return PENALTIES[penalty]


def terms(penalties: Mapping[str, float] | Sequence | None) -> list[tuple[Penalty, float]]:
    """Normalise a penalty spec to ``[(Penalty, lambda), ...]``.

    Accepts ``None``, a mapping ``{"l2": 1e-3, "l1": 1e-4}``, or a sequence of
    ``(penalty, lambda)`` pairs whose ``penalty`` is a name or a :class:`Penalty`. A lambda
    may be a traced array (sweeps); a concrete one must be finite and ``>= 0``.
    """
    if penalties is None:
        return []
    items = penalties.items() if isinstance(penalties, Mapping) else penalties
    out = []
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(
                f"penalties: expected (name, lambda) pairs or a dict name -> lambda, got {item!r}")
        penalty, lam = get(item[0]), item[1]
        if isinstance(lam, (int, float)) and not (lam >= 0 and lam < float("inf")):
            raise ValueError(
                f"penalties[{penalty.name!r}]: expected a finite lambda >= 0, got {lam!r}")
        out.append((penalty, lam))
    return out


def total(params, penalties) -> jax.Array:
    """``sum_j lambda_j J_j(params)`` for a penalty spec accepted by :func:`terms`."""
    return sum((lam * p.fn(params) for p, lam in terms(penalties)), jnp.zeros(()))
