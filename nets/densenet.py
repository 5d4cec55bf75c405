"""DenseNet (Huang et al. 2017): every layer of a dense block sees all earlier feature maps;
and a plain CNN of the same depth sized to the same parameter count. Both are Models
composed from :mod:`nets.layers`.

Dense connectivity (Huang, Liu, van der Maaten & Weinberger 2017, eq. 2). In a block of
``L`` layers with input ``x_0`` (``k_0`` channels), layer ``l`` receives the concatenation,
along the channel axis, of the block input and of every earlier layer's output:

    x_l = H_l([x_0, x_1, ..., x_{l-1}])                      l = 1 .. L

where ``H_l`` is the composite function BN -> ReLU -> Conv 3x3 with ``k`` output channels
(``k`` is the *growth rate*), so layer ``l`` has ``k_0 + (l - 1) k`` input channels and the
block outputs ``[x_0, x_1, ..., x_L]``, ``k_0 + L k`` channels. A plain (ResNet-less) CNN
has ``x_l = H_l(x_{l-1})`` instead; a ResNet ``x_l = H_l(x_{l-1}) + x_{l-1}``, which sums
the maps where DenseNet keeps them side by side. Here one layer is
``concat(Identity(), H_l)`` (:func:`nets.layers.concat`): its output is its input with
``k`` new maps appended, and a block is these layers in :func:`nets.layers.serial`, so
the running concatenation is the carried activation. Between blocks a *transition layer*
BN -> ReLU -> Conv 1x1 -> 2x2 average pooling halves the image and, with compression
``theta`` (DenseNet-C), keeps ``floor(theta m)`` of ``m`` channels. After the last block:
BN -> ReLU -> global average pooling -> Dense (the classifier). ``bottleneck=True`` puts
BN -> ReLU -> Conv 1x1 (``4k`` maps) before each 3x3 convolution (DenseNet-B).

Parameters of layer ``l`` (batch norm on, convolutions without bias, as BN follows each
map): ``9 k (k_0 + (l-1) k)`` kernel weights and ``2 (k_0 + (l-1) k)`` BN scales and
shifts: a layer's cost grows with its depth in the block, its output does not.

:func:`plain` is the counterpart: the same stem, the same number of 3x3 layers in each
block, the same transitions (1x1 conv, 2x2 average pooling) and head, but ``x_l =
H_l(x_{l-1})`` with a constant ``width`` of maps. :func:`plain_params` counts its
parameters in closed form and :func:`matched_plain` picks the width whose count is
nearest a target (a DenseNet's), so the two nets differ in connectivity, not in size.

On 8x8 digits with the defaults (growth 8, blocks of 4 and 4 layers, a 16-map stem,
compression 0.5): 8x8x1 -> stem 8x8x16 -> block 8x8x48 -> transition 4x4x24 -> block
4x4x56 -> 10, 21,018 parameters; the plain net nearest in size has width 17 (21,770,
3.6% more; width 16 has 19,322).

>>> net = model()
>>> net.output_shape, n_params(net)
((10,), 21018)
>>> Model(dense_layer(8), input_shape=(8, 8, 16)).output_shape  # x -> [x, H(x)]: 16 + 8
(8, 8, 24)
>>> Model(dense_block(4, 8), input_shape=(8, 8, 16)).output_shape  # k_0 + L k = 16 + 4 * 8
(8, 8, 48)
>>> twin, width = matched_plain(n_params(net))
>>> width, n_params(twin), plain_params(width)
(17, 21770, 21770)

References:
  Huang, Liu, van der Maaten & Weinberger, Densely Connected Convolutional Networks, CVPR
  2017, https://arxiv.org/abs/1608.06993 (eq. 2, section 3, Table 1). Ioffe & Szegedy,
  Batch Normalization, 2015, https://arxiv.org/abs/1502.03167 . He, Zhang, Ren & Sun,
  Deep Residual Learning for Image Recognition, 2016, https://arxiv.org/abs/1512.03385 .
"""

from __future__ import annotations

import math

import numpy as np

from nets import layers as L
from nets.layers import Layer, count_params
from nets.model import Model


def _positive_int(value, name: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: {who} expected a positive int, got {value!r}")
    return int(value)


def _blocks(blocks, who: str) -> tuple[int, ...]:
    if not isinstance(blocks, (tuple, list)) or not blocks or any(
            isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1 for b in blocks):
        raise ValueError(f"blocks: {who} expected a non-empty tuple of positive ints (layers "
                         f"per dense block), got {blocks!r}")
    return tuple(int(b) for b in blocks)


def _image(input_shape, blocks, who: str) -> tuple[int, int, int]:
    input_shape = L._shape(input_shape, who)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape: {who} expected one image (H, W, C), got {input_shape}")
    shrink = 2 ** (len(blocks) - 1)  # one 2x2 pooling per transition
    if min(input_shape[:2]) < shrink:
        raise ValueError(f"input_shape: {who} halves the image {len(blocks) - 1} times (one "
                         f"transition between each pair of blocks), which needs sides of at "
                         f"least {shrink}, got {input_shape}; use fewer blocks")
    return input_shape


def _bn_relu(batch_norm: bool) -> list[Layer]:
    return [L.BatchNorm(), L.Relu()] if batch_norm else [L.Relu()]


def composite(growth: int, *, batch_norm: bool = True, bottleneck: bool = False,
              init: str = "he") -> Layer:
    """``H_l``: BN -> ReLU -> Conv 3x3 ``"SAME"`` with ``growth`` maps (with
    ``bottleneck``: BN -> ReLU -> Conv 1x1 with ``4 growth`` maps first). Shapes:
    ``(H, W, C) -> (H, W, growth)``. Convolutions have a bias only without batch norm."""
    growth = _positive_int(growth, "growth", "composite")
    bias = not batch_norm
    parts = []
    if bottleneck:
        parts += [*_bn_relu(batch_norm), L.Conv2D(4 * growth, 1, init=init, bias=bias)]
    parts += [*_bn_relu(batch_norm), L.Conv2D(growth, 3, init=init, bias=bias)]
    return L.serial(*parts)


def dense_layer(growth: int, **kwargs) -> Layer:
    """One layer of a dense block, ``x -> [x, H(x)]``: ``concat(Identity(), H)``.
    Shapes: ``(H, W, C) -> (H, W, C + growth)``; params ``((), H's params)``. ``kwargs``
    go to :func:`composite`."""
    return L.concat(L.Identity(), composite(growth, **kwargs))


def dense_block(n_layers: int, growth: int, **kwargs) -> Layer:
    """``n_layers`` dense layers in series: layer ``l`` sees ``[x_0, x_1, ..., x_{l-1}]``
    and the block returns ``[x_0, ..., x_L]``. Shapes: ``(H, W, k_0) -> (H, W, k_0 +
    n_layers growth)``; params a tuple of :func:`dense_layer` params."""
    n_layers = _positive_int(n_layers, "n_layers", "dense_block")
    return L.serial(*[dense_layer(growth, **kwargs) for _ in range(n_layers)])


def transition(features: int, *, batch_norm: bool = True, init: str = "he") -> Layer:
    """BN -> ReLU -> Conv 1x1 with ``features`` maps -> 2x2 average pooling (stride 2).
    Shapes: ``(H, W, C) -> (H // 2, W // 2, features)``."""
    features = _positive_int(features, "features", "transition")
    return L.serial(*_bn_relu(batch_norm), L.Conv2D(features, 1, init=init, bias=not batch_norm),
                    L.AvgPool(2))


def _head(shape, n_classes, batch_norm, init) -> list[Layer]:
    """BN -> ReLU -> global average pooling over the ``shape[:2]`` image -> Dense."""
    return [*_bn_relu(batch_norm), L.AvgPool(tuple(shape[:2])), L.Flatten(),
            L.Dense(n_classes, init=init)]


def model(input_shape=(8, 8, 1), *, growth: int = 8, blocks=(4, 4), stem: int | None = None,
          compression: float = 0.5, batch_norm: bool = True, bottleneck: bool = False,
          n_classes: int = 10, init: str = "he") -> Model:
    """A DenseNet (module doc) for images of ``input_shape``.

    Args:
      input_shape: one image ``(H, W, C)``; 8x8x1 for the digits.
      growth: ``k``, the maps each layer adds.
      blocks: layers per dense block; a transition (halving the image) between blocks.
      stem: maps of the first 3x3 convolution; default ``2 growth``.
      compression: ``theta`` in ``(0, 1]``: a transition keeps ``max(1, floor(theta m))``
        of its ``m`` input maps.
      batch_norm: BN in every composite, transition and the head (convolutions then have no
        bias); ``False``: ReLU alone, convolutions with bias.
      bottleneck: a 1x1 convolution to ``4 growth`` maps before each 3x3 (DenseNet-B).
      n_classes: outputs of the classifier.
      init: initialisation of every convolution and the classifier
        (:data:`nets.layers.DENSE_INITS`); He et al.'s ``"he"`` by default, as the paper.

    Returns:
      A :class:`nets.model.Model` with outputs ``(n_classes,)``; stateful when
      ``batch_norm`` (running statistics). Params: ``(stem, block_1, transition_1, ...,
      block_B, head...)``.
    """
    growth = _positive_int(growth, "growth", "densenet.model")
    blocks = _blocks(blocks, "densenet.model")
    input_shape = _image(input_shape, blocks, "densenet.model")
    stem = 2 * growth if stem is None else _positive_int(stem, "stem", "densenet.model")
    n_classes = _positive_int(n_classes, "n_classes", "densenet.model")
    if isinstance(compression, bool) or not isinstance(
            compression, (int, float, np.integer, np.floating)) or not (0.0 < compression <= 1.0):
        raise ValueError(f"compression: densenet.model expected a number in (0, 1], got "
                         f"{compression!r}")
    compression = float(compression)
    kw = dict(batch_norm=batch_norm, init=init)
    layers, channels = [L.Conv2D(stem, 3, init=init, bias=not batch_norm)], stem
    shape = input_shape[:2]
    for i, n_layers in enumerate(blocks):
        layers.append(dense_block(n_layers, growth, bottleneck=bottleneck, **kw))
        channels += n_layers * growth  # k_0 + L k
        if i < len(blocks) - 1:
            channels = max(1, math.floor(compression * channels))
            layers.append(transition(channels, **kw))
            shape = (shape[0] // 2, shape[1] // 2)
    layers += _head(shape, n_classes, batch_norm, init)
    return Model(L.serial(*layers), input_shape=input_shape)


def plain(input_shape=(8, 8, 1), *, width: int, blocks=(4, 4), batch_norm: bool = True,
          n_classes: int = 10, init: str = "he") -> Model:
    """The plain counterpart of :func:`model`: ``x_l = H_l(x_{l-1})``, ``width`` maps
    everywhere (stem, every 3x3 layer, every transition), the same pooling and head.

    Shapes: ``(H, W, C) -> stem (H, W, width) -> blocks[0] layers -> transition (H/2, W/2,
    width) -> ... -> (n_classes,)``; :func:`plain_params` gives its parameter count.
    """
    width = _positive_int(width, "width", "densenet.plain")
    blocks = _blocks(blocks, "densenet.plain")
    input_shape = _image(input_shape, blocks, "densenet.plain")
    n_classes = _positive_int(n_classes, "n_classes", "densenet.plain")
    kw = dict(batch_norm=batch_norm, init=init)
    layers, shape = [L.Conv2D(width, 3, init=init, bias=not batch_norm)], input_shape[:2]
    for i, n_layers in enumerate(blocks):
        layers += [composite(width, **kw) for _ in range(n_layers)]
        if i < len(blocks) - 1:
            layers.append(transition(width, **kw))
            shape = (shape[0] // 2, shape[1] // 2)
    layers += _head(shape, n_classes, batch_norm, init)
    return Model(L.serial(*layers), input_shape=input_shape)


def plain_params(width, *, input_shape=(8, 8, 1), blocks=(4, 4), batch_norm: bool = True,
                 n_classes: int = 10):
    """Parameters of :func:`plain` with ``width`` maps, in closed form (``width`` may be an
    integer array). With ``N = sum(blocks)`` 3x3 layers, ``T = len(blocks) - 1``
    transitions, ``c`` input channels, ``n`` classes, ``bn = 1`` with batch norm (2 per map
    each time) and ``b = 1 - bn`` (conv biases):

        9 c w + b w                    stem
        + N (9 w^2 + 2 bn w + b w)     3x3 layers
        + T (w^2 + 2 bn w + b w)       transitions
        + 2 bn w + (w + 1) n           head
    """
    who = "plain_params"
    blocks = _blocks(blocks, who)
    c = _image(input_shape, blocks, who)[-1]
    n_classes = _positive_int(n_classes, "n_classes", who)
    if isinstance(width, (bool, np.bool_)):
        raise ValueError(f"width: {who} expected a positive int (or an array of them), got "
                         f"{width!r}")
    w = np.asarray(width)
    if w.dtype.kind not in "iu" or w.size == 0 or np.any(w < 1):
        raise ValueError(f"width: {who} expected a positive int (or an array of them), got "
                         f"{width!r}")
    w = w.astype(np.int64)
    bn, b = (1, 0) if batch_norm else (0, 1)
    N, T, n = sum(blocks), len(blocks) - 1, n_classes
    total = (9 * c * w + b * w + N * (9 * w * w + 2 * bn * w + b * w)
             + T * (w * w + 2 * bn * w + b * w) + 2 * bn * w + (w + 1) * n)
    return int(total) if total.ndim == 0 else total


def matched_plain(target: int, *, input_shape=(8, 8, 1), blocks=(4, 4),
                  batch_norm: bool = True, n_classes: int = 10, init: str = "he",
                  max_width: int = 4096) -> tuple[Model, int]:
    """``(plain net, width)``: the :func:`plain` net whose parameter count is nearest
    ``target`` (the smaller width on a tie), e.g. ``target = n_params(model(...))``."""
    target = _positive_int(target, "target", "matched_plain")
    max_width = _positive_int(max_width, "max_width", "matched_plain")
    widths = np.arange(1, max_width + 1)
    counts = plain_params(widths, input_shape=input_shape, blocks=blocks,
                          batch_norm=batch_norm, n_classes=n_classes)
    if counts[0] > target:
        raise ValueError(f"target: matched_plain expected at least {int(counts[0])} parameters "
                         f"(the plain net of width 1), got {target}")
    if counts[-1] < target:
        raise ValueError(f"target: matched_plain expected at most {int(counts[-1])} parameters "
                         f"(width {max_width}, raise max_width), got {target}")
    width = int(widths[np.argmin(np.abs(counts - target))])
    net = plain(input_shape, width=width, blocks=blocks, batch_norm=batch_norm,
                n_classes=n_classes, init=init)
    return net, width


def source_weights(params, blocks) -> list[np.ndarray]:
    """Mean ``|w|`` of each dense layer's first kernel on the maps of each source (the
    paper's Figure 5), for the ``params`` of :func:`model` built with ``blocks``.

    Returns one ``(L, L)`` array per block, ``L = blocks[b]``: entry ``[l - 1, s]`` is the
    mean absolute weight of layer ``l``'s kernel over the input channels holding ``x_s``
    (``s = 0``: the block input, ``k_0`` channels; ``s >= 1``: layer ``s``'s ``growth``
    maps); NaN for ``s >= l`` (not connected).
    """
    blocks = _blocks(blocks, "source_weights")
    if not isinstance(params, tuple) or len(params) < 2 * len(blocks):
        raise ValueError(f"params: source_weights expected the params of densenet.model with "
                         f"blocks={blocks}, got {type(params).__name__}")
    out = []
    for b, n_layers in enumerate(blocks):
        block = params[1 + 2 * b]  # (stem, block_1, transition_1, block_2, ...)
        if not isinstance(block, tuple) or len(block) != n_layers:
            raise ValueError(f"params: source_weights expected block {b + 1} to have "
                             f"{n_layers} layers (blocks={blocks}), got "
                             f"{len(block) if isinstance(block, tuple) else block!r}")
        kernels = [[leaf["W"] for leaf in layer[1] if isinstance(leaf, dict) and "W" in leaf]
                   for layer in block]  # per layer: (kh, kw, C_in, C_out) in order
        k0, growth = kernels[0][0].shape[-2], kernels[0][-1].shape[-1]
        m = np.full((n_layers, n_layers), np.nan)
        for l, ws in enumerate(kernels, 1):
            W = np.abs(np.asarray(ws[0], np.float64))
            edges = [0, k0, *(k0 + growth * s for s in range(1, l))]
            for s, (a, e) in enumerate(zip(edges[:-1], edges[1:])):
                m[l - 1, s] = W[:, :, a:e, :].mean()
        out.append(m)
    return out


def n_params(net: Model) -> int:
    """Trained scalars of ``net``, from its abstract ``init`` (no arrays, nothing compiled;
    traced once per model and cached with its output shape)."""
    if not isinstance(net, Model):
        raise TypeError(f"net: n_params expected a nets.model.Model, got {type(net).__name__}")
    return count_params(net._abstract[1])


__all__ = ["composite", "dense_layer", "dense_block", "transition", "model", "plain",
           "plain_params", "matched_plain", "source_weights", "n_params"]
