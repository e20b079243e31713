"""Stage grade_<role>: the answer in each generation against the gold, by both judges, with math-verify in worker
processes.

    python -m nemo_recipes experiment=demo stages=[grade_teacher]
    python -m nemo_recipes experiment=demo stages=[grade_teacher] grading.judge=strict
    python -m nemo_recipes.grading runs/demo/sample_teacher/generations.jsonl --output graded.jsonl   # same code

Writes `graded.jsonl`: every generation record plus `predicted_answer`, `correct` (true/false/null) and
`grade_status` (ok | no_answer | timeout | parse_error) as `grading.judge` decided, and both judges' verdicts beside
them (`correct_nemo_skills`, `correct_strict`, `grade_status_<judge>`; nemo_recipes/grading/judges.py).
"""

from __future__ import annotations

from collections import Counter

from nemo_recipes.io import read_jsonl, write_jsonl


def run(ctx) -> dict:
    from dataclasses import replace

    from nemo_recipes.grading import JUDGES, NEMO_SKILLS, check_judge, grade_records

    cfg = ctx.cfg
    judge = check_judge(cfg.grading.judge)
    source = ctx.input_dir(ctx.stage.param("source")) / "generations.jsonl"
    records = read_jsonl(source, required_keys=("id", "expected_answer", "generation"))
    settings = replace(NEMO_SKILLS, verify_timeout_s=int(cfg.grading.timeout_s))
    graded = grade_records(records, workers=cfg.grading.workers, progress=ctx.progress, mode=cfg.grading.extract,
                           settings=settings, judge=judge)
    write_jsonl(ctx.dir / "graded.jsonl", graded)
    statuses = Counter(r["grade_status"] for r in graded)
    correct = {name: sum(r[f"correct_{name}"] is True for r in graded) for name in JUDGES}
    differ = sum(len({r[f"correct_{name}"] is True for name in JUDGES}) > 1 for r in graded)
    ctx.log(f"{correct[judge]} of {len(graded)} correct ({judge}, the `correct` field); "
            + ", ".join(f"{count} under {name}" for name, count in correct.items())
            + f"; {differ} verdicts differ; statuses {dict(statuses)}")
    return {"num_graded": len(graded), "num_correct": correct[judge], "statuses": dict(statuses),
            "judge": judge, "num_correct_by_judge": correct, "verdicts_differ": differ}


def plan(ctx) -> list[str]:
    from nemo_recipes.grading import check_judge

    g = ctx.cfg.grading
    return [f"math-verify 0.9.0 in {g.workers} worker processes, extraction '{g.extract}', timeout {g.timeout_s} s; "
            f"`correct` by the {check_judge(g.judge)} judge, both judges' verdicts kept"]
