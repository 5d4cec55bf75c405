"""Penalties ``J(W)`` on the weights (never the biases), each with its gradient.

A leaf of a parameter pytree counts as a *weight* when it has two or more axes (matrices,
convolution kernels); vectors (biases, normalisation scales) are not penalised. For the MLP
these are exactly the ``W`` matrices. :func:`weight_mask` gives that choice as a boolean
pytree (the ``mask`` optax's ``add_decayed_weights`` takes).

Stacked parameters (the result of :func:`train.sweep`, or of ``jax.vmap(init)(keys)``) carry
leading model axes, so a bias has two axes there: pass ``stacked=1`` (the number of leading
model axes) to :func:`weight_mask`, :func:`l2`, :func:`l1`, :func:`weight_elimination` and
:func:`total`. The penalties then return one value per model, of shape ``leaves.shape[:stacked]``.

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

from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _check_stacked(stacked, params) -> int:
    """``stacked`` as an int after checking it against every leaf's rank and leading shape."""
    if isinstance(stacked, bool) or not isinstance(stacked, (int, np.integer)) or stacked < 0:
        raise TypeError(f"stacked: expected the number of leading model axes, an int >= 0, got "
                        f"{stacked!r}")
    if stacked:
        leaves = jax.tree_util.tree_flatten_with_path(params)[0]
        lead = None
        for path, leaf in leaves:
            shape = jnp.shape(leaf)
            if len(shape) < stacked or (lead is not None and shape[:stacked] != lead[1]):
                want = (f"at least {stacked} axes" if len(shape) < stacked else
                        f"leading model axes {lead[1]} like params{lead[0]}")
                raise ValueError(f"params{jax.tree_util.keystr(path)}: expected {want} "
                                 f"(stacked={stacked}), got shape {shape}")
            if lead is None:
                lead = (jax.tree_util.keystr(path), shape[:stacked])
    return int(stacked)


def _leading_shape(params, stacked: int) -> tuple:
    leaves = jax.tree.leaves(params)
    return tuple(jnp.shape(leaves[0])[:stacked]) if stacked and leaves else ()


def _is_weight(p, stacked: int = 0) -> bool:
    return jnp.ndim(p) - stacked >= 2


def weight_mask(params, *, stacked: int = 0):
    """Boolean pytree: ``True`` on weights, ``False`` elsewhere.

    A weight is a leaf with two or more axes besides the ``stacked`` leading model axes
    (``ndim - stacked >= 2``). For stacked MLPs (``W: (m, n_out, n_in)``, ``b: (m, n_out)``)
    pass ``stacked=1``; as an optax mask, ``functools.partial(weight_mask, stacked=1)``.

    >>> import jax
    >>> from nets import mlp
    >>> stack = jax.vmap(lambda k: mlp.init(k, (4, 3, 2)))(jax.random.split(jax.random.key(0), 5))
    >>> weight_mask(stack, stacked=1)[0]
    {'W': True, 'b': False}
    """
    stacked = _check_stacked(stacked, params)
    return jax.tree.map(lambda p: _is_weight(p, stacked), params)


def _sum_over_weights(f, params, stacked: int = 0):
    stacked = _check_stacked(stacked, params)
    weights = [p for p in jax.tree.leaves(params) if _is_weight(p, stacked)]
    if not weights:
        return jnp.zeros(_leading_shape(params, stacked))
    return sum(jnp.sum(f(p), axis=tuple(range(stacked, jnp.ndim(p)))) for p in weights)


def _grad_over_weights(g, params):
    return jax.tree.map(lambda p: g(p) if _is_weight(p) else jnp.zeros_like(p), params)


def l2(params, *, stacked: int = 0) -> jax.Array:
    """``1/2 sum ||W||^2`` over the weights (one value per model with ``stacked``)."""
    return _sum_over_weights(lambda W: 0.5 * W**2, params, stacked)


def l1(params, *, stacked: int = 0) -> jax.Array:
    """``sum |W|`` over the weights (one value per model with ``stacked``), written
    ``W sign(W)`` so that ``jax.grad`` gives the subgradient ``sign(W)``, 0 at ``W = 0`` (as
    the hand-derived gradient and central differences do; ``jnp.abs`` differentiates to 1
    there, pushing a zero weight one way)."""
    return _sum_over_weights(lambda W: W * jnp.sign(W), params, stacked)


def weight_elimination(params, *, stacked: int = 0) -> jax.Array:
    """``sum W^2 / (1 + W^2)`` over the weights (ESL eq. 11.17; one value per model with
    ``stacked``)."""
    return _sum_over_weights(lambda W: W**2 / (1.0 + W**2), params, stacked)


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
    expected = "penalties: expected a dict {name: lambda} or a list of (name, lambda) pairs"
    if isinstance(penalties, Mapping):
        items = list(penalties.items())
    elif isinstance(penalties, (str, bytes, Penalty)) or not isinstance(penalties, Iterable):
        hint = (f" (one penalty? pass {{{penalties!r}: lambda}})"
                if isinstance(penalties, str) else
                f" (a bare lambda? pass {{'l2': {penalties!r}}})"
                if isinstance(penalties, (int, float, np.number)) else "")
        raise TypeError(f"{expected}, got {type(penalties).__name__} {penalties!r}{hint}")
    else:
        items = list(penalties)
        if (len(items) == 2 and isinstance(items[0], (str, Penalty))
                and not isinstance(items[1], (tuple, list))):
            raise TypeError(f"{expected}, got the single pair {penalties!r} (pass "
                            f"[{penalties!r}] or {{name: lambda}})")
    out = []
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(f"{expected}, got {item!r} among the items of {penalties!r}")
        penalty, lam = get(item[0]), item[1]
        if isinstance(lam, (bool, str, bytes, complex)) or not isinstance(
                lam, (int, float, np.integer, np.floating, jax.Array, np.ndarray)):
            raise TypeError(f"penalties[{penalty.name!r}]: expected a number lambda >= 0 (or an "
                            f"array of them), got {type(lam).__name__} {lam!r}")
        if not isinstance(lam, (jax.Array, np.ndarray)) and not (lam >= 0 and lam < float("inf")):
            raise ValueError(
                f"penalties[{penalty.name!r}]: expected a finite lambda >= 0, got {lam!r}")
        out.append((penalty, lam))
    return out


def total(params, penalties, *, stacked: int = 0) -> jax.Array:
    """``sum_j lambda_j J_j(params)`` for a penalty spec accepted by :func:`terms`.

    With ``stacked`` leading model axes, each ``J_j`` is ``jax.vmap``-ed over them (so a
    user-defined :class:`Penalty` works too) and the result has one value per model; a
    lambda may then be one per model too (shape ``(m,)``).
    """
    stacked = _check_stacked(stacked, params)
    spec = terms(penalties)
    floats = [jnp.result_type(leaf) for leaf in jax.tree.leaves(params)
              if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)]
    # the params' precision: a float64 zero would widen a float32 objective under x64
    out = jnp.zeros(_leading_shape(params, stacked) if spec else (),
                    jnp.result_type(*floats) if floats else None)
    for p, lam in spec:
        fn = p.fn
        for _ in range(stacked):
            fn = jax.vmap(fn)
        out = out + lam * fn(params)
    return out
