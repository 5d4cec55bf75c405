"""Every architecture of issue 8 as a Model: the jitted batch forward pass equals the same
pass run op by op (``jax.disable_jit``), in evaluation mode (batch norm's training mode is
compared in tests/test_layers.py). Parameter counts are in each architecture's own tests."""

import chex
import jax
import numpy as np
import pytest

from nets import autoencoder, cnn, count_params, densenet, resnet

MODELS = {
    "esl-net5": lambda: cnn.net5().model,  # dense, locally connected and shared layers
    "modern-cnn": lambda: cnn.modern_cnn(features=(4, 8)).model,
    "resnet": lambda: resnet.model(4, width=8, residual=True),
    "autoencoder-deep": lambda: autoencoder.deep(64, 2, hidden=(16, 8)).model,
    "densenet": lambda: densenet.model(growth=2, blocks=(2, 2)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_jit_and_op_by_op_agree(name):
    net = MODELS[name]()
    params, state = net.init(jax.random.key(0))
    X = np.asarray(jax.random.normal(jax.random.key(1), (2, *net.input_shape)), np.float32)
    Z, _ = net.batch_apply(params, X, state=state, train=False)
    with jax.disable_jit():
        Z0, _ = net.batch_apply(params, X, state=state, train=False)
    assert Z.shape == (2, *net.output_shape) and count_params(params) > 0
    chex.assert_trees_all_close(Z, Z0, rtol=1e-5, atol=1e-6)
