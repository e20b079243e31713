"""Both judges on every (gold, answer) pair, and the fields a graded record carries for them.

`nemo_skills` is NeMo-Skills' ``math_equal`` as it graded the paper (compare.py); `strict` compares exact values
(strict.py). One judge, `grading.judge`, sets the record's `correct` and `grade_status`, the fields NeMo-Skills'
tools and our selection and metrics read; both verdicts are kept beside them as `correct_<judge>` and
`grade_status_<judge>`, so that every number can say how much it depends on the judge.
"""

from __future__ import annotations

from typing import NamedTuple

from nemo_recipes.errors import UserError
from nemo_recipes.grading.compare import NEMO_SKILLS, CompareSettings, Verdict, compare_answers
from nemo_recipes.grading.strict import compare_strict

JUDGES = ("nemo_skills", "strict")
DEFAULT_JUDGE = "nemo_skills"


class Verdicts(NamedTuple):
    nemo_skills: Verdict
    strict: Verdict


NO_ANSWER = Verdicts(Verdict(False, "no_answer"), Verdict(False, "no_answer"))
NEVER_JUDGED = Verdicts(Verdict(None, "timeout"), Verdict(None, "timeout"))


def judge_pair(pair: tuple[str, str | None], settings: CompareSettings = NEMO_SKILLS) -> Verdicts:
    """Both judges' verdicts on one (gold, answer) pair: the shape the worker pool passes items in."""
    gold, answer = pair
    return Verdicts(compare_answers(gold, answer, settings), compare_strict(gold, answer, settings))


def check_judge(judge: str) -> str:
    if judge not in JUDGES:
        raise UserError(f"grading.judge is {judge!r}; it must be one of {', '.join(JUDGES)}.")
    return judge


def verdict_fields(verdicts: Verdicts, judge: str = DEFAULT_JUDGE) -> dict:
    """`correct` and `grade_status` from `judge`, then each judge's own pair of fields. Which judge that was is one
    value per run: the caller writes it once per record (`judge`), not once per sample."""
    chosen = getattr(verdicts, check_judge(judge))
    fields = {"correct": chosen.correct, "grade_status": chosen.status}
    for name, verdict in zip(JUDGES, verdicts):
        fields[f"correct_{name}"] = verdict.correct
        fields[f"grade_status_{name}"] = verdict.status
    return fields
