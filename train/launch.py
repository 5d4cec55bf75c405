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


def _checked(convert, ok, expected: str):
    """An argparse type: ``convert(text)`` where ``ok`` holds, else a usage error naming the
    option (status 2) that says ``expected``."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


_at_least_one = _checked(int, lambda v: v >= 1, "an int >= 1")
_positive_seconds = _checked(float, lambda v: 0 < v < float("inf"), "a number of seconds > 0")


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
