"""Newton's method with adaptive damping and a backtracking line search, for small models.

The note's side project ("v.s. Newton's method"): on the flat parameter vector
``x = ravel_pytree(params)`` of shape ``(P,)``, each iteration solves the damped Newton system

    (H + mu I) d = -g,        g = grad f(x) (P,),   H = hess f(x) (P, P),

with ``jnp.linalg.solve`` (never an explicit inverse), and moves to ``x + t d``.

* **Damping** ``mu`` (Levenberg-Marquardt style; Nocedal & Wright, *Numerical Optimization*,
  2nd ed., 2006, section 3.4, Algorithm 3.3 "Cholesky with added multiple of the identity",
  and ch. 4, trust regions, whose step is a damped Newton step). ``mu`` grows by ``grow``
  (starting from ``beta = 1e-3 mean|diag H| + sqrt(eps)``) while ``H + mu I`` is not positive
  definite -- detected by a Cholesky factor that comes back with NaNs -- and while the step
  finds no decrease of ``f``; it shrinks by ``shrink`` after a full step (``t = 1``) is
  accepted, so near a minimum with positive definite ``H`` the method becomes Newton's
  method again and converges quadratically.
* **Line search** (Nocedal & Wright ch. 3.1, Algorithm 3.1): backtracking ``t <- backtrack t``
  from ``t = 1`` until the Armijo condition ``f(x + t d) <= f(x) + armijo t g.d`` holds. With
  ``line_search=False`` a step is accepted when ``f(x + d) < f(x)`` (pure LM damping).
* A trial point where ``f`` is not finite is never accepted. If the Hessian, or the gradient
  at an accepted point, is not finite (or its norm overflows: an objective unbounded below),
  the run stops with status ``"non-finite"`` and keeps
  the last finite parameters; if no damping up to ``max_damping`` gives a decrease, it stops
  with status ``"stalled"``.
* It stops when ``||g||_2 <= tol`` (status ``"converged"``) or after ``max_iter`` accepted
  steps (status ``"max_iter"``).

**Cost.** Forming ``H`` costs about ``P`` gradient evaluations and its ``P^2`` entries of
memory; each solve and Cholesky test costs ``O(P^3)``. So one iteration is ``O(P^3)`` in the
number of parameters ``P``: use it for logistic regression and small nets (a few hundred
parameters), not for the digits MLP of the main job. Use float64 (``jax.enable_x64``) for
tolerances below about ``1e-5``: in float32 the gradient norm stalls near round-off. The
iteration runs in the dtype of ``params`` (float32 or float64): an objective built under
``jax.enable_x64`` (a float64 value) needs float64 ``params`` too, or it is a ``TypeError``
naming both dtypes.

The whole loop runs compiled (``jax.lax.while_loop`` inside ``jax.jit``), recording the
objective, gradient norm, damping and step length after every accepted step. To time steps
(loss against seconds), drive the same compiled step yourself with :func:`newton_init` and
:func:`newton_update`.

>>> import jax.numpy as jnp
>>> f = lambda p: jnp.sum((p["x"] - 3.0) ** 2) + (p["y"] + 1.0) ** 2
>>> res = newton(f, {"x": jnp.zeros(2), "y": jnp.array(0.0)})
>>> res.status, res.iterations, res.params["x"].tolist(), float(res.params["y"])
('converged', 1, [3.0, 3.0], -1.0)
>>> res.history.objective.tolist()  # f before and after the one step
[19.0, 0.0]
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from nets import _checks
from nets import losses as _losses
from nets._checks import as_finite_array

__all__ = [
    "NewtonHistory",
    "NewtonResult",
    "NewtonState",
    "STATUSES",
    "logistic_regression_objective",
    "newton",
    "newton_init",
    "newton_step",
    "newton_update",
]

# Status codes carried in NewtonState.status; STATUSES[code] is the name in NewtonResult.
RUNNING, CONVERGED, MAX_ITER, NON_FINITE, STALLED = range(5)
STATUSES = ("running", "converged", "max_iter", "non-finite", "stalled")


class NewtonState(NamedTuple):
    """The carried state of :func:`newton_update` (``P`` = number of parameters)."""

    params: Any  # pytree like the initial params: the current iterate
    value: jax.Array  # () objective at params
    grad: jax.Array  # (P,) flat gradient at params
    grad_norm: jax.Array  # () ||grad||_2
    damping: jax.Array  # () mu to start the next iteration from
    step_size: jax.Array  # () line-search step length t of the last accepted step (0 before any)
    iteration: jax.Array  # () int32, accepted steps so far
    status: jax.Array  # () int32, index into STATUSES


class NewtonHistory(NamedTuple):
    """Per-iteration record; entry 0 is the initial point, entry k the point after step k."""

    objective: np.ndarray  # (iterations + 1,) f(params)
    grad_norm: np.ndarray  # (iterations + 1,) ||grad f(params)||_2
    damping: np.ndarray  # (iterations + 1,) mu after step k (the initial damping at 0)
    step_size: np.ndarray  # (iterations + 1,) t of step k (0 at entry 0)


class NewtonResult(NamedTuple):
    """What :func:`newton` returns."""

    params: Any  # pytree like the initial params; always finite
    value: float  # objective at params
    grad_norm: float  # ||grad||_2 at params
    iterations: int  # accepted Newton steps
    converged: bool  # grad_norm <= tol
    status: str  # one of STATUSES (never "running")
    message: str  # a sentence saying why it stopped
    damping: float  # final damping mu
    history: NewtonHistory


class _Config(NamedTuple):
    """Array-valued hyperparameters, so changing them does not recompile."""

    tol: jax.Array
    armijo: jax.Array
    backtrack: jax.Array
    grow: jax.Array
    shrink: jax.Array
    max_damping: jax.Array


# ---------------------------------------------------------------------------------------------
# Input checks (concrete values, before anything is traced or compiled)


_TRACED = ("newton runs its own jit, do not call it inside jax.jit or jax.vmap (one fit per "
           "data set: call it in a Python loop)")


def _check_params(params, max_params: int | None = None) -> int:
    """Raise unless ``params`` is a non-empty pytree of finite floating arrays; return P."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if not leaves:
        raise ValueError(f"params: expected a pytree with at least one array, got {params!r}")
    size = 0
    for path, leaf in leaves:
        where = "params" + jax.tree_util.keystr(path)
        if isinstance(leaf, jax.core.Tracer):
            raise TypeError(f"{where}: expected a concrete array, got a traced one; {_TRACED}")
        arr = np.asarray(leaf)
        if arr.dtype not in (np.float32, np.float64):  # float16, bfloat16: no LAPACK solve
            raise TypeError(f"{where}: expected float32 or float64 parameters, got dtype "
                            f"{arr.dtype}")
        if not np.all(np.isfinite(arr)):
            bad = tuple(np.argwhere(~np.isfinite(arr))[0].tolist())
            raise ValueError(f"{where}: expected finite initial values, got {arr[bad]} at "
                             f"index {bad}")
        size += arr.size
    if size == 0:
        raise ValueError("params: expected at least one parameter, got only empty arrays")
    if max_params is not None:
        max_params = _checks.check_int(max_params, "max_params", 1, what=" or None")
    if max_params is not None and size > max_params:
        raise ValueError(
            f"params: expected at most max_params={max_params} parameters (Newton's method "
            f"costs O(P^3) time and O(P^2) memory per iteration), got P={size}; use a "
            "first-order optimizer, or raise max_params")
    return size


def _check_objective(objective, params, *, carried: bool = True) -> None:
    """Trace ``objective`` at ``params`` abstractly (nothing is compiled) and check its output.

    ``carried``: the objective's value is carried through the compiled loop in the dtype of
    ``params`` (:func:`newton`, :func:`newton_init`), so it may not be of a wider dtype.
    """
    if not callable(objective):
        raise TypeError(f"objective: expected a function params -> scalar, got "
                        f"{type(objective).__name__}")
    try:
        closed, out = jax.make_jaxpr(objective, return_shape=True)(params)
    except KeyError as err:  # a bare KeyError says neither what was read nor what params hold
        held = (f"params has keys {sorted(map(str, params))}" if isinstance(params, dict)
                else f"params is a {type(params).__name__}")
        raise ValueError(f"params: the objective reads the entry {err}, which params lacks "
                         f"({held})") from err
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError) as err:
        first = str(err).splitlines()[0]
        raise TypeError(
            "objective: expected a function JAX can trace, got one that needs a concrete value "
            "of a traced one (Python `if`/int()/float()/NumPy on params, or on a value traced "
            f"by an enclosing jax.jit or jax.vmap: {_TRACED}); JAX said: {first}") from err
    if any(isinstance(c, jax.core.Tracer) for c in closed.consts):
        raise TypeError(f"objective: expected a function of concrete values, got one that "
                        f"closes over a value traced by an enclosing jax.jit or jax.vmap; "
                        f"{_TRACED}")
    shape = getattr(out, "shape", None)
    if shape != ():
        raise ValueError(f"objective: expected a scalar output, got "
                         f"{'shape ' + str(shape) if shape is not None else type(out).__name__}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"objective: expected a floating-point scalar, got dtype {out.dtype}")
    dtype = jax.eval_shape(lambda p: ravel_pytree(p)[0], params).dtype
    if carried and jnp.promote_types(out.dtype, dtype) != dtype:
        raise TypeError(
            f"params: expected {out.dtype} arrays, the dtype of the objective's value (Newton's "
            f"method iterates in the dtype of params), got {dtype}; for {out.dtype} create "
            f"params under jax.enable_x64, e.g. jax.tree.map(lambda a: jnp.asarray(a, "
            f"jnp.{out.dtype}), params)")


def _config(tol, armijo, backtrack, grow, shrink, max_damping) -> _Config:
    return _Config(
        tol=_checks.check_number(tol, "tol", "a positive finite tolerance", lambda v: v > 0),
        armijo=_checks.check_number(armijo, "armijo", "a constant in (0, 1)", lambda v: 0 < v < 1),
        backtrack=_checks.check_number(backtrack, "backtrack", "a factor in (0, 1)",
                                lambda v: 0 < v < 1),
        grow=_checks.check_number(grow, "grow", "a factor > 1", lambda v: v > 1),
        shrink=_checks.check_number(shrink, "shrink", "a factor in (0, 1]", lambda v: 0 < v <= 1),
        max_damping=_checks.check_number(max_damping, "max_damping", "a positive finite cap",
                                  lambda v: v > 0),
    )


def _as_arrays(cfg: _Config, dtype) -> _Config:
    return _Config(*(jnp.asarray(v, dtype) for v in cfg))


# ---------------------------------------------------------------------------------------------
# The compiled pieces. `objective` is a static argument: the same function object reuses the
# compiled code; a new closure compiles again.


def _flat(objective, params):
    flat, unravel = ravel_pytree(params)
    return flat, unravel, (lambda v: objective(unravel(v)))


def _initial_state(objective, params, damping) -> NewtonState:
    flat, unravel, f = _flat(objective, params)
    value, grad = jax.value_and_grad(f)(flat)
    # a norm that overflows (finite entries, e.g. an objective unbounded below) counts too
    finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad)) & jnp.isfinite(
        jnp.linalg.norm(grad))
    dtype = flat.dtype
    return NewtonState(
        params=unravel(flat),  # the same pytree, its leaves as JAX arrays
        value=value.astype(dtype),
        grad=grad,
        grad_norm=jnp.linalg.norm(grad),
        damping=jnp.asarray(damping, dtype),
        step_size=jnp.asarray(0.0, dtype),
        iteration=jnp.asarray(0, jnp.int32),
        status=jnp.where(finite, RUNNING, NON_FINITE).astype(jnp.int32),
    )


_initial_state_jit = jax.jit(_initial_state, static_argnums=0)


def _check_initial(state: NewtonState) -> None:
    """Raise unless the objective and its gradient are finite at the initial params."""
    if not np.isfinite(state.value):
        raise ValueError(
            f"objective: expected a finite value at the initial params, got {state.value}")
    if not np.all(np.isfinite(state.grad)):
        raise ValueError("objective: expected a finite gradient at the initial params, got "
                         f"{int(np.sum(~np.isfinite(state.grad)))} non-finite entries")


def _take_step(objective, state: NewtonState, cfg: _Config, line_search: bool,
               max_backtracks: int) -> NewtonState:
    """One accepted damped Newton step from ``state`` (or a terminal status)."""
    x, unravel, f = _flat(objective, state.params)
    dtype = x.dtype
    fx, g = state.value, state.grad
    eye = jnp.eye(x.size, dtype=dtype)

    H = jax.hessian(f)(x)  # (P, P)
    H = 0.5 * (H + H.T)  # symmetric up to round-off; make it exactly so for Cholesky
    h_ok = jnp.all(jnp.isfinite(H))
    H = jnp.where(h_ok, H, eye)  # keep the arithmetic below finite; the step is rejected
    # The first nonzero shift tried (Nocedal & Wright, Algorithm 3.3's beta).
    beta = 1e-3 * jnp.mean(jnp.abs(jnp.diag(H))) + jnp.sqrt(jnp.finfo(dtype).eps)

    def grow(mu):
        return jnp.maximum(mu * cfg.grow, beta)

    def positive_definite(mu):
        # Cholesky of an indefinite (or singular) matrix comes back with NaNs.
        return jnp.all(jnp.isfinite(jnp.linalg.cholesky(H + mu * eye)))

    def make_positive_definite(mu):
        return jax.lax.while_loop(
            lambda m: h_ok & ~positive_definite(m) & (m <= cfg.max_damping), grow, mu)

    def attempt(mu):
        mu = make_positive_definite(mu)
        d = jnp.linalg.solve(H + mu * eye, -g)  # (P,): solve, never inv
        slope = jnp.vdot(g, d)  # < 0 when H + mu I is positive definite and g != 0
        if line_search:
            def sufficient(t, ft):
                return jnp.isfinite(ft) & (ft <= fx + cfg.armijo * t * slope)

            def backtrack(c):
                t, _, k = c
                t = t * cfg.backtrack
                return t, f(x + t * d), k + 1

            t0 = jnp.asarray(1.0, dtype)
            t, ft, _ = jax.lax.while_loop(
                lambda c: ~sufficient(c[0], c[1]) & (c[2] < max_backtracks), backtrack,
                (t0, f(x + d), jnp.asarray(0, jnp.int32)))
            ok = sufficient(t, ft)
        else:
            t = jnp.asarray(1.0, dtype)
            ft = f(x + d)
            ok = jnp.isfinite(ft) & (ft < fx)
        ok = ok & h_ok & (mu <= cfg.max_damping) & jnp.all(jnp.isfinite(d)) & (slope < 0)
        return mu, d, t, ok

    # Try mu = state.damping, then retry with more damping until a step decreases f, or the
    # damping passes its cap. (One loop, so the objective is traced once for the attempts.)
    def retry(c):
        mu, _, _, _, first = c
        return (*attempt(jnp.where(first, mu, grow(mu))), jnp.asarray(False))

    mu, d, t, ok, _ = jax.lax.while_loop(
        lambda c: h_ok & (c[4] | (~c[3] & (c[0] <= cfg.max_damping))), retry,
        (state.damping, jnp.zeros_like(x), jnp.asarray(1.0, dtype), jnp.asarray(False),
         jnp.asarray(True)))

    x_new = x + t * d
    f_new, g_new = jax.value_and_grad(f)(x_new)
    g_norm_new = jnp.linalg.norm(g_new)
    g_ok = jnp.isfinite(f_new) & jnp.all(jnp.isfinite(g_new)) & jnp.isfinite(g_norm_new)
    accept = ok & g_ok

    status = jnp.where(
        ~h_ok | (ok & ~g_ok), NON_FINITE,
        jnp.where(~ok, STALLED, jnp.where(g_norm_new <= cfg.tol, CONVERGED, RUNNING)))
    return NewtonState(
        params=unravel(jnp.where(accept, x_new, x)),
        value=jnp.where(accept, f_new, fx),
        grad=jnp.where(accept, g_new, g),
        grad_norm=jnp.where(accept, g_norm_new, state.grad_norm),
        # Shrink after a full step; keep mu after a shortened one; report the cap reached
        # after a failure.
        damping=jnp.where(accept, jnp.where(t == 1, mu * cfg.shrink, mu),
                          jnp.where(h_ok, jnp.minimum(mu, cfg.max_damping), state.damping)),
        step_size=jnp.where(accept, t, state.step_size),
        iteration=state.iteration + accept.astype(jnp.int32),
        status=status.astype(jnp.int32),
    )


def _update(objective, state: NewtonState, cfg: _Config, line_search: bool,
            max_backtracks: int) -> NewtonState:
    def mark(s):
        done = (s.status == RUNNING) & (s.grad_norm <= cfg.tol)
        return s._replace(status=jnp.where(done, CONVERGED, s.status).astype(jnp.int32))

    go = (state.status == RUNNING) & (state.grad_norm > cfg.tol)
    return jax.lax.cond(
        go, lambda s: _take_step(objective, s, cfg, line_search, max_backtracks), mark, state)


_update_jit = jax.jit(_update, static_argnums=(0, 3, 4))


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def _history_size(max_iter: int) -> int:
    """Rows of the history buffers: a power of two >= max_iter + 1 (at least 64), so that
    different ``max_iter`` values mostly share one compiled loop."""
    return max(64, 1 << max_iter.bit_length())


@partial(jax.jit, static_argnums=(0, 5, 6, 7))
def _run(objective, params, damping, cfg: _Config, max_iter: jax.Array, line_search: bool,
         max_backtracks: int, size: int):
    state = _initial_state(objective, params, damping)  # status NON_FINITE: the loop is skipped
    dtype = state.value.dtype
    nan = jnp.full((size,), jnp.nan, dtype)
    history = NewtonHistory(
        objective=nan.at[0].set(state.value),
        grad_norm=nan.at[0].set(state.grad_norm),
        damping=nan.at[0].set(state.damping),
        step_size=nan.at[0].set(0.0),
    )

    def cond(carry):
        s, _ = carry
        return (s.status == RUNNING) & (s.grad_norm > cfg.tol) & (s.iteration < max_iter)

    def body(carry):
        s, h = carry
        s_new = _take_step(objective, s, cfg, line_search, max_backtracks)
        # Record accepted steps only: a failed step (which ends the loop) leaves row i as is.
        accepted, i = s_new.iteration > s.iteration, s_new.iteration
        h = NewtonHistory(*(
            row.at[i].set(jnp.where(accepted, new, row[i]))
            for row, new in zip(h, (s_new.value, s_new.grad_norm, s_new.damping,
                                    s_new.step_size))))
        return s_new, h

    state, history = jax.lax.while_loop(cond, body, (state, history))
    final = jnp.where(state.status != RUNNING, state.status,
                      jnp.where(state.grad_norm <= cfg.tol, CONVERGED, MAX_ITER))
    return state._replace(status=final.astype(jnp.int32)), history


# ---------------------------------------------------------------------------------------------
# Public API


def newton_init(objective: Callable, params, *, damping: float = 0.0,
                max_params: int | None = 10_000) -> NewtonState:
    """The starting :class:`NewtonState`: objective and gradient at ``params``.

    Raises ``ValueError``/``TypeError`` for non-finite or non-floating ``params``, a
    non-scalar ``objective``, a negative ``damping``, more than ``max_params`` parameters
    (``None``: no limit), or an objective or gradient that is not finite at ``params``.
    """
    _check_params(params, max_params)
    damping = _checks.check_number(damping, "damping", "a finite damping >= 0", lambda v: v >= 0)
    _check_objective(objective, params)
    state = _initial_state_jit(objective, params, damping)
    _check_concrete(state.value)
    _check_initial(state)
    return state


def newton_update(objective: Callable, state: NewtonState, *, tol: float = 1e-8,
                  line_search: bool = True, max_backtracks: int = 30, armijo: float = 1e-4,
                  backtrack: float = 0.5, grow: float = 10.0, shrink: float = 0.1,
                  max_damping: float = 1e10) -> NewtonState:
    """One compiled iteration of :func:`newton` (same arguments): ``state -> state``.

    A no-op once ``state.status`` is not ``RUNNING`` (0); it sets ``CONVERGED`` (1) when the
    gradient norm is at most ``tol``. Time it to plot loss against seconds::

        state = newton_init(f, params)
        while state.status == 0 and state.iteration < 50:
            t0 = time.perf_counter()
            state = jax.block_until_ready(newton_update(f, state))
            seconds.append(time.perf_counter() - t0)

    The first call compiles; later calls with the same ``objective`` function object, shapes
    and static options (``line_search``, ``max_backtracks``) reuse the compiled step.
    """
    cfg = _config(tol, armijo, backtrack, grow, shrink, max_damping)
    line_search = _check_bool(line_search, "line_search")
    max_backtracks = _checks.check_int(max_backtracks, "max_backtracks", 0)
    return _update_jit(objective, state, _as_arrays(cfg, state.value.dtype), line_search,
                       max_backtracks)


def newton(
    objective: Callable,
    params,
    *,
    max_iter: int = 50,
    tol: float = 1e-8,
    damping: float = 0.0,
    line_search: bool = True,
    max_backtracks: int = 30,
    armijo: float = 1e-4,
    backtrack: float = 0.5,
    grow: float = 10.0,
    shrink: float = 0.1,
    max_damping: float = 1e10,
    max_params: int | None = 10_000,
) -> NewtonResult:
    """Minimise ``objective(params) -> scalar`` by damped Newton's method (see module doc).

    Newton's method (Nocedal & Wright, *Numerical Optimization*, 2nd ed., ch. 3: line search,
    section 3.4: Hessian modification; ch. 4: trust regions / Levenberg-Marquardt damping).
    Each iteration costs ``O(P^3)`` time and ``O(P^2)`` memory in the number of parameters
    ``P``: for logistic regression and small nets (a few hundred parameters).

    Args:
      objective: ``params -> ()``, a pure JAX function (jit-compatible). It is a static
        argument of the compiled loop: pass the same function object to reuse the
        compilation (changing ``tol``, ``damping`` and the other numbers does not recompile;
        ``max_iter`` only when it crosses a power of two; ``line_search`` and
        ``max_backtracks`` do).
      params: initial parameters, any pytree of finite floating arrays (P entries in all).
      max_iter: cap on accepted Newton steps, ``>= 1``.
      tol: stop when ``||grad||_2 <= tol``. In float32 the gradient rarely gets below ~1e-6;
        use float64 (``jax.enable_x64``) for small tolerances.
      damping: initial ``mu >= 0`` in ``(H + mu I) d = -g``; ``0`` tries the plain Newton
        step first. It then adapts: times ``grow`` while ``H + mu I`` is not positive
        definite or the step gives no decrease, times ``shrink`` after a full step.
      line_search: backtracking Armijo line search on the step length; ``False`` accepts the
        full damped step when it decreases ``f``, and otherwise grows ``mu``.
      max_backtracks: halvings (by ``backtrack``) of the step before ``mu`` is grown instead.
      armijo: sufficient-decrease constant ``c1`` of the Armijo condition.
      backtrack: step-length factor per backtrack, in ``(0, 1)``.
      grow, shrink: damping factors (``grow > 1``, ``0 < shrink <= 1``).
      max_damping: the largest ``mu`` tried; beyond it the run stops as ``"stalled"``.
      max_params: refuse more than this many parameters (``None``: no limit).

    Returns:
      :class:`NewtonResult` with the final ``params`` (same pytree structure, never NaN),
      ``iterations``, ``converged``, ``status``/``message``, the final ``damping`` and the
      per-iteration ``history`` (objective, gradient norm, damping, step length; entry 0 is
      the initial point). Every accepted step decreases the objective, so
      ``history.objective`` is non-increasing up to rounding: the value recorded is
      recomputed with the gradient, which in float32 can round one ulp above the value the
      step was accepted on (float64 rarely shows it).

    Raises:
      ValueError, TypeError: bad arguments (each message names the argument, what was
        expected and what was given), checked before compiling; and an objective or
        gradient that is not finite at the initial params.
    """
    max_iter = _checks.check_int(max_iter, "max_iter", 1)
    cfg = _config(tol, armijo, backtrack, grow, shrink, max_damping)
    max_backtracks = _checks.check_int(max_backtracks, "max_backtracks", 0)
    line_search = _check_bool(line_search, "line_search")
    _check_params(params, max_params)
    damping = _checks.check_number(damping, "damping", "a finite damping >= 0", lambda v: v >= 0)
    if damping > cfg.max_damping:
        raise ValueError(f"damping: expected at most max_damping={cfg.max_damping:g} (the "
                         f"largest damping tried), got {damping:g}")
    _check_objective(objective, params)
    dtype = jax.eval_shape(lambda p: ravel_pytree(p)[0], params).dtype
    state, history = _run(objective, params, jnp.asarray(damping, dtype),
                          _as_arrays(cfg, dtype), jnp.asarray(max_iter, jnp.int32), line_search,
                          max_backtracks, _history_size(max_iter))
    _check_concrete(state.iteration)
    if int(state.iteration) == 0:
        _check_initial(state)

    n = int(state.iteration) + 1
    history = NewtonHistory(*(np.asarray(h)[:n] for h in history))
    status = STATUSES[int(state.status)]
    value, grad_norm, mu = float(state.value), float(state.grad_norm), float(state.damping)
    message = {
        "converged": f"converged: gradient norm {grad_norm:.3g} <= tol {cfg.tol:g} after "
                     f"{n - 1} iterations",
        "max_iter": f"not converged: reached max_iter={max_iter} with gradient norm "
                    f"{grad_norm:.3g} > tol {cfg.tol:g}",
        "non-finite": f"stopped: the objective's Hessian or gradient is not finite at the next "
                      f"point after {n - 1} iterations; returning the last finite params "
                      f"(objective {value:.6g}, gradient norm {grad_norm:.3g})",
        "stalled": f"stalled: no damping mu <= max_damping={cfg.max_damping:g} gives a "
                   f"positive definite H + mu I and a decrease of the objective after {n - 1} "
                   f"iterations (gradient norm {grad_norm:.3g} > tol {cfg.tol:g}; at the limit "
                   "of floating-point precision? use float64 or a larger tol)",
    }[status]
    return NewtonResult(
        params=state.params,
        value=value,
        grad_norm=grad_norm,
        iterations=n - 1,
        converged=status == "converged",
        status=status,
        message=message,
        damping=mu,
        history=history,
    )


@partial(jax.jit, static_argnums=0)
def _newton_step(objective, params, damping):
    x, unravel, f = _flat(objective, params)
    g = jax.grad(f)(x)
    H = jax.hessian(f)(x)
    x_new = x + jnp.linalg.solve(H + damping * jnp.eye(x.size, dtype=x.dtype), -g)
    return (unravel(x_new), jnp.all(jnp.isfinite(g)), jnp.all(jnp.isfinite(H)),
            jnp.sum(~jnp.isfinite(x_new)))


def newton_step(objective: Callable, params, damping: float = 0.0):
    """One plain (damped) Newton step ``x - (H + damping I)^{-1} g`` via ``solve``: new params.

    No line search and no adaptation; on a strictly convex quadratic with ``damping=0`` it
    lands on the minimiser. ``params`` is any pytree; the result has the same structure.

    Never returns NaN or infinity: a gradient or Hessian that is not finite at ``params``,
    or a step that is not finite (``H + damping I`` singular, e.g. a linear objective with
    ``damping=0``), is a ``ValueError`` (:func:`newton` adapts the damping instead).
    """
    _check_params(params)
    damping = _checks.check_number(damping, "damping", "a finite damping >= 0", lambda v: v >= 0)
    _check_objective(objective, params, carried=False)
    new, g_ok, h_ok, bad = _newton_step(objective, params, damping)
    _check_concrete(bad)
    if not (bool(g_ok) and bool(h_ok)):
        raise ValueError(f"objective: expected a finite gradient and Hessian at params, got a "
                         f"non-finite {'gradient' if not bool(g_ok) else 'Hessian'}")
    if int(bad):
        raise ValueError(
            f"damping: expected a damping that makes H + damping I non-singular at params, got "
            f"{damping:g}: the Newton step has {int(bad)} non-finite entries (H + damping I is "
            "singular, e.g. a linear objective); pass damping > 0, or use newton(), which "
            "adapts the damping")
    return new


def _check_concrete(value) -> None:
    """Raise when a result of the compiled code is still a tracer: newton was called inside
    an enclosing transformation (jax.jit, jax.vmap) with nothing traced in its arguments."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"newton: expected to be called on concrete values, got a call inside "
                        f"a jax transformation (a traced result); {_TRACED}")


def _check_logistic_params(params, d: int) -> None:
    """``params`` as ``{"w": (d,), "b": ()}``, checked by structure and shape (trace time)."""
    expected = f'{{"w": ({d},), "b": ()}}'
    if not isinstance(params, dict) or set(params) != {"w", "b"}:
        got = (f"a dict with keys {sorted(map(str, params))}" if isinstance(params, dict)
               else type(params).__name__)
        raise ValueError(f"params: expected the keys of {expected} for logistic regression, "
                         f"got {got}")
    for name, shapes in (("w", [(d,)]), ("b", [(), (1,)])):
        shape = jnp.shape(params[name])
        if shape not in shapes:
            raise ValueError(f"params['{name}']: expected shape {shapes[0]} (params "
                             f"{expected}, d = X.shape[1]), got shape {shape}")


def logistic_regression_objective(X, y, l2: float = 0.0) -> Callable:
    """``objective(params)`` for logistic regression with params ``{"w": (d,), "b": ()}``:

        (1/n) sum_i [softplus(z_i) - y_i z_i] + (l2/2) ||w||^2,     z_i = w . x_i + b,

    the mean binary cross-entropy from logits (:func:`nets.losses.binary_cross_entropy`);
    the intercept is not penalised. This is scikit-learn's ``LogisticRegression`` objective
    with ``C = 1 / (n * l2)``, divided by ``n C``. Other keys or shapes of ``params`` are a
    ``ValueError`` naming them, raised when the objective is first traced (``newton`` does
    that before compiling).

    Args:
      X: inputs, shape ``(n, d)``, finite.
      y: labels in ``[0, 1]`` (0/1 classes), shape ``(n,)``.
      l2: ridge penalty ``>= 0`` on ``w``.
    """
    X = as_finite_array(X, "X", ndim=2)
    y = as_finite_array(y, "y")
    n, d = X.shape
    if y.shape != (n,):
        raise ValueError(f"y: expected {n} labels of shape ({n},) (one per row of X), got shape "
                         f"{y.shape}")
    if y.min() < 0 or y.max() > 1:
        raise ValueError(f"y: expected labels in [0, 1], got values in [{y.min()}, {y.max()}]")
    l2 = _checks.check_number(l2, "l2", "a finite penalty >= 0", lambda v: v >= 0)
    dtype = jnp.result_type(float)  # float64 under jax.enable_x64, else float32
    Xj, yj = jnp.asarray(X, dtype), jnp.asarray(y, dtype)

    def objective(params):
        _check_logistic_params(params, d)
        z = Xj @ params["w"] + params["b"]  # (n,) logits
        loss = jax.vmap(_losses.binary_cross_entropy)(z[:, None], yj)  # (n,)
        return jnp.mean(loss) + 0.5 * l2 * jnp.sum(params["w"] ** 2)

    return objective
