"""Speed on an accelerator: shares of the measured matmul peak, a 1,024-model sweep, bf16 MFU.

Issue 10's GPU rows, for a machine with a GPU (an NVIDIA H100 or H200): the CPU benchmark
(``experiments/benchmark.py``) compares the library with its peers on the 2-core CPU; this
one measures the library against the accelerator itself, in one process, with the
repetitions interleaved and medians quoted (the helpers are the CPU benchmark's):

* **Matmul peaks**: square ``jnp.dot`` products of ``matmul_sizes``, in float32 at JAX's
  default precision (which XLA may run on TF32 tensor cores; the gap to the next row
  says), float32 at ``precision="highest"`` and bfloat16; ``peak_calls`` products
  dispatched back to back per timing, the fastest size's median rate is the peak of that
  dtype.
* **W2** (the CPU benchmark's 784-1024-1024-10 ReLU MLP, SGD, random data) at each batch
  size of ``w2_batches``, in float32 and in bfloat16 (weights and inputs cast inside the
  loss; float32 master weights and updates): steps per second, the achieved FLOP/s of the
  exact matmul count (``benchmark.mlp_step_flops``) and its share of that dtype's peak.
* **Sweep**: ``sweep_lambdas x sweep_seeds`` digits models (W1's 64-100-10, lambda
  geometric in [1e-5, 1e-2], ``sweep_epochs`` epochs; a seed is one key for the initial
  weights and the data order of its lambdas, so the sweep steps each seed's models as one
  group) trained by ONE ``train.sweep`` against a Python loop of ``train.fit``; the loop's time is that of its first
  ``loop_models`` fits scaled to all models (``loop_models = 0``: the whole loop), which
  the table says.
* **Transformer MFU**: ``nets.transformer.model`` (``tf_layers`` pre-LN blocks of width
  ``tf_width``, ``tf_heads`` heads, MLP ``4 tf_width``, causal, ``tf_len`` tokens of
  ``tf_vocab`` ids, batch ``tf_batch``) trained by ``train.fit`` with Adam in bfloat16
  (weights cast inside the loss), each attention ``impl`` of ``tf_impls``. Model FLOPs per
  token ``6 N + 12 L T d`` (Chowdhery et al. 2022, PaLM, appendix B: ``N`` the weights of
  the matrix products, embedding excluded; attention counted in full, causal or not);
  MFU = model FLOP/s / the bfloat16 peak.

It refuses to run on a CPU (``allow_cpu=false``): the CPU rows are the other benchmark's.
The smoke run (``--smoke``, the tests) allows the CPU at toy sizes, to check that it runs
and writes its files; its numbers mean nothing.

Files: ``table.md`` (the device named), ``results.json`` (every repetition), ``shares.png``
(the shares of the peak and the MFU as bars).

Not run yet: no GPU was lent to this project's sessions so far. The command for one::

    python -m experiments run benchmark-gpu
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Literal

import numpy as np

from experiments._config import Annotated, Distinct, NonEmpty, OneOf, Range, Samples, Width, Widths

IMPLS = ("written", "jax", "custom_vjp")  # nets.transformer.IMPLS, without importing jax
DTYPES = ("float32", "float32_highest", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Config:
    repeats: Annotated[int, Range(1, 100)] = 5  # interleaved repetitions (medians quoted)
    matmul_sizes: Widths = (4096, 8192)  # square products for the peaks (the fastest size)
    peak_calls: Annotated[int, Range(1, 1000)] = 10  # products dispatched per timing
    w2_sizes: Widths = (784, 1024, 1024, 10)  # W2's widths, input to output
    w2_batches: Annotated[tuple[int, ...], NonEmpty(), Distinct(), Range(1, 1_000_000)] = (
        256, 4096)  # W2's batch sizes, each timed in float32 and bfloat16
    w2_steps: Annotated[int, Range(1, 10_000)] = 20  # steps per epoch (the data: random)
    w2_epochs: Annotated[int, Range(1, 10_000)] = 20  # E: steady = (t(2E) - t(E)) / E
    sweep_lambdas: Annotated[int, Range(1, 1024)] = 32  # lambdas (geometric in [1e-5, 1e-2])
    sweep_seeds: Annotated[int, Range(1, 1024)] = 32  # initial weights and orders per lambda
    sweep_epochs: Annotated[int, Range(1, 10_000)] = 20  # epochs of every model
    loop_models: Annotated[int, Range(0, 1_000_000)] = 64  # fits timed in the loop; 0: all
    tf_width: Width = 1024  # d_model
    tf_heads: Annotated[int, Range(1, 256)] = 16  # attention heads (tf_width a multiple)
    tf_layers: Annotated[int, Range(1, 128)] = 8  # pre-LN Transformer blocks
    tf_len: Annotated[int, Range(2, 65_536)] = 1024  # tokens per sequence
    tf_vocab: Annotated[int, Range(2, 1_000_000)] = 256  # token ids = classes
    tf_batch: Samples = 16  # sequences per step
    tf_steps: Annotated[int, Range(1, 10_000)] = 8  # steps per epoch
    tf_epochs: Annotated[int, Range(1, 10_000)] = 2  # E: steady = (t(2E) - t(E)) / E
    # the attention implementations timed (nets.transformer.model's impl)
    tf_impls: Annotated[tuple[str, ...], NonEmpty(), Distinct(), OneOf(IMPLS)] = IMPLS
    allow_cpu: bool = False  # run on a CPU backend too (the smoke run: toy sizes)
    seed: int = 0  # initial weights, random data and data order


SMOKE = {"repeats": 1, "matmul_sizes": (32,), "peak_calls": 2, "w2_sizes": (16, 32, 10),
         "w2_batches": (8,), "w2_steps": 2, "w2_epochs": 1, "sweep_lambdas": 2, "sweep_seeds": 2,
         "sweep_epochs": 1, "loop_models": 2, "tf_width": 8, "tf_heads": 2, "tf_layers": 1,
         "tf_len": 8, "tf_vocab": 4, "tf_batch": 2, "tf_steps": 2, "tf_epochs": 1, "tf_impls": ("written",),
         "allow_cpu": True}


def check(config: Config) -> None:
    """The width splits into the heads; the backend is an accelerator unless ``allow_cpu``."""
    if config.tf_width % config.tf_heads:
        raise ValueError(f"tf_width: expected a multiple of tf_heads = {config.tf_heads}, "
                         f"got {config.tf_width}")
    if not config.allow_cpu:
        import jax
        if jax.default_backend() == "cpu":
            raise ValueError("allow_cpu: JAX's default backend here is the CPU, and this "
                             "benchmark measures an accelerator (the CPU rows are `python -m "
                             "experiments run benchmark`); --set allow_cpu=true runs it anyway")


def transformer_flops_per_token(width: int, layers: int, seq_len: int, vocab: int) -> int:
    """Model FLOPs of one training token, ``6 N + 12 L T d`` (PaLM, appendix B): ``N =
    L (4 d^2 + 2 d d_mlp) + d V`` the weights of the products (q, k, v, o; the MLP with
    ``d_mlp = 4 d``; the read-out), ``12 L T d`` the attention's scores and mixing."""
    n = layers * (4 * width ** 2 + 2 * width * 4 * width) + width * vocab
    return 6 * n + 12 * layers * seq_len * width


def _peaks(config: Config) -> dict:
    """``{dtype: benchmark.Peak.summary()}``: each dtype's products timed back to back,
    the dtypes interleaved over the repetitions."""
    import jax.numpy as jnp

    from experiments.benchmark import Peak, _rotated
    peaks = {"float32": Peak(config.matmul_sizes),
             "float32_highest": Peak(config.matmul_sizes, precision="highest"),
             "bfloat16": Peak(config.matmul_sizes, dtype=jnp.bfloat16)}
    for r in range(config.repeats):
        for name in _rotated(peaks, r):
            peaks[name].measure(config.peak_calls, together=True)
    return {name: peak.summary() for name, peak in peaks.items()}


def _cast(tree, dtype):
    import jax
    import jax.numpy as jnp
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating)
                        else a, tree)


def _in_bfloat16(loss):
    """``loss`` on weights and inputs cast to bfloat16 (the gradient flows to float32)."""
    import jax.numpy as jnp

    def cast_loss(params, X, y):
        X = X.astype(jnp.bfloat16) if jnp.issubdtype(X.dtype, jnp.floating) else X
        return loss(_cast(params, jnp.bfloat16), X, y).astype(jnp.float32)
    return cast_loss


def _w2(config: Config, peaks: dict, log) -> list[dict]:
    import jax
    import jax.numpy as jnp

    import train
    from experiments import _benchmark_systems as systems
    from experiments.benchmark import _Fit, _median, _rotated, _steady, mlp_step_flops
    from nets import mlp
    sizes, steps = tuple(config.w2_sizes), config.w2_steps
    params = mlp.init(jax.random.key(config.seed), sizes, scheme="he")
    loss = systems.mlp_loss()
    losses = {"float32": loss, "bfloat16": _in_bfloat16(loss)}
    trainers = {}
    for b in config.w2_batches:
        kx, ky = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), b))
        X = jax.random.normal(kx, (b * steps, sizes[0]), jnp.float32)  # on the device
        y = jax.random.randint(ky, (b * steps,), 0, sizes[-1], jnp.int32)
        for dtype, fn in losses.items():
            t = _Fit(fn, params, (X, y), optimizer=train.sgd(0.01), batch_size=b,
                     seed=config.seed)
            t.epochs(1)
            t.epochs(2)  # both programs compiled
            trainers[b, dtype] = t
    raw = {key: [] for key in trainers}
    for r in range(config.repeats):
        for key in _rotated(trainers, r):
            raw[key].append(_steady(trainers[key], config.w2_epochs, True)[0] / steps)
    rows = []
    for (b, dtype), times in raw.items():
        flops = mlp_step_flops(sizes, b)
        step = _median(times)
        rows.append({"batch": b, "dtype": dtype, "raw_step_s": times, "steps_per_s": 1 / step,
                     "flops_per_step": flops, "flops_per_s": flops / step,
                     "share_of_peak": flops / step / peaks[dtype]["peak"]})
        log(f"W2 batch {b} {dtype}: {1 / step:,.0f} steps/s, {flops / step / 1e12:.1f} TFLOP/s "
            f"= {100 * rows[-1]['share_of_peak']:.1f}% of the {dtype} peak")
    return rows


def _sweep(config: Config, log) -> dict:
    from experiments.benchmark import w3_measure
    m = w3_measure({"lambdas": config.sweep_lambdas, "seeds": config.sweep_seeds,
                    "epochs": config.sweep_epochs, "repeats": config.repeats,
                    "seed": config.seed, "matmul_sizes": list(config.matmul_sizes),
                    "loop_models": config.loop_models})
    m["speedup"] = m["loop_s"] / m["sweep_s"]
    log(f"sweep of {m['models']} models: {m['sweep_s']:.2f} s, loop {m['loop_s']:.1f} s "
        f"(from {m['loop_timed_models']} fits): {m['speedup']:.1f}x; "
        f"{100 * m['share_of_peak']:.1f}% of the float32 peak")
    return m


def _transformer(config: Config, peaks: dict, log) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import optax

    from experiments.benchmark import _Fit, _median, _rotated, _steady
    from nets import objective, transformer
    T, d, V, B = config.tf_len, config.tf_width, config.tf_vocab, config.tf_batch
    rng = np.random.default_rng(config.seed)
    X = rng.integers(0, V, (B * config.tf_steps, T)).astype(np.int32)
    y = np.concatenate([np.zeros((len(X), 2), np.int32), X[:, :-2]], axis=1)  # x_{t-2}
    X, y = jnp.asarray(X), jnp.asarray(y)
    trainers = {}
    for impl in config.tf_impls:
        model = transformer.model(vocab_size=V, n_classes=V, seq_len=T, d_model=d,
                                  n_heads=config.tf_heads, n_layers=config.tf_layers,
                                  d_mlp=4 * d, impl=impl)
        params, _ = model.init(jax.random.key(config.seed))
        t = _Fit(_in_bfloat16(objective.make(model)), params, (X, y),
                 optimizer=optax.adam(1e-4), batch_size=B, seed=config.seed)
        t.epochs(1)
        t.epochs(2)
        trainers[impl] = t
    raw = {impl: [] for impl in trainers}
    for r in range(config.repeats):
        for impl in _rotated(trainers, r):
            raw[impl].append(_steady(trainers[impl], config.tf_epochs, True)[0]
                             / config.tf_steps)
    per_token = transformer_flops_per_token(d, config.tf_layers, T, V)
    rows = []
    for impl, times in raw.items():
        step = _median(times)
        flops = per_token * B * T / step
        rows.append({"impl": impl, "raw_step_s": times, "tokens_per_s": B * T / step,
                     "model_flops_per_token": per_token, "model_flops_per_s": flops,
                     "mfu": flops / peaks["bfloat16"]["peak"]})
        log(f"Transformer ({impl} attention), bfloat16: {B * T / step:,.0f} tokens/s, "
            f"{flops / 1e12:.1f} TFLOP/s of model FLOPs: MFU {100 * rows[-1]['mfu']:.1f}%")
    return rows


def _markdown(results: dict) -> str:
    cfg, dev = results["config"], results["device"]
    lines = [f"*{dev['kind']} ({dev['platform']}, {dev['count']} device(s) visible, this "
             f"benchmark uses one); `python -m experiments run benchmark-gpu`, "
             f"{results['date']}, {results['seconds']:.0f} s; "
             + ", ".join(f"{k} {v}" for k, v in results["versions"].items())
             + f". Medians of {cfg['repeats']} interleaved repetitions.*", ""]
    if dev["platform"] == "cpu":
        lines += ["**Ran on a CPU (allow_cpu): these numbers do not measure an accelerator.**",
                  ""]
    lines += ["## Matmul peaks (square `jnp.dot`)", "",
              "| dtype | " + " | ".join(f"n = {n} TFLOP/s" for n in cfg["matmul_sizes"])
              + " | peak TFLOP/s |", "| --- |" + " ---: |" * (len(cfg["matmul_sizes"]) + 1)]
    for name, p in results["peaks"].items():
        lines.append(f"| {name} | " + " | ".join(
            f"{p['rates'][n] / 1e12:.1f}" for n in cfg["matmul_sizes"])
            + f" | {p['peak'] / 1e12:.1f} |")
    lines += ["", f"## W2: MLP {'-'.join(map(str, cfg['w2_sizes']))}, SGD", "",
              "| batch | dtype | steps/s | TFLOP/s | share of that dtype's peak |",
              "| ---: | --- | ---: | ---: | ---: |"]
    for r in results["w2"]:
        lines.append(f"| {r['batch']} | {r['dtype']} | {r['steps_per_s']:,.0f} | "
                     f"{r['flops_per_s'] / 1e12:.2f} | {100 * r['share_of_peak']:.1f}% |")
    s = results["sweep"]
    loop = ("the whole loop" if s["loop_timed_models"] == s["models"] else
            f"the first {s['loop_timed_models']} fits, scaled to {s['models']}")
    lines += ["", f"## Sweep: {s['models']} digits models (64-100-10), "
              f"{cfg['sweep_epochs']} epochs", "",
              "| train.sweep s | loop of train.fit s | speed-up | sweep's share of the "
              "float32 peak |", "| ---: | ---: | ---: | ---: |",
              f"| {s['sweep_s']:.2f} | {s['loop_s']:.1f} | {s['speedup']:.1f}x | "
              f"{100 * s['share_of_peak']:.2f}% |", "", f"Loop time: {loop}."]
    lines += ["", f"## Transformer in bfloat16: {cfg['tf_layers']} layers, width "
              f"{cfg['tf_width']}, {cfg['tf_heads']} heads, {cfg['tf_len']} tokens, batch "
              f"{cfg['tf_batch']}", "",
              "| attention impl | tokens/s | model TFLOP/s | MFU (of the bfloat16 peak) |",
              "| --- | ---: | ---: | ---: |"]
    for r in results["transformer"]:
        lines.append(f"| {r['impl']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['model_flops_per_s'] / 1e12:.1f} | {100 * r['mfu']:.1f}% |")
    return "\n".join(lines) + "\n"


def _plot(results: dict, path) -> None:
    from experiments._plot import plt, savefig
    bars = [(f"W2 batch {r['batch']}, {r['dtype']}", r["share_of_peak"]) for r in results["w2"]]
    bars.append((f"sweep of {results['sweep']['models']} models, float32",
                 results["sweep"]["share_of_peak"]))
    bars += [(f"Transformer MFU, bfloat16 ({r['impl']} attention)", r["mfu"])
             for r in results["transformer"]]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(bars) + 1.4))
    ax.barh(range(len(bars)), [max(100 * v, 0) for _, v in bars], color="C0")
    ax.set_yticks(range(len(bars)), [name for name, _ in bars], fontsize=9)
    ax.invert_yaxis()
    for i, (_, v) in enumerate(bars):
        ax.text(max(100 * v, 0), i, f" {100 * v:.1f}%", va="center", fontsize=8)
    ax.set_xlim(0, max(110, 115 * max(v for _, v in bars)))
    ax.set_xlabel("share of the measured matmul peak of the dtype (%)")
    ax.set_title(f"{results['device']['kind']}: the library's share of the matmul peak",
                 fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    savefig(fig, path)


def run(config: Config, outdir) -> dict:
    import jax

    from experiments import _benchmark_report as report
    from experiments.benchmark import _versions
    outdir = Path(outdir)
    started = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {text}", flush=True)

    device = jax.devices()[0]
    results = {"config": dataclasses.asdict(config), "versions": _versions(),
               "date": time.strftime("%Y-%m-%d"),
               "device": {"kind": device.device_kind, "platform": device.platform,
                          "count": jax.device_count()}}
    log(f"device: {device.device_kind} ({device.platform})")
    results["peaks"] = _peaks(config)
    log("peaks (TFLOP/s): " + ", ".join(f"{k} {v['peak'] / 1e12:.1f}"
                                        for k, v in results["peaks"].items()))
    results["w2"] = _w2(config, results["peaks"], log)
    results["sweep"] = _sweep(config, log)
    results["transformer"] = _transformer(config, results["peaks"], log)
    results["seconds"] = time.perf_counter() - started
    (outdir / "results.json").write_text(json.dumps(report.jsonable(results), indent=1,
                                                    sort_keys=True) + "\n")
    (outdir / "table.md").write_text(_markdown(results))
    _plot(results, outdir / "shares.png")
    return {"device": device.device_kind,
            "w2_share_of_peak": {f"{r['batch']}_{r['dtype']}": r["share_of_peak"]
                                 for r in results["w2"]},
            "sweep_speedup": results["sweep"]["speedup"],
            "sweep_share_of_peak": results["sweep"]["share_of_peak"],
            "transformer_mfu": {r["impl"]: r["mfu"] for r in results["transformer"]},
            "peak_tflops": {k: v["peak"] / 1e12 for k, v in results["peaks"].items()}}
