"""A :class:`Model` binds a layer, the shape of one example and the output function once.

It is passed around whole (to :func:`nets.objective.make`, to metrics, to training). The
forward pass is the layer's, for one example; :meth:`Model.batch_apply` vmaps it over the
leading axis of a batch with the axis name ``"batch"`` (read by
:func:`nets.layers.BatchNorm`) and one PRNG key per example (so dropout masks differ
across the batch). Evaluation mode is explicit: ``train=False``. A model with state
(:attr:`Model.stateful`: Dropout, BatchNorm, a layer of your own with a state) has no
default mode: :meth:`Model.apply`, :meth:`Model.batch_apply` and its objective refuse a call
without ``train=``; :meth:`Model.predict` and :meth:`Model.metric` evaluate.

>>> import jax, jax.numpy as jnp
>>> from nets import layers as L
>>> model = Model(L.serial(L.Conv2D(4, 3), L.Relu(), L.AvgPool(2), L.Flatten(), L.Dense(10)),
...               input_shape=(8, 8, 1))
>>> params, state = model.init(jax.random.key(0))
>>> model.output_shape
(10,)
>>> P = model.predict(params, jnp.zeros((5, 8, 8, 1)))
>>> P.shape, bool(jnp.allclose(P.sum(-1), 1.0))
((5, 10), True)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from nets import _checks
from nets import layers as _layers
from nets.mlp import OUTPUTS

AXIS_NAME = "batch"  # the vmapped batch axis of Model.batch_apply


@dataclasses.dataclass(frozen=True)
class Model:
    """A layer with its input shape and output function, fixed once.

    Attributes:
      layer: a :class:`nets.layers.Layer` (e.g. a :func:`nets.layers.serial`).
      input_shape: the shape of ONE example, e.g. ``(64,)`` or ``(8, 8, 1)``.
      output: the output function ``g^(K)`` applied by :meth:`predict`: ``"softmax"``
        (M classes, CASI eq. 18.5), ``"identity"`` (regression) or ``"sigmoid"`` (two
        classes, one unit); the losses of :mod:`nets.losses` apply it themselves, stably.

    Models are hashable and compare equal when built from the same layer functions, input
    shape and output, so programs cached per model are reused. Construction checks the
    input shape and output only; the layer's ``init`` is traced abstractly (no arrays,
    nothing compiled) on first use (``output_shape``, :meth:`init`,
    :func:`nets.objective.make`, ...), so a layer that does not fit the input shape raises
    there, not at construction (a trace at construction would cost ~0.1 s per Transformer).
    """

    layer: _layers.Layer
    input_shape: tuple
    output: str = "softmax"

    def __post_init__(self):
        object.__setattr__(self, "layer", _layers._as_layer(self.layer, "layer"))
        object.__setattr__(self, "input_shape", _layers._shape(self.input_shape, "Model"))
        if self.output not in OUTPUTS:
            raise ValueError(f"output: expected one of {sorted(OUTPUTS)}, got {self.output!r}")

    @functools.cached_property
    def _abstract(self):
        """``(output_shape, params shapes, state shapes)`` from an abstract ``init``."""
        box = {}

        def init(key):
            box["out"], params, state = _layers._checked_init(self.layer, key,
                                                             self.input_shape, "layer")
            return params, state

        params, state = jax.eval_shape(init, jax.random.key(0))
        return box["out"], params, state

    def _trace_example(self, dtype) -> None:
        """Traces the layer on ONE abstract example of ``input_shape`` and ``dtype`` in
        evaluation mode, computing nothing: for the trace recorders of
        :class:`nets._checks.TraceRecorder` (an embedding's vocabulary, attention's
        ``causal``) around it."""
        _, params, state = self._abstract
        jax.eval_shape(lambda p, s, x: self.layer.apply(p, s, x, train=False, key=None),
                       params, state, jax.ShapeDtypeStruct(self.input_shape, dtype))

    @property
    def output_shape(self) -> tuple:
        """Shape of the output ``z`` for one example, e.g. ``(10,)``."""
        return self._abstract[0]

    @property
    def stateful(self) -> bool:
        """Whether the model carries state (BatchNorm statistics, Dropout rates, a state of
        a layer of your own). Such a model has two modes and is never run without an
        explicit ``train=`` (:meth:`apply`, :meth:`batch_apply`, the objective)."""
        return bool(jax.tree.leaves(self._abstract[2]))

    def _carries_state(self) -> str:
        """``"this model carries state at state[i] (...)"``, for messages."""
        where = []
        for path, _ in jax.tree_util.tree_leaves_with_path(self._abstract[2]):
            if path and isinstance(path[-1], jax.tree_util.DictKey):
                path = path[:-1]  # the layer, not its entry ('mean', 'var')
            if f"state{jax.tree_util.keystr(path)}" not in where:
                where.append(f"state{jax.tree_util.keystr(path)}")
        more = f" and {len(where) - 3} more" if len(where) > 3 else ""
        return (f"this model carries state at {', '.join(where[:3])}{more} (Dropout, "
                f"BatchNorm or a layer of your own)")

    def _train_mode(self, train) -> bool:
        """``train`` as a bool; ``None`` (omitted) is evaluation for a model without state
        and refused for a model with state (it has no default mode)."""
        if train is None:
            if self.stateful:
                raise TypeError(f"train: {self._carries_state()}; pass train=True for a "
                                f"training step or train=False to evaluate")
            return False
        if not isinstance(train, (bool, np.bool_)):
            raise TypeError(f"train: expected a Python bool (True in training, False in "
                            f"evaluation), got {type(train).__name__} {train!r}")
        return bool(train)

    def init(self, key: jax.Array) -> tuple[Any, Any]:
        """``(params, state)`` from a PRNG key, by the layer's ``init`` compiled once per
        model. ``state`` holds the non-trained values (BatchNorm running statistics, Dropout
        rates); a model with either needs it in :meth:`apply` and :meth:`batch_apply`.
        Stateless layers contribute empty tuples."""
        if key is None:
            raise ValueError("key: Model.init expected a PRNG key from jax.random.key(seed), "
                             "got None")
        _checks.check_key(key, "key")
        return _compiled_init(self)(key)

    def _state(self, state, name="state"):
        abstract = self._abstract[2]
        if state is None:
            if self.stateful:
                raise ValueError(f"{name}: {self._carries_state()}; pass the state from "
                                 f"model.init(key), got None")
            return jax.tree.unflatten(jax.tree.structure(abstract), [])
        if jax.tree.structure(state) != jax.tree.structure(abstract):
            raise ValueError(f"{name}: expected the structure of model.init's state, "
                             f"{jax.tree.structure(abstract)}, got {jax.tree.structure(state)}")
        return state

    def _check_params(self, params):
        want, got = jax.tree.structure(self._abstract[1]), jax.tree.structure(params)
        if want != got:
            raise ValueError(f"params: expected the structure of model.init's params, {want}, "
                             f"got {got}")
        for (path, like), leaf in zip(jax.tree_util.tree_leaves_with_path(self._abstract[1]),
                                      jax.tree.leaves(params)):
            dtype = getattr(leaf, "dtype", None)
            if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
                raise TypeError(f"params{jax.tree_util.keystr(path)}: expected a floating-point "
                                f"array, got {type(leaf).__name__}"
                                + (f" of dtype {dtype}" if dtype is not None else ""))
            shape = tuple(leaf.shape) if hasattr(leaf, "shape") else tuple(jnp.shape(leaf))
            if shape != tuple(like.shape):
                raise ValueError(f"params{jax.tree_util.keystr(path)}: expected shape "
                                 f"{tuple(like.shape)} as model.init makes it, got shape "
                                 f"{shape}")

    def _check_mode(self, train, key) -> bool:
        train = self._train_mode(train)
        if key is not None:
            _checks.check_key(key, "key")
        return train

    def apply_with_state(self, params, x, *, state, train: bool | None, key=None):
        """``(z, new_state)`` for ONE example ``x`` of shape ``input_shape``; ``z`` is the
        output pre-activation, shape ``output_shape``. ``train``: a Python bool, or
        ``None`` for evaluation of a model without state (:attr:`stateful`)."""
        if tuple(jnp.shape(x)) != self.input_shape:
            hint = (" (a batch? use model.batch_apply)"
                    if tuple(jnp.shape(x))[1:] == self.input_shape else "")
            raise ValueError(f"x: expected one example of shape {self.input_shape}, got shape "
                             f"{tuple(jnp.shape(x))}{hint}")
        _checks.check_input(x, "x")
        state = self._state(state)  # as the objective: a missing state first, then train
        train = self._check_mode(train, key)
        self._check_params(params)
        return _forward(self, params, state, x, train, key)

    def apply(self, params, x, *, state=None, train: bool | None = None, key=None) -> jax.Array:
        """The output pre-activation ``z`` for ONE example (the new state is dropped).
        ``train`` as in :meth:`batch_apply`."""
        return self.apply_with_state(params, x, state=state, train=train, key=key)[0]

    def batch_apply(self, params, X, *, state=None, train: bool | None = None, key=None):
        """``(Z, new_state)`` for a batch ``X`` of shape ``(n, *input_shape)``.

        ``jax.vmap`` over the leading axis with ``axis_name="batch"`` (BatchNorm's batch
        statistics); ``key`` (when given) is split into one key per EXAMPLE. ``Z`` has shape
        ``(n, *output_shape)``; ``new_state`` is the updated (unbatched) state. Compiled once
        per model and mode (and input shape), so eager calls do not compile op by op.

        ``train``: ``True`` for a training step, ``False`` to evaluate. A model with state
        (:attr:`stateful`: Dropout, BatchNorm, a layer of your own with a state) has no
        default mode and refuses a call without it; for a model without state, omitting it
        means ``False`` (its layers compute the same in both modes: the :mod:`nets.layers`
        contract). The layer's ``(y, new_state)`` and the shape of ``y`` are checked while
        tracing.
        """
        shape = tuple(jnp.shape(X))
        if len(shape) != len(self.input_shape) + 1 or shape[1:] != self.input_shape:
            want = ", ".join(map(str, self.input_shape))
            raise ValueError(f"X: expected a batch of shape (n, {want}), got shape {shape}")
        if shape[0] == 0:
            raise ValueError(f"X: expected at least one example, got shape {shape}")
        _checks.check_input(X, "X")
        state = self._state(state)  # as the objective: a missing state first, then train
        train = self._check_mode(train, key)
        self._check_params(params)
        keys = None if key is None else jax.random.split(key, shape[0])
        return _compiled_batch_apply(self, train)(params, X, state, keys)

    def predict(self, params, X, *, state=None) -> jax.Array:
        """``g^(K)(Z)`` for a batch ``X`` in eval mode: class probabilities for
        ``"softmax"``, values for ``"identity"``, ``P(y = 1)`` for ``"sigmoid"``."""
        Z, _ = self.batch_apply(params, X, state=state, train=False)
        return _compiled_output(self.output)(Z)

    def metric(self, fn: Callable) -> "Metric":
        """``metric(params, X, Y, *, model_state=None) = fn(Z, Y)``, ``Z`` the eval-mode
        outputs of the batch ``X`` (e.g. ``fn = nets.metrics.error_rate``), for the
        ``metrics`` dict of ``train.fit``."""
        if not callable(fn):
            raise TypeError(f"fn: expected a function fn(Z, Y) -> scalar, got "
                            f"{type(fn).__name__}")
        return Metric(self, fn)


@functools.lru_cache(maxsize=256)
def _compiled_init(model: Model):
    """``model.layer.init`` as one compiled program (run op by op, every random draw of
    every layer compiles by itself), shared by equal models."""
    return jax.jit(lambda key: _layers._checked_init(model.layer, key, model.input_shape,
                                                     "layer")[1:])


def _forward(model: Model, params, state, x, train: bool, key):
    """``model.layer.apply`` on one example, its ``(y, new_state)`` and the shape of ``y``
    checked while tracing (:func:`nets.layers._checked_apply`)."""
    z, new_state = _layers._checked_apply(model.layer, "layer", params, state, x, train=train,
                                          key=key)
    if tuple(jnp.shape(z)) != model.output_shape:
        raise ValueError(f"layer: expected an output of shape {model.output_shape} for one "
                         f"example, as its init says, got {_layers._describe(z)}")
    return z, new_state


@functools.lru_cache(maxsize=256)
def _compiled_batch_apply(model: Model, train: bool):
    """``(params, X, state, keys) -> (Z, new_state)``: the layer vmapped over examples with
    the axis name ``"batch"``, one key per example (``keys`` may be ``None``)."""

    def batch(params, X, state, keys):
        def one(x, k):
            return _forward(model, params, state, x, train, k)

        if keys is None:
            return jax.vmap(lambda x: one(x, None), out_axes=(0, None), axis_name=AXIS_NAME)(X)
        return jax.vmap(one, out_axes=(0, None), axis_name=AXIS_NAME)(X, keys)

    return jax.jit(batch)


@functools.lru_cache(maxsize=None)
def _compiled_output(name: str):
    return jax.jit(OUTPUTS[name])


@dataclasses.dataclass(frozen=True)
class Metric:
    """``fn(Z, Y)`` on the eval-mode outputs of ``model`` (see :meth:`Model.metric`);
    equal for equal ``(model, fn)``, so compiled programs keyed on it are reused."""

    model: Model
    fn: Callable

    def __call__(self, params, X, Y, *, model_state=None):
        if model_state is None and self.model.stateful:
            raise ValueError(f"model_state: {self.model._carries_state()}; pass model_state=, "
                             f"got None")
        Z, _ = self.model.batch_apply(params, X, state=model_state, train=False)
        return self.fn(Z, Y)
