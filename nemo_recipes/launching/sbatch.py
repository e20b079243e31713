"""The batch script of one job: its #SBATCH header, its environment, and one `srun` of our own command, in the
image through pyxis when cluster.container_image is set.

    #SBATCH --job-name=main/sft-1 --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 --time=04:00:00 ...
    export HF_HUB_OFFLINE=1 ...
    srun --container-image=/lustre/images/nemo_recipes.sqsh --container-mounts=... \
         python3 -m nemo_recipes experiment=main ... stages=[sft] cluster.inside_job=true

Everything a job needs is in its script and its command line, so the dry run shows exactly what will run. The
layout follows NeMo-Skills' jobs (nemo_run's Slurm executor): one srun task per GPU for training, one task per node
for vLLM, `--no-container-mount-home`, `--kill-on-bad-exit=1`, variables handed to the container by
`--container-env`.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from nemo_recipes.launching.jobs import ARRAY_INDEX, Job


def script(job: Job, *, cluster, command: list[str], environment: dict[str, str], mounts: list[str],
           workdir: str, log: str, dependencies: list[str]) -> str:
    """The batch script; `dependencies` are sbatch's dependency terms, e.g. ["afterok:123", "afterany:124"]."""
    header = _header(job, cluster, log, dependencies)
    exports = [f"export {name}={_value(value)}" for name, value in environment.items()]
    srun = srun_command(job, cluster, environment=environment, mounts=mounts, workdir=workdir)
    return "\n".join(["#!/bin/bash", *header, "set -u", "", *exports,
                      'export NEMO_RECIPES_JOB_START="$(date +%s)"  # training stops to save before the limit', "",
                      " \\\n    ".join([*map(_word, srun), " ".join(map(_word, command))]), ""])


def _header(job: Job, cluster, log: str, dependencies: list[str]) -> list[str]:
    partition = cluster.get("cpu_partition") if job.kind == "cpu" and cluster.get("cpu_partition") else \
        cluster.get("partition")
    flags = [("job-name", f"{job.key}"), ("nodes", job.nodes), ("ntasks-per-node", job.tasks_per_node)]
    if job.gpus_per_node:
        flags.append(("gpus-per-node", job.gpus_per_node))
    if job.kind == "cpu":
        flags.append(("cpus-per-task", int(cluster.get("cpus_per_task") or 1)))
    flags += [("partition", partition), ("account", cluster.get("account")), ("time", cluster.get("time_limit"))]
    if job.array:
        flags.append(("array", f"0-{job.array - 1}"))
    if dependencies:
        flags.append(("dependency", ",".join(dependencies)))
    flags += [("output", log), ("open-mode", "append")]
    lines = [f"#SBATCH --{name}={value}" for name, value in flags if value not in (None, "")]
    return lines + [f"#SBATCH {arg}" for arg in cluster.get("sbatch_extra_args") or []]


def srun_command(job: Job, cluster, *, environment: dict[str, str], mounts: list[str], workdir: str) -> list[str]:
    """The srun that runs the job's command over its tasks, in the container when there is one."""
    srun = ["srun", f"--nodes={job.nodes}", f"--ntasks-per-node={job.tasks_per_node}", "--kill-on-bad-exit=1",
            "--wait=10"]
    image = pyxis_image(cluster.get("container_image"))
    if image:
        srun += [f"--container-image={image}", f"--container-mounts={','.join(mounts)}",
                 f"--container-workdir={workdir}", "--no-container-mount-home",
                 # pyxis keeps the image's value of a variable the image sets (PATH, PYTHONPATH, ...) unless named here
                 f"--container-env={','.join(sorted(environment))}"]
    srun += [str(arg) for arg in cluster.get("srun_extra_args") or []]
    return srun


def pyxis_image(image) -> str | None:
    """What --container-image gets. pyxis reads the value as a squashfs file only when it starts with '.' or '/', and
    pulls anything else from a registry (pyxis_slurmstepd.c): a file is given as its absolute path."""
    if not image:
        return None
    image = str(image)
    if image.endswith(".sqsh") or Path(image).is_file():
        return str(Path(image).absolute())
    return image


def _word(word: str) -> str:
    """A shell word; the shard of an array task stays a variable for the job's shell to expand."""
    if ARRAY_INDEX in word:
        before, _, after = word.partition(ARRAY_INDEX)
        return f"{shlex.quote(before)}\"{ARRAY_INDEX}\"{shlex.quote(after) if after else ''}"
    return shlex.quote(word)


def _value(value: str) -> str:
    return shlex.quote(str(value))


def log_path(log_dir: Path, job: Job) -> str:
    """Slurm's output file: the job's name, its id, and the shard for an array task."""
    return str(log_dir / (job.key.replace("/", "--") + ("-%A_%a.log" if job.array else "-%j.log")))
