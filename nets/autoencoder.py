"""Autoencoders: an encoder and a decoder composed from :mod:`nets.layers`, and PCA, their oracle.

An autoencoder maps one example ``x`` to a code ``c = e(x)`` of ``k`` numbers and back to a
reconstruction ``x_hat = d(c)``, trained to make ``x_hat`` close to ``x``: the mean
reconstruction error ``(1/n) sum_i ||x_i - d(e(x_i))||^2`` (:func:`nets.losses.squared_error`
with the target ``y = x``, so ``nets.objective.make(ae.model, "squared_error")`` trained on
``(X, X)``). The note's "nonlinear principal components" (ESL section 14.5.3 and
Figure 14.23; Hinton & Salakhutdinov 2006):

* :func:`linear`: ``e(x) = A x + a``, ``d(c) = B c + b`` with ``A`` of shape ``(k, n_in)`` and
  ``B`` of shape ``(n_in, k)``. Its global minimisers span PCA's subspace: the column space of
  ``B`` is the span of the top ``k`` principal directions of the centred data, and the error
  equals PCA's, the sum of the discarded eigenvalues of the covariance (Baldi & Hornik 1989;
  Bourlard & Kamp 1988). ``B`` itself need not be orthonormal nor its columns the
  principal directions: any invertible ``k x k`` mixing leaves the error unchanged.
* :func:`deep`: nonlinear layers on both sides of the code (``Dense``, ``g``, ...); at the
  same ``k`` it can reconstruct better than any linear projection.

:func:`pca` computes the principal subspace and its reconstructions (float64 SVD).

>>> import jax, jax.numpy as jnp
>>> ae = linear(64, 2)
>>> params, state = ae.init(jax.random.key(0))
>>> [p["W"].shape for p in params]
[(2, 64), (64, 2)]
>>> X = jnp.ones((5, 64))
>>> ae.encode(params, X).shape, ae.reconstruct(params, X).shape
((5, 2), (5, 64))
>>> ae.decode(params, ae.encode(params, X)).shape
(5, 64)

References:
  Baldi & Hornik, Neural networks and principal component analysis: learning from examples
  without local minima, Neural Networks 2 (1989) 53-58. Bourlard & Kamp, Auto-association by
  multilayer perceptrons and singular value decomposition, Biol. Cybern. 59 (1988) 291-294.
  Hinton & Salakhutdinov, Reducing the dimensionality of data with neural networks, Science
  313 (2006) 504-507. Hastie, Tibshirani & Friedman, ESL 2nd ed., 14.5.1 and 14.5.3.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

from nets import _checks
from nets import layers as L
from nets import objective as _objective
from nets.model import Model


@dataclasses.dataclass(frozen=True)
class Autoencoder:
    """An encoder and a decoder, each a :class:`nets.model.Model`, and their composition.

    Attributes:
      encoder: ``input_shape -> (k,)``, output ``"identity"``.
      decoder: ``(k,) -> input_shape``, output ``"identity"``.
      model: ``serial(encoder, decoder)`` on ``input_shape``, output ``"identity"``: the
        Model to train (its params are ``(encoder params, decoder params)``, its state
        likewise).

    Built by :func:`autoencoder`, :func:`linear` or :func:`deep`. Equal layers give equal
    autoencoders, so compiled programs are shared.
    """

    encoder: Model
    decoder: Model
    model: Model

    @property
    def code_size(self) -> int:
        """``k``, the number of units in the code."""
        return self.encoder.output_shape[0]

    def init(self, key: jax.Array) -> tuple[Any, Any]:
        """``(params, state)`` of :attr:`model`: ``((encoder, decoder), (encoder, decoder))``."""
        return self.model.init(key)

    def objective(self, penalties=None):
        """The mean reconstruction error ``(1/n) sum_i ||x_i - x_hat_i||^2`` plus
        ``penalties`` (:func:`nets.objective.make` with ``"squared_error"``); train it on
        ``(X, X)``."""
        return _objective.make(self.model, "squared_error", penalties)

    def encode(self, params, X, *, state=None) -> jax.Array:
        """The codes ``(n, k)`` of a batch ``X`` of shape ``(n, *input_shape)`` (eval mode)."""
        return self.encoder.batch_apply(params[0], X, state=_part(state, 0), train=False)[0]

    def decode(self, params, C, *, state=None) -> jax.Array:
        """The reconstructions ``(n, *input_shape)`` of a batch of codes ``C`` ``(n, k)``."""
        return self.decoder.batch_apply(params[1], C, state=_part(state, 1), train=False)[0]

    def reconstruct(self, params, X, *, state=None) -> jax.Array:
        """``d(e(x))`` for a batch ``X``: shape ``(n, *input_shape)`` (eval mode)."""
        return self.model.batch_apply(params, X, state=state, train=False)[0]


def _part(state, i):
    return None if state is None else state[i]


def autoencoder(encoder: L.Layer, decoder: L.Layer, input_shape) -> Autoencoder:
    """An :class:`Autoencoder` from an encoder layer (``input_shape -> (k,)``) and a decoder
    layer (``(k,) -> input_shape``); raises ``ValueError`` when the shapes do not chain."""
    enc = Model(encoder, input_shape=tuple(input_shape), output="identity")
    if len(enc.output_shape) != 1:
        raise ValueError(f"encoder: expected codes of shape (k,), got {enc.output_shape}")
    dec = Model(decoder, input_shape=enc.output_shape, output="identity")
    if dec.output_shape != enc.input_shape:
        raise ValueError(f"decoder: maps codes {enc.output_shape} to {dec.output_shape}, not "
                         f"back to the input shape {enc.input_shape}")
    whole = Model(L.serial(encoder, decoder), input_shape=enc.input_shape, output="identity")
    return Autoencoder(enc, dec, whole)


def linear(n_in: int, k: int, *, init: str = "glorot") -> Autoencoder:
    """The linear autoencoder ``x_hat = B (A x + a) + b`` (module doc): params
    ``({"W": A (k, n_in), "b": a (k,)}, {"W": B (n_in, k), "b": b (n_in,)})``; the decoder's
    ``W`` spans the code's subspace of the inputs."""
    _check_sizes(n_in, k)
    return autoencoder(L.Dense(k, init=init), L.Dense(n_in, init=init), (n_in,))


def deep(n_in: int, k: int, hidden: Sequence[int] = (128, 64), *, activation="elu",
         init: str = "glorot") -> Autoencoder:
    """A deep autoencoder ``n_in -> hidden... -> k -> reversed(hidden)... -> n_in``.

    The encoder is ``Dense(h_1), g, ..., Dense(h_m), g, Dense(k)`` (a linear code, as in
    Hinton & Salakhutdinov 2006), the decoder mirrors it and ends in a linear
    ``Dense(n_in)``. ``activation``: the hidden ``g`` (a name or function).
    """
    _check_sizes(n_in, k)
    hidden = tuple(hidden)
    if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1
                         for h in hidden):
        raise ValueError(f"hidden: expected one or more positive widths, got {hidden!r}")

    def stack(widths, out):
        layers = []
        for h in widths:
            layers += [L.Dense(h, init=init), L.Activation(activation)]
        return L.serial(*layers, L.Dense(out, init=init))

    return autoencoder(stack(hidden, k), stack(hidden[::-1], n_in), (n_in,))


def _check_sizes(n_in, k):
    for name, v in (("n_in", n_in), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")


class PCA(NamedTuple):
    """The top ``k`` principal components of a data set (:func:`pca`)."""

    mean: np.ndarray  # (n_in,) the data mean
    components: np.ndarray  # (k, n_in) orthonormal rows: the principal directions, in order
    variances: np.ndarray  # (n_in,) ALL eigenvalues of the covariance (divisor n), descending

    def encode(self, X) -> np.ndarray:
        """The principal component scores ``(X - mean) V^T``, shape ``(n, k)``."""
        return (np.asarray(X, np.float64) - self.mean) @ self.components.T

    def decode(self, C) -> np.ndarray:
        """``mean + C V``, shape ``(n, n_in)``."""
        return self.mean + np.asarray(C, np.float64) @ self.components

    def reconstruct(self, X) -> np.ndarray:
        """The projection of ``X`` on the principal subspace through the mean."""
        return self.decode(self.encode(X))

    @property
    def error(self) -> float:
        """Its mean reconstruction error on the data it was fitted to: the sum of the
        discarded eigenvalues ``sum_{j > k} lambda_j``."""
        return float(self.variances[len(self.components):].sum())


def pca(X, k: int) -> PCA:
    """Principal components of the rows of ``X`` ``(n, n_in)`` by the SVD of the centred data,
    in float64 (ESL section 14.5.1): ``X - mean = U S V^T``, components the first ``k``
    rows of ``V^T``, variances ``S^2 / n``. The rank-``k`` reconstruction minimises the
    mean squared error over all rank-``k`` affine maps (Eckart-Young). ``1 <= k <=
    min(n, n_in)``."""
    X = np.asarray(X, np.float64)
    if X.ndim != 2 or 0 in X.shape:
        raise ValueError(f"X: expected a matrix (n, n_in) of rows, got shape {X.shape}")
    n, n_in = X.shape
    _checks.check_int(k, "k", 1)
    if k > min(n, n_in):
        raise ValueError(f"k: expected at most min(n, n_in) = {min(n, n_in)} components for X "
                         f"of shape {X.shape} (the SVD of {n} rows has no more), got k={k}")
    mean = X.mean(axis=0)
    _, s, Vt = np.linalg.svd(X - mean, full_matrices=False)
    variances = np.zeros(X.shape[1])
    variances[:len(s)] = s ** 2 / X.shape[0]
    return PCA(mean, Vt[:k], variances)


def reconstruction_error(X, X_hat) -> float:
    """``(1/n) sum_i ||x_i - x_hat_i||^2`` (the autoencoder objective, in float64)."""
    X, X_hat = np.asarray(X, np.float64), np.asarray(X_hat, np.float64)
    return float(np.mean(np.sum((X - X_hat).reshape(len(X), -1) ** 2, axis=1)))


__all__ = ["Autoencoder", "autoencoder", "linear", "deep", "PCA", "pca",
           "reconstruction_error"]
