"""nets.adversarial: FGSM against its formula on a linear model, PGD's constraints and its
equivalence with FGSM, the attacks raise the loss, and bad input fails before compiling.

Two compiled programs serve every value test (module-scoped): the linear model's attacks
for several radii in one ``jit(vmap)`` (the radius traced), and a small MLP's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import adversarial as adv
from nets import mlp

LO, HI = 0.0, 1.0
RADII = np.array([0.0, 0.05, 0.2, 0.6], np.float32)
# A linear logistic model, L = softplus(-s w.x) with s = +-1 per example: grad_x L =
# -s sigmoid(-s w.x) w, so sign(grad_x L) = -s sign(w), known by hand. w has a zero entry
# (its input must not move) and the inputs touch both ends of [0, 1].
W = np.array([1.5, -2.0, 0.0, 0.5, -0.25], np.float32)
S = np.array([1.0, -1.0, 1.0], np.float32)
X = np.array([[0.0, 1.0, 0.5, 0.97, 0.02],
              [0.3, 0.5, 1.0, 0.0, 0.99],
              [1.0, 0.0, 0.0, 0.5, 0.5]], np.float32)


def linear_loss(x):
    return jnp.sum(jax.nn.softplus(-S * (x @ W)))


@pytest.fixture(scope="module")
def linear():
    """FGSM, PGD (20 steps, random start) and PGD (1 step of eps, no start) for every
    radius of RADII: one compiled program."""

    def attacks(eps, key):
        return {"fgsm": adv.fgsm(linear_loss, X, eps, lo=LO, hi=HI),
                "pgd": adv.pgd(linear_loss, X, eps, steps=20, lo=LO, hi=HI,
                               random_start=True, key=key),
                "pgd_from_x": adv.pgd(linear_loss, X, eps, steps=20, lo=LO, hi=HI)}

    keys = jax.random.split(jax.random.key(0), len(RADII))
    return jax.tree.map(np.asarray, jax.jit(jax.vmap(attacks))(RADII, keys))


@pytest.fixture(scope="module")
def network():
    """A random 6-16-3 MLP's loss at clean, FGSM and PGD inputs; PGD of one step of eps
    from x beside FGSM: one compiled program."""
    net = mlp.model((6, 16, 3), activation="tanh", scheme="he")
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0))[0])  # traced, not compiled
    params = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32), shapes)
    Xn = rng.uniform(size=(32, 6)).astype(np.float32)
    yn = rng.integers(0, 3, size=32).astype(np.int32)

    @jax.jit
    def run(params, eps, key):
        loss = adv.input_loss(net, params, yn)
        x_f = adv.fgsm(loss, Xn, eps, lo=LO, hi=HI)
        x_1 = adv.pgd(loss, Xn, eps, steps=1, step_size=eps, lo=LO, hi=HI)
        x_p = adv.pgd(loss, Xn, eps, steps=10, lo=LO, hi=HI, random_start=True, key=key)
        return {"fgsm": x_f, "pgd1": x_1, "losses": jnp.stack([loss(Xn), loss(x_f), loss(x_p)])}

    return jax.tree.map(np.asarray, run(params, 0.1, jax.random.key(1)))


def test_fgsm_is_the_formula_on_a_linear_model(linear):
    sign = -S[:, None] * np.sign(W)[None, :]  # sign(grad_x L), by hand
    for eps, got in zip(RADII, linear["fgsm"]):
        np.testing.assert_allclose(got, np.clip(X + eps * sign, LO, HI), rtol=0, atol=1e-7)
    assert np.array_equal(linear["fgsm"][:, :, 2], np.broadcast_to(X[:, 2], (len(RADII), 3)))


def test_pgd_stays_in_the_ball_and_the_valid_range(linear):
    for kind in ("pgd", "pgd_from_x"):
        for eps, got in zip(RADII, linear[kind]):
            assert np.abs(got - X).max() <= eps + 1e-6, (kind, eps)
            assert got.min() >= LO and got.max() <= HI, (kind, eps)
    assert np.array_equal(linear["pgd"][0], X)  # eps = 0 leaves x unchanged


def test_pgd_reaches_the_linear_models_maximiser(linear):
    # The loss rises along sign(grad) everywhere: its maximum over the box is FGSM's corner,
    # which PGD from x reaches (steps of 2.5 eps / 20, 20 of them); from a random start the
    # input with zero weight keeps its random value.
    np.testing.assert_allclose(linear["pgd_from_x"], linear["fgsm"], rtol=0, atol=1e-6)
    moved = np.ones(W.shape, bool)
    moved[2] = False
    np.testing.assert_allclose(linear["pgd"][..., moved], linear["fgsm"][..., moved], rtol=0,
                               atol=1e-6)


def test_pgd_of_one_step_of_eps_from_x_is_fgsm(network):
    np.testing.assert_allclose(network["pgd1"], network["fgsm"], rtol=0, atol=1e-7)


def test_the_attacks_raise_the_loss(network):
    clean, fgsm, pgd = network["losses"]
    assert fgsm > clean and pgd > clean


BAD = [
    (dict(eps=-0.1), ValueError, "eps: expected a finite number >= 0"),
    (dict(eps=float("nan")), ValueError, "eps"),
    (dict(eps=np.ones(2)), ValueError, "eps: expected a radius eps >= 0 .a scalar."),
    (dict(lo=1.0, hi=0.0), ValueError, "expected lo < hi"),
    (dict(lo=0.5, hi=0.5), ValueError, "expected lo < hi"),
    (dict(x=X * 16), ValueError, "values in \\[lo, hi\\].*grey levels"),
    (dict(x=np.ones((3, 5), np.int32)), TypeError, "x: expected a floating-point array"),
    (dict(loss_of_x=lambda x: x @ W), TypeError,
     "loss_of_x: expected it to return a floating scalar.*shape \\(3,\\)"),
    (dict(loss_of_x="loss"), TypeError, "loss_of_x: expected a function"),
]


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
@pytest.mark.parametrize("bad, error, match", BAD)
def test_bad_input_is_refused(attack, bad, error, match):
    args = dict(loss_of_x=linear_loss, x=X, eps=0.1, lo=LO, hi=HI) | bad
    extra = {"steps": 3} if attack == "pgd" else {}
    with pytest.raises(error, match=match):
        getattr(adv, attack)(args.pop("loss_of_x"), args.pop("x"), args.pop("eps"), **args,
                             **extra)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(steps=0), ValueError, "steps: expected an int >= 1"),
    (dict(steps=2.5), TypeError, "steps"),
    (dict(steps=3, step_size=0.0), ValueError, "step_size: expected a finite number > 0"),
    (dict(steps=3, random_start=True), ValueError, "key: pgd with random_start=True"),
    (dict(steps=3, random_start=True, key=np.zeros(2, np.uint32)), TypeError, "legacy"),
    (dict(steps=3, random_start=1), TypeError, "random_start: expected a bool"),
])
def test_bad_pgd_settings_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        adv.pgd(linear_loss, X, 0.1, lo=LO, hi=HI, **kwargs)


def test_input_loss_refuses_a_batch_of_another_size():
    net = mlp.model((5, 4, 3))
    params = jax.eval_shape(lambda: net.init(jax.random.key(0))[0])  # shapes only
    loss = adv.input_loss(net, params, np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="X: expected a batch of the 3 examples"):
        jax.eval_shape(loss, jnp.zeros((4, 5)))
    with pytest.raises(TypeError, match="model: expected a nets.model.Model"):
        adv.input_loss(lambda p, x: x, params, np.zeros(3))
