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

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from nets import _checks
from nets import penalties as _penalties

__all__ = ["sgd", "get_hyperparams", "set_hyperparams", "scheduled_hyperparams"]

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
