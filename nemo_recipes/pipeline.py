"""The stage engine: stage graph, run folder, manifests, skip and resume, and the stage locks.

Each stage is a module in `nemo_recipes.stages` with `run(ctx) -> dict | None` and `plan(ctx) -> list[str]`. It
reads the folders of the stages it needs and writes only its own folder, `<run_dir>/<stage>/`, which holds a
`manifest.json`:

    status        running | complete | failed
    config_hash   hash of the config subtrees the stage reads (plus its parameters)
    inputs_hash   hash of the fingerprints of the stages it needs
    fingerprint   hash of the stage's output files -- what downstream stages hash, so a stage recomputed with
                  the same result leaves everything after it complete (but the report, whose provenance names
                  every stage's config hash)
    summary, commands, versions, host, argv, started, ended

A complete stage whose two hashes still match is skipped. A stage found `running` or `failed` with matching hashes
is run again and resumes from what it finished (sampling keeps its completed chunk files, training its last
checkpoint). A stage whose hashes no longer match is moved aside to `<run_dir>/.stale/` -- never deleted -- and
recomputed, and so, through their inputs hash, is every stage after it whose inputs then differ. A complete stage
whose output files are gone since (listed with size and mtime in its manifest) runs again where it is; one whose
files changed is moved aside and recomputed: never skipped silently.

A process running a stage holds its lock (<run_dir>/.locks/<stage>), shared on the stages it reads, so the jobs of
one run can run independent stages at once on a cluster and two processes never run the same stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import importlib
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from nemo_recipes.errors import RequirementsNotMet, UserError
from nemo_recipes.io import link_or_copy, read_json, sha256_file, write_json
from nemo_recipes.models import model_path, sampling_config
from nemo_recipes.resources import Estimate, estimate, size_text, total, unmet_requirements

MANIFEST = "manifest.json"
# Files bigger than this are fingerprinted by size and mtime instead of content (a 32B checkpoint is ~65 GB).
_HASH_CONTENT_LIMIT = 256 << 20
_VERSIONED_PACKAGES = ("nemo_recipes", "torch", "transformers", "tokenizers", "math-verify", "latex2sympy2_extended",
                       "vllm", "nemo_toolkit", "nemo_aligner", "megatron-core", "hydra-core", "numpy")


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    module: str                       # nemo_recipes.stages.<module>
    needs: tuple[str, ...] = ()
    config_keys: tuple[str, ...] = ()  # dotted config paths whose values the stage's output depends on
    params: tuple[tuple[str, Any], ...] = ()
    unhashed: tuple[str, ...] = ()    # keys under config_keys that say how the work is split or planned, not what
                                      # it makes
    job: str = "cpu"                  # what a launcher gives it: cpu | sampling (shards over nodes) | training

    def param(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)


# Keys that only plan or split the work (or say what a model is like): they never change a stage's output.
_PLANNING_KEYS = ("expected_tokens", "throughput_tokens_per_s", "num_shards", "shard", "merge_only")
_SAMPLING_MODEL_KEYS = ("parallel", "num_params_b")  # the model's SFT layout and size, read by planning only
_SFT_RUN_KEYS = ("logger", "wandb_project", "wandb_name", "nemo_to_hf_cpu_only", "keep_checkpoints")


def _sampling_unhashed(model_key: str, sampling_key: str) -> tuple[str, ...]:
    return (*(f"{sampling_key}.{key}" for key in _PLANNING_KEYS),
            *(f"{model_key}.{key}" for key in _SAMPLING_MODEL_KEYS))


def stage_graph(cfg) -> list[Stage]:
    """Every stage of the experiment, in an order where each stage comes after the stages it needs."""
    trains = "sft" in cfg.evaluate  # without it the run only evaluates models (e.g. the paper's baseline)
    released = cfg.selection.strategy == "released"  # the dataset's own solutions: no teacher to sample
    stages = [Stage("prepare", "prepare", (), ("problems", "benchmark"))]
    if trains and not released:
        stages += [
            Stage("sample_teacher", "sample", ("prepare",), ("teacher", "teacher_sampling"), (("role", "teacher"),),
                  _sampling_unhashed("teacher", "teacher_sampling"), job="sampling"),
            Stage("grade_teacher", "grade", ("sample_teacher",), ("grading",), (("source", "sample_teacher"),),
                  ("grading.workers",)),
        ]
    if trains:
        stages += [
            Stage("select", "select", ("prepare",) if released else ("grade_teacher",),
                  ("selection", "student.path", "student.source",
                   *(("markers",) if cfg.selection.strategy == "no_keywords" else ()))),
            Stage("pack", "pack", ("select",),
                  ("sft.pack_size", "sft.packing_algorithm", "sft.loss_mask_alignment", "student.path",
                   "student.source", "student.parallel.cp")),
            Stage("sft", "sft", ("pack",), ("sft", "student"), (),
                  (*(f"sft.{key}" for key in _SFT_RUN_KEYS), "student.generation_tp", "student.num_params_b"),
                  job="training"),
        ]
    grades = []
    for role in cfg.evaluate:
        if role not in ("base", "sft"):
            raise UserError(f"evaluate: unknown model role '{role}'; use base or sft (to evaluate another model, make "
                            f"it the student of an evaluation-only run, e.g. model@student=qwq-32b-preview "
                            f"evaluate=[base], as conf/experiment/eval-qwen2.5-math-72b-instruct.yaml does).")
        needs = ("prepare", "sft") if role == "sft" else ("prepare",)
        stages.append(Stage(f"sample_{role}", "sample", needs, ("student", "eval_sampling"), (("role", role),),
                            _sampling_unhashed("student", "eval_sampling"), job="sampling"))
        stages.append(Stage(f"grade_{role}", "grade", (f"sample_{role}",), ("grading",),
                            (("source", f"sample_{role}"),), ("grading.workers",)))
        grades.append(f"grade_{role}")
    stages.append(Stage("metrics", "metrics", tuple(grades), ("metrics",)))
    trace_sets = (("select",) if trains else ()) + (("grade_teacher",) if trains and not released else ())
    stages.append(Stage("traces", "traces", (*grades, *trace_sets),
                        ("markers", "traces", "selection.strategy", "selection.require")))
    # The report's provenance names every stage's config hash, so it renders again when any of them changes --
    # also when that stage's output came out the same and nothing else downstream had to run.
    upstream = json.dumps({stage.name: config_digest(cfg, stage) for stage in stages}, sort_keys=True)
    stages.append(Stage("report", "report", ("metrics", "traces", *(("select", "sft") if trains else ())),
                        ("report", "benchmark.name"), (("stages", upstream),)))
    return stages


@dataclasses.dataclass
class StageContext:
    """What a stage sees: the whole config, its own folder, and the folders of the stages it needs."""

    cfg: Any
    stage: Stage
    run_dir: Path
    progress: bool = True
    commands: list[list[str]] = dataclasses.field(default_factory=list)
    argv: list[str] = dataclasses.field(default_factory=list)  # the run's overrides, for processes a stage starts

    @property
    def dir(self) -> Path:
        return self.run_dir / self.stage.name

    def input_dir(self, stage_name: str) -> Path:
        return self.run_dir / stage_name

    def log(self, message: str) -> None:
        print(f"[{self.stage.name}] {message}", flush=True)

    def record_command(self, command: list[str]) -> None:
        """Remember a launched command; it lands in the manifest so any result can be traced to how it was made."""
        self.commands.append([str(part) for part in command])


def run_pipeline(cfg, argv: list[str] | None = None, check: bool = True) -> None:
    """Run (or, with cfg.dry_run, plan) the selected stages, each under its stage lock. check=False skips the
    requirement check, for a caller that has checked a whole set of runs already (nemo_recipes.reproduce)."""
    run_dir = Path(cfg.run_dir)
    stages = selected_stages(cfg)
    if cfg.dry_run:
        print_plan(cfg, stages, argv)
        return
    try:
        if check:
            check_requirements(cfg, stages)
    except RequirementsNotMet:
        print_plan(cfg, stages, argv)  # show what was asked for before saying why it cannot start
        raise
    run_dir.mkdir(parents=True, exist_ok=True)
    shard = _shard_run(cfg, stages)
    for stage in stages:
        with stage_lock(run_dir, stage.name, shard=shard, reads=stage.needs):
            _run_stage(cfg, stage, run_dir, argv or [], shard=shard)
    report = run_dir / "report" / "report.md"
    print(f"done: {run_dir}" + (f"; report: {report}" if report.exists() else ""), flush=True)


def follow_stages(cfg, leader_done) -> None:
    """The part of each selected stage that a task other than the first of a multi-task job runs (a stage module's
    `follow(ctx, leader_done)`; most have none). The first task holds the lock and the manifests; `leader_done()`
    says when it has finished."""
    for stage in selected_stages(cfg):
        module = importlib.import_module(f"nemo_recipes.stages.{stage.module}")
        if hasattr(module, "follow"):
            module.follow(StageContext(cfg, stage, Path(cfg.run_dir), progress=False), leader_done)


def _shard_run(cfg, stages: list[Stage]) -> str | None:
    """'<stage>-<shard>' when this run samples one shard (teacher_sampling.shard or eval_sampling.shard set), else
    None. Nodes run their shards into one folder at once, so a shard run may hold nothing else: prepare has run."""
    sharded = [stage for stage in stages
               if stage.module == "sample" and sampling_config(cfg, stage.param("role")).shard is not None]
    if not sharded:
        return None
    others = [stage.name for stage in stages if stage not in sharded]
    if others or len(sharded) > 1:
        raise UserError(f"a shard run samples one stage and nothing else, but this one selects "
                        f"{', '.join(s.name for s in stages)}; run the stages before it once without a shard, then "
                        f"each node with e.g. stages=[{sharded[0].name}].")
    shard = sampling_config(cfg, sharded[0].param("role")).shard
    return f"{sharded[0].name}-{shard}"


def selected_stages(cfg) -> list[Stage]:
    graph = stage_graph(cfg)
    names = [s.name for s in graph]
    for key in ("stages", "force"):
        for name in cfg.get(key) or []:
            if name not in names:
                raise UserError(f"{key}: unknown stage '{name}'; the stages of experiment {cfg.experiment_name} are "
                                f"{', '.join(names)}.")
    if cfg.stages is None:
        return graph
    return [s for s in graph if s.name in list(cfg.stages)]


def _run_stage(cfg, stage: Stage, run_dir: Path, argv: list[str], shard: str | None = None) -> None:
    ctx = StageContext(cfg, stage, run_dir, progress=bool(cfg.progress), argv=list(argv))
    config_hash = config_digest(cfg, stage)
    inputs_hash = _inputs_digest(stage, run_dir)
    manifest_path = ctx.dir / MANIFEST
    previous = read_json(manifest_path) if manifest_path.exists() else None
    forced = stage.name in (cfg.force or [])
    changed = previous and (previous.get("config_hash"), previous.get("inputs_hash")) != (config_hash, inputs_hash)
    damage = _damage(ctx.dir, previous) if previous and previous.get("status") == "complete" else None
    if shard and previous and (forced or changed):
        # Other nodes may be writing their chunks into this folder right now: never move it from under them.
        raise UserError(f"{ctx.dir} holds sampling of another config or inputs, which a shard run never moves aside "
                        f"(other shards may be writing there); give every node the same config, or recompute it "
                        f"once without a shard.")
    if previous and (forced or changed or (damage and damage.changed)):
        stale = move_aside(ctx.dir, run_dir)
        reason = "forced" if forced else damage.text if damage and not changed else "its config or inputs changed"
        ctx.log(f"{reason}: moved the previous results to {stale} and recomputing")
        previous = None
    elif damage:  # files gone since it completed: run it again where it is, reusing what is left
        ctx.log(f"complete, but {damage.text}: running it again")
    elif previous and previous.get("status") == "complete":
        ctx.log("complete, skipping")
        return
    elif previous:
        ctx.log(f"found a {previous.get('status')} run with the same config: resuming")
    if previous is None and not forced and _reuse(cfg, ctx, config_hash, inputs_hash):
        return

    ctx.dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "stage": stage.name,
        "status": "running",
        "config_hash": config_hash,
        "inputs_hash": inputs_hash,
        "params": dict(stage.params),
        "config": config_values(cfg, stage),  # what config_hash hashes: seeds, models, sampling, as they were
        "started": _now(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "argv": ["python", "-m", "nemo_recipes", *argv],
        "versions": library_versions(),
    }
    write_json(manifest_path, manifest)
    module = importlib.import_module(f"nemo_recipes.stages.{stage.module}")
    started = time.time()
    ctx.log("running" + (f" shard {shard.rpartition('-')[2]}" if shard else ""))
    try:
        summary = module.run(ctx) or {}
    except BaseException as error:
        # Keep everything written so far: the next run resumes from it. A shard's failure is its own, not the
        # stage's: other shards may still be running.
        failure = {**manifest, "status": "failed", "ended": _now(), "error": f"{type(error).__name__}: {error}",
                   "commands": ctx.commands}
        write_json(_shard_record(ctx.dir, shard) if shard else manifest_path, failure)
        raise
    if shard:
        # A shard writes its own chunks and nothing else: the stage completes when a run without `shard` merges.
        write_json(_shard_record(ctx.dir, shard), {**manifest, "status": "complete", "ended": _now(),
                                                   "seconds": round(time.time() - started, 2), "summary": summary})
        ctx.log(f"shard done in {time.time() - started:.1f} s; a run without shard merges the stage")
        return
    outputs = _output_files(ctx.dir)
    manifest.update(status="complete", ended=_now(), seconds=round(time.time() - started, 2), summary=summary,
                    commands=ctx.commands, outputs_hash=_outputs_hash(outputs), outputs=outputs)
    manifest["fingerprint"] = _hash([stage.name, manifest["outputs_hash"]])
    write_json(manifest_path, manifest)
    ctx.log(f"complete in {manifest['seconds']:.1f} s")


def _shard_record(stage_dir: Path, shard: str) -> Path:
    """Where a shard run records how it went (hidden: not an output of the stage, so never in its fingerprint)."""
    return stage_dir / ".shards" / f"{shard}.json"


@dataclasses.dataclass(frozen=True)
class Damage:
    text: str      # what happened, for a sentence: "generations.jsonl is missing since it completed"
    changed: bool  # a file was rewritten (recompute from scratch), not only removed (run again where it is)


def _damage(stage_dir: Path, manifest: dict) -> Damage | None:
    """What happened to a complete stage's output files since it completed, or None when they are as it left them.

    Size and mtime decide, as make and rsync do; a file whose mtime moved but whose content is what was hashed is
    intact. Files added beside the outputs are not damage."""
    recorded = manifest.get("outputs")
    if recorded is None:  # a manifest written before outputs were listed (or by hand): nothing to compare with
        return None
    missing = []
    for name, size, content, mtime in recorded:
        path = stage_dir / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            missing.append(name)
            continue
        if stat.st_size != size or (stat.st_mtime_ns != mtime and _content_of_moved_file(path, stat) != content):
            return Damage(f"{name} changed since it completed", changed=True)
    if missing:
        more = f" and {len(missing) - 1} more file(s)" if len(missing) > 1 else ""
        return Damage(f"{missing[0]}{more} {'is' if not more else 'are'} missing since it completed", changed=False)
    return None


def _reuse(cfg, ctx: StageContext, config_hash: str, inputs_hash: str) -> bool:
    """Copy the stage from another run folder (cfg.reuse_from) where the same stage is complete with the same
    config and the same inputs -- the same computation, e.g. teacher sampling shared by the main run and the
    correctness ablation. Files are hard-linked when the file system allows it (a 32B SFT stage is ~1 TB)."""
    if ctx.dir.exists():  # something of this run is there already (and reuse_from naming this run finds nothing)
        return False
    if ctx.stage.name == "report":  # it names its own run folder: never another run's
        return False
    for other in cfg.get("reuse_from") or []:
        source = Path(other) / ctx.stage.name
        if not (source / MANIFEST).exists():
            continue
        manifest = read_json(source / MANIFEST)
        if manifest.get("status") != "complete" or (manifest.get("config_hash"), manifest.get("inputs_hash")) != (
                config_hash, inputs_hash):
            continue
        temporary = ctx.dir.with_name(f".{ctx.stage.name}.reusing")
        shutil.rmtree(temporary, ignore_errors=True)
        shutil.copytree(source, temporary, copy_function=link_or_copy)
        write_json(temporary / MANIFEST, {**manifest, "reused_from": str(source)})  # replaces the link, not the source
        temporary.rename(ctx.dir)  # the stage appears complete or not at all
        ctx.log(f"identical to {source}: reused it (hard links where possible)")
        return True
    return False


def stage_keys(cfg) -> dict[str, str]:
    """What each stage computes, independent of its run folder: its config hash and, recursively, its inputs' keys.
    Two runs' stages with equal keys produce the same outputs (the planner counts such a stage once)."""
    keys: dict[str, str] = {}
    for stage in stage_graph(cfg):  # needs come before the stages that need them
        keys[stage.name] = _hash([config_digest(cfg, stage), [keys[need] for need in stage.needs]])
    return keys


def print_plan(cfg, stages: list[Stage], argv: list[str] | None = None, shared: dict[str, str] | None = None
               ) -> Estimate:
    """The dry run: every stage with its state, what it would do and what it costs, without importing torch or
    touching files. `argv` are the run's overrides, for the commands a stage would start; `shared` maps a stage to
    an earlier run of the same target that computes it (reused, so not counted). Returns the total cost of the
    stages still to run."""
    run_dir = Path(cfg.run_dir)
    shared = shared or {}
    print(f"experiment {cfg.experiment_name}: run folder {run_dir}")
    costs = []
    argv = [arg for arg in argv or [] if arg.lstrip("+").split("=", 1)[0] != "dry_run"]  # commands that would run
    states = stage_states(cfg, {stage.name for stage in stages})
    for number, stage in enumerate(stages, start=1):
        ctx = StageContext(cfg, stage, run_dir, progress=False, argv=argv)
        state = states[stage.name]
        if state == "pending" and stage.name in shared:
            state = f"reused from run {shared[stage.name]}"
        print(f"\n{number:>2}. {stage.name:<15} [{state}]" + (f"  needs: {', '.join(stage.needs)}" if stage.needs else ""))
        module = importlib.import_module(f"nemo_recipes.stages.{stage.module}")
        for line in module.plan(ctx):
            print(f"      {line}")
        if _will_run(state):
            costs.append(stage_estimate(ctx))
            for line in costs[-1].lines():
                print(f"      {line}")
    needs = total(costs)
    models = ", ".join(str(model_path(cfg, role, build=False)) for role in needs.models) or "none"
    print(f"\nstill to run: ~{needs.gpu_hours:,.1f} GPU-hours (up to {needs.gpus} GPUs at once), "
          f"~{size_text(needs.disk_gb + needs.peak_extra_gb)} of disk at the peak; models read from local disk: {models}")
    return needs


def stage_estimate(ctx: StageContext) -> Estimate:
    from nemo_recipes.data.problems import planned_problem_count

    stage = ctx.stage
    role = stage.param("role") or str(stage.param("source", "")).removeprefix("sample_") or None
    return estimate(ctx.cfg, stage, planned_problem_count(ctx.cfg, ctx.run_dir, role) if role else None)


def pending_stages(cfg) -> list[Stage]:
    """The selected stages a run would run (or may: after an input that runs again), in graph order."""
    stages = selected_stages(cfg)
    states = stage_states(cfg, {stage.name for stage in stages})
    return [stage for stage in stages if _will_run(states[stage.name])]


def pending_needs(cfg, stages: list[Stage]) -> Estimate:
    """The summed cost of the stages that will run (or may: after an input that runs again)."""
    run_dir = Path(cfg.run_dir)
    states = stage_states(cfg, {stage.name for stage in stages})
    return total([stage_estimate(StageContext(cfg, stage, run_dir, progress=False)) for stage in stages
                  if _will_run(states[stage.name])])


def check_requirements(cfg, stages: list[Stage]) -> None:
    """Refuse, before anything starts, when the pending stages need GPUs, disk or models this machine lacks."""
    problems = unmet_requirements(cfg, pending_needs(cfg, stages))
    if problems:
        raise RequirementsNotMet(f"experiment {cfg.experiment_name}", problems)


def stage_states(cfg, selected: set[str] | None = None) -> dict[str, str]:
    """What a run of the `selected` stages (default: all) would do with each stage, in graph order: a stage complete
    on disk still runs when it is forced, and may run when a selected stage it needs runs first (it skips if that
    one's output comes out the same)."""
    run_dir = Path(cfg.run_dir)
    forced = set(cfg.get("force") or [])
    states: dict[str, str] = {}
    for stage in stage_graph(cfg):
        state = _state(cfg, stage, run_dir)
        rerunning = [need for need in stage.needs
                     if _will_run(states[need]) and (selected is None or need in selected)]
        if stage.name in forced:
            state = "forced: will run again"
        elif state == "complete, will skip" and rerunning:
            state = f"complete; runs again if {', '.join(rerunning)} changes its output"
        states[stage.name] = state
    return states


def _will_run(state: str) -> bool:
    return not state.startswith(("complete, will skip", "reused"))


def _state(cfg, stage: Stage, run_dir: Path) -> str:
    path = run_dir / stage.name / MANIFEST
    if not path.exists():
        return "pending"
    manifest = read_json(path)
    if manifest.get("config_hash") != config_digest(cfg, stage):
        return "stale: config changed"
    try:
        inputs = _inputs_digest(stage, run_dir)
    except UserError:
        return "waiting for inputs"
    if manifest.get("inputs_hash") != inputs:
        return "stale: inputs changed"
    if manifest.get("status") != "complete":
        return f"{manifest.get('status')}, will resume"
    damage = _damage(run_dir / stage.name, manifest)
    if damage:
        return f"damaged ({damage.text}): will {'recompute' if damage.changed else 'run again'}"
    return "complete, will skip"


def run_state(cfg) -> str:
    """'complete' when every stage before the report is complete under this config, else why not (for reports:
    a run's numbers are shown only when they are what its current config computes)."""
    run_dir = Path(cfg.run_dir)
    for stage in stage_graph(cfg):
        if stage.name == "report":
            continue
        state = _state(cfg, stage, run_dir)
        if state != "complete, will skip":
            return f"{stage.name} {state}" if state != "pending" else "not run"
    return "complete"


def config_values(cfg, stage: Stage) -> dict:
    """The config the stage's output depends on (its config_keys, resolved): hashed, and kept in its manifest."""
    from omegaconf import OmegaConf

    values = {}
    for key in stage.config_keys:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
        values[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    for dotted in stage.unhashed:  # e.g. the shard a node runs: every shard must share the stage folder
        key, _, leaf = dotted.rpartition(".")
        values.get(key, {}).pop(leaf, None)
    return values


def config_digest(cfg, stage: Stage) -> str:
    parts = [stage.module, config_values(cfg, stage), list(stage.params)]
    # A stage module may name what else its output depends on (the report: the paper's figures it shows).
    hashed_context = getattr(importlib.import_module(f"nemo_recipes.stages.{stage.module}"), "hashed_context", None)
    if hashed_context is not None:
        parts.append(hashed_context(cfg))
    return _hash(parts)


def _inputs_digest(stage: Stage, run_dir: Path) -> str:
    fingerprints = []
    for need in stage.needs:
        path = run_dir / need / MANIFEST
        manifest = read_json(path) if path.exists() else {}
        if manifest.get("status") != "complete":
            raise UserError(f"stage '{stage.name}' needs stage '{need}', which is not complete in {run_dir}; "
                            f"run it first (leave it in `stages`).")
        damage = _damage(run_dir / need, manifest)
        if damage:
            raise UserError(f"stage '{stage.name}' needs stage '{need}', but in {run_dir / need} {damage.text}; run "
                            f"'{need}' again first (leave it in `stages`).")
        fingerprints.append([need, manifest["fingerprint"]])
    return _hash(fingerprints)


def _output_files(stage_dir: Path) -> list[list]:
    """[name, size, content, mtime] of every output file of a stage; content is its sha256, or its mtime for a file
    too big to hash."""
    entries = []
    for path in sorted(stage_dir.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(stage_dir).parts)
        if hidden or not path.is_file() or path.name == MANIFEST:
            continue  # hidden: a writer's temporary file or claim (another shard may still be writing its own)
        try:
            stat = path.stat()
        except FileNotFoundError:  # renamed away between the listing and now
            continue
        entries.append([str(path.relative_to(stage_dir)), stat.st_size, _file_content(path, stat), stat.st_mtime_ns])
    return entries


def _outputs_hash(entries: list[list]) -> str:
    """What the stage's fingerprint hashes: names, sizes and contents (an mtime alone never changes it)."""
    return _hash([entry[:3] for entry in entries])


def _file_content(path: Path, stat) -> str:
    return sha256_file(path) if stat.st_size <= _HASH_CONTENT_LIMIT else f"mtime:{stat.st_mtime_ns}"


_moved_file_contents: dict[tuple, str] = {}


def _content_of_moved_file(path: Path, stat) -> str:
    """_file_content of an output whose mtime moved since its stage completed (a copy without -p): hashed once per
    process, not on every look at the stage's state -- a planning pass looks at each stage once per stage after it.
    The key holds what any write changes (ctime cannot be set back), so a rewritten file is hashed again."""
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    if key not in _moved_file_contents:
        _moved_file_contents[key] = _file_content(path, stat)
    return _moved_file_contents[key]


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def move_aside(stage_dir: Path, run_dir: Path) -> Path:
    """Move a stage's folder to <run_dir>/.stale/<stage>-<time>/: results are never deleted."""
    stale = run_dir / ".stale" / f"{stage_dir.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    stale.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(stage_dir), str(stale))
    return stale


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": sys.version.split()[0]}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


@contextlib.contextmanager
def stage_lock(run_dir: Path, stage: str, *, shard: str | None = None, reads: tuple[str, ...] = ()) -> Iterator[None]:
    """Held while a process runs `stage` of the run in `run_dir` (the kernel drops it on SIGKILL): exclusive on the
    stage -- or shared among its shards, each shard exclusive, so nodes sample their shards at once and nothing else
    runs the stage meanwhile -- and shared on each stage it `reads`, so none of those is recomputed or moved aside
    under it. The jobs of one run on a cluster each hold the stages they run; two runs of one stage are refused.
    `shard` names the shard ('<stage>-<index>', see _shard_run)."""
    locks = run_dir / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        for need in reads:
            held.enter_context(_flock(locks / need, fcntl.LOCK_SH, f"stage {need} of {run_dir}", run_dir,
                                      note="runs that read it ("))
        if shard is None:
            held.enter_context(_flock(locks / stage, fcntl.LOCK_EX, f"stage {stage} of {run_dir}", run_dir))
        else:
            held.enter_context(_flock(locks / stage, fcntl.LOCK_SH, f"stage {stage} of {run_dir}", run_dir,
                                      note=f"shard runs ({shard}: "))
            held.enter_context(_flock(locks / shard, fcntl.LOCK_EX, f"shard {shard} of {run_dir}", run_dir))
        yield


@contextlib.contextmanager
def _flock(path: Path, mode: int, what: str, run_dir: Path, note: str = "") -> Iterator[None]:
    """flock `path` or refuse in one sentence naming who holds it (`note` prefixes what this process records)."""
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise UserError(f"{what} is in use by {holder}; wait for that run to finish or choose another "
                        f"run_dir.") from None
    except OSError as error:  # e.g. Lustre mounted without flock: ENOSYS
        handle.close()
        raise UserError(f"{run_dir} cannot be locked ({error.strerror}); put runs_root on a file system with "
                        f"file locks (local disk, NFSv4, Lustre mounted with -o flock).") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{note}pid {os.getpid()} on {socket.gethostname()} since {_now()}{')' if note else ''}\n")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
