"""The real vLLM engine on the toy models, through our own path: the sample stage starts replica workers with
cluster.vllm_python=.venv-vllm/bin/python, the CPU build of the vLLM version our image installs (`make install-vllm`).

An engine takes ~45 s to start on 2 cores, so each run below is a module fixture that several tests read: a teacher
run SIGKILLed mid-way and run again, a teacher run cut into other chunks followed by an evaluation stage, the hf
backend's teacher run for reference, and one engine driven directly to see the token ids it generated from.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from nemo_recipes import processes
from nemo_recipes.io import read_jsonl
from nemo_recipes.stages.sample import sample_seed

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(not VLLM_PYTHON.exists(), reason=".venv-vllm is absent: `make install-vllm` builds it "
                                                        "(`make test` does)"),
]

VLLM = ["teacher_sampling.backend=vllm", "eval_sampling.backend=vllm", f"cluster.vllm_python={VLLM_PYTHON}"]
TEACHER = 50 * 8  # the demo's 50 seed problems x teacher_sampling.n, in chunks of 64


def _command(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "nemo_recipes", "experiment=demo", f"run_dir={run_dir}", "progress=false",
            *overrides]


def _run(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    result = subprocess.run(_command(run_dir, *overrides), capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def _process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, start time): the start time tells a process from a later one with its pid."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            table[int(entry.name)] = (int(fields[1]), fields[0].decode(), fields[19].decode())
    return table


def _tree(root: int) -> dict[int, str]:
    """`root` and its descendants, by pid, with their start times."""
    table = _process_table()
    tree, frontier = {root: table[root][2]}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _, _) in table.items() if ppid == parent]
        tree.update({pid: table[pid][2] for pid in children})
        frontier += children
    return tree


def _still_running(tree: dict[int, str], timeout: float) -> list[int]:
    """The processes of `tree` that are neither gone nor zombies after `timeout` seconds (then SIGKILLed)."""
    deadline = time.time() + timeout
    while True:
        table = _process_table()
        left = [pid for pid, started in tree.items() if pid in table and table[pid][2] == started
                and table[pid][1] != "Z"]
        if not left or time.time() > deadline:
            break
        time.sleep(0.2)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("vllm")


@pytest.fixture(scope="module")
def resumed(runs):
    """A teacher run through vLLM, SIGKILLed once its first chunk is written, then the same command again."""
    run_dir = runs / "resumed"
    command = _command(run_dir, *VLLM, "stages=[prepare,sample_teacher,grade_teacher]")
    stage = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunks = run_dir / "sample_teacher" / "chunks"
    deadline = time.time() + 600
    while time.time() < deadline and not list(chunks.glob("chunk_*.jsonl")) and stage.poll() is None:
        time.sleep(0.1)
    tree = _tree(stage.pid)  # the stage, its replica worker, vLLM's EngineCore and the EngineCore's worker
    stage.kill()
    stage.wait()
    left = _still_running(tree, timeout=60)
    done_before = {path.name: path.read_text() for path in chunks.glob("chunk_*.jsonl")}
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    return SimpleNamespace(run_dir=run_dir, tree=tree, left=left, done_before=done_before, rerun=rerun)


@pytest.fixture(scope="module")
def rechunked(runs):
    """The teacher's requests in one chunk of 400 (the CPU engine's old failure), then the base model's evaluation."""
    run_dir = runs / "rechunked"
    _run(run_dir, *VLLM, "teacher_sampling.chunk_size=512", "stages=[prepare,sample_teacher,sample_base]")
    return run_dir


@pytest.fixture(scope="module")
def hf_run(runs):
    run_dir = runs / "hf"
    _run(run_dir, "stages=[prepare,sample_teacher,grade_teacher]")
    return run_dir


def test_a_sigkilled_stage_leaves_no_vllm_process_and_its_rerun_writes_exactly_the_expected_records(resumed):
    assert len(resumed.tree) >= 4, f"the kill came before vLLM's engine processes started: {resumed.tree}"
    assert resumed.left == [], "processes of the killed run outlived it (SIGKILLed by the test)"
    assert 1 <= len(resumed.done_before) < 7, "the kill must land in the middle of sampling"
    assert resumed.rerun.returncode == 0, resumed.rerun.stderr[-3000:]
    assert f"{len(resumed.done_before)} of 7 chunks already done" in resumed.rerun.stdout
    chunks = resumed.run_dir / "sample_teacher" / "chunks"
    for name, text in resumed.done_before.items():  # chunks finished before the kill are kept, not redone
        assert (chunks / name).read_text() == text
    records = read_jsonl(resumed.run_dir / "sample_teacher" / "generations.jsonl")
    assert [(r["id"], r["sample_idx"], r["seed"]) for r in records] == [
        (f"toy-arithmetic-train-{i // 8:04d}", i % 8, sample_seed(0, i)) for i in range(TEACHER)]


def test_two_chunkings_through_two_engines_give_byte_identical_records(resumed, rechunked):
    # Chunks of 64 across a kill and a resume vs one chunk of 400: each sample is drawn from its own seed.
    resumed_records = (resumed.run_dir / "sample_teacher" / "generations.jsonl").read_bytes()
    assert resumed_records == (rechunked / "sample_teacher" / "generations.jsonl").read_bytes()


def test_vllm_records_have_the_hf_backends_schema(resumed, hf_run):
    vllm_record, hf_record = (read_jsonl(run / "sample_teacher" / "generations.jsonl")[0]
                              for run in (resumed.run_dir, hf_run))
    assert list(vllm_record) == list(hf_record)
    assert {key: type(value) for key, value in vllm_record.items()} == {k: type(v) for k, v in hf_record.items()}
    assert vllm_record["sampling"] == {**hf_record["sampling"], "backend": "vllm"}


def test_the_vllm_teacher_is_as_accurate_as_the_hf_backend(resumed, hf_run):
    vllm_correct, hf_correct = (sum(r["correct"] is True for r in read_jsonl(run / "grade_teacher" / "graded.jsonl"))
                                for run in (resumed.run_dir, hf_run))
    # Sampling noise of the difference of two accuracies over TEACHER samples each (binomial, pooled); the prompts
    # as other token ids (vLLM tokenizing strings itself) solved 21 of 400.
    pooled = (vllm_correct + hf_correct) / (2 * TEACHER)
    noise = math.sqrt(2 * pooled * (1 - pooled) / TEACHER)
    assert hf_correct >= 0.8 * TEACHER
    assert abs(vllm_correct - hf_correct) / TEACHER <= 4 * noise + 2 / TEACHER, (vllm_correct, hf_correct)


def test_an_evaluation_stage_samples_the_benchmark_through_vllm(rechunked):
    records = read_jsonl(rechunked / "sample_base" / "generations.jsonl")
    assert [(r["id"], r["sample_idx"], r["seed"]) for r in records] == [
        (f"toy-arithmetic-test-{i // 8:04d}", i % 8, sample_seed(1000, i)) for i in range(48 * 8)]
    assert {r["model"] for r in records} == {"toy-student"}
    assert {r["sampling"]["backend"] for r in records} == {"vllm"}
    assert all(r["finish_reason"] in ("stop", "length") and r["num_generated_tokens"] > 0 for r in records)


# Our backend on one engine, with vLLM's generate watched: the prompt ids each request was generated from, and the
# ids vLLM's own tokenizer makes of the same prompt strings.
WATCH_PROMPT_IDS = textwrap.dedent("""
    import json, sys
    from nemo_recipes.config import compose_config
    from nemo_recipes.generation.top_k import resolved_sampling
    from nemo_recipes.generation.vllm import VLLMGenerator
    from nemo_recipes.models import model_path

    def main():
        cfg = compose_config(["experiment=demo"])
        prompts = json.loads(sys.argv[1])
        generator = VLLMGenerator(model_path(cfg, "teacher"), resolved_sampling(cfg, "teacher"))
        engine_ids, generate = [], generator.llm.generate
        def watched(*args, **kwargs):
            outputs = generate(*args, **kwargs)
            engine_ids.extend(list(output.prompt_token_ids) for output in outputs)
            return outputs
        generator.llm.generate = watched
        try:
            generator.generate([{"prompt": prompt, "seed": seed} for seed, prompt in enumerate(prompts)])
            tokenizer = generator.llm.get_tokenizer()
            string_ids = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
        finally:
            generator.close()
        print("IDS " + json.dumps({"engine": engine_ids, "string": string_ids}))

    if __name__ == "__main__":  # vLLM starts its engine in a spawned process, which imports this module
        main()
""")


def test_vllm_generates_from_our_token_ids_not_from_its_own_encoding_of_the_prompt(tmp_path):
    from nemo_recipes.config import compose_config
    from nemo_recipes.data.prompts import render_prompt
    from nemo_recipes.models import model_path
    from nemo_recipes.tokenizer import load_tokenizer
    from nemo_recipes.toy.task import make_problems

    cfg = compose_config(["experiment=demo"])
    prompts = [render_prompt(cfg.teacher_sampling.prompt, p["problem"]) for p in make_problems(4, seed=3, prefix="t")]
    script = tmp_path / "watch_prompt_ids.py"
    script.write_text(WATCH_PROMPT_IDS)
    output = tmp_path / "output.txt"
    with open(output, "w") as out:
        child = processes.start([str(VLLM_PYTHON), str(script), json.dumps(prompts)], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            assert child.wait(timeout=600) == 0, output.read_text()[-3000:]
        finally:
            processes.stop(child, grace_s=10)
    ids = json.loads(next(line for line in output.read_text().splitlines() if line.startswith("IDS "))[4:])
    tokenizer = load_tokenizer(model_path(cfg, "teacher"))
    ours = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    assert ids["engine"] == ours
    assert all(string != own for string, own in zip(ids["string"], ours))  # what the string path would have fed it
