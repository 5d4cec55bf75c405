"""Long-range dependencies: RNN, LSTM, Transformer and Mamba on adding, selective copying, induction.

Three simulated tasks at growing sequence lengths ``L`` (every example drawn fresh from the
experiment's seed; ``n_train`` for training, ``n_test`` held out):

* **Adding** (Hochreiter & Schmidhuber 1997, section 5.4; the variant of Le, Jaitly &
  Hinton 2015, arXiv:1504.00941): ``L`` positions, each with two features, a value ``u_t ~
  U[0, 1]`` and a marker, 1 at one position of the first half and one of the second, 0
  elsewhere; the target is the sum of the two marked values, read from the model's last
  position (regression, squared error). Predicting 1 whatever the input scores the
  variance of the sum, ``2/12 = 0.167``: the baseline an MSE must beat.
* **Selective copying** (Gu & Dao 2023, arXiv:2312.00752, section 3.1 and Figure 2): the
  first ``L - K`` positions hold ``K = n_copy`` data tokens (of ``vocab``) at random places
  among blanks, and the last ``K`` positions a marker; at the markers the model must emit
  the data tokens in order (per-position labels, ``-1`` elsewhere: not scored). Scored by
  the share of copied tokens right.
* **Induction heads** (Olsson et al. 2022, arXiv:2209.11895; the synthetic task of Gu & Dao
  2023, section 4.1.2): ``L`` random data tokens, a trigger token at one random position
  ``p`` followed by the target at ``p + 1``, and the trigger again at the last position,
  where the model must emit the target (one scored position per sequence). Scored by
  accuracy (chance ``1 / vocab``).

The models (:mod:`nets.rnn`, :mod:`nets.transformer`, :mod:`nets.mamba`), sized to similar
parameter counts (``metrics["params"]``): an Elman RNN and an LSTM (one recurrent layer over
a ``d_model`` embedding), a causal pre-LN Transformer (``n_layers`` blocks of 2 heads,
sinusoidal positions) and Mamba (``n_layers`` S6 blocks, state ``d_state``). Token tasks
use ``vocab + 2`` input tokens (data, blank, marker/trigger) and ``vocab`` outputs at every
position; one model object (and so one compiled program) per kind and length serves both.
Every model trains through ``train.fit`` with the per-position cross-entropy (token tasks:
``objective.make(model, "cross_entropy")`` on labels ``(n, L)``) or the squared error,
Adam with gradient clipping at global norm ``clip``, the same steps for all. Mamba's
recurrence runs as ``jax.lax.scan`` (``mamba_scan="sequential"``: on this CPU it was
faster than ``associative_scan`` and compiled faster; the two compute the same function,
``tests/test_mamba.py``).

Also measured: the training cost (seconds per optimizer step, the median of ``cost_steps``
timed steps of the token model's jitted ``train.loop.make_step``, batch ``batch_size``,
after one untimed step) at ``cost_lengths``; the Transformer's attention maps on the
induction task (at the longest length where it scored at least 0.9), with two scores over
the test set: the query's attention on the token after the earlier trigger (an induction
head: last block, best head) and that token's attention on the trigger before it (a
previous-token head: first block, best head), each against uniform attention over the
past; and length generalisation: the Mamba trained at ``generalize_from``, evaluated
unchanged on sequences of every length in ``generalize_to``, with the LSTM and the
Transformer beside it (``generalize_models``).

Writes ``accuracy.png`` (test accuracy, or MSE for adding, against length, a line per
model), ``cost.png`` (seconds per step against length), ``attention.png`` (attention maps of
the Transformer on one induction example, and the scores), ``generalization.png`` (accuracy
against evaluation length, trained at one length), ``results.csv`` (task, model, length:
score, parameters, final epoch's loss), ``history.csv`` (training loss per epoch),
``cost.csv`` (seconds per step) and ``timings.json`` (training seconds per task, model and
length, compilation included, their total, and the seconds per step). Timings stay out of
``metrics.json`` and ``results.csv``, which the same seed reproduces byte for byte.

Full run: ``python -m experiments run sequence --no-progress`` (seed 0, the defaults:
lengths 16, 32, 64; vocabulary 8, K = 4 tokens to copy; 640 steps, 5 epochs of 128 steps of
32 sequences, Adam 3e-3, clipping at norm 1; 1,024 test sequences per task and length; the
same initial weights at every length). Parameters, token tasks / adding: RNN (56 units)
4,704 / 4,193, LSTM (26 units) 4,848 / 4,547, Transformer (2 blocks, width 16) 4,648 /
4,417, Mamba (2 blocks, width 16, N = 4) 4,808 / 4,577. Test scores after 640 steps:

    adding, MSE (predict 1: 0.167)   L = 16     32       64
      RNN                              0.0143   0.0385   0.166   (no better than the baseline)
      LSTM                             0.0011   0.0023   0.0111
      Transformer                      0.0010   0.0011   0.0011
      Mamba                            0.0040   0.0026   0.0040
    selective copying, accuracy (chance 0.125)
      RNN                              0.631    0.408    0.200
      LSTM                             0.781    0.671    0.600
      Transformer                      0.922    0.813    0.737
      Mamba                            0.782    0.703    0.761
    induction heads, accuracy (chance 0.125)
      RNN                              1.000    0.313    0.118
      LSTM                             1.000    0.998    0.616
      Transformer                      1.000    0.900    0.384
      Mamba                            1.000    1.000    1.000

**The Elman RNN fails first**, as Hochreiter & Schmidhuber's argument predicts: at L = 64
it is at chance on induction and at the baseline on adding, while the LSTM, the Transformer
and Mamba beat the adding baseline 15 times or more at every length. **Mamba is the one
model that solves induction heads at every length** in the budget (the LSTM drops to 0.62
and the Transformer to 0.38 at L = 64, the Transformer still on the plateau before the
induction head forms, Olsson et al.'s phase change: mean training loss 1.91 in the last
epoch, log 8 = 2.08). **Selective copying is solved by none**
within 640 steps (Gu & Dao train for far longer); the Transformer is best up to L = 32,
Mamba keeps its accuracy with length (0.78, 0.70, 0.76), the LSTM and the RNN lose theirs.
One seed and one budget: single runs at the edge of training, so differences of a few
points (Mamba's selective copying at 32 below 64) are noise, not effects.

Attention (``attention.png``, the Transformer at L = 32, accuracy 0.900): block 2 is an
induction circuit, the query (the second trigger) puts 0.84 of its weight (head 2; uniform
0.03) on the token after the first trigger, and block 1 head 1 is a previous-token head:
the target puts 0.55 of its weight on the trigger before it (uniform 0.10).

Length generalisation (``generalization.png``, trained at L = 32, tested unchanged up to
512, 16 times longer): induction, Mamba 1.000 up to 64, then 0.973, 0.930, 0.754 at 128,
256, 512; the LSTM 0.998, 0.994, 0.953; the Transformer (sinusoidal positions never seen in
training) falls at once, 0.477 at 64 and 0.160 at 512. Selective copying degrades for all
three (Mamba 0.727 at 32, 0.613, 0.468, 0.302, 0.180), Mamba least.

Cost (``cost.png``, median of 20 steps, batch 32, on the loaded CPU): L = 16 / 64 / 256:
RNN 1.0 / 2.3 / 15.8 ms, LSTM 1.3 / 3.6 / 14.1 ms, Transformer 2.7 / 10.4 / 193 ms (x72 for
16 times the length: the T x T attention), Mamba 3.9 / 15.0 / 181 ms (x46; its sequential
scan over (L, 2 d, N) states per layer, forward and backward, costs more per position than
the LSTM's on a CPU). Timings are noisy under load (a repeated run moved single points by up
to x4).

Wall time 11 min 14 s (7.5 min of CPU time) with a cold compilation cache, on the shared
2-core CPU at a load average of 8; 9.4 of the 11 minutes are the 36 training runs, mostly
compiling (24 training programs, 24 evaluations and 8 initialisations, several seconds
each under that load; the 640 steps themselves take 1-30 s per run). A second run with the
same seed gave the same scores.
"""

from __future__ import annotations

import dataclasses
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

import train
from experiments._config import (
    Annotated, Count, Distinct, Increasing, Literal, Names, NonEmpty, Positive, Range, Samples,
    Width, at_most, even)
from experiments._framework import predict as _predict
from experiments._framework import progress_enabled, write_csv, write_json
from experiments._plot import plt, savefig
from nets import losses, mamba, metrics as _metrics, objective, rnn, transformer
from nets.model import Model

TASKS = ("adding", "selective_copy", "induction")
TOKEN_TASKS = ("selective_copy", "induction")
KINDS = ("rnn", "lstm", "transformer", "mamba")
LABELS = {"rnn": "RNN", "lstm": "LSTM", "transformer": "Transformer", "mamba": "Mamba",
          "adding": "adding (MSE)", "selective_copy": "selective copying",
          "induction": "induction heads"}
BASELINE_MSE = 2.0 / 12.0  # Var(u_a + u_b), u ~ U[0, 1]: the MSE of always predicting 1
MAX_LENGTH = 4096

Lengths = Annotated[tuple[int, ...], NonEmpty(), Distinct(), Increasing(), Range(4, MAX_LENGTH)]


@dataclasses.dataclass(frozen=True)
class Config:
    tasks: Names(TASKS) = TASKS  # the tasks run
    models: Names(KINDS) = KINDS  # the models compared
    lengths: Lengths = (16, 32, 64)  # sequence lengths L trained and tested
    vocab: Annotated[int, Range(2, 256)] = 8  # data tokens (classes) of the token tasks
    n_copy: Annotated[int, Range(1, 256)] = 4  # K: tokens to copy (selective copying)
    d_model: Width = 16  # width of the Transformer and Mamba, embedding of the RNN and LSTM
    n_layers: Annotated[int, Range(1, 16)] = 2  # blocks of the Transformer and of Mamba
    d_state: Width = 4  # Mamba's state size N per channel
    rnn_hidden: Width = 56  # units of the Elman RNN (similar parameter counts)
    lstm_hidden: Width = 26  # units of the LSTM
    mamba_scan: Literal["sequential", "parallel"] = "sequential"  # Mamba's scan (same function)
    # the Transformer's backward pass: "written" (autodiff, the published numbers) or
    # "custom_vjp" (hand-derived for attention and layer norm: the same gradients to
    # rounding, about 1.4x faster training on a CPU; nets.transformer)
    transformer_impl: Literal["written", "custom_vjp"] = "written"
    n_train: Samples = 4096  # training sequences per task and length
    n_test: Samples = 1024  # test sequences per task and length
    batch_size: Samples = 32  # sequences per step
    epochs: Count = 5  # passes over the training set (n_train / batch_size steps each)
    learning_rate: Positive = 3e-3  # Adam's step
    clip: Positive = 1.0  # gradients clipped to this global norm
    cost_lengths: Lengths = (16, 64, 256)  # lengths where a training step is timed
    cost_steps: Annotated[int, Range(1, 1000)] = 20  # timed steps per model and length
    generalize_from: Annotated[int, Range(4, MAX_LENGTH)] = 32  # training length tested longer
    generalize_to: Lengths = (16, 32, 64, 128, 256, 512)  # evaluation lengths
    generalize_models: Names(("mamba", "lstm", "rnn", "transformer"), empty=True) = (
        "mamba", "lstm", "transformer")  # models tested at other lengths (among `models`)
    seed: int = 0  # data, initial weights and data order


# One model, one length: every task, file and figure, and few programs to compile (a model
# per task family: its initialisation, training epoch and evaluation; a timed step; the
# attention maps).
SMOKE = {"models": ("transformer",), "lengths": (8,), "d_model": 8, "n_layers": 1,
         "n_train": 64, "n_test": 32, "batch_size": 32, "epochs": 1, "cost_lengths": (8,),
         "cost_steps": 2, "generalize_from": 8, "generalize_to": (8,),
         "generalize_models": ("transformer",)}


def check(config: Config) -> None:
    """Checks across fields."""
    shortest = min(config.lengths + config.generalize_to)
    if "selective_copy" in config.tasks and shortest < 2 * config.n_copy:
        raise ValueError(f"n_copy: expected at most half the shortest length {shortest} "
                         f"(K tokens among L - K positions, then K markers), got "
                         f"{config.n_copy}")
    at_most(config, "batch_size", "n_train")
    even(config, "d_model", "2 attention heads")
    if config.generalize_models and config.generalize_from not in config.lengths:
        raise ValueError(f"generalize_from: expected one of lengths {config.lengths}, got "
                         f"{config.generalize_from}")
    missing = set(config.generalize_models) - set(config.models)
    if missing:
        raise ValueError(f"generalize_models: expected models among models={config.models}, "
                         f"got {sorted(missing)} too")


# --- tasks ---------------------------------------------------------------------------------


def adding(rng: np.random.Generator, n: int, L: int):
    """``X`` (n, L, 2): values ``U[0, 1]`` and markers (one in each half); ``Y`` (n, 1):
    the sum of the two marked values."""
    u = rng.uniform(0.0, 1.0, (n, L)).astype(np.float32)
    rows = np.arange(n)
    first, second = rng.integers(0, L // 2, n), rng.integers(L // 2, L, n)
    marks = np.zeros((n, L), np.float32)
    marks[rows, first] = marks[rows, second] = 1.0
    return np.stack([u, marks], axis=-1), (u[rows, first] + u[rows, second])[:, None]


def selective_copy(rng: np.random.Generator, n: int, L: int, vocab: int, K: int):
    """Tokens ``X`` (n, L): ``K`` data tokens (``0..vocab-1``) at random places among blanks
    (``vocab``) in the first ``L - K`` positions, markers (``vocab + 1``) in the last ``K``;
    labels ``Y`` (n, L): the data tokens in order at the markers, ``IGNORE`` elsewhere."""
    X = np.full((n, L), vocab, np.int32)
    Y = np.full((n, L), losses.IGNORE, np.int32)
    places = np.sort(np.argsort(rng.random((n, L - K)), axis=1)[:, :K], axis=1)  # (n, K)
    tokens = rng.integers(0, vocab, (n, K)).astype(np.int32)
    np.put_along_axis(X, places, tokens, axis=1)
    X[:, L - K:] = vocab + 1
    Y[:, L - K:] = tokens
    return X, Y


def induction(rng: np.random.Generator, n: int, L: int, vocab: int):
    """Tokens ``X`` (n, L): random data tokens, the trigger (``vocab + 1``) at a random
    ``p <= L - 3`` and at ``L - 1``; labels ``Y`` (n, L): ``X[p + 1]`` at ``L - 1``, else
    ``IGNORE``. Returns ``(X, Y, p)``."""
    X = rng.integers(0, vocab, (n, L)).astype(np.int32)
    Y = np.full((n, L), losses.IGNORE, np.int32)
    rows, p = np.arange(n), rng.integers(0, L - 2, n)
    X[rows, p] = vocab + 1
    X[:, L - 1] = vocab + 1
    Y[:, L - 1] = X[rows, p + 1]
    return X, Y, p


def make_data(task: str, config: Config, L: int, n: int, stream: int):
    """``(X, Y, extra)`` of ``task`` at length ``L``: ``n`` sequences from NumPy's generator
    seeded by ``(seed, task, L, stream)`` (``stream`` 0: training, 1: test, 2+: others)."""
    rng = np.random.default_rng([config.seed, TASKS.index(task), L, stream])
    if task == "adding":
        return (*adding(rng, n, L), None)
    if task == "selective_copy":
        return (*selective_copy(rng, n, L, config.vocab, config.n_copy), None)
    return induction(rng, n, L, config.vocab)


# --- models --------------------------------------------------------------------------------


def build(kind: str, family: str, L: int, config: Config) -> Model:
    """The ``kind`` model for ``family`` ``"token"`` (``vocab + 2`` token ids in, ``vocab``
    class scores at every position) or ``"adding"`` (2 features in, one number read at the
    last position, identity output) at length ``L``."""
    if family == "token":
        io = {"vocab_size": config.vocab + 2, "n_classes": config.vocab, "readout": "all"}
    else:
        io = {"d_in": 2, "n_classes": 1, "readout": "last"}
    d = config.d_model
    if kind == "rnn":
        net = rnn.model(seq_len=L, d_model=d, d_hidden=config.rnn_hidden, cell="rnn", **io)
    elif kind == "lstm":
        net = rnn.model(seq_len=L, d_model=d, d_hidden=config.lstm_hidden, cell="lstm", **io)
    elif kind == "transformer":
        net = transformer.model(seq_len=L, d_model=d, n_heads=2, n_layers=config.n_layers,
                                d_mlp=2 * d, impl=config.transformer_impl, **io)
    elif kind == "mamba":
        net = mamba.model(seq_len=L, d_model=d, n_layers=config.n_layers,
                          d_state=config.d_state, scan=config.mamba_scan, **io)
    else:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    return dataclasses.replace(net, output="identity") if family == "adding" else net


def n_params(net: Model) -> int:
    return int(sum(np.prod(s.shape) for s in jax.tree.leaves(net._abstract[1])))


def _key(config: Config, *parts) -> jax.Array:
    """A key for ``parts`` (names and numbers), folded into the run's seed."""
    return jax.random.fold_in(jax.random.key(config.seed),
                              zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF)


def score(task: str, Z: np.ndarray, Y: np.ndarray) -> float:
    """MSE (adding) or accuracy over the scored positions (token tasks)."""
    if task == "adding":
        return float(_metrics.mean_squared_error(Z, Y))
    return float(_metrics.accuracy(Z, Y))


def _seconds_per_step(obj, optimizer, params, X, Y, steps: int) -> float:
    """Median seconds of one optimizer step (``train.loop.make_step``, jitted) on the batch
    ``(X, Y)``, over ``steps`` timed calls after one untimed call (compilation)."""
    step = train.loop.make_step(obj, optimizer)
    state = train.loop.init_state(params, optimizer)
    key = jax.random.key(0)
    state, m = step(state, (X, Y), key)
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, m = step(state, (X, Y), key)
        jax.block_until_ready((state.params, m))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# --- run -------------------------------------------------------------------------------------


def run(config: Config, outdir) -> dict:
    check(config)
    optimizer = optax.chain(optax.clip_by_global_norm(config.clip),
                            optax.adam(config.learning_rate))  # one object: programs reused
    families = [f for f in ("adding", "token")
                if f == "adding" and "adding" in config.tasks
                or f == "token" and set(TOKEN_TASKS) & set(config.tasks)]
    nets, objs, trained, inits = {}, {}, {}, {}
    results, history, run_seconds = [], [], {}
    start = time.perf_counter()
    for L in config.lengths:
        data = {task: (make_data(task, config, L, config.n_train, 0),
                       make_data(task, config, L, config.n_test, 1)) for task in config.tasks}
        for kind in config.models:
            for family in families:
                net = build(kind, family, L, config)
                nets[kind, family, L] = net
                objs[kind, family, L] = objective.make(
                    net, "squared_error" if family == "adding" else "cross_entropy")
                if (kind, family) not in inits:  # no parameter depends on L: one init
                    inits[kind, family] = net.init(_key(config, "init", kind, family))[0]
            for task in config.tasks:
                family = "adding" if task == "adding" else "token"
                net, obj = nets[kind, family, L], objs[kind, family, L]
                params = inits[kind, family]
                (X, Y, _), (Xt, Yt, _) = data[task]
                t0 = time.perf_counter()
                fit = train.fit(obj, params, (X, Y), optimizer=optimizer,
                                epochs=config.epochs, batch_size=config.batch_size,
                                key=_key(config, "order", task, kind, L),
                                progress=progress_enabled())
                seconds = time.perf_counter() - t0
                trained[task, kind, L] = fit.params
                value = score(task, _predict(net, fit.params, Xt), Yt)
                run_seconds[f"{task}/{kind}/{L}"] = seconds
                results.append({"task": task, "model": kind, "length": L, "score": value,
                                "params": n_params(net),
                                "final_loss": fit.history["loss"][-1]})
                history += [{"task": task, "model": kind, "length": L, "epoch": e + 1,
                             "loss": v} for e, v in enumerate(fit.history["loss"])]
                print(f"  {task:15s} {LABELS[kind]:12s} L={L:<5d} "
                      f"{'MSE' if task == 'adding' else 'accuracy'} {value:.4f}  "
                      f"({seconds:.1f} s)", flush=True)
    train_seconds = time.perf_counter() - start

    cost = _cost(config, optimizer, nets, objs, inits)
    out = {"lengths": list(config.lengths), "baseline_mse": BASELINE_MSE,
           "chance_accuracy": 1.0 / config.vocab, "steps": config.epochs * (
               config.n_train // config.batch_size),
           "params": {kind: {family: n_params(nets[kind, family, config.lengths[0]])
                             for family in families} for kind in config.models}}
    for task in config.tasks:
        out[task] = {kind: {str(r["length"]): r["score"] for r in results
                            if r["task"] == task and r["model"] == kind}
                     for kind in config.models}
    write_csv(outdir / "results.csv", results)
    write_csv(outdir / "history.csv", history)
    write_csv(outdir / "cost.csv", [{"model": k, "length": L, "seconds_per_step": s}
                                    for (k, L), s in cost.items()])
    write_json(outdir / "timings.json", {
        "train_seconds": train_seconds, "train_seconds_per_run": run_seconds,
        "seconds_per_step": {kind: {str(L): s for (k, L), s in cost.items() if k == kind}
                             for kind in config.models},
        "device": str(jax.devices()[0])})
    _plot_scores(config, out, outdir / "accuracy.png")
    _plot_cost(config, cost, outdir / "cost.png")
    if "induction" in config.tasks and "transformer" in config.models:
        out["attention"] = _attention(config, nets, trained, out, outdir / "attention.png")
    if config.generalize_models and set(TOKEN_TASKS) & set(config.tasks):
        out["generalization"] = _generalization(config, nets, trained,
                                                outdir / "generalization.png")
    return out


def _cost(config: Config, optimizer, nets, objs, inits) -> dict:
    """Median seconds per step of each model's token program (adding's when no token task
    runs) at ``cost_lengths``, on a batch of selective-copying (or adding) data, from the
    initial weights."""
    family = "token" if set(TOKEN_TASKS) & set(config.tasks) else "adding"
    task = "adding" if family == "adding" else "selective_copy"
    cost = {}
    for L in config.cost_lengths:
        if task == "selective_copy" and L < 2 * config.n_copy:
            continue
        X, Y, _ = make_data(task, config, L, config.batch_size, 3)
        for kind in config.models:
            net = nets.get((kind, family, L)) or build(kind, family, L, config)
            obj = objs.get((kind, family, L)) or objective.make(
                net, "squared_error" if family == "adding" else "cross_entropy")
            params = inits[kind, family]
            cost[kind, L] = _seconds_per_step(obj, optimizer, params, X, Y, config.cost_steps)
            print(f"  cost {LABELS[kind]:12s} L={L:<5d} {1e3 * cost[kind, L]:.1f} ms/step",
                  flush=True)
    return cost


@jax.jit
def _maps_all(params, X):
    """Attention maps of every block for a batch ``X`` (n, L): a list of (n, H, L, L)."""
    return jax.vmap(lambda x: transformer.attention_maps(params, x, n_heads=2))(X)


def _attention(config: Config, nets, trained, out, path) -> dict:
    """The Transformer trained on induction at the longest length where it scored at least
    0.9 (else where it scored best): its attention maps on the test sequences and two
    scores."""
    scores = out["induction"]["transformer"]
    good = [L for L in config.lengths if scores[str(L)] >= 0.9]
    L = max(good) if good else max(config.lengths, key=lambda L: (scores[str(L)], L))
    params = trained["induction", "transformer", L]
    X, Y, p = make_data("induction", config, L, config.n_test, 1)
    maps = [np.asarray(P) for P in _maps_all(params, X)]  # blocks x (n, H, L, L)
    rows = np.arange(len(X))
    # the query (the second trigger, last position) attending to the token after the first
    # trigger, last block: an induction head
    induction_mass = maps[-1][rows, :, L - 1, p + 1].mean(0)  # (H,)
    # the token after the trigger attending to the trigger, first block: what tells that
    # position "the trigger came before me" (Olsson et al.'s previous-token head)
    previous_mass = maps[0][rows, :, p + 1, p].mean(0)  # (H,)
    Z = _predict(nets["transformer", "token", L], params, X)  # the test run's program
    result = {"length": L, "accuracy": scores[str(L)],
              "induction_attention": float(induction_mass.max()),
              "induction_head": int(np.argmax(induction_mass)),
              "uniform_at_query": 1.0 / L,
              "previous_token_attention": float(previous_mass.max()),
              "previous_token_head": int(np.argmax(previous_mass)),
              "uniform_at_target": float(np.mean(1.0 / (p + 2)))}
    _plot_attention(config, maps, X, p, Z, result, path)
    return result


def _generalization(config: Config, nets, trained, path) -> dict:
    """Models trained at ``generalize_from`` on the token tasks, tested at ``generalize_to``."""
    L0 = config.generalize_from
    out = {"train_length": L0}
    for kind in config.generalize_models:
        out[kind] = {}
        for L in config.generalize_to:
            net = nets.get((kind, "token", L)) or build(kind, "token", L, config)
            for task in TOKEN_TASKS:
                if task not in config.tasks:
                    continue
                n = min(config.n_test, 512)
                X, Y, _ = make_data(task, config, L, n, 2)
                Z = _predict(net, trained[task, kind, L0], X, chunk=min(128, n))
                out[kind].setdefault(task, {})[str(L)] = score(task, Z, Y)
            print(f"  generalization {LABELS[kind]:12s} trained at L={L0}, tested at L={L}: "
                  + ", ".join(f"{t} {out[kind][t][str(L)]:.3f}" for t in out[kind]), flush=True)
    _plot_generalization(config, out, path)
    return out


# --- figures -------------------------------------------------------------------------------


def _plot_scores(config: Config, out: dict, path) -> None:
    tasks = list(config.tasks)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.8), squeeze=False,
                             layout="constrained")
    for ax, task in zip(axes[0], tasks):
        for i, kind in enumerate(config.models):
            y = [out[task][kind][str(L)] for L in config.lengths]
            ax.plot(config.lengths, y, marker="o", color=f"C{KINDS.index(kind)}",
                    label=LABELS[kind])
        if task == "adding":
            _baseline(ax, BASELINE_MSE, f"predict 1: {BASELINE_MSE:.3f}", below=True)
            ax.set_yscale("log")
            ax.set_ylabel("test MSE (lower is better)")
        else:
            _baseline(ax, 1.0 / config.vocab, f"chance: 1/{config.vocab}")
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel("test accuracy (scored positions)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(config.lengths, [str(L) for L in config.lengths])
        ax.set_xlabel("sequence length L")
        ax.set_title(LABELS[task])
        ax.grid(alpha=0.3)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center",
               ncol=len(config.models), fontsize=9)
    steps = config.epochs * (config.n_train // config.batch_size)
    fig.suptitle(f"After {steps} Adam steps of {config.batch_size} sequences "
                 f"(lr {config.learning_rate:g}), every model and length alike", fontsize=10)
    savefig(fig, path)


def _baseline(ax, y: float, text: str, *, below: bool = False) -> None:
    """A dashed horizontal line at ``y``, labelled on (or ``below``) the line."""
    ax.axhline(y, color="0.4", linestyle="--", linewidth=1)
    ax.annotate(text, (0.02, y), xycoords=("axes fraction", "data"),
                xytext=(0, -10 if below else 3), textcoords="offset points", fontsize=8,
                color="0.3")


def _plot_cost(config: Config, cost: dict, path) -> None:
    fig, ax = plt.subplots(figsize=(5.6, 4.0), layout="constrained")
    for kind in config.models:
        Ls = [L for (k, L) in cost if k == kind]
        ax.plot(Ls, [1e3 * cost[kind, L] for L in Ls], marker="o",
                color=f"C{KINDS.index(kind)}", label=LABELS[kind])
    Ls = sorted({L for _, L in cost})
    if len(Ls) > 1:  # guides: cost proportional to L and to L^2 from the median first point
        first = 1e3 * float(np.median([cost[k, Ls[0]] for k in config.models]))
        grid = np.array([Ls[0], Ls[-1]], float)
        for power, style in ((1, ":"), (2, "--")):
            ax.plot(grid, first * (grid / Ls[0]) ** power, color="0.6", linestyle=style,
                    linewidth=1, label=f"proportional to L{'' if power == 1 else '^2'}")
    ax.set(xscale="log", yscale="log", xlabel="sequence length L",
           ylabel="milliseconds per training step (median)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(Ls, [str(L) for L in Ls])
    ax.set_title(f"Training cost: one Adam step on {config.batch_size} sequences\n"
                 f"(CPU; Mamba's scan: {config.mamba_scan})", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    savefig(fig, path)


def _plot_attention(config, maps, X, p, Z, result, path) -> None:
    """Every head of every block on a test sequence whose trigger is near the middle; the
    trigger, the target after it and the query marked."""
    L = X.shape[1]
    blocks, heads = len(maps), maps[0].shape[1]
    fig, axes = plt.subplots(blocks, heads, figsize=(3.6 * heads, 3.4 * blocks + 0.6),
                             squeeze=False, layout="constrained")
    i = int(np.argmin(np.abs(p - L // 2)))  # a trigger in the middle: both parts visible
    target, pred = X[i, p[i] + 1], int(np.argmax(Z[i, L - 1]))
    for b in range(blocks):
        for h in range(heads):
            ax = axes[b, h]
            image = ax.imshow(maps[b][i, h], cmap="magma", vmin=0, vmax=1,
                              interpolation="nearest")
            ax.scatter([p[i] + 1], [L - 1], s=60, facecolors="none", edgecolors="cyan",
                       linewidths=1.5)
            if b == 0:
                ax.scatter([p[i]], [p[i] + 1], s=60, facecolors="none", edgecolors="lime",
                           linewidths=1.5)
            ax.axvline(p[i], color="cyan", linewidth=0.6, linestyle=":")
            ax.set_title(f"block {b + 1}, head {h + 1}", fontsize=9)
            ax.set_xlabel("key position s", fontsize=8)
            ax.set_ylabel("query position t", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.7, label="attention weight P[t, s]")
    fig.suptitle(
        f"Transformer on induction heads, L = {L}, test accuracy {result['accuracy']:.3f}\n"
        f"This sequence: trigger at s = {p[i]} (dotted), target token {target} at s = "
        f"{p[i] + 1}, query at t = {L - 1}, predicted {pred}; circles: query -> target "
        f"(cyan), target -> trigger (green)\nMeans over {config.n_test} test sequences: "
        f"query -> target, block {blocks} head {result['induction_head'] + 1}: "
        f"{result['induction_attention']:.2f} (uniform {result['uniform_at_query']:.2f}); "
        f"target -> trigger, block 1 head {result['previous_token_head'] + 1}: "
        f"{result['previous_token_attention']:.2f} (uniform "
        f"{result['uniform_at_target']:.2f})", fontsize=9)
    savefig(fig, path)


def _plot_generalization(config: Config, out: dict, path) -> None:
    tasks = [t for t in TOKEN_TASKS if t in config.tasks]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.8 * len(tasks), 3.8), squeeze=False,
                             layout="constrained")
    Ls = list(config.generalize_to)
    for ax, task in zip(axes[0], tasks):
        for kind in config.generalize_models:
            ax.plot(Ls, [out[kind][task][str(L)] for L in Ls], marker="o",
                    color=f"C{KINDS.index(kind)}", label=LABELS[kind])
        ax.axvline(out["train_length"], color="0.4", linestyle=":",
                   label=f"training length {out['train_length']}")
        _baseline(ax, 1.0 / config.vocab, f"chance: 1/{config.vocab}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(Ls, [str(L) for L in Ls])
        ax.set(ylim=(-0.02, 1.02), xlabel="test sequence length L", ylabel="test accuracy",
               title=LABELS[task])
        ax.grid(alpha=0.3)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center",
               ncol=len(config.generalize_models) + 1, fontsize=9)
    fig.suptitle("Length generalisation: trained at one length, tested unchanged at others",
                 fontsize=10)
    savefig(fig, path)
