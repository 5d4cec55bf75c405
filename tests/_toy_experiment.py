"""Toy: the mean of Gaussian draws by jitted gradient descent (the framework's test experiment).

Registered only by tests/test_experiments_cli.py; it exercises every config type `--set`
parses, and writes a figure and a history like a real experiment.
"""

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

from experiments._framework import progress, write_csv
from experiments._plot import image_grid, plt, savefig


@dataclasses.dataclass(frozen=True)
class Config:
    n: int = 1000  # number of draws
    steps: int = 50  # gradient-descent steps on the squared error
    learning_rate: float = 0.1  # step size
    centered: bool = False  # draw around 0 instead of 1
    widths: tuple[int, ...] = (4, 8)  # unused: a tuple of ints to parse
    rates: tuple[float, ...] = (0.1, 0.01)  # unused: a tuple of floats to parse
    tags: tuple[str, ...] = ("a",)  # unused: a tuple of strings to parse
    label: str = "toy"  # unused: a string to parse
    mode: Literal["fast", "slow"] = "fast"  # unused: a literal to parse
    limit: int | None = None  # unused: an optional int to parse
    fail: bool = False  # raise after writing files (tests the cleanup)
    seed: int = 0  # PRNG seed for the draws


SMOKE = {"n": 100, "steps": 5}


def run(config: Config, outdir) -> dict:
    mean = 0.0 if config.centered else 1.0
    x = mean + jax.random.normal(jax.random.key(config.seed), (config.n,))
    step = jax.jit(lambda m: m - config.learning_rate * 2 * (m - jnp.mean(x)))
    m, history = jnp.zeros(()), []
    for t in progress(range(config.steps), desc="toy"):
        m = step(m)
        history.append({"step": t, "estimate": m})
    write_csv(outdir / "history.csv", history)
    fig, ax = plt.subplots()
    image_grid(ax, x[:64].reshape(4, 16), shape=(4, 4), symmetric=True)
    savefig(fig, outdir / "draws.png")
    if config.fail:
        raise RuntimeError("toy failure")
    return {"estimate": m, "sample_mean": jnp.mean(x), "first": x[:3], "test_error": 0.5,
            "nested": {"steps": config.steps}}
