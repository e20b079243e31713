"""The Slurm jobs a submission is made of, as data: which stages each job runs, on what, after which jobs, and the
batch script it gets -- checked against the layout NeMo-Skills' pipeline gives its own generation and SFT jobs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from nemo_recipes.config import compose_config
from nemo_recipes.errors import UserError
from nemo_recipes.launching.jobs import ARRAY_INDEX, training_job_count
from nemo_recipes.launching.sbatch import pyxis_image
from nemo_recipes.launching.slurm import Run, job_script, plan_submission

SLURM = ["cluster=slurm", "cluster.partition=batch"]


def _runs(tmp_path, *experiments, overrides=()):
    overrides = [*SLURM, f"runs_root={tmp_path}/runs", *overrides]
    return [Run(name, compose_config([f"experiment={name}", *overrides]), list(overrides)) for name in experiments]


def _jobs(tmp_path, *experiments, overrides=(), target=None):
    runs = _runs(tmp_path, *experiments, overrides=overrides)
    return runs, {job.key: job for job in plan_submission(runs, target=target)[0]}


def test_the_main_run_is_shard_arrays_with_merges_a_training_chain_and_grouped_cpu_stages(tmp_path):
    _, jobs = _jobs(tmp_path, "main")  # 4 nodes of 8 GPUs (conf/cluster/slurm.yaml)
    shards = jobs["main/sample_teacher-shards"]
    assert (shards.kind, shards.array, shards.nodes, shards.tasks_per_node, shards.gpus_per_node) == (
        "sampling", 4, 1, 1, 8)  # a node per shard, its 8 GPUs as vLLM replicas
    assert shards.overrides == [f"teacher_sampling.shard={ARRAY_INDEX}"] and shards.after_ok == ["main/prepare"]
    merge = jobs["main/sample_teacher-merge"]
    assert merge.stages == ["sample_teacher", "grade_teacher", "select", "pack"] and merge.gpus_per_node == 0
    assert merge.overrides == ["teacher_sampling.merge_only=true"] and merge.after_ok == [shards.key]
    chain = [jobs[key] for key in jobs if key.startswith("main/sft")]
    assert len(chain) == training_job_count(compose_config(["experiment=main", *SLURM]).cluster,
                                            sum(job.hours for job in chain)) > 1
    assert [(job.nodes, job.tasks_per_node, job.gpus_per_node) for job in chain] == [(4, 8, 8)] * len(chain)
    assert chain[0].after_ok == [merge.key] and [job.after_any for job in chain[1:]] == [[j.key] for j in chain[:-1]]
    assert jobs["main/sample_sft-shards"].after_ok == ["main/prepare", chain[-1].key]  # the whole chain's end
    assert jobs["main/sample_base-shards"].after_ok == ["main/prepare"]  # beside the teacher, not after it
    assert jobs["main/metrics"].stages == ["metrics", "traces", "report"]
    assert jobs["main/metrics"].after_ok == ["main/sample_base-merge", "main/sample_sft-merge"]


def test_complete_stages_get_no_job_and_one_shard_samples_and_merges_on_its_node(tmp_path):
    _, jobs = _jobs(tmp_path, "eval-qwen2.5-math-72b-instruct", overrides=["cluster.nodes=1"])
    assert list(jobs) == ["eval-qwen2.5-math-72b-instruct/prepare", "eval-qwen2.5-math-72b-instruct/sample_base",
                          "eval-qwen2.5-math-72b-instruct/grade_base"]
    assert jobs["eval-qwen2.5-math-72b-instruct/sample_base"].array == 0
    assert jobs["eval-qwen2.5-math-72b-instruct/grade_base"].stages == ["grade_base", "metrics", "traces", "report"]


def test_a_stage_two_runs_share_is_computed_by_one_job_the_other_run_waits_for(tmp_path):
    _, jobs = _jobs(tmp_path, "main", "ablation-correctness-incorrect", target="ablation-correctness")
    other = {key: job for key, job in jobs.items() if key.startswith("ablation-correctness-incorrect/")}
    assert not any(job.kind == "sampling" and "sample_teacher" in job.stages for job in other.values())
    linked = next(job for job in other.values() if "sample_teacher" in job.stages)
    assert linked.kind == "cpu" and "main/sample_teacher-merge" in linked.after_ok  # linked once main has it
    assert "ablation-correctness-incorrect/sample_base-shards" not in jobs  # the same base model, evaluated once
    report = jobs["ablation-correctness/report"]
    assert report.module_args[:3] == ["nemo_recipes.reproduce", "--report", "ablation-correctness"]
    waited = {parent for job in jobs.values() if job is not report for parent in job.after_ok + job.after_any}
    assert set(report.after_ok) == {key for key in jobs if key not in waited and key != report.key}
    assert set(report.after_ok) == {"main/metrics", "ablation-correctness-incorrect/metrics"}


def test_a_stage_another_run_has_completed_is_linked_by_a_cpu_job_not_sampled_again(tmp_path):
    from nemo_recipes.launching.jobs import RunJobs, plan_jobs
    from nemo_recipes.pipeline import stage_graph, stage_keys

    plans = []  # main has sampled the teacher already (make reproduce-main), the ablation's run has not started
    for run, done in zip(_runs(tmp_path, "main", "ablation-correctness-incorrect"), (("prepare", "sample_teacher"), ())):
        keys, stages = stage_keys(run.cfg), [stage for stage in stage_graph(run.cfg) if stage.name not in done]
        plans.append(RunJobs(run.name, run.cfg, stages, keys, {stage.name: 1.0 for stage in stages},
                             {keys[name] for name in done}))
    jobs = {job.key: job for job in plan_jobs(plans)}
    linked = next(job for key, job in jobs.items()
                  if key.startswith("ablation-correctness-incorrect/") and "sample_teacher" in job.stages)
    assert linked.kind == "cpu" and linked.gpus_per_node == 0 and not linked.array
    assert not any(key.startswith("main/") for key in linked.after_ok)  # nothing of main's to wait for
    assert "main/sample_teacher-shards" not in jobs


def test_the_training_chain_covers_the_estimate_in_time_limits_less_the_save_margin():
    cluster = compose_config(["experiment=main", *SLURM]).cluster
    assert training_job_count(cluster, 3.74) == 2  # 3 h 45 min of each 4 h job, plus one for the estimate's error
    assert training_job_count(cluster, 3.76) == 3
    cluster.training_jobs = 5
    assert training_job_count(cluster, 100.0) == 5


def _script(tmp_path, experiment, key, overrides=()):
    runs, jobs = _jobs(tmp_path, experiment, overrides=overrides)
    submission = tmp_path / "runs" / ".jobs" / experiment / "20261204-120000"
    return job_script(jobs[key], runs[0], submission, ["afterok:41"]), submission


def _header(text: str) -> dict[str, str]:
    return dict(line[len("#SBATCH --"):].split("=", 1) for line in text.splitlines() if line.startswith("#SBATCH --"))


def _srun(text: str) -> list[str]:
    command = text[text.index("\nsrun "):].replace("\\\n", " ")
    return shlex.split(command)


def test_a_job_script_runs_our_command_in_the_image_with_every_folder_mounted(tmp_path):
    image = tmp_path / "images" / "nemo_recipes.sqsh"
    image.parent.mkdir()
    image.write_bytes(b"squashfs")
    text, submission = _script(tmp_path, "main", "main/sample_teacher-shards",
                               [f"cluster.container_image={image}", "cluster.account=proj",
                                "cluster.container_mounts=['/lustre/data:/data']"])
    header = _header(text)
    assert header["array"] == "0-3" and header["dependency"] == "afterok:41" and header["account"] == "proj"
    assert header["output"] == f"{submission}/logs/main--sample_teacher-shards-%A_%a.log"
    srun = _srun(text)
    flags = dict(arg[2:].split("=", 1) for arg in srun if arg.startswith("--") and "=" in arg)
    assert flags["container-image"] == str(image)
    mounts = flags["container-mounts"].split(",")
    code = submission / "code"
    assert f"{tmp_path}/runs:{tmp_path}/runs" in mounts and "/lustre/data:/data" in mounts  # runs/ holds code/ too
    assert flags["container-workdir"] == str(code)
    assert "--no-container-mount-home" in srun
    command = srun[srun.index("python3"):]
    assert command[:3] == ["python3", "-m", "nemo_recipes"]
    assert "stages=[sample_teacher]" in command and "cluster.inside_job=true" in command
    assert f"run_dir={tmp_path}/runs/main" in command and "experiment=main" in command
    assert "teacher_sampling.shard=${SLURM_ARRAY_TASK_ID}" in command  # the shell expands the task's shard
    assert f"export PYTHONPATH={code}" in text and "export HF_HUB_OFFLINE=1" in text
    assert set(flags["container-env"].split(",")) >= {"PYTHONPATH", "HF_HUB_CACHE", "TMPDIR", "NEMO_RECIPES_CONF"}


def test_the_image_reaches_pyxis_as_a_file_path_or_a_registry_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nemo_recipes.sqsh").write_bytes(b"squashfs")
    assert pyxis_image("nemo_recipes.sqsh") == f"{tmp_path}/nemo_recipes.sqsh"  # pyxis pulls anything not ./ or /
    assert pyxis_image("nvcr.io#nvidia/nemo:25.02") == "nvcr.io#nvidia/nemo:25.02"
    assert pyxis_image(None) is None


def test_a_missing_image_file_is_refused_before_anything_is_submitted(tmp_path, monkeypatch):
    from nemo_recipes.launching.slurm import _image_problem

    monkeypatch.chdir(tmp_path)
    cluster = compose_config(["experiment=main", *SLURM]).cluster
    assert _image_problem(cluster).startswith("cluster.container_image=nemo_recipes.sqsh is not a file here: give "
                                              "the path of the enroot image on the shared file system")


def test_a_hub_snapshot_is_mounted_with_the_blobs_its_files_link_to(tmp_path, monkeypatch):
    from nemo_recipes.launching.slurm import job_mounts

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = tmp_path / "elsewhere" / "models--Qwen--Qwen2.5-7B" / "snapshots" / "d1497293"
    cfg = compose_config(["experiment=main", *SLURM, "student.source=local", f"student.path={snapshot}"])
    mounts = job_mounts(cfg, tmp_path / "code")
    assert f"{tmp_path}/hub:{tmp_path}/hub" in mounts  # every hub model, with its blobs/
    repo = snapshot.parents[1]
    assert f"{repo}:{repo}" in mounts and not any(m.startswith(f"{snapshot}:") for m in mounts)


# NeMo-Skills 731558c9 (July 2025) with NeMo-Run main 0c491271, read from their sources:
#   ns train: nemo_skills/pipeline/train.py:349-374 -- nodes=N, ntasks-per-node=G, gpus-per-node=G (one process per
#     GPU, started by srun; no torchrun), num_training_jobs chained with dependency_type afterany (utils/exp.py:238),
#     ++exp_manager.max_time_per_run = the partition's timeout - 15 min (utils/cluster.py:42-54);
#   ns generate: pipeline/generate.py:198-315 -- a job per chunk, nodes=1, ntasks-per-node=1, gpus-per-node=G;
#   every srun (utils/exp.py:223-236, nemo_run slurm.py:925-943): --container-image, --container-mounts,
#     --container-workdir, --no-container-mount-home, --kill-on-bad-exit=1, --wait=10, --container-env=<names>.
NEMO_SKILLS_SRUN_FLAGS = {"--no-container-mount-home", "--kill-on-bad-exit=1", "--wait=10"}


def test_the_main_target_on_four_nodes_lays_out_its_jobs_as_nemo_skills_does(tmp_path):
    image = tmp_path / "nemo_recipes.sqsh"
    image.write_bytes(b"squashfs")
    runs, jobs = _jobs(tmp_path, "main", "eval-qwen2.5-math-72b-instruct", target="main",
                       overrides=[f"cluster.container_image={image}", "cluster.nodes=4", "cluster.gpus_per_node=8"])
    submission = tmp_path / "runs" / ".jobs" / "main" / "t"
    by_run = {run.name: run for run in runs}

    def rendered(key):
        text = job_script(jobs[key], by_run.get(jobs[key].run, runs[0]), submission, [])
        return _header(text), _srun(text)

    for key in ("main/sft-1", "main/sft-2"):  # training: a task per GPU on every node, in the container
        header, srun = rendered(key)
        assert (header["nodes"], header["ntasks-per-node"], header["gpus-per-node"]) == ("4", "8", "8")
        assert NEMO_SKILLS_SRUN_FLAGS <= set(srun) and f"--container-image={image}" in srun
        assert "torchrun" not in srun and "torch.distributed.run" not in srun
    assert jobs["main/sft-2"].after_any == ["main/sft-1"]
    for key in ("main/sample_teacher-shards", "eval-qwen2.5-math-72b-instruct/sample_base-shards"):
        header, srun = rendered(key)  # generation: one node, one task, all its GPUs, per shard
        assert (header["nodes"], header["ntasks-per-node"], header["gpus-per-node"]) == ("1", "1", "8")
        assert NEMO_SKILLS_SRUN_FLAGS <= set(srun) and header["array"] == "0-3"
    header, srun = rendered("main/report")  # the target's report: a CPU job of our own command
    assert "gpus-per-node" not in header and srun[srun.index("python3"):][:4] == [
        "python3", "-m", "nemo_recipes.reproduce", "--report"]


def test_training_in_a_job_stops_fifteen_minutes_before_the_limit_as_nemo_skills_does(monkeypatch):
    import time

    from nemo_recipes.training import nemo_yaml

    monkeypatch.setenv("NEMO_RECIPES_JOB_START", str(time.time() - 600))  # the conversions took ten minutes
    cluster = compose_config(["experiment=main", *SLURM, "cluster.inside_job=true"]).cluster
    days, hours, minutes, seconds = (int(p) for p in nemo_yaml._max_time_per_run(cluster).split(":"))
    assert days == 0 and abs(hours * 3600 + minutes * 60 + seconds - (4 * 3600 - 15 * 60 - 600)) <= 2
    monkeypatch.setenv("NEMO_RECIPES_JOB_START", str(time.time() - 4 * 3600))
    with pytest.raises(UserError, match="no time is left in this job to train before its time limit"):
        nemo_yaml._max_time_per_run(cluster)


def test_the_dry_run_prints_every_job_and_its_script_without_submitting(tmp_path, capsys):
    from nemo_recipes.cli import main

    assert main(["experiment=main", *SLURM, f"runs_root={tmp_path}/runs", "dry_run=true"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Slurm jobs \(\d+\), partition batch, time limit 04:00:00:", out)
    assert re.search(r"wall-clock on 4 node\(s\) of 8 GPUs: ~[\d.]+ h", out)
    assert out.count("#!/bin/bash") == out.count("\n--- main/") > 5
    assert "#SBATCH --dependency=afterok:<main/prepare>" in out
    assert not (tmp_path / "runs").exists()


def test_submitting_without_a_slurm_client_is_one_sentence_and_submits_nothing(tmp_path, capsys, monkeypatch):
    from nemo_recipes.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    assert main(["experiment=demo", *SLURM, "cluster.container_image=null", "cluster.gpus_per_node=0",
                 f"runs_root={tmp_path}/runs", f"run_dir={tmp_path}/runs/demo"]) == 3
    err = capsys.readouterr().err
    assert "cannot start: sbatch is not on PATH: cluster=slurm submits from a Slurm login node" in err
    assert not (tmp_path / "runs" / ".jobs").exists()
