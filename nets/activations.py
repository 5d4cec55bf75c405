"""Activation functions g of the note, each paired with its derivative g'.

The note (Efron & Hastie, CASI section 18.1) lists sigmoid, tanh, ReLU, ELU and softplus;
``identity`` gives a linear network. The derivative is written by hand, in terms of ``z``,
for the hand-derived backprop in :mod:`nets.backprop`; training uses ``jax.grad``.

>>> import jax.numpy as jnp
>>> g = get("sigmoid")
>>> float(g.fn(jnp.array(0.0))), float(g.grad(jnp.array(0.0)))
(0.5, 0.25)
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class Activation(NamedTuple):
    """An elementwise nonlinearity and its derivative, both as functions of ``z``."""

    name: str
    fn: Callable[[jax.Array], jax.Array]  # g(z), elementwise
    grad: Callable[[jax.Array], jax.Array]  # g'(z), elementwise


def _sigmoid_grad(z):
    s = jax.nn.sigmoid(z)
    return s * (1.0 - s)


def _tanh_grad(z):
    return 1.0 - jnp.tanh(z) ** 2


def _relu_grad(z):
    # The subgradient at the kink is taken as 0, as jax.grad(jax.nn.relu) does.
    return (z > 0).astype(z.dtype)


def _elu_grad(z, alpha=1.0):
    return jnp.where(z > 0, jnp.ones_like(z), alpha * jnp.exp(jnp.minimum(z, 0.0)))


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation("sigmoid", jax.nn.sigmoid, _sigmoid_grad),  # 1/(1+e^-z)
    "tanh": Activation("tanh", jnp.tanh, _tanh_grad),
    "relu": Activation("relu", jax.nn.relu, _relu_grad),  # max(0, z)
    "elu": Activation("elu", jax.nn.elu, _elu_grad),  # z if z>0 else e^z - 1
    "softplus": Activation("softplus", jax.nn.softplus, jax.nn.sigmoid),  # log(1+e^z)
    "identity": Activation("identity", lambda z: z, jnp.ones_like),
}


def get(activation: str | Activation | Callable) -> Activation:
    """Look up an activation by name, or wrap a function.

    Args:
      activation: a name in ``ACTIVATIONS``, an :class:`Activation`, or an elementwise
        function ``g``; for a bare function ``g'`` is taken from ``jax.grad`` elementwise
        (so the hand-derived backprop is only fully independent of autodiff for named ones).

    Raises:
      ValueError: for an unknown name, listing the valid ones.
      TypeError: for anything that is neither a string nor callable.
    """
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation: expected one of {sorted(ACTIVATIONS)} or a function, "
                f"got {activation!r}"
            )
        return ACTIVATIONS[activation]
    if callable(activation):
        elementwise_grad = jnp.vectorize(jax.grad(activation))
        name = getattr(activation, "__name__", "custom")
        return Activation(name, activation, elementwise_grad)
    raise TypeError(
        f"activation: expected a name in {sorted(ACTIVATIONS)} or a callable, "
        f"got {type(activation).__name__}"
    )
