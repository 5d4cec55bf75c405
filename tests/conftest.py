"""Shared fixtures: a PRNG key per test derived from its name, so a failure replays."""

import gc
import os
import tempfile
import zlib

import jax
import pytest


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
    """Experiment runs in the tests compile into a throwaway cache, not the user's."""
    os.environ.setdefault("JAXNETS_CACHE_DIR", tempfile.mkdtemp(prefix="jaxnets-test-cache-"))


_CLEAR = os.environ.get("JAXNETS_TEST_CLEAR", "none")


@pytest.fixture(autouse=True, scope="module")
def _clear_module():
    yield
    if _CLEAR == "module":
        jax.clear_caches()
        gc.collect()


@pytest.fixture(autouse=True)
def _clear_test():
    yield
    if _CLEAR == "test":
        jax.clear_caches()
        gc.collect()
