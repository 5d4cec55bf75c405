"""Gradient triangulation over every model: jax.grad vs hand-derived backprop vs finite differences.

Every case is one model on a small random batch in float64, checked by `nets.gradcheck`:
the MLP for every activation x loss x depth (0, 1, 3 hidden layers), without a penalty and
with all penalties at once (`nets.gradcheck.check_mlp`: autodiff, the hand-derived backprop
of `nets.backprop` and central differences, pairwise), and the other models of `nets`:
`nets.gradcheck.check` (autodiff against central differences on every coordinate, plus a
reference where one is written) or, for models too large for that,
`nets.gradcheck.check_directional` (central differences along `directions` random unit
directions per parameter leaf against `grad . v`, each direction compared as an element). A
case passes when its worst relative error is at most `tol` (1e-6). A later model (LSTM,
...) adds a row by adding one entry to `CASES`.

Writes `gradcheck.json` (every case with its per-leaf errors), `gradcheck.csv` (the table)
and `gradcheck.png` (log10 worst error per activation x loss, one panel per depth and
penalty, beside the other models).

Full run: `python -m experiments run gradcheck` (defaults, seed 0): 133 cases, all pass.
108 MLP cases (6 activations, identity included, x 3 losses x 3 depths x 2 penalty
settings) and 25 other models:

* the MLP with dropout; train.newton's logistic regression against its gradient written by
  hand (ad~ref 9.5e-16, ad~fd 8.7e-10);
* `cnn-backprop`: conv (3x3, stride 2, SAME: asymmetric padding on 7x7 images) -> tanh ->
  overlapping max pool (2x2, stride 1) -> dense, against its gradient by hand through
  `nets.backprop.conv2d_backward` and `max_pool_backward`: autodiff and the hand-derived
  chain rule agree to 2.7e-15, each against differences 1.9e-08 (141 coordinates);
* `cnn-batchnorm`: conv -> batch norm in evaluation mode (random running statistics) ->
  relu -> max pool -> dense, with l2 on the kernels (159 coordinates, 1.7e-08);
* ESL's Net-1..Net-5 (`nets.cnn`: dense, locally connected, shared), 650 to 1,226
  coordinates each, worst 2.4e-08 (Net-5);
* a residual net (`nets.resnet`, depth 5, width 5: 133 coordinates, 2.1e-08) and a linear
  autoencoder (`nets.autoencoder`, 8 -> 2 -> 8: 42 coordinates, 2.3e-08);
* along 4 random directions per leaf: the modern CNN (`nets.cnn.modern_cnn`, 6,090
  parameters, 24 directions, 4.7e-08), the resnet experiment's depth-20 residual sigmoid net
  (79,690 parameters, 160 directions, 4.2e-08), the densenet experiment's DenseNet
  (`nets.densenet`, batch norm in evaluation mode, 21,018 parameters, 128 directions,
  1.7e-08) and the autoencoder experiment's deep autoencoder (64-128-64-2-64-128-64, 33,474
  parameters, 48 directions, 4.8e-08);
* the sequence models of issue 9 on the per-position cross-entropy (labels ``(n, T)``,
  ``T = 5``, position 0 not scored, so the mask is checked too), every coordinate: an Elman
  RNN (`nets.rnn`, 88 coordinates, 1.1e-08), an LSTM against backpropagation through time
  written by hand (`nets.backprop_sequence.lstm_backward` after the per-position dense
  layer's transpose: autodiff and the hand-derived chain rule agree to 2.1e-15, each against
  differences 1.5e-08, 218 coordinates), a one-block Transformer (`nets.transformer`, 203,
  1.4e-08) and a one-block Mamba (`nets.mamba`, its parallel scan, 295, 2.1e-08); along 4
  random directions per leaf, the sequence experiment's Transformer (2 blocks, 4,648
  parameters, 116 directions, 1.6e-08) and Mamba (2 blocks, 4,808 parameters, 108
  directions, 1.7e-08);
* the generative models of issue 9: each GAN player's loss (the gan experiment's ReLU
  players at width 5, the other player's parameters held fixed): the discriminator's
  ``-V(D, G)`` (21 coordinates, 7.7e-09) and the generator's non-saturating loss through
  the discriminator (32, 4.0e-09); the DDPM noise-prediction loss ``L_simple`` of a
  denoiser of two ReLU layers of 5 (the linear schedule, T = 1000; its steps and noise drawn
  from a fixed key, so a function of the parameters; 77 coordinates, 7.8e-09);
* `clip`: a tiny CLIP's symmetric cross-entropy (`nets.clip`: one conv of 2 channels, one
  causal block of width 4, embedding 4, four captions of `nets.tokenizer`) with respect to
  both encoders and the temperature, 4 random directions per leaf (88 directions, 2.1e-08).

Errors are per element, ``|a - b| / max(|a|, |b|, floor)`` (``nets.gradcheck.relative_error``;
the floor keeps finite-difference round-off on entries near zero from reading as large):
worst 4.8e-08 (autoencoder-deep, directions); of the MLP grid 2.7e-08 (sigmoid, squared
error, 3 hidden layers, no penalty; 2.1e-08 when the grid ran op by op: compiled whole, its
programs round differently in the last bits). The earlier measure, divided by the leaf's
largest entry, reported 1.1e-07 there and would have passed a dropped term on a small
entry. Autodiff and the hand-derived backprop agree to ~1e-14 everywhere. Wall time 26 s
with a warm persistent compilation cache, 115 s with the MLP grid's programs new, on the
shared 2-core CPU while other jobs ran; 198 s (98 s of CPU time) op by op with a cold cache while
other jobs kept its load average at 7-10. With the 9 cases of issue 9: 42 s (26 s of CPU
time) with a warm cache at a load average of 9; the 9 new cases alone took 140 s (43 s of
CPU time) with their programs new. With CLIP (133 cases): 32 s, the cache warm but for
CLIP, load average ~8. Two runs with the same seed wrote byte-identical
metrics.json and gradcheck.json (float64 on CPU is deterministic).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments._config import (
    Annotated, Distinct, Names, NonEmpty, NonNegative, Positive, Range, Replicates, Rule)
from experiments._framework import progress, write_csv, write_json
from experiments._plot import plt, savefig
from nets import activations as _activations
from nets import autoencoder as _autoencoder
from nets import backprop, backprop_sequence, gradcheck, losses as _losses, mlp, objective
from nets import clip as _clip
from nets import cnn as _cnn
from nets import densenet as _densenet
from nets import diffusion as _diffusion
from nets import gan as _gan
from nets import layers as L
from nets import mamba as _mamba
from nets import resnet as _resnet
from nets import rnn as _rnn
from nets import tokenizer as _tokenizer
from nets import transformer as _transformer
from nets.model import Model
from train import newton as _newton


def _is_case(name: str) -> bool:
    return name in CASES  # defined below, read when a config is checked


@dataclasses.dataclass(frozen=True)
class Config:
    # hidden nonlinearities g
    activations: Names(_activations.ACTIVATIONS) = tuple(_activations.ACTIVATIONS)
    losses: Names(_losses.LOSSES) = tuple(_losses.LOSSES)  # losses L (each with its output g^(K))
    # numbers of hidden layers of the MLP
    depths: Annotated[tuple[int, ...], NonEmpty(), Range(0, 20)] = (0, 1, 3)
    # "none", or "all": l2 + l1 + weight elimination
    penalties: Names(("none", "all")) = ("none", "all")
    # keys of CASES to add
    models: Annotated[tuple[str, ...], Distinct(), Rule("a key of CASES", _is_case)] = (
        "mlp-dropout", "logistic-regression", "cnn-backprop", "cnn-batchnorm", "esl-net1",
        "esl-net2", "esl-net3", "esl-net4", "esl-net5", "modern-cnn", "resnet", "resnet-deep",
        "densenet", "autoencoder-linear", "autoencoder-deep", "rnn", "lstm-backprop",
        "transformer", "mamba", "transformer-sequence", "mamba-sequence", "gan-discriminator",
        "gan-generator", "diffusion", "clip")
    # Batch and widths: the shapes of tests/test_gradients.py, so the two share compiled ops.
    n_examples: Annotated[int, Range(1, 10_000)] = 6  # rows of each random batch
    n_inputs: Annotated[int, Range(1, 1_000)] = 4  # input width n_0
    width: Annotated[int, Range(1, 1_000)] = 5  # width of every hidden layer
    n_outputs: Annotated[int, Range(1, 1_000)] = 3  # output width (1 for binary cross-entropy)
    init_scale: Positive = 0.9  # weights and biases uniform on [-init_scale, init_scale]
    l2: NonNegative = 0.1  # lambda of (1/2) sum W^2 in the "all" penalty setting
    l1: NonNegative = 0.02  # lambda of sum |W| in the "all" penalty setting
    weight_elimination: NonNegative = 0.1  # lambda of sum W^2 / (1 + W^2) in the "all" setting
    eps: Positive = 1e-6  # central-difference step (float64)
    # random unit directions per leaf for the models checked directionally
    directions: Replicates = 4
    tol: Positive = 1e-6  # a case passes when its worst relative error is <= tol
    seed: int = 0  # every case's batch and parameters derive from jax.random.key(seed)


SMOKE = {"activations": ("tanh", "relu"), "losses": ("cross_entropy",), "depths": (1,),
         "models": ("mlp-dropout", "cnn-backprop", "rnn")}


class Case(NamedTuple):
    """One row of the table: what is checked, and how."""

    model: str  # "mlp", "mlp-dropout", "logistic-regression", ...
    activation: str  # hidden nonlinearity ("-" where the model has none)
    loss: str  # loss name
    depth: int  # hidden layers (0 for a linear model)
    penalty: str  # "none", "all", or the penalty the case uses
    check: Callable[[Config, jax.Array], gradcheck.Report]  # (config, key) -> Report
    method: str = "coordinates"  # differences along "coordinates" or random "directions"


# --------------------------------------------------------------------------------------------
# Problems


def _sizes(config: Config, depth: int, loss: str) -> tuple[int, ...]:
    n_out = 1 if loss == "binary_cross_entropy" else config.n_outputs
    return (config.n_inputs, *([config.width] * depth), n_out)


def _targets(key, loss: str, n: int, n_out: int) -> np.ndarray:
    if loss == "cross_entropy":
        return np.arange(n, dtype=np.int32) % n_out  # every class present
    if loss == "binary_cross_entropy":
        return (np.arange(n) % 2).astype(np.float64)
    return np.asarray(jax.random.normal(key, (n, n_out), jnp.float64))


def _mlp_problem(config: Config, key, depth: int, loss: str):
    """Parameters and a batch, redrawn until every hidden layer has a live ReLU unit on the
    batch (a layer dead on every example has a zero gradient, which reads as error 1)."""
    sizes = _sizes(config, depth, loss)
    kp, kx, ky = jax.random.split(key, 3)
    with jax.enable_x64(True):
        for attempt in range(20):
            params = mlp.init(jax.random.fold_in(kp, attempt), sizes, scheme="esl", scale=config.init_scale,
                              dtype=jnp.float64)
            X = np.asarray(jax.random.normal(jax.random.fold_in(kx, attempt),
                                             (config.n_examples, sizes[0]), jnp.float64))
            zs, _ = backprop.forward(params, X, "relu")
            if all(bool(np.any(np.asarray(z) > 0)) for z in zs[:-1]):
                break
        Y = _targets(ky, loss, config.n_examples, sizes[-1])
    return params, X, Y


def _penalty_kwargs(config: Config, penalty: str) -> dict:
    if penalty == "none":
        return {}
    if penalty == "all":
        return {"l2": config.l2, "penalties": {"l1": config.l1,
                                               "weight_elimination": config.weight_elimination}}
    raise ValueError(f"penalty: expected 'none' or 'all', got {penalty!r}")


# --------------------------------------------------------------------------------------------
# Cases


def _mlp_check(activation: str, loss: str, depth: int, penalty: str):
    def check(config: Config, key) -> gradcheck.Report:
        params, X, Y = _mlp_problem(config, key, depth, loss)
        return gradcheck.check_mlp(params, X, Y, activation=activation, loss=loss,
                                   eps=config.eps, **_penalty_kwargs(config, penalty))

    return check


def _mlp_dropout(config: Config, key) -> gradcheck.Report:
    """The MLP with inverted dropout and the quadratic penalty. The dropout key is part of
    the objective (one fixed mask), so the objective is a deterministic function of the
    parameters; the hand-derived backprop has no dropout, so autodiff is checked against
    central differences only."""
    params, X, Y = _mlp_problem(config, key, 1, "cross_entropy")
    mask_key = jax.random.fold_in(key, 1)

    def apply_fn(p, x):
        return mlp.apply(p, x, activation="tanh", drop_rate=0.3, key=mask_key)

    obj = objective.make(apply_fn, "cross_entropy", {"l2": config.l2})
    return gradcheck.check(obj, params, X, Y, eps=config.eps)


def _logistic_regression(config: Config, key) -> gradcheck.Report:
    """`train.newton.logistic_regression_objective` (the optimizers experiment's objective)
    against its gradient written by hand: X^T (sigmoid(z) - y) / n + l2 w, and 1^T (...) / n."""
    kx, kw = jax.random.split(key)
    n, d = config.n_examples, config.n_inputs
    with jax.enable_x64(True):
        X = np.asarray(jax.random.normal(kx, (n, d), jnp.float64))
        y = (np.arange(n) % 2).astype(np.float64)
        w = jax.random.uniform(kw, (d + 1,), jnp.float64, -config.init_scale, config.init_scale)
        f = _newton.logistic_regression_objective(X, y, config.l2)
    params = {"w": w[:d], "b": w[d]}

    def reference(p, X, Y):
        r = jax.nn.sigmoid(X @ p["w"] + p["b"]) - Y  # (n,) dL/dz
        return {"w": X.T @ r / X.shape[0] + config.l2 * p["w"], "b": jnp.mean(r)}

    return gradcheck.check(lambda p, X, Y: f(p), params, X, y, reference=reference,
                           eps=config.eps)


def _rng(key) -> np.random.Generator:
    """A NumPy generator seeded by the bits of ``key``: the models' draws come from the
    case's key without compiling a jax.random sampler for every shape."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)))


def _random_params(model: Model, rng: np.random.Generator, scale: float):
    """``model``'s parameters drawn uniform on ``[-scale, scale]`` (every leaf, biases and
    batch-norm scales included: a zero bias or a unit scale would hide a term), and its
    state drawn uniform on ``[0.5, 1.5]`` (batch-norm running statistics away from (0, 1),
    so that evaluation mode's affine map counts); float64, shapes traced, nothing compiled."""
    params, state = jax.eval_shape(model.init, jax.random.key(0))
    params = jax.tree.map(lambda s: rng.uniform(-scale, scale, s.shape), params)
    return params, jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape), state)


def _batch(config: Config, rng: np.random.Generator, shape, n_classes: int):
    """``config.n_examples`` standard normal examples of ``shape`` and labels ``i % n_classes``."""
    X = rng.standard_normal((config.n_examples, *shape))
    return X, np.arange(config.n_examples, dtype=np.int32) % n_classes


# The CNN whose gradient is written out by hand: every kind of index arithmetic at once (a
# stride-2 SAME convolution with asymmetric padding on 7x7 images, overlapping pooling).
_CNN_IMAGE = (7, 7, 2)
_CNN_CONV = {"features": 3, "kernel_size": 3, "stride": 2, "padding": "SAME"}
_CNN_POOL = {"window": 2, "stride": 1, "padding": "VALID"}


@functools.cache
def _cnn_parts(n_outputs: int):
    """The hand-derived case's model, its objective, and its forward pass with the local
    derivatives (jitted), built once: a second run in the same process finds their
    compiled programs again."""
    conv, pool = L.Conv2D(**_CNN_CONV), L.MaxPool(**_CNN_POOL)
    model = Model(L.serial(conv, L.Tanh(), pool, L.Flatten(), L.Dense(n_outputs)),
                  input_shape=_CNN_IMAGE)
    tanh, cross_entropy = _activations.get("tanh"), _losses.get("cross_entropy")

    @jax.jit
    def forward(params, X, Y):
        """The layers' own forward pass, with the derivatives of the nonlinearities from
        their hand-derived formulas: ``g'(Z1)`` (nets.activations) and ``dR/dz``
        (nets.losses, softmax minus one-hot, over n)."""
        (conv_p, _, _, _, dense_p), n = params, X.shape[0]
        Z1 = jax.vmap(lambda x: conv.apply(conv_p, (), x)[0])(X)  # (n, 4, 4, 3)
        A1 = tanh.fn(Z1)
        P = jax.vmap(lambda a: pool.apply((), (), a)[0])(A1)  # (n, 3, 3, 3)
        Z = P.reshape(n, -1) @ dense_p["W"].T + dense_p["b"]  # (n, n_out)
        return tanh.grad(Z1), A1, P, jax.vmap(cross_entropy.grad)(Z, Y) / n

    return model, objective.make(model), forward


def _cnn_backprop(config: Config, key) -> gradcheck.Report:
    """A small CNN, conv -> tanh -> max pool -> dense -> softmax, against its gradient by hand:
    the dense layer's transpose, nets.backprop.max_pool_backward and
    nets.backprop.conv2d_backward, chained through dR/dz and g' in NumPy; every coordinate."""
    model, obj, forward = _cnn_parts(config.n_outputs)
    rng = _rng(key)
    params, _ = _random_params(model, rng, config.init_scale)
    X, y = _batch(config, rng, _CNN_IMAGE, config.n_outputs)

    def reference(p, X, Y):
        dg, A1, P, delta = (np.asarray(a) for a in forward(p, X, Y))  # delta = dR/dz (n, n_out)
        conv_p, W = p[0], np.asarray(p[4]["W"])
        F = P.reshape(len(X), -1)  # (n, 27)
        dF = delta @ W  # dR/dF, (n, 27)
        dA1 = backprop.max_pool_backward(dF.reshape(P.shape), A1, **_CNN_POOL)  # (n, 4, 4, 3)
        _, dK, dc = backprop.conv2d_backward(dA1 * dg, X, conv_p["W"],
                                             stride=_CNN_CONV["stride"],
                                             padding=_CNN_CONV["padding"])
        return ({"W": dK, "b": dc}, (), (), (), {"W": delta.T @ F, "b": delta.sum(0)})

    return gradcheck.check(obj, params, X, y, reference=reference, eps=config.eps, jit=True)


@functools.cache
def _model_objective(build: Callable, config: Config, loss: str, penalties: tuple):
    """``build(config)`` and its objective ``(params, X, Y, state) -> R`` (evaluation mode),
    built once per configuration, so that compiled programs are reused."""
    model = build(config)
    obj = objective.make(model, loss, {name: getattr(config, name) for name in penalties})
    if model.stateful:
        return model, lambda p, X, Y, state: obj(p, X, Y, train=False, model_state=state)[0]
    return model, lambda p, X, Y, state: obj(p, X, Y)


def _sequence_batch(config: Config, rng: np.random.Generator, model: Model, vocab: int):
    """``config.n_examples`` sequences for a model with outputs ``(T, M)``: token ids in
    ``[0, vocab)`` (or standard normal features when ``vocab`` is 0) and per-position labels
    ``(n, T)``, position 0 not scored (``IGNORE``: the mask is part of what is checked)."""
    n, (T, M) = config.n_examples, model.output_shape
    X = (rng.integers(0, vocab, (n, *model.input_shape)).astype(np.int32) if vocab
         else rng.standard_normal((n, *model.input_shape)))
    Y = (np.arange(n * T).reshape(n, T) % M).astype(np.int32)
    Y[:, 0] = _losses.IGNORE
    return X, Y


def _model_check(build: Callable[[Config], Model], *, directional: bool = False,
                 loss: str = "cross_entropy", penalties=(), autoencode: bool = False,
                 vocab: int | None = None, reference: Callable | None = None):
    """A check of ``build(config)`` (a Model) on a random batch: every coordinate, or, with
    ``directional``, ``config.directions`` random directions per leaf. Models with state
    (batch norm) are checked in evaluation mode on random running statistics (passed as
    the check's ``hyper``). ``penalties``: names of penalties, with the config's lambdas.
    ``vocab``: a sequence model (outputs ``(T, M)``, per-position labels), on token ids
    below ``vocab`` (0: real features). ``reference(params, X, Y, state)``: a gradient
    by hand."""

    def check(config: Config, key) -> gradcheck.Report:
        model, obj = _model_objective(build, config, loss, tuple(penalties))
        rng = _rng(key)
        params, state = _random_params(model, rng, config.init_scale)
        if vocab is not None:
            X, y = _sequence_batch(config, rng, model, vocab)
        else:
            X, y = _batch(config, rng, model.input_shape, model.output_shape[0])
        Y = X if autoencode else y
        if reference is not None:
            return gradcheck.check(obj, params, X, Y, hyper=state, eps=config.eps, jit=True,
                                   reference=reference)
        if directional:
            kd = jax.random.fold_in(key, 1)
            return gradcheck.check_directional(obj, params, X, Y, key=kd, hyper=state,
                                               directions=config.directions, eps=config.eps)
        return gradcheck.check(obj, params, X, Y, hyper=state, eps=config.eps, jit=True)

    return check


def _cnn_batchnorm(config: Config) -> Model:
    layers = (L.Conv2D(4, 3), L.BatchNorm(), L.Relu(), L.MaxPool(2), L.Flatten(),
              L.Dense(config.n_outputs))
    return Model(L.serial(*layers), input_shape=(6, 6, 1))


def _esl(name: str):
    return lambda config: getattr(_cnn, name)().model


def _model_case(name: str, activation: str, loss: str, depth: int, penalty: str,
                build: Callable[[Config], Model], *, directional: bool = False,
                penalties: tuple = (), autoencode: bool = False, vocab: int | None = None,
                reference: Callable | None = None) -> Case:
    """A :class:`Case` checking the Model ``build(config)`` (see :func:`_model_check`)."""
    check = _model_check(build, directional=directional, loss=loss, penalties=penalties,
                         autoencode=autoencode, vocab=vocab, reference=reference)
    return Case(name, activation, loss, depth, penalty, check,
                "directions" if directional else "coordinates")


# --- sequence models (issue 9): outputs (T, M), the per-position cross-entropy -------------

_SEQ_LEN, _VOCAB = 5, 6  # the small sequence models: every coordinate


def _rnn_model(config: Config) -> Model:
    """An Elman RNN on real features: Dense -> RNN -> per-position Dense."""
    return _rnn.model(d_in=config.n_inputs, n_classes=config.n_outputs, seq_len=_SEQ_LEN,
                      d_model=4, d_hidden=config.width, cell="rnn")


def _lstm_model(config: Config) -> Model:
    """LSTM -> per-position Dense on real features: the model whose gradient
    :func:`_lstm_reference` writes out by hand."""
    return Model(L.serial(_rnn.LSTM(config.width), _rnn.per_position(L.Dense(config.n_outputs))),
                 input_shape=(_SEQ_LEN, config.n_inputs))


def _lstm_reference(params, X, Y, state):
    """The gradient of the mean per-position cross-entropy of :func:`_lstm_model`, by hand
    (NumPy): ``dR/dz`` from :mod:`nets.losses`' hand-derived per-position gradient, the
    per-position dense layer's transpose, then backpropagation through time by
    :func:`nets.backprop_sequence.lstm_backward`."""
    cell, dense = jax.tree.map(np.asarray, params)
    grad = _losses.get("per_position_cross_entropy").grad
    X, Y, n = np.asarray(X), np.asarray(Y), len(X)
    W, b = dense["W"], dense["b"]
    g_cell = {k: np.zeros_like(v) for k, v in cell.items()}
    g_dense = {"W": np.zeros_like(W), "b": np.zeros_like(b)}
    for x, y in zip(X, Y):
        H = backprop_sequence.lstm_forward(cell, x)["h"][1:]  # h_1 .. h_T, (T, n)
        dZ = np.asarray(grad(H @ W.T + b, y)) / n  # dR/dz_t, (T, M)
        g_dense["W"] += dZ.T @ H
        g_dense["b"] += dZ.sum(0)
        g, _, _, _ = backprop_sequence.lstm_backward(cell, x, dZ @ W)  # dR/dh_t = W^T dR/dz_t
        for k in g_cell:
            g_cell[k] += g[k]
    return g_cell, g_dense


def _transformer_model(config: Config) -> Model:
    return _transformer.model(vocab_size=_VOCAB, n_classes=config.n_outputs, seq_len=_SEQ_LEN,
                              d_model=4, n_heads=2, n_layers=1, d_mlp=8)


def _mamba_model(config: Config) -> Model:
    return _mamba.model(vocab_size=_VOCAB, n_classes=config.n_outputs, seq_len=_SEQ_LEN,
                        d_model=4, n_layers=1, d_state=3)  # the parallel scan


def _sequence_experiment_model(kind: str):
    """The sequence experiment's token model of ``kind`` at its first length (defaults)."""
    def build(config: Config) -> Model:
        from experiments import sequence as _sequence  # noqa: PLC0415 (figures, no cycle)
        c = _sequence.Config()
        return _sequence.build(kind, "token", c.lengths[0], c)

    return build


# --- generative models (issue 9): both GAN players, the diffusion model's loss -------------

@functools.cache
def _gan_parts(config: Config):
    """The gan experiment's players (ReLU MLPs of :func:`nets.gan.mlp_player`) at small
    width, and each player's loss as ``(own params, real X, noise Z, other's params)``."""
    latent = 3
    g = _gan.mlp_player((config.width,), n_in=latent, n_out=2)
    d = _gan.mlp_player((config.width,), n_in=2, n_out=1)

    def fake_logits(gp, dp, Z):
        return d.batch_apply(dp, g.batch_apply(gp, Z)[0])[0]

    def d_loss(dp, X, Z, gp):  # -V(D, G): real X against fakes G(Z)
        return _gan.discriminator_loss(d.batch_apply(dp, X)[0], fake_logits(gp, dp, Z))

    def g_loss(gp, X, Z, dp):  # the non-saturating generator loss, through D
        return _gan.generator_loss(fake_logits(gp, dp, Z))

    return g, d, latent, d_loss, g_loss


def _gan_check(player: str):
    """One player's loss against central differences (every coordinate), the other
    player's parameters held fixed (traced, as ``hyper``)."""

    def check(config: Config, key) -> gradcheck.Report:
        g, d, latent, d_loss, g_loss = _gan_parts(config)
        rng = _rng(key)
        gp, _ = _random_params(g, rng, config.init_scale)
        dp, _ = _random_params(d, rng, config.init_scale)
        X = rng.standard_normal((config.n_examples, 2))
        Z = rng.standard_normal((config.n_examples, latent))
        if player == "discriminator":
            return gradcheck.check(d_loss, dp, X, Z, hyper=gp, eps=config.eps, jit=True)
        return gradcheck.check(g_loss, gp, X, Z, hyper=dp, eps=config.eps, jit=True)

    return check


@functools.cache
def _diffusion_parts(config: Config):
    """A small denoiser (:func:`nets.diffusion.denoiser`, ReLU) and Ho et al.'s ``L_simple``
    with its noise and steps drawn from a fixed key (so a deterministic function of the
    parameters), on the diffusion experiment's schedule."""
    net = _diffusion.denoiser(2, (config.width, config.width), emb_dim=4)
    schedule = _diffusion.linear_schedule()
    noise_key = jax.random.key(config.seed)

    def loss(params, X, Y):
        return _diffusion.loss(net, params, X, noise_key, schedule)

    return net, loss


def _diffusion_check(config: Config, key) -> gradcheck.Report:
    net, loss = _diffusion_parts(config)
    rng = _rng(key)
    params, _ = _random_params(net.model, rng, config.init_scale)
    X = rng.standard_normal((config.n_examples, 2))
    return gradcheck.check(loss, params, X, np.zeros(config.n_examples), eps=config.eps,
                           jit=True)


# --- CLIP (issue 9): the symmetric contrastive loss through both encoders ------------------

_CAPTIONS = ("a handwritten seven", "the digit two", "a photo of a nine", "the number one")


@functools.cache
def _clip_parts():
    """A tiny CLIP (:func:`nets.clip.model`: one conv of 2 channels, one causal block of
    width 4, embedding 4) and its tokenised captions."""
    tok = _tokenizer.build(_CAPTIONS, length=6)
    clip = _clip.model(vocab_size=tok.vocab_size, seq_len=tok.length, end_id=tok.end_id,
                       embed_dim=4, image_channels=(2,), image_hidden=4, d_model=4, n_heads=2,
                       n_layers=1)
    return clip, np.asarray(tok.encode_batch(list(_CAPTIONS)))


def _clip_check(config: Config, key) -> gradcheck.Report:
    """The CLIP loss (images -> CNN, captions -> causal Transformer read at <end>, cosine
    logits scaled by exp(t), symmetric cross-entropy) with respect to every parameter of
    both encoders and t, along random directions per leaf."""
    clip, ids = _clip_parts()
    rng = _rng(key)
    image, _ = _random_params(clip.image, rng, config.init_scale)
    text, _ = _random_params(clip.text, rng, config.init_scale)
    params = {"image": image, "text": text, "log_scale": np.float64(math.log(10.0))}
    images = rng.uniform(0.0, 1.0, (len(ids), *clip.image.input_shape))
    kd = jax.random.fold_in(key, 1)
    return gradcheck.check_directional(functools.partial(_clip.loss, clip), params, images, ids,
                                       key=kd, directions=config.directions, eps=config.eps)


# Models checked besides the MLP grid: name -> Case. A new model (CNN, LSTM, ...) adds one
# entry here (and its name to Config.models). ``depth`` counts hidden layers.
CASES: dict[str, Case] = {
    "mlp-dropout": Case("mlp-dropout", "tanh", "cross_entropy", 1, "l2", _mlp_dropout),
    "logistic-regression": Case("logistic-regression", "-", "binary_cross_entropy", 0, "l2",
                                _logistic_regression),
    # conv (stride 2, SAME) -> tanh -> overlapping max pool -> dense, with the hand-derived
    # conv and pooling backprop of nets.backprop as the reference
    "cnn-backprop": Case("cnn-backprop", "tanh", "cross_entropy", 1, "none", _cnn_backprop),
    # conv -> batch norm (evaluation mode) -> relu -> max pool -> dense, with l2 on the kernels
    "cnn-batchnorm": _model_case("cnn-batchnorm", "relu", "cross_entropy", 1, "l2",
                                 _cnn_batchnorm, penalties=("l2",)),
    # ESL's Net-1..Net-5 on 8x8 images (nets.cnn: locally connected and shared layers)
    **{f"esl-{name}": _model_case(f"esl-{name}", "sigmoid", "cross_entropy", depth, "none",
                                  _esl(name))
       for name, depth in (("net1", 0), ("net2", 1), ("net3", 2), ("net4", 2), ("net5", 2))},
    # nets.cnn.modern_cnn (6,090 parameters), along random directions
    "modern-cnn": _model_case("modern-cnn", "relu", "cross_entropy", 2, "none",
                              lambda config: _cnn.modern_cnn().model, directional=True),
    # a residual net (nets.resnet) small enough for every coordinate, and the resnet
    # experiment's depth-20 residual sigmoid net (79,690 parameters) along random directions
    "resnet": _model_case("resnet", "tanh", "cross_entropy", 4, "none", lambda config: (
        _resnet.model(5, width=config.width, n_in=config.n_inputs, n_out=config.n_outputs,
                      activation="tanh", residual=True))),
    "resnet-deep": _model_case("resnet-deep", "sigmoid", "cross_entropy", 19, "none",
                               lambda config: _resnet.model(20, residual=True),
                               directional=True),
    # autoencoders (nets.autoencoder) on the squared reconstruction error: a linear one on
    # every coordinate; the autoencoder experiment's deep one (33,474 parameters) along
    # random directions
    "autoencoder-linear": _model_case("autoencoder-linear", "-", "squared_error", 1, "none",
                                      lambda config: _autoencoder.linear(8, 2).model,
                                      autoencode=True),
    # the densenet experiment's DenseNet (nets.densenet: growth 8, blocks of 4 and 4, batch
    # norm in evaluation mode; 21,018 parameters) along random directions
    "densenet": _model_case("densenet", "relu", "cross_entropy", 10, "none",
                            lambda config: _densenet.model(), directional=True),
    "autoencoder-deep": _model_case("autoencoder-deep", "elu", "squared_error", 5, "none",
                                    lambda config: _autoencoder.deep(64, 2).model,
                                    autoencode=True, directional=True),
    # sequence models (issue 9) on the per-position cross-entropy, position 0 not scored:
    # small ones on every coordinate (the LSTM also against backpropagation through time by
    # hand), the sequence experiment's Transformer and Mamba along random directions
    "rnn": _model_case("rnn", "tanh", "cross_entropy", 1, "none", _rnn_model, vocab=0),
    "lstm-backprop": _model_case("lstm-backprop", "sigmoid/tanh", "cross_entropy", 1, "none",
                                 _lstm_model, vocab=0, reference=_lstm_reference),
    "transformer": _model_case("transformer", "gelu", "cross_entropy", 1, "none",
                               _transformer_model, vocab=_VOCAB),
    "mamba": _model_case("mamba", "silu", "cross_entropy", 1, "none", _mamba_model,
                         vocab=_VOCAB),
    "transformer-sequence": _model_case(
        "transformer-sequence", "gelu", "cross_entropy", 2, "none",
        _sequence_experiment_model("transformer"), vocab=_VOCAB, directional=True),
    "mamba-sequence": _model_case(
        "mamba-sequence", "silu", "cross_entropy", 2, "none",
        _sequence_experiment_model("mamba"), vocab=_VOCAB, directional=True),
    # generative models (issue 9): each GAN player's loss (the other's parameters fixed) and
    # the diffusion model's noise-prediction loss L_simple (fixed noise and steps)
    "gan-discriminator": Case("gan-discriminator", "relu", "gan_discriminator", 1, "none",
                              _gan_check("discriminator")),
    "gan-generator": Case("gan-generator", "relu", "gan_non_saturating", 1, "none",
                          _gan_check("generator")),
    "diffusion": Case("diffusion", "relu", "L_simple", 2, "none", _diffusion_check),
    # CLIP: the symmetric cross-entropy over scaled cosine similarities, both encoders and t
    "clip": Case("clip", "relu/gelu", "clip_symmetric", 2, "none", _clip_check, "directions"),
}


def cases(config: Config) -> dict[str, Case]:
    """Every case of a run, by name: the MLP grid, then the models named in ``config.models``."""
    out = {}
    for activation in config.activations:
        _activations.get(activation)  # a clear error for an unknown name
        for loss in config.losses:
            _losses.get(loss)
            for depth in config.depths:
                if depth < 0:
                    raise ValueError(f"depths: expected hidden-layer counts >= 0, got {depth}")
                for penalty in config.penalties:
                    _penalty_kwargs(config, penalty)
                    name = f"mlp/{activation}/{loss}/depth{depth}/{penalty}"
                    out[name] = Case("mlp", activation, loss, depth, penalty,
                                     _mlp_check(activation, loss, depth, penalty))
    for name in config.models:
        if name not in CASES:
            raise ValueError(f"models: expected names in {sorted(CASES)}, got {name!r}")
        out[name] = CASES[name]
    return out


# --------------------------------------------------------------------------------------------
# Run


def _worst(report: gradcheck.Report, column: int) -> float:
    errs = [r[column] for r in report.rows if not math.isnan(r[column])]
    return max(errs) if errs else float("nan")


def _none_if_nan(x: float):
    return None if math.isnan(x) else x


def _checked(row: dict) -> str:
    return f"{row['checked']}{' dir' if row['method'] == 'directions' else ''}"


def _table(rows: list[dict], tol: float) -> str:
    head = (f"{'model':<22}{'activation':<13}{'loss':<21}{'depth':>5}  {'penalty':<8}"
            f"{'checked':>9}{'ad~ref':>10}{'ad~fd':>10}{'ref~fd':>10}  "
            f"{'<=' + format(tol, '.0e'):>6}")
    lines = [head, "-" * len(head)]

    def fmt(v):
        return f"{'-':>10}" if v is None else f"{v:>10.1e}"

    for r in rows:
        lines.append(
            f"{r['model']:<22}{r['activation']:<13}{r['loss']:<21}{r['depth']:>5}  "
            f"{r['penalty']:<8}{_checked(r):>9}"
            f"{fmt(r['ad_ref'])}{fmt(r['ad_fd'])}{fmt(r['ref_fd'])}  "
            f"{'pass' if r['passed'] else 'FAIL':>6}")
    return "\n".join(lines)


def _figure(rows: list[dict], config: Config, path) -> None:
    """Heatmaps of log10 worst error (activation x loss), one per depth and penalty setting;
    below them, a bar per other model."""
    mlp_rows = [r for r in rows if r["model"] == "mlp"]
    other = [r for r in rows if r["model"] != "mlp"]
    acts = list(dict.fromkeys(r["activation"] for r in mlp_rows))
    losses = list(dict.fromkeys(r["loss"] for r in mlp_rows))
    depths = list(dict.fromkeys(r["depth"] for r in mlp_rows))
    pens = list(dict.fromkeys(r["penalty"] for r in mlp_rows))
    vmin, vmax = -12.0, 0.0
    threshold = math.log10(config.tol)
    heights = [0.45 * len(acts) + 1.0] * len(depths) + ([0.3 * len(other) + 1.0] if other else [])
    width = max(2.4 + 1.3 * len(losses), 4.0) * max(len(pens), 1) + 1.5
    fig = plt.figure(figsize=(max(width, 7.0), sum(heights) + 0.6), layout="constrained")
    grid = fig.add_gridspec(len(heights), max(len(pens), 1), height_ratios=heights)
    heat_axes, image = [], None
    for depth in depths:
        for penalty in pens:
            ax = fig.add_subplot(grid[depths.index(depth), pens.index(penalty)])
            heat_axes.append(ax)
            values = np.full((len(acts), len(losses)), np.nan)
            for r in mlp_rows:
                if r["depth"] == depth and r["penalty"] == penalty:
                    values[acts.index(r["activation"]), losses.index(r["loss"])] = np.log10(
                        max(r["worst"], 1e-300))
            image = ax.imshow(np.clip(values, vmin, vmax), cmap="viridis", vmin=vmin,
                              vmax=vmax, aspect="auto")
            for a in range(len(acts)):
                for j in range(len(losses)):
                    v = values[a, j]
                    if not np.isnan(v):
                        fail = v > threshold
                        ax.text(j, a, f"{v:.1f}" + (" FAIL" if fail else ""), ha="center",
                                va="center", fontsize=8, fontweight="bold",
                                color="red" if fail else "white")
            ax.set_xticks(range(len(losses)), [s.replace("_", " ") for s in losses],
                          fontsize=8)
            ax.set_yticks(range(len(acts)), acts, fontsize=8)
            layers = f"{depth} hidden layer{'s' if depth != 1 else ''}"
            ax.set_title(f"MLP, {layers}, penalty: {penalty}", fontsize=9)
    if image is not None:
        cbar = fig.colorbar(image, ax=heat_axes, shrink=0.6 if len(depths) > 1 else 1.0)
        cbar.set_label(f"log10 worst relative error (pass <= {threshold:.0f})")
        cbar.ax.axhline(threshold, color="red", linewidth=2)
    if other:
        ax = fig.add_subplot(grid[-1, :])
        worst = np.array([np.log10(max(r["worst"], 1e-300)) for r in other])
        ax.barh(range(len(other)), worst - vmin, left=vmin, height=0.6,
                color=["tab:green" if r["passed"] else "tab:red" for r in other])
        for i, v in enumerate(worst):
            ax.text(v + 0.1, i, f"{v:.1f}", va="center", fontsize=8)
        ax.axvline(threshold, color="red", linestyle="--",
                   label=f"pass threshold: {config.tol:g}")
        ax.set_yticks(range(len(other)), [r["name"] + (" (directions)" if r["method"] ==
                                                       "directions" else "") for r in other],
                      fontsize=8)
        ax.set_xlim(vmin, vmax)
        ax.invert_yaxis()
        ax.set_xlabel("log10 worst relative error")
        ax.set_title("Other models (nets.gradcheck: autodiff vs central differences along "
                     "every coordinate or random directions, and a reference where written)",
                     fontsize=9)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Gradient triangulation in float64: worst relative error among "
                 "autodiff, hand-derived backprop and central differences", fontsize=10)
    savefig(fig, path)


def run(config: Config, outdir) -> dict:
    """Runs every case, prints the table, writes gradcheck.json/.csv/.png; returns counts."""
    root = jax.random.key(config.seed)
    rows = []
    for name, case in progress(cases(config).items(), desc="gradcheck"):
        key = jax.random.fold_in(root, zlib.crc32(name.encode()) & 0x7FFFFFFF)
        report = case.check(config, key)
        ad_ref, ad_fd, ref_fd = (_worst(report, c) for c in (3, 4, 5))
        worst = report.worst
        rows.append({
            "name": name, "model": case.model, "activation": case.activation, "loss": case.loss,
            "depth": case.depth, "penalty": case.penalty,
            "ad_ref": _none_if_nan(ad_ref), "ad_fd": _none_if_nan(ad_fd),
            "ref_fd": _none_if_nan(ref_fd), "worst": worst,
            "passed": bool(worst <= config.tol), "method": case.method,
            "checked": sum(r.checked for r in report.rows),
            "leaves": report.to_dict(),
        })
    print(_table(rows, config.tol))
    write_json(outdir / "gradcheck.json", {"tol": config.tol, "eps": config.eps, "cases": rows})
    write_csv(outdir / "gradcheck.csv", [{k: v for k, v in r.items() if k != "leaves"}
                                         for r in rows])
    _figure(rows, config, outdir / "gradcheck.png")
    worst_row = max(rows, key=lambda r: r["worst"])
    passed = sum(r["passed"] for r in rows)
    print(f"{passed}/{len(rows)} cases pass at {config.tol:g}; worst {worst_row['worst']:.2e} "
          f"({worst_row['name']})")
    return {
        "cases": len(rows),
        "passed": passed,
        "failed": [r["name"] for r in rows if not r["passed"]],
        "worst_error": worst_row["worst"],
        "worst_case": worst_row["name"],
        "tol": config.tol,
    }
