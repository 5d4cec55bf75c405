"""Shared fixtures: a PRNG key per test derived from its name, so a failure replays."""

import os
import shutil
import tempfile
import zlib

import pytest

# JAX is imported where it is used: pytest-xdist's controller process runs no test and so
# never imports it (~170 MB less at the suite's peak; the workers import it as they collect).


@pytest.fixture
def key(request):
    """A `jax.random.key` seeded by a CRC of the test's node id (stable across runs)."""
    import jax

    return jax.random.key(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (gradient checks)."""
    import jax

    with jax.enable_x64(True):
        yield


def pytest_configure(config):
    """The whole session (both workers, and the subprocesses tests start) compiles into one
    throwaway persistent cache, not the user's; XLA compiles without LLVM's optimizations;
    JAX's in-memory caches are kept to a memory budget; smoke runs draw draft figures."""
    if "JAXNETS_CACHE_DIR" not in os.environ:  # the controller: workers inherit the folder
        os.environ["JAXNETS_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxnets-test-cache-")
        _OWN_CACHE.append(os.environ["JAXNETS_CACHE_DIR"])
    # A worker drops its in-memory caches between files (the memory budget below); the same
    # programs are then read back from this folder instead of compiled again (~10% of the
    # suite's CPU). Environment variables for the processes started from here (the xdist
    # workers, the tests' subprocesses); jax.config for this one if it runs tests.
    cache = {"jax_compilation_cache_dir": os.environ["JAXNETS_CACHE_DIR"],
             "jax_persistent_cache_min_compile_time_secs": 0.0,
             "jax_persistent_cache_min_entry_size_bytes": -1}
    controller = config.getoption("numprocesses", None) and not hasattr(config, "workerinput")
    for name, value in cache.items():
        os.environ.setdefault(name.upper(), str(value))
    if not controller:  # a worker, or -n0: this process runs tests
        import jax

        for name, value in cache.items():
            jax.config.update(name, value)
    os.environ.setdefault("JAXNETS_DRAFT_FIGURES", "1")  # smoke runs: figures as drafts (_plot)
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:  # a caller's own choice wins
        os.environ["XLA_FLAGS"] = f"{flags} {_XLA_TEST_FLAGS}".strip()
    # A plugin, not an autouse fixture: it also runs after the doctests in nets/, train/, ...
    # The suite's budget is shared by the pytest-xdist workers (pyproject.toml's addopts).
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    share = float(os.environ.get("JAXNETS_TEST_MEMORY_MIB", "1400")) / workers
    if controller:
        return
    from tests import _memory

    config.pluginmanager.register(_memory.Budget(module_mib=0.7 * share, test_mib=0.9 * share),
                                  "jaxnets-memory-budget")


_OWN_CACHE = []  # the cache folder this process made (removed at the end)


def pytest_unconfigure(config):
    for path in _OWN_CACHE:
        shutil.rmtree(path, ignore_errors=True)


# Compiling is most of the suite's time (thousands of small programs, each run a few times).
# LLVM's optimizations were ~40% of it; XLA's new CPU fusion emitters (MLIR, on by default in
# jaxlib 0.10) about half of what was left: a 64-128-10 fit's program compiles in 0.41 s
# instead of 1.06 s with the older elemental emitters, and the suite's CPU time falls by
# about a third. Both only change how fast the compiled code runs, not what it computes
# (the fit's losses agree to the last printed digit). Set before JAX starts its backend;
# inherited by the subprocesses the tests start. The XLA CPU miscompilation of
# tests/test_losses_xla.py reproduces with these flags too.
_XLA_TEST_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


# The files that take longest (each >= ~10 s of CPU: an experiment's smoke run, the gradient
# grid, the README's tour, the multi-device subprocesses) run first, so that the two workers
# finish together instead of one of them running a long file at the end alone.
# test_distributed.py goes first of all: its subprocesses (three processes of ~360 MB at
# once) then run beside a worker that has only just started, not one grown to ~850 MB late
# in the run (measured peaks: 1.96 GiB with it first, 2.10-2.38 GiB with it mid-run).
_FIRST = ("tests/test_distributed.py", "tests/test_gradients.py", "tests/test_readme.py",
          "tests/test_exp_", "tests/test_sweep.py", "tests/test_runner.py", "tests/test_fit.py",
          "tests/test_diffusion.py", "tests/test_cnn.py", "tests/test_mamba.py")


def pytest_collection_modifyitems(config, items):
    """Longest files first (`_FIRST`, in that order); the rest keep their order."""
    def rank(item):
        path = item.nodeid.split("::")[0]
        return next((i for i, prefix in enumerate(_FIRST) if path.startswith(prefix)), len(_FIRST))
    items.sort(key=rank)  # stable: a file's tests stay together and in order
