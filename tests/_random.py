"""Random parameters for a Model without compiling its initialisation (sequence-model tests)."""

import jax
import numpy as np


def random_params(net, rng, scale=0.5):
    """``(params, state)`` of ``net`` (a :class:`nets.model.Model`): params drawn
    ``N(0, scale^2)`` in NumPy (float32) from the shapes of its abstract ``init``, state
    zeros. Nothing is compiled (``net.init`` compiles the whole initialisation, about as
    costly as a forward pass)."""
    abstract, state = jax.eval_shape(net.init, jax.random.key(0))
    params = jax.tree.map(lambda s: (scale * rng.normal(size=s.shape)).astype(np.float32),
                          abstract)
    return params, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), state)
