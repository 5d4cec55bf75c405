"""GAN on a ring of 8 Gaussians: modes covered, sample quality, mode collapse; PacGAN as a remedy.

The note lists GANs (Goodfellow et al. 2014, arXiv:1406.2661). The benchmark is Metz et
al.'s (2017, arXiv:1611.02163, section 3.1): an equal mixture of 8 two-dimensional Gaussians
with standard deviation 0.02 whose means lie on a circle of radius 2. The generator
``G: z -> x`` (``z ~ N(0, I)`` of ``latent`` dimensions) and the discriminator ``D: x ->
logit`` are ReLU MLPs from :mod:`nets.layers` (:func:`nets.gan.mlp_player`), trained as two
players in ONE compiled step (:func:`nets.gan.make_step`: a discriminator step on a real
batch and fresh fakes, then a generator step on the non-saturating loss against the updated
discriminator) by ``train.run``, each with Adam (beta_1 = 0.5). ``seeds`` replicates train
together in one ``vmap``-ed program (``train.run(models=...)``); the run is cut into
``snapshots`` calls of ``train.run`` (the same compiled program, the state carried) so the
generator can be looked at as training proceeds.

Scores (:func:`nets.gan.mode_metrics`, on ``n_eval`` samples drawn with the same noise at
every snapshot): the share of *high-quality* samples (within 3 standard deviations, 0.06, of
their nearest mode; Srivastava et al. 2017, Lin et al. 2018) and the number of *modes
covered* (a mode holding at least a fifth of its fair share, ``0.2 n_hq / 8``, of the
high-quality samples). *Mode collapse* is read off as a final generator that covers fewer
than 8 modes, and *mode hopping* as the generator's most populated mode changing from one
snapshot to the next.

The remedy tried is PacGAN (Lin, Khetan, Fanti & Oh 2018, arXiv:1712.04086): the
discriminator judges ``pack`` samples at once, concatenated (all real or all fake), so a
generator whose samples sit on few modes produces packs unlike real ones. Everything else
(players, optimizers, data, seeds, steps) is unchanged; the discriminator's first layer is
wider by the extra inputs.

Writes ``samples.png`` (the generator's samples of the first replicate at several points of
training, plain GAN above PacGAN, the mode centres marked), ``modes.png`` (modes covered and
high-quality share against training epochs, a line per replicate; the discriminator's
outputs), ``history.csv`` (per variant, replicate and epoch: ``d_loss``, ``g_loss``,
``d_real``, ``d_fake``), ``snapshots.csv`` (per variant, replicate and snapshot: modes
covered, high-quality share, samples per mode) and ``timings.json`` (training seconds per
variant; timings stay out of ``metrics.json``, which the same seed reproduces byte for byte).

Full run: ``python -m experiments run gan --no-progress`` (seed 0; 3 replicates per variant,
96 epochs of 100 steps, 12 snapshots; the settings were fixed before the first run, except
the epochs, raised from 60 after it because PacGAN's sample quality was still rising).
Final generators, per replicate (a real sample of 2,000 points: 8 modes, 98.8% high quality):

                 modes covered   high-quality share      largest mode's share
    GAN          1, 1, 1         99.6, 99.8, 99.7%       1.00, 1.00, 1.00
    PacGAN (2)   7, 2, 7         54.1, 50.8, 39.0%       0.30, 0.72, 0.29

**The plain GAN collapses** on every replicate: by epoch 16 all its samples sit on one mode
(``samples.png``, top row), which it then renders sharply (near 100% high quality) while the
discriminator settles at D(real) 0.89 / D(fake) 0.11 and the generator stays put (its most
populated mode changes at most once over the 12 snapshots, against 5-8 times for PacGAN).
**PacGAN restores most of the coverage**: samples spread round the ring by epoch 8 and
concentrate on the modes as training goes on; two replicates end on 7 of 8 modes, but the
second drifts from 7 modes (epochs 56-64) to 2 at the end (a partial collapse, not
prevented), and its samples are less sharp (39-54% within 3 sd at the end against 99% for
the collapsed GAN; the share was still moving, 23-86% over the last 3 snapshots: the arcs of
the ring between modes are not yet emptied). Mean over replicates: 5.3 modes against 1.0.
One setting and 3 replicates: a measured difference in coverage, not a tuned comparison. (A
second trial at a learning rate of 2e-4 for both players, 60 epochs (``--set
learning_rate_g=2e-4 --set learning_rate_d=2e-4 --set epochs=60``), gave the same picture
more slowly: GAN 1 mode on every replicate, PacGAN 7, 8, 8 modes at 6% high quality.)

Wall time 203 s (GAN 113 s, PacGAN 75 s, the first including compilation) on the shared
2-core CPU while other jobs ran (2 min 20 s of CPU time).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
import optax

import train
from experiments._config import (
    Annotated,
    Count,
    Positive,
    Probability,
    Range,
    Replicates,
    Samples,
    Width,
    Widths,
)
from experiments._framework import progress_enabled, write_csv, write_json
from experiments._plot import plt, savefig
from nets import gan

VARIANTS = ("gan", "pacgan")
LABELS = {"gan": "GAN", "pacgan": "PacGAN"}


@dataclasses.dataclass(frozen=True)
class Config:
    n_modes: Annotated[int, Range(2, 1000)] = 8  # Gaussians on the ring
    radius: Positive = 2.0  # the ring's radius
    std: Positive = 0.02  # each Gaussian's standard deviation (per coordinate)
    n_train: Samples = 25_600  # training points drawn once from the mixture
    latent: Width = 16  # dimension of the generator's noise z ~ N(0, I)
    hidden: Widths = (128, 128)  # ReLU layers of both players
    learning_rate_g: Positive = 1e-3  # Adam step of the generator
    learning_rate_d: Positive = 1e-3  # Adam step of the discriminator
    beta1: Probability = 0.5  # Adam's beta_1, both players
    batch_size: Samples = 256  # real samples per step (fakes: as many)
    epochs: Count = 96  # passes over the training points (n_train / batch_size steps each)
    snapshots: Count = 12  # the run is looked at this many times (epochs must divide evenly)
    pack: Annotated[int, Range(2, 64)] = 2  # PacGAN's packing degree (the remedy)
    seeds: Replicates = 3  # replicates per variant, trained together (one vmap)
    n_eval: Annotated[int, Range(1, 100_000)] = 2000  # generator samples scored per snapshot
    seed: int = 0  # data, initial weights (replicate i: fold_in(seed, i)), data order


SMOKE = {"n_train": 256, "hidden": (8,), "batch_size": 64, "epochs": 1, "snapshots": 1,
         "seeds": 2, "n_eval": 200}


def check(config: Config) -> None:
    """Checks across fields (and every field again, for a Config built by hand)."""
    for name in ("n_modes", "n_train", "latent", "batch_size", "epochs", "snapshots", "pack",
                 "seeds", "n_eval"):
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if config.epochs % config.snapshots:
        raise ValueError(f"snapshots: expected a divisor of epochs={config.epochs}, got "
                         f"{config.snapshots}")
    if config.batch_size > config.n_train or config.batch_size % config.pack:
        raise ValueError(f"batch_size: expected at most n_train={config.n_train} and a "
                         f"multiple of pack={config.pack}, got {config.batch_size}")
    for name in ("radius", "std", "learning_rate_g", "learning_rate_d"):
        if not getattr(config, name) > 0:
            raise ValueError(f"{name}: expected a positive number, got {getattr(config, name)}")
    if not 0 <= config.beta1 < 1:
        raise ValueError(f"beta1: expected a number in [0, 1), got {config.beta1}")


def _train(config: Config, g, draw, pack: int, data, key_init, key_run, centres) -> dict:
    """One variant, ``seeds`` replicates in one vmapped program, looked at ``snapshots``
    times. Returns the samples and scores per snapshot and the history."""
    d = gan.mlp_player(config.hidden, n_in=2 * pack, n_out=1)
    opt_g = optax.adam(config.learning_rate_g, b1=config.beta1)
    opt_d = optax.adam(config.learning_rate_d, b1=config.beta1)
    keys = jax.vmap(lambda i: jax.random.fold_in(key_init, i))(np.arange(config.seeds))
    state = jax.jit(jax.vmap(lambda k: gan.init(g, d, opt_g, opt_d, key=k)))(keys)
    step = gan.make_step(g, d, opt_g, opt_d, pack=pack)
    per_call = config.epochs // config.snapshots
    epochs, samples, scores, history = [0], [np.asarray(draw(state.g))], [], {}
    start = time.perf_counter()
    for i in range(config.snapshots):
        r = train.run(step, state, data, epochs=per_call, batch_size=config.batch_size,
                      key=jax.random.split(jax.random.fold_in(key_run, i), config.seeds),
                      models=config.seeds, progress=progress_enabled(),
                      desc=f"{'pacgan' if pack > 1 else 'gan'} {i + 1}/{config.snapshots}")
        state = r.state
        for k, v in r.history.items():
            history.setdefault(k, []).append(np.asarray(v))
        epochs.append((i + 1) * per_call)
        samples.append(np.asarray(draw(state.g)))
    seconds = time.perf_counter() - start
    for s in samples:  # (seeds, n_eval, 2) per snapshot
        scores.append([gan.mode_metrics(x, centres, config.std) for x in s])
    return {"epochs": epochs, "samples": samples, "scores": scores, "seconds": seconds,
            "history": {k: np.concatenate(v, axis=1) for k, v in history.items()}}


def _summary(result: dict, n_modes: int) -> dict:
    scores = result["scores"]  # [snapshot][replicate] -> dict
    final = scores[-1]
    covered = [s["modes_covered"] for s in final]
    hq = [s["high_quality"] for s in final]
    seeds = len(final)
    hops = []  # per replicate: snapshots whose most populated mode differs from the previous
    for j in range(seeds):
        top = [int(np.argmax(scores[i][j]["counts"])) for i in range(1, len(scores))]
        hops.append(int(sum(a != b for a, b in zip(top, top[1:]))))
    return {
        "final_modes_covered": covered,
        "final_high_quality": hq,
        "mean_final_modes_covered": float(np.mean(covered)),
        "mean_final_high_quality": float(np.mean(hq)),
        "replicates_collapsed": int(sum(c < n_modes for c in covered)),
        "modes_covered_over_training": [[s["modes_covered"] for s in snap] for snap in scores],
        "high_quality_over_training": [[s["high_quality"] for s in snap] for snap in scores],
        "largest_mode_share_final": [float(max(s["mode_share"])) for s in final],
        "top_mode_changes": hops,
    }


def run(config: Config, outdir) -> dict:
    check(config)
    key_data, key_init, key_run, z_key = jax.random.split(jax.random.key(config.seed), 4)
    data = gan.ring_data(key_data, config.n_train, n_modes=config.n_modes,
                         radius=config.radius, std=config.std)
    centres = gan.ring_centres(config.n_modes, config.radius)
    # one generator architecture (and one compiled sampler) for both variants
    g = gan.mlp_player(config.hidden, n_in=config.latent, n_out=2)
    draw = jax.jit(jax.vmap(lambda p: gan.sample(g, p, config.n_eval, key=z_key)))
    results = {}
    for name, pack in (("gan", 1), ("pacgan", config.pack)):
        results[name] = _train(config, g, draw, pack, data, key_init, key_run, centres)
    out = {name: _summary(r, config.n_modes) for name, r in results.items()}
    for name in VARIANTS:
        o = out[name]
        print(f"  {LABELS[name]}: modes covered {o['final_modes_covered']} of "
              f"{config.n_modes}, high quality {np.round(o['final_high_quality'], 3).tolist()}, "
              f"{results[name]['seconds']:.1f} s")
    # a real sample of the same size, scored the same way: what a perfect generator reaches
    ref = gan.mode_metrics(gan.ring_data(jax.random.fold_in(key_data, 1), config.n_eval,
                                         n_modes=config.n_modes, radius=config.radius,
                                         std=config.std), centres, config.std)
    metrics = {"n_modes": config.n_modes, "epochs": results["gan"]["epochs"],
               "steps_per_epoch": config.n_train // config.batch_size,
               "real_data": {"modes_covered": ref["modes_covered"],
                             "high_quality": ref["high_quality"]},
               **out}

    rows = []
    for name, r in results.items():
        for j in range(config.seeds):
            for e in range(config.epochs):
                rows.append({"variant": name, "replicate": j, "epoch": e + 1,
                             **{k: float(v[j, e]) for k, v in r["history"].items()}})
    write_csv(outdir / "history.csv", rows)
    snaps = []
    for name, r in results.items():
        for i, (epoch, snap) in enumerate(zip(r["epochs"], r["scores"])):
            for j, s in enumerate(snap):
                snaps.append({"variant": name, "replicate": j, "epoch": epoch,
                              "modes_covered": s["modes_covered"],
                              "high_quality": s["high_quality"],
                              **{f"mode_{k}": c for k, c in enumerate(s["counts"])}})
    write_csv(outdir / "snapshots.csv", snaps)
    write_json(outdir / "timings.json", {"seconds": {n: r["seconds"] for n, r in results.items()},
                                         "device": str(jax.devices()[0])})
    _plot_samples(results, centres, config, outdir / "samples.png")
    _plot_modes(results, metrics, config, outdir / "modes.png")
    return metrics


# --- figures ---------------------------------------------------------------------------------

def _plot_samples(results, centres, config, path) -> None:
    epochs = results["gan"]["epochs"]
    cols = sorted({round(i) for i in np.linspace(0, len(epochs) - 1, min(6, len(epochs)))})
    fig, axes = plt.subplots(len(VARIANTS), len(cols), figsize=(2.3 * len(cols), 4.9),
                             squeeze=False, layout="constrained")
    lim = 1.35 * config.radius
    for r, name in enumerate(VARIANTS):
        res = results[name]
        for c, i in enumerate(cols):
            ax = axes[r, c]
            x = res["samples"][i][0]
            s = res["scores"][i][0]
            ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, color=f"C{r}", rasterized=True)
            ax.scatter(centres[:, 0], centres[:, 1], marker="x", s=30, color="k", linewidths=1)
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
            ax.set_title(f"epoch {res['epochs'][i]}: {s['modes_covered']}/{config.n_modes} "
                         f"modes\n{100 * s['high_quality']:.0f}% high quality", fontsize=9)
        axes[r, 0].set_ylabel(LABELS[name] + (f" (pack {config.pack})" if name == "pacgan"
                                              else ""), fontsize=11)
    fig.suptitle(f"Generator samples ({config.n_eval}, same noise each time; replicate 0), "
                 f"x: the {config.n_modes} modes (sd {config.std})", fontsize=10)
    savefig(fig, path)


def _plot_modes(results, metrics, config, path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
    for v, name in enumerate(VARIANTS):
        res = results[name]
        e = np.asarray(res["epochs"])
        covered = np.asarray(metrics[name]["modes_covered_over_training"])  # (snaps, seeds)
        hq = np.asarray(metrics[name]["high_quality_over_training"])
        for j in range(config.seeds):
            lab = f"{LABELS[name]}, a line per replicate" if j == 0 else None
            jitter = (j - (config.seeds - 1) / 2) * 0.06
            axes[0].plot(e, covered[:, j] + jitter, color=f"C{v}", marker="o", ms=3,
                         linewidth=1, alpha=0.8, label=lab)
            axes[1].plot(e, 100 * hq[:, j], color=f"C{v}", marker="o", ms=3, linewidth=1,
                         alpha=0.8, label=lab)
            h = res["history"]
            ep = np.arange(1, h["d_real"].shape[1] + 1)
            dots = "o" if ep.size < 10 else None  # a short run: points, not empty lines
            axes[2].plot(ep, h["d_real"][j], color=f"C{v}", linewidth=0.9, alpha=0.8,
                         marker=dots, ms=3,
                         label=f"{LABELS[name]}: mean D(real)" if j == 0 else None)
            axes[2].plot(ep, h["d_fake"][j], color=f"C{v}", linewidth=0.9, alpha=0.8,
                         marker=dots, ms=3, linestyle="--",
                         label=f"{LABELS[name]}: mean D(fake)" if j == 0 else None)
    axes[0].axhline(config.n_modes, color="0.5", linewidth=0.8)
    axes[0].set(xlabel="epoch", ylabel=f"modes covered (of {config.n_modes})",
                title="Modes covered (a mode: >= 1/5 of its fair share\nof the high-quality "
                      "samples)", ylim=(-0.3, config.n_modes + 0.5))
    ref = 100 * metrics["real_data"]["high_quality"]
    axes[1].axhline(ref, color="0.5", linewidth=0.8, label=f"real data: {ref:.1f}%")
    axes[1].set(xlabel="epoch", ylabel="high-quality samples, %", ylim=(0, 122),
                yticks=range(0, 101, 20), title="Samples within 3 sd of their nearest mode")
    axes[2].axhline(0.5, color="0.5", linewidth=0.8)
    axes[2].set(xlabel="epoch", ylabel="sigmoid(D), epoch mean", ylim=(0, 1),
                title="The discriminator (0.5: it cannot tell)")
    for ax in axes:
        ax.grid(alpha=0.3)
        # the middle panel's legend in the room above 100%, clear of the real-data line
        ax.legend(fontsize=7, **({"ncol": 2} if ax is axes[1] else {}))
    savefig(fig, path)
