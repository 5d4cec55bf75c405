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

>>> import jax, numpy as np
>>> from nets import mlp
>>> params = mlp.init(jax.random.key(0), (3, 4, 2))
>>> X, y = np.random.default_rng(0).normal(size=(5, 3)), np.array([0, 1, 1, 0, 1])
>>> check_mlp(params, X, y, activation="tanh", l2=0.1).worst < 1e-6
True
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from nets import activations as _activations
from nets import backprop as _backprop
from nets import losses as _losses
from nets import objective as _objective
from nets import penalties as _penalties


class Row(NamedTuple):
    """Worst per-element relative errors (:func:`relative_error`) for one parameter leaf
    (NaN where not computed)."""

    path: str  # e.g. "[0]['W']"
    shape: tuple
    checked: int  # number of coordinates compared with finite differences
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
        """The report as a fixed-width text table."""
        head = f"{'parameter':<16}{'shape':<12}{'checked':>8}{'ad~ref':>11}{'ad~fd':>11}{'ref~fd':>11}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(
                f"{r.path:<16}{str(r.shape):<12}{r.checked:>8}"
                f"{r.autodiff_vs_reference:>11.1e}{r.autodiff_vs_fd:>11.1e}{r.reference_vs_fd:>11.1e}")
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
    """Autodiff, the reference gradient and central differences. Run op by op (not
    jitted): the small programs of a check cost more to compile than to dispatch, and
    JAX's per-operation cache is shared by every check in a session."""
    flat, unravel = ravel_pytree(params)
    g_ad = jax.grad(objective)(params, X, Y, hyper)
    g_ref = None if reference is None else reference(params, X, Y, hyper)
    fd = _central_differences(lambda w: objective(unravel(w), X, Y, hyper), flat, coords, eps)
    return g_ad, g_ref, fd


def finite_differences(f: Callable, params, *, eps: float = 1e-6, coords=None) -> np.ndarray:
    """Central differences of scalar ``f(params)`` along flat coordinates ``coords``
    (all by default), as a vector. Call inside ``jax.enable_x64(True)`` for float64."""
    flat, unravel = ravel_pytree(params)
    coords = np.arange(flat.size) if coords is None else np.asarray(coords)
    return np.asarray(_central_differences(lambda w: f(unravel(w)), flat, coords, eps))


def check(objective: Callable, params, X, Y, *, reference: Callable | None = None,
          eps: float = 1e-6, max_coords: int | None = None, seed: int = 0,
          hyper=None, floor: float | None = None) -> Report:
    """Compare ``jax.grad(objective)`` with central differences (and ``reference``).

    Args:
      objective: ``objective(params, X, Y) -> scalar`` for any model (or
        ``objective(params, X, Y, hyper)`` when ``hyper`` is given).
      params: a pytree; float leaves are cast to float64.
      X, Y: a batch; float arrays are cast to float64.
      reference: optional ``reference(params, X, Y[, hyper]) -> grads`` (e.g. the
        hand-derived backprop), a pure function (it is jitted).
      eps: finite-difference step.
      max_coords: check at most this many randomly chosen coordinates per leaf
        (``None``: all), for models too large to difference everywhere.
      seed: seed of that choice (NumPy; the check itself is deterministic).
      hyper: optional pytree of traced arguments (e.g. penalty lambdas); with the same
        ``objective`` and ``reference`` objects, one compilation serves every value.
      floor: gradient entries smaller than this are compared absolutely (see
        :func:`relative_error`); ``None``: ``FLOOR_PER_UNIT * max(1, |R(w)|) * 1e-6 / eps``
        (1e-2 for an objective of order 1), so that the difference quotient's rounding
        noise (~1e-16 |R| / eps) reads as ~1e-8.

    Returns:
      A :class:`Report` with one row per leaf, and the floor used.
    """
    if floor is not None and not (isinstance(floor, (int, float)) and not isinstance(floor, bool)
                                  and 0 <= floor < float("inf")):
        raise ValueError(f"floor: expected a finite number >= 0 (or None), got {floor!r}")
    if hyper is None:
        obj3, ref3 = objective, reference
        objective = lambda p, x, y, h: obj3(p, x, y)  # noqa: E731
        reference = None if ref3 is None else (lambda p, x, y, h: ref3(p, x, y))
    with jax.enable_x64(True):
        params, X, Y, hyper = (_to_float64(t) for t in (params, X, Y, hyper))
        for leaf in jax.tree.leaves((params, X)):
            if not np.all(np.isfinite(np.asarray(leaf))):
                raise ValueError("params/X: expected finite values for a gradient check, got NaN/inf")
        leaves = jax.tree_util.tree_flatten_with_path(params)[0]
        sizes = [int(np.size(v)) for _, v in leaves]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        rng = np.random.default_rng(seed)
        picks = [np.arange(s) if max_coords is None or s <= max_coords
                 else np.sort(rng.choice(s, max_coords, replace=False)) for s in sizes]
        coords = np.concatenate([o + p for o, p in zip(offsets, picks)])
        g_ad, g_ref, fd = _triangulate(objective, reference, params, X, Y, hyper, coords, eps)
        fd = np.asarray(fd)
        if floor is None:
            value = float(objective(params, X, Y, hyper))
            floor = FLOOR_PER_UNIT * max(1.0, abs(value)) * 1e-6 / eps
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

    return objective, reference


def check_mlp(params, X, Y, *, activation="sigmoid", loss="cross_entropy", l2=0.0,
              penalties=None, eps: float = 1e-6, max_coords: int | None = None,
              floor: float | None = None) -> Report:
    """Triangulate the MLP's gradient: ``jax.grad`` vs :func:`nets.backprop.grad` vs
    central differences, in float64, per element (``floor`` as in :func:`check`). Inputs
    are validated by the backprop first."""
    with jax.enable_x64(True):
        # Validates every argument on concrete values before anything is compiled.
        _backprop.grad(_to_float64(params), X, Y, activation=activation, loss=loss, l2=l2,
                       penalties=penalties)
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
                 hyper=lams, floor=floor)
