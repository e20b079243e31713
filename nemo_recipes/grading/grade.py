"""Grade generation records: extract answers here, judge each distinct (gold, answer) pair once, in workers, by both
judges (judges.py)."""

from __future__ import annotations

import functools
import importlib
import sys
import threading
from collections.abc import Iterable, Sequence, Sized

from nemo_recipes.errors import UserError
from nemo_recipes.grading.compare import NEMO_SKILLS, CompareSettings
from nemo_recipes.grading.extract import extract_answer
from nemo_recipes.grading.judges import (
    DEFAULT_JUDGE,
    NEVER_JUDGED,
    NO_ANSWER,
    Verdicts,
    check_judge,
    judge_pair,
    verdict_fields,
)
from nemo_recipes.grading.pool import WorkerPool

_WARM_MODULE = "nemo_recipes.grading.warm"


def grade_records(
    records: Sequence[dict],
    *,
    gold_key: str = "expected_answer",
    generation_key: str = "generation",
    workers: int = 2,
    progress: bool = True,
    mode: str = "boxed",
    reasoning_end: str | None = None,
    settings: CompareSettings = NEMO_SKILLS,
    judge: str = DEFAULT_JUDGE,
    item_deadline_s: float | None = None,
    pool: WorkerPool | None = None,
) -> list[dict]:
    """One output record per input sample: the record plus `predicted_answer`, then `correct` and `grade_status` as
    `judge` decided, both judges' verdicts (judges.verdict_fields) and the name of `judge`.

    `correct` is None only for a timeout; a missing answer or an unparseable one is False, as in NeMo-Skills.
    workers=0 grades in this process, which must then be its main thread (math-verify's timeouts use SIGALRM).
    `pool` (from start_grading_pool, with the same settings) is used instead of starting workers here.
    """
    check_judge(judge)
    golds = [_field(record, gold_key, position, allow_none=False) for position, record in enumerate(records)]
    generations = [_field(record, generation_key, position, allow_none=True) for position, record in enumerate(records)]
    answers = [extract_answer(text, mode=mode, reasoning_end=reasoning_end) for text in generations]
    verdicts = grade_answers(
        golds,
        answers,
        workers=workers,
        progress=progress,
        settings=settings,
        item_deadline_s=item_deadline_s,
        pool=pool,
    )
    return [
        {**record, "predicted_answer": answer, **verdict_fields(both, judge), "judge": judge}
        for record, answer, both in zip(records, answers, verdicts)
    ]


def grade_answers(
    golds: Sequence[str],
    answers: Sequence[str | None],
    *,
    workers: int = 2,
    progress: bool = True,
    settings: CompareSettings = NEMO_SKILLS,
    item_deadline_s: float | None = None,
    pool: WorkerPool | None = None,
) -> list[Verdicts]:
    """Both judges' verdicts per (gold, extracted answer); each distinct pair is judged once."""
    # Sorted so that a worker's chunk holds runs of one gold and its parse cache hits.
    pairs = sorted({(gold, answer) for gold, answer in zip(golds, answers) if answer is not None})
    verdicts = compare_pairs(
        pairs, workers=workers, progress=progress, settings=settings, item_deadline_s=item_deadline_s, pool=pool
    )
    verdict_of = dict(zip(pairs, verdicts))
    return [NO_ANSWER if answer is None else verdict_of[(gold, answer)] for gold, answer in zip(golds, answers)]


def start_grading_pool(
    workers: int = 2, *, settings: CompareSettings = NEMO_SKILLS, item_deadline_s: float | None = None
) -> WorkerPool:
    """Worker processes for grade_answers, started now so that their warm-up overlaps the caller's reading."""
    return WorkerPool(
        functools.partial(judge_pair, settings=settings),
        workers=workers,
        on_failure=_timed_out,
        item_deadline_s=item_deadline_s or default_item_deadline_s(settings),
        # The forkserver warms up once for all workers; the initializer is a no-op then, and does the warm-up
        # itself when this process's forkserver was started earlier without it.
        preload=[_WARM_MODULE],
        initializer=functools.partial(importlib.import_module, _WARM_MODULE),
    )


def default_item_deadline_s(settings: CompareSettings) -> float:
    """Past the two judges' own budget for one pair: each parses twice and verifies up to four (gold, answer)
    readings, within math-verify's timeouts."""
    return 2 * (2 * settings.parse_timeout_s + 4 * settings.verify_timeout_s) + 10


def compare_pairs(
    pairs: Iterable[tuple[str, str]],
    *,
    workers: int = 2,
    progress: bool = True,
    settings: CompareSettings = NEMO_SKILLS,
    item_deadline_s: float | None = None,
    pool: WorkerPool | None = None,
) -> list[Verdicts]:
    """Both judges' verdicts per (gold, answer) pair, in order; `pairs` may be lazy (see WorkerPool.map)."""
    from tqdm import tqdm

    total = len(pairs) if isinstance(pairs, Sized) else None
    if total == 0:
        return []
    with tqdm(total=total, desc="grading", unit="answer", disable=not progress, file=sys.stderr) as bar:
        if pool is not None:
            return pool.map(pairs, on_progress=bar.update)
        if workers == 0:
            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError("grading with workers=0 must run in the main thread: math-verify uses SIGALRM")
            verdicts = []
            for pair in pairs:
                verdicts.append(judge_pair(pair, settings))
                bar.update(1)
            return verdicts
        if total is not None:
            workers = min(workers, total)
        with start_grading_pool(workers, settings=settings, item_deadline_s=item_deadline_s) as own_pool:
            return own_pool.map(pairs, on_progress=bar.update)


def _timed_out(pair: tuple[str, str], reason: str) -> Verdicts:
    """A pair whose worker hung, died or raised: it was never judged, which is what the timeout status says."""
    return NEVER_JUDGED


def _field(record: dict, key: str, position: int, *, allow_none: bool):
    if key not in record:
        raise UserError(f"record {position} (id {record.get('id', '?')}): missing key '{key}'.")
    value = record[key]
    if value is None:
        if allow_none:
            return None  # a failed generation: no answer
        raise UserError(f"record {position} (id {record.get('id', '?')}): key '{key}' is null.")
    if isinstance(value, (list, dict)):
        raise UserError(
            f"record {position} (id {record.get('id', '?')}): key '{key}' holds a {type(value).__name__}; "
            "grade_records takes one sample per record."
        )
    return str(value)
