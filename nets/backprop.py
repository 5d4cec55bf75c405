"""Backpropagation written out by hand: the witness that ``jax.grad`` is right.

For a batch ``X`` of shape ``(n, n_0)`` (rows are examples, so ``Z = A W^T + b``) the
forward pass keeps every ``z^(k)`` and ``a^(k)``; then, with ``delta^(k) = dR/dz^(k)`` for
``R = (1/n) sum_i L_i`` (CASI section 18.2; ESL eq. 11.13-11.15),

    delta^(K)   = dL/dz^(K) / n                         (per loss: nets.losses)
    dR/dW^(k-1) = delta^(k)^T a^(k-1),   dR/db^(k-1) = sum_i delta^(k)_i
    delta^(k-1) = (delta^(k) W^(k-1)) * g'(z^(k-1))     (the back-propagation equation)

and each penalty adds ``lambda_j dJ_j/dW``; the quadratic one adds ``lambda W``. No autodiff
is used here: every derivative comes from :mod:`nets.activations`, :mod:`nets.losses` and
:mod:`nets.penalties`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nets import _checks
from nets import losses as _losses
from nets import mlp as _mlp
from nets import penalties as _penalties


def forward(params, X, activation="sigmoid"):
    """Batched forward pass keeping ``zs = [z^(2), ..., z^(K)]`` and ``activations =
    [a^(1)=X, ..., a^(K-1)]`` (each ``(n, width)``)."""
    gs = _mlp.hidden_activations(activation, len(params) - 1)
    activations, zs = [X], []
    for k, layer in enumerate(params):
        Z = activations[-1] @ layer["W"].T + layer["b"]
        zs.append(Z)
        if k < len(params) - 1:
            activations.append(gs[k].fn(Z))
    return zs, activations


def grad(params, x, y, *, activation="sigmoid", loss="cross_entropy", l2=0.0, penalties=None):
    """Gradient of ``(1/n) sum_i L(y_i, f(x_i)) + l2 * 1/2 ||W||^2 + sum_j lambda_j J_j``.

    Args:
      params: MLP parameters (:func:`nets.mlp.init`).
      x: inputs, shape ``(n, n_0)``.
      y: targets: integer labels ``(n,)`` or probabilities ``(n, M)`` for cross-entropy;
        ``(n,)``/``(n, 1)`` in ``[0, 1]`` for binary cross-entropy; ``(n, n_K)`` reals for
        squared error.
      activation: hidden nonlinearity (name/function, or one per hidden layer).
      loss: a name in :data:`nets.losses.LOSSES`.
      l2: ``lambda`` of the quadratic penalty ``1/2 sum W^2`` (the note's update).
      penalties: further terms, ``{"l1": lam1, "weight_elimination": lam2}`` or pairs.

    Returns:
      A pytree shaped like ``params``.
    """
    sizes = _mlp.sizes_of(params)
    loss = _losses.get(loss)
    x = _checks.as_finite_array(x, "x", ndim=2)
    if x.shape[1] != sizes[0]:
        raise ValueError(f"x: expected shape (n, {sizes[0]}), got {x.shape}")
    y = _checks.check_targets(y, x.shape[0], sizes[-1], loss.labels)
    if not (isinstance(l2, (int, float, np.floating, np.integer)) and 0 <= l2 < float("inf")):
        raise ValueError(f"l2: expected a finite lambda >= 0, got {l2!r}")
    terms = _penalties.terms(penalties) + ([(_penalties.get("l2"), l2)] if l2 else [])
    for k, layer in enumerate(params):
        for leaf in ("W", "b"):
            _checks.as_finite_array(layer[leaf], f"params[{k}][{leaf!r}]")

    dtype = params[0]["W"].dtype
    X = jnp.asarray(x, dtype)
    Y = jnp.asarray(y) if loss.labels == "class" and y.ndim == 1 else jnp.asarray(y, dtype)
    return grad_unchecked(params, X, Y, activation=activation, loss=loss, penalties=terms)


def grad_unchecked(params, X, Y, *, activation="sigmoid", loss="cross_entropy", penalties=()):
    """:func:`grad` without input checks: pure ``jax.numpy``, so it can be jitted and the
    lambdas of ``penalties`` (``[(Penalty or name, lambda), ...]``) may be traced."""
    loss = _losses.get(loss)
    gs = _mlp.hidden_activations(activation, len(params) - 1)
    zs, acts = forward(params, X, activation)
    n = X.shape[0]

    delta = jax.vmap(loss.grad)(zs[-1], Y) / n  # dR/dz^(K), (n, n_K)
    grads = [None] * len(params)
    for k in reversed(range(len(params))):
        grads[k] = {"W": delta.T @ acts[k], "b": jnp.sum(delta, axis=0)}
        if k > 0:
            delta = (delta @ params[k]["W"]) * gs[k - 1].grad(zs[k - 1])

    for penalty, lam in _penalties.terms(penalties):
        grads = jax.tree.map(lambda g, dj: g + lam * dj, grads, penalty.grad(params))
    return grads
