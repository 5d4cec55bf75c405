"""The README's digits MLP trained data parallel on every device of every process.

    python examples/scale_out.py                                    # alone: one device
    python -m train.launch -n 2 --cpu-devices 2 examples/scale_out.py   # 2 processes x 2
    srun --ntasks=8 --gpus-per-task=1 python examples/scale_out.py      # a SLURM GPU cluster

``--epochs E`` (default 20), ``--checkpoint DIR`` (an Orbax folder on a mesh, a file
alone), ``--resume DIR_OR_FILE``. Process 0 prints the topology, the test error, a checksum
of the parameters (the sum of their absolute values: the same, up to float rounding, on
any topology) and the seconds the fit took. SCALING.md shows the commands run and what
they printed.
"""

import argparse
import time

import jax
import numpy as np

import train

joined = train.distributed.initialize(fallback_to_single=True)  # before any computation
import nets  # noqa: E402  (after initialize, which must precede JAX's backend)

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--checkpoint", default=None)
parser.add_argument("--resume", default=None)
args = parser.parse_args()

split = train.data.load_digits(key=jax.random.key(0))  # every process: the same arrays
mlp = nets.mlp.model((64, 100, 10), activation="relu")
params, _ = mlp.init(jax.random.key(1))
loss = nets.objective.make(mlp, "cross_entropy")
error = mlp.metric(nets.metrics.error_rate)

start = time.perf_counter()
result = train.fit(loss, params, split.train, optimizer=train.sgd(0.05, l2=1e-3, momentum=0.9),
                   epochs=args.epochs, batch_size=32, key=jax.random.key(2),
                   validation=split.val, progress=False, mesh=jax.device_count(),
                   checkpoint=args.checkpoint, resume=args.resume)
seconds = time.perf_counter() - start
local = jax.tree.map(np.asarray, result.params)  # replicated: every process has a copy
if train.distributed.is_primary():
    print(f"processes {jax.process_count()}, devices {jax.device_count()} "
          f"({jax.local_device_count()} per process), epochs run {len(result.history['loss'])}")
    print(f"val loss {result.history['val_loss'][-1]:.6f}, "
          f"test error {float(error(local, *split.test)):.4f}")
    print(f"checksum {sum(float(np.abs(a).sum()) for a in jax.tree.leaves(local)):.6f}, "
          f"fit {seconds:.1f} s")
