"""Child processes that never outlive the process that started them, however it ends (Linux).

In the process that owns children (a stage, a Slurm job step):

    with processes.sigterm_raises():                 # a SIGTERM to us unwinds through the `finally` below
        child = processes.start(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            code = child.wait()
        finally:
            processes.stop(child, grace_s=30)        # SIGTERM its group; SIGKILL what is left 30 s on

In a child that `start` made and that starts processes of its own which do not watch their parent (vLLM's
EngineCore and its workers, which ignore a dead parent and shrug off SIGTERM):

    with processes.group_leader(grace_s=30):        # SIGTERM unwinds our `finally` blocks (engine shutdown),
        generate()                                   # then SIGKILLs whatever is left of our group

Together they cover every way the owner can end: it returns or raises (`finally`), it gets SIGTERM
(`sigterm_raises`), or it is SIGKILLed or crashes -- then Linux sends the child SIGTERM (a parent-death signal
set by `start`) and the child's `group_leader` ends its whole group. The child is the leader of a process group
of its own, which everything it starts inherits, so one signal reaches all of them, and a Ctrl-C in a terminal
reaches only the owner, which then stops the children in order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import Sequence

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def start(command: Sequence[str], **popen_kwargs) -> subprocess.Popen:
    """Popen `command` as the leader of a new process group that gets SIGTERM when this process dies.

    Linux sends the death signal when the *thread* that started the child ends: call this from a thread that lives
    as long as the child does (the main thread)."""
    return subprocess.Popen(list(command), preexec_fn=_new_group_ending_with(os.getpid()), **popen_kwargs)


def _new_group_ending_with(parent: int):
    """The preexec_fn of `start`. Everything is looked up here, in the parent: between fork and exec the child only
    makes system calls (an import or dlopen there can deadlock on a lock another thread held at the fork)."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        os.setpgid(0, 0)
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the owner died before the death signal was armed
            os._exit(1)

    return hook


def stop(*children: subprocess.Popen, grace_s: float) -> None:
    """End each child and every process in its group: SIGTERM to all now, SIGKILL for those still there after
    grace_s -- one grace period for all of them, so the last of several replicas is not left generating while the
    first ones shut down.

    Returns once every leader is reaped and every group is empty (or holds only zombies for init to reap)."""
    for child in children:
        _signal_group(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_group_alive(child) for child in children):
        time.sleep(0.1)
    for child in children:
        _signal_group(child.pid, signal.SIGKILL)
        child.wait()


def _group_alive(process: subprocess.Popen) -> bool:
    process.poll()  # reap the leader as soon as it exits: a zombie leader would keep the group "alive"
    return bool(group_members(process.pid))


def group_members(group: int) -> list[int]:
    """The processes of process group `group` that are not zombies, read from the process table."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()  # after "(comm)", which may hold spaces
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == group and fields[0] != b"Z":
            members.append(int(entry.name))
    return members


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)


@contextlib.contextmanager
def sigterm_raises():
    """Within the block a SIGTERM raises SystemExit(143) in the main thread, so `finally` blocks stop children (and
    release locks) as they would on an exception; the previous handler comes back afterwards. A no-op outside the
    main thread, where Python cannot set signal handlers."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def group_leader(grace_s: float):
    """For the leader of a group that `start` made: a SIGTERM -- from `stop`, or the death signal when the owner died
    -- raises SystemExit(143) so the block's `finally` blocks shut down what it started; then, or after grace_s if
    they hang, every other process of the group is SIGKILLed, so none outlives the owner even when nobody is left to
    `stop` it. A normal exit leaves the group alone (the owner's `stop` ends any stragglers)."""
    terminated = False

    def on_sigterm(signum, frame):
        nonlocal terminated
        if terminated:  # a second SIGTERM (killpg reaches us too) must not interrupt the shutdown it started
            return
        terminated = True
        signal.signal(signal.SIGALRM, lambda *_: _signal_group(os.getpgrp(), signal.SIGKILL))  # ends us as well
        signal.alarm(max(1, round(grace_s)))
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        if terminated:
            _kill_group_except_me()
        signal.signal(signal.SIGTERM, previous)


def _kill_group_except_me() -> None:
    for pid in group_members(os.getpgrp()):
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
