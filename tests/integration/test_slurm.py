"""The toy pipeline through a real Slurm: one command submits it as jobs, and what they compute is what a local run
computes. A one-node Slurm (munge, slurmctld, slurmd with fake GPUs) runs on this machine for the module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, SMALL
from local_slurm import local_slurm, unavailable
from nemo_recipes.io import read_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]

# The command line: no GPUs and no container on the test cluster, and the submit command waits.
SLURM = ["cluster=slurm", "cluster.partition=debug", "cluster.nodes=1", "cluster.gpus_per_node=0",
         "cluster.container_image=null", "cluster.poll_s=1"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    with local_slurm(tmp_path_factory.mktemp("slurm")) as environment:
        yield {**os.environ, **environment}


def _submit(run_dir: Path, environment: dict, *overrides: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nemo_recipes", f"run_dir={run_dir}", f"runs_root={run_dir.parent}",
                           *SMALL, *SLURM, *overrides], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=environment)


def _submission(run_dir: Path) -> dict:
    folder = sorted((run_dir.parent / ".jobs" / run_dir.name).glob("*"))[-1]
    return json.loads((folder / "submission.json").read_text())


def test_the_toy_demo_submitted_in_one_command_finishes_through_jobs_as_a_local_run_does(tmp_path, slurm,
                                                                                        small_demo):
    run_dir = tmp_path / "runs" / "demo"
    result = _submit(run_dir, slurm, "cluster.wait=true", "teacher_sampling.num_shards=2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "every stage is complete." in result.stdout
    jobs = {job["key"]: job for job in _submission(run_dir)["jobs"]}
    assert jobs["demo/sample_teacher-shards"]["array"] == 2  # sampling ran as an array of two shards
    assert jobs["demo/sample_teacher-merge"]["overrides"] == ["teacher_sampling.merge_only=true"]
    shards = sorted((run_dir / "sample_teacher" / ".shards").glob("*.json"))
    assert [path.name for path in shards] == ["sample_teacher-0.json", "sample_teacher-1.json"]

    local, local_result = small_demo
    assert local_result.returncode == 0, local_result.stderr[-3000:]
    for output in ("sample_teacher/generations.jsonl", "grade_teacher/graded.jsonl", "select/sft.jsonl",
                   "sft/train_log.jsonl", "sample_base/generations.jsonl", "sample_sft/generations.jsonl",
                   "grade_base/graded.jsonl", "grade_sft/graded.jsonl", "metrics/metrics.json"):
        assert (run_dir / output).read_bytes() == (local / output).read_bytes(), output

    status = subprocess.run([sys.executable, "-m", "nemo_recipes.jobs", "status", "demo",
                             f"runs_root={run_dir.parent}"], capture_output=True, text=True, cwd=REPO, env=slurm)
    assert status.returncode == 0, status.stderr
    assert f"demo/sample_teacher-shards {jobs['demo/sample_teacher-shards']['id']}: COMPLETED" in status.stdout
    assert "  sft              complete, will skip" in status.stdout

    again = _submit(run_dir, slurm, "cluster.wait=true", "teacher_sampling.num_shards=2")
    assert again.returncode == 0 and "nothing to submit: every selected stage is complete." in again.stdout


def test_a_cancelled_shard_is_generated_by_the_next_submission_with_exactly_the_expected_records(tmp_path, slurm):
    common = ["stages=[prepare,sample_teacher]", "teacher_sampling.n=8", "teacher_sampling.num_shards=2"]
    run_dir = tmp_path / "runs" / "demo"
    submitted = _submit(run_dir, slurm, *common)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    array = next(job["id"] for job in _submission(run_dir)["jobs"] if job["key"] == "demo/sample_teacher-shards")
    chunks = run_dir / "sample_teacher" / "chunks"
    shard_one = [chunks / f"chunk_{c:05d}.jsonl" for c in range(1, 10, 2)]  # 400 samples in chunks of 40: chunk c
    deadline = time.time() + 900                                              # belongs to shard c % 2
    while time.time() < deadline and not any(path.exists() for path in shard_one):
        time.sleep(0.1)
    subprocess.run(["scancel", f"{array}_1"], env=slurm, check=True)
    waited = subprocess.run([sys.executable, "-m", "nemo_recipes.jobs", "wait", "demo", f"runs_root={run_dir.parent}"],
                            capture_output=True, text=True, cwd=REPO, env=slurm, timeout=900)
    assert waited.returncode == 1, waited.stdout + waited.stderr  # the merge can never start, and is cancelled
    assert "cancelling demo/sample_teacher-merge: each waits for a job that failed" in waited.stdout
    done_before = {path.name: path.read_text() for path in chunks.glob("chunk_*.jsonl")}
    assert 1 <= sum(path.exists() for path in shard_one) < len(shard_one), "the cancel must land mid-shard"
    assert not (run_dir / "sample_teacher" / "generations.jsonl").exists()

    resumed = _submit(run_dir, slurm, *common, "cluster.wait=true")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert [job["key"] for job in _submission(run_dir)["jobs"]] == ["demo/sample_teacher-shards",
                                                                   "demo/sample_teacher-merge"]  # not prepare
    for name, text in done_before.items():  # chunks written before the cancel were kept, not redone
        assert (chunks / name).read_text() == text
    whole = tmp_path / "whole" / "demo"
    local = subprocess.run([sys.executable, "-m", "nemo_recipes", f"run_dir={whole}", *SMALL, *common],
                           capture_output=True, text=True, cwd=REPO, timeout=1800)
    assert local.returncode == 0, local.stderr[-3000:]
    assert (run_dir / "sample_teacher" / "generations.jsonl").read_text() == (
        whole / "sample_teacher" / "generations.jsonl").read_text()


def test_training_stopped_at_a_time_limit_continues_in_the_next_job_to_the_uninterrupted_loss(tmp_path, slurm,
                                                                                            small_demo):
    local, _ = small_demo
    training = ["stages=[sft]", "sft.max_steps=80", "sft.save_interval=40", "sft.val_check_interval=40"]
    runs = {}
    for name in ("slurm", "local"):  # two copies of the small demo's stages up to the packs
        runs[name] = tmp_path / name / "demo"
        for stage in ("prepare", "sample_teacher", "grade_teacher", "select", "pack"):
            shutil.copytree(local / stage, runs[name] / stage)
    # Each job trains until 30 s after it started (the limit less the margin), saves and leaves the rest to the next:
    # ~40 s of training on an idle 2-core machine, so at least two jobs; the jobs after the one that finishes find
    # the stage complete and end at once.
    result = _submit(runs["slurm"], slurm, *training, "cluster.time_limit=00:01:00",
                     "cluster.stop_before_time_limit=00:00:30", "cluster.training_jobs=12", "cluster.wait=true")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "demo/sft-1" in result.stdout and "FAILED exit 75:0" in result.stdout  # stopped to save: resumable
    logs = sorted((runs["slurm"].parent / ".jobs" / "demo").glob("*/logs/demo--sft-1-*.log"))
    assert "training stopped at step" in logs[-1].read_text() and "the next run of the stage resumes there" in (
        logs[-1].read_text())

    uninterrupted = subprocess.run([sys.executable, "-m", "nemo_recipes", f"run_dir={runs['local']}", *SMALL,
                                    *training], capture_output=True, text=True, cwd=REPO, timeout=1800)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    resumed = json.loads((runs["slurm"] / "sft" / "train_summary.json").read_text())
    whole = json.loads((runs["local"] / "sft" / "train_summary.json").read_text())
    assert resumed["resumed_from_step"] > 0 and resumed["steps"] == whole["steps"] == 80
    assert resumed["final_loss"] == whole["final_loss"]
    train_logs = [read_jsonl(runs[name] / "sft" / "train_log.jsonl") for name in ("slurm", "local")]
    assert train_logs[0] == train_logs[1]
