"""A vLLM replica worker of a sampling stage: this node's chunks that are not on disk yet, each claimed (a file
made with O_EXCL beside the chunks) before it is generated, so replicas share the work as they go and one that is
slower, or alone after a crash of the others, never leaves GPUs idle while chunks wait.

    /opt/vllm-venv/bin/python -m nemo_recipes.stages.sample_replica <the run's overrides> --stage sample_teacher \
        --replica 0 --replicas 4

The sample stage starts one per GPU group itself, even for one replica (stages/sample.py, with the GPUs and the
environment of generation/replicas.py), and merges their chunk files. A worker runs no other stage and takes no
lock -- the stage that started it holds the stage's. Each worker leads a process group that holds vLLM's engine
processes too (nemo_recipes/processes.py): a SIGTERM, or the death of the stage, shuts the engine down and ends the
group, so no engine outlives its stage.
"""

from __future__ import annotations

import sys

# How long a replica may take to shut vLLM down after a SIGTERM before its process group is SIGKILLed.
SHUTDOWN_GRACE_S = 30


def worker_command(python: str, argv: list[str], stage_name: str, replica: int, replicas: int) -> list[str]:
    """A replica worker run by `python`: in our image the vLLM virtualenv's interpreter (cluster.vllm_python)."""
    return [python, "-m", __name__, *argv, "--stage", stage_name, "--replica", str(replica),
            "--replicas", str(replicas)]


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
