"""Selection strategies on generated data: paper, incorrect, no_keywords, released, and the too-few error."""

from __future__ import annotations

import json

import pytest

from nemo_recipes.config import compose_config
from nemo_recipes.errors import UserError
from nemo_recipes.pipeline import StageContext, stage_graph
from nemo_recipes.stages import select


def _graded(problem_id: str, sample_idx: int, correct: bool, words: int, finish: str = "stop",
            status: str = "ok") -> dict:
    answer = f" Hmm so the answer is \\boxed{{{int(correct)}}}." if status == "ok" else " Hmm I am not sure."
    text = "Wait, " + " ".join(["step"] * words) + answer
    return {"id": problem_id, "problem": f"Problem {problem_id}", "expected_answer": "1", "subset": "seed",
            "sample_idx": sample_idx, "generation": text, "correct": correct, "finish_reason": finish,
            "grade_status": status}


@pytest.fixture
def run_dir(tmp_path):
    graded = []
    for p in range(6):
        pid = f"p{p}"
        # problem p has p+1 correct samples of growing length, one wrong one, one truncated correct one, and one
        # that states no answer (closest to the target, so only the rule keeps it out of the incorrect set)
        graded += [_graded(pid, s, True, 10 * (s + 1)) for s in range(p + 1)]
        graded += [_graded(pid, 7, False, 25), _graded(pid, 8, True, 30, finish="length"),
                   _graded(pid, 9, False, 18, status="no_answer")]
    problems = [{"id": f"p{p}", "problem": f"Problem p{p}", "expected_answer": "1", "subset": "seed",
                 "solutions": {"human_stage1": f"Human solution {p}. \\boxed{{1}}"} if p < 4 else {}}
                for p in range(6)]
    for stage, name, rows in (("grade_teacher", "graded.jsonl", graded), ("prepare", "problems.jsonl", problems)):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def _select(run_dir, student_dir, *overrides):
    cfg = compose_config([f"run_dir={run_dir}", "model@student=qwen2.5-7b", "student.source=local",
                          f"student.path={student_dir}", "selection.num_examples=3", "selection.target_tokens=20",
                          *overrides])
    stage = next(s for s in stage_graph(cfg) if s.name == "select")
    select.run(StageContext(cfg, stage, run_dir, progress=False))
    return [json.loads(line) for line in (run_dir / "select" / "sft.jsonl").open()]


def test_paper_strategy_takes_one_correct_finished_trace_per_problem_closest_to_the_target(run_dir, tiny_student_dir):
    rows = _select(run_dir, tiny_student_dir)
    assert len(rows) == 3 and len({r["id"] for r in rows}) == 3
    assert all(r["correct"] is True for r in rows)
    assert all(r["sample_idx"] != 8 for r in rows)  # truncated traces are never chosen
    for row in rows:  # among the eligible, the closest to 20 tokens
        assert abs(row["num_tokens"] - 20) <= 12
    assert rows[0]["input"].startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nSolve the following")
    assert rows[0]["output"].endswith("<|im_end|>\n") and rows[0]["source"] == "toy-teacher"


def test_hardest_order_and_incorrect_traces(run_dir, tiny_student_dir):
    rows = _select(run_dir, tiny_student_dir, "selection.problem_order=hardest")
    assert [r["id"] for r in rows] == ["p0", "p1", "p2"]  # lowest teacher pass rate first
    rows = _select(run_dir, tiny_student_dir, "selection=incorrect", "selection.num_examples=3",
                   "selection.target_tokens=20")
    assert all(r["correct"] is False and r["sample_idx"] == 7 for r in rows)


def test_no_keywords_removes_reflection_cues_only(run_dir, tiny_student_dir):
    rows = _select(run_dir, tiny_student_dir, "selection=no_keywords", "selection.num_examples=3",
                   "selection.target_tokens=20")
    for row in rows:
        assert "Wait" not in row["output"] and "Hmm" not in row["output"]
        assert row["output"].startswith("step step") and "so the answer is \\boxed{1}." in row["output"]
    # The list is config `markers`, the one the traces stage counts: narrowed there, the ablation removes less.
    rows = _select(run_dir, tiny_student_dir, "selection=no_keywords", "selection.num_examples=3",
                   "selection.target_tokens=20", "markers={reflection:[hmm+]}")
    assert all(row["output"].startswith("Wait, step") and "Hmm" not in row["output"] for row in rows)


def test_released_strategy_uses_the_datasets_solutions_and_needs_no_teacher(run_dir, tiny_student_dir):
    rows = _select(run_dir, tiny_student_dir, "selection=human_stage1", "selection.num_examples=4")
    assert sorted(r["id"] for r in rows) == ["p0", "p1", "p2", "p3"]
    assert all(r["source"] == "human_stage1" and r["output"].startswith("Human solution") for r in rows)
    cfg = compose_config(["selection=human_stage1"])
    names = [s.name for s in stage_graph(cfg)]
    assert "sample_teacher" not in names and next(s for s in stage_graph(cfg) if s.name == "select").needs == ("prepare",)


def test_too_few_eligible_traces_says_how_many_and_which_knob(run_dir, tiny_student_dir):
    with pytest.raises(UserError, match=r"only 6 of 6 problems have a correct trace that finished, but "
                                        r"selection.num_examples=20; sample more \(teacher_sampling.n\) or lower"):
        _select(run_dir, tiny_student_dir, "selection.num_examples=20")
    with pytest.raises(UserError, match=r"only 4 of 6 problems have a 'human_stage1' solution"):
        _select(run_dir, tiny_student_dir, "selection=human_stage1", "selection.num_examples=5")
    with pytest.raises(UserError, match="selection.strategy: 'best' is not one of paper, no_keywords, released"):
        _select(run_dir, tiny_student_dir, "selection.strategy=best")


def test_diverse_order_picks_problems_least_like_those_already_chosen():
    problems = {"a": "find the sum of the roots of the polynomial", "b": "find the sum of the roots of the cubic",
                "c": "how many ways can six people sit at a round table", "d": "find the sum of the roots of x"}
    order = select.most_diverse_first(["a", "b", "c", "d"], problems)
    assert order[:2] == ["a", "c"]  # after a root-sum problem, the seating problem, not another root sum
    assert sorted(order) == ["a", "b", "c", "d"]
    assert select.most_diverse_first(["c", "a", "b", "d"], problems)[:2] == ["c", "a"]


def test_diverse_order_through_the_stage(run_dir, tiny_student_dir):
    rows = _select(run_dir, tiny_student_dir, "selection.problem_order=diverse")
    assert len({r["id"] for r in rows}) == 3
