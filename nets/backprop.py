"""Backpropagation written out by hand: the witness that ``jax.grad`` is right.

For a batch ``X`` of shape ``(n, n_0)`` (rows are examples, so ``Z = A W^T + b``) the
forward pass keeps every ``z^(k)`` and ``a^(k)``; then, with ``delta^(k) = dR/dz^(k)`` for
``R = (1/n) sum_i L_i`` (CASI section 18.2; ESL eq. 11.13-11.15),

    delta^(K)   = dL/dz^(K) / n                         (per loss: nets.losses)
    dR/dW^(k-1) = delta^(k)^T a^(k-1),   dR/db^(k-1) = sum_i delta^(k)_i
    delta^(k-1) = (delta^(k) W^(k-1)) * g'(z^(k-1))     (the back-propagation equation)

and each penalty adds ``lambda_j dJ_j/dW``; the quadratic one adds ``lambda W``.

The convolution and max-pooling layers of :mod:`nets.layers` (batches ``(n, H, W, C)``,
kernels ``(kh, kw, C_in, C_out)``, strides and padding as the layers take them) have their
backward passes written out too: for ``y = x * W + b`` (a cross-correlation of the padded
input ``x_p``, :func:`nets.layers.Conv2D`) and upstream ``dy = dL/dy``,

    dL/db[o]          = sum_{n,i,j} dy[n,i,j,o]
    dL/dW[u,v,c,o]    = sum_{n,i,j} x_p[n, s_h i + u, s_w j + v, c] dy[n,i,j,o]
    dL/dx_p           = (dy dilated by the stride, zero-padded by k - 1) correlated with the
                        kernel flipped in space and transposed in (c, o)
    dL/dx             = dL/dx_p without the padding (rows top .. top + H - 1, ...)

(:func:`conv2d_backward`); max pooling routes each window's ``dy`` to the window's maximum,
the first one in row-major window order when several tie, as XLA's select-and-scatter does
for ``jax.grad`` (:func:`max_pool_backward`). No autodiff is used here: every derivative
comes from :mod:`nets.activations`, :mod:`nets.losses`, :mod:`nets.penalties` or the index
arithmetic below.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nets import _checks
from nets import layers as _layers
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
    X, Y, terms = checked_inputs(params, x, y, loss=loss, l2=l2, penalties=penalties)
    return grad_unchecked(params, X, Y, activation=activation, loss=loss, penalties=terms)


def checked_inputs(params, x, y, *, loss="cross_entropy", l2=0.0, penalties=None):
    """The checks of :func:`grad` (clear errors, on concrete values, before anything is
    compiled): ``(X, Y, terms)`` ready for :func:`grad_unchecked`, ``terms`` the penalty
    pairs with ``l2`` last."""
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
    return X, Y, terms


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


# ---------------------------------------------------------------------------------------
# convolution and max pooling (nets.layers.Conv2D, nets.layers.MaxPool), batches (n, H, W, C)
#
# NumPy, not jax.numpy: a witness need not be jitted, and NumPy runs these few dozen slices
# and products at once, where jax.numpy would compile each of them (or the whole pass, per
# shape, stride and padding) first.


def _explicit_pads(hw, window, stride, padding, who):
    """``((top, bottom), (left, right))`` for ``padding`` as the layers take it ("SAME",
    "VALID", an int or pairs), resolved as ``jax.lax`` does for an image of size ``hw``."""
    pad = _layers._padding(padding, who)
    if isinstance(pad, str):
        return tuple(tuple(p) for p in jax.lax.padtype_to_pads(hw, window, stride, pad))
    return pad


def _out_size(n, k, s, lo, hi):
    return (n + lo + hi - k) // s + 1


def _window(xp, u, v, stride, out_hw):
    """``xp[:, s_h i + u, s_w j + v, :]`` for every output position ``(i, j)``: the entries
    that kernel offset ``(u, v)`` meets, shape ``(n, H', W', C)`` (a strided view)."""
    (sh, sw), (Ho, Wo) = stride, out_hw
    return xp[:, u:u + sh * (Ho - 1) + 1:sh, v:v + sw * (Wo - 1) + 1:sw, :]


def _correlate(xp, K, stride, out_hw):
    """``out[n,i,j,o] = sum_{u,v,c} xp[n, s_h i + u, s_w j + v, c] K[u,v,c,o]``: the
    cross-correlation that :func:`nets.layers.Conv2D` computes, one kernel offset at a time."""
    kh, kw = K.shape[:2]
    return sum(np.einsum("nijc,co->nijo", _window(xp, u, v, stride, out_hw), K[u, v])
               for u in range(kh) for v in range(kw))


def _flip(W):
    """The kernel rotated by 180 degrees in space, input and output channels swapped:
    ``(kh, kw, C_in, C_out) -> (kh, kw, C_out, C_in)``,
    ``W'[u,v,o,c] = W[kh-1-u, kw-1-v, c, o]``."""
    return np.transpose(W[::-1, ::-1], (0, 1, 3, 2))


def _image_batch(x, name, who):
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{name}: {who} expected a batch of images (n, H, W, C), got shape "
                         f"{x.shape} (one image? pass x[None])")
    return x


def conv2d_backward(dy, x, W, *, stride=1, padding="SAME"):
    """Gradients of ``L`` through ``y = conv(x, W) + b`` (:func:`nets.layers.Conv2D`), by hand.

    With ``x_p`` the input padded by ``((top, bottom), (left, right))`` and
    ``y[n,i,j,o] = sum_{u,v,c} x_p[n, s_h i + u, s_w j + v, c] W[u,v,c,o] + b[o]``:

    * ``dL/db[o] = sum_{n,i,j} dy[n,i,j,o]`` (the bias meets every output position);
    * ``dL/dW[u,v,c,o] = sum_{n,i,j} x_p[n, s_h i + u, s_w j + v, c] dy[n,i,j,o]``: the
      padded input correlated with ``dy`` (dilated by the stride);
    * ``dL/dx_p[n,p,q,c] = sum dy[n,i,j,o] W[u,v,c,o]`` over ``s_h i + u = p``,
      ``s_w j + v = q``: ``dy`` dilated by the stride (``s - 1`` zeros between entries) and
      padded by ``k - 1`` zeros on each side, correlated (stride 1) with the flipped kernel
      ``W'[u,v,o,c] = W[kh-1-u, kw-1-v, c, o]``; rows and columns of ``x_p`` that no window
      reaches (VALID with a remainder) get 0. ``dL/dx`` is ``dL/dx_p`` without the padding.

    In NumPy, on concrete arrays (no autodiff, nothing compiled).

    Args:
      dy: upstream gradient ``dL/dy``, shape ``(n, H', W', C_out)``.
      x: the layer's input, ``(n, H, W, C_in)`` (NHWC, as :func:`jax.vmap` over
        :func:`nets.layers.Conv2D` stacks it).
      W: the kernel, ``(kh, kw, C_in, C_out)`` (HWIO).
      stride: an int or ``(s_h, s_w)``.
      padding: ``"SAME"``, ``"VALID"``, an int, ``(ph, pw)`` or ``((top, bottom), (left,
        right))``, as :func:`nets.layers.Conv2D` takes it.

    Returns:
      ``(dx, dW, db)``, NumPy arrays of shapes ``(n, H, W, C_in)``, ``(kh, kw, C_in,
      C_out)``, ``(C_out,)``, summed over the batch (``dy`` carries any ``1/n``).
    """
    who = "conv2d_backward"
    x, dy, W = _image_batch(x, "x", who), _image_batch(dy, "dy", who), np.asarray(W)
    stride = _layers._pair(stride, "stride", who)
    if W.ndim != 4:
        raise ValueError(f"W: {who} expected a 4-D kernel of shape (kh, kw, C_in, C_out) "
                         f"(HWIO), got shape {W.shape}")
    kh, kw, C_in, C_out = W.shape
    n, H, Wd, _ = x.shape
    if x.shape[3] != C_in:
        raise ValueError(f"x: {who} expected {C_in} channels (C_in of the kernel W of shape "
                         f"{W.shape}, HWIO), got x of shape {x.shape} with {x.shape[3]}")
    (top, bottom), (left, right) = _explicit_pads((H, Wd), (kh, kw), stride, padding, who)
    out_hw = (_out_size(H, kh, stride[0], top, bottom), _out_size(Wd, kw, stride[1], left, right))
    if dy.shape != (n, *out_hw, C_out):
        raise ValueError(f"dy: {who} expected shape {(n, *out_hw, C_out)} for x of shape "
                         f"{x.shape} and W of shape {W.shape}, got {dy.shape}")
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))  # (n, H_p, W_p, C_in)

    db = dy.sum(axis=(0, 1, 2))  # (C_out,)
    dW = np.stack([np.stack([np.einsum("nijc,nijo->co", _window(xp, u, v, stride, out_hw), dy)
                             for v in range(kw)]) for u in range(kh)])  # (kh, kw, C_in, C_out)

    (sh, sw), (Ho, Wo) = stride, out_hw
    dilated = np.zeros((n, (Ho - 1) * sh + 1, (Wo - 1) * sw + 1, C_out), dy.dtype)
    dilated[:, ::sh, ::sw, :] = dy
    full = np.pad(dilated, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
    reached = ((Ho - 1) * sh + kh, (Wo - 1) * sw + kw)  # rows, columns of x_p some window meets
    dxp = np.zeros(xp.shape[:3] + (C_in,), np.result_type(dy, W))  # (n, H_p, W_p, C_in)
    dxp[:, :reached[0], :reached[1]] = _correlate(full, _flip(W), (1, 1), reached)
    dx = dxp[:, top:top + H, left:left + Wd, :]  # (n, H, W, C_in)
    return dx, dW, db


def _first_maxima(windows, y):
    """One mask per kernel offset (in the order given, row-major): where the window's
    maximum ``y`` sits, only at the first such offset of each window (a tie goes to the
    first, as XLA's select-and-scatter with ``>=`` decides it)."""
    taken = np.zeros(y.shape, bool)
    masks = []
    for w in windows:
        hit = (w == y) & ~taken
        taken |= hit
        masks.append(hit)
    return masks


def max_pool_backward(dy, x, *, window, stride=None, padding="VALID"):
    """``dL/dx`` through ``y = maxpool(x)`` (:func:`nets.layers.MaxPool`), by hand.

    ``y[n,i,j,c] = max_{u,v} x_p[n, s_h i + u, s_w j + v, c]`` with ``x_p`` padded by
    ``-inf``; its derivative is 1 at the window's maximum and 0 elsewhere, so each
    ``dy[n,i,j,c]`` goes to the ONE entry of its window that is the maximum: the first in
    row-major window order (smallest ``u``, then ``v``) when several are equal, which is
    what ``jax.grad`` does (XLA's select-and-scatter keeps its current choice while it is
    ``>=`` the next entry; the tests check ties on the CPU). An entry in several
    overlapping windows (``stride < window``) collects the sum of their ``dy``. In NumPy,
    on concrete arrays.

    Args:
      dy: ``dL/dy``, shape ``(n, H', W', C)``.
      x: the layer's input ``(n, H, W, C)``.
      window, stride, padding: as :func:`nets.layers.MaxPool` takes them (``stride``
        defaults to ``window``).

    Returns:
      ``dx``, a NumPy array of shape ``(n, H, W, C)``.
    """
    who = "max_pool_backward"
    x, dy = _image_batch(x, "x", who), _image_batch(dy, "dy", who)
    window = _layers._pair(window, "window", who)
    stride = window if stride is None else _layers._pair(stride, "stride", who)
    n, H, Wd, C = x.shape
    (top, bottom), (left, right) = _explicit_pads((H, Wd), window, stride, padding, who)
    out_hw = (_out_size(H, window[0], stride[0], top, bottom),
              _out_size(Wd, window[1], stride[1], left, right))
    if dy.shape != (n, *out_hw, C):
        raise ValueError(f"dy: {who} expected shape {(n, *out_hw, C)} for x of shape "
                         f"{x.shape}, got {dy.shape}")
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-np.inf)
    offsets = [(u, v) for u in range(window[0]) for v in range(window[1])]  # row-major
    windows = [_window(xp, u, v, stride, out_hw) for u, v in offsets]  # each (n, H', W', C)
    y = functools.reduce(np.maximum, windows)  # the forward pass, (n, H', W', C)
    dxp = np.zeros(xp.shape, dy.dtype)
    for (u, v), mask in zip(offsets, _first_maxima(windows, y)):
        _window(dxp, u, v, stride, out_hw)[...] += np.where(mask, dy, 0)  # a view of dxp
    return dxp[:, top:top + H, left:left + Wd, :]
