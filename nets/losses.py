"""Loss functions ``L[y, f(x)]`` for ONE example, each from the output pre-activation ``z``.

Each loss is paired with the output function it implies and with ``dL/dz``, written by hand
for :mod:`nets.backprop`:

=======================  ===============  ==========================================  =============
name                     output g^(K)     L(y, z)                                     dL/dz
=======================  ===============  ==========================================  =============
``cross_entropy``        softmax          ``logsumexp(z) - z_y`` (multinomial deviance) ``softmax(z) - onehot(y)``
``squared_error``        identity         ``sum_k (y_k - z_k)^2`` (ESL eq. 11.9)       ``2 (z - y)``
``binary_cross_entropy`` sigmoid          ``softplus(z) - y z``                        ``sigmoid(z) - y``
=======================  ===============  ==========================================  =============

Cross-entropy takes an integer label ``y`` in ``[0, M)`` or a probability vector of shape
``(M,)``; all three are computed from logits, so they stay finite for large ``|z|``.

>>> import jax.numpy as jnp
>>> float(cross_entropy(jnp.array([0.0, 0.0]), 1))  # log 2
0.693...
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


def _one_hot_like(z, y):
    y = jnp.asarray(y)
    if y.ndim == 0:
        return jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype)
    return y.astype(z.dtype)


def cross_entropy(z: jax.Array, y) -> jax.Array:
    """Multinomial cross-entropy ``-log softmax(z)_y`` for logits ``z`` of shape ``(M,)``."""
    return jax.nn.logsumexp(z) - jnp.sum(_one_hot_like(z, y) * z)


def squared_error(z: jax.Array, y) -> jax.Array:
    """Squared error ``sum_k (y_k - z_k)^2`` for outputs ``z`` and targets ``y`` of shape ``(K,)``."""
    return jnp.sum((jnp.asarray(y, z.dtype).reshape(z.shape) - z) ** 2)


def binary_cross_entropy(z: jax.Array, y) -> jax.Array:
    """Binomial deviance/2 ``-[y log p + (1-y) log(1-p)]``, ``p = sigmoid(z)``, ``z`` of shape ``(1,)``."""
    y = jnp.asarray(y, z.dtype).reshape(z.shape)
    return jnp.sum(jax.nn.softplus(z) - y * z)


def _cross_entropy_grad(z, y):
    return jax.nn.softmax(z) - _one_hot_like(z, y)


def _squared_error_grad(z, y):
    return 2.0 * (z - jnp.asarray(y, z.dtype).reshape(z.shape))


def _binary_cross_entropy_grad(z, y):
    return jax.nn.sigmoid(z) - jnp.asarray(y, z.dtype).reshape(z.shape)


class Loss(NamedTuple):
    """A per-example loss, its output function and its hand-derived ``dL/dz``."""

    name: str
    fn: Callable  # (z (n_K,), y) -> scalar
    grad: Callable  # (z (n_K,), y) -> (n_K,)
    output: str  # name in nets.mlp.OUTPUTS
    labels: str  # "class" (an integer label or probabilities), "binary" or "real"


LOSSES: dict[str, Loss] = {
    "cross_entropy": Loss("cross_entropy", cross_entropy, _cross_entropy_grad, "softmax", "class"),
    "squared_error": Loss("squared_error", squared_error, _squared_error_grad, "identity", "real"),
    "binary_cross_entropy": Loss(
        "binary_cross_entropy", binary_cross_entropy, _binary_cross_entropy_grad, "sigmoid",
        "binary"),
}


def get(loss: str | Loss) -> Loss:
    """Look up a loss by name; raise ``ValueError`` listing the valid names."""
    if isinstance(loss, Loss):
        return loss
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"loss: expected one of {sorted(LOSSES)}, got {loss!r}")
    return LOSSES[loss]
