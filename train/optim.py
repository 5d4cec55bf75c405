"""The note's optimizer, built from optax, and hyperparameters kept in the optimizer state.

One step of :func:`sgd` is the note's update (CASI section 18.2)

    W <- W - alpha (dW + lambda W),        b <- b - alpha db,

i.e. ``optax.add_decayed_weights(lambda, mask=nets.penalties.weight_mask)`` chained before
``optax.sgd(alpha)``. The optimizer is wrapped in ``optax.inject_hyperparams``, so ``alpha``
and ``lambda`` live in the optimizer state as arrays: :func:`set_hyperparams` changes them
without recompiling, which is how :func:`train.sweep` gives every model of a ``vmap`` its
own value under one compiled program.

>>> import jax.numpy as jnp
>>> params = [{"W": jnp.array([[1.0, 2.0]]), "b": jnp.array([3.0])}]
>>> grads = [{"W": jnp.array([[0.5, 0.5]]), "b": jnp.array([1.0])}]
>>> opt = sgd(0.1, l2=0.5)
>>> updates, state = opt.update(grads, opt.init(params), params)
>>> [round(float(u), 6) for u in updates[0]["W"][0]], float(updates[0]["b"][0])
([-0.1, -0.15], -0.1)
>>> {k: float(v) for k, v in get_hyperparams(state).items()}
{'learning_rate': 0.1, 'l2': 0.5}
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import types
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nets import _checks
from nets import penalties as _penalties

__all__ = ["sgd", "get_hyperparams", "set_hyperparams", "scheduled_hyperparams", "fingerprint"]

# The admissible values of the injected hyperparameters that train.sgd checks (and that
# fit/sweep check when they are set through hyperparams=): (low, low excluded, high excluded).
HYPERPARAM_RANGES = {
    "learning_rate": (0.0, True, None),
    "l2": (0.0, False, None),
    "momentum": (0.0, False, 1.0),
}

_INJECT_STATES = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)


def _sgd_with_l2(learning_rate, l2, momentum, nesterov, mask) -> optax.GradientTransformation:
    """The inner chain: ``g + lambda W`` on the weights, then optax's (momentum) SGD."""
    return optax.chain(
        optax.add_decayed_weights(l2, mask=mask),
        optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
    )


def sgd(
    learning_rate: float | Callable[[jax.Array], jax.Array],
    l2: float = 0.0,
    momentum: float | None = None,
    nesterov: bool = False,
    mask: Callable[[Any], Any] | Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Stochastic gradient descent with the note's quadratic penalty on the weights.

    One update, for every weight matrix ``W`` (a leaf with two or more axes, see
    :func:`nets.penalties.weight_mask`) and every bias ``b`` (any other leaf):

        W <- W - alpha (dW + lambda W),        b <- b - alpha db

    (with ``momentum`` the bracket is accumulated in optax's trace first). Because the
    decay ``lambda W`` is added to the gradient *before* the SGD step, this is exactly
    gradient descent on ``L + (lambda/2) sum ||W||^2``, the note's penalized objective
    (CASI eq. 18.6 with ``J = 1/2 sum W^2``), with or without momentum. It is *not* what
    weight decay means under Adam: ``optax.adamw`` adds ``lambda W`` after Adam's rescaling
    (decoupled weight decay, Loshchilov & Hutter 2019, arXiv:1711.05101), which equals no
    penalty on the loss.

    ``learning_rate``, ``l2`` and a numeric ``momentum`` are injected hyperparameters
    (``optax.inject_hyperparams``): they sit in the optimizer state as arrays (see
    :func:`get_hyperparams`, :func:`set_hyperparams`), so changing them does not recompile.

    Args:
      learning_rate: ``alpha > 0``, or an optax schedule ``step -> alpha``.
      l2: ``lambda >= 0``, the weight of the penalty ``(1/2) sum ||W||^2``.
      momentum: ``None`` (plain SGD) or the heavy-ball coefficient in ``[0, 1)``.
      nesterov: Nesterov momentum (needs ``momentum``).
      mask: which leaves are weights (decayed): a pytree of bools shaped like the params, or
        a function ``params -> pytree of bools``. Default :func:`nets.penalties.weight_mask`
        (leaves with two or more axes). Pass your own when a weight is a vector, e.g.
        logistic regression's ``{"w": (d,), "b": ()}``: ``mask={"w": True, "b": False}``.
        Its tree structure (or a prefix of it) must be the params'; ``init`` and ``update``
        raise a ``ValueError`` naming ``mask`` and what differs otherwise.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its ``update`` needs ``params``.
    """
    if not callable(learning_rate):
        _checks.check_real(learning_rate, "learning_rate", minimum=0, strict=True)
    _checks.check_real(l2, "l2", minimum=0)
    if momentum is not None:
        _checks.check_real(momentum, "momentum", minimum=0, maximum=1)
        if not momentum < 1:
            raise ValueError(f"momentum: expected a number in [0, 1), got {momentum!r}")
    if not isinstance(nesterov, bool):
        raise TypeError(f"nesterov: expected a bool, got {type(nesterov).__name__} {nesterov!r}")
    if nesterov and momentum is None:
        raise ValueError("nesterov: Nesterov momentum needs momentum, got momentum=None")
    args = (learning_rate if callable(learning_rate) else float(learning_rate), float(l2),
            None if momentum is None else float(momentum), nesterov,
            _penalties.weight_mask if mask is None else mask)
    try:
        return _build_sgd(*args)
    except TypeError:  # an unhashable mask (a pytree of bools): a fresh object
        return _build_sgd.__wrapped__(*args)


@functools.lru_cache(maxsize=256)
def _build_sgd(learning_rate, l2, momentum, nesterov, mask):
    """The injected chain. Equal arguments give the SAME (immutable) object, so ``train.fit``
    and ``train.sweep``, which reuse compiled programs per optimizer object, do not compile
    again for ``train.sgd(...)`` called afresh with the same settings."""
    if mask is not _penalties.weight_mask:  # the default fits any params
        mask = _CheckedMask(mask)
    return optax.inject_hyperparams(_sgd_with_l2, static_args=("nesterov", "mask"))(
        learning_rate=learning_rate, l2=l2, momentum=momentum, nesterov=nesterov, mask=mask)


class _CheckedMask:
    """A user's ``mask`` (pytree or function) as the function optax calls on the params (at
    ``init``) and on the updates (at ``update``), checking the tree structure first: at trace
    time, so a mismatch is a clear error before anything compiles."""

    def __init__(self, mask):
        self.mask = mask

    def __call__(self, params):
        fn = callable(self.mask)
        tree = self.mask(params) if fn else self.mask
        try:  # what optax.masked does with the mask: each leaf covers a subtree of params
            jax.tree.map(lambda m, p: None, tree, params)
            return tree
        except (ValueError, TypeError):
            pass
        name = "mask(params)" if fn else "mask"
        problem = _mismatch(tree, params, name, "") or (
            f"{name} has structure {jax.tree.structure(tree)}, params "
            f"{jax.tree.structure(params)}")
        raise ValueError(f"{name}: expected a pytree of bools with the tree structure of the "
                         f"params (or a prefix of it), got one that differs: {problem}")


def _mismatch(mask, params, name: str, path: str) -> str | None:
    """The first place where ``mask`` is not a tree prefix of ``params``, in words."""
    where = f"at params{path}" if path else "at the top level"
    if mask is None and params is not None:
        return f"{where}, {name} is None (False leaves a leaf undecayed)"
    if type(mask) is not type(params) and isinstance(mask, (dict, list, tuple)):
        leaf = jax.tree_util.treedef_is_leaf(jax.tree.structure(params))
        return (f"{where}, {name} is a {type(mask).__name__}, params "
                f"{'an array' if leaf else 'a ' + type(params).__name__}")
    if isinstance(mask, dict):
        missing = [k for k in params if k not in mask]
        extra = [k for k in mask if k not in params]
        if missing or extra:
            parts = ([f"{name} lacks the key(s) {missing}"] if missing else []) + (
                [f"{name} has key(s) {extra} that params lacks"] if extra else [])
            return f"{where}, {' and '.join(parts)}"
        pairs = [(f"[{k!r}]", mask[k], params[k]) for k in params]
    elif isinstance(mask, (list, tuple)):
        if len(mask) != len(params):
            return f"{where}, {name} has {len(mask)} entries, params {len(params)}"
        pairs = [(f"[{i}]", m, p) for i, (m, p) in enumerate(zip(mask, params))]
    else:
        return None
    for key, m, p in pairs:
        problem = _mismatch(m, p, name, path + key)
        if problem is not None:
            return problem
    return None


def _is_inject_state(x) -> bool:
    return isinstance(x, _INJECT_STATES)


def _inject_states(opt_state) -> list:
    return [s for s in jax.tree.leaves(opt_state, is_leaf=_is_inject_state)
            if _is_inject_state(s)]


def scheduled_hyperparams(opt_state) -> set[str]:
    """The injected hyperparameters an optimizer recomputes from a schedule at every step."""
    return {k for s in _inject_states(opt_state)
            for k in getattr(s, "hyperparams_states", {}) or {}}


def get_hyperparams(opt_state) -> dict[str, jax.Array]:
    """The injected hyperparameters of an optimizer state, ``{name: array}``.

    Searches the state (a chain's tuple, a ``MultiSteps`` wrapper, ...) for the states of
    ``optax.inject_hyperparams`` and merges their ``hyperparams`` dicts. A stacked state
    (a sweep's) gives arrays with a leading model axis.
    """
    out: dict[str, jax.Array] = {}
    for s in _inject_states(opt_state):
        out.update(s.hyperparams)
    return out


def set_hyperparams(opt_state, **values: Any):
    """A copy of ``opt_state`` with injected hyperparameters replaced; no recompilation.

    Each value is cast to the dtype the state holds and must broadcast to its shape (a
    scalar for one model; a ``(models,)`` array for a stacked sweep state).

    >>> import jax.numpy as jnp
    >>> state = sgd(0.1).init({"W": jnp.ones((2, 2))})
    >>> float(get_hyperparams(set_hyperparams(state, l2=1e-3))["l2"])
    0.001

    Raises:
      ValueError: the state holds no ``inject_hyperparams`` state, or no hyperparameter of
        that name (the message lists those it has), or a value of the wrong shape.
    """
    states = _inject_states(opt_state)
    if not states:
        raise ValueError(
            "opt_state: expected a state of an optax.inject_hyperparams optimizer (such as "
            "train.sgd), found none; wrap the optimizer, e.g. "
            "optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)")
    available = sorted({k for s in states for k in s.hyperparams})
    unknown = sorted(set(values) - set(available))
    if unknown:
        raise ValueError(
            f"hyperparams: expected names among the optimizer's injected hyperparameters "
            f"{available}, got {unknown}")

    scheduled = sorted(scheduled_hyperparams(opt_state) & set(values))
    if scheduled:
        raise ValueError(
            f"hyperparams: {scheduled} are computed from a schedule at every step, which would "
            "overwrite a value set here; build the optimizer with a constant instead")
    new = {}
    for name, value in values.items():
        old = jnp.asarray(optax.tree_utils.tree_get(opt_state, name))
        value = jnp.asarray(value, old.dtype)
        try:
            new[name] = jnp.broadcast_to(value, old.shape)
        except ValueError:
            raise ValueError(f"hyperparams[{name!r}]: expected shape {old.shape} (or a value "
                             f"broadcasting to it), got shape {value.shape}") from None
    return optax.tree_utils.tree_set(opt_state, **new)


# --------------------------------------------------------------------------------------------
# The fingerprint of an optimizer: what a checkpoint records of it, compared on resume
# --------------------------------------------------------------------------------------------

_ARRAY_LIMIT = 4096  # arrays up to this many elements are recorded by value
_DEPTH_LIMIT = 64
# Functions of these libraries are recorded by name only (their closures are library code).
_NAMED_ONLY = ("jax.", "jaxlib.", "numpy.", "builtins", "functools", "math")
# Objects of these libraries' classes are recorded with their attributes (optax's
# WrappedSchedule holds the schedule; train.sgd's mask wrapper holds the mask).
_WALKED_CLASSES = ("optax", "train", "nets")


def fingerprint(optimizer: Any) -> str:
    """A digest of an optax optimizer's settings, the same in every process that builds it.

    Walks the ``GradientTransformation`` the way its ``init`` and ``update`` see it: the
    variables their closures capture (recursively: a chain's transformations, each one's
    ``init``/``update`` and their captured settings), ``functools.partial`` arguments,
    functions' defaults, nested transformations, tuples, NamedTuples, lists,
    dicts and sets. Numbers, strings, bools, ``None``, dtypes and arrays of up to 4,096
    elements are recorded by value, functions by module and qualified name, dataclasses and
    objects of optax's (and this library's) classes with their attributes, and any other
    object by its type's name only: never an ``id`` or a ``repr`` with an address. So
    ``optax.adam(1e-2)`` built twice, in two processes, gives one fingerprint, and
    ``optax.adam(1e-2)`` and ``optax.adam(5e-2)``, ``optax.sgd(0.05)`` and
    ``optax.sgd(0.5)``, or two schedules with different peak values give two.

    The initial values of ``optax.inject_hyperparams``'s numeric hyperparameters (those of
    :func:`sgd`) are left out, their names kept: they live in the optimizer state, where a
    resumed run compares them by name (and ``hyperparams=`` may set them).

    Not seen: what a function computes from its code (a lambda's constants) or from module
    globals, and the attributes of an object of another library's class: such optimizers
    that differ only there have one fingerprint. Optax's internals are part of what is
    walked, so another optax version may give the same optimizer another fingerprint.
    :func:`train.fit` stores it in its checkpoints and refuses to resume under an optimizer
    whose fingerprint differs.

    >>> fingerprint(optax.adam(1e-2)) == fingerprint(optax.adam(1e-2))
    True
    >>> fingerprint(optax.adam(1e-2)) == fingerprint(optax.adam(5e-2))
    False
    """
    tokens: list[str] = []
    _walk(optimizer, tokens, set(), 0)
    return hashlib.sha256("\x1f".join(tokens).encode()).hexdigest()[:32]


def _qualified(obj) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", type(obj).__name__)
    return f"{getattr(obj, '__module__', None)}.{name}"


def _walk(obj, out: list, path: set, depth: int) -> None:
    """Appends the tokens of ``obj`` to ``out`` (``path``: ids of the objects being walked, to
    stop at a cycle)."""
    if depth > _DEPTH_LIMIT:
        out.append("<deep>")
        return
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        out.append(f"{type(obj).__name__}:{obj!r}")
        return
    if isinstance(obj, np.generic):
        out.append(f"np.{obj.dtype}:{obj.item()!r}")
        return
    if isinstance(obj, np.dtype):
        out.append(f"dtype:{obj}")
        return
    if isinstance(obj, type):
        try:  # numpy's and jax.numpy's scalar types (jnp.float32) are dtypes
            if issubclass(obj, np.generic) or hasattr(obj, "dtype"):
                out.append(f"dtype:{np.dtype(getattr(obj, 'dtype', obj))}")
                return
        except TypeError:
            pass
        out.append(f"class:{_qualified(obj)}")
        return
    if isinstance(obj, jax.core.Tracer):
        out.append(f"tracer:{type(obj).__name__}")
        return
    if isinstance(obj, (np.ndarray, jax.Array)):
        _array(obj, out)
        return
    if id(obj) in path:
        out.append("<cycle>")
        return
    path.add(id(obj))
    try:
        _walk_container(obj, out, path, depth + 1)
    finally:
        path.discard(id(obj))


def _array(obj, out: list) -> None:
    if isinstance(obj, jax.Array) and jnp.issubdtype(obj.dtype, jax.dtypes.prng_key):
        out.append(f"key:{jax.random.key_impl(obj)}")
        obj = jax.random.key_data(obj)
    head = f"array:{obj.dtype}{list(np.shape(obj))}"
    if np.size(obj) > _ARRAY_LIMIT or (isinstance(obj, jax.Array)
                                        and not obj.is_fully_addressable):
        out.append(head)
        return
    data = np.ascontiguousarray(np.asarray(obj))
    out.append(f"{head}:{hashlib.sha256(data.tobytes()).hexdigest()[:16]}")


def _walk_container(obj, out: list, path: set, depth: int) -> None:
    walk = lambda x: _walk(x, out, path, depth)  # noqa: E731
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # NamedTuple: GradientTransformation
        out.append(f"namedtuple:{_qualified(type(obj))}(")
        for name, value in zip(obj._fields, obj):
            out.append(f"{name}=")
            walk(value)
        out.append(")")
    elif isinstance(obj, (tuple, list)):
        out.append(f"{type(obj).__name__}(")
        for value in obj:
            walk(value)
        out.append(")")
    elif isinstance(obj, Mapping):
        out.append(f"{type(obj).__name__}{{")
        for token, value in sorted(((_token(k), v) for k, v in obj.items()),
                                   key=lambda kv: kv[0]):
            out.append(f"{token}:")
            walk(value)
        out.append("}")
    elif isinstance(obj, (set, frozenset)):
        out.append(f"set{{{','.join(sorted(_token(v) for v in obj))}}}")
    elif isinstance(obj, functools.partial):
        out.append("partial(")
        walk(obj.func)
        walk(obj.args)
        walk(dict(obj.keywords))
        out.append(")")
    elif inspect.ismethod(obj):
        out.append("method(")
        walk(obj.__func__)
        walk(obj.__self__)
        out.append(")")
    elif isinstance(obj, types.FunctionType):
        _function(obj, out, walk)
    elif isinstance(obj, types.BuiltinFunctionType):
        out.append(f"builtin:{_qualified(obj)}")
    elif hasattr(obj, "__wrapped__") and callable(obj):  # jax.jit, functools.wraps
        out.append(f"wrapper:{type(obj).__name__}(")
        walk(obj.__wrapped__)
        out.append(")")
    elif dataclasses.is_dataclass(obj) or (
            type(obj).__module__.split(".")[0] in _WALKED_CLASSES
            and hasattr(obj, "__dict__")):
        out.append(f"object:{_qualified(type(obj))}(")
        fields = ({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
                  if dataclasses.is_dataclass(obj) else vars(obj))
        walk(dict(fields))
        out.append(")")
    else:
        out.append(f"object:{_qualified(type(obj))}")


def _function(fn, out: list, walk) -> None:
    name = _qualified(fn)
    out.append(f"function:{name}(")
    module = fn.__module__ or ""
    if not module.startswith(_NAMED_ONLY):
        walk(fn.__defaults__)
        walk(fn.__kwdefaults__)
        for var, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
            out.append(f"{var}=")
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                out.append("<empty>")
                continue
            if var == "numeric_hps" and module.startswith("optax") and isinstance(value, Mapping):
                # inject_hyperparams' initial values: compared in the state (see fingerprint)
                out.append(f"injected{{{','.join(sorted(map(str, value)))}}}")
                continue
            walk(value)
        wrapped = getattr(fn, "__wrapped__", None)
        if wrapped is not None:
            out.append("wrapped=")
            walk(wrapped)
    out.append(")")


def _token(value) -> str:
    """A short deterministic token of a dict key or a set element."""
    tokens: list[str] = []
    _walk(value, tokens, set(), _DEPTH_LIMIT - 2)
    return "|".join(tokens)
