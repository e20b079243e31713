"""Process ownership: whatever ends the owner, no process it started -- nor any they started -- is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from nemo_recipes import processes

DEAF_TO_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"

# A replica worker in miniature: the leader of its group, with a grandchild that, like vLLM's EngineCore, ignores
# SIGTERM and does not watch its parent. It writes both pids and waits.
WORKER = textwrap.dedent(f"""
    import os, subprocess, sys, time
    from nemo_recipes import processes
    with processes.group_leader(grace_s=2):
        engine = subprocess.Popen([sys.executable, "-c", {DEAF_TO_SIGTERM!r}])
        open(sys.argv[1], "w").write(f"{{os.getpid()}} {{engine.pid}}")
        time.sleep(120)
""")

# The stage in miniature: owns one worker, stops it in `finally`, and turns a SIGTERM into that unwinding.
OWNER = textwrap.dedent("""
    import subprocess, sys, time
    from nemo_recipes import processes
    with processes.sigterm_raises():
        worker = processes.start([sys.executable, "-c", sys.argv[1], sys.argv[2]])
        try:
            worker.wait()
        finally:
            processes.stop(worker, grace_s=5)
""")


def _wait_for_pids(path, timeout=30) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text():
            return [int(pid) for pid in path.read_text().split()]
        time.sleep(0.05)
    pytest.fail(f"no pids in {path} after {timeout} s")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def _wait_until_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    left = [pid for pid in pids if _alive(pid)]
    for pid in left:  # never leave them behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    return left


def _owner(tmp_path):
    pid_file = tmp_path / "pids"
    owner = subprocess.Popen([sys.executable, "-c", OWNER, WORKER, str(pid_file)])
    return owner, _wait_for_pids(pid_file)


def test_a_sigkilled_owner_leaves_no_worker_nor_anything_the_worker_started(tmp_path):
    owner, (worker, engine) = _owner(tmp_path)
    assert os.getpgid(worker) == worker == os.getpgid(engine) != os.getpgid(owner.pid)
    owner.kill()
    owner.wait()
    # The death signal reaches the worker, which ends its group within its 2 s grace.
    assert _wait_until_gone([worker, engine], timeout=10) == []


def test_a_sigterm_to_the_owner_stops_its_workers_before_it_exits(tmp_path):
    owner, (worker, engine) = _owner(tmp_path)
    owner.terminate()
    assert owner.wait(timeout=30) == 128 + signal.SIGTERM
    assert not _alive(worker) and not _alive(engine)  # stop() returned only once the group was empty


def test_stop_kills_a_group_that_ignores_sigterm_after_the_grace_period():
    child = processes.start([sys.executable, "-c", DEAF_TO_SIGTERM])
    time.sleep(0.5)  # let it install its handler
    started = time.monotonic()
    processes.stop(child, grace_s=1)
    assert 1 <= time.monotonic() - started < 10
    assert child.returncode == -signal.SIGKILL and processes.group_members(child.pid) == []


def test_stop_returns_at_once_when_the_group_ends_on_sigterm():
    child = processes.start(["sleep", "120"])
    started = time.monotonic()
    processes.stop(child, grace_s=30)
    assert time.monotonic() - started < 5 and child.returncode == -signal.SIGTERM


def test_stop_gives_several_groups_one_grace_period_together_not_one_each():
    children = [processes.start([sys.executable, "-c", DEAF_TO_SIGTERM]) for _ in range(3)]
    time.sleep(1)  # let them install their handlers
    started = time.monotonic()
    processes.stop(*children, grace_s=3)
    assert time.monotonic() - started < 8  # one after another: at least 9 s
    assert all(child.returncode == -signal.SIGKILL and processes.group_members(child.pid) == [] for child in children)
