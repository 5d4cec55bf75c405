"""The penalized objective of the note (CASI eq. 18.6):

    minimize_W  (1/n) sum_i L[y_i, f(x_i; W)]  +  sum_j lambda_j J_j(W).

:func:`mlp_objective` is the MLP's; :func:`make` builds the same objective for a
:class:`nets.model.Model` (dropout with one key per example, batch-norm state) or for any
function ``apply(params, x) -> z`` of one example, so every architecture shares it.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from nets import _checks
from nets import layers as _layers
from nets import losses as _losses
from nets import mlp as _mlp
from nets import penalties as _penalties
from nets.model import Model


def mean_loss(apply_fn: Callable, params, X, Y, loss="cross_entropy") -> jax.Array:
    """``(1/n) sum_i L[y_i, apply_fn(params, x_i)]`` over a batch ``X`` of shape ``(n, ...)``.

    ``apply_fn`` is vmapped with ``in_axes=(None, 0)``: a PRNG key captured inside it is the
    SAME for every example (one dropout mask for the whole batch). For dropout use
    ``make(model, ...)`` with a :class:`nets.model.Model`, which splits one key per example.
    """
    loss = _losses.get(loss)
    _check_rows(X, Y)
    Z = jax.vmap(apply_fn, in_axes=(None, 0))(params, X)
    if not hasattr(Z, "shape"):
        hint = (" (a layer's (y, state)? return y alone, e.g. model.apply)"
                if isinstance(Z, tuple) and len(Z) == 2 else "")
        raise TypeError(f"apply_fn: expected apply_fn(params, x) to return the array z, got a "
                        f"{type(Z).__name__}{hint}")
    return jnp.mean(jax.vmap(loss.fn)(Z, Y))


def _check_rows(X, Y) -> None:
    """One target per row of ``X``, on static shapes (concrete or traced arrays alike)."""
    if any(isinstance(a, (dict, list, tuple)) or (not hasattr(a, "shape")
                                                  and not np.isscalar(a)) for a in (X, Y)):
        return  # pytrees of inputs: vmap checks them
    if jnp.ndim(X) == 0:
        raise ValueError("X: expected a batch of examples (n, ...), got a scalar")
    n = jnp.shape(X)[0]
    if jnp.ndim(Y) == 0 or jnp.shape(Y)[0] != n:
        raise ValueError(f"Y: expected one target per row of X ({n} rows), got shape "
                         f"{tuple(jnp.shape(Y))}")


@dataclasses.dataclass(frozen=True, eq=False)
class Objective:
    """The penalized objective of a :class:`nets.model.Model` (built by :func:`make`).

    ``objective(params, X, Y, *, key=None, train=None, model_state=None)`` is
    ``(1/n) sum_i L[y_i, z_i] + sum_j lambda_j J_j(params)`` with
    ``Z = model.batch_apply(params, X, state=model_state, train=train, key=key)``: ``key`` is
    split into one key per example (different dropout masks across the batch). It returns
    the scalar when ``model_state is None`` and ``(loss, new_model_state)`` otherwise (the
    ``train.fit`` contract: the new model state LAST). A model with state (BatchNorm,
    Dropout, a layer of your own with a state) must get ``model_state`` and an explicit
    ``train`` (``True`` for a training step, ``False`` to evaluate; omitting it raises
    ``TypeError``), as :meth:`nets.model.Model.batch_apply` does. For a model without state
    an omitted ``train`` means ``False``: the two modes agree when its layers keep the
    :mod:`nets.layers` contract (a layer that reads ``train`` carries a state); with a
    stateless layer of your own that reads it, pass ``train`` every time. The mode is never
    inferred from ``key is None``: with ``train=False`` a key is accepted (``train.fit``
    passes one at evaluation too) and no layer of :mod:`nets.layers` draws from it.
    ``takes_key = True`` tells ``train.fit`` to pass ``key=`` and ``train=``.
    """

    model: Model
    loss: _losses.Loss
    penalties: tuple  # ((Penalty, lambda), ...) for nets.penalties.total
    takes_key: ClassVar[bool] = True

    def __call__(self, params, X, Y, *, key=None, train: bool | None = None,
                 model_state: Any = None):
        if model_state is None and self.model.stateful:
            raise ValueError(f"model_state: {self.model._carries_state()}; pass model_state= "
                             f"(the state from model.init(key))")
        train = self.model._train_mode(train)  # None: refused with state, else evaluation
        self._check_inputs(X)
        self._check_targets(X, Y)
        Z, new_state = self.model.batch_apply(params, X, state=model_state, train=train,
                                              key=key)
        value = jnp.mean(jax.vmap(self.loss.fn)(Z, Y)) + _penalties.total(params,
                                                                          self.penalties)
        return value if model_state is None else (value, new_state)


    def target_shapes(self) -> tuple[tuple, tuple] | None:
        """``(labels, probabilities)``: the shapes of ONE example's target that a
        classification loss takes (integer labels ``output_shape[:-1]``, -1 allowed where a
        per-position loss does not score; probabilities ``output_shape``); ``None`` for the
        other losses (their targets are not checked by shape here)."""
        if self.loss.labels != "class":
            return None
        out = tuple(self.model.output_shape)
        return out[:-1], out

    def check_shapes(self, X, Y, x_name: str = "X", y_name: str = "Y") -> None:
        """The shapes of a data set ``(X, Y)`` as the user passed it (before any batching)
        against the model: ``X`` of shape ``(n, *input_shape)``, and ``Y`` of one of the
        shapes of :meth:`target_shapes` after its ``n`` rows. Arrays only (a pytree, a list
        or ``None`` is left to the other checks); ``train.fit`` calls it before tracing."""
        def shape(a):
            return None if a is None or isinstance(a, (dict, list, tuple)) or not hasattr(
                a, "shape") else tuple(a.shape)

        sx, sy, want = shape(X), shape(Y), tuple(self.model.input_shape)
        if sx is not None and sx[1:] != want:
            raise ValueError(f"{x_name}: expected shape {_with_n(want)} for the model's "
                             f"input_shape {want}, got {sx}")
        targets = self.target_shapes()
        if sy is None or targets is None or sy[1:] in targets:
            return
        labels, probabilities = targets
        scored = (f", {_losses.IGNORE} where not scored"
                  if self.loss.name in {p.name for p in _losses.PER_POSITION.values()} else "")
        raise ValueError(f"{y_name}: expected shape {_with_n(labels)} (integer labels{scored}) "
                         f"or {_with_n(probabilities)} (probabilities) for the model's "
                         f"output_shape {probabilities}, got {sy}")

    def _check_inputs(self, X) -> None:
        """Concrete integer inputs of a model with an embedding against its vocabulary
        ``[0, V)`` (an id outside gives a row of NaN, never an error); traced ones pass."""
        if isinstance(X, (dict, list, tuple)) or not hasattr(X, "dtype") or isinstance(
                X, jax.core.Tracer) or np.dtype(X.dtype).kind not in "iu" \
                or tuple(X.shape[1:]) != tuple(self.model.input_shape):
            return
        vocab, pads = model_facts(self.model, X.dtype)
        if vocab:
            check_token_ids(X, vocab, "X")
        for pad_id in pads:
            check_right_padding(X, pad_id, "X")

    def _check_targets(self, X, Y) -> None:
        """Concrete targets against the model before anything runs: one row per example of
        ``X``, finite, and for cross-entropy integer labels in ``[0, M)`` (``M`` the model's
        last output axis) or probabilities of the output's shape. Traced ones pass (their
        shapes are checked when the loss is traced)."""
        if Y is None or isinstance(Y, (dict, list, tuple)) or any(
                isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((X, Y))):
            return
        Y = _checks.as_numeric(Y, "Y")
        _checks.check_finite(Y, "Y")
        n = jnp.shape(X)[0] if jnp.ndim(X) else None
        if Y.ndim == 0 or Y.shape[0] != n:
            raise ValueError(f"Y: expected one target per row of X ({n} rows), got shape "
                             f"{Y.shape}")
        if self.loss.labels != "class":
            return
        out = tuple(self.model.output_shape)
        labels, probabilities = (n, *out[:-1]), (n, *out)
        if Y.shape == labels and Y.dtype.kind in "iu":
            per_position = self.loss.name in {p.name for p in _losses.PER_POSITION.values()}
            _checks.check_labels(Y, out[-1], "Y",
                                 ignore=_losses.IGNORE if per_position else None)
            if per_position and hasattr(X, "dtype") and np.dtype(X.dtype).kind in "iu":
                for pad_id in model_facts(self.model, X.dtype)[1]:
                    check_padding_labels(X, Y, pad_id, "X", "Y")
        elif Y.shape == labels:
            raise TypeError(f"Y: expected integer class labels of shape {labels}, got dtype "
                            f"{Y.dtype} {_checks.label_hint(Y.dtype)}")
        elif Y.shape == probabilities and Y.dtype.kind != "f":
            raise TypeError(f"Y: expected probabilities of shape {probabilities} as floats, got "
                            f"dtype {Y.dtype} (one-hot integers? pass Y.argmax(axis=-1) for "
                            f"labels, or Y.astype(np.float32))")
        elif Y.shape != probabilities:
            raise ValueError(f"Y: expected integer labels of shape {labels} or probabilities of "
                             f"shape {probabilities}, got dtype {Y.dtype}, shape {Y.shape}")
        else:
            _check_probabilities(Y, self.loss.name)


def _with_n(shape: tuple) -> str:
    """``(n, *shape)`` written out: ``(n, 12)``, ``(n,)``."""
    return "(" + ", ".join(["n", *map(str, shape)]) + (",)" if not shape else ")")


_VOCAB: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def model_facts(model: Model, dtype) -> tuple[int, tuple[int, ...]]:
    """``(V, pad_ids)`` of ``model`` on integer inputs of ``dtype``: the largest
    ``vocab_size`` of its embeddings (0: none) and the ``pad_id`` of its
    :func:`nets.layers.padded` layers (``()``: none), by one abstract trace of its layer
    inside :func:`nets.layers.record_token_ranges` and :func:`nets.layers.record_padding`,
    once per model and dtype (the model's own programs are compiled once per model, so a
    later trace may not run the layers' Python again)."""
    key = str(np.dtype(dtype))
    known = _VOCAB.setdefault(model, {})
    if key not in known:
        with _layers.record_token_ranges() as vocab, _layers.record_padding() as pads:
            model._trace_example(dtype)
        known[key] = (max(vocab, default=0), tuple(sorted(set(pads))))
    return known[key]


def embedding_vocab(model: Model, dtype) -> int:
    """The largest ``vocab_size`` of the embeddings of ``model`` on integer inputs of
    ``dtype`` (0: none; :func:`model_facts`)."""
    return model_facts(model, dtype)[0]


def check_right_padding(X, pad_id: int, name: str = "X") -> None:
    """Concrete token ids ``X`` (n, T) of a model built with ``pad_id``: in every row the
    pad id only after the real tokens (right padding). Left padding, or a real token equal
    to ``pad_id``, would hide real tokens from the model: refused, naming the first place.

    >>> check_right_padding(np.array([[5, 3, 0, 0], [0, 0, 4, 2]]), 0, "X")
    Traceback (most recent call last):
      ...
    ValueError: X: expected right padding with pad_id 0 (the model's): real tokens first, then only pad ids; got X[1, 1] = 0 followed by X[1, 2] = 4 (left padding? a real token equal to the pad id? pad with an id the data never uses)
    """
    X = np.asarray(X)
    if X.ndim < 2 or X.shape[-1] < 2:
        return
    pad = X == pad_id
    bad = pad[..., :-1] & ~pad[..., 1:]
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        after = (*where[:-1], where[-1] + 1)
        index = lambda w: ", ".join(map(str, w))  # noqa: E731
        raise ValueError(
            f"{name}: expected right padding with pad_id {pad_id} (the model's): real tokens "
            f"first, then only pad ids; got {name}[{index(where)}] = {pad_id} followed by "
            f"{name}[{index(after)}] = {X[after]} (left padding? a real token equal to the pad "
            f"id? pad with an id the data never uses)")


def check_padding_labels(X, Y, pad_id: int, x_name: str = "X", y_name: str = "Y") -> None:
    """Per-position labels ``Y`` (n, T) of a model built with ``pad_id``: ``-1`` (not
    scored) wherever ``X`` holds the pad id (its outputs there mean nothing)."""
    X, Y = np.asarray(X), np.asarray(Y)
    if X.shape != Y.shape:
        return
    bad = (X == pad_id) & (Y != _losses.IGNORE)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        index = ", ".join(map(str, where))
        raise ValueError(
            f"{y_name}: expected label {_losses.IGNORE} (not scored) at the padding, where "
            f"{x_name} == pad_id {pad_id}; got {y_name}[{index}] = {Y[where]} (the model's "
            f"outputs at padded positions see no real token)")


def check_token_ids(X, vocab_size: int, name: str = "X") -> None:
    """Concrete integer token ids ``X`` against ``[0, vocab_size)``; the message names the
    range seen and the first id outside, by its index (row, position).

    >>> check_token_ids(np.array([[0, 1], [2, 7]]), 5, "X")
    Traceback (most recent call last):
      ...
    ValueError: X: expected token ids in [0, 5) (the model's embedding has vocab_size 5), got values in [0, 7]; the first outside is X[1, 1] = 7
    """
    X = np.asarray(X)
    if X.size == 0:
        return
    bad = (X < 0) | (X >= vocab_size)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name}: expected token ids in [0, {vocab_size}) (the model's embedding has "
            f"vocab_size {vocab_size}), got values in [{X.min()}, {X.max()}]; the first outside "
            f"is {name}[{', '.join(map(str, where))}] = {X[where]}")


def _check_probabilities(Y, loss: str) -> None:
    """Floating targets of cross-entropy: non-negative rows (the last axis) summing to 1,
    to ``1e-3 + 1e-6 M`` (float32 rounding grows with the row's size ``M``)."""
    Y = np.asarray(Y, np.float64)
    sums = Y.sum(axis=-1)
    tol = 1e-3 + 1e-6 * Y.shape[-1]
    bad = (np.abs(sums - 1.0) > tol) | (Y < 0).any(axis=-1)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"Y: expected probability vectors (non-negative, summing to 1 per example) for "
            f"{loss}, got rows summing to {np.min(sums):.4g} .. {np.max(sums):.4g}, min entry "
            f"{np.min(Y):.4g} ({int(bad.sum())} bad rows, the first at index {where}); for "
            f"real-valued targets use loss=\"squared_error\"")


def make(model_or_apply, loss="cross_entropy", penalties=None) -> Callable:
    """The mean loss plus the penalty terms, for a :class:`nets.model.Model` or a function.

    Args:
      model_or_apply: a :class:`nets.model.Model`, giving an :class:`Objective`
        ``objective(params, X, Y, *, key=None, train=None, model_state=None)``; or a
        function ``apply_fn(params, x) -> z`` of one example, giving
        ``objective(params, X, Y)`` (:func:`mean_loss`, no per-example keys).
      loss: a name or :class:`nets.losses.Loss`. For a model whose output has positions
        (``output_shape`` ``(T, M)``, the sequence models), ``"cross_entropy"`` is
        :func:`nets.losses.per_position_cross_entropy`: labels ``(n, T)``, ``-1`` where a
        position is not scored, each example's loss the mean over its scored positions
        (so the objective is a mean over sequences of per-sequence means, not over tokens;
        padding and variable lengths: :mod:`nets._sequence`).
        A classification loss (``cross_entropy``, ``binary_cross_entropy``) with a model of
        output ``"identity"`` raises ``ValueError``.
      penalties: a spec for :func:`nets.penalties.terms` (e.g. ``{"l2": 1e-3}``). Only
        leaves with two or more axes are penalised: Dense ``W``, convolution kernels,
        embedding tables; biases and the LayerNorm/BatchNorm ``gamma``/``beta`` are not.

    >>> import jax, jax.numpy as jnp
    >>> from nets import mlp
    >>> net = mlp.model((4, 8, 3), drop_rate=0.5)
    >>> params, state = net.init(jax.random.key(0))
    >>> objective = make(net, "cross_entropy", {"l2": 1e-3})
    >>> X, y = jnp.ones((6, 4)), jnp.zeros(6, int)
    >>> loss, state = objective(params, X, y, key=jax.random.key(1), train=True,
    ...                         model_state=state)
    >>> loss.shape, objective.takes_key
    ((), True)
    """
    loss = _losses.get(loss)
    terms = _penalties.terms(penalties)
    if isinstance(model_or_apply, Model) and model_or_apply.output == "identity" and (
            loss.output in ("softmax", "sigmoid")):
        raise ValueError(
            f"loss: {loss.name} reads the outputs as logits of a {loss.output}, but this model's "
            f"output is 'identity' (regression or embeddings: an autoencoder, a denoiser, a "
            f"GAN player); pass loss=\"squared_error\", or build the model with "
            f"output={loss.output!r} to classify")
    if isinstance(model_or_apply, Model):  # a sequence model's (T, M): per position
        return Objective(model_or_apply, _losses.for_output(loss, model_or_apply.output_shape),
                         tuple(terms))
    if not callable(model_or_apply):
        raise TypeError(f"model_or_apply: expected a nets.model.Model or a function "
                        f"apply_fn(params, x) -> z, got {type(model_or_apply).__name__}")
    apply_fn = model_or_apply

    def objective(params, X, Y):
        return mean_loss(apply_fn, params, X, Y, loss) + _penalties.total(params, terms)

    return objective


def mlp_objective(params, X, Y, *, activation="sigmoid", loss="cross_entropy", l2=0.0,
                  penalties=None) -> jax.Array:
    """The MLP's objective; ``l2=lam`` adds ``lam * (1/2) sum ||W||^2`` (the note's penalty).

    >>> import jax, jax.numpy as jnp
    >>> params = _mlp.init(jax.random.key(0), (4, 3, 2))
    >>> float(mlp_objective(params, jnp.zeros((5, 4)), jnp.zeros(5, int), l2=0.0)) > 0
    True
    """
    spec = _penalties.terms(penalties) + ([(_penalties.get("l2"), l2)] if _is_nonzero(l2) else [])

    def apply_fn(p, x):
        return _mlp.apply(p, x, activation=activation)

    return make(apply_fn, loss, spec)(params, X, Y)


def _is_nonzero(lam) -> bool:
    return not (isinstance(lam, (int, float)) and lam == 0)
