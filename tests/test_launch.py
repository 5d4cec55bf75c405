"""The launcher's process handling (train.distributed.launch, python -m train.launch).

The launched scripts are tiny and import nothing heavy (no JAX): what is tested is how the
launcher polls, reports and stops its processes. A script that ignores SIGTERM stands for
one that has called ``jax.distributed.initialize`` (JAX's preemption notifier catches it).
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from train import distributed, launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Process FAIL fails (exit status 3, or SIGKILLs itself with "kill") as soon as the others
# have written their pid (so the test can find them; a loaded machine may start them late);
# the others write their pid, ignore SIGTERM and sleep 60 s.
SCRIPT = """
import os, signal, sys, time
i, n = int(os.environ["JAXNETS_PROCESS_ID"]), int(os.environ["JAXNETS_NUM_PROCESSES"])
fail, how, folder = sys.argv[1:4]
if str(i) == fail:
    others = [os.path.join(folder, f"pid{j}") for j in range(n) if j != i]
    end = time.monotonic() + 30
    while not all(map(os.path.exists, others)) and time.monotonic() < end:
        time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGKILL) if how == "kill" else sys.exit(3)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(os.path.join(folder, f"pid{i}.tmp"), "w") as f:
    f.write(str(os.getpid()))
os.rename(os.path.join(folder, f"pid{i}.tmp"), os.path.join(folder, f"pid{i}"))
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


def _pids(folder, n, within=20.0):
    end = time.monotonic() + within
    while time.monotonic() < end:
        names = [os.path.join(folder, f"pid{i}") for i in range(n)]
        if all(os.path.exists(p) for p in names):
            return [int(open(p).read()) for p in names]
        time.sleep(0.05)
    raise AssertionError(f"the processes did not start: {os.listdir(folder)}")


def _gone(pids, within=5.0):
    end = time.monotonic() + within
    while any(_alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.fixture(scope="module", autouse=True)
def _room():
    """This worker's JAX caches out (and its heap trimmed) before it starts processes: a
    child between fork and exec shows the parent's resident set."""
    from tests import _memory

    _memory.release("test_launch")
    yield


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "script.py"
    path.write_text(SCRIPT)
    return path


@pytest.mark.parametrize("fail, how, status, says", [
    (1, "exit", 3, "process 1 failed (exit status 3); stopping the others"),
    (2, "kill", -9, "process 2 failed (killed by signal 9 (SIGKILL)); stopping the others"),
])
def test_a_failed_process_that_is_not_process_0_stops_the_others_at_once(
        script, tmp_path, capfd, monkeypatch, fail, how, status, says):
    monkeypatch.setattr(distributed, "STOP_GRACE_S", 0.5, raising=False)
    start = time.monotonic()
    rc = distributed.launch(3, [sys.executable, script, fail, how, tmp_path], timeout=50)
    assert rc == status
    assert time.monotonic() - start < 45  # not the 60 s of the others' sleep
    assert says in capfd.readouterr().err
    assert not _gone([int((tmp_path / f"pid{i}").read_text()) for i in range(3) if i != fail])


def test_timeout_kills_processes_that_ignore_sigterm_after_the_grace_period(
        script, tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(distributed, "STOP_GRACE_S", 0.5, raising=False)
    start = time.monotonic()
    rc = distributed.launch(2, [sys.executable, script, -1, "exit", tmp_path], timeout=2)
    took = time.monotonic() - start
    assert rc == 124
    assert took < 2 + 0.5 + 5, took  # timeout + grace + slack, not the 60 s sleep
    assert "timeout after 2 s; stopping the processes" in capfd.readouterr().err
    assert not _gone(_pids(tmp_path, 2), within=0.1)


# SIGKILL: the processes die with the launcher through PR_SET_PDEATHSIG, which only Linux has
# (the launcher promises it there alone), so the case exists only on Linux.
_SIGNALS = [(signal.SIGTERM, 128 + 15), (signal.SIGINT, 128 + 2)] + (
    [(signal.SIGKILL, -9)] if sys.platform.startswith("linux") else [])


@pytest.mark.parametrize("sig, status", _SIGNALS)
def test_a_signalled_launcher_leaves_no_process_behind(script, tmp_path, sig, status):
    """SIGTERM/SIGINT: the launcher stops its processes and exits 143/130; SIGKILL: the
    processes die with it (PR_SET_PDEATHSIG, Linux)."""
    proc = subprocess.Popen([sys.executable, "-m", "train.launch", "-n", "2", "--timeout", "50",
                             str(script), "-1", "exit", str(tmp_path)],
                            cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pids = _pids(tmp_path, 2, within=60)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == status, out
        assert not _gone(pids, within=10), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_bad_process_count_is_a_usage_error_naming_n(capsys):
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as e:
            launch.main(["-n", bad, "script.py"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1] == (
            f"python -m train.launch: error: argument -n/--processes: expected an int >= 1, "
            f"got {bad}")
        assert "Traceback" not in err


def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error(capsys):
    for bad in ("0", "-5", "inf", "soon"):
        with pytest.raises(SystemExit) as e:
            launch.main(["-n", "2", "--timeout", bad, "script.py"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1] == (
            f"python -m train.launch: error: argument --timeout: expected a number of seconds "
            f"> 0, got {bad}")
