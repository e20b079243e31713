"""Refuse, in one sentence, to start a GPU job on a machine without NVIDIA GPUs (after the plan was printed).

    python -m nemo_recipes.gpu_check "make reproduce-main"     # exit 0 with GPUs, 3 without
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys

NGC_NEMO_IMAGE = "nvcr.io/nvidia/nemo:25.02"  # ships NeMo-Aligner 0.7.0 under /opt/NeMo-Aligner (research 5.2)


def visible_gpus() -> int:
    """Number of GPUs `nvidia-smi -L` lists; 0 without the driver. No torch import: this runs before every job."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())


def how_to_get_there(target: str) -> str:
    from nemo_recipes.launch import docker_run_command

    command = docker_run_command(NGC_NEMO_IMAGE, ["make", *target.split()[1:]],
                                 mounts=["$PWD:/workspace/nemo_recipes", "$HOME/.cache/huggingface:/root/.cache/huggingface"],
                                 workdir="/workspace/nemo_recipes")
    return " ".join(shlex.quote(part) if not part.startswith("$") else part for part in command)


def main(argv: list[str]) -> int:
    target = argv[0] if argv else "this target"
    if visible_gpus() > 0:
        return 0
    print(f"{target} needs NVIDIA GPUs (the 32B SFT plan uses TP 8 x CP 4) and the NeMo container, and this machine "
          f"has none: run it on a GPU node with `{how_to_get_there(target)}` (or `make demo` for the CPU toy "
          f"pipeline).", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
