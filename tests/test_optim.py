"""train.sgd against the note's update formula, and hyperparameters held in the state."""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import train
from nets import backprop, mlp, objective


def _rng(key):
    """A NumPy generator seeded by a JAX key (test data without compiling JAX samplers)."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)))


def _random_like(key, params):
    rng = _rng(key)
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)


@pytest.mark.parametrize("lam", [0.0, 1e-3, 0.1, 2.5])
def test_one_step_is_the_note_formula(key, lam):
    """W <- W - alpha (dW + lambda W) on weights, b <- b - alpha db on biases (NumPy oracle)."""
    k_params, k_grads = jax.random.split(key)
    params = mlp.init(k_params, (4, 8, 3))
    grads = _random_like(k_grads, params)
    alpha = 0.3
    opt = train.sgd(alpha, l2=lam)
    updates, _ = opt.update(grads, opt.init(params), params)
    new = optax.apply_updates(params, updates)
    for layer, g, out in zip(params, grads, new):
        W, dW = np.asarray(layer["W"], np.float64), np.asarray(g["W"], np.float64)
        b, db = np.asarray(layer["b"], np.float64), np.asarray(g["b"], np.float64)
        np.testing.assert_allclose(out["W"], W - alpha * (dW + lam * W), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(out["b"], b - alpha * db, rtol=1e-6, atol=1e-6)


def test_momentum_steps_are_heavy_ball_on_the_penalized_gradient(key, x64):
    """With momentum mu: v <- mu v + (dW + lambda W), W <- W - alpha v (NumPy oracle)."""
    k_params, k_g1, k_g2 = jax.random.split(key, 3)
    params = mlp.init(k_params, (4, 8, 3), dtype=jnp.float64)
    alpha, lam, mu = 0.1, 0.05, 0.9
    opt = train.sgd(alpha, l2=lam, momentum=mu)
    state = opt.init(params)
    p_np = jax.tree.map(np.asarray, params)
    v = jax.tree.map(np.zeros_like, p_np)
    mask = jax.tree.map(lambda x: float(x.ndim >= 2), p_np)
    for k in (k_g1, k_g2):
        grads = _random_like(k, params)
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        v = jax.tree.map(lambda v, g, p, m: mu * v + np.asarray(g) + m * lam * p, v, grads,
                         p_np, mask)
        p_np = jax.tree.map(lambda p, v: p - alpha * v, p_np, v)
    chex.assert_trees_all_close(params, p_np, atol=1e-12, rtol=1e-12)


def test_weight_decay_is_the_quadratic_penalty_under_sgd(key, x64):
    """train.sgd(alpha, l2=lam) on the plain loss == gradient descent on loss + lam/2 ||W||^2,
    with the hand-derived backprop gradient as the reference; full batch, every step."""
    k_params, k_x, k_y = jax.random.split(key, 3)
    X = _rng(k_x).normal(size=(30, 4))
    y = _rng(k_y).integers(0, 3, 30)
    params = mlp.init(k_params, (4, 8, 3), dtype=jnp.float64)
    alpha, lam = 0.5, 0.03

    def loss(p, X, y):
        return objective.mlp_objective(p, X, y, activation="tanh")

    opt = train.sgd(alpha, l2=lam)
    step = train.make_step(loss, opt)
    state = train.init_state(params, opt)
    reference = params
    for _ in range(5):
        state, _ = step(state, (X, y), key)
        g = backprop.grad(reference, np.asarray(X), np.asarray(y), activation="tanh", l2=lam)
        reference = jax.tree.map(lambda p, g: p - alpha * g, reference, g)
        chex.assert_trees_all_close(state.params, reference, atol=1e-6, rtol=0)
    # fit with batch_size = n is the same full-batch gradient descent.
    result = train.fit(loss, params, (X, y), optimizer=opt, epochs=5, batch_size=30,
                       key=key, progress=False)
    chex.assert_trees_all_close(result.params, reference, atol=1e-6, rtol=0)


def test_hyperparams_live_in_the_state_and_do_not_recompile(key):
    params = mlp.init(key, (4, 8, 3))
    X, y = jnp.ones((8, 4)), jnp.zeros(8, jnp.int32)
    opt = train.sgd(0.1, l2=1e-3, momentum=0.5)
    hp = train.get_hyperparams(opt.init(params))
    assert {k: round(float(v), 6) for k, v in hp.items()} == {
        "learning_rate": 0.1, "l2": 0.001, "momentum": 0.5}
    assert all(v.dtype == jnp.float32 for v in hp.values())

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(opt_state, grads):
        updates, opt_state = opt.update(grads, opt_state, params)
        return updates

    grads = jax.grad(lambda p: objective.mlp_objective(p, X, y))(params)
    state = opt.init(params)
    u1 = update(state, grads)
    u2 = update(train.set_hyperparams(state, learning_rate=0.2), grads)  # same compiled code
    chex.assert_trees_all_close(jax.tree.map(lambda u: 2 * u, u1), u2, atol=1e-7)


def test_get_hyperparams_finds_an_injected_state_inside_a_chain():
    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.inject_hyperparams(optax.adam)(learning_rate=1e-3))
    state = opt.init({"W": jnp.ones((2, 2))})
    state = train.set_hyperparams(state, learning_rate=0.5)
    assert float(train.get_hyperparams(state)["learning_rate"]) == 0.5


@pytest.mark.parametrize("kwargs, error, match", [
    ({"learning_rate": 0.0}, ValueError, r"learning_rate: expected a finite number > 0, got 0"),
    ({"learning_rate": -1.0}, ValueError, r"learning_rate: expected .* > 0, got -1"),
    ({"learning_rate": float("nan")}, ValueError, r"learning_rate: expected a finite"),
    ({"learning_rate": "0.1"}, TypeError, r"learning_rate: expected a real number, got str"),
    ({"learning_rate": 0.1, "l2": -1e-3}, ValueError, r"l2: expected a finite number >= 0"),
    ({"learning_rate": 0.1, "l2": float("inf")}, ValueError, r"l2: expected a finite number"),
    ({"learning_rate": 0.1, "momentum": 1.0}, ValueError, r"momentum: expected a finite number >= 0 and < 1"),
    ({"learning_rate": 0.1, "momentum": -0.5}, ValueError, r"momentum: expected a finite number >= 0"),
    ({"learning_rate": 0.1, "nesterov": True}, ValueError, r"nesterov: .* needs momentum"),
    ({"learning_rate": 0.1, "momentum": 0.9, "nesterov": 1}, TypeError, r"nesterov: expected a bool"),
])
def test_sgd_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        train.sgd(**kwargs)


def test_set_hyperparams_rejects_bad_names_and_shapes():
    params = {"W": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match=r"opt_state: expected a state of an "
                                         r"optax.inject_hyperparams optimizer"):
        train.set_hyperparams(optax.sgd(0.1).init(params), learning_rate=0.2)
    state = train.sgd(0.1).init(params)
    with pytest.raises(ValueError, match=r"expected names among .*\['l2', 'learning_rate'\], "
                                         r"got \['lr'\]"):
        train.set_hyperparams(state, lr=0.2)
    with pytest.raises(ValueError, match=r"hyperparams\['l2'\]: expected shape \(\)"):
        train.set_hyperparams(state, l2=jnp.ones(3))


def test_mask_decays_a_vector_weight():
    """A weight that is a vector (logistic regression's w) is decayed when the mask says so."""
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(3.0)}
    grads = {"w": jnp.array([0.5, 0.5]), "b": jnp.array(1.0)}
    for mask in ({"w": True, "b": False}, lambda p: {"w": True, "b": False}):
        opt = train.sgd(0.1, l2=0.5, mask=mask)
        updates, _ = opt.update(grads, opt.init(params), params)
        np.testing.assert_allclose(updates["w"], -0.1 * (np.array([0.5, 0.5]) + 0.5 * np.array([1.0, -2.0])))
        np.testing.assert_allclose(updates["b"], -0.1 * 1.0)
    default = train.sgd(0.1, l2=0.5)  # the default mask decays leaves with >= 2 axes only
    updates, _ = default.update(grads, default.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1 * np.array([0.5, 0.5]))


def test_equal_settings_give_one_optimizer_object():
    """Compiled programs are reused per optimizer object: equal settings share one."""
    assert train.sgd(0.1, l2=0.01) is train.sgd(0.1, l2=0.01, momentum=None)
    assert train.sgd(0.1, l2=0) is train.sgd(0.1, l2=0.0)
    assert train.sgd(0.1, l2=0.01) is not train.sgd(0.2, l2=0.01)
    mask = {"w": True, "b": False}  # unhashable: still works, a fresh object each time
    assert train.sgd(0.1, mask=mask) is not train.sgd(0.1, mask=mask)


@pytest.mark.parametrize("mask, match", [
    ({"w": True}, r"^mask: expected a pytree of bools with the tree structure of the params .*"
                  r"at the top level, mask lacks the key\(s\) \['b'\]"),
    ({"w": True, "b": False, "c": True}, r"^mask: .* mask has key\(s\) \['c'\] that params lacks"),
    ({"w": {"x": True}, "b": False}, r"^mask: .* at params\['w'\], mask is a dict, params an array"),
    (lambda p: {"b": False}, r"^mask\(params\): .* mask\(params\) lacks the key\(s\) \['w'\]"),
])
def test_mask_of_another_structure_names_mask(mask, match):
    """A mask that is not (a prefix of) the params' tree: a ValueError naming `mask` at init,
    not JAX's pytree error."""
    params = {"w": jnp.zeros(2), "b": jnp.zeros(())}
    with pytest.raises(ValueError, match=match):
        train.sgd(0.1, l2=1.0, mask=mask).init(params)
    prefix = [True, {"W": True, "b": False}]  # a leaf of the mask may cover a subtree
    layers = [{"W": jnp.ones((2, 2)), "b": jnp.ones(2)}] * 2
    train.sgd(0.1, l2=1.0, mask=prefix).init(layers)


# --- the fingerprint a checkpoint stores --------------------------------------------------

def _fingerprinted():
    """Optimizers whose fingerprints must not depend on the process."""
    return [
        optax.adam(1e-2),
        optax.chain(optax.clip_by_global_norm(1.0),
                    optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 1e-2, 10, 100))),
        train.sgd(0.1, l2=1e-3, momentum=0.9),
        train.sgd(0.1, mask={"w": True, "b": False}),
        optax.inject_hyperparams(optax.adam)(learning_rate=optax.linear_schedule(1.0, 0.0, 10)),
        optax.MultiSteps(optax.sgd(0.1, momentum=0.9), 4),
    ]


def test_the_fingerprint_tells_optimizers_apart_by_their_hyperparameters():
    f = train.optim.fingerprint
    differ = [
        (optax.adam(1e-2), optax.adam(5e-2)),
        (optax.sgd(0.05), optax.sgd(0.5)),
        (optax.adam(1e-2), optax.adamw(1e-2)),  # the same state structure
        (optax.adam(optax.linear_schedule(1e-2, 0.0, 100)),
         optax.adam(optax.linear_schedule(5e-2, 0.0, 100))),
        (optax.adam(optax.warmup_cosine_decay_schedule(0.0, 1e-2, 10, 100)),
         optax.adam(optax.warmup_cosine_decay_schedule(0.0, 5e-2, 10, 100))),
        (optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3)),
         optax.chain(optax.clip_by_global_norm(2.0), optax.adam(3e-3))),
        (optax.MultiSteps(optax.adam(1e-2), 4), optax.MultiSteps(optax.adam(1e-2), 2)),
        (train.sgd(optax.linear_schedule(1.0, 0.0, 10)),
         train.sgd(optax.linear_schedule(2.0, 0.0, 10))),  # a schedule is not in the state
        (train.sgd(0.1, mask={"w": True}), train.sgd(0.1, mask={"w": False})),
    ]
    for a, b in differ:
        assert f(a) != f(b)
    # the same settings built again; injected values (in the state, compared there by name)
    same = [(optax.adam(1e-2), optax.adam(1e-2)), (optax.sgd(0.05), optax.sgd(0.05)),
            (train.sgd(0.05), train.sgd(0.5)),
            (optax.inject_hyperparams(optax.adam)(learning_rate=1e-2),
             optax.inject_hyperparams(optax.adam)(learning_rate=5e-2))]
    for a, b in same:
        assert f(a) == f(b)
    assert len(f(optax.adam(1e-2))) == 32 and int(f(optax.adam(1e-2)), 16) >= 0


def test_the_fingerprint_is_the_same_in_another_process():
    """No ids, no addresses, no hash-randomised orders: a child process with another
    PYTHONHASHSEED computes the same fingerprints."""
    code = ("import train\nfrom tests.test_optim import _fingerprinted\n"
            "print(' '.join(train.optim.fingerprint(o) for o in _fingerprinted()))")
    env = dict(os.environ, PYTHONHASHSEED="12345", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    here = [train.optim.fingerprint(o) for o in _fingerprinted()]
    assert out.stdout.split() == here and len(set(here)) == len(here)
