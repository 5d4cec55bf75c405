"""Layers of your own: serial, residual, concat and Model check what a layer's init and apply
return (``(output_shape, params, state)``, ``(y, new_state)``) while tracing, and name the
layer when the contract is broken, where a forgotten state was once unpacked row by row, or
blamed on the next layer, or a JAX-internal vmap error. Nothing is compiled here: the
errors are raised while tracing (``jax.eval_shape``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import Model, objective
from nets import layers as L

X = np.ones((5, 4), np.float32)


def TwoHeads(d, *, forget_state=False, two_outputs=False):
    """(n_in,) -> (2, d); with ``forget_state`` its apply returns y alone, with
    ``two_outputs`` the two heads and no state."""

    def init(key, s):
        return (2, d), {"W": 0.1 * jax.random.normal(key, (2, d, s[0]))}, ()

    def apply(params, state, x, *, train=False, key=None):
        y = jnp.einsum("hdi,i->hd", params["W"], x)
        if forget_state:
            return y
        if two_outputs:
            return y[0], y[1]
        return y, state

    return L.Layer(init, apply)


def _params(model):
    return jax.eval_shape(model.init, jax.random.key(0))[0]


FORGOT = (r"expected TwoHeads.apply\(params, state, x, \*, train, key\) to return "
          r"\(y, new_state\), got an array of shape \(2, 3\); return y, state")


def test_apply_returning_y_alone_is_named_everywhere_it_is_called():
    """It once gave output (3,) for output_shape (2, 3) (the array unpacked row by row)."""
    last = Model(L.serial(L.Dense(8), L.Relu(), TwoHeads(3, forget_state=True)), (4,),
                 output="identity")
    assert last.output_shape == (2, 3)  # init is right
    p = _params(last)
    calls = {
        "apply": lambda p: last.apply(p, X[0]),
        "batch_apply": lambda p: last.batch_apply(p, X)[0],
        "objective": lambda p: objective.make(last, "squared_error")(p, X, np.zeros((5, 2, 3))),
    }
    for call in calls.values():
        with pytest.raises(TypeError, match=r"^serial: layers\[2\]: " + FORGOT):
            jax.eval_shape(call, p)
    middle = Model(L.serial(L.Dense(8), TwoHeads(3, forget_state=True), L.Flatten(),
                            L.Dense(2)), (4,))
    with pytest.raises(TypeError, match=r"^serial: layers\[1\]: " + FORGOT):  # not the Dense after
        jax.eval_shape(lambda p: middle.batch_apply(p, X), _params(middle))
    bare = Model(TwoHeads(3, forget_state=True), (4,), output="identity")
    with pytest.raises(TypeError, match=r"^layer: " + FORGOT):
        jax.eval_shape(lambda p: bare.batch_apply(p, X), _params(bare))


def test_residual_and_concat_name_the_layer():
    keep = L.Layer(lambda key, s: (tuple(s), (), ()),
                   lambda params, state, x, *, train=False, key=None: 2 * x)  # no state
    cases = [(L.residual(keep), r"^residual: layer"),
             (L.concat(L.Identity(), keep), r"^concat: branches\[1\]")]
    for layer, who in cases:
        model = Model(layer, (4,), output="identity")
        with pytest.raises(TypeError, match=who + r": expected \S*<lambda>\(.* got an array of "
                                                  r"shape \(4,\)"):
            jax.eval_shape(lambda p, model=model: model.batch_apply(p, X), _params(model))


def test_two_outputs_and_no_state_are_refused():
    """(mu, logvar) returned as (y, state): a pair, but its 'state' is not the state given."""
    model = Model(L.serial(L.Dense(8), TwoHeads(3, two_outputs=True)), (4,), "identity")
    with pytest.raises(TypeError, match=r"^serial: layers\[1\]: expected TwoHeads.apply\(.*\) to "
                                        r"return \(y, new_state\) with new_state of the structure "
                                        r"of the state it was given, PyTreeDef\(\(\)\), got a "
                                        r"tuple of 2: \(an array of shape \(3,\), an array of "
                                        r"shape \(3,\)\) \(y and no state\?"):
        jax.eval_shape(lambda p: model.batch_apply(p, X), _params(model))


def _conv_like(order):
    """A layer whose init returns its three parts in ``order`` (or a part of them)."""

    def init(key, s):
        parts = {"shape": tuple(s), "params": {"W": jnp.ones(s), "b": jnp.zeros(s[-1])},
                 "state": ()}
        out = tuple(parts[name] for name in order)
        return out[0] if len(out) == 1 else out

    def apply(params, state, x, *, train=False, key=None):
        return x * params["W"] + params["b"], state

    init.__qualname__ = "MyLayer.init"
    return L.Layer(init, apply)


CONTRACT = (r"expected MyLayer.init\(key, input_shape\) to return \(output_shape, params, "
            r"state\), output_shape a tuple of ints for ONE example, got ")


@pytest.mark.parametrize("order, got", [
    (("params", "shape", "state"),  # once: output_shape == ('W', 'b'), silently
     r"a tuple of 3: \(a dict with keys \['W', 'b'\], \(8, 8\), \(\)\)"),
    (("shape", "params"), r"a tuple of 2: \(\(8, 8\), a dict with keys \['W', 'b'\]\)"),
    (("params",), r"a dict with keys \['W', 'b'\]"),
], ids=["swapped", "no-state", "params-only"])
def test_init_of_the_wrong_structure_is_named(order, got):
    bad = _conv_like(order)
    with pytest.raises(TypeError, match="^layer: " + CONTRACT + got):
        _ = Model(bad, (8, 8)).output_shape
    with pytest.raises(TypeError, match="^layer: " + CONTRACT + got):
        Model(bad, (8, 8)).init(jax.random.key(0))
    for layer, who in [(L.serial(L.Relu(), bad, L.Flatten()), r"serial: layers\[1\]"),
                       (L.residual(bad), "residual: layer"),
                       (L.concat(L.Identity(), bad), r"concat: branches\[1\]")]:
        with pytest.raises(TypeError, match=f"^{who}: " + CONTRACT + got):
            _ = Model(layer, (8, 8)).output_shape


def test_a_right_layer_of_your_own_passes_and_a_list_shape_is_read_as_a_tuple():
    def init(key, s):
        return list(s), {"W": jnp.ones(s), "b": jnp.zeros(s[-1])}, ()

    good = L.Layer(init, _conv_like(("shape", "params", "state")).apply)
    model = Model(L.serial(good, L.Flatten(), L.Dense(3)), (2, 4))
    assert model.output_shape == (3,)
    Z = jax.eval_shape(lambda p: model.batch_apply(p, np.ones((5, 2, 4)))[0], _params(model))
    assert Z.shape == (5, 3)
    box = {}

    def serial_init(key):
        box["shape"], params, _ = L.serial(good).init(key, (2, 4))
        return params

    jax.eval_shape(serial_init, jax.random.key(0))
    assert type(box["shape"]) is tuple and box["shape"] == (2, 4)


def RunningCenter(momentum=0.9):
    """A stateful layer of your own: the running mean of its input, subtracted."""

    def init(key, s):
        return tuple(s), (), {"mean": jnp.zeros(s[-1])}

    def apply(params, state, x, *, train=False, key=None):
        if train:
            m = jax.lax.pmean(x, "batch")
            return x - m, {"mean": momentum * state["mean"] + (1 - momentum) * m}
        return x - state["mean"], state

    return L.Layer(init, apply)


def test_a_stateful_layer_of_your_own_is_named_for_what_it_is():
    """Once: "this model has Dropout or BatchNorm", for a model with neither."""
    model = Model(L.serial(L.Dense(4), RunningCenter(), L.Dense(3)), (4,))
    assert model.stateful
    params, state = jax.eval_shape(model.init, jax.random.key(0))
    y = np.zeros(5, np.int32)
    what = (r"this model carries state at state\[1\] \(Dropout, BatchNorm or a layer of your "
            r"own\)")
    with pytest.raises(TypeError, match=r"^train: " + what + r"; pass train=True for a training "
                                        r"step or train=False to evaluate"):
        objective.make(model)(params, X, y, model_state=state)
    with pytest.raises(ValueError, match=r"^model_state: " + what + "; pass model_state="):
        objective.make(model)(params, X, y, train=True)
    with pytest.raises(ValueError, match=r"^state: " + what + "; pass the state from "
                                        r"model.init\(key\), got None"):
        model.batch_apply(params, X, train=False)


def test_an_output_other_than_init_says_is_named():
    """init claims (8, 16), apply gives (8, 8): the model's output is checked against it."""

    def init(key, s):
        return (s[0], 16), {"b": jnp.zeros(s[-1])}, ()

    def apply(params, state, x, *, train=False, key=None):
        return x + params["b"], state

    model = Model(L.Layer(init, apply), (8, 8), output="identity")
    with pytest.raises(ValueError, match=r"^layer: expected an output of shape \(8, 16\) for one "
                                         r"example, as its init says, got an array of shape "
                                         r"\(8, 8\)"):
        jax.eval_shape(lambda p: model.batch_apply(p, np.ones((2, 8, 8))), _params(model))


def test_a_broken_promise_inside_serial_is_blamed_on_its_layer_not_the_next():
    """A layer whose init says (4,) but whose apply returns (5,), between two Dense layers:
    the error names it (the next Dense used to say it expected (4,) and got (5,))."""

    def Liar():
        def init(key, s):
            return (4,), {"W": jnp.ones((5, s[0]))}, ()

        def apply(params, state, x, *, train=False, key=None):
            return params["W"] @ x, state

        return L.Layer(init, apply)

    model = Model(L.serial(L.Dense(3), Liar(), L.Dense(2)), (4,))
    with pytest.raises(ValueError, match=r"^serial: layers\[1\]: \S*Liar.init said output "
                                         r"shape \(4,\) for input \(3,\), but "
                                         r"\S*Liar.apply returned shape \(5,\)"):
        jax.eval_shape(lambda p: model.batch_apply(p, X), _params(model))
