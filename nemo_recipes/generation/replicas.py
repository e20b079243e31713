"""Data-parallel vLLM on one node: one process per group of `tensor_parallel_size` GPUs, each taking the node's
next unclaimed chunk until none is left (a claim is a file made with O_EXCL beside the chunks), so a replica that
is slower, or alone after a crash of the others, never leaves GPUs idle while chunks wait.

    /opt/vllm-venv/bin/python -m nemo_recipes.generation.replicas <the run's overrides> --stage sample_teacher \
        --replica 0 --replicas 4

The sample stage starts these workers itself, even for one replica, with the interpreter of the environment vLLM
lives in (`cluster.vllm_python`; vLLM's torch pin differs from NeMo's, so they never share one) and
CUDA_VISIBLE_DEVICES set per group, and merges their chunk files;
a worker runs no other stage and takes no lock -- the stage that started it holds the stage's.
Each worker leads a process group that holds vLLM's engine processes too (nemo_recipes/processes.py): a SIGTERM, or
the death of the stage, shuts the engine down and ends the group, so no engine outlives its stage.
"""

from __future__ import annotations

import re
import sys
from typing import Mapping

from nemo_recipes.errors import UserError

# How long a replica may take to shut vLLM down after a SIGTERM before its process group is SIGKILLed.
SHUTDOWN_GRACE_S = 30

# An LD_LIBRARY_PATH entry inside a Python environment's packages: the NGC image puts its own torch's lib/ there,
# and the loader searches LD_LIBRARY_PATH before a library's RUNPATH, so the vLLM venv's torch would load the
# container's libtorch and fail on its first symbol.
_PYTHON_PACKAGES_DIR = re.compile(r"/(site|dist)-packages(/|$)")


def gpu_groups(num_gpus: int, tensor_parallel_size: int, visible: str | None = None) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each replica: consecutive groups of tensor_parallel_size GPUs, taken from the devices
    this process may use (`visible`: its own CUDA_VISIBLE_DEVICES, set by the user or the scheduler) or else 0..N-1."""
    if tensor_parallel_size < 1 or num_gpus < tensor_parallel_size or num_gpus % tensor_parallel_size:
        raise UserError(f"cluster.gpus_per_node={num_gpus} cannot be split into vLLM replicas of "
                        f"generation_tp={tensor_parallel_size} GPUs; make the GPU count a multiple of it.")
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(g) for g in range(num_gpus)]
    if len(devices) < num_gpus:
        raise UserError(f"CUDA_VISIBLE_DEVICES={visible} names {len(devices)} GPUs but cluster.gpus_per_node is "
                        f"{num_gpus}; set cluster.gpus_per_node={len(devices)} or widen CUDA_VISIBLE_DEVICES.")
    return [",".join(devices[start:start + tensor_parallel_size]) for start in range(0, num_gpus, tensor_parallel_size)]


def worker_environment(environ: Mapping[str, str], gpus: str, own_python: bool) -> dict[str, str]:
    """A replica's environment: its GPUs, and -- when vLLM runs in its own virtualenv (`own_python` False) -- none of
    the container python's PYTHONPATH (NeMo's sources) or its packages' shared libraries on LD_LIBRARY_PATH."""
    env = {**environ, "CUDA_VISIBLE_DEVICES": gpus}
    if own_python:
        return env
    env.pop("PYTHONPATH", None)
    kept = [entry for entry in env.pop("LD_LIBRARY_PATH", "").split(":")
            if entry and not _PYTHON_PACKAGES_DIR.search(entry)]
    if kept:
        env["LD_LIBRARY_PATH"] = ":".join(kept)
    return env


def check_worker_imports(python: str) -> None:
    """Import torch and vLLM with `python` in a replica's environment (the image build runs this; no GPU needed):
    a clash of shared libraries shows here, not at the first sample stage."""
    import os
    import subprocess

    code = ("import torch, vllm; from vllm import LLM, SamplingParams; "
            "print('vLLM', vllm.__version__, 'torch', torch.__version__)")
    result = subprocess.run([python, "-c", code], env=worker_environment(os.environ, "", own_python=False),
                            capture_output=True, text=True)
    if result.returncode:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"{python} cannot import torch and vLLM in a replica's environment: {last}")
    print(result.stdout.strip())


def worker_command(python: str, argv: list[str], stage_name: str, replica: int, replicas: int) -> list[str]:
    """A replica worker run by `python`: in our image the vLLM virtualenv's interpreter (cluster.vllm_python)."""
    return [python, "-m", "nemo_recipes.generation.replicas", *argv, "--stage", stage_name,
            "--replica", str(replica), "--replicas", str(replicas)]


def main(argv: list[str]) -> int:
    from pathlib import Path

    from nemo_recipes.config import compose_config
    from nemo_recipes.pipeline import StageContext, stage_graph
    from nemo_recipes.processes import group_leader
    from nemo_recipes.stages.sample import generate_replica

    overrides, options = argv[: argv.index("--stage")], argv[argv.index("--stage"):]
    settings = dict(zip(options[::2], options[1::2]))
    cfg = compose_config(overrides)
    stage = next(s for s in stage_graph(cfg) if s.name == settings["--stage"])
    with group_leader(grace_s=SHUTDOWN_GRACE_S):
        generate_replica(StageContext(cfg, stage, Path(cfg.run_dir), progress=bool(cfg.progress)),
                         int(settings["--replica"]), int(settings["--replicas"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
