"""nets.autoencoder: shapes, parameter counts, codes and reconstructions; PCA's error is the sum
of the discarded eigenvalues; a linear autoencoder trained to convergence spans PCA's subspace."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

import train
from nets import autoencoder as ae
from nets import count_params
from nets import layers as L

LINEAR = ae.linear(6, 2)
DEEP = ae.deep(6, 2, hidden=(8, 4), activation="tanh")


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def _data(rng, n=64):
    """Points in 6-D, off the origin, with a clear top-2 principal subspace (variances about
    4, 2.3, then 0.36, 0.25, 0.16, 0.09)."""
    basis = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    scores = rng.normal(size=(n, 6)) * np.array([2.0, 1.5, 0.6, 0.5, 0.4, 0.3])
    return (scores @ basis.T + 1.5).astype(np.float32)


def test_linear_shapes_and_parameter_count(key):
    params, state = LINEAR.init(key)
    assert [(p["W"].shape, p["b"].shape) for p in params] == [((2, 6), (2,)), ((6, 2), (6,))]
    assert count_params(params) == 6 * 2 + 2 + 2 * 6 + 6
    assert LINEAR.code_size == 2 and LINEAR.model.output == "identity"
    X = jnp.ones((5, 6))
    C = LINEAR.encode(params, X)
    assert C.shape == (5, 2)
    np.testing.assert_allclose(C, X @ params[0]["W"].T + params[0]["b"], rtol=1e-6)
    np.testing.assert_allclose(LINEAR.decode(params, C), LINEAR.reconstruct(params, X),
                               rtol=1e-6, atol=1e-6)


def test_deep_shapes_and_parameter_count(key):
    params, _ = DEEP.init(key)
    enc_W = [p["W"].shape for p in params[0] if p]
    dec_W = [p["W"].shape for p in params[1] if p]
    assert enc_W == [(8, 6), (4, 8), (2, 4)] and dec_W == [(4, 2), (8, 4), (6, 8)]
    assert count_params(params) == 2 * (6 * 8 + 8 * 4 + 4 * 2) + (8 + 4 + 2) + (4 + 8 + 6)
    X = jax.random.normal(key, (3, 6))

    @jax.jit  # one program: eagerly each of the three would compile by itself
    def codes_and_reconstructions(params, X):
        C = DEEP.encode(params, X)
        return C, DEEP.decode(params, C), DEEP.reconstruct(params, X)

    C, decoded, X_hat = codes_and_reconstructions(params, X)
    assert C.shape == (3, 2) and X_hat.shape == (3, 6)
    np.testing.assert_allclose(decoded, X_hat, rtol=1e-5, atol=1e-6)


def test_objective_is_the_mean_reconstruction_error(key, rng):
    X = _data(rng, 10)
    params, _ = LINEAR.init(key)
    value = LINEAR.objective()(params, X, X)
    assert float(value) == pytest.approx(
        ae.reconstruction_error(X, LINEAR.reconstruct(params, X)), rel=1e-5)


def test_shapes_that_do_not_chain_are_clear_errors():
    with pytest.raises(ValueError, match="decoder"):
        ae.autoencoder(L.Dense(2), L.Dense(5), (6,))
    with pytest.raises(ValueError, match="encoder"):
        ae.autoencoder(L.Identity(), L.Identity(), (2, 3))
    with pytest.raises(ValueError, match="k"):
        ae.linear(6, 0)
    with pytest.raises(ValueError, match="hidden"):
        ae.deep(6, 2, hidden=())


def test_pca_error_is_the_sum_of_discarded_eigenvalues(rng):
    X = _data(rng)
    pc = ae.pca(X, 2)
    np.testing.assert_allclose(pc.components @ pc.components.T, np.eye(2), atol=1e-12)
    eig = np.linalg.eigvalsh(np.cov(X.astype(np.float64).T, bias=True))[::-1]
    np.testing.assert_allclose(pc.variances, eig, rtol=1e-9, atol=1e-12)
    assert pc.error == pytest.approx(ae.reconstruction_error(X, pc.reconstruct(X)), rel=1e-9)
    assert pc.error == pytest.approx(eig[2:].sum(), rel=1e-9)


def test_linear_autoencoder_reaches_pcas_subspace(key, rng):
    # Full-batch Adam to convergence (Baldi & Hornik 1989): the decoder's columns span the
    # top-2 principal subspace and the error is PCA's.
    X = _data(rng)
    params, _ = LINEAR.init(key)
    fitted = train.fit(LINEAR.objective(), params, (X, X),
                       optimizer=optax.adam(optax.cosine_decay_schedule(0.05, 1500, 1e-3)),
                       epochs=1500, batch_size=len(X), key=key, epochs_per_call=500,
                       progress=False)
    pc = ae.pca(X, 2)
    B = np.asarray(fitted.params[1]["W"], np.float64)  # (6, 2)
    # The experiment's claim is 0.01 rad; measured 1e-5 to 7e-4 over three seeds.
    assert np.max(scipy.linalg.subspace_angles(B, pc.components.T)) < 0.01
    error = ae.reconstruction_error(X, LINEAR.reconstruct(fitted.params, X))
    assert error == pytest.approx(pc.error, rel=1e-3)  # measured within 4e-5
