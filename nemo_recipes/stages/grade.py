"""Stage grade_<role>: the answer in each generation against the gold, with math-verify in worker processes.

    python -m nemo_recipes experiment=demo stages=[grade_teacher]
    python -m nemo_recipes.grading runs/demo/sample_teacher/generations.jsonl --output graded.jsonl   # same code

Writes `graded.jsonl`: every generation record plus `predicted_answer`, `correct` (true/false/null) and
`grade_status` (ok | no_answer | timeout | parse_error).
"""

from __future__ import annotations

from collections import Counter

from nemo_recipes.io import read_jsonl, write_jsonl


def run(ctx) -> dict:
    from dataclasses import replace

    from nemo_recipes.grading import NEMO_SKILLS, grade_records

    cfg = ctx.cfg
    source = ctx.input_dir(ctx.stage.param("source")) / "generations.jsonl"
    records = read_jsonl(source, required_keys=("id", "expected_answer", "generation"))
    settings = replace(NEMO_SKILLS, verify_timeout_s=int(cfg.grading.timeout_s))
    graded = grade_records(records, workers=cfg.grading.workers, progress=ctx.progress, mode=cfg.grading.extract,
                           settings=settings)
    write_jsonl(ctx.dir / "graded.jsonl", graded)
    statuses = Counter(r["grade_status"] for r in graded)
    correct = sum(r["correct"] is True for r in graded)
    ctx.log(f"{correct} of {len(graded)} correct; statuses {dict(statuses)}")
    return {"num_graded": len(graded), "num_correct": correct, "statuses": dict(statuses)}


def plan(ctx) -> list[str]:
    g = ctx.cfg.grading
    return [f"math-verify 0.9.0 in {g.workers} worker processes, extraction '{g.extract}', timeout {g.timeout_s} s"]
