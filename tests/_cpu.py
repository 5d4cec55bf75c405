"""Opt-in report of where the suite's CPU time goes: `python -m pytest -n0 -p tests._cpu`.

Wall-clock durations (`--durations`) are noisy on a shared machine; CPU time is not, or much
less. After the run this prints the files and the tests that took the most CPU seconds, this
process's and its children's (the subprocess tests) together, set-up and teardown included
(so a module-scoped fixture is charged to the test that first needs it). With workers,
set `JAXNETS_CPU_REPORT` (below).
"""

import json
import os
import resource
from collections import defaultdict

import pytest

_rows = []  # (nodeid, cpu seconds)


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    start = _cpu()
    yield
    _rows.append((item.nodeid, _cpu() - start))


def pytest_sessionfinish(session):
    """With pytest-xdist, each worker writes its rows to ``$JAXNETS_CPU_REPORT/<worker>.json``
    (workers print no summary): ``python -m pytest -p tests._cpu`` with that variable set."""
    folder = os.environ.get("JAXNETS_CPU_REPORT")
    if folder and _rows:
        os.makedirs(folder, exist_ok=True)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(os.path.join(folder, f"{worker}.json"), "w") as f:
            json.dump(_rows, f)


def pytest_terminal_summary(terminalreporter):
    if not _rows:
        return
    top = int(os.environ.get("JAXNETS_CPU_TOP", "25"))
    by_file = defaultdict(float)
    for nodeid, s in _rows:
        by_file[nodeid.split("::")[0]] += s
    write = terminalreporter.write_line
    write(f"\nCPU seconds (self + children), {sum(s for _, s in _rows):.1f} in all; by file:")
    for path, s in sorted(by_file.items(), key=lambda r: -r[1])[:top]:
        write(f"{s:8.1f}  {path}")
    write("by test:")
    for nodeid, s in sorted(_rows, key=lambda r: -r[1])[:top]:
        write(f"{s:8.1f}  {nodeid}")
