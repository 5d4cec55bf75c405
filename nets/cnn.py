"""Local connectivity and weight sharing: ESL's five digit networks (section 11.7, Table 11.1)
and a small modern CNN, composed from :mod:`nets.layers`.

ESL section 11.7 (after Le Cun 1989) trains five networks on 320 handwritten ZIP-code digits
(16x16 grey images) and tests them on 160:

=======  ======================================================  =====  =======  ========
net      architecture (ESL Figure 11.10)                         links  weights  accuracy
=======  ======================================================  =====  =======  ========
Net-1    no hidden layer (multinomial logistic regression)        2570     2570     80.0%
Net-2    one hidden layer, 12 units, fully connected              3214     3214     87.0%
Net-3    two hidden layers, locally connected                     1226     1226     88.5%
Net-4    Net-3 with shared weights in the first hidden layer      2266     1132     94.0%
Net-5    two levels of weight sharing                             5194     1060     98.4%
=======  ======================================================  =====  =======  ========

(:data:`ESL_TABLE_11_1`). *Links* are connections: each carries a weight from a unit (or from
the constant 1, a bias) to a unit, one multiply-add per example. With weight sharing one
weight serves many links, so Net-5 has five times more connections than parameters.

The architectures, as ESL describes them (its 16x16 input ``->`` this module's default 8x8):

* Net-3: hidden layer 1 is an 8x8 array, each unit sees a 3x3 patch of the input (patches 2
  pixels apart on 16x16 images; 1 pixel apart on 8x8); hidden layer 2 is 4x4, each unit sees
  a 5x5 patch of layer 1, patches 2 units apart; no weights are shared
  (:func:`LocallyConnected2D`); every unit has its own bias.
* Net-4: hidden layer 1 is two 8x8 *feature maps*, each unit a 3x3 patch, the 9 weights
  shared by all units of a map (a convolution); layer 2 as in Net-3, its 5x5 patches
  spanning both maps.
* Net-5: layer 1 as in Net-4; layer 2 is four 4x4 feature maps, each unit a 5x5 patch of
  both layer-1 maps, weights shared within each map.

ESL shares weights but not biases: every hidden unit keeps its own bias (this is what makes
the counts of Table 11.1 come out: Net-4's layer 1 has 2 x 9 shared weights and 128 biases).
Here every hidden layer is a :func:`LocallyConnected2D`, ``share=True`` in the shared ones
(a convolution with a bias per unit; equal to :func:`nets.layers.Conv2D` without bias plus
one bias per unit, and several times faster on CPU when ``train.sweep`` stacks models).

**Adaptation to 8x8 digits.** The hidden layers keep ESL's sizes exactly (8x8 and 4x4 units,
two and four maps, 3x3 and 5x5 patches); only the first layer's stride changes, from 2 on
16x16 images to 1 on 8x8 ones (``first_stride=None`` picks it from the input: ``H / 8``).
Hence Net-3, Net-4 and Net-5 have ESL's parameter and connection counts exactly, and Net-1
and Net-2 have fewer (64 instead of 256 inputs): 650 and 910. With ``input_shape=(16, 16,
1)`` all five reproduce Table 11.1's links and weights (the tests pin them).
``first_stride=2`` on 8x8 images halves every hidden layer instead (4x4, then 2x2 units).
Padding is ``"SAME"``: a unit at the border has its full patch, partly zeros, and its links
are counted as ESL counts them (every unit of a layer has the same number).

ESL's networks have sigmoid hidden and output units fit by squared error; here the output is
the softmax of :mod:`nets.objective`'s cross-entropy (the hidden ``activation`` is an
argument, sigmoid by default). ``experiments/cnn.py`` trains them on 320 digits.

>>> nets = esl_nets()
>>> [(n.params, n.connections) for n in nets.values()]
[(650, 650), (910, 910), (1226, 1226), (1132, 2266), (1060, 5194)]
>>> esl = esl_nets((16, 16, 1))
>>> all((esl[k].connections, esl[k].params) == (v["links"], v["weights"])
...     for k, v in ESL_TABLE_11_1.items())
True

References:
  Hastie, Tibshirani & Friedman, *The Elements of Statistical Learning*, 2nd ed., section
  11.7, Figure 11.10, Table 11.1. Le Cun, *Generalization and network design strategies*,
  1989 (Technical Report CRG-TR-89-4, University of Toronto). LeCun, Bottou, Bengio &
  Haffner, *Gradient-based learning applied to document recognition*, Proc. IEEE 86, 1998.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as _core

from nets import _checks
from nets import layers as L
from nets.layers import Layer, _check_init, _check_out, _padding, _shape, count_params
from nets.model import Model

ESL_TABLE_11_1 = {  # ESL Table 11.1: links (connections), weights (parameters), test accuracy
    "net1": {"links": 2570, "weights": 2570, "accuracy": 0.800},
    "net2": {"links": 3214, "weights": 3214, "accuracy": 0.870},
    "net3": {"links": 1226, "weights": 1226, "accuracy": 0.885},
    "net4": {"links": 2266, "weights": 1132, "accuracy": 0.940},
    "net5": {"links": 5194, "weights": 1060, "accuracy": 0.984},
}

ESL_NAMES = {"net1": "Net-1", "net2": "Net-2", "net3": "Net-3", "net4": "Net-4", "net5": "Net-5"}


class Net(NamedTuple):
    """A network with its sizes. ``params``: trained scalars (:func:`nets.count_params`);
    ``connections``: links, i.e. multiply-adds per example with a trained weight or bias
    (:func:`connections`); ``description``: the architecture in one line."""

    name: str
    model: Model
    params: int
    connections: int
    description: str


# ---------------------------------------------------------------------------------------
# layers


def _initializer(init: str, scale: float, positions: bool):
    """A weight initializer for a kernel ``(kh, kw, C_in, C_out)``, or with ``positions``
    ``(H', W', kh, kw, C_in, C_out)`` (the output positions as batch axes): fan-in
    ``kh kw C_in``, fan-out ``C_out``, as :func:`nets.layers.Conv2D`."""
    if init == "esl":
        return lambda key, shape: jax.random.uniform(key, shape, minval=-scale, maxval=scale)
    make = {"glorot": jax.nn.initializers.glorot_uniform,
            "he": jax.nn.initializers.he_normal,
            "lecun": jax.nn.initializers.lecun_normal}[init]
    return make(in_axis=-2, out_axis=-1, batch_axis=(0, 1) if positions else ())


def _unit_bias(key, n, init, scale):
    if init == "esl":
        return jax.random.uniform(key, (n,), minval=-scale, maxval=scale)
    return jnp.zeros((n,))


def LocallyConnected2D(features: int, kernel_size, *, stride=1, padding="SAME",
                       share: bool = False, init: str = "glorot", bias: bool = True,
                       scale: float = 0.7) -> Layer:
    """Local connectivity, with or without weight sharing (ESL section 11.7; Le Cun 1989).

    Each output unit ``(i, j, o)`` sees one ``kh x kw`` patch of the input, as in
    :func:`nets.layers.Conv2D`. Without sharing (ESL's Net-3) every unit has its OWN weights:

        ``y[i, j, o] = sum_{di, dj, c} x[i*s + di, j*s + dj, c] W[i, j, di, dj, c, o] + b[i, j, o]``

    and with ``share=True`` (ESL's Net-4 and Net-5) the units of a feature map ``o`` share
    one kernel ``W[di, dj, c, o]``: a convolution, but, as in ESL, every unit keeps its own
    bias ``b[i, j, o]`` (``Conv2D(features, k, bias=False)`` plus a bias per unit; the tests
    check the equality). A cross-correlation, padding as in Conv2D. Computed as the patches
    of ``x`` (``(H', W', kh, kw, C)``, the entries of
    ``jax.lax.conv_general_dilated_patches``, taken by a gather: ``nets.layers._patches``,
    which ``Conv2D(impl="patches")`` uses too) contracted with ``W`` by ``jnp.einsum``: under ``jax.vmap`` over stacked models
    (``train.sweep``) this runs several times faster on XLA:CPU than ``conv_general_dilated``,
    whose input gradient becomes a slow grouped convolution there.

    Shapes: ``(H, W, C_in) -> (H', W', features)`` with ``H'`` as for Conv2D (``"SAME"``:
    ``ceil(H / s)``; ``"VALID"``: ``(H - kh) // s + 1``). Params: ``"W"`` of shape
    ``(H', W', kh, kw, C_in, features)`` (Conv2D's HWIO kernel, one per output position) or,
    shared, ``(kh, kw, C_in, features)``; ``"b"`` of shape ``(H' * W' * features,)``, stored
    flat (C order over ``(H', W', features)``) so that, as a vector, :mod:`nets.penalties`
    treats it as a bias and does not decay it. Connections: ``H' W' features (kh kw C_in +
    1)`` either way; parameters the same without sharing, ``kh kw C_in features + H' W'
    features`` with it. ``init`` as in :func:`nets.layers.Dense` (fan-in ``kh kw C_in``,
    fan-out ``features``).

    >>> import jax
    >>> layer = LocallyConnected2D(2, 3, stride=2)
    >>> out, params, _ = layer.init(jax.random.key(0), (8, 8, 1))
    >>> out, params["W"].shape, params["b"].shape
    ((4, 4, 2), (4, 4, 3, 3, 1, 2), (32,))
    """
    who = "LocallyConnected2D"
    if isinstance(features, bool) or not isinstance(features, (int, np.integer)) or features < 1:
        raise ValueError(f"features: {who} expected a positive int, got {features!r}")
    features = int(features)
    kernel = _checks.check_pair(kernel_size, "kernel_size", who)
    stride = _checks.check_pair(stride, "stride", who)
    pad = _padding(padding, who)
    _check_init(init, scale, who)

    def init_fn(key, input_shape):
        input_shape = _shape(input_shape, who)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape: {who} expected one image (H, W, C), got "
                             f"{input_shape}")
        hw = jax.eval_shape(lambda x: L._patches(x, kernel, stride, pad),
                            jax.ShapeDtypeStruct(input_shape, jnp.float32)).shape[:2]
        out = _check_out((*hw, features), input_shape, who)
        kw, kb = jax.random.split(key)
        w_shape = (*kernel, input_shape[2], features)
        if share:
            params = {"W": _initializer(init, scale, positions=False)(kw, w_shape)}
        else:
            params = {"W": _initializer(init, scale, positions=True)(kw, (*hw, *w_shape))}
        if bias:
            params["b"] = _unit_bias(kb, math.prod(out), init, scale)
        return out, params, ()

    def apply(params, state, x, *, train=False, key=None):
        W = params["W"]  # (H', W', kh, kw, C_in, features), or shared (kh, kw, C_in, features)
        if jnp.ndim(x) != 3 or jnp.shape(x)[2] != W.shape[-2]:
            raise ValueError(f"x: {who} expected one image (H, W, {W.shape[-2]}), got shape "
                             f"{jnp.shape(x)}")
        p = L._patches(x, kernel, stride, pad)  # (H', W', kh, kw, C_in)
        if not share and p.shape[:2] != W.shape[:2]:
            raise ValueError(f"x: {who} was built for {W.shape[:2]} output positions, got an "
                             f"image of shape {jnp.shape(x)} giving {p.shape[:2]}")
        if share:
            y = jnp.einsum("ijuvc,uvco->ijo", p, W)  # (H', W', features)
        else:
            y = jnp.einsum("ijuvc,ijuvco->ijo", p, W)  # (H', W', features)
        if "b" in params:
            if params["b"].shape[0] != y.size:
                raise ValueError(f"x: {who} holds {params['b'].shape[0]} unit biases, the "
                                 f"image of shape {jnp.shape(x)} gives {y.size} units")
            y = y + params["b"].reshape(y.shape)
        return y, state

    return Layer(init_fn, apply)


# ---------------------------------------------------------------------------------------
# counting connections


_COUNTED = ("dot_general", "conv_general_dilated")
_BIAS_ADDS = ("add", "sub", "add_any")


def connections(model: Model) -> int:
    """Links of ``model``: multiply-adds per example with a trained parameter, as ESL counts
    them (Table 11.1), read off the jaxpr of ``model.apply`` for one example.

    Counted: every ``dot_general`` (dense layers, einsums) and ``conv_general_dilated``
    whose one operand is computed from the parameters alone and the other from the input
    (one link per output element and contracted element: ``n_out * n_in`` for a dense layer,
    ``H' W' C_out * kh kw C_in`` for a convolution, border padding included); and every
    addition of a parameter-only array to an input-dependent one (a bias: one link per
    output element). Not counted: pooling, activations, patch extraction (a convolution
    with a constant filter) and products of two activations. Sub-programs (``jit``,
    ``custom_jvp``) are followed; ``scan`` bodies count ``length`` times.

    >>> connections(Model(L.serial(L.Flatten(), L.Dense(10)), input_shape=(8, 8, 1)))
    650
    >>> connections(Model(L.serial(L.Conv2D(2, 3), L.Flatten(), L.Dense(10)), (8, 8, 1)))
    2570
    """
    params, state = jax.eval_shape(model.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct(model.input_shape, jnp.float32)
    closed = jax.make_jaxpr(
        lambda p, s, x: model.apply(p, x, state=s if model.stateful else None,
                                    train=False))(params, state, x)
    n_p, n_s = len(jax.tree.leaves(params)), len(jax.tree.leaves(state))
    # (depends on the params, depends on the input) for every input of the program
    flags = [(True, False)] * n_p + [(False, False)] * n_s + [(False, True)]
    return int(_count(closed.jaxpr, flags))


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        if isinstance(value, _core.ClosedJaxpr):
            yield value.jaxpr
        elif isinstance(value, _core.Jaxpr):
            yield value


def _count(jaxpr, flags) -> int:
    """Links in ``jaxpr`` given ``(P, X)`` flags of its inputs (P: computed from params,
    X: computed from the example)."""
    env = {v: f for v, f in zip(jaxpr.invars, flags)}
    env.update({v: (False, False) for v in jaxpr.constvars})

    def flag(v):
        return (False, False) if isinstance(v, _core.Literal) else env[v]

    total = 0
    for eqn in jaxpr.eqns:
        fin = [flag(v) for v in eqn.invars]
        weight = [p and not x for p, x in fin]  # from the parameters alone
        data = [x for _, x in fin]  # from the example
        name = eqn.primitive.name
        if name in _COUNTED and len(fin) >= 2 and (weight[1] and data[0]
                                                   or weight[0] and data[1]):
            out = math.prod(eqn.outvars[0].aval.shape)
            lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
            if name == "dot_general":
                (contract, _), _ = eqn.params["dimension_numbers"]
                total += out * math.prod(lhs[d] for d in contract)
            else:  # per output element: the kernel's size over its output features
                o = eqn.params["dimension_numbers"].rhs_spec[0]
                total += out * (math.prod(rhs) // rhs[o])
        elif name in _BIAS_ADDS and any(weight) and any(data):
            total += math.prod(eqn.outvars[0].aval.shape)
        else:
            for sub in _sub_jaxprs(eqn):
                if len(sub.invars) != len(fin):
                    raise NotImplementedError(f"connections: cannot follow the inputs of "
                                              f"{name!r} into its sub-program")
                total += _count(sub, fin) * int(eqn.params.get("length", 1))
        out_flag = (any(p for p, _ in fin), any(data))
        for v in eqn.outvars:
            env[v] = out_flag
    return total


# ---------------------------------------------------------------------------------------
# the networks


def _net(name, layer, input_shape, description) -> Net:
    model = Model(layer, input_shape=input_shape)
    params, _ = jax.eval_shape(model.init, jax.random.key(0))  # shapes only, nothing compiled
    return Net(name, model, count_params(params), connections(model), description)


def _image(input_shape, who):
    input_shape = _shape(input_shape, who)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape: {who} expected one image (H, W, C), got {input_shape}")
    return input_shape


def _first_stride(input_shape, first_stride, who):
    if first_stride is None:
        H, W = input_shape[:2]
        if H != W or H % 8:
            raise ValueError(f"input_shape: {who} picks the stride that gives ESL's 8x8 first "
                             f"hidden layer, which needs a square image whose side is a "
                             f"multiple of 8, got {input_shape}; pass first_stride")
        return (H // 8, H // 8)
    return _checks.check_pair(first_stride, "first_stride", who)


def _size(shape):
    return "x".join(map(str, shape[:2])) + (f"x{shape[2]}" if shape[2] > 1 else "")


def net1(input_shape=(8, 8, 1), *, init: str = "glorot") -> Net:
    """ESL's Net-1: no hidden layer, ``softmax(W vec(x) + b)`` (multinomial logistic
    regression). Parameters = connections = ``(H W C + 1) 10``."""
    input_shape = _image(input_shape, "net1")
    return _net("net1", L.serial(L.Flatten(), L.Dense(10, init=init)), input_shape,
                f"{_size(input_shape)} -> 10, fully connected")


def net2(input_shape=(8, 8, 1), *, hidden: int = 12, activation="sigmoid",
         init: str = "glorot") -> Net:
    """ESL's Net-2: one fully connected hidden layer of ``hidden`` (12) units."""
    input_shape = _image(input_shape, "net2")
    hidden = _checks.check_int(hidden, "hidden: net2", 1)
    layer = L.serial(L.Flatten(), L.Dense(hidden, init=init), L.Activation(activation),
                     L.Dense(10, init=init))
    return _net("net2", layer, input_shape,
                f"{_size(input_shape)} -> {hidden} -> 10, fully connected")


def _esl_hidden(name, input_shape, first_stride, activation, init):
    """The two hidden layers of Net-3 (local, local), Net-4 (shared, local), Net-5
    (shared, shared) and their output shapes."""
    s = _first_stride(input_shape, first_stride, name)  # (along H, along W)
    maps1, shared1 = (1, False) if name == "net3" else (2, True)
    maps2, shared2 = (4, True) if name == "net5" else (1, False)
    h1 = LocallyConnected2D(maps1, 3, stride=s, share=shared1, init=init)
    h2 = LocallyConnected2D(maps2, 5, stride=2, share=shared2, init=init)
    g = L.Activation(activation)
    shape1 = (-(-input_shape[0] // s[0]), -(-input_shape[1] // s[1]), maps1)
    shape2 = (-(-shape1[0] // 2), -(-shape1[1] // 2), maps2)
    kind = {False: "local", True: "shared"}
    stride = s[0] if s[0] == s[1] else f"{s[0]}x{s[1]}"
    text = (f"{_size(input_shape)} -> {_size(shape1)} {kind[shared1]} 3x3 (stride {stride}) -> "
            f"{_size(shape2)} {kind[shared2]} 5x5 (stride 2) -> 10")
    return L.serial(h1, g, h2, g, L.Flatten(), L.Dense(10, init=init)), text


def net3(input_shape=(8, 8, 1), *, first_stride=None, activation="sigmoid",
         init: str = "glorot") -> Net:
    """ESL's Net-3: two locally connected hidden layers, no weight sharing: 8x8 units on
    3x3 patches (stride ``first_stride``: an int, or a pair ``(along H, along W)``), then 4x4
    units on 5x5 patches (stride 2)."""
    input_shape = _image(input_shape, "net3")
    layer, text = _esl_hidden("net3", input_shape, first_stride, activation, init)
    return _net("net3", layer, input_shape, text)


def net4(input_shape=(8, 8, 1), *, first_stride=None, activation="sigmoid",
         init: str = "glorot") -> Net:
    """ESL's Net-4: Net-3 with two 8x8 feature maps sharing 3x3 weights (a convolution
    without shared biases) in the first hidden layer; the second stays locally connected."""
    input_shape = _image(input_shape, "net4")
    layer, text = _esl_hidden("net4", input_shape, first_stride, activation, init)
    return _net("net4", layer, input_shape, text)


def net5(input_shape=(8, 8, 1), *, first_stride=None, activation="sigmoid",
         init: str = "glorot") -> Net:
    """ESL's Net-5: two levels of weight sharing: Net-4's first layer, then four 4x4
    feature maps, each with one 5x5x2 kernel over both first-layer maps."""
    input_shape = _image(input_shape, "net5")
    layer, text = _esl_hidden("net5", input_shape, first_stride, activation, init)
    return _net("net5", layer, input_shape, text)


def esl_nets(input_shape=(8, 8, 1), *, first_stride=None, activation="sigmoid",
             init: str = "glorot") -> dict[str, Net]:
    """Net-1 ... Net-5 of ESL Table 11.1 for images of ``input_shape``, by name."""
    kw = dict(activation=activation, init=init)
    hidden = dict(first_stride=first_stride, **kw)
    return {"net1": net1(input_shape, init=init), "net2": net2(input_shape, **kw),
            "net3": net3(input_shape, **hidden), "net4": net4(input_shape, **hidden),
            "net5": net5(input_shape, **hidden)}


def modern_cnn(input_shape=(8, 8, 1), *, features=(16, 32), kernel_size: int = 3,
               n_classes: int = 10, init: str = "he", conv_impl: str = "conv") -> Net:
    """A small modern CNN: ``(Conv2D 3x3 "SAME" -> ReLU -> MaxPool 2x2)`` per entry of
    ``features``, then Flatten and Dense(``n_classes``). Conv biases are shared per map.
    ``conv_impl``: :func:`nets.layers.Conv2D`'s ``impl`` (``"patches"``: faster on a CPU).

    On 8x8 digits with ``features=(16, 32)``: 8x8x16 -> 4x4x16 -> 4x4x32 -> 2x2x32 -> 10;
    6,090 parameters, 85,770 connections.

    References: LeCun et al. 1998 (convolution and subsampling); Krizhevsky, Sutskever &
    Hinton 2012 (ReLU and max pooling).
    """
    input_shape = _image(input_shape, "modern_cnn")
    n_classes = _checks.check_int(n_classes, "n_classes: modern_cnn", 1)
    if isinstance(kernel_size, np.integer):  # NumPy ints as Python ones (Conv2D checks the rest)
        kernel_size = int(kernel_size)
    if conv_impl not in L.CONV_IMPLS:
        raise ValueError(f"conv_impl: modern_cnn expected one of {L.CONV_IMPLS}, got "
                         f"{conv_impl!r}")
    features = _checks.check_ints(features, "features", "modern_cnn")
    blocks, shape, text = [], input_shape, [_size(input_shape)]
    for f in features:
        blocks += [L.Conv2D(f, kernel_size, init=init, impl=conv_impl), L.Relu(),
                   L.MaxPool(2)]
        shape = (shape[0] // 2, shape[1] // 2, f)
        text.append(f"conv {kernel_size}x{kernel_size}x{f} relu pool -> {_size(shape)}")
    text.append(str(n_classes))
    layer = L.serial(*blocks, L.Flatten(), L.Dense(n_classes, init=init))
    return _net("cnn", layer, input_shape, " -> ".join(text))


def first_layer_filters(net_name: str, params) -> np.ndarray:
    """The first hidden layer's kernels of a shared-weight net (Net-4, Net-5, the modern
    CNN) as ``(maps, kh, kw)`` images (one input channel); stacked params
    ``(models, ...)`` give ``(models, maps, kh, kw)``."""
    if net_name not in ("net4", "net5", "cnn"):
        raise ValueError(f"net_name: expected 'net4', 'net5' or 'cnn' (a shared first layer), "
                         f"got {net_name!r}")
    try:
        W = np.asarray(params[0]["W"])  # (..., kh, kw, 1, maps)
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"params: expected {net_name}'s parameters (a list whose first layer "
                         f"holds a kernel 'W'), got {type(params).__name__}") from None
    kernel = {"net4": (3, 3, 1, 2), "net5": (3, 3, 1, 2)}.get(net_name)
    ok = W.ndim in (4, 5) and W.shape[-2] == 1 and (
        kernel is None or W.shape[-4:] == kernel)
    if not ok:
        want = (f"(kh, kw, 1, maps) = {kernel}" if kernel else "(kh, kw, 1, maps)")
        raise ValueError(
            f"params: expected {net_name}'s shared first-layer kernel of shape {want} (one "
            f"input channel; stacked: (models, ...)), got a first-layer 'W' of shape {W.shape}")
    return np.moveaxis(W[..., 0, :], -1, -3)


__all__ = ["ESL_TABLE_11_1", "ESL_NAMES", "Net", "LocallyConnected2D", "connections",
           "net1", "net2", "net3", "net4", "net5", "esl_nets", "modern_cnn",
           "first_layer_filters"]
