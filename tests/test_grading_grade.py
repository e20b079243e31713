import json
import time
from pathlib import Path

import pytest

from nemo_recipes.errors import UserError
from nemo_recipes.grading import CompareSettings, grade, grade_records
from nemo_recipes.grading.cli import grade_file

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "research" / "data"


def _record(index: int, gold: str, generation, **extra) -> dict:
    return {"id": f"p{index}", "problem": "?", "expected_answer": gold, "subset": "s", "sample_idx": 0,
            "generation": generation, **extra}


def test_each_record_gains_answer_correctness_and_status():
    records = [
        _record(0, "$\\frac{1}{2}$", "so \\boxed{0.5}", num_generated_tokens=12),
        _record(1, "7", "I give up."),
        _record(2, "7", "\\boxed{8}"),
        _record(3, 7, "\\boxed{7}"),  # another harness's integer gold
        _record(4, "7", None),  # a failed generation
    ]
    graded = grade_records(records, workers=0, progress=False)
    assert [(g["predicted_answer"], g["correct"], g["grade_status"]) for g in graded] == [
        ("0.5", True, "ok"),
        (None, False, "no_answer"),
        ("8", False, "ok"),
        ("7", True, "ok"),
        (None, False, "no_answer"),
    ]
    assert graded[0]["num_generated_tokens"] == 12 and graded[0]["problem"] == "?"
    assert "predicted_answer" not in records[0]  # inputs are not modified


def test_every_record_carries_both_verdicts_and_the_chosen_judge_sets_correct():
    records = [
        _record(0, "7", "so \\boxed{007}"),  # an AIME answer in three digits: NeMo-Skills refuses it
        _record(1, "\\sqrt{2}", "\\boxed{1.414214}"),  # six decimals of an irrational: NeMo-Skills accepts it
        _record(2, "5", "\\boxed{5}"),
        _record(3, "5", "no box"),
    ]
    graded = grade_records(records, workers=0, progress=False)
    assert [(g["correct"], g["correct_nemo_skills"], g["correct_strict"]) for g in graded] == [
        (False, False, True), (True, True, False), (True, True, True), (False, False, False)]
    assert [g["grade_status_strict"] for g in graded] == ["ok", "ok", "ok", "no_answer"]
    assert all(g["judge"] == "nemo_skills" and g["grade_status"] == g["grade_status_nemo_skills"] for g in graded)
    strictly = grade_records(records, workers=0, progress=False, judge="strict")
    assert [g["correct"] for g in strictly] == [True, False, True, False]
    assert [{k: v for k, v in g.items() if k not in ("correct", "grade_status", "judge")} for g in strictly] == [
        {k: v for k, v in g.items() if k not in ("correct", "grade_status", "judge")} for g in graded]
    with pytest.raises(UserError, match="grading.judge is 'exact'"):
        grade_records(records, workers=0, progress=False, judge="exact")


def test_identical_gold_answer_pairs_are_judged_once(monkeypatch):
    calls = []
    real = grade.judge_pair
    monkeypatch.setattr(grade, "judge_pair", lambda pair, settings: calls.append(pair) or real(pair, settings))
    records = [_record(0, "5", "\\boxed{5}")] * 6 + [_record(1, "5", "\\boxed{6}")] * 3
    records.append(_record(2, "6", "\\boxed{6}"))
    graded = grade_records(records, workers=0, progress=False)
    assert sorted(calls) == [("5", "5"), ("5", "6"), ("6", "6")]
    assert [g["correct"] for g in graded] == [True] * 6 + [False] * 3 + [True]


def test_workers_and_in_process_grading_agree():
    records = [
        _record(i, gold, f"... \\boxed{{{answer}}}")
        for i, (gold, answer) in enumerate(
            [("$10 \\pi$", "10\\pi"), ("$10 \\pi$", "10"), ("\\frac{5}{6}", "0.8333333"), ("$224, -176$", "-176, 224"),
             ("$3 \\sqrt{6}$.", "\\sqrt{54}"), ("50\\%", "50"), ("x^2+1", "1+x^2"), ("12", "13")]
        )
    ]
    in_process = grade_records(records, workers=0, progress=False)
    in_workers = grade_records(records, workers=2, progress=False)
    assert in_process == in_workers
    assert [g["correct"] for g in in_process] == [True, False, True, True, True, True, True, False]


@pytest.mark.parametrize(
    "record, message",
    [
        ({"id": "a", "generation": "\\boxed{1}"}, "missing key 'expected_answer'"),
        ({"id": "a", "expected_answer": "1"}, "missing key 'generation'"),
        ({"id": "a", "expected_answer": None, "generation": "x"}, "'expected_answer' is null"),
        ({"id": "a", "expected_answer": "1", "generation": ["x", "y"]}, "one sample per record"),
    ],
)
def test_bad_records_are_one_sentence_user_errors(record, message):
    with pytest.raises(UserError, match=message):
        grade_records([record], workers=0, progress=False)


def test_pathological_generations_each_get_a_status_in_bounded_time():
    filler = "Let $x_{n+1} = x_n^2 + \\frac{1}{2}$, so the sum telescopes. " * 90_000
    generations = {
        "5 MB before the box": filler[:5_000_000] + "\\boxed{5}",
        "5 MB inside the box": "\\boxed{" + filler[:5_000_000] + "}",
        "20,000 unmatched braces": "\\boxed{" + "{" * 20_000,
        "20,000 nested braces": "\\boxed{" + "{" * 20_000 + "5" + "}" * 20_000 + "}",
        "tower of exponents": "\\boxed{9^{9^{9^{9^{9^{9}}}}}}",
        "factorial of a power": "\\boxed{(10^{10})!}",
        "invalid UTF-8 around the box": "abc \udcff\udc80 \\boxed{5}",
        "invalid UTF-8 inside the box": "\\boxed{5\udcff}",
        "replacement characters": "\ufffd\ufffd \\boxed{5}",
    }
    records = [_record(i, "5", text, case=name) for i, (name, text) in enumerate(generations.items())]
    quick = CompareSettings(parse_timeout_s=1, verify_timeout_s=1)
    start = time.perf_counter()
    graded = grade_records(records, workers=2, progress=False, settings=quick, item_deadline_s=4.0)
    assert time.perf_counter() - start < 60
    outcome = {g["case"]: (g["correct"], g["grade_status"]) for g in graded}
    assert outcome["5 MB before the box"] == (True, "ok")
    assert outcome["20,000 unmatched braces"] == (False, "no_answer")
    assert outcome["tower of exponents"] == (None, "timeout")
    assert outcome["invalid UTF-8 around the box"] == (True, "ok")
    assert outcome["replacement characters"] == (True, "ok")
    for case in ("5 MB inside the box", "20,000 nested braces", "factorial of a power", "invalid UTF-8 inside the box"):
        correct, status = outcome[case]
        assert status in ("timeout", "parse_error", "ok") and correct is not True, case


def test_qwen25_math_generations_reproduce_their_published_scores(tmp_path):
    """Real outputs of Qwen2.5-Math on 100 MATH problems x 8 samples, with Qwen's own per-sample labels.

    Every response boxes its answer, so the default boxed-only mode applies (no fallback). The one label we
    disagree with is idx 72: gold `10{,}000`, answer `10000`, which Qwen's grader marks wrong.
    """
    source = DATA / "qwen25-math-math_cot_100.jsonl"
    if not source.exists():
        pytest.skip(f"{source} is absent")
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    assert all("\\boxed" in response for row in rows for response in row["response"])
    output = tmp_path / "graded.jsonl"
    summary = grade_file(source, output, gold_key="gt", generation_key="response", id_key="idx", progress=False)
    assert 90.9 <= summary["pass@1"] <= 91.3
    assert summary["maj@8"] == 93.0
    assert (summary["num_problems"], summary["num_generations"], summary["k"]) == (100, 800, 8)
    graded = [json.loads(line) for line in output.read_text().splitlines()]
    agreements = sum(
        (ours is True) == label for row in graded for ours, label in zip(row["correct"], row["score"])
    )
    assert agreements >= 799
