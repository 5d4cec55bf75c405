"""Shared fixtures: a PRNG key per test derived from its name, so a failure replays."""

import os
import tempfile
import zlib

import jax
import pytest

from tests import _memory


@pytest.fixture
def key(request):
    """A `jax.random.key` seeded by a CRC of the test's node id (stable across runs)."""
    return jax.random.key(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (gradient checks)."""
    with jax.enable_x64(True):
        yield


def pytest_configure(config):
    """Experiment runs in the tests compile into a throwaway cache, not the user's; XLA
    compiles without LLVM's optimizations (see `_XLA_TEST_FLAGS`)."""
    os.environ.setdefault("JAXNETS_CACHE_DIR", tempfile.mkdtemp(prefix="jaxnets-test-cache-"))
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:  # a caller's own choice wins
        os.environ["XLA_FLAGS"] = f"{flags} {_XLA_TEST_FLAGS}".strip()


# Compiling is most of the suite's time (thousands of small programs, run once each), and
# LLVM's optimizations are ~40% of it. Set before JAX starts its backend, and inherited by
# the subprocesses the tests start. The tests' tolerances do not depend on it, and the XLA
# CPU miscompilation of tests/test_losses_xla.py reproduces without optimizations too.
_XLA_TEST_FLAGS = "--xla_backend_optimization_level=0"

# Every compiled program (~1.5 MiB each on CPU, thousands in the suite) stays in JAX's caches
# for the whole session: ~4 GiB by the end. After a test leaves the process above the limit,
# the caches are dropped and freed memory is handed back to the OS; later tests recompile
# only what they use. The limit then rises to what stayed plus a margin (memory that was not
# a cache), so the clearing cannot repeat after every test.
_RSS_LIMIT = int(float(os.environ.get("JAXNETS_TEST_RSS_LIMIT_MIB", "1024")) * 2**20)
_RSS_MARGIN = 384 * 2**20
_limit = _RSS_LIMIT


@pytest.fixture(autouse=True)
def _bounded_memory(request):
    """Drop JAX's compilation caches after a test when the process holds more than the limit."""
    yield
    global _limit
    if _memory.rss() > _limit:
        _memory.release(request.node.nodeid)
        _limit = max(_RSS_LIMIT, _memory.rss() + _RSS_MARGIN)
