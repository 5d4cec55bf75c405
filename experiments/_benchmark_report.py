"""The ``benchmark`` experiment's report: the targets of issue 10, the Markdown tables, the
bar chart of the ratios and the headline metrics, all from the results dict of
:func:`experiments.benchmark.run`."""

from __future__ import annotations

import datetime
import math

import numpy as np

from experiments import _benchmark_systems as systems
from experiments import benchmark as B


def jsonable(results: dict):
    from experiments._framework import to_jsonable
    return to_jsonable(results)


def _ok(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def _row(name, target, value, met, unit="x", note="", each=None):
    """``each``: the value in every repetition (paired: peer and library timed in the same
    repetition), whose range the table shows beside the median."""
    each = [v for v in (each or []) if _ok(v)]
    spread = [min(each), max(each)] if each else None
    return {"name": name, "target": target, "value": value, "unit": unit, "met": met,
            "note": note, "spread": spread}


def _ratios(raw: dict, peer: str, mine: str = "library") -> list:
    """Per-repetition ratios ``raw[peer][r] / raw[mine][r]``: the library's speed-up."""
    return [a / b for a, b in zip(raw.get(peer, []), raw.get(mine, [])) if b]


def targets(results: dict) -> list[dict]:
    """Each target of the issue: ``name``, ``target`` (text), ``value``, ``met`` (True,
    False, or None when it could not be measured: a peer not installed, a part skipped)."""
    rows = []
    skipped = results.get("skipped", {})
    no_torch = f"skipped: {skipped.get('torch', 'torch not in config.peers')}"
    w1 = results["w1"]
    for peer, goal in B.W1_TARGETS.items():
        name = f"W1 steady epoch: library vs {systems.LABELS[peer]}"
        if peer in w1["speedup"]:
            v = w1["speedup"][peer]
            rows.append(_row(name, f">= {goal:g}x", v, bool(v >= goal),
                             each=_ratios(w1["raw_steady_ms"], peer)))
        else:
            why = skipped.get(peer, "not in config.peers")
            rows.append(_row(name, f">= {goal:g}x", None, None, note=f"skipped: {why}"))
    if "startup" in results:
        v = results["startup"]["median"]["cached"]["process_s"]
        rows.append(_row("cached rerun of digits, whole process", f"< {B.STARTUP_TARGET_S:g} s",
                         v, bool(v < B.STARTUP_TARGET_S), unit="s",
                         each=[r["process_s"] for r in results["startup"]["raw"]["cached"]]))
    else:
        rows.append(_row("cached rerun of digits, whole process", f"< {B.STARTUP_TARGET_S:g} s",
                         None, None, unit="s", note="skipped: startup_repeats=0"))
    w2 = results["w2"]
    v = w2["share_of_peak"]["library"]
    rows.append(_row("W2 share of the float32 matmul peak", f">= {B.W2_PEAK_TARGET:.0%}", v,
                     bool(v >= B.W2_PEAK_TARGET), unit="share",
                     each=[w2["flops_per_step"] / t / p for t, p in
                           zip(w2["raw_step_s"]["library"], w2["peaks"])]))
    if "speedup_torch" in w2:
        v = w2["speedup_torch"]
        rows.append(_row("W2 steps/s: library vs PyTorch eager", f">= {B.W2_TORCH_TARGET:g}x",
                         v, bool(v >= B.W2_TORCH_TARGET),
                         each=_ratios(w2["raw_step_s"], "torch")))
    else:
        rows.append(_row("W2 steps/s: library vs PyTorch eager", f">= {B.W2_TORCH_TARGET:g}x",
                         None, None, note=no_torch))
    w3 = results["w3"].get("all_devices", results["w3"]["one_device"])
    dev = f"{w3['devices']} device{'s' if w3['devices'] > 1 else ''}"
    scale = w3["models"] / w3.get("loop_timed_models", w3["models"])
    rows.append(_row(f"W3 sweep vs loop of fits ({dev})", f">= {B.W3_SPEEDUP_TARGET:g}x",
                     w3["speedup"], bool(w3["speedup"] >= B.W3_SPEEDUP_TARGET),
                     each=[scale * r for r in _ratios(w3["raw_s"], "loop", "sweep")]))
    rows.append(_row(f"W3 sweep's share of the matmul peak ({dev})",
                     f">= {B.W3_PEAK_TARGET:.0%}", w3["share_of_peak"],
                     bool(w3["share_of_peak"] >= B.W3_PEAK_TARGET), unit="share",
                     each=[w3["flops"] / t / p for t, p in
                           zip(w3["raw_s"]["sweep"], w3["raw_s"]["peak"])]))
    for name, goal in B.MODEL_TORCH_TARGET.items():
        m = results["models"].get(name, {})
        # on every core, as PyTorch eager runs (its ops use the cores as threads): the
        # library data parallel over the cores as devices, when the run had several
        mine, speedup = (("library_devices", "speedup_torch_devices")
                         if "speedup_torch_devices" in m else ("library", "speedup_torch"))
        label = (f"{'CNN' if name == 'cnn' else 'Transformer'} training: library"
                 + (f" ({m['devices']} CPU devices, data parallel)" if "devices" in m else "")
                 + " vs PyTorch eager")
        if name not in results["models"]:
            rows.append(_row(label, f">= {goal:g}x", None, None,
                             note="skipped: not in config.models"))
        elif speedup in m:
            rows.append(_row(label, f">= {goal:g}x", m[speedup], bool(m[speedup] >= goal),
                             each=_ratios(m["raw_epoch_s"], "torch", mine)))
        else:
            rows.append(_row(label, f">= {goal:g}x", None, None,
                             note=no_torch))
    return rows


def _fmt(v, unit="x") -> str:
    if not _ok(v):
        return "n/a"
    if unit == "share":
        return f"{100 * v:.0f}%"
    if unit == "s":
        return f"{v:.2f} s"
    return f"{v:.2f}x"


def _met(m) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[m]


def _shared(machine: dict) -> bool:
    """Another job ran at the start: the 1-minute load above 0.75 per core."""
    la0 = machine.get("load_average_start")
    return bool(la0) and la0[0] > 0.75 * machine["cores"]


def markdown(results: dict) -> str:
    from experiments._framework import _command_line
    m, cfg = results["machine"], results["config"]
    la0, la1 = m.get("load_average_start"), m.get("load_average_end")
    load = (f"1-minute load average {la0[0]:.1f} at the start, {la1[0]:.1f} at the end"
            if la0 and la1 else "load not recorded")
    versions = ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v)
    out = [
        "# Benchmark: this library against PyTorch, scikit-learn, Flax and NumPy",
        "",
        f"*{m['cpu']}, {m['cores']} cores, CPU only; "
        + (f"the machine was SHARED with other jobs while this ran ({load}), so absolute "
           if _shared(m) else
           f"no other heavy job at the start ({load}); on this shared virtual machine ")
        + f"times are noisy: the ratios, measured side by "
        f"side in one process tree with the systems interleaved, are what counts. Medians of "
        f"{cfg['repeats']} repetitions. Speed-up = peer time / library time (above 1: the "
        f"library is faster). `{_command_line()}`, "
        f"{datetime.date.today().isoformat()}, {results['seconds']:.0f} s; {versions}; "
        f"PyTorch threads {results.get('torch_threads')}, OMP_WAIT_POLICY="
        f"{results.get('omp_wait_policy')}.*",
        "",
    ]
    for peer, why in results.get("skipped", {}).items():
        out.append(f"- skipped: {peer} ({why})")
    if results.get("skipped"):
        out.append("")

    w1 = results["w1"]
    out += ["## W1: digits MLP 64-100-10, SGD 0.1, batch 32, lambda 1e-4", "",
            f"Steady time per epoch (33 steps): the library's `(t(2E) - t(E)) / E` with E = "
            f"{cfg['w1_epochs']} (fixed: the cost of a `train.fit` call beyond its epochs), a "
            f"peer's loop `t(E) / E`; test accuracy after "
            f"{cfg['w1_accuracy_epochs']} epochs from the same initial weights (359 images).",
            "",
            "| system | steady ms/epoch | fixed ms/call | library's speed-up | target | "
            "test accuracy |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in w1["systems"]:
        s = w1["speedup"].get(name)
        goal = B.W1_TARGETS.get(name)
        fixed = w1["fixed_ms"][name]
        out.append(f"| {systems.LABELS[name]} | {w1['steady_ms'][name]:.3f} | "
                   f"{f'{fixed:.2f}' if _ok(fixed) else '-'} | "
                   f"{'-' if s is None else f'{s:.2f}x'} | "
                   f"{'' if goal is None else f'>= {goal:g}x'} | "
                   f"{100 * w1['accuracy'][name]:.2f}% |")
    out.append("")
    if "w1_total" in results:
        t = results["w1_total"]
        out += [f"### W1 total: a fresh process imports, builds and trains {t['epochs']} epochs",
                "",
                "Cold: an empty persistent compilation cache; cached: the cache that the cold "
                "run filled. Compile: JAX's tracing, lowering and compiling (or cache reads).",
                "",
                "| system | cold total s | cold compile s | cached total s | cached compile s "
                "| cached import s | cached training s | speed-up cold | speed-up cached |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, med in t["median"].items():
            sp = t["speedup"].get(name)
            out.append(
                f"| {systems.LABELS[name]} | {med['cold']['process_s']:.2f} | "
                f"{med['cold']['compile_s']:.2f} | {med['cached']['process_s']:.2f} | "
                f"{med['cached']['compile_s']:.2f} | {med['cached']['import_s']:.2f} | "
                f"{med['cached']['train_s']:.2f} | "
                + (" - | - |" if sp is None else f"{sp['cold']:.2f}x | {sp['cached']:.2f}x |"))
        out.append("")

    w2, mm = results["w2"], results["matmul"]
    peak = mm["peak"]
    out += [f"## W2: MLP {'-'.join(map(str, w2['sizes']))}, batch {w2['batch']}, SGD", "",
            f"float32 matmul peak measured in this run (`jnp.dot`, square): "
            + ", ".join(f"{n}: {r / 1e9:.1f} GFLOP/s" for n, r in mm["rates"].items())
            + (("; PyTorch: " + ", ".join(f"{n}: {r / 1e9:.1f}" for n, r in mm["torch"].items()))
               if "torch" in mm else "")
            + f". {w2['flops_per_step'] / 1e9:.3f} GFLOP of matmuls per step.", "",
            "| system | steps/s | GFLOP/s | share of the matmul peak |",
            "| --- | ---: | ---: | ---: |"]
    for n in w2["steps_per_s"]:
        out.append(f"| {'this library (train.fit)' if n == 'library' else 'PyTorch eager'} | "
                   f"{w2['steps_per_s'][n]:.1f} | {w2['flops_per_s'][n] / 1e9:.1f} | "
                   f"{100 * w2['share_of_peak'][n]:.0f}% |")
    if "speedup_torch" in w2:
        out.append(f"\nLibrary's speed-up over PyTorch: **{w2['speedup_torch']:.2f}x** "
                   f"(target >= {B.W2_TORCH_TARGET:g}x).")
    out.append("")

    out += [f"## W3: {cfg['w3_lambdas']} lambdas x {cfg['w3_seeds']} seeds of W1's model, "
            f"{cfg['w3_epochs']} epochs", "",
            "| CPU devices | train.sweep s | loop of train.fit s | speed-up | sweep's share of "
            "the matmul peak |",
            "| ---: | ---: | ---: | ---: | ---: |"]
    for m3 in results["w3"].values():
        out.append(f"| {m3['devices']} | {m3['sweep_s']:.3f} | {m3['loop_s']:.3f} | "
                   f"{m3['speedup']:.2f}x | {100 * m3['share_of_peak']:.1f}% |")
    out.append("")

    out += ["## Convolution and sequence models: training against PyTorch eager", "",
            f"CNN: `nets.cnn.modern_cnn` on the {cfg['cnn_examples']} digits training "
            f"images, batch 32, Adam 3e-3. Transformer (2 heads, MLP {2 * cfg['seq_width']}) "
            f"and Mamba (d_state {cfg['seq_state']}, the library's scan "
            f"{cfg['mamba_scan']}; PyTorch's step by step): the sequence experiment's models, "
            f"2 layers, width {cfg['seq_width']}, {cfg['seq_len']} tokens of "
            f"{cfg['seq_vocab'] + 2} ids, batch {cfg['seq_batch']}, Adam 3e-3 after clipping to "
            f"global norm 1.", "",
            "| model | unit | this library, 1 device | library, all devices | PyTorch eager "
            "| speed-up, 1 device | speed-up, all devices | target |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def rate_or_na(v, fmt="{:,.0f}"):
        return "n/a" if v is None else fmt.format(v)

    for name, mdl in results["models"].items():
        goal = B.MODEL_TORCH_TARGET.get(name)
        dev = mdl.get("devices")
        out.append(f"| {name} | {mdl['unit']} | {mdl['rate']['library']:,.0f} | "
                   + (f"{mdl['rate']['library_devices']:,.0f} ({dev}) | " if dev else "n/a | ")
                   + f"{rate_or_na(mdl['rate'].get('torch'))} | "
                   f"{rate_or_na(mdl.get('speedup_torch'), '{:.2f}x')} | "
                   f"{rate_or_na(mdl.get('speedup_torch_devices'), '{:.2f}x')} | "
                   f"{'' if goal is None else f'>= {goal:g}x'} |")
    out.append("")
    if any("devices" in m for m in results["models"].values()):
        out += ["All devices: the CPU cores exposed as devices (`jax_num_cpu_devices`) in a "
                "child process, where the three columns were timed side by side; the library "
                "data parallel over them (`train.fit(mesh=N, data_on_devices=True)`: the same "
                "batches in the same order, each split over the devices). PyTorch eager uses "
                "the cores as its threads. The targets are judged on every core.", ""]
    cnn = results["models"].get("cnn", {})
    others = {n[len("library_"):]: r for n, r in cnn.get("rate", {}).items()
              if n.startswith("library_") and n != "library_devices"}
    for impl, rate in others.items():
        torch_rate = cnn["rate"].get("torch")
        vs = "" if torch_rate is None else f", {rate / torch_rate:.2f}x PyTorch eager"
        out += [f"The CNN row uses `Conv2D(impl=\"{cnn.get('conv_impl', 'patches')}\")`; with "
                f"`impl=\"{impl}\"` the same net trains at {rate:,.0f} examples/s{vs}.", ""]
    tf = results["models"].get("transformer", {})
    for n, rate in tf.get("rate", {}).items():
        if n.startswith("library_") and n != "library_devices":
            torch_rate = tf["rate"].get("torch")
            vs = "" if torch_rate is None else f", {rate / torch_rate:.2f}x PyTorch eager"
            out += [f"The Transformer row uses `impl=\"{tf.get('attention_impl')}\"`; with "
                    f"`impl=\"{n[len('library_'):]}\"` (autodiff of the written attention) "
                    f"the same model trains at {rate:,.0f} tokens/s{vs}.", ""]

    if "startup" in results:
        su = results["startup"]["median"]
        out += ["## Start-up: `python -m experiments run digits` (full run) in a fresh process",
                "",
                "| cache | total s | interpreter s | import s | compile s | training and the "
                "rest s |",
                "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for state, s in su.items():
            out.append(f"| {state} | {s['process_s']:.2f} | {s['interpreter_s']:.2f} | "
                       f"{s['import_s']:.2f} | {s['compile_s']:.2f} | {s['rest_s']:.2f} |")
        out.append("")

    out += ["## Targets (issue 10)", "",
            "Measured: the median; range: its lowest and highest repetition (a ratio taken "
            "within each repetition, where peer and library ran side by side).", "",
            "| target | wanted | measured | range | |", "| --- | ---: | ---: | ---: | --- |"]
    for t in results["targets"]:
        spread = t.get("spread")
        rng = (f"{_fmt(spread[0], t['unit'])} - {_fmt(spread[1], t['unit'])}" if spread
               else "")
        out.append(f"| {t['name']} | {t['target']} | {_fmt(t['value'], t['unit'])} | {rng} | "
                   f"{_met(t['met'])}{(' (' + t['note'] + ')') if t['note'] else ''} |")
    out.append("")
    return "\n".join(out)


def headline(results: dict) -> dict:
    """The metrics: the library's speed-ups, the shares of the matmul peak, the targets."""
    out = {"w1_speedup": results["w1"]["speedup"],
           "w1_accuracy": results["w1"]["accuracy"],
           "w2_share_of_peak": results["w2"]["share_of_peak"]["library"],
           "w3_speedup": {str(m["devices"]): m["speedup"] for m in results["w3"].values()},
           "w3_share_of_peak": {str(m["devices"]): m["share_of_peak"]
                                for m in results["w3"].values()},
           "models_speedup_torch": {n: m.get("speedup_torch")
                                    for n, m in results["models"].items()},
           "models_speedup_torch_all_devices": {
               n: m.get("speedup_torch_devices") for n, m in results["models"].items()},
           "skipped": sorted(results.get("skipped", {}))}
    if "speedup_torch" in results["w2"]:
        out["w2_speedup_torch"] = results["w2"]["speedup_torch"]
    if "startup" in results:
        out["startup_cached_s"] = results["startup"]["median"]["cached"]["process_s"]
        out["startup_cold_s"] = results["startup"]["median"]["cold"]["process_s"]
    rows = results["targets"]
    out["targets_met"] = sum(t["met"] is True for t in rows)
    out["targets_missed"] = [t["name"] for t in rows if t["met"] is False]
    out["targets_not_measured"] = [t["name"] for t in rows if t["met"] is None]
    return out


def plot(results: dict, path) -> None:
    """Left: the library's speed-up over each peer (log axis; a black tick marks the target;
    green met, red missed, grey no target). Right: shares of the float32 matmul peak."""
    from experiments._plot import plt, savefig

    bars = []  # (label, value, target)
    w1 = results["w1"]
    for peer, v in w1["speedup"].items():
        bars.append((f"W1 epoch vs {systems.LABELS[peer]}", v, B.W1_TARGETS.get(peer)))
    if "w1_total" in results:
        for peer, v in results["w1_total"]["speedup"].items():
            bars.append((f"W1 fresh process, cached, vs {peer}", v["cached"], None))
    if "speedup_torch" in results["w2"]:
        bars.append(("W2 steps/s vs PyTorch eager", results["w2"]["speedup_torch"],
                     B.W2_TORCH_TARGET))
    for m3 in results["w3"].values():
        bars.append((f"W3 sweep vs loop of fits, {m3['devices']} device(s)", m3["speedup"],
                     B.W3_SPEEDUP_TARGET if m3 is results["w3"].get(
                         "all_devices", results["w3"]["one_device"]) else None))
    for name, m in results["models"].items():
        if "speedup_torch" in m:
            both = "speedup_torch_devices" in m
            bars.append((f"{name} training vs PyTorch eager, 1 device", m["speedup_torch"],
                         None if both else B.MODEL_TORCH_TARGET.get(name)))
            if both:
                bars.append((f"{name} training vs PyTorch eager, {m['devices']} devices",
                             m["speedup_torch_devices"], B.MODEL_TORCH_TARGET.get(name)))
    bars = [b for b in bars if _ok(b[1]) and b[1] > 0]  # a noisy smoke run can give <= 0
    shares = [("W2, this library", results["w2"]["share_of_peak"]["library"],
               B.W2_PEAK_TARGET)]
    if "torch" in results["w2"]["share_of_peak"]:
        shares.append(("W2, PyTorch eager", results["w2"]["share_of_peak"]["torch"], None))
    for m3 in results["w3"].values():
        shares.append((f"W3 sweep, {m3['devices']} device(s)", m3["share_of_peak"],
                       B.W3_PEAK_TARGET))
    shares = [s for s in shares if _ok(s[1]) and s[1] > 0]  # a noisy smoke run can give <= 0

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 0.42 * max(len(bars), 6) + 1.6),
                                  gridspec_kw={"width_ratios": [2.3, 1]})
    ys = np.arange(len(bars))[::-1]

    def color(v, goal):
        return "0.6" if goal is None else ("tab:green" if v >= goal else "tab:red")

    values = [b[1] for b in bars]
    ax.barh(ys, values, color=[color(v, g) for _, v, g in bars], height=0.65)
    for y, (_, v, g) in zip(ys, bars):
        ax.text(max(v, g or 0) * 1.08, y, f"{v:.2f}x", va="center", fontsize=8)
        if g is not None:
            ax.plot([g, g], [y - 0.4, y + 0.4], color="k", lw=2)
    ax.set_xscale("log")
    lo = min(values + [0.5]) / 1.5
    hi = max(values + [g for *_, g in bars if g] + [2]) * 2.2
    ax.set_xlim(lo, hi)
    ax.axvline(1.0, color="k", lw=0.8, ls=":")
    ax.set_yticks(ys, [b[0] for b in bars], fontsize=8)
    ax.set_xlabel("library's speed-up = peer time / library time (log scale; > 1: library "
                  "faster)")
    ax.set_title("Speed-up of this library (black tick: the issue's target; green met, red "
                 "missed, grey no target)", fontsize=9)
    ax.grid(axis="x", alpha=0.3, which="both")

    ys2 = np.arange(len(shares))[::-1]
    ax2.barh(ys2, [100 * s[1] for s in shares],
             color=[color(v, g) for _, v, g in shares], height=0.6)
    for y, (_, v, g) in zip(ys2, shares):
        ax2.text(100 * max(v, g or 0) + 2, y, f"{100 * v:.0f}%", va="center", fontsize=8)
        if g is not None:
            ax2.plot([100 * g] * 2, [y - 0.4, y + 0.4], color="k", lw=2)
    ax2.set_yticks(ys2, [s[0] for s in shares], fontsize=8)
    ax2.set_xlim(0, max([110] + [100 * s[1] + 15 for s in shares]))
    ax2.set_xlabel("achieved FLOP/s as % of the float32 matmul peak")
    ax2.set_title("Share of this machine's jnp.dot peak", fontsize=9)
    ax2.grid(axis="x", alpha=0.3)
    m = results["machine"]
    load = "shared with other jobs" if _shared(m) else "no other heavy job at the start"
    fig.suptitle(f"Benchmark on {m['cpu']} ({m['cores']} cores, {load}): "
                 f"medians of {results['config']['repeats']} interleaved repetitions",
                 fontsize=10)
    fig.tight_layout()
    savefig(fig, path)
