"""The hand-derived backward passes of convolution and max pooling (nets.backprop) against
jax.grad of the layers (nets.layers.Conv2D, MaxPool), in float64, per element to 1e-10; and
proof that this comparison has teeth: a dropped bias term, a dropped padding offset, an
unflipped kernel, a pooling gradient sent to every element or to every tied maximum, each
is caught by the same comparison.

Cheap by construction: the autodiff gradients of each layer configuration are computed once
(one compiled program per configuration, shared by every test); the backward passes are
NumPy and compile nothing.
"""

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import backprop, gradcheck
from nets import layers as L

TOL = 1e-10  # both sides are exact up to rounding (~1e-15); a slip is an error of order 1
FLOOR = 1e-3  # entries are O(1) (normal inputs): below 1e-3 compare absolutely, to 1e-13

# (one image (H, W, C_in), C_out, kernel, stride, padding): stride 1 and 2, SAME with even
# and with asymmetric padding (7 rows, stride 2: one row above, one below; 6 columns: none
# on the left, one on the right), VALID leaving a row and a column no window reaches, and
# explicit asymmetric padding with a rectangular stride.
CONV = [
    ((6, 6, 2), 3, 3, 1, "SAME"),
    ((7, 6, 2), 3, 3, 2, "SAME"),
    ((7, 6, 2), 2, (2, 3), 2, "VALID"),
    ((5, 6, 1), 2, 3, (1, 2), ((1, 2), (0, 1))),
]
# (one image, window, stride, padding): non-overlapping, overlapping with SAME padding,
# overlapping rectangular windows.
POOL = [
    ((6, 6, 2), 2, None, "VALID"),
    ((5, 6, 2), 3, 2, "SAME"),
    ((5, 7, 1), (2, 3), 1, "VALID"),
]
N = 2  # images per batch


def _vjp_program(layer):
    """``(params, x, dy) -> jax.grad of sum(dy * y)`` w.r.t. ``(params, x)``: the layer's
    backward pass by autodiff, jitted (one compilation per configuration)."""

    def contracted(params, x, dy):
        y = jax.vmap(lambda xi: layer.apply(params, (), xi)[0])(x)
        return jnp.sum(dy * y)

    return jax.jit(jax.grad(contracted, argnums=(0, 1)))


def _out_shape(layer, params, shape):
    """The layer's output shape for one image, traced abstractly (nothing compiled)."""
    return jax.eval_shape(lambda p, x: layer.apply(p, (), x)[0], params,
                          jax.ShapeDtypeStruct(shape, jnp.float64)).shape


@pytest.fixture(scope="module")
def conv_cases():
    """Per configuration: x, W, dy and autodiff's (dx, dW, db), float64 (NumPy draws, seeded
    by the module's name: drawing with jax.random would compile per shape)."""
    rng = np.random.default_rng(zlib.crc32(b"tests/test_backprop_conv.py::conv"))
    cases = []
    with jax.enable_x64(True):
        for shape, c_out, kernel, stride, padding in CONV:
            layer = L.Conv2D(c_out, kernel, stride=stride, padding=padding)
            k = L._pair(kernel, "kernel", "test")
            params = {"W": rng.normal(size=(*k, shape[2], c_out)), "b": rng.normal(size=c_out)}
            x = rng.normal(size=(N, *shape))
            dy = rng.normal(size=(N, *_out_shape(layer, params, shape)))
            g_params, dx = _vjp_program(layer)(params, x, dy)
            cases.append({"x": x, "W": params["W"], "dy": dy, "stride": stride,
                          "padding": padding, "autodiff": tuple(
                              np.asarray(g) for g in (dx, g_params["W"], g_params["b"]))})
    return cases


@pytest.fixture(scope="module")
def pool_cases():
    """Per configuration, for continuous inputs (no ties) and for inputs in {0, 1} (ties in
    most windows): x, dy and autodiff's dx, float64."""
    rng = np.random.default_rng(zlib.crc32(b"tests/test_backprop_conv.py::pool"))
    cases = []
    with jax.enable_x64(True):
        for shape, window, stride, padding in POOL:
            layer = L.MaxPool(window, stride, padding)
            program = _vjp_program(layer)
            dy = rng.normal(size=(N, *_out_shape(layer, (), shape)))
            for ties, x in ((False, rng.normal(size=(N, *shape))),
                            (True, rng.integers(0, 2, (N, *shape)).astype(np.float64))):
                dx = program((), x, dy)[1]
                cases.append({"x": x, "dy": dy, "window": window, "stride": stride,
                              "padding": padding, "ties": ties, "autodiff": np.asarray(dx)})
    return cases


err = functools.partial(gradcheck.relative_error, floor=FLOOR)


def _conv_errors(case, backward=backprop.conv2d_backward):
    """Per-element relative errors of (dx, dW, db): hand-derived vs autodiff."""
    mine = backward(case["dy"], case["x"], case["W"], stride=case["stride"],
                    padding=case["padding"])
    return tuple(err(a, b) for a, b in zip(mine, case["autodiff"]))


def _pool_error(case):
    mine = backprop.max_pool_backward(case["dy"], case["x"], window=case["window"],
                                      stride=case["stride"], padding=case["padding"])
    return err(mine, case["autodiff"])


def test_conv_backward_equals_autodiff(conv_cases):
    for config, case in zip(CONV, conv_cases):
        assert max(_conv_errors(case)) <= TOL, config


def test_max_pool_backward_equals_autodiff_with_and_without_ties(pool_cases):
    """Each window's gradient goes to its first maximum in row-major order, as jax.grad's
    select-and-scatter does: equal to jax.grad on inputs full of ties too."""
    assert sum(c["ties"] for c in pool_cases) == len(POOL)
    for case in pool_cases:
        assert _pool_error(case) <= TOL, (case["window"], case["stride"], case["padding"],
                                          case["ties"])


def test_dropping_the_bias_term_is_caught(conv_cases):
    def no_bias(*args, **kwargs):
        dx, dW, db = backprop.conv2d_backward(*args, **kwargs)
        return dx, dW, np.zeros_like(db)

    for case in conv_cases:
        dx, dW, db = _conv_errors(case, no_bias)
        assert max(dx, dW) <= TOL and db > 1e-2


def test_dropping_the_padding_offset_is_caught(conv_cases, monkeypatch):
    """All the padding put after the image (top = left = 0, the output shape unchanged):
    a classic slip with SAME padding. Caught in dx and dW wherever there is padding before
    the image; VALID (no padding) is unaffected."""
    resolve = backprop._explicit_pads
    monkeypatch.setattr(backprop, "_explicit_pads", lambda *args: tuple(
        (0, lo + hi) for lo, hi in resolve(*args)))
    padded_before = [c for c in conv_cases if any(lo for lo, _ in resolve(
        c["x"].shape[1:3], c["W"].shape[:2], L._pair(c["stride"], "", ""), c["padding"], ""))]
    assert len(padded_before) == 3
    for case in padded_before:
        dx, dW, db = _conv_errors(case)
        assert dx > 1e-2 and dW > 1e-2 and db <= TOL
    valid = conv_cases[2]
    assert max(_conv_errors(valid)) <= TOL


def test_an_unflipped_kernel_is_caught(conv_cases, monkeypatch):
    """dL/dx correlates with the kernel rotated by 180 degrees; without the rotation (only
    the channels swapped) dx is wrong, dW and db are not."""
    monkeypatch.setattr(backprop, "_flip", lambda W: np.transpose(W, (0, 1, 3, 2)))
    for case in conv_cases:
        dx, dW, db = _conv_errors(case)
        assert dx > 1e-2 and max(dW, db) <= TOL


def test_pooling_gradient_to_every_element_is_caught(pool_cases, monkeypatch):
    monkeypatch.setattr(backprop, "_first_maxima",
                        lambda windows, y: [np.ones(y.shape, bool) for _ in windows])
    for case in pool_cases:
        assert _pool_error(case) > 1e-2


def test_pooling_gradient_to_every_tied_maximum_is_caught(pool_cases, monkeypatch):
    """Sending dy to every entry equal to the maximum agrees with jax.grad without ties and
    is caught on inputs with ties: the tie rule is checked, not assumed."""
    monkeypatch.setattr(backprop, "_first_maxima", lambda windows, y: [w == y for w in windows])
    for case in pool_cases:
        assert (_pool_error(case) > 1e-2) if case["ties"] else (_pool_error(case) <= TOL)


def test_bad_shapes_are_clear_errors():
    x, W = np.zeros((1, 5, 5, 2)), np.zeros((3, 3, 2, 4))
    with pytest.raises(ValueError, match=r"dy: conv2d_backward expected shape \(1, 5, 5, 4\)"):
        backprop.conv2d_backward(np.zeros((1, 5, 5, 3)), x, W)
    with pytest.raises(ValueError, match=r"x: conv2d_backward expected a batch of images"):
        backprop.conv2d_backward(np.zeros((5, 5, 4)), x[0], W)
    # A kernel that is not 4-D, and an input whose channels are not the kernel's C_in: named
    # as W and x (not an unpacking error, not a dy of the very shape it expects).
    with pytest.raises(ValueError, match=r"^W: conv2d_backward expected a 4-D kernel of shape "
                                         r"\(kh, kw, C_in, C_out\) \(HWIO\), got shape "
                                         r"\(3, 2, 4\)$"):
        backprop.conv2d_backward(np.zeros((1, 5, 5, 4)), x, W[0])
    with pytest.raises(ValueError, match=r"^x: conv2d_backward expected 3 channels \(C_in of "
                                         r"the kernel W of shape \(3, 3, 3, 4\), HWIO\), got x "
                                         r"of shape \(1, 5, 5, 2\) with 2$"):
        backprop.conv2d_backward(np.zeros((1, 5, 5, 4)), x, np.zeros((3, 3, 3, 4)))
    with pytest.raises(ValueError, match=r"dy: max_pool_backward expected shape \(1, 2, 2, 2\)"):
        backprop.max_pool_backward(np.zeros((1, 3, 3, 2)), x, window=2)
