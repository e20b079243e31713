"""The whole pipeline on CPU with the toy models, end to end, plus a SIGKILL in the middle of sampling.

The toy models are built once (a few minutes on 2 cores) into the shared cache and reused by `make demo`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, SMALL
from conftest import run_small as _run
from nemo_recipes.io import read_jsonl

pytestmark = pytest.mark.slow


def _manifest(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "manifest.json").read_text())


def test_toy_pipeline_end_to_end_then_skips_everything(small_demo):
    run_dir, result = small_demo
    assert result.returncode == 0, result.stderr[-3000:]

    generations = read_jsonl(run_dir / "sample_teacher" / "generations.jsonl")
    assert len(generations) == 50 * 4
    assert len({r["seed"] for r in generations}) == 50 * 4  # one seed per sample, never shared within a prompt
    assert {(r["id"], r["sample_idx"]) for r in generations} == {(f"toy-arithmetic-train-{i:04d}", s)
                                                                 for i in range(50) for s in range(4)}
    graded = read_jsonl(run_dir / "grade_teacher" / "graded.jsonl")
    assert {r["grade_status"] for r in graded} <= {"ok", "no_answer"}
    assert all(r["judge"] == "nemo_skills" and r["correct"] == r["correct_nemo_skills"] and "correct_strict" in r
               for r in graded)
    sft_rows = read_jsonl(run_dir / "select" / "sft.jsonl")
    assert len(sft_rows) == 20 and all(r["correct"] is True for r in sft_rows)
    assert all(r["input"].startswith("<|im_start|>system\n<|im_end|>\n") and r["output"].endswith("<|im_end|>\n")
               for r in sft_rows)
    assert (run_dir / "sft" / "model" / "model.safetensors").exists()
    assert len(read_jsonl(run_dir / "sft" / "train_log.jsonl")) == 24

    metrics = json.loads((run_dir / "metrics" / "metrics.json").read_text())
    assert set(metrics) == {"base", "sft"}
    for role in ("base", "sft"):
        assert metrics[role]["metrics"]["overall"]["num_generations"] == 16 * 2
    report = (run_dir / "report" / "report.md").read_text()
    # The toy report has the paper targets' layout (tests/test_report.py checks the same list on a target's report).
    from nemo_recipes.report.render import FIGURES, SECTIONS

    assert [line[3:] for line in report.splitlines() if line.startswith("## ")] == list(SECTIONS)
    assert "toy-student + SFT" in report
    assert report.count("(nemo_skills / strict);") == 2  # each model's numbers under both judges
    for figure in FIGURES:
        assert (run_dir / "report" / figure).stat().st_size > 5000, figure
    assert (run_dir / "report" / "results.csv").read_text().startswith("label,experiment,role,model,subset,metric")
    # The toy teacher's checks and corrections are markers the base never writes: the two models on either side.
    section = report.split("## Trace structure")[1].split("\n## ")[0]
    verdicts = {line.split(" | ")[0][2:]: line.split(" | ")[-1][:-2] for line in section.splitlines()
                if line.startswith("| toy-")}
    assert verdicts == {"toy-student": "no", "toy-student + SFT": "**yes**"}
    assert (run_dir / "report" / "traces.png").stat().st_size > 5000

    fingerprints = {s: _manifest(run_dir, s)["fingerprint"] for s in ("prepare", "sft", "report")}
    again = _run(run_dir)  # every stage skipped: no model is loaded, nothing is recomputed
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("complete, skipping") == 13 and "running" not in again.stdout
    assert {s: _manifest(run_dir, s)["fingerprint"] for s in fingerprints} == fingerprints


def test_sigkill_during_sampling_then_rerun_gives_exactly_the_expected_records(tmp_path):
    run_dir = tmp_path / "killed"
    stages = "stages=[prepare,sample_teacher]"
    small = [o for o in SMALL if not o.startswith(("teacher_sampling.n=", "teacher_sampling.chunk_size="))]
    command = [sys.executable, "-m", "nemo_recipes", f"run_dir={run_dir}", *small, stages, "teacher_sampling.n=16",
               "teacher_sampling.chunk_size=8", "teacher_sampling.batch_size=8"]  # 50 x 16 = 800 in 100 chunks
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    chunks = run_dir / "sample_teacher" / "chunks"
    deadline = time.time() + 900
    while time.time() < deadline and len(list(chunks.glob("chunk_*.jsonl"))) < 3:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = {p.name: p.read_text() for p in chunks.glob("chunk_*.jsonl")}
    assert 3 <= len(done_before) < 100, "the kill must land in the middle of sampling"
    assert _manifest(run_dir, "sample_teacher")["status"] == "running"

    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{len(done_before)} of 100 chunks already done" in result.stdout
    records = read_jsonl(run_dir / "sample_teacher" / "generations.jsonl")
    assert len(records) == 800
    assert len({(r["id"], r["sample_idx"]) for r in records}) == 800
    for name, text in done_before.items():  # chunks finished before the kill were kept, not redone
        assert (chunks / name).read_text() == text


def test_two_shards_run_at_once_in_one_folder_merge_into_the_records_of_one_unsharded_run(tmp_path):
    sharded = tmp_path / "sharded"
    common = ["teacher_sampling.chunk_size=16", "teacher_sampling.num_shards=2"]
    assert _run(sharded, "stages=[prepare]", *common).returncode == 0
    # Both nodes' shards at the same time, as a cluster runs them: neither is refused by the other's lock.
    nodes = [subprocess.Popen([sys.executable, "-m", "nemo_recipes", f"run_dir={sharded}", *SMALL, *common,
                               "stages=[sample_teacher]", f"teacher_sampling.shard={shard}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
             for shard in (0, 1)]
    outputs = [node.communicate(timeout=1800) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):  # each ends with its own chunks, whatever the other is doing
        assert node.returncode == 0, err[-3000:]
    merged = _run(sharded, "stages=[prepare,sample_teacher]", *common)  # merges, or finds it merged
    assert merged.returncode == 0, merged.stderr[-3000:]
    whole = _run(tmp_path / "whole", "stages=[prepare,sample_teacher]", *common)
    assert whole.returncode == 0, whole.stderr[-3000:]
    records = (sharded / "sample_teacher" / "generations.jsonl").read_text()
    assert records == (tmp_path / "whole" / "sample_teacher" / "generations.jsonl").read_text()
    assert len(records.splitlines()) == 50 * 4


def test_replica_workers_share_the_chunks_as_they_go_and_merge_into_the_unsharded_records(tmp_path):
    # The vLLM replica workers' code path, run with the hf backend: two workers at once, then the stage merges.
    common = ["stages=[prepare,sample_teacher]", "teacher_sampling.chunk_size=16", "progress=false", *SMALL[:1]]
    run_dir = tmp_path / "replicas"
    assert _run(run_dir, *common, "stages=[prepare]").returncode == 0
    workers = [subprocess.Popen([sys.executable, "-m", "nemo_recipes.stages.sample_replica", f"run_dir={run_dir}",
                                 *SMALL, *common, "--stage", "sample_teacher", "--replica", str(replica),
                                 "--replicas", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})  # a core each, as GPUs each
               for replica in (0, 1)]
    for worker in workers:
        _, err = worker.communicate(timeout=1800)
        assert worker.returncode == 0, err[-3000:]
    chunks = sorted(p.name for p in (run_dir / "sample_teacher" / "chunks").glob("chunk_*.jsonl"))
    assert chunks == [f"chunk_{c:05d}.jsonl" for c in range(13)]
    merged = _run(run_dir, *common)
    assert merged.returncode == 0 and "13 of 13 chunks already done" in merged.stdout, merged.stderr[-3000:]
    assert not list((run_dir / "sample_teacher" / "chunks").glob(".claim_*"))  # claims go once merged
    whole = _run(tmp_path / "whole", *common)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert ((run_dir / "sample_teacher" / "generations.jsonl").read_text()
            == (tmp_path / "whole" / "sample_teacher" / "generations.jsonl").read_text())
