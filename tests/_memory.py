"""The test process's memory: a budget for JAX's caches (`Budget`, used by conftest.py) and
an opt-in report.

Every program JAX compiles (~1.5 MiB each on CPU: an eager op is a program per shape, and
the suite compiles thousands) stays in its caches for the whole session, ~4 GiB by the end.
`Budget` drops the caches and hands the freed memory back to the OS: at the end of a module
once the process holds more than `module_mib` (cheap: the next module compiles other
programs anyway), and after any test once it holds more than `test_mib` (dearer: the rest of
the module recompiles what it shares; only tests/test_gradients.py gets there).

As a plugin, `python -m pytest -p tests._memory`, it prints after the run the modules and
tests that raised the process's resident set (RSS after the test minus before it) or its peak
(`ru_maxrss`), and the largest peak of a child process (`RUSAGE_CHILDREN`; a child forked
from this process starts with its RSS). Use it to find what holds memory.
"""

import ctypes
import gc
import resource
from collections import defaultdict

import jax
import pytest

_PAGE = resource.getpagesize()
_rows = []  # (nodeid, rss_before, rss_after, peak_before, peak_after)
releases = []  # (where, rss before, rss after) per release()


def rss():
    """Current resident set size in bytes (Linux /proc/self/statm; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return 0


def _malloc_trim():
    """Hand free heap pages back to the OS (glibc keeps them otherwise); a no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def release(where=""):
    """Drop JAX's caches of traced and compiled programs, collect, and return the memory."""
    before = rss()
    jax.clear_caches()
    gc.collect()
    _malloc_trim()
    releases.append((where, before, rss()))


class Budget:
    """The plugin: `release()` after a test when the process is over budget (see above)."""

    def __init__(self, module_mib, test_mib):
        self.module, self.test = module_mib * 2**20, test_mib * 2**20
        self.floor = 0  # RSS after the last release: memory that was not a cache

    @pytest.hookimpl(hookwrapper=True, trylast=True)
    def pytest_runtest_teardown(self, item, nextitem):
        yield  # after the fixtures' teardown: a module's fixtures are gone at its end
        last_of_module = nextitem is None or nextitem.path != item.path
        limit = self.module if last_of_module else self.test
        # so that what survives a release (not a cache) cannot make every test release
        if rss() > max(limit, self.floor + 256 * 2**20):
            release(item.nodeid)
            self.floor = rss()


def _peak(who=resource.RUSAGE_SELF):
    return resource.getrusage(who).ru_maxrss * 1024  # Linux reports KiB


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    before, peak_before = rss(), _peak()
    yield
    _rows.append((item.nodeid, before, rss(), peak_before, _peak()))


def pytest_terminal_summary(terminalreporter):
    if not _rows:
        return
    mib = 2.0**20
    w = terminalreporter.write_line
    w("")
    w(f"memory: peak RSS {_peak() / mib:.0f} MiB (self), {_peak(resource.RUSAGE_CHILDREN) / mib:.0f} MiB"
      f" (largest child); RSS now {rss() / mib:.0f} MiB; caches released {len(releases)} times")
    by_module = defaultdict(lambda: [0, 0, 0])
    for nodeid, before, after, pb, pa in _rows:
        m = by_module[nodeid.split("::")[0]]
        m[0] += after - before
        m[1] += pa - pb
        m[2] = max(m[2], after)
    w("modules by RSS growth (MiB: growth, peak growth, highest RSS after a test):")
    for name, (grow, peak, end) in sorted(by_module.items(), key=lambda kv: -kv[1][0])[:15]:
        w(f"  {grow / mib:8.1f} {peak / mib:8.1f} {end / mib:8.0f}  {name}")
    w("tests by peak growth (MiB: peak growth, RSS growth):")
    for nodeid, before, after, pb, pa in sorted(_rows, key=lambda r: -(r[4] - r[3]))[:15]:
        w(f"  {(pa - pb) / mib:8.1f} {(after - before) / mib:8.1f}  {nodeid}")
    w("releases (MiB: RSS before, after; the test after which it ran):")
    for where, before, after in releases:
        w(f"  {before / mib:8.0f} {after / mib:8.0f}  {where}")
