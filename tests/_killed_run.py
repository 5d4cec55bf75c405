"""A tiny training run that SIGKILLs itself (tests/test_checkpoint_integrity.py).

`python -m tests._killed_run CKPT MODE CACHE`: MODE `epoch` trains from scratch with a
checkpoint per epoch and is killed half-way through epoch 4; MODE `checkpoint` resumes from
CKPT and is killed inside the checkpoint write of epoch 5, after the new file is written and
the latest kept as the previous one, before the new file replaces the latest. CACHE is a
persistent compilation cache the two processes share (the second compiles nothing).
Imports only what the run needs: each process costs about a second of CPU.
"""

import dataclasses
import os
import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np

import train

X = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
EPOCHS = 6


def step(state, batch, key):
    loss = lambda w: jnp.mean((batch @ w - 1.0) ** 2)  # noqa: E731
    value, g = jax.value_and_grad(loss)(state["w"])
    m = 0.9 * state["m"] + g  # momentum: a second array that must resume exactly
    w = state["w"] - 0.05 * m + 1e-3 * jax.random.normal(key, (3,))
    return {"w": w, "m": m}, {"loss": value}


@dataclasses.dataclass
class Epoch:
    """One epoch's batches, a function of the epoch alone (so a resumed stream replays it);
    SIGKILLs its own process half-way through epoch `kill_in` (0-based)."""

    epoch: int
    kill_in: int | None = None

    def __iter__(self):
        order = np.random.default_rng(self.epoch).permutation(64)
        for i in range(4):
            if self.epoch == self.kill_in and i == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            yield X[order[16 * i:16 * (i + 1)]]


def run(ckpt=None, resume=None, kill_in=None):
    state = {"w": jnp.zeros(3), "m": jnp.zeros(3)}
    return train.run(step, state, lambda e: Epoch(e, kill_in), epochs=EPOCHS,
                     key=jax.random.key(7), checkpoint=ckpt, resume=resume, progress=False)


def main(ckpt: str, mode: str, cache: str) -> None:
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if mode == "epoch":
        run(ckpt, kill_in=3)
    else:
        replace, calls = os.replace, []

        def killing_replace(src, dst):
            if os.fspath(dst) == ckpt:  # the new file over the latest (not the .prev rename)
                calls.append(dst)
                if len(calls) == 2:  # epochs 4 and 5 of the resumed run
                    os.kill(os.getpid(), signal.SIGKILL)
            return replace(src, dst)

        os.replace = killing_replace
        run(ckpt, resume=ckpt)
    raise SystemExit(f"{mode}: not killed")


if __name__ == "__main__":
    main(*sys.argv[1:])
