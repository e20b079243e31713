"""A real one-node Slurm on localhost for the tests: munged, slurmctld and slurmd from Debian's slurm-wlm and munge
packages, in a temporary folder, with eight fake GPUs (shared/research/cluster-and-vllm-cpu.md, section 1).

    with local_slurm(tmp_path) as environment:      # SLURM_CONF and the daemons, gone when the block ends
        subprocess.run(["sbatch", "--wait", script], env={**os.environ, **environment})

Run by hand: `python tests/integration/local_slurm.py /tmp/slurm` starts one and prints `export SLURM_CONF=...`
(stop it with `pkill -f /tmp/slurm`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sinfo", "sbatch")


def unavailable() -> str | None:
    """Why a local Slurm cannot start here (a sentence for pytest.skip), or None."""
    missing = [name for name in DAEMONS if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists()]
    if missing:
        return f"no local Slurm: {', '.join(missing)} not installed (apt-get install slurm-wlm munge; .ci/run does)"
    if os.geteuid() != 0:
        return "no local Slurm: its daemons run as root here, and this is not root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no local Slurm: the munge user is missing (the munge package creates it)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@contextlib.contextmanager
def local_slurm(folder: Path, cpus: int = 8) -> Iterator[dict[str, str]]:
    """Start the daemons under `folder`, yield the environment that points Slurm's commands at them, stop them."""
    try:
        yield start(folder, cpus)
    finally:
        stop(folder)


def start(folder: Path, cpus: int = 8) -> dict[str, str]:
    """Start munged, slurmctld and slurmd under `folder`; returns the environment that points Slurm's commands at
    them (SLURM_CONF). They run until stop(folder)."""
    folder = Path(folder)
    for sub in ("state", "spool", "log", "gpus"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    # munged runs as the munge user, who must reach its folder: not under a 0700 temporary folder of root's, and
    # with a short path (a socket's path has at most 107 bytes).
    munge = Path(tempfile.mkdtemp(prefix="nemo-recipes-munge-"))
    (folder / "munge-dir").write_text(str(munge))
    shutil.chown(munge, "munge", "munge")
    munge.chmod(0o711)  # munged checks the socket's folder: others may reach the socket but not list the folder
    as_munge = ["runuser", "-u", "munge", "--"]
    subprocess.run([*as_munge, _binary("mungekey"), "--create", f"--keyfile={munge / 'munge.key'}"], check=True)
    subprocess.run([*as_munge, _binary("munged"), f"--key-file={munge / 'munge.key'}",
                    f"--log-file={munge / 'munged.log'}", f"--pid-file={munge / 'munged.pid'}",
                    f"--seed-file={munge / 'munged.seed'}", f"--socket={munge / 'munge.socket'}"], check=True)
    gpus = [folder / "gpus" / f"gpu{i}" for i in range(8)]
    for gpu in gpus:
        gpu.touch()
    conf = folder / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=nemorecipes",
        "SlurmctldHost=localhost",
        "SlurmUser=root",
        "SlurmdParameters=config_overrides",  # lets the node claim more CPUs than the machine has
        "AuthType=auth/munge",
        f"AuthInfo=socket={munge / 'munge.socket'}",
        "CredType=cred/munge",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "ReturnToService=2",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'log' / 'slurmd.log'}",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "KillWait=5",          # seconds between SIGTERM and SIGKILL at a time limit or scancel
        "MinJobAge=3600",      # ended jobs stay visible to scontrol (no accounting daemon here)
        "GresTypes=gpu",
        f"NodeName=localhost CPUs={cpus} RealMemory=20000 Gres=gpu:8 State=UNKNOWN",
        "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        "",
    ]))
    (folder / "gres.conf").write_text(f"NodeName=localhost Name=gpu File={folder / 'gpus'}/gpu[0-7]\n")
    environment = {"SLURM_CONF": str(conf)}
    env = {**os.environ, **environment}
    try:
        subprocess.run([_binary("slurmctld"), "-i"], env=env, check=True)
        subprocess.run([_binary("slurmd"), "-N", "localhost"], env=env, check=True)
        _wait_idle(env, folder)
    except BaseException:
        stop(folder)
        raise
    return environment


def _wait_idle(env: dict, folder: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout.strip()
        if state == "idle":
            return
        time.sleep(0.5)
    log = (folder / "log" / "slurmctld.log").read_text()[-2000:] if (folder / "log" / "slurmctld.log").exists() else ""
    raise RuntimeError(f"the local Slurm did not come up (sinfo: {state!r}); slurmctld.log ends:\n{log}")


def stop(folder: Path) -> None:
    """SIGTERM the daemons by their pid files, then SIGKILL what is left of them and of the jobs they ran."""
    pids = []
    munge = Path((folder / "munge-dir").read_text()) if (folder / "munge-dir").exists() else folder / "munge"
    for pid_file in (folder / "slurmd.pid", folder / "slurmctld.pid", munge / "munged.pid"):
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(pid_file.read_text().strip()))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    subprocess.run(["pkill", "-KILL", "-f", f"slurmstepd.*{folder}"], capture_output=True)
    shutil.rmtree(munge, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/nemo-recipes-slurm")
    problem = unavailable()
    if problem:
        sys.exit(problem)
    print(f"export SLURM_CONF={start(target)['SLURM_CONF']}")
