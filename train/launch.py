"""``python -m train.launch -n N [--cpu-devices K] script.py [args...]``: one JAX run as N
processes on this machine.

Starts ``python script.py args...`` N times with ``jax.distributed``'s coordinator on
localhost; each process learns its place from the ``JAXNETS_*`` environment variables
when the script calls :func:`train.distributed.initialize` (no arguments), and its output
lines are prefixed ``[i]``. When one process fails, a line says which and how, and the
others are stopped (SIGTERM, then SIGKILL after ``train.distributed.STOP_GRACE_S`` seconds:
JAX catches SIGTERM once initialized); the status is the failed process's (128 + N for
signal N). ``--timeout`` stops them all the same way (status 124), and so does SIGTERM or
SIGINT to the launcher (status 143 or 130). On Linux the processes are also SIGKILLed when
the launcher dies, even by SIGKILL. On a GPU cluster or a TPU pod the cluster starts the processes
instead (``srun``, ``gcloud ... --worker=all``) and the same script runs unchanged.
"""

import argparse
import sys
from typing import Sequence

from train import distributed


def _at_least_one(text: str) -> int:
    """An int >= 1 for argparse (a bad one is a usage error naming the option, status 2)."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0 (``--timeout``)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m train.launch -n N [--cpu-devices K] script.py [args...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m train.launch",
        description="Run a Python script as N processes of one JAX run on this machine "
                    "(jax.distributed on localhost; train.distributed.initialize() in the "
                    "script reads its place).")
    parser.add_argument("-n", "--processes", type=_at_least_one, required=True)
    parser.add_argument("--cpu-devices", type=_at_least_one, default=None,
                        help="CPU devices per process (jax_num_cpu_devices)")
    parser.add_argument("--port", type=int, default=None, help="coordinator port")
    parser.add_argument("--timeout", type=_positive_seconds, default=None,
                        help="stop every process after this many seconds (status 124)")
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    a = parser.parse_args(argv)
    status = distributed.launch(a.processes, [sys.executable, a.script, *a.args],
                                cpu_devices=a.cpu_devices, port=a.port, timeout=a.timeout)
    # killed by signal N (a process, or the launcher by SIGTERM/SIGINT): 128 + N, as a shell
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    sys.exit(main())
