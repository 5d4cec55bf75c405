"""A miscompilation seen on XLA's CPU backend (jaxlib 0.10.2), kept as a regression test.

``jit(vmap(cross_entropy))`` over many models that share one label vector computed
``sum(onehot(y) * z)`` wrongly for every (model, example) row past 32,768: a sweep of 100
models on the 359 validation digits reported validation losses off by up to 50 nats for
models 91-99. ``nets.losses.cross_entropy`` now indexes ``z[y]``; this checks it, jitted
against op-by-op, at the size that failed.
"""

import jax
import jax.numpy as jnp
import numpy as np

from nets import losses


def test_jitted_cross_entropy_over_many_models_with_shared_labels(key):
    rng = np.random.default_rng(0)
    Z = jnp.asarray(10 * rng.normal(size=(100, 359, 10)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, 359).astype(np.int32))
    per_model = jax.vmap(lambda z: jax.vmap(losses.cross_entropy)(z, y))
    jitted, eager = np.asarray(jax.jit(per_model)(Z)), np.asarray(per_model(Z))
    reference = np.asarray(jax.nn.logsumexp(Z, -1)) - np.take_along_axis(
        np.asarray(Z), np.broadcast_to(np.asarray(y)[None, :, None], (100, 359, 1)), -1)[..., 0]
    np.testing.assert_allclose(jitted, reference, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(eager, reference, rtol=1e-5, atol=1e-4)
