"""Gradient triangulation in float64: ``jax.grad`` vs a reference vs central differences.

Gradients are compared PER ELEMENT, as ``jax.test_util.check_grads`` does
(``|a_i - b_i| <= atol + rtol |b_i|``), never by a leaf's largest entry alone: a dropped term
on a coordinate whose gradient is 1e-4, next to one of 1e3, must not hide behind the 1e3. For
every parameter leaf the report gives the worst per-element relative error with a floor,

    rel(a, b) = max_i |a_i - b_i| / max(|a_i|, |b_i|, floor)

between autodiff and central finite differences ``(R(w + eps e_i) - R(w - eps e_i)) / 2 eps``,
and, when a reference gradient is given (the MLP's hand-derived :func:`nets.backprop.grad`),
between autodiff and that reference and between the reference and finite differences.
``rel <= tol`` means ``|a_i - b_i| <= tol max(|a_i|, |b_i|)`` on every entry larger than
``floor`` and ``|a_i - b_i| <= tol * floor`` on the others (``check_grads``' test with
``rtol = tol``, ``atol = tol * floor``, up to a factor of 2). The floor sits well above the
rounding noise of the difference quotient, about ``1e-16 |R| / eps`` (``1e-10`` for
``eps = 1e-6`` and an objective ``R`` of order 1), below which an entry cannot be checked
relatively: :func:`check` sets it to ``1e-2 max(1, |R|)`` by default. With ``eps = 1e-6``
in float64 a correct gradient agrees to about 1e-8; a dropped term of the chain rule shows
up as an error of order 1, on the coordinate where it was dropped. A leaf
whose true gradient is identically zero (a ReLU layer dead on every example of the batch)
is compared absolutely and passes; check on a batch where every layer has a live unit, or
that leaf tells nothing.

For models too large to difference coordinate by coordinate, :func:`check_directional`
compares directional derivatives instead: for random unit directions ``v`` in each leaf
(drawn from an explicit key), the central difference ``(R(w + eps v) - R(w - eps v)) / 2
eps`` against ``grad R(w) . v``, each direction an element of the same per-element test.

>>> import jax, numpy as np
>>> from nets import mlp
>>> params = mlp.init(jax.random.key(0), (3, 4, 2))
>>> X, y = np.random.default_rng(0).normal(size=(5, 3)), np.array([0, 1, 1, 0, 1])
>>> check_mlp(params, X, y, activation="tanh", l2=0.1).worst < 1e-6
True
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from nets import _checks
from nets import activations as _activations
from nets import backprop as _backprop
from nets import losses as _losses
from nets import objective as _objective
from nets import penalties as _penalties
from nets.model import Model


class Row(NamedTuple):
    """Worst per-element relative errors (:func:`relative_error`) for one parameter leaf
    (NaN where not computed)."""

    path: str  # e.g. "[0]['W']"
    shape: tuple
    checked: int  # coordinates (or, check_directional, directions) compared with differences
    autodiff_vs_reference: float
    autodiff_vs_fd: float
    reference_vs_fd: float


class Report(NamedTuple):
    """Per-leaf errors of a gradient check; ``worst`` is the largest of them all.

    A check passes at ``tol`` when ``worst <= tol``: every element of every leaf agrees
    to ``tol`` relatively, or to ``tol * floor`` absolutely where it is below ``floor``.
    """

    rows: list
    floor: float = 0.0  # the floor of relative_error used for every row

    @property
    def worst(self) -> float:
        errs = [e for r in self.rows for e in r[3:] if not np.isnan(e)]
        return max(errs) if errs else float("nan")

    def table(self) -> str:
        """The report as a fixed-width text table; ``-`` where nothing was compared (no
        reference gradient)."""
        head = f"{'parameter':<16}{'shape':<12}{'checked':>8}{'ad~ref':>11}{'ad~fd':>11}{'ref~fd':>11}"
        lines = [head, "-" * len(head)]
        cell = lambda e: f"{'-':>11}" if np.isnan(e) else f"{e:>11.1e}"  # noqa: E731
        for r in self.rows:
            lines.append(f"{r.path:<16}{str(r.shape):<12}{r.checked:>8}"
                         f"{cell(r.autodiff_vs_reference)}{cell(r.autodiff_vs_fd)}"
                         f"{cell(r.reference_vs_fd)}")
        return "\n".join(lines)

    def to_dict(self) -> list[dict]:
        """JSON-able rows (NaN becomes None)."""
        return [{k: (None if isinstance(v, float) and np.isnan(v) else v)
                 for k, v in r._asdict().items()} for r in self.rows]


# Default floor of :func:`check`, per unit of |objective| (at eps = 1e-6). The central
# difference's rounding noise, ~1e-16 |R| / eps = 1e-10 |R| (measured: up to 6e-10 on the
# MLP grid of tests/test_gradients.py), is then ~1e-8 in units of the floor, 100 times below
# a tolerance of 1e-6; a term dropped from an entry is caught once it exceeds 1e-8 |R|.
FLOOR_PER_UNIT = 1e-2


def relative_error(a, b, *, floor: float = 0.0) -> float:
    """Worst per-element relative error ``max_i |a_i - b_i| / max(|a_i|, |b_i|, floor)``.

    Per element, as ``jax.test_util.check_grads`` compares (``|a - b| <= atol + rtol |b|``),
    never scaled by the largest entry: with gradient entries 1e3 and 1e-4, an error of
    1e-4 on the small one reads as 1, not 1e-7. ``floor`` (>= 0) is the magnitude below
    which entries are compared absolutely, in units of ``floor`` (``atol = rtol * floor``);
    with ``floor = 0`` the error is purely relative (two zeros agree exactly).

    >>> relative_error([1e3, 1e-4], [1e3, 0.0])  # a term dropped on the small entry
    1.0
    >>> relative_error([1e3, 1e-12], [1e3, 0.0], floor=1e-4) < 1e-6  # below the floor
    True
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"relative_error: expected a and b of one size, got {a.size} and {b.size}")
    if not floor >= 0:
        raise ValueError(f"floor: expected a number >= 0, got {floor!r}")
    if a.size == 0:
        return 0.0
    diff = np.abs(a - b)
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    ratio = np.divide(diff, scale, out=np.zeros_like(diff), where=diff > 0)
    return float(np.max(ratio))


def _to_float64(tree):
    return jax.tree.map(
        lambda v: jnp.asarray(v, jnp.float64) if jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating)
        else jnp.asarray(v), tree)


def _central_differences(f, flat, coords, eps, chunk=512):
    """``(f(w + eps e_i) - f(w - eps e_i)) / 2 eps`` for the flat indices ``coords``,
    vmapped over chunks of at most ``chunk`` coordinates."""

    def one(i):
        e = jnp.zeros_like(flat).at[i].set(eps)
        return (f(flat + e) - f(flat - e)) / (2 * eps)

    coords = np.asarray(coords)
    parts = [jax.vmap(one)(jnp.asarray(coords[s:s + chunk])) for s in range(0, coords.size, chunk)]
    return jnp.concatenate(parts) if parts else jnp.zeros(0, flat.dtype)


def _triangulate(objective, reference, params, X, Y, hyper, coords, eps):
    """Autodiff, the reference gradient and central differences, op by op (``jit=False``)."""
    flat, unravel = ravel_pytree(params)
    g_ad = jax.grad(objective)(params, X, Y, hyper)
    g_ref = None if reference is None else reference(params, X, Y, hyper)
    fd = _central_differences(lambda w: objective(unravel(w), X, Y, hyper), flat, coords, eps)
    return g_ad, g_ref, fd


def finite_differences(f: Callable, params, *, eps: float = 1e-6, coords=None) -> np.ndarray:
    """Central differences of scalar ``f(params)`` along flat coordinates ``coords``
    (all by default), as a vector. Call inside ``jax.enable_x64(True)`` for float64."""
    eps = _check_eps(eps)
    flat, unravel = ravel_pytree(params)
    coords = np.arange(flat.size) if coords is None else np.asarray(coords)
    return np.asarray(_central_differences(lambda w: f(unravel(w)), flat, coords, eps))


def _flat(tree) -> np.ndarray:
    """The leaves of ``tree`` raveled and concatenated, in float64 (NumPy)."""
    return np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree.leaves(tree)])


def _unflat(flat, treedef, shapes):
    """The inverse of :func:`_flat` for leaves of ``shapes`` (traceable)."""
    offsets = np.cumsum([0] + [math.prod(s) for s in shapes])
    return jax.tree.unflatten(treedef, [flat[o:o + math.prod(s)].reshape(s)
                                        for o, s in zip(offsets, shapes)])


@functools.partial(jax.jit, static_argnums=0)
def _value_and_grad(objective, params, X, Y, hyper):
    return jax.value_and_grad(objective)(params, X, Y, hyper)


def _central(objective, treedef, shapes, flat, X, Y, hyper, step, eps):
    """``(R(w + step) - R(w - step)) / (2 eps)``, ``w`` the flat parameters."""
    up, down = (_unflat(flat + sign * step, treedef, shapes) for sign in (1, -1))
    return (objective(up, X, Y, hyper) - objective(down, X, Y, hyper)) / (2 * eps)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _directional_differences(objective, treedef, shapes, flat, X, Y, hyper, V, eps):
    """Central differences along every row ``v`` of ``V`` ``(directions, n_params)``
    (step ``eps v``), vmapped, as one program."""
    return jax.vmap(lambda v: _central(objective, treedef, shapes, flat, X, Y, hyper, eps * v,
                                       eps))(V)


def _along_coordinates(objective, treedef, shapes, flat, X, Y, hyper, coords, eps):
    """Central differences along the flat coordinates ``coords`` (step ``eps e_i``), vmapped."""
    return jax.vmap(lambda i: _central(objective, treedef, shapes, flat, X, Y, hyper,
                                       jnp.zeros_like(flat).at[i].set(eps), eps))(coords)


# ... as one program of their own (the chunks after a check's first)
_coordinate_differences = jax.jit(_along_coordinates, static_argnums=(0, 1, 2))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _triangulation(objective, reference, treedef, shapes, params, flat, X, Y, hyper, coords,
                   eps):
    """The objective's value and gradient, ``reference``'s gradient (when traceable, else
    None) and the central differences along ``coords``, as ONE program."""
    value, g_ad = jax.value_and_grad(objective)(params, X, Y, hyper)
    g_ref = None if reference is None else reference(params, X, Y, hyper)
    return value, g_ad, g_ref, _along_coordinates(objective, treedef, shapes, flat, X, Y,
                                                  hyper, coords, eps)


def _traceable(fn) -> bool:
    """A ``jax.jit``-wrapped function: traced into the check's program. Any other reference
    may be NumPy (:func:`nets.backprop.conv2d_backward`) and is called on concrete arrays."""
    return hasattr(fn, "lower") and hasattr(fn, "trace")


def _triangulate_compiled(objective, reference, params, X, Y, hyper, coords, eps, chunk=512):
    """:func:`_triangulate` as one compiled program: the objective's value and gradient, a
    ``jax.jit``-wrapped reference and the first chunk of differences; further chunks of
    ``chunk`` coordinates (padded to one size, so compiled once) as another."""
    leaves, treedef = jax.tree.flatten(params)
    shapes = tuple(tuple(np.shape(v)) for v in leaves)
    flat = jnp.asarray(_flat(params))
    coords = np.asarray(coords, np.int64)
    size = max(1, min(chunk, coords.size))
    padded = np.concatenate([coords, np.full(-coords.size % size, coords[0] if coords.size else 0)])
    fused = reference if reference is not None and _traceable(reference) else None
    value, g_ad, g_ref, fd0 = _triangulation(objective, fused, treedef, shapes, params, flat, X,
                                             Y, hyper, padded[:size], eps)
    if reference is not None and fused is None:
        g_ref = reference(params, X, Y, hyper)
    fd = np.concatenate([np.asarray(fd0)] + [np.asarray(_coordinate_differences(
        objective, treedef, shapes, flat, X, Y, hyper, padded[s:s + size], eps))
        for s in range(size, padded.size, size)])[:coords.size]
    return value, g_ad, g_ref, fd


def _check_objective(objective) -> None:
    """A function, refused before anything is traced when it is a Model (or not callable)."""
    if isinstance(objective, Model) or not callable(objective):
        hint = ("; for a Model use nets.objective.make(model)" if isinstance(objective, Model)
                else "")
        raise TypeError(f"objective: expected a function objective(params, X, Y), got "
                        f"{type(objective).__name__}{hint}")


def _check_eps(eps) -> float:
    """The finite-difference step: a finite number > 0 (0 divides by zero, a negative step
    flips the sign of the default floor)."""
    return _checks.check_real(eps, "eps", minimum=0, strict=True)


def _check_max_coords(max_coords) -> int | None:
    if max_coords is None:
        return None
    return _checks.check_int(max_coords, "max_coords", 1, what=" (or None: every coordinate)")


def _check_floor(floor) -> None:
    if floor is not None and not (isinstance(floor, (int, float)) and not isinstance(floor, bool)
                                  and 0 <= floor < float("inf")):
        raise ValueError(f"floor: expected a finite number >= 0 (or None), got {floor!r}")


@functools.lru_cache(maxsize=64)
def _ignoring_hyper_cached(fn):
    return lambda p, x, y, h: fn(p, x, y)


def _ignoring_hyper(fn):
    """``fn(p, x, y)`` as ``f(p, x, y, hyper)``: the same wrapper for the same (hashable)
    ``fn``, so that programs compiled for it (``jit=True``, :func:`check_directional`) are
    found again by a later check."""
    try:
        return _ignoring_hyper_cached(fn)
    except TypeError:  # an unhashable callable: a new wrapper, hashable by identity
        return lambda p, x, y, h: fn(p, x, y)


def _hashable(fn):
    """``fn``, or a wrapper hashable by identity (a static argument of ``jax.jit``)."""
    try:
        hash(fn)
        return fn
    except TypeError:
        return lambda *args: fn(*args)


def _with_hyper(objective, reference, hyper):
    """``objective`` and ``reference`` taking a fourth argument ``hyper`` (ignored when the
    caller gave none)."""
    if hyper is not None:
        return _hashable(objective), reference
    return _ignoring_hyper(objective), None if reference is None else _ignoring_hyper(reference)


def _float64_inputs(params, X, Y, hyper):
    """The inputs in float64 (call inside ``jax.enable_x64(True)``); NaN/inf is refused."""
    params, X, Y, hyper = (_to_float64(t) for t in (params, X, Y, hyper))
    for leaf in jax.tree.leaves((params, X)):
        if not np.all(np.isfinite(np.asarray(leaf))):
            raise ValueError("params/X: expected finite values for a gradient check, got NaN/inf")
    return params, X, Y, hyper


def _default_floor(value, eps) -> float:
    return FLOOR_PER_UNIT * max(1.0, abs(float(value))) * 1e-6 / eps


def check(objective: Callable, params, X, Y, *, reference: Callable | None = None,
          eps: float = 1e-6, max_coords: int | None = None, seed: int = 0,
          hyper=None, floor: float | None = None, jit: bool = True) -> Report:
    """Compare ``jax.grad(objective)`` with central differences (and ``reference``).

    Args:
      objective: ``objective(params, X, Y) -> scalar`` for any model (or
        ``objective(params, X, Y, hyper)`` when ``hyper`` is given).
      params: a pytree; float leaves are cast to float64.
      X, Y: a batch; float arrays are cast to float64.
      reference: optional ``reference(params, X, Y[, hyper]) -> grads`` (e.g. the
        hand-derived backprop), called once on concrete arrays (it may be NumPy:
        :func:`nets.backprop.conv2d_backward`).
      eps: finite-difference step, a finite number ``> 0``.
      max_coords: check at most this many randomly chosen coordinates per leaf, an int
        ``>= 1`` (``None``: all), for models too large to difference everywhere.
      seed: seed of that choice (NumPy; the check itself is deterministic).
      hyper: optional pytree of traced arguments (e.g. penalty lambdas); with the same
        ``objective`` and ``reference`` objects, one compilation serves every value.
      floor: gradient entries smaller than this are compared absolutely (see
        :func:`relative_error`); ``None``: ``FLOOR_PER_UNIT * max(1, |R(w)|) * 1e-6 / eps``
        (1e-2 for an objective of order 1), so that the difference quotient's rounding
        noise (~1e-16 |R| / eps) reads as ~1e-8.
      jit: compile the objective's value, its gradient and its central differences as
        one program (the default), or run them op by op (``False``). Op by op, each small
        operation is compiled once per shape and dtype: a few hundred compilations for a
        small MLP, so whole programs are cheaper as soon as a check has more than a few
        dozen operations (tests/test_gradients.py's MLP grid: 120 s of CPU instead of 253).
        A ``reference`` wrapped in ``jax.jit`` is traced into that program; any other is
        called as it is, never jitted here. The numbers agree to rounding.

    Returns:
      A :class:`Report` with one row per leaf, and the floor used.
    """
    _check_objective(objective)
    eps = _check_eps(eps)
    max_coords = _check_max_coords(max_coords)
    _check_floor(floor)
    objective, reference = _with_hyper(objective, reference, hyper)
    with jax.enable_x64(True):
        params, X, Y, hyper = _float64_inputs(params, X, Y, hyper)
        leaves = jax.tree_util.tree_flatten_with_path(params)[0]
        sizes = [int(np.size(v)) for _, v in leaves]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        rng = np.random.default_rng(seed)
        picks = [np.arange(s) if max_coords is None or s <= max_coords
                 else np.sort(rng.choice(s, max_coords, replace=False)) for s in sizes]
        coords = np.concatenate([o + p for o, p in zip(offsets, picks)])
        if jit:
            value, g_ad, g_ref, fd = _triangulate_compiled(objective, reference, params, X, Y,
                                                           hyper, coords, eps)
        else:
            g_ad, g_ref, fd = _triangulate(objective, reference, params, X, Y, hyper, coords,
                                           eps)
            value = None if floor is not None else objective(params, X, Y, hyper)
        fd = np.asarray(fd)
        if floor is None:
            floor = _default_floor(value, eps)
        err = functools.partial(relative_error, floor=floor)
        ad_leaves = jax.tree.leaves(g_ad)
        ref_leaves = jax.tree.leaves(g_ref) if g_ref is not None else [None] * len(leaves)
        rows, start, nan = [], 0, float("nan")
        for (path, value), pick, ad, ref in zip(leaves, picks, ad_leaves, ref_leaves):
            fd_leaf, start = fd[start:start + pick.size], start + pick.size
            ad_flat = np.asarray(ad).ravel()
            ref_flat = None if ref is None else np.asarray(ref).ravel()
            rows.append(Row(
                path=jax.tree_util.keystr(path), shape=tuple(np.shape(value)), checked=pick.size,
                autodiff_vs_reference=nan if ref is None else err(ad_flat, ref_flat),
                autodiff_vs_fd=err(ad_flat[pick], fd_leaf),
                reference_vs_fd=nan if ref is None else err(ref_flat[pick], fd_leaf)))
    return Report(rows, float(floor))


def check_directional(objective: Callable, params, X, Y, *, key: jax.Array,
                      directions: int = 4, reference: Callable | None = None,
                      eps: float = 1e-6, hyper=None, floor: float | None = None) -> Report:
    """Compare ``jax.grad(objective)`` with central differences along random directions.

    For a model too large to difference coordinate by coordinate (two evaluations of the
    objective per parameter): for each parameter leaf, ``directions`` random unit vectors
    ``v`` supported on that leaf (the leaf's slice of each row of one Gaussian draw
    ``jax.random.normal(key, (directions, n_params))``, normalised), the directional
    derivative by central differences

        ``fd(v) = (R(w + eps v) - R(w - eps v)) / (2 eps)``

    against the gradient's ``grad R(w) . v``: ``grad`` itself, the one training uses, not a
    separate forward-mode ``jax.jvp``. Each direction is one element of the per-element
    test of :func:`relative_error` (``|fd - g.v| <= tol max(|fd|, |g.v|, floor)``), so a
    leaf's row reads as in :func:`check`, with ``checked`` the number of directions. Cost:
    ``2 * directions`` evaluations of the objective per leaf, whatever its size. A wrong
    gradient is caught unless its error is orthogonal to every drawn direction (probability
    zero) or smaller than the tolerance times ``|g . v|``; a dropped term on a few entries
    of a large leaf is diluted, by about the square root of the leaf's size, so use
    :func:`check` where it is affordable.

    Args:
      objective: ``objective(params, X, Y) -> scalar`` (or ``(params, X, Y, hyper)``).
      params: a pytree; float leaves are cast to float64.
      X, Y: a batch; float arrays are cast to float64.
      key: a ``jax.random.key``; the same key draws the same directions.
      directions: random directions per leaf (``>= 1``).
      reference: optional ``reference(params, X, Y[, hyper]) -> grads``; compared with
        autodiff on every element, and along the same directions with the differences.
      eps: finite-difference step, a finite number ``> 0``.
      hyper: optional pytree of traced arguments, as in :func:`check`.
      floor: as in :func:`check` (``None``: ``1e-2 max(1, |R|)`` at ``eps = 1e-6``).

    Returns:
      A :class:`Report` with one row per leaf.

    >>> import jax, jax.numpy as jnp
    >>> obj = lambda p, X, Y: jnp.sum(jnp.tanh(X @ p["w"]) ** 2)
    >>> params, X = {"w": jnp.ones(3) / 3}, jnp.arange(6.0).reshape(2, 3) / 6
    >>> report = check_directional(obj, params, X, None, key=jax.random.key(0))
    >>> report.rows[0].checked, report.worst < 1e-6
    (4, True)
    """
    _check_objective(objective)
    _checks.check_key(key)
    directions = _checks.check_int(directions, "directions", 1)
    eps = _check_eps(eps)
    _check_floor(floor)
    objective, reference = _with_hyper(objective, reference, hyper)
    with jax.enable_x64(True):
        params, X, Y, hyper = _float64_inputs(params, X, Y, hyper)
        leaves, treedef = jax.tree.flatten(params)
        shapes = tuple(tuple(np.shape(v)) for v in leaves)
        flat = np.concatenate([np.ravel(v) for v in leaves])
        # Compiled once per objective and shapes (not op by op): its value and gradient, and
        # its central differences along a (directions, n_params) block of directions.
        value, g_ad = _value_and_grad(objective, params, X, Y, hyper)
        g_ad = _flat(g_ad)
        g_ref = None if reference is None else _flat(reference(params, X, Y, hyper))
        if floor is None:
            floor = _default_floor(value, eps)
        err = functools.partial(relative_error, floor=floor)
        # One Gaussian draw; leaf l's directions are its slice of each row, normalised.
        draw = np.asarray(jax.random.normal(key, (directions, flat.size), jnp.float64))
        paths = [jax.tree_util.keystr(path) for path, _ in
                 jax.tree_util.tree_flatten_with_path(params)[0]]
        rows, start, nan = [], 0, float("nan")
        for path, shape in zip(paths, shapes):
            part = slice(start, start + math.prod(shape))
            start = part.stop
            if part.stop == part.start:
                rows.append(Row(path, shape, 0, nan if g_ref is None else 0.0, 0.0,
                                nan if g_ref is None else 0.0))
                continue
            d = draw[:, part] / np.maximum(np.linalg.norm(draw[:, part], axis=1, keepdims=True),
                                           np.finfo(np.float64).tiny)  # unit rows
            V = np.zeros((directions, flat.size))
            V[:, part] = d
            fd = np.asarray(_directional_differences(objective, treedef, shapes, flat, X, Y,
                                                     hyper, V, eps))
            rows.append(Row(
                path=path, shape=shape, checked=directions,
                autodiff_vs_reference=nan if g_ref is None else err(g_ad[part], g_ref[part]),
                autodiff_vs_fd=err(d @ g_ad[part], fd),
                reference_vs_fd=nan if g_ref is None else err(d @ g_ref[part], fd)))
    return Report(rows, float(floor))


@functools.lru_cache(maxsize=None)
def _mlp_pair(activation, loss, penalty_set):
    """The MLP's objective and hand-derived gradient as functions of traced lambdas
    (``hyper[name]``), cached so one compilation serves every penalty strength."""

    def spec(hyper):
        return [(p, hyper[p.name]) for p in penalty_set]

    def objective(params, X, Y, hyper):
        return _objective.mlp_objective(params, X, Y, activation=activation, loss=loss,
                                        penalties=spec(hyper))

    def reference(params, X, Y, hyper):
        return _backprop.grad_unchecked(params, X, Y, activation=activation, loss=loss,
                                        penalties=spec(hyper))

    return objective, jax.jit(reference)  # pure jax.numpy: one program per shape


def check_mlp(params, X, Y, *, activation="sigmoid", loss="cross_entropy", l2=0.0,
              penalties=None, eps: float = 1e-6, max_coords: int | None = None,
              floor: float | None = None) -> Report:
    """Triangulate the MLP's gradient: ``jax.grad`` vs :func:`nets.backprop.grad` vs
    central differences, in float64, per element (``floor`` as in :func:`check`). Inputs
    are checked first (:func:`nets.backprop.checked_inputs`); then each of the three is one
    compiled program per activation, loss and shape, which serves every penalty strength."""
    eps = _check_eps(eps)
    max_coords = _check_max_coords(max_coords)
    _check_floor(floor)
    with jax.enable_x64(True):  # every argument checked on concrete values, nothing compiled
        _backprop.checked_inputs(_to_float64(params), X, Y, loss=loss, l2=l2, penalties=penalties)
    lams = {p.name: 0.0 for p in _penalties.PENALTIES.values()}
    extra = []
    for p, lam in _penalties.terms(penalties) + [(_penalties.get("l2"), l2)]:
        if p.name not in lams:
            extra.append(p)
            lams[p.name] = 0.0
        lams[p.name] += lam
    penalty_set = tuple(_penalties.PENALTIES.values()) + tuple(extra)
    # Cache on the resolved objects (not names), so a changed registry entry recompiles.
    if isinstance(activation, (list, tuple)) and not isinstance(activation, _activations.Activation):
        activation = tuple(_activations.get(g) for g in activation)
    else:
        activation = _activations.get(activation)
    objective, reference = _mlp_pair(activation, _losses.get(loss), penalty_set)
    return check(objective, params, X, Y, reference=reference, eps=eps, max_coords=max_coords,
                 hyper=lams, floor=floor, jit=True)
