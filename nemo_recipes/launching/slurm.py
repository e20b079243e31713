"""Submit runs as Slurm jobs from the login node, and follow, wait for or cancel them.

    python -m nemo_recipes experiment=main cluster=slurm cluster.partition=batch          # submit, print ids, return
    python -m nemo_recipes.reproduce main cluster=slurm cluster.partition=batch           # a whole paper target
    python -m nemo_recipes.jobs status main          # each stage's manifest state beside its job's Slurm state
    python -m nemo_recipes.jobs cancel main

Plain sbatch scripts that we write and show in the dry run, not a launcher library: the login node then needs this
package and the Slurm client only (nemo-run would bring its own environment -- its omegaconf pin clashes with
Hydra's -- and polls sacct, which many clusters and our test cluster lack), and every line a job runs is visible.

A submission lives in <runs_root>/.jobs/<name>/<time>/: `submission.json` (runs, jobs, ids), `scripts/`,
`logs/` and `code/`, a copy of the package, its conf/ and reproduce/ that every job runs, so editing the checkout
while jobs wait never changes what they run. The run folders' manifests stay the truth about what is done: a job
runs `python -m nemo_recipes ... stages=[...]`, which skips what is complete, and submitting again after a failure
submits only what is not complete.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nemo_recipes.errors import UserError
from nemo_recipes.io import read_json, write_json
from nemo_recipes.launching.jobs import Job, RunJobs, add_final_job, critical_path_hours, plan_jobs
from nemo_recipes.launching.sbatch import log_path, script

JOBS_DIR = ".jobs"
SUBMISSION = "submission.json"  # in each submission's folder, the record of its runs and jobs
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE", "GONE"}
# Keys the submit command decides for every job itself, so the user's values never reach a job's command line.
_SUBMIT_ONLY_KEYS = ("stages", "force", "dry_run", "cluster.wait", "runs_root", "run_dir", "cache_dir", "reuse_from",
                     "experiment", "experiment_name")


@dataclasses.dataclass
class Run:
    """One run of a submission: its composed config and the overrides it was composed from."""

    name: str
    cfg: object
    overrides: list[str]


def submit(runs: list[Run], *, name: str, target: str | None = None) -> int:
    """Plan, check and submit the jobs of `runs` (one experiment, or every run of a reproduction `target`, whose
    report a last job renders); with cluster.wait, wait for them and return 1 when a run did not complete."""
    first = runs[0].cfg
    jobs, needs = plan_submission(runs, target=target)
    _print_jobs(jobs, first.cluster)
    root = Path(first.runs_root).absolute() / JOBS_DIR / name
    if first.dry_run:
        _print_scripts(jobs, runs, root / "<time>")
        return 0
    if not jobs:
        print("nothing to submit: every selected stage is complete.")
        return 0
    _check_requirements(runs, needs)
    _refuse_if_active(root)
    _move_forced_aside(runs)
    submission = root / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    record = _submit(jobs, runs, submission)
    print(f"submitted {len(jobs)} jobs ({submission}): " + ", ".join(f"{j['key']} {j['id']}" for j in record["jobs"]))
    print(f"follow them with: python -m nemo_recipes.jobs status {name}   (cancel: ... jobs cancel {name})")
    if not bool(first.cluster.get("wait")):
        return 0
    return wait(submission, poll_s=float(first.cluster.get("poll_s") or 30))


def plan_submission(runs: list[Run], *, target: str | None = None) -> tuple[list[Job], list]:
    """Print every run's plan; return the jobs of the submission, and what each run's stages still to run need
    (resources.Estimate; a stage an earlier run computes counts there only)."""
    from nemo_recipes.pipeline import print_plan, selected_stages, stage_keys

    plans, needs, shared_by = [], [], {}
    for run in runs:
        keys, stages = stage_keys(run.cfg), selected_stages(run.cfg)
        shared = {stage.name: shared_by[keys[stage.name]] for stage in stages if keys[stage.name] in shared_by}
        needs.append(print_plan(run.cfg, stages, [f"experiment={run.name}", *run.overrides], shared))
        print()
        shared_by.update({key: run.name for key in keys.values() if key not in shared_by})
        plans.append(_run_jobs(run.cfg, keys))
    jobs = plan_jobs(plans)
    if target and jobs:
        add_final_job(jobs, f"{target}/report", ["nemo_recipes.reproduce", "--report", target,
                                                 *_common_overrides(runs[0])])
    return jobs, needs


def _run_jobs(cfg, keys) -> RunJobs:
    from nemo_recipes.pipeline import pending_stages, stage_estimate, stage_states, StageContext

    stages = pending_stages(cfg)
    hours = {stage.name: stage_estimate(StageContext(cfg, stage, Path(cfg.run_dir), progress=False)).gpu_hours
             for stage in stages}
    complete = {keys[name] for name, state in stage_states(cfg).items() if state == "complete, will skip"}
    return RunJobs(cfg.experiment_name, cfg, stages, keys, hours, complete)


def _print_jobs(jobs: list[Job], cluster) -> None:
    if not jobs:
        return
    print(f"Slurm jobs ({len(jobs)}), partition {cluster.get('partition')}, time limit {cluster.get('time_limit')}:")
    for job in jobs:
        size = f"{job.nodes} node(s) x {job.tasks_per_node} task(s)" + (
            f" x {job.gpus_per_node} GPUs" if job.gpus_per_node else ", no GPU")
        waits = [f"afterok {k}" for k in job.after_ok] + [f"afterany {k}" for k in job.after_any]
        array = f", array of {job.array} shards" if job.array else ""
        print(f"  {job.key:<34} {','.join(job.stages):<40} {size}{array}"
              + (f"; after {', '.join(waits)}" if waits else ""))
    gpus = max(int(cluster.gpus_per_node), 1)
    gpu_hours = sum(job.hours * job.nodes * max(job.gpus_per_node, 1) * max(job.array, 1) for job in jobs
                    if job.gpus_per_node)
    floor = gpu_hours / (int(cluster.nodes) * gpus)
    chain = critical_path_hours(jobs)
    print(f"wall-clock on {cluster.nodes} node(s) of {cluster.gpus_per_node} GPUs: ~{max(chain, floor):,.1f} h "
          f"(the longest chain of jobs ~{chain:,.1f} h; {gpu_hours:,.1f} GPU-hours on {cluster.nodes} x "
          f"{cluster.gpus_per_node} GPUs take at least {floor:,.1f} h), from the GPU-hour estimates above")


def _print_scripts(jobs: list[Job], runs: list[Run], submission: Path) -> None:
    for job in jobs:
        dependencies = [f"afterok:<{k}>" for k in job.after_ok] + [f"afterany:<{k}>" for k in job.after_any]
        print(f"\n--- {job.key} ---")
        print(job_script(job, _run_of(job, runs), submission, dependencies), end="")


def _run_of(job: Job, runs: list[Run]) -> Run:
    """The run a job belongs to (a target's report job: the first run, for the shared settings)."""
    return next((run for run in runs if run.name == job.run), runs[0])


def job_script(job: Job, run: Run, submission: Path, dependencies: list[str]) -> str:
    """The batch script of `job` in the submission folder `submission`, waiting on `dependencies`."""
    cluster = run.cfg.cluster
    code = submission / "code"
    environment = job_environment(run.cfg, code)
    return script(job, cluster=cluster, command=job_command(job, run), environment=environment,
                  mounts=job_mounts(run.cfg, code), workdir=str(code), log=log_path(submission / "logs", job),
                  dependencies=dependencies)


def job_command(job: Job, run: Run) -> list[str]:
    """Our own command line for the job: the run's overrides, its stages, its own keys."""
    cluster = run.cfg.cluster
    python = cluster.get("job_python") or ("python3" if cluster.get("container_image") else sys.executable)
    if job.module_args:
        return [python, "-m", *job.module_args, "cluster.inside_job=true"]
    return [python, "-m", "nemo_recipes", *run_overrides(run), f"stages=[{','.join(job.stages)}]",
            "cluster.inside_job=true", *job.overrides]


def run_overrides(run: Run) -> list[str]:
    """The overrides that compose the run's config anywhere: the user's, with its folders made absolute."""
    cfg = run.cfg
    folders = [f"run_dir={Path(cfg.run_dir).absolute()}"]
    if cfg.get("reuse_from"):
        folders.append("reuse_from=[" + ",".join(f"'{Path(p).absolute()}'" for p in cfg.reuse_from) + "]")
    return [f"experiment={run.name}", *_common_overrides(run), *folders]


def _common_overrides(run: Run) -> list[str]:
    """The user's overrides that every job of the submission shares, with the shared folders made absolute."""
    cfg = run.cfg
    kept = [o for o in run.overrides if o.lstrip("+~").split("=", 1)[0] not in _SUBMIT_ONLY_KEYS]
    return [*kept, f"runs_root={Path(cfg.runs_root).absolute()}", f"cache_dir={Path(cfg.cache_dir).absolute()}"]


def job_environment(cfg, code: Path) -> dict[str, str]:
    from nemo_recipes.resources import hub_cache_dir

    environment = {
        "PYTHONPATH": str(code),  # the submission's copy of the package, not the image's
        "NEMO_RECIPES_CONF": str(code / "conf"),
        "NEMO_RECIPES_REPRODUCE": str(code / "reproduce"),
        "HF_HUB_CACHE": str(hub_cache_dir().absolute()),
        "TMPDIR": str(Path(cfg.runs_root).absolute() / ".tmp"),  # /tmp of a container is small; NeMo stages there
        "PYTHONUNBUFFERED": "1",
    }
    if not cfg.cluster.allow_downloads:
        environment["HF_HUB_OFFLINE"] = "1"
    return environment


def job_mounts(cfg, code: Path) -> list[str]:
    """Container mounts: every folder a job reads or writes, at the path it has on the login node."""
    from nemo_recipes.launch import model_folder_to_mount, same_path_mounts
    from nemo_recipes.resources import hub_cache_dir

    folders = [code, Path(cfg.runs_root), Path(cfg.cache_dir), hub_cache_dir()]
    for model in (cfg.teacher, cfg.student):
        if model.source == "local" and model.path:
            folders.append(model_folder_to_mount(Path(model.path).absolute()))
    return same_path_mounts(folders, extra=cfg.cluster.get("container_mounts") or ())


def _check_requirements(runs: list[Run], needs: list) -> None:
    from nemo_recipes.errors import RequirementsNotMet
    from nemo_recipes.resources import unmet_requirements

    problems = []
    for run, need in zip(runs, needs):
        problems += [p for p in unmet_requirements(run.cfg, need) if p not in problems]
    image = _image_problem(runs[0].cfg.cluster)
    if image:
        problems.append(image)
    if shutil.which("sbatch") is None:
        problems.append("sbatch is not on PATH: cluster=slurm submits from a Slurm login node (or use "
                        "cluster=local on a GPU node).")
    if problems:
        raise RequirementsNotMet("the submission", problems)


def _image_problem(cluster) -> str | None:
    """pyxis reads --container-image as a squashfs file only when it starts with '.' or '/'; anything else is pulled
    from a registry (pyxis_slurmstepd.c). So a file is passed as an absolute path, and a missing one is refused."""
    image = cluster.get("container_image")
    if not image or not str(image).endswith(".sqsh"):
        return None
    if not Path(image).is_file():
        return (f"cluster.container_image={image} is not a file here: give the path of the enroot image on the shared "
                f"file system (make it with `enroot import -o /shared/nemo_recipes.sqsh dockerd://nemo_recipes:latest`)"
                f", or a registry image such as nvcr.io#nvidia/nemo:25.02 for pyxis to pull.")
    return None


def _refuse_if_active(root: Path) -> None:
    latest = latest_submission(root)
    if latest is None:
        return
    active = [job["key"] for job in live_jobs(read_submission(latest))]
    if active:
        raise UserError(f"jobs of the last submission ({latest.name}) are still queued or running "
                        f"({', '.join(active)}); wait for them (python -m nemo_recipes.jobs status {root.name}) or cancel them "
                        f"(python -m nemo_recipes.jobs cancel {root.name}) before submitting again.")


def _move_forced_aside(runs: list[Run]) -> None:
    """`force` is done here, once: a job that moved its stage aside would restart a continuation from scratch."""
    from nemo_recipes.pipeline import MANIFEST, move_aside

    for run in runs:
        for stage in run.cfg.get("force") or []:
            folder = Path(run.cfg.run_dir) / stage
            if (folder / MANIFEST).exists():
                print(f"[{stage}] forced: moved the previous results to {move_aside(folder, Path(run.cfg.run_dir))}")


def _submit(jobs: list[Job], runs: list[Run], submission: Path) -> dict:
    from nemo_recipes.config import CONF_DIR
    from nemo_recipes.pipeline import selected_stages
    from nemo_recipes.targets import REPRODUCE_DIR

    code = submission / "code"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(Path(__file__).resolve().parents[1], code / "nemo_recipes", ignore=ignore)
    shutil.copytree(CONF_DIR, code / "conf", ignore=ignore)
    shutil.copytree(REPRODUCE_DIR, code / "reproduce", ignore=ignore)
    for folder in ("scripts", "logs"):
        (submission / folder).mkdir(parents=True)
    (Path(runs[0].cfg.runs_root).absolute() / ".tmp").mkdir(parents=True, exist_ok=True)
    ids: dict[str, str] = {}
    record = {"created": dt.datetime.now().isoformat(timespec="seconds"), "jobs": [],
              "runs": {run.name: {"run_dir": str(Path(run.cfg.run_dir).absolute()), "overrides": run_overrides(run),
                                  "stages": [stage.name for stage in selected_stages(run.cfg)]} for run in runs}}
    try:
        for job in jobs:
            dependencies = ([f"afterok:{':'.join(ids[k] for k in job.after_ok)}"] if job.after_ok else []) + (
                [f"afterany:{':'.join(ids[k] for k in job.after_any)}"] if job.after_any else [])
            path = submission / "scripts" / (job.key.replace("/", "--") + ".sbatch")
            path.write_text(job_script(job, _run_of(job, runs), submission, dependencies))
            ids[job.key] = sbatch(path)
            record["jobs"].append({**dataclasses.asdict(job), "id": ids[job.key], "script": str(path),
                                   "log": log_path(submission / "logs", job)})
    except BaseException:
        if ids:
            cancel_ids(list(ids.values()))
            print(f"cancelled the {len(ids)} jobs submitted before the failure.", file=sys.stderr)
        raise
    finally:
        write_json(submission / SUBMISSION, record)
    return record


def sbatch(path: Path) -> str:
    result = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True)
    if result.returncode:
        reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"sbatch refused {path}: {reason}")
    return result.stdout.strip().split(";")[0]


def cancel_ids(ids: list[str]) -> None:
    subprocess.run(["scancel", *ids], capture_output=True, text=True)


def read_submission(folder: Path) -> dict:
    """What a submission folder records: its runs, with their overrides and stages, and its jobs, with their ids."""
    return read_json(folder / SUBMISSION)


def live_jobs(record: dict) -> list[dict]:
    """The jobs of a submission that Slurm still has queued or running (any task of an array)."""
    states = job_states([job["id"] for job in record["jobs"]])
    return [job for job in record["jobs"] if not all(state in ENDED for state, _ in states[job["id"]])]


def tasks_text(tasks: list[tuple[str, str]]) -> str:
    """A job's Slurm state as printed: `COMPLETED`, `FAILED exit 75:0`, one entry per task of an array."""
    return ", ".join(f"{state} {detail}".strip() for state, detail in tasks)


def latest_submission(root: Path) -> Path | None:
    submissions = sorted(p for p in root.glob("*") if (p / SUBMISSION).is_file()) if root.is_dir() else []
    return submissions[-1] if submissions else None


def job_states(ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    """{job id: [(state, detail), ...]}, one pair per task of an array, from the controller (scontrol, which keeps
    ended jobs for MinJobAge) and else accounting (sacct, where it runs). A job neither knows is GONE."""
    wanted = set(ids)
    states: dict[str, list[tuple[str, str]]] = {}
    listing = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True)
    for line in listing.stdout.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        job = fields.get("ArrayJobId") or fields.get("JobId")
        if job in wanted:
            detail = fields.get("Reason", "None")
            if fields.get("ExitCode", "0:0") != "0:0":
                detail = f"exit {fields['ExitCode']}"
            task = fields.get("ArrayTaskId")
            states.setdefault(job, []).append((fields.get("JobState", "UNKNOWN"),
                                               f"{detail}" + (f" (shard {task})" if task else "")))
    missing = [job for job in ids if job not in states]
    if missing and shutil.which("sacct"):
        accounting = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode", "-j",
                                     ",".join(missing)], capture_output=True, text=True)
        for line in accounting.stdout.splitlines() if accounting.returncode == 0 else []:
            job_id, state, exit_code = (line.split("|") + ["", "", ""])[:3]
            base, _, task = job_id.partition("_")
            states.setdefault(base, []).append((state.split()[0] if state else "UNKNOWN",
                                                f"exit {exit_code}" + (f" (shard {task})" if task else "")))
    return {job: states.get(job, [("GONE", "no longer listed")]) for job in ids}


def wait(submission: Path, poll_s: float = 30) -> int:
    """Follow the submission's jobs until every one has ended; a job that can never start (it waits for one that
    failed) is cancelled. Returns 0 when every run's selected stages are complete, else 1 with why."""
    record = read_submission(submission)
    ids = {job["id"]: job for job in record["jobs"]}
    seen: dict[str, list] = {}
    while True:
        states = job_states(list(ids))
        for job_id, tasks in states.items():
            if tasks != seen.get(job_id):
                print(f"  {ids[job_id]['key']} ({job_id}): {tasks_text(tasks)}", flush=True)
        seen = states
        stuck = [job_id for job_id, tasks in states.items()
                 if any(s == "PENDING" and "DependencyNeverSatisfied" in d for s, d in tasks)]
        if stuck:
            print(f"cancelling {', '.join(ids[j]['key'] for j in stuck)}: each waits for a job that failed",
                  flush=True)
            cancel_ids(stuck)
        if all(s in ENDED for tasks in states.values() for s, _ in tasks):
            break
        time.sleep(poll_s)
    return _outcome(record)


def _outcome(record: dict) -> int:
    """0 when the manifests say every run is done, else 1 and one line per run that is not."""
    unfinished = []
    for name, stages in run_stage_states(record).items():
        left = [f"{stage} ({state})" for stage, state in stages.items() if state != "complete, will skip"]
        if left:
            unfinished.append(f"run {name}: {', '.join(left)}")
    if unfinished:
        logs = Path(record["jobs"][0]["log"]).parent if record["jobs"] else None
        print("not complete: " + "; ".join(unfinished) + f". The job logs are in {logs}; submit again to resume.",
              file=sys.stderr)
        return 1
    print("every stage is complete.")
    return 0


def run_stage_states(record: dict) -> dict[str, dict[str, str]]:
    """{run: {stage: its state in the manifests}} for the stages each run of a submission selected."""
    from nemo_recipes.config import compose_config
    from nemo_recipes.pipeline import stage_states

    result = {}
    for name, run in record["runs"].items():
        selected = set(run["stages"])
        states = stage_states(compose_config(run["overrides"]), selected)
        result[name] = {stage: state for stage, state in states.items() if stage in selected}
    return result
