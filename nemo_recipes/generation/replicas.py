"""Data-parallel vLLM on one node: one process per group of `tensor_parallel_size` GPUs, each owning every
replicas-th of the node's chunks.

    /opt/vllm-venv/bin/python -m nemo_recipes.generation.replicas <the run's overrides> --stage sample_teacher \
        --replica 0 --replicas 4

The sample stage starts these workers itself, even for one replica, with the interpreter of the environment vLLM
lives in (`cluster.vllm_python`; vLLM's torch pin differs from NeMo's, so they never share one) and
CUDA_VISIBLE_DEVICES set per group, and merges their chunk files;
a worker runs no other stage and takes no run lock -- the stage that started it holds it.
"""

from __future__ import annotations

import sys

from nemo_recipes.errors import UserError


def gpu_groups(num_gpus: int, tensor_parallel_size: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each replica: consecutive groups of tensor_parallel_size GPUs."""
    if tensor_parallel_size < 1 or num_gpus < tensor_parallel_size or num_gpus % tensor_parallel_size:
        raise UserError(f"cluster.gpus_per_node={num_gpus} cannot be split into vLLM replicas of "
                        f"generation_tp={tensor_parallel_size} GPUs; make the GPU count a multiple of it.")
    return [",".join(str(gpu) for gpu in range(start, start + tensor_parallel_size))
            for start in range(0, num_gpus, tensor_parallel_size)]


def replica_chunks(node_chunks: list[int], replica: int, replicas: int) -> list[int]:
    """The chunks one replica owns: every replicas-th of all the node's chunks, done or not, so the split is the
    same whenever a worker starts (a late or resumed worker must not shift its neighbours' shares)."""
    return node_chunks[replica::replicas]


def worker_command(python: str, argv: list[str], stage_name: str, replica: int, replicas: int) -> list[str]:
    """A replica worker run by `python`: in our image the vLLM virtualenv's interpreter (cluster.vllm_python)."""
    return [python, "-m", "nemo_recipes.generation.replicas", *argv, "--stage", stage_name,
            "--replica", str(replica), "--replicas", str(replicas)]


def main(argv: list[str]) -> int:
    from pathlib import Path

    from nemo_recipes.cli import compose_config
    from nemo_recipes.pipeline import StageContext, stage_graph
    from nemo_recipes.stages.sample import generate_replica

    overrides, options = argv[: argv.index("--stage")], argv[argv.index("--stage"):]
    settings = dict(zip(options[::2], options[1::2]))
    cfg = compose_config(overrides)
    stage = next(s for s in stage_graph(cfg) if s.name == settings["--stage"])
    generate_replica(StageContext(cfg, stage, Path(cfg.run_dir), progress=bool(cfg.progress)),
                     int(settings["--replica"]), int(settings["--replicas"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
