"""Grade math generations: last-\\boxed{} extraction, then two judges on every answer, in worker processes:
NeMo-Skills' math_equal as the paper used it (compare.py) and an exact-value judge (strict.py).

Public API: grade_records (what the pipeline's grade stage calls), grade_answers, compare_pairs, start_grading_pool,
extract_answer, compare_answers, compare_strict, judge_pair, verdict_fields, answers_equivalent, CompareSettings; the
command is in cli.py. Importing this package does not import math-verify; the comparison does, in the workers or on
first use.
"""

from nemo_recipes.grading.compare import (
    NEMO_SKILLS,
    STATUSES,
    CompareSettings,
    Verdict,
    answers_equivalent,
    compare_answers,
)
from nemo_recipes.grading.extract import extract_answer
from nemo_recipes.grading.grade import compare_pairs, grade_answers, grade_records, start_grading_pool
from nemo_recipes.grading.judges import DEFAULT_JUDGE, JUDGES, Verdicts, check_judge, judge_pair, verdict_fields
from nemo_recipes.grading.strict import compare_strict

__all__ = [
    "DEFAULT_JUDGE",
    "JUDGES",
    "NEMO_SKILLS",
    "STATUSES",
    "CompareSettings",
    "Verdict",
    "Verdicts",
    "answers_equivalent",
    "check_judge",
    "compare_answers",
    "compare_pairs",
    "compare_strict",
    "extract_answer",
    "grade_answers",
    "grade_records",
    "judge_pair",
    "start_grading_pool",
    "verdict_fields",
]
