"""Data-parallel vLLM on one node: one replica process per group of `tensor_parallel_size` GPUs -- which GPUs each
gets, and the environment it runs in (vLLM's own virtualenv, `cluster.vllm_python`: its torch pin differs from
NeMo's, so they never share one). The replica worker itself is nemo_recipes/stages/sample_replica.py, started by the
sample stage.
"""

from __future__ import annotations

import re
from typing import Mapping

from nemo_recipes.errors import UserError

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
