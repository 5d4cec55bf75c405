"""Deep plain nets and the same nets with residual connections (He et al. 2016), as Models.

Both are MLPs of ``depth`` weight layers (Dense layers) of width ``width`` between ``n_in``
inputs and ``n_out`` outputs, written on the pre-activations ``z`` (CASI eq. 18.3-18.4):

    z^(1) = W^(0) x + b^(0)                                  the stem
    z^(l+1) = W^(l) g(z^(l)) + b^(l)            (plain)       blocks l = 1 .. depth-2
    z^(l+1) = z^(l) + W^(l) g(z^(l)) + b^(l)    (residual)
    output = W^(depth-1) g(z^(depth-1)) + b^(depth-1)         the head

The plain net is exactly the note's MLP with ``depth - 1`` hidden layers
(``Dense, g, Dense, g, ..., Dense``); the residual net adds the identity around each block
``serial(g, Dense)`` (:func:`nets.layers.residual`): the "full pre-activation" unit of He et
al. (2016b, arXiv:1603.05027) without batch normalisation. The two have the same layers and
the same parameters; only the skip differs. No normalisation anywhere.

Why the plain net's gradient vanishes. Backprop (CASI eq. 18.10-18.11) carries
``delta^(l) = dL/dz^(l)`` down the net:

    plain:     delta^(l) = g'(z^(l)) * (W^(l)^T delta^(l+1))
    residual:  delta^(l) = delta^(l+1) + g'(z^(l)) * (W^(l)^T delta^(l+1))

and the weight gradient is ``dL/dW^(l) = delta^(l+1) g(z^(l))^T``. With a fan-in scaled
initialisation (``Var W = 1 / fan_in``, ``init="lecun"``) ``||W^T delta|| ~ ||delta||``, so
in the plain net every layer multiplies ``||delta||`` by about the size of ``g'``: for the
sigmoid ``|g'(z)| = s (1 - s) <= 1/4`` for every ``z``, so the gradient of layer ``l``
shrinks at least like ``4^-(depth - l)``: geometrically with the distance from the output.
tanh has ``g'(0) = 1``: with a fan-in scaled start it sits near the critical scale, where
the decay is slow. The residual net's identity term passes ``delta^(l+1)`` down unchanged,
whatever ``g'`` is, so no layer's gradient is a product of ``depth`` small factors.

>>> import jax, jax.numpy as jnp
>>> net = model(5, width=16, activation="sigmoid", residual=True)
>>> params, _ = net.init(jax.random.key(0))
>>> [W.shape for W in weights(params)]
[(16, 64), (16, 16), (16, 16), (16, 16), (10, 16)]
>>> net.batch_apply(params, jnp.zeros((3, 64)))[0].shape
(3, 10)

References:
  He, Zhang, Ren & Sun, Deep Residual Learning for Image Recognition, CVPR 2016,
  https://arxiv.org/abs/1512.03385 ; Identity Mappings in Deep Residual Networks, ECCV 2016,
  https://arxiv.org/abs/1603.05027 . Glorot & Bengio, Understanding the difficulty of
  training deep feedforward neural networks, AISTATS 2010 (vanishing gradients of sigmoid
  nets). Hochreiter, Untersuchungen zu dynamischen neuronalen Netzen, 1991.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nets import layers as L
from nets.model import Model


def model(depth: int, *, width: int = 64, n_in: int = 64, n_out: int = 10,
          activation="sigmoid", residual: bool = False, init: str = "lecun",
          output: str = "softmax") -> Model:
    """A plain (``residual=False``) or residual net of ``depth`` weight layers (module doc).

    Args:
      depth: the number of Dense layers, ``>= 2``: the stem ``n_in -> width``,
        ``depth - 2`` blocks ``width -> width`` and the head ``width -> n_out``.
      width: units per hidden layer.
      n_in: input features (64 for the 8x8 digits).
      n_out: outputs (10 classes).
      activation: ``g``, a name or function for :func:`nets.layers.Activation`.
      residual: put the identity around every block: ``z + W g(z) + b``.
      init: the Dense layers' initialisation (:data:`nets.layers.DENSE_INITS`); the
        default ``"lecun"`` is fan-in scaled, ``Var W = 1 / n_in`` of each layer.
      output: the output function of the :class:`nets.model.Model`.

    Returns:
      A :class:`nets.model.Model` on inputs ``(n_in,)`` with outputs ``(n_out,)``. Params
      are ``(stem, block_1, ..., block_{depth-2}, (), head)``, each block ``((), dense)``
      and each Dense ``{"W": (n_out, n_in), "b": (n_out,)}``; :func:`weights` lists the
      ``W`` s in order. Both variants have ``count_params`` equal to
      ``(n_in + 1) width + (depth - 2)(width + 1) width + (width + 1) n_out``.
    """
    checked = []
    for name, v, least in (("depth", depth, 2), ("width", width, 1), ("n_in", n_in, 1),
                           ("n_out", n_out, 1)):  # Python or NumPy ints
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
            raise ValueError(f"{name}: expected an int >= {least}, got {v!r}")
        checked.append(int(v))
    depth, width, n_in, n_out = checked
    g = L.Activation(activation)
    block = L.serial(g, L.Dense(width, init=init))
    if residual:
        block = L.residual(block)
    layers = [L.Dense(width, init=init), *([block] * (depth - 2)), g,
              L.Dense(n_out, init=init)]
    return Model(L.serial(*layers), input_shape=(n_in,), output=output)


def plain(depth: int, **kwargs) -> Model:
    """``model(depth, residual=False, **kwargs)``: the MLP with ``depth - 1`` hidden layers."""
    return model(depth, residual=False, **kwargs)


def resnet(depth: int, **kwargs) -> Model:
    """``model(depth, residual=True, **kwargs)``: the same layers with identity skips."""
    return model(depth, residual=True, **kwargs)


def weights(params) -> list:
    """The weight matrices ``W`` of every Dense layer in ``params``, input to output.

    Works for any params of :mod:`nets.layers` (the leaves under a ``"W"`` key, in the
    order of the layers), so also for the gradients ``jax.grad`` returns for them.
    """
    return [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
            if isinstance(path[-1], jax.tree_util.DictKey) and path[-1].key == "W"]


def weight_grad_norms(grads) -> jax.Array:
    """``||dL/dW^(l)||_F`` for every Dense layer ``l`` (input to output), shape ``(depth,)``."""
    return jnp.stack([jnp.linalg.norm(G) for G in weights(grads)])


__all__ = ["model", "plain", "resnet", "weights", "weight_grad_norms"]
