"""Follow, wait for or cancel what a Slurm submission started.

    python -m nemo_recipes.jobs status main        # each stage's manifest state beside its job's Slurm state
    python -m nemo_recipes.jobs wait main          # until every job has ended; exit 1 unless every stage is complete
    python -m nemo_recipes.jobs cancel main        # cancel every job of main's last submission that has not ended

NAME is an experiment (python -m nemo_recipes experiment=NAME cluster=slurm) or a reproduction target
(python -m nemo_recipes.reproduce NAME cluster=slurm); without it, the latest submission under runs_root.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nemo_recipes.errors import UserError

USAGE = "usage: python -m nemo_recipes.jobs status|wait|cancel [NAME] [runs_root=FOLDER]"
COMMANDS = ("status", "wait", "cancel")


def main(argv: list[str] | None = None) -> int:
    from nemo_recipes.cli import exit_status

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(USAGE + "\n\n" + __doc__.split("\n\n", 1)[1])
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    names = [arg for arg in argv[1:] if "=" not in arg]
    runs_root = next((arg.split("=", 1)[1] for arg in argv[1:] if arg.startswith("runs_root=")), "runs")
    command = {"status": status, "wait": _wait, "cancel": cancel}[argv[0]]
    return exit_status(lambda: command(_submission(Path(runs_root), names)))


def _submission(runs_root: Path, names: list[str]) -> Path:
    from nemo_recipes.launching.slurm import JOBS_DIR, latest_submission

    root = runs_root.absolute() / JOBS_DIR
    if names:
        found = latest_submission(root / names[0])
    else:
        found = max((s for folder in root.glob("*") if (s := latest_submission(folder))), default=None,
                    key=lambda s: s.name)
    if found is None:
        raise UserError(f"no submission {'named ' + names[0] + ' ' if names else ''}under {root}; submit with "
                        f"cluster=slurm first (or give runs_root=... as you did then).")
    return found


def status(submission: Path) -> int:
    from nemo_recipes.launching.slurm import job_states, read_submission, run_stage_states, tasks_text

    record = read_submission(submission)
    states = job_states([job["id"] for job in record["jobs"]])
    print(f"submission {submission.parent.name} of {record['created']} ({submission})")
    for run, stages in run_stage_states(record).items():
        print(f"\nrun {run} ({record['runs'][run]['run_dir']})")
        for stage, state in stages.items():
            jobs = [job for job in record["jobs"] if job["run"] == run and stage in job["stages"]]
            slurm = "; ".join(f"{job['key']} {job['id']}: {tasks_text(states[job['id']])}" for job in jobs)
            print(f"  {stage:<16} {state:<40} {slurm or '-'}")
    for job in (job for job in record["jobs"] if not job["stages"]):  # a target's report
        print(f"\n{job['key']} {job['id']}: {tasks_text(states[job['id']])}")
    print(f"\nlogs: {submission / 'logs'}")
    return 0


def _wait(submission: Path) -> int:
    from nemo_recipes.launching.slurm import wait

    return wait(submission, poll_s=10)


def cancel(submission: Path) -> int:
    from nemo_recipes.launching.slurm import cancel_ids, live_jobs, read_submission

    live = live_jobs(read_submission(submission))
    if live:
        cancel_ids([job["id"] for job in live])
    print(f"cancelled {len(live)} job(s) of {submission}" + (": " + ", ".join(j["key"] for j in live) if live else
                                                             "; every job had ended already"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
