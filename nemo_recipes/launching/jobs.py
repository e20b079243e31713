"""The jobs a Slurm submission is made of: which stages each job runs, on what, after which other jobs.

Pure data, no Slurm call: `plan_jobs` turns the stages still to run of one or several runs (a reproduction target)
into a graph of jobs, which `nemo_recipes.launching.sbatch` writes as scripts and `slurm` submits.

    sampling   an array of `num_shards` shards, one node each (its GPUs as vLLM replicas), then the merge in a CPU
               job after them (`merge_only`): a shard that ends early never waits for the others
    training   one job of cluster.nodes nodes (a task per GPU for NeMo-Aligner), then continuation jobs after it
               (`afterany`), each resuming from the last checkpoint, until sft.max_steps -- as `ns train` chains
    cpu        everything else; consecutive CPU stages share one job when the jobs they wait for allow it

A stage that an earlier run of the same submission computes (same stage key: reuse_from) gets no compute job of its
own: the job that needs it waits for that run's job and links the result (pipeline._reuse).
"""

from __future__ import annotations

import dataclasses
import math

from nemo_recipes.launch import training_seconds_per_job

ARRAY_INDEX = "${SLURM_ARRAY_TASK_ID}"  # expanded by the job's shell: the shard of an array task


@dataclasses.dataclass
class Job:
    key: str                          # unique in the submission: "<run>/<label>"
    run: str                          # the experiment it belongs to
    kind: str                         # cpu | sampling | training
    stages: list[str]
    overrides: list[str] = dataclasses.field(default_factory=list)  # on top of the run's own
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    array: int = 0                    # > 0: an array of this many shards
    after_ok: list[str] = dataclasses.field(default_factory=list)   # job keys it waits to succeed
    after_any: list[str] = dataclasses.field(default_factory=list)  # job keys it waits to end (continuations)
    hours: float = 0.0                # estimated wall-clock, planning only
    module_args: list[str] = dataclasses.field(default_factory=list)  # another command than the run's stages:
                                      # python -m <module_args> (a target's report)

    @property
    def label(self) -> str:
        return self.key.split("/", 1)[1]


@dataclasses.dataclass
class RunJobs:
    """What plan_jobs needs to know of one run."""

    name: str
    cfg: object
    stages: list                      # pipeline.Stage still to run, in graph order
    keys: dict[str, str]              # pipeline.stage_keys: equal keys in two runs = the same computation
    hours: dict[str, float]           # estimated GPU-hours of each stage (resources.Estimate.gpu_hours)
    complete_keys: set[str] = dataclasses.field(default_factory=set)  # keys of the stages complete in its folder


def plan_jobs(runs: list[RunJobs]) -> list[Job]:
    """Every job of the submission, each after the jobs it waits for."""
    jobs: list[Job] = []
    computed_by: dict[str, str] = {}  # stage key -> the job (of any run) that completes it
    complete = set().union(*(run.complete_keys for run in runs))  # ...or a run of the submission has completed
    for run in runs:
        completes: dict[str, str] = {}  # stage name -> the job of this run that completes it
        for stage in run.stages:
            waits = {completes[need] for need in stage.needs if need in completes}
            key = run.keys[stage.name]
            if key in computed_by or key in complete:  # another run computes it or has it: link it here, after
                producer = {computed_by[key]} if key in computed_by else set()  # the job computing it if any
                completes[stage.name] = _cpu_job(jobs, run.name, stage.name, waits | producer)
                continue
            if stage.job == "sampling":
                completes[stage.name] = _sampling_jobs(jobs, run, stage, waits)
            elif stage.job == "training":
                completes[stage.name] = _training_jobs(jobs, run, stage, waits)
            else:
                completes[stage.name] = _cpu_job(jobs, run.name, stage.name, waits)
            computed_by[key] = completes[stage.name]
    return jobs


def _sampling_jobs(jobs: list[Job], run: RunJobs, stage, waits: set[str]) -> str:
    from nemo_recipes.models import sampling_config, sampling_key

    role = stage.param("role")
    sampling, cluster = sampling_config(run.cfg, role), run.cfg.cluster
    gpus = int(cluster.gpus_per_node) if sampling.backend == "vllm" else 0
    shards = int(sampling.num_shards)
    key = sampling_key(role)
    hours = run.hours.get(stage.name, 0.0) / (shards * max(gpus, 1))
    if shards == 1:  # one node generates and merges
        return _add(jobs, Job(f"{run.name}/{stage.name}", run.name, "sampling", [stage.name], gpus_per_node=gpus,
                              after_ok=sorted(waits), hours=hours))
    array = _add(jobs, Job(f"{run.name}/{stage.name}-shards", run.name, "sampling", [stage.name],
                           [f"{key}.shard={ARRAY_INDEX}"], gpus_per_node=gpus, array=shards, after_ok=sorted(waits),
                           hours=hours))
    return _cpu_job(jobs, run.name, stage.name, {array}, overrides=[f"{key}.merge_only=true"], label="merge")


def _training_jobs(jobs: list[Job], run: RunJobs, stage, waits: set[str]) -> str:
    cluster, sft = run.cfg.cluster, run.cfg.sft
    gpus = int(cluster.gpus_per_node)
    if sft.backend == "nemo_aligner":  # a task per GPU, each one rank of Megatron (srun sets the ranks)
        nodes, tasks, gpus_per_node = int(cluster.nodes), gpus, gpus
    else:  # the reference trainer: one process, on one GPU when the nodes have any
        nodes, tasks, gpus_per_node = 1, 1, min(gpus, 1)
    total = run.hours.get(stage.name, 0.0) / max(nodes * gpus_per_node, 1)
    count = training_job_count(cluster, total)
    key = None
    for number in range(1, count + 1):
        previous = key
        key = _add(jobs, Job(f"{run.name}/{stage.name}" + (f"-{number}" if count > 1 else ""), run.name, "training",
                             [stage.name], nodes=nodes, tasks_per_node=tasks, gpus_per_node=gpus_per_node,
                             after_ok=sorted(waits) if previous is None else [],
                             after_any=[previous] if previous else [], hours=total / count))
    return key


def add_final_job(jobs: list[Job], key: str, module_args: list[str]) -> None:
    """A CPU job after every job that no other job waits for (a target's report, once all its runs are done)."""
    waited = {parent for job in jobs for parent in job.after_ok + job.after_any}
    jobs.append(Job(key, key.split("/", 1)[0], "cpu", [], module_args=module_args,
                    after_ok=[job.key for job in jobs if job.key not in waited]))


def training_job_count(cluster, hours: float) -> int:
    """Jobs in a training chain: cluster.training_jobs, or enough of cluster.time_limit for the estimated `hours`
    (each stops sft.stop_before_time_limit early to save), plus one for the estimate's error."""
    if cluster.get("training_jobs"):
        return int(cluster.training_jobs)
    if not cluster.get("time_limit"):
        return 1
    usable = training_seconds_per_job(cluster) / 3600
    return math.ceil(hours / usable) + 1 if hours > 0 else 1


def _cpu_job(jobs: list[Job], run: str, stage: str, waits: set[str], overrides: list[str] = (), label: str = "") -> str:
    """Add `stage` to the CPU job it can share -- the last job of this run, when that is a CPU job that already waits
    (itself or through its own waits) for everything the stage waits for -- or start a new CPU job."""
    last = next((job for job in reversed(jobs) if job.run == run), None)
    if last is not None and last.kind == "cpu" and waits <= _ancestors(jobs, last.key) | {last.key}:
        last.stages.append(stage)
        last.overrides += [o for o in overrides if o not in last.overrides]
        return last.key
    return _add(jobs, Job(f"{run}/{stage}" + (f"-{label}" if label else ""), run, "cpu", [stage], list(overrides),
                          after_ok=sorted(waits)))


def _ancestors(jobs: list[Job], key: str) -> set[str]:
    by_key = {job.key: job for job in jobs}
    seen: set[str] = set()
    todo = [key]
    while todo:
        for parent in (lambda job: job.after_ok + job.after_any)(by_key[todo.pop()]):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def _add(jobs: list[Job], job: Job) -> str:
    if any(other.key == job.key for other in jobs):
        raise AssertionError(f"two jobs named {job.key}")
    jobs.append(job)
    return job.key


def critical_path_hours(jobs: list[Job]) -> float:
    """The longest chain of estimated wall-clock hours through the graph (jobs come after the jobs they wait for)."""
    finish: dict[str, float] = {}
    for job in jobs:
        start = max((finish[parent] for parent in job.after_ok + job.after_any), default=0.0)
        finish[job.key] = start + job.hours
    return max(finish.values(), default=0.0)
