"""Run one paper table: every run its reproduce/ entry names, then the table's report beside the paper's figures.

    python -m nemo_recipes.reproduce main dry_run=true          # make reproduce-main ARGS="dry_run=true"
    python -m nemo_recipes.reproduce ablation-scale              # make ablation-scale (a GPU node)
    python -m nemo_recipes.reproduce --report main ablation-source   # make report: render from what has run
    python -m nemo_recipes.reproduce --list

Overrides after the target apply to every run of it (e.g. `eval_sampling.n=16 runs_root=/scratch/runs`). The plan of
every run is printed first, with the target's total GPU-hours and disk; a run that this machine cannot serve (GPUs,
disk, models on local disk) is refused before anything starts, and runs that are complete are skipped.
Reports go to <runs_root>/reports/<target>/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nemo_recipes.errors import RequirementsNotMet, UserError

USAGE = """usage: python -m nemo_recipes.reproduce TARGET [key=value ...]
       python -m nemo_recipes.reproduce --report [TARGET ...] [key=value ...]
       python -m nemo_recipes.reproduce --list"""
# Keys that name a run's folder: one value for several runs would make them overwrite each other.
_PER_RUN_KEYS = ("experiment", "experiment_name", "run_dir")


def compose_runs(target, overrides: list[str]) -> dict:
    """{experiment: composed config} for every run of the target, with the user's overrides on each."""
    from nemo_recipes.config import compose_configs

    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key in _PER_RUN_KEYS:
            raise UserError(f"override '{override}' would give every run of target {target.name} the same "
                            f"{key}; the target names its runs itself (set runs_root=... to move them all).")
    runs = [[f"experiment={experiment}", *overrides] for experiment in target.experiments]
    configs = dict(zip(target.experiments, compose_configs(runs)))
    _narrow_stage_lists(target, configs)
    return configs


def _narrow_stage_lists(target, configs: dict) -> None:
    """`stages` and `force` given to a target apply to the runs that have those stages (the evaluation-only
    baseline has no sft); a name that no run has is refused, as one run refuses an unknown stage."""
    from nemo_recipes.pipeline import stage_graph

    names = {experiment: [stage.name for stage in stage_graph(cfg)] for experiment, cfg in configs.items()}
    for key in ("stages", "force"):
        given = next(iter(configs.values())).get(key)
        if given is None:
            continue
        known = {name for run in names.values() for name in run}
        for name in given:
            if name not in known:
                raise UserError(f"{key}: unknown stage '{name}'; the runs of target {target.name} have "
                                f"{', '.join(sorted(known))}.")
        for experiment, cfg in configs.items():
            cfg[key] = [name for name in given if name in names[experiment]]


def report_dir(configs: dict, target_name: str) -> Path:
    return Path(next(iter(configs.values())).runs_root) / "reports" / target_name


def plan_target(target, configs: dict, overrides: list[str]):
    """Print every run's plan and the target's total. Returns (the target's total, each run's own cost) of what is
    still to run; a stage that an earlier run of the target computes is counted there only."""
    from nemo_recipes.pipeline import print_plan, selected_stages, stage_keys
    from nemo_recipes.resources import size_text, total

    print(f"target {target.name} (make {target.make}): {target.title}")
    print(f"runs: {', '.join(configs)}; report: {report_dir(configs, target.name)}/report.md\n")
    needs, computed_by = [], {}
    for experiment, cfg in configs.items():
        stages = selected_stages(cfg)
        keys = stage_keys(cfg)
        shared = {}
        for stage in stages:
            key = keys[stage.name]
            if key in computed_by:
                shared[stage.name] = computed_by[key]
            else:
                computed_by[key] = experiment
        needs.append(print_plan(cfg, stages, [f"experiment={experiment}", *overrides], shared))
        print()
    overall = total(needs)
    print(f"target {target.name}, still to run: ~{overall.gpu_hours:,.1f} GPU-hours (up to {overall.gpus} GPUs at "
          f"once), ~{size_text(overall.disk_gb + overall.peak_extra_gb)} of disk at the peak")
    return overall, needs


def check_target(target, configs: dict, overall, needs: list) -> None:
    """Refuse before the first run starts if any run of the target could not."""
    from nemo_recipes.resources import unmet_requirements

    problems: list[str] = []
    first = next(iter(configs.values()))
    problems += unmet_requirements(first, overall, models=False)
    for cfg, need in zip(configs.values(), needs):
        problems += [p for p in unmet_requirements(cfg, need, hardware=False) if p not in problems]
    if problems:
        raise RequirementsNotMet(f"target {target.name}", problems)


def render_target_report(target, configs: dict) -> Path:
    from nemo_recipes.pipeline import run_state
    from nemo_recipes.report.render import load_result, write_report
    from nemo_recipes.targets import paper_figures

    states = {experiment: run_state(cfg) for experiment, cfg in configs.items()}
    results = []
    for row in target.rows:
        cfg = configs[row.experiment]
        paper, note = paper_figures(cfg, row)
        results.append(load_result(row.label, row.experiment, row.role, Path(cfg.run_dir), paper, row.source, note,
                                   status=states[row.experiment]))
    intro = (f"{target.description} Runs: {', '.join(f'`{name}`' for name in configs)}; "
             f"`make {target.make}` runs them, `make report` renders this page again from what has run.")
    return write_report(report_dir(configs, target.name), title=target.title, intro=intro.strip(), results=results,
                        configs=configs)


def run_target(name: str, overrides: list[str]) -> int:
    from nemo_recipes.pipeline import run_pipeline
    from nemo_recipes.targets import load_target

    target = load_target(name)
    configs = compose_runs(target, overrides)
    from nemo_recipes.launching import submits

    if submits(configs.values()):  # Slurm: one submission holds every run's jobs; its last job renders the report
        return _submit_target(target, configs, overrides)
    overall, needs = plan_target(target, configs, overrides)
    if any(cfg.dry_run for cfg in configs.values()):
        return 0
    check_target(target, configs, overall, needs)
    for number, (experiment, cfg) in enumerate(configs.items(), start=1):
        print(f"\n=== run {experiment} ({number} of {len(configs)}) ===", flush=True)
        # Stages identical to one in another run of the target are copied from there, not recomputed.
        siblings = [str(other.run_dir) for name, other in configs.items() if name != experiment]
        cfg.reuse_from = [*cfg.reuse_from, *siblings]
        run_pipeline(cfg, argv=[f"experiment={experiment}", *overrides], check=False)  # check_target checked all
    print(f"report: {render_target_report(target, configs)}")
    return 0


def _submit_target(target, configs: dict, overrides: list[str]) -> int:
    """Every run of the target as Slurm jobs in one submission: a stage two runs share is computed by one job that
    the other run's job waits for and links (reuse_from)."""
    from nemo_recipes.launching.slurm import Run, submit

    for experiment, cfg in configs.items():
        siblings = [str(other.run_dir) for name, other in configs.items() if name != experiment]
        cfg.reuse_from = [*cfg.reuse_from, *siblings]
    return submit([Run(experiment, cfg, overrides) for experiment, cfg in configs.items()], name=target.name,
                  target=target.name)


def report_targets(names: list[str], overrides: list[str]) -> int:
    from nemo_recipes.targets import load_target, target_names

    for name in names or target_names():
        target = load_target(name)
        print(f"report: {render_target_report(target, compose_runs(target, overrides))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from nemo_recipes.cli import exit_status

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\n\n" + __doc__.split("\n\n", 1)[1])
        return 0 if argv else 2
    if argv[0] == "--list":
        return exit_status(list_targets)
    if argv[0] == "--report":
        names = [arg for arg in argv[1:] if "=" not in arg]
        return exit_status(lambda: report_targets(names, [arg for arg in argv[1:] if "=" in arg]))
    return exit_status(lambda: run_target(argv[0], argv[1:]))


def list_targets() -> None:
    from nemo_recipes.targets import load_target, target_names

    for name in target_names():
        target = load_target(name)
        print(f"{name:<22} make {target.make:<22} {', '.join(target.experiments)}")


if __name__ == "__main__":
    sys.exit(main())
