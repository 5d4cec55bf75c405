"""The systems the ``benchmark`` experiment times, each behind one small interface.

Every system trains the SAME model from the SAME initial weights on the same data, with
its own idiomatic loop, and is imported lazily: this module imports only NumPy and the
standard library, so a child process that times PyTorch never imports JAX, and a peer that
is not installed costs nothing until it is asked for (:func:`missing` says why it is
skipped).

W1 (the digits MLP 64-100-10 ReLU, the note's SGD step ``W <- W - alpha (dW + lambda W)``
on the weights, biases unpenalised, minibatches of 32 in a fresh random order every epoch,
the ``n % 32`` left-over examples skipped, except where a peer cannot do that):

* ``library``: :func:`train.fit` with :func:`train.sgd` (one ``lax.scan`` per epoch, the
  runner's history, tracking and checks);
* ``scan``: the plain 30-line epoch a JAX user writes: one jitted ``lax.scan`` over
  minibatches gathered from device-resident data, the update written out;
* ``torch``: PyTorch eager on the CPU (``torch.optim.SGD`` with ``weight_decay`` on the
  weights only), the loop of its tutorials;
* ``sklearn``: ``MLPClassifier(solver="sgd")``, one ``partial_fit`` per epoch; its penalty
  ``alpha`` is divided by the batch size in the gradient
  (``sklearn/neural_network/_multilayer_perceptron.py``, ``_compute_loss_grad``), so
  ``alpha = lambda * batch_size`` gives the note's step; it also trains on the last,
  partial batch (34 steps an epoch on 1,079 images instead of 33);
* ``linen``, ``nnx``: Flax's MNIST-example loop (``examples/mnist/train.py``): a jitted
  per-step ``train_step`` called from Python for each minibatch (the batch gathered inside
  the jitted step), ``optax.add_decayed_weights`` with a kernel mask chained before
  ``optax.sgd``; ``nnx`` uses ``nnx.jit`` and ``nnx.Optimizer`` with the step bound by
  ``nnx.cached_partial``, as Flax's performance guide advises for training loops;
* ``numpy``: the backward pass written by hand in NumPy float32.

The sequence and convolution peers (PyTorch modules mirroring :mod:`nets.cnn`,
:mod:`nets.transformer` and :mod:`nets.mamba`) and the W2 MLP are at the end.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import sys
import time

import numpy as np

W1_SYSTEMS = ("library", "scan", "torch", "sklearn", "linen", "nnx", "numpy")
JAX_SYSTEMS = ("library", "scan", "linen", "nnx")  # these compile; the others do not
_NEEDS = {"torch": "torch", "sklearn": "sklearn", "linen": "flax", "nnx": "flax"}
LABELS = {
    "library": "this library (train.fit)",
    "scan": "plain lax.scan epoch (JAX)",
    "torch": "PyTorch eager (CPU)",
    "sklearn": "scikit-learn MLPClassifier (sgd)",
    "linen": "Flax linen, jitted per-step loop",
    "nnx": "Flax nnx, nnx.jit per-step loop (cached_partial)",
    "numpy": "NumPy, hand-written backprop",
}


def missing(system: str) -> str | None:
    """``None`` when ``system`` can run here, else the reason it is skipped."""
    package = _NEEDS.get(system)
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    extra = ' (pip install -e ".[bench]")' if package == "torch" else ""
    return f"{package} is not installed{extra}"


def torch_threads() -> int | None:
    """PyTorch's intra-op threads (it uses the physical cores by default), or None."""
    if missing("torch"):
        return None
    import torch
    return int(torch.get_num_threads())


# --------------------------------------------------------------------------------------------
# W1: the digits MLP
# --------------------------------------------------------------------------------------------


class W1:
    """One system's training of the W1 MLP. ``init``: ``[(W, b), ...]`` NumPy float32 with
    ``W`` of shape ``(n_out, n_in)`` (the note's orientation); ``data``: ``(X, y)``."""

    def __init__(self, init, data, *, learning_rate: float, l2: float, batch_size: int,
                 seed: int):
        self.init = [(np.asarray(W, np.float32), np.asarray(b, np.float32)) for W, b in init]
        self.X = np.asarray(data[0], np.float32)
        self.y = np.asarray(data[1], np.int32)
        self.lr, self.l2, self.batch, self.seed = learning_rate, l2, batch_size, seed
        self.steps = self.X.shape[0] // batch_size
        self.setup()

    def setup(self) -> None:
        raise NotImplementedError

    def epochs(self, count: int) -> None:
        """Trains ``count`` more epochs and waits until they are done."""
        raise NotImplementedError

    def predict(self, X) -> np.ndarray:
        raise NotImplementedError


@functools.lru_cache(maxsize=None)
def mlp_loss():
    """The mean cross-entropy of a ReLU MLP (:func:`nets.mlp.apply`), ONE function object for
    W1, W2 and W3, as a user's script has: the library caches its compiled programs per
    loss function and optimizer."""
    from nets import mlp, objective
    return objective.make(mlp_apply, "cross_entropy")


def mlp_apply(params, x):
    from nets import mlp
    return mlp.apply(params, x, activation="relu")


class Library(W1):
    def setup(self):
        import jax
        import train

        self.jax, self.train = jax, train
        self.params = [{"W": jax.numpy.asarray(W), "b": jax.numpy.asarray(b)}
                       for W, b in self.init]
        self.apply = mlp_apply
        self.loss = mlp_loss()
        self.optimizer = train.sgd(self.lr, l2=self.l2)
        self.key = jax.random.key(self.seed)
        self.calls = 0

    def epochs(self, count):
        self.calls += 1
        result = self.train.fit(self.loss, self.params, (self.X, self.y),
                                optimizer=self.optimizer, epochs=count, batch_size=self.batch,
                                key=self.jax.random.fold_in(self.key, self.calls),
                                progress=False)
        self.params = self.jax.block_until_ready(result.params)

    def predict(self, X):
        jax = self.jax
        Z = jax.jit(jax.vmap(self.apply, in_axes=(None, 0)))(self.params, X)
        return np.asarray(Z).argmax(1)


class Scan(W1):
    """The plain epoch: one jitted ``lax.scan`` over minibatches, about 30 lines."""

    def setup(self):
        import jax
        import jax.numpy as jnp

        lr, l2, b = self.lr, self.l2, self.batch

        def loss(p, X, y):  # mean cross-entropy of a 64-100-10 ReLU MLP
            h = jax.nn.relu(X @ p[0][0].T + p[0][1])
            z = h @ p[1][0].T + p[1][1]
            return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(
                z, y[:, None], axis=1)[:, 0])

        def epoch(p, X, y, key):
            steps = X.shape[0] // b
            idx = jax.random.permutation(key, X.shape[0])[:steps * b].reshape(steps, b)

            def step(p, i):
                value, g = jax.value_and_grad(loss)(p, X[i], y[i])
                p = [(W - lr * (gW + l2 * W), c - lr * gc) for (W, c), (gW, gc) in zip(p, g)]
                return p, value

            p, values = jax.lax.scan(step, p, idx)
            return p, values.mean()

        self.jax, self.jnp = jax, jnp
        self.epoch = jax.jit(epoch)
        self.loss = loss
        self.p = [(jnp.asarray(W), jnp.asarray(c)) for W, c in self.init]
        self.Xd, self.yd = jnp.asarray(self.X), jnp.asarray(self.y)
        self.key = jax.random.key(self.seed)

    def epochs(self, count):
        for _ in range(count):
            self.key, k = self.jax.random.split(self.key)
            self.p, _ = self.epoch(self.p, self.Xd, self.yd, k)
        self.jax.block_until_ready(self.p)

    def predict(self, X):
        (W0, b0), (W1_, b1) = [(np.asarray(W), np.asarray(c)) for W, c in self.p]
        return (np.maximum(X @ W0.T + b0, 0) @ W1_.T + b1).argmax(1)


class Torch(W1):
    def setup(self):
        import torch
        from torch import nn

        self.torch = torch
        torch.manual_seed(self.seed)
        (W0, b0), (W1_, b1) = self.init
        self.model = nn.Sequential(nn.Linear(W0.shape[1], W0.shape[0]), nn.ReLU(),
                                   nn.Linear(W1_.shape[1], W1_.shape[0]))
        with torch.no_grad():  # nn.Linear's weight is (out, in), the note's orientation
            for layer, (W, b) in zip((self.model[0], self.model[2]), self.init):
                layer.weight.copy_(torch.from_numpy(W))
                layer.bias.copy_(torch.from_numpy(b))
        weights = [m.weight for m in (self.model[0], self.model[2])]
        biases = [m.bias for m in (self.model[0], self.model[2])]
        # torch's weight_decay adds wd * w to the gradient before the step: the note's step
        self.opt = torch.optim.SGD([{"params": weights, "weight_decay": self.l2},
                                    {"params": biases, "weight_decay": 0.0}], lr=self.lr)
        self.Xt = torch.from_numpy(self.X)
        self.yt = torch.from_numpy(self.y.astype(np.int64))
        self.gen = torch.Generator().manual_seed(self.seed)

    def epochs(self, count):
        torch, F = self.torch, self.torch.nn.functional
        b = self.batch
        for _ in range(count):
            perm = torch.randperm(self.Xt.shape[0], generator=self.gen)
            for i in range(self.steps):
                idx = perm[i * b:(i + 1) * b]
                loss = F.cross_entropy(self.model(self.Xt[idx]), self.yt[idx])
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()

    def predict(self, X):
        with self.torch.no_grad():
            return self.model(self.torch.from_numpy(np.asarray(X, np.float32))).argmax(1).numpy()


class Sklearn(W1):
    def setup(self):
        import warnings

        from sklearn.neural_network import MLPClassifier

        (W0, _), _ = self.init
        self.clf = MLPClassifier(
            hidden_layer_sizes=(W0.shape[0],), activation="relu", solver="sgd",
            learning_rate="constant", learning_rate_init=self.lr, momentum=0.0,
            nesterovs_momentum=False, batch_size=self.batch, shuffle=True,
            alpha=self.l2 * self.batch,  # its gradient adds (alpha / batch) W
            random_state=self.seed, max_iter=1)
        # One partial_fit on one example builds the arrays (sklearn has no way to pass
        # initial weights), then they are overwritten in place: the optimizer keeps
        # references to these very arrays.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.clf.partial_fit(self.X[:1], self.y[:1], classes=np.arange(10))
        for k, (W, b) in enumerate(self.init):
            self.clf.coefs_[k][...] = W.T  # sklearn's coefs are (in, out)
            self.clf.intercepts_[k][...] = b

    def epochs(self, count):
        for _ in range(count):
            self.clf.partial_fit(self.X, self.y)

    def predict(self, X):
        return self.clf.predict(np.asarray(X, np.float32))


def _kernel_mask(params):
    import jax
    return jax.tree.map(lambda a: a.ndim == 2, params)


class Linen(W1):
    def setup(self):
        import flax.linen as nn
        import jax
        import jax.numpy as jnp
        import optax

        (W0, b0), (W1_, b1) = self.init

        class MLP(nn.Module):
            @nn.compact
            def __call__(self, x):
                x = nn.relu(nn.Dense(W0.shape[0])(x))
                return nn.Dense(W1_.shape[0])(x)

        self.model = MLP()
        self.params = {"params": {"Dense_0": {"kernel": jnp.asarray(W0.T), "bias": jnp.asarray(b0)},
                                  "Dense_1": {"kernel": jnp.asarray(W1_.T),
                                              "bias": jnp.asarray(b1)}}}
        self.tx = optax.chain(optax.add_decayed_weights(self.l2, mask=_kernel_mask),
                              optax.sgd(self.lr))
        self.opt_state = self.tx.init(self.params)
        model, tx = self.model, self.tx

        @jax.jit
        def train_step(params, opt_state, X, y, idx):
            def loss_fn(p):
                logits = model.apply(p, X[idx])
                return optax.softmax_cross_entropy_with_integer_labels(logits, y[idx]).mean()

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self.jax, self.train_step = jax, train_step
        self.Xd, self.yd = jnp.asarray(self.X), jnp.asarray(self.y)
        self.rng = jax.random.key(self.seed)

    def epochs(self, count):
        jax, b = self.jax, self.batch
        for _ in range(count):
            self.rng, k = jax.random.split(self.rng)
            perms = np.asarray(jax.random.permutation(k, self.X.shape[0]))
            perms = perms[:self.steps * b].reshape(self.steps, b)
            for perm in perms:
                self.params, self.opt_state, _ = self.train_step(
                    self.params, self.opt_state, self.Xd, self.yd, perm)
        jax.block_until_ready(self.params)

    def predict(self, X):
        return np.asarray(self.model.apply(self.params, X)).argmax(1)


class Nnx(W1):
    def setup(self):
        import jax
        import jax.numpy as jnp
        import optax
        from flax import nnx

        (W0, b0), (W1_, b1) = self.init

        class MLP(nnx.Module):
            def __init__(self, rngs):
                self.l1 = nnx.Linear(W0.shape[1], W0.shape[0], rngs=rngs)
                self.l2 = nnx.Linear(W1_.shape[1], W1_.shape[0], rngs=rngs)

            def __call__(self, x):
                return self.l2(nnx.relu(self.l1(x)))

        self.model = MLP(nnx.Rngs(self.seed))
        self.model.l1.kernel.value = jnp.asarray(W0.T)
        self.model.l1.bias.value = jnp.asarray(b0)
        self.model.l2.kernel.value = jnp.asarray(W1_.T)
        self.model.l2.bias.value = jnp.asarray(b1)
        tx = optax.chain(optax.add_decayed_weights(self.l2, mask=_kernel_mask),
                         optax.sgd(self.lr))
        self.optimizer = nnx.Optimizer(self.model, tx, wrt=nnx.Param)

        @nnx.jit
        def train_step(model, optimizer, X, y, idx):
            def loss_fn(model):
                logits = model(X[idx])
                return optax.softmax_cross_entropy_with_integer_labels(logits, y[idx]).mean()

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            optimizer.update(model, grads)
            return loss

        self.jax, self.nnx = jax, nnx
        # Flax's advice for hot loops: cache the graph traversal of model and optimizer
        # (nnx.cached_partial halves the time of a step here against calling nnx.jit's).
        self.train_step = nnx.cached_partial(train_step, self.model, self.optimizer)
        self.Xd, self.yd = jnp.asarray(self.X), jnp.asarray(self.y)
        self.rng = jax.random.key(self.seed)

    def epochs(self, count):
        jax, b = self.jax, self.batch
        for _ in range(count):
            self.rng, k = jax.random.split(self.rng)
            perms = np.asarray(jax.random.permutation(k, self.X.shape[0]))
            perms = perms[:self.steps * b].reshape(self.steps, b)
            for perm in perms:
                self.train_step(self.Xd, self.yd, perm)
        jax.block_until_ready(self.nnx.state(self.model))

    def predict(self, X):
        return np.asarray(self.model(X)).argmax(1)


class Numpy(W1):
    """Forward and backward pass written out (the note's backprop), float32."""

    def setup(self):
        self.p = [(W.copy(), b.copy()) for W, b in self.init]
        self.rng = np.random.default_rng(self.seed)
        self.onehot = np.eye(int(self.y.max()) + 1, dtype=np.float32)

    def epochs(self, count):
        lr, l2, b = np.float32(self.lr), np.float32(self.l2), self.batch
        (W0, b0), (W1_, b1) = self.p
        for _ in range(count):
            perm = self.rng.permutation(self.X.shape[0])
            for i in range(self.steps):
                idx = perm[i * b:(i + 1) * b]
                X, Y = self.X[idx], self.onehot[self.y[idx]]
                z1 = X @ W0.T + b0  # (b, 100)
                a1 = np.maximum(z1, 0)
                z2 = a1 @ W1_.T + b1  # (b, 10)
                e = np.exp(z2 - z2.max(axis=1, keepdims=True))
                d2 = (e / e.sum(axis=1, keepdims=True) - Y) / np.float32(b)  # dR/dz2
                d1 = (d2 @ W1_) * (z1 > 0)  # dR/dz1
                W1_ -= lr * (d2.T @ a1 + l2 * W1_)
                b1 -= lr * d2.sum(axis=0)
                W0 -= lr * (d1.T @ X + l2 * W0)
                b0 -= lr * d1.sum(axis=0)

    def predict(self, X):
        (W0, b0), (W1_, b1) = self.p
        return (np.maximum(X @ W0.T + b0, 0) @ W1_.T + b1).argmax(1)


W1_CLASSES = {"library": Library, "scan": Scan, "torch": Torch, "sklearn": Sklearn,
              "linen": Linen, "nnx": Nnx, "numpy": Numpy}


def make_w1(system: str, init, data, **settings) -> W1:
    return W1_CLASSES[system](init, data, **settings)


# --------------------------------------------------------------------------------------------
# Child processes: a system's total time from a fresh interpreter, and the digits start-up
# --------------------------------------------------------------------------------------------


def _enable_cache(path: str) -> None:
    import jax
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


class _CompileClock:
    """The wall time JAX spends tracing, lowering and compiling (or reading the persistent
    cache): the union of the spans of its monitoring events, so nested traces count once."""

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
              "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")

    def __init__(self):
        import jax.monitoring
        self.spans = []
        jax.monitoring.register_event_time_span_listener(self._listen)

    def _listen(self, event, start, end, **kwargs):
        if event in self.EVENTS:
            self.spans.append((start, end))

    def seconds(self) -> float:
        total, last = 0.0, -math.inf
        for start, end in sorted(self.spans):
            if end > last:
                total += end - max(start, last)
                last = end
        return total


def w1_child(request: dict) -> dict:
    """In a fresh process: import, build and train ``epochs`` epochs of one system."""
    t0 = time.perf_counter()
    system = request["system"]
    clock = None
    if system in JAX_SYSTEMS:
        import jax  # noqa: F401
        _enable_cache(request["cache"])
        clock = _CompileClock()
        if system == "library":
            import train  # noqa: F401
            from nets import mlp, objective  # noqa: F401
        elif system in ("linen", "nnx"):
            import flax.linen  # noqa: F401
            from flax import nnx  # noqa: F401
            import optax  # noqa: F401
    elif system == "torch":
        import torch  # noqa: F401
    elif system == "sklearn":
        import sklearn.neural_network  # noqa: F401
    t_import = time.perf_counter()
    with np.load(request["data"]) as f:
        data = {k: f[k] for k in f.files}
    init = [(data["W0"], data["b0"]), (data["W1"], data["b1"])]
    model = make_w1(system, init, (data["X"], data["y"]), **request["settings"])
    t_setup = time.perf_counter()
    model.epochs(request["epochs"])
    t_train = time.perf_counter()
    accuracy = float(np.mean(model.predict(data["X_test"]) == data["y_test"]))
    return {"import_s": t_import - t0, "setup_s": t_setup - t_import,
            "train_s": t_train - t_setup, "compile_s": clock.seconds() if clock else 0.0,
            "accuracy": accuracy}


def startup_child(request: dict) -> dict:
    """In a fresh process: ``python -m experiments run digits`` split into import,
    compilation (or reading the persistent cache) and the rest (training, evaluation,
    figures, files)."""
    t0 = time.perf_counter()
    os.environ["JAXNETS_CACHE_DIR"] = request["cache"]
    import jax  # noqa: F401
    clock = _CompileClock()
    from experiments import _framework, digits  # noqa: F401  (train, nets, matplotlib)
    t_import = time.perf_counter()
    metrics, _ = _framework.execute("digits", out=request["out"], progress=False,
                                    overrides=request.get("overrides") or None)
    t_run = time.perf_counter()
    return {"import_s": t_import - t0, "run_s": t_run - t_import,
            "compile_s": clock.seconds(), "test_error": metrics["test_error"]}


def w3_child(request: dict) -> dict:
    """W3 with the CPU cores exposed as ``devices`` devices (set before JAX starts)."""
    import jax
    jax.config.update("jax_num_cpu_devices", int(request.pop("devices")))
    from experiments.benchmark import w3_measure
    return w3_measure(request)


def models_child(request: dict) -> dict:
    """The CNN and sequence rows with the CPU cores exposed as ``devices`` devices."""
    import jax
    jax.config.update("jax_num_cpu_devices", int(request["devices"]))
    from experiments.benchmark import models_measure
    return models_measure(request)


def child() -> None:
    """Entry point of the child processes: a JSON request in ``argv[1]``, one JSON line out."""
    request = json.loads(sys.argv[1])
    kind = request.pop("kind")
    out = {"w1": w1_child, "startup": startup_child, "w3": w3_child,
           "models": models_child}[kind](request)
    print("BENCHMARK-RESULT " + json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------------
# PyTorch peers of W2, the CNN, the Transformer and Mamba
# --------------------------------------------------------------------------------------------


def torch_mlp(sizes):
    """``Linear -> ReLU -> ... -> Linear`` with PyTorch's default initialisation."""
    from torch import nn
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def torch_cnn(features=(16, 32), n_classes: int = 10, side: int = 8):
    """:func:`nets.cnn.modern_cnn`: (Conv 3x3 "same" -> ReLU -> MaxPool 2) per entry of
    ``features``, Flatten, Linear; NCHW."""
    from torch import nn
    layers, c = [], 1
    for f in features:
        layers += [nn.Conv2d(c, f, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c, side = f, side // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * side * side, n_classes))


def torch_transformer(vocab: int, n_classes: int, seq_len: int, d: int, heads: int,
                      layers: int, d_mlp: int):
    """:func:`nets.transformer.model`: embedding, sinusoidal encoding, pre-LN blocks
    (causal attention without biases by ``F.scaled_dot_product_attention``, a tanh-GELU MLP
    of ``d_mlp`` units), LayerNorm, a per-position Linear."""
    import torch
    from torch import nn
    F = nn.functional

    t = np.arange(seq_len)[:, None]
    rates = 10000.0 ** (-np.arange(0, d, 2) / d)
    pe = np.zeros((seq_len, d), np.float32)
    pe[:, 0::2], pe[:, 1::2] = np.sin(t * rates), np.cos(t * rates[: d // 2])

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d, bias=False)
            self.out = nn.Linear(d, d, bias=False)
            self.mlp = nn.Sequential(nn.Linear(d, d_mlp), nn.GELU(approximate="tanh"),
                                     nn.Linear(d_mlp, d))

        def forward(self, x):  # (B, T, d)
            B, T, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, heads, d // heads).unbind(2)
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2), is_causal=True)
            x = x + self.out(o.transpose(1, 2).reshape(B, T, d))
            return x + self.mlp(self.ln2(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, d)
            self.register_buffer("pe", torch.from_numpy(pe))
            self.blocks = nn.Sequential(*[Block() for _ in range(layers)])
            self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, n_classes)

        def forward(self, tokens):  # (B, T) -> (B, T, n_classes)
            return self.head(self.ln(self.blocks(self.embed(tokens) + self.pe)))

    return Net()


def torch_mamba(vocab: int, n_classes: int, seq_len: int, d: int, layers: int,
                d_state: int = 16, expand: int = 2, d_conv: int = 4):
    """:func:`nets.mamba.model`: embedding, pre-LN residual Mamba blocks, LayerNorm, a
    per-position Linear. The selective scan runs step by step over time, as the reference
    ``selective_scan_ref`` of the authors' ``mamba_ssm`` package, which is what PyTorch on a
    CPU has (its fused scan is a CUDA kernel)."""
    import torch
    from torch import nn
    F = nn.functional
    E, N, R = expand * d, d_state, math.ceil(d / 16)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm(d)
            self.in_proj = nn.Linear(d, 2 * E, bias=False)
            self.conv = nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1)
            self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
            self.dt_proj = nn.Linear(R, E)
            self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1).float().repeat(E, 1)))
            self.D = nn.Parameter(torch.ones(E))
            self.out_proj = nn.Linear(E, d, bias=False)

        def forward(self, x):  # (B, T, d)
            B, T, _ = x.shape
            u, z = self.in_proj(self.ln(x)).chunk(2, dim=-1)
            u = F.silu(self.conv(u.transpose(1, 2))[..., :T].transpose(1, 2))  # causal
            delta, Bm, Cm = self.x_proj(u).split([R, N, N], dim=-1)
            dt = F.softplus(self.dt_proj(delta))  # (B, T, E)
            A = -torch.exp(self.A_log)  # (E, N)
            a = torch.exp(dt[..., None] * A)  # (B, T, E, N)
            b = (dt * u)[..., None] * Bm[:, :, None, :]
            h = torch.zeros(B, E, N)
            ys = []
            for t in range(T):  # h_t = a_t h_{t-1} + b_t
                h = a[:, t] * h + b[:, t]
                ys.append((h * Cm[:, t, None, :]).sum(-1))
            y = torch.stack(ys, dim=1) + self.D * u
            return x + self.out_proj(y * F.silu(z))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, d)
            self.blocks = nn.Sequential(*[Block() for _ in range(layers)])
            self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, n_classes)

        def forward(self, tokens):
            return self.head(self.ln(self.blocks(self.embed(tokens))))

    return Net()


def torch_trainer(model, optimizer: str, learning_rate: float, clip: float | None = None):
    """``step(X, y)``: one eager training step (cross-entropy over the last axis; the
    gradients clipped to the global norm ``clip`` first when given)."""
    import torch
    F = torch.nn.functional
    opt = (torch.optim.Adam(model.parameters(), lr=learning_rate) if optimizer == "adam"
           else torch.optim.SGD(model.parameters(), lr=learning_rate))

    def step(X, y):
        logits = model(X)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss

    return step


def torch_matmul_flops(n: int, repeats: int) -> float:
    """PyTorch's float32 ``n x n`` matmul rate (FLOP/s), the median of ``repeats``."""
    import torch
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / float(np.median(times))


class TorchLoop:
    """The eager PyTorch loop of its tutorials over array data: a fresh random order every
    epoch, ``n // batch_size`` steps of ``torch_trainer``'s step."""

    def __init__(self, model, X, y, *, batch_size: int, optimizer: str, learning_rate: float,
                 seed: int, clip: float | None = None):
        import torch
        self.torch = torch
        torch.manual_seed(seed)
        self.step = torch_trainer(model, optimizer, learning_rate, clip)
        self.X = torch.from_numpy(np.array(X))  # a writable copy
        self.y = torch.from_numpy(np.array(y, np.int64))
        self.batch, self.steps = batch_size, X.shape[0] // batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def epochs(self, count: int) -> None:
        b = self.batch
        for _ in range(count):
            perm = self.torch.randperm(self.X.shape[0], generator=self.gen)
            for i in range(self.steps):
                idx = perm[i * b:(i + 1) * b]
                self.step(self.X[idx], self.y[idx])
