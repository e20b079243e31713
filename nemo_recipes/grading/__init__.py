"""Grade math generations: last-\\boxed{} extraction, NeMo-Skills-style math-verify comparison in worker processes.

Public API: grade_records (what the pipeline's grade stage calls), grade_answers, compare_pairs, start_grading_pool,
extract_answer, compare_answers, answers_equivalent, CompareSettings; the command is in cli.py. Importing this
package does not import math-verify; the comparison does, in the workers or on first use.
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

__all__ = [
    "NEMO_SKILLS",
    "STATUSES",
    "CompareSettings",
    "Verdict",
    "answers_equivalent",
    "compare_answers",
    "compare_pairs",
    "extract_answer",
    "grade_answers",
    "grade_records",
    "start_grading_pool",
]
