"""Launching: which process runs which stages. The engine (pipeline.py) runs stages; this layer decides where.

    local   this process runs the selected stages one after another (a CPU box, or inside the image on a GPU node)
    slurm   the command on the login node submits them as Slurm jobs (launching/slurm.py) and returns; each job runs
            `python -m nemo_recipes ... stages=[...] cluster.inside_job=true`, which comes back here and runs them
            locally -- or, for the tasks after the first of a multi-task training job, follows that first task

Stages never import this package; the engine does not either.
"""

from __future__ import annotations

import os


def run_experiment(cfg, overrides: list[str]) -> int:
    """Run, plan or submit one experiment, as its cluster config says."""
    if _submits(cfg):
        from nemo_recipes.launching.slurm import Run, submit

        return submit([Run(cfg.experiment_name, cfg, overrides)], name=cfg.experiment_name)
    from nemo_recipes.pipeline import follow_stages, run_pipeline

    marker = _leader_done_marker(cfg)
    if marker is None:
        run_pipeline(cfg, argv=overrides)
    elif _task() > 0:
        follow_stages(cfg, leader_done=marker.exists)
    else:
        try:
            run_pipeline(cfg, argv=overrides)
        finally:  # the other tasks wait for this, whatever happened here (srun ends them if this one failed)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
    return 0


def submits(configs) -> bool:
    """Whether a set of runs (a reproduction target) goes to Slurm rather than running here."""
    return any(_submits(cfg) for cfg in configs)


def _submits(cfg) -> bool:
    return cfg.cluster.launcher == "slurm" and not cfg.cluster.get("inside_job")


def _leader_done_marker(cfg):
    """In a job step of several tasks (a task per GPU of multi-node training): the file the first task touches when
    it is done, which the others wait for. None for one task."""
    from pathlib import Path

    if not cfg.cluster.get("inside_job") or int(os.environ.get("SLURM_NTASKS", "1")) < 2:
        return None
    return Path(cfg.run_dir) / ".tasks" / f"{os.environ.get('SLURM_JOB_ID', 'job')}.leader-done"


def _task() -> int:
    return int(os.environ.get("SLURM_PROCID", "0"))
