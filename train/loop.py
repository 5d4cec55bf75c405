"""The loss-function form of training: a loss and an optax optimizer become a step.

:func:`train.runner.run` trains any ``step(state, batch, key) -> (state, metrics)``; this
module builds that step, and the evaluation, from a loss function, which is what
:func:`train.fit` and :func:`train.sweep` do:

* :class:`TrainState` and :func:`init_state`: parameters, optimizer state, step count and
  the model state (batch-norm statistics, dropout rates).
* :func:`make_step`: ``step(state, (X, Y), key) -> (state, {"loss": ..., **aux})``, one
  optimizer update.
* :func:`make_evaluate`: ``evaluate(state, (X, Y), key) -> {"loss", **aux, **metrics}`` in
  evaluation mode, the batch means.
* :func:`make_epoch`: ``n // batch_size`` steps in ONE ``lax.scan``, for loops of your own.
* :func:`minibatch_indices` (the last-batch rule), :func:`per_example_grads`.

**The loss-function contract.** ``loss_fn(params, X, Y) -> loss``, a scalar: the mean loss
over the batch ``X`` (any pytree whose leaves have ``b`` rows: an array, a dict of arrays,
integer tokens) with targets ``Y`` (likewise, or ``None``). Extensions, each switched on
explicitly:

* ``loss_takes_key=True``: called with the keywords ``key`` (a fresh PRNG key per step, and
  per evaluation batch: a diffusion model's validation loss needs noise too) and ``train``
  (``True`` in a training step, ``False`` at evaluation: no dropout). Evaluation mode is
  this explicit flag, never ``key is None``. A loss built by :func:`nets.objective.make`
  from a model says so itself (its ``takes_key`` attribute), so the flag can be left out.
* ``has_aux=True``: returns ``(loss, aux)``, ``aux`` a dict of scalars; they are averaged
  over the epoch's steps into the history (and reported on the validation set as
  ``val_<name>``).
* a ``model_state`` (non-trained state such as batch-norm statistics) in the
  :class:`TrainState`: when it is not ``None`` the loss is called with the keywords
  ``model_state`` and ``train`` and returns the new model state LAST: ``(loss,
  new_model_state)``, or ``(loss, aux, new_model_state)`` with ``has_aux``. Training carries
  the new state forward; evaluation (``train=False``, running statistics) discards it.

**Minibatches and the last partial batch.** An epoch is ``n // batch_size`` steps, so
``batch_size=1`` is online SGD and ``batch_size=n`` full-batch gradient descent.
``order="random"``: a fresh permutation of the ``n`` examples every epoch; the
``n % batch_size`` examples at the end of the permutation are left out of that epoch, a
different random few each epoch. ``order="sequential"``: the training set is read as a cycle
in its given order; an epoch takes ``n // batch_size`` consecutive batches starting where
the previous epoch stopped (at example ``steps * batch_size mod n``), so none is skipped for
good; when ``batch_size`` divides ``n`` every epoch is the same pass ``0, 1, ..., n - 1``.

A custom loop with the pieces: two players of a (toy) GAN, each with its own state and
step; the other player's parameters travel in the ``Y`` slot of the batch (for the same GAN
through :func:`train.runner.run`, with history and checkpoints, see ``tests/test_runner.py``).

>>> import jax, jax.numpy as jnp, numpy as np, optax
>>> def d_loss(d, X, g, *, key, train):  # discriminator: real X against fakes g["mu"] + noise
...     fake = g["mu"] + jax.random.normal(key, X.shape)
...     logit = lambda x: d["w"] * x + d["b"]
...     return jnp.mean(jax.nn.softplus(-logit(X)) + jax.nn.softplus(logit(fake)))
>>> def g_loss(g, X, d, *, key, train):  # generator: make the discriminator call fakes real
...     fake = g["mu"] + jax.random.normal(key, X.shape)
...     return jnp.mean(jax.nn.softplus(-(d["w"] * fake + d["b"])))
>>> opt = optax.sgd(0.1)
>>> d_step = make_step(d_loss, opt, loss_takes_key=True)
>>> g_step = make_step(g_loss, opt, loss_takes_key=True)
>>> D = init_state({"w": jnp.zeros(()), "b": jnp.zeros(())}, opt)
>>> G = init_state({"mu": jnp.zeros(())}, opt)
>>> X = 3.0 + np.random.default_rng(0).normal(size=64).astype(np.float32)  # data: N(3, 1)
>>> for k in jax.random.split(jax.random.key(0), 5):
...     kd, kg = jax.random.split(k)
...     D, d_metrics = d_step(D, (X, G.params), kd)
...     G, g_metrics = g_step(G, (X, D.params), kg)
>>> int(D.step), int(G.step), sorted(d_metrics)
(5, 5, ['loss'])
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nets import _checks
from train import data as _data
from train import optim as _optim

__all__ = [
    "TrainState",
    "init_state",
    "make_step",
    "make_epoch",
    "make_evaluate",
    "minibatch_indices",
    "per_example_grads",
    "ORDERS",
]

ORDERS = ("random", "sequential")

@flax.struct.dataclass
class TrainState:
    """What a loss-form run carries from step to step (a pytree)."""

    params: Any  # the trained pytree, e.g. the MLP's [{"W": (n_out, n_in), "b": (n_out,)}, ...]
    opt_state: Any  # the optimizer's state (optax pytree; injected hyperparameters inside)
    step: jax.Array  # () int32: optimizer updates applied so far
    model_state: Any = None  # non-trained state threaded through the loss (batch-norm stats)


def signature(tree) -> tuple:
    """The tree structure and every leaf's shape, dtype and weak type: what a trace sees.

    Dtypes are JAX's canonical ones (int64 labels or float64 data are int32 and float32
    unless x64 is on) and Python scalars are weakly typed, as ``jax.jit`` keys its traces:
    data that ``jit`` traces once have one signature, so what was recorded during that one
    trace (the labels' classes, ``train.fit``) is found again."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple(_leaf_signature(a) for a in leaves)


def _leaf_signature(a) -> tuple:
    if hasattr(a, "dtype"):
        dtype, weak = a.dtype, getattr(a, "weak_type", False)
    else:
        dtype, weak = np.asarray(a).dtype, type(a) in (int, float, complex)
    dtype = jax.dtypes.canonicalize_dtype(dtype, allow_extended_dtype=True)  # keys stay keys
    return np.shape(a), str(dtype), weak


_SHAPES: dict = {}


def eval_shape_cached(fn: Callable, owner: tuple, *args):
    """``jax.eval_shape(fn, *args)``, cached on ``owner`` (its objects compared by identity
    and held while cached: optax's transformations are tuples, which cannot be weakly
    referenced) and the :func:`signature` of ``args``. ``fn`` must be determined by
    ``owner``: a loop of fits with one optimizer traces its ``init`` once."""
    key = (tuple(map(id, owner)), signature(args))
    entry = _SHAPES.get(key)
    if entry is not None and all(a is b for a, b in zip(entry[0], owner)):
        return entry[1]
    out = jax.eval_shape(fn, *args)
    _SHAPES[key] = (owner, out)
    while len(_SHAPES) > 16:
        _SHAPES.pop(next(iter(_SHAPES)))
    return out


def init_state(params, optimizer: optax.GradientTransformation, *,
               model_state=None) -> TrainState:
    """A fresh :class:`TrainState`: ``optimizer.init(params)``, ``step = 0``.

    Args:
      params: any pytree of floating arrays.
      optimizer: the ``optax.GradientTransformation`` the steps will use.
      model_state: optional non-trained state passed to the loss (see the module docstring).
    """
    return TrainState(params=params, opt_state=optimizer.init(params),
                      step=jnp.zeros((), jnp.int32), model_state=model_state)


def _call_loss(loss_fn, params, model_state, X, Y, key, *, train, has_aux, loss_takes_key,
               stateful):
    """Calls ``loss_fn`` by the contract; returns ``loss, (aux dict, new model_state)``."""
    kwargs = {}
    if loss_takes_key:
        kwargs["key"] = key
    if stateful:
        kwargs["model_state"] = model_state
    if loss_takes_key or stateful:
        kwargs["train"] = train
    out = loss_fn(params, X, Y, **kwargs)
    n_out = 1 + int(has_aux) + int(stateful)
    if n_out > 1:
        if not isinstance(out, (tuple, list)) or len(out) != n_out:
            form = "(loss, aux, new_model_state)" if has_aux and stateful else (
                "(loss, aux)" if has_aux else "(loss, new_model_state)")
            why = " and a model_state" if stateful else ""
            if isinstance(out, (tuple, list)):
                got = f"{type(out).__name__} of length {len(out)}"
            elif hasattr(out, "shape") and hasattr(out, "dtype"):  # a traced array: no JAX type
                got = (f"a scalar array ({out.dtype})" if jnp.shape(out) == () else
                       f"an array of shape {tuple(jnp.shape(out))} ({out.dtype})")
            else:
                got = type(out).__name__
            raise TypeError(
                f"loss_fn: expected it to return {form} (has_aux={has_aux}{why}), got {got}")
        loss = out[0]
        aux = out[1] if has_aux else {}
        new_model_state = out[-1] if stateful else None
    else:
        loss, aux, new_model_state = out, {}, None
    if not hasattr(loss, "shape") or jnp.shape(loss) != ():
        raise TypeError(
            f"loss_fn: expected a scalar loss (the mean over the batch), got "
            + (f"an array of shape {jnp.shape(loss)} (per example? take the mean)"
               if hasattr(loss, "shape") else type(loss).__name__)
            + ("; if it returns (loss, aux), pass has_aux=True" if isinstance(loss, tuple) else ""))
    if not isinstance(aux, Mapping):
        raise TypeError(f"loss_fn: with has_aux=True expected aux to be a dict of scalars, got "
                        f"{type(aux).__name__}")
    aux = dict(aux)
    for name, value in aux.items():
        if not isinstance(name, str) or jnp.shape(value) != ():
            raise TypeError(f"loss_fn: expected aux to map names to scalars, got aux[{name!r}] "
                            f"of shape {jnp.shape(value)}")
    if "loss" in aux:
        raise ValueError("loss_fn: the aux dict may not use the name 'loss' (the loss itself)")
    if stateful and jax.tree.structure(new_model_state) != jax.tree.structure(model_state):
        raise TypeError(
            "loss_fn: expected the returned model state to have the structure of the "
            f"model_state passed in, {jax.tree.structure(model_state)}, got "
            f"{jax.tree.structure(new_model_state)}")
    return loss, (aux, new_model_state)


def _split_batch(batch):
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"batch: the loss form expects (X, Y) pairs, got {type(batch).__name__}")
    return batch


def make_step(loss_fn: Callable, optimizer: optax.GradientTransformation, *,
              has_aux: bool = False, loss_takes_key: bool = False,
              jit: bool = True) -> Callable:
    """One optimizer update: ``step(state, (X_batch, Y_batch), key) -> (state, metrics)``.

    Computes ``jax.value_and_grad`` of the loss (the contract is in the module docstring,
    called with ``train=True``) at ``state.params``, applies ``optimizer`` and returns the
    new :class:`TrainState` with ``step + 1``, together with ``metrics = {"loss": loss,
    **aux}`` (scalars, the loss at the parameters *before* the update). This is the step
    :func:`train.runner.run` trains; ``key`` goes to the loss when it takes one.

    Args:
      loss_fn: ``loss_fn(params, X, Y) -> scalar`` (or with ``key=``/``train=``/``model_state=``).
      optimizer: any ``optax.GradientTransformation`` (e.g. :func:`train.sgd`).
      has_aux: the loss returns ``(loss, aux_dict)``.
      loss_takes_key: pass ``key=`` (and ``train=``) to the loss.
      jit: return ``jax.jit(step)`` (default) or the pure Python function.
    """

    def step(state: TrainState, batch, key):
        X, Y = _split_batch(batch)
        stateful = state.model_state is not None

        def objective(params):
            return _call_loss(loss_fn, params, state.model_state, X, Y, key, train=True,
                              has_aux=has_aux, loss_takes_key=loss_takes_key, stateful=stateful)

        (loss, (aux, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = state.replace(params=params, opt_state=opt_state, step=state.step + 1,
                            model_state=model_state if stateful else None)
        return new, {"loss": loss, **aux}

    return jax.jit(step) if jit else step


def _mulmod(a: jax.Array, b: int, n: int) -> jax.Array:
    """``a * b mod n`` for ``0 <= a, b < n < 2**30`` without int32 overflow (b static)."""
    r = jnp.zeros((), jnp.int32)
    for bit in bin(b)[2:]:  # at most 30 doubling steps, unrolled at trace time
        r = (2 * r) % n
        if bit == "1":
            r = (r + a) % n
    return r


def _stable_argsort_u32(bits: jax.Array) -> jax.Array:
    """The stable argsort of ``n <= 2**16`` uint32 keys by two one-operand sorts.

    An LSD radix sort with two digits of 16 bits, each pass one ``jnp.sort`` of packed
    words: ``low half << 16 | index`` orders by the low half (ties by index); then ``high
    half | position in pass 1`` orders by the high half, ties in the order of pass 1. A
    one-operand sort of uint32 runs about twice as fast on XLA:CPU as the key-value
    ``lax.sort_key_val`` (which calls a generated comparator).
    """
    n = bits.shape[0]
    idx = jnp.arange(n, dtype=jnp.uint32)
    first = jnp.sort((bits << jnp.uint32(16)) | idx)
    perm = (first & jnp.uint32(0xFFFF)).astype(jnp.int32)
    position = jnp.zeros(n, jnp.uint32).at[perm].set(idx, unique_indices=True)
    second = jnp.sort((bits & jnp.uint32(0xFFFF0000)) | position)
    return perm[(second & jnp.uint32(0xFFFF)).astype(jnp.int32)]


def permutation(key: jax.Array, n: int) -> jax.Array:
    """``jax.random.permutation(key, n)``, element for element, faster for ``n <= 2**16``.

    JAX shuffles by ``rounds = ceil(3 ln n / ln(2**32 - 1))`` stable sorts of ``arange(n)``
    by fresh 32-bit random keys (``key, sub = split(key)``; ``bits(sub, (n,), uint32)``); this
    takes the same keys and the same stable order, but sorts with
    :func:`_stable_argsort_u32` (W1's epoch of 1,079 examples: 0.2 of its 1.0-1.4 ms was the
    key-value sort; this one takes about half of it). Larger ``n``: JAX's own. The test
    suite checks the equality for many sizes and keys, ties included.
    """
    if n > 1 << 16:
        return jax.random.permutation(key, n)
    rounds = int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))
    x = jnp.arange(n, dtype=jnp.int32)
    for _ in range(rounds):
        key, sub = jax.random.split(key)
        x = x[_stable_argsort_u32(jax.random.bits(sub, (n,), jnp.uint32))]
    return x


def _check_batching(n: int, batch_size, order) -> int:
    """``batch_size`` as an ``int`` (NumPy integers accepted, like ``epochs``)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size: expected an int, got {type(batch_size).__name__} "
                        f"{batch_size!r}")
    batch_size = int(batch_size)
    if not 1 <= batch_size <= n:
        raise ValueError(
            f"batch_size: expected 1 <= batch_size <= n = {n} (the number of training "
            f"examples), got {batch_size}")
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")
    return batch_size


def minibatch_indices(key: jax.Array, step: jax.Array, *, n: int, batch_size: int,
                      order: str = "random") -> jax.Array:
    """The example indices of one epoch's minibatches, shape ``(n // batch_size, batch_size)``.

    ``order="random"``: the first ``(n // batch_size) * batch_size`` entries of
    ``jax.random.permutation(key, n)``. ``order="sequential"``: consecutive indices modulo
    ``n`` starting at ``step * batch_size mod n`` (``key`` unused). See the module docstring.

    >>> import jax
    >>> minibatch_indices(jax.random.key(0), 2, n=5, batch_size=2, order="sequential").tolist()
    [[4, 0], [1, 2]]
    """
    batch_size = _check_batching(n, batch_size, order)
    steps = n // batch_size
    if order == "random":
        idx = permutation(key, n)[: steps * batch_size]
    else:
        start = _mulmod(jnp.asarray(step, jnp.int32) % n, batch_size % n, n)
        idx = (start + jnp.arange(steps * batch_size, dtype=jnp.int32)) % n
    return idx.reshape(steps, batch_size)


def _take(data, idx):
    return jax.tree.map(lambda a: jnp.take(a, idx, axis=0), data)


def _num_examples(data) -> int:
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("data: expected (X, Y) with at least one array, got no arrays")
    return leaves[0].shape[0]


def make_epoch(loss_fn: Callable, optimizer: optax.GradientTransformation, *,
               batch_size: int, order: str = "random", has_aux: bool = False,
               loss_takes_key: bool = False, jit: bool = True) -> Callable:
    """One epoch for a loop of your own: ``epoch(state, (X, Y), key) -> (state, means)``.

    ``n // batch_size`` steps of :func:`make_step` in ONE ``lax.scan`` over minibatches
    gathered by index from device-resident data (:func:`minibatch_indices`, the order from
    ``key``, the sequential cycle from ``state.step``); ``means`` holds the epoch's mean of
    each step metric. :func:`train.runner.run` runs the same steps with history and stopping.
    """
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")
    step = make_step(loss_fn, optimizer, has_aux=has_aux, loss_takes_key=loss_takes_key,
                     jit=False)

    def epoch(state: TrainState, data, key):
        n = _num_examples(data)
        k_order, k_steps = jax.random.split(key)
        idx = minibatch_indices(k_order, state.step, n=n, batch_size=batch_size, order=order)

        def body(state, xs):
            i, batch_idx = xs
            return step(state, _take(data, batch_idx), jax.random.fold_in(k_steps, i))

        state, metrics = jax.lax.scan(body, state, (jnp.arange(idx.shape[0]), idx))
        return state, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)

    return jax.jit(epoch) if jit else epoch


def make_evaluate(loss_fn: Callable, *, metrics: Mapping[str, Callable] | None = None,
                  has_aux: bool = False, loss_takes_key: bool = False,
                  include_loss: bool = True, jit: bool = True) -> Callable:
    """``evaluate(state, (X, Y), key) -> {"loss": ..., **aux, **{name: metric}}`` on a batch.

    The loss is called in evaluation mode (``train=False``; ``key`` when it takes one), the
    model state it returns is discarded. Each metric is ``fn(params, X, Y) -> scalar``, the
    batch mean (with the keyword ``model_state=`` when the state carries one), e.g.
    ``model.metric(nets.metrics.error_rate)``. :func:`train.runner.run` calls it batch by
    batch and weights the means by batch size.
    """
    metrics = dict(metrics or {})

    def evaluate(state: TrainState, batch, key):
        X, Y = _split_batch(batch)
        stateful = state.model_state is not None
        out = {}
        if include_loss:
            loss, (aux, _) = _call_loss(loss_fn, state.params, state.model_state, X, Y, key,
                                        train=False, has_aux=has_aux,
                                        loss_takes_key=loss_takes_key, stateful=stateful)
            out = {"loss": loss, **aux}
        extra = {"model_state": state.model_state} if stateful else {}
        for name, fn in metrics.items():
            value = fn(state.params, X, Y, **extra)
            if jnp.shape(value) != ():
                raise TypeError(f"metrics[{name!r}]: expected a scalar, got shape "
                                f"{jnp.shape(value)}")
            out[name] = value
        return out

    return jax.jit(evaluate) if jit else evaluate


def per_example_grads(loss_fn: Callable, params, X, Y=None):
    """Gradients of ``loss_fn`` at each example separately: ``jax.vmap(jax.grad(...))``.

    ``loss_fn(params, X_batch, Y_batch)`` follows the contract above (a batch mean, no key);
    each example is passed as a batch of one. The mean over the leading axis of the result
    is the gradient of the batch mean loss.

    Returns:
      A pytree like ``params`` whose leaves have a leading axis of length ``n``.

    >>> import jax.numpy as jnp
    >>> loss = lambda w, X, Y: jnp.mean((X @ w - Y) ** 2)
    >>> g = per_example_grads(loss, jnp.ones(2), jnp.eye(2), jnp.zeros(2))
    >>> g.tolist()
    [[2.0, 0.0], [0.0, 2.0]]
    """

    def one(x, y):
        return jax.grad(loss_fn)(params, x[None], jax.tree.map(lambda a: a[None], y))

    return jax.vmap(one)(X, Y)


# --------------------------------------------------------------------------------------------
# Argument checks, shared by train.fit and train.sweep (run before any compilation)
# --------------------------------------------------------------------------------------------


def _check_common(loss_fn, optimizer, epochs, patience, metrics, order, validation) -> None:
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a function loss_fn(params, X, Y), got "
                        f"{type(loss_fn).__name__}")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer: expected an optax.GradientTransformation (e.g. "
                        f"train.sgd(0.1)), got {type(optimizer).__name__}")
    _checks.check_int(epochs, "epochs", 1)
    if patience is not None:
        _checks.check_int(patience, "patience", 1)
        if validation is None:
            raise ValueError("patience: early stopping monitors the validation loss; pass "
                             "validation=(X_val, Y_val), or patience=None")
    if metrics is not None:
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics: expected a dict name -> fn(params, X, Y), got "
                            f"{type(metrics).__name__}")
        for name, fn in metrics.items():
            if not isinstance(name, str) or not name or name == "loss" or name.startswith(
                    "val_") or name == "epoch":
                raise ValueError(f"metrics: expected names other than 'loss', 'epoch' and "
                                 f"'val_*', got {name!r}")
            if not callable(fn):
                raise TypeError(f"metrics[{name!r}]: expected a function fn(params, X, Y), "
                                f"got {type(fn).__name__}")
            try:
                inspect.signature(fn).bind_partial(None, None, None)
            except TypeError:
                raise TypeError(
                    f"metrics[{name!r}]: expected a function fn(params, X, Y) -> batch mean, "
                    f"got {getattr(fn, '__name__', type(fn).__name__)}"
                    f"{inspect.signature(fn)}; a function of the outputs fn(Z, Y) such as "
                    f"nets.metrics.error_rate goes through the model: "
                    f"model.metric(nets.metrics.error_rate)") from None
            except ValueError:  # no signature to read (a builtin): called as it is
                pass
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")


def _is_pytree_data(X) -> bool:
    """A dict of arrays, or a tuple/list of arrays (not a nested list of numbers)."""
    if isinstance(X, Mapping):
        return True
    return isinstance(X, (tuple, list)) and len(X) > 0 and all(
        hasattr(leaf, "shape") for leaf in jax.tree.leaves(X)) and not isinstance(
        X, np.ndarray)


def _validate_pair(X, Y, num_classes, name, y_name):
    """One (X, Y) pair as NumPy: arrays through train.data.validate, pytrees leaf by leaf."""
    if num_classes is not None and Y is None:
        raise ValueError(f"num_classes: expected integer labels {y_name} to check against "
                         f"num_classes={num_classes!r}, got {y_name}=None (no labels: leave "
                         f"num_classes out)")
    if not _is_pytree_data(X) and not _is_pytree_data(Y):
        return _data.validate(X, Y, num_classes=num_classes, name=name, y_name=y_name)
    out = []
    n = None
    for tree, what in ((X, name), (Y, y_name)):
        if tree is None:
            out.append(None)
            continue
        leaves = []
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            where = f"{what}{jax.tree_util.keystr(path)}"
            arr = _data._as_numeric(leaf, where)
            if arr.ndim == 0 or arr.shape[0] == 0:
                raise ValueError(f"{where}: expected one row per example, got shape {arr.shape}")
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise ValueError(f"{where}: expected {n} rows like the first array of {name}, "
                                 f"got shape {arr.shape}")
            _data._check_finite(arr, where)
            leaves.append(arr)
        if not leaves:
            raise ValueError(f"{what}: expected at least one array, got {tree!r}")
        out.append(jax.tree.unflatten(jax.tree.structure(tree), leaves))
    if num_classes is not None and out[1] is not None:
        _data.validate(np.zeros((n, 1)), out[1], num_classes=num_classes, name=name,
                       y_name=y_name)
    return tuple(out)


def _check_data(data, validation, num_classes):
    """Validates (X, Y) and the validation pair; returns them as NumPy (pytrees of) arrays.
    ``X`` and ``Y`` may be arrays or pytrees of arrays with one row per example."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"data: expected a pair (X, Y) (Y may be None), got "
                        f"{type(data).__name__}"
                        + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else ""))
    X, Y = _validate_pair(data[0], data[1], num_classes, "X", "Y")
    val = None
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise TypeError(f"validation: expected a pair (X_val, Y_val), got "
                            f"{type(validation).__name__}")
        Xv, Yv = _validate_pair(validation[0], validation[1], num_classes, "X_val", "Y_val")
        if (Y is None) != (Yv is None):
            raise ValueError(f"validation: expected Y_val to be "
                             f"{'None like Y' if Y is None else 'an array like Y'}, got "
                             f"{'None' if Yv is None else 'an array'}")
        for a, b, what in ((X, Xv, "X"), (Y, Yv, "Y")):
            if a is None:
                continue
            if jax.tree.structure(a) != jax.tree.structure(b):
                raise ValueError(f"validation: expected {what}_val structured like {what}, "
                                 f"{jax.tree.structure(a)}, got {jax.tree.structure(b)}")
            for path, u, v in zip([p for p, _ in jax.tree_util.tree_leaves_with_path(a)],
                                  jax.tree.leaves(a), jax.tree.leaves(b)):
                where = f"{what}_val{jax.tree_util.keystr(path)}"
                if u.shape[1:] != v.shape[1:]:
                    raise ValueError(f"validation: expected {where} of shape (m, ...) with "
                                     f"trailing shape {u.shape[1:]} like "
                                     f"{what}{jax.tree_util.keystr(path)} {u.shape}, got "
                                     f"{v.shape}")
                if (u.dtype.kind in "iub") != (v.dtype.kind in "iub"):
                    raise TypeError(f"validation: expected {where} of the kind of "
                                    f"{what} (dtype {u.dtype}), got dtype {v.dtype}")
        val = (Xv, Yv)
    return (X, Y), val


def _to_device(pair):
    if pair is None:
        return None
    return jax.device_put(tuple(None if a is None else jnp.asarray(a) for a in pair))


def _check_probe(program, *args) -> None:
    """Traces the epoch program once (no compilation) so a broken loss fails early and clearly."""
    jax.eval_shape(program, *args)


def _check_hyperparams(optimizer, params, hyperparams, models: int | None = None):
    """Checks ``{name: value}`` against the optimizer's injected hyperparameters.

    ``params`` is one model's parameters (abstract shapes suffice). Values are scalars, or
    with ``models`` also ``(models,)`` arrays; returned as float NumPy arrays of shape
    ``()`` (``models=None``) or ``(models,)``.
    """
    if hyperparams is None:
        return {}
    if not isinstance(hyperparams, Mapping):
        raise TypeError(f"hyperparams: expected a dict name -> value, got "
                        f"{type(hyperparams).__name__}")
    if not hyperparams:
        return {}
    opt_state = eval_shape_cached(optimizer.init, ("init", optimizer), params)
    available = _optim.get_hyperparams(opt_state)
    scheduled = _optim.scheduled_hyperparams(opt_state)
    shape = () if models is None else (models,)
    out = {}
    for name, value in hyperparams.items():
        if name not in available:
            raise ValueError(
                f"hyperparams: expected names among the optimizer's injected "
                f"hyperparameters {sorted(available)}, got {name!r}"
                + ("" if available else "; build the optimizer with "
                   "optax.inject_hyperparams (train.sgd is)"))
        try:
            if np.asarray(value).dtype.kind not in "biuf":  # "0.1" would parse as a number
                raise TypeError
            v = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise TypeError(f"hyperparams[{name!r}]: expected a number"
                            f"{'' if models is None else ' or an array'}, got "
                            f"{type(value).__name__} {value!r}") from None
        if v.shape not in {(), shape}:
            what = "a scalar" if models is None else (
                f"a scalar or shape ({models},) (one value per model)")
            raise ValueError(f"hyperparams[{name!r}]: expected {what}, got shape {v.shape}")
        if name in scheduled:
            raise ValueError(
                f"hyperparams[{name!r}]: the optimizer computes {name} from a schedule at every "
                f"step, which would overwrite the value set here; build one optimizer per "
                f"schedule (or sweep a constant {name} with train.sgd({name}=<number>))")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"hyperparams[{name!r}]: expected finite values, got {v}")
        low, strict, high = _optim.HYPERPARAM_RANGES.get(name, (None, False, None))
        if low is not None and (np.any(v <= low) if strict else np.any(v < low)) or (
                high is not None and np.any(v >= high)):
            interval = (f"{'(' if strict else '['}{low}, "
                        f"{high if high is not None else 'inf'})")
            raise ValueError(f"hyperparams[{name!r}]: expected values in {interval} (as "
                             f"train.sgd checks), got {v}")
        out[name] = np.broadcast_to(v, shape)
    return out
