"""Grade any JSONL file of generations, ours or another harness's, and print its metrics.

    python -m nemo_recipes.grading INPUT.jsonl --output OUTPUT.jsonl [--gold-key expected_answer]
        [--generation-key generation] [--subset-key subset_for_metrics] [--mode boxed|fallback] [--workers 2]
        [--judge nemo_skills|strict]

The generation field holds one string or a list of strings (several samples per problem). Each output row is the
input row plus `predicted_answer`, `correct` and `grade_status` (as --judge decided), and both judges' verdicts
(`correct_nemo_skills`, `correct_strict`, ...; see judges.py), lists where the generation was a list. The last line
of stdout is one JSON object: pass@1, maj@k, pass@k and their intervals, counts, the per-subset breakdown, and
`grader_sensitivity`: pass@1 and maj@k under each judge and how many verdicts differ. Progress and a one-line
summary of both judges go to stderr; bad input is one sentence, `error: ...`, and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path

from nemo_recipes.errors import UserError
from nemo_recipes.grading.compare import NEMO_SKILLS, CompareSettings
from nemo_recipes.grading.extract import EXTRACTION_MODES, extract_answer
from nemo_recipes.grading.files import Row, iter_rows, row_generations, write_extended_rows
from nemo_recipes.grading.grade import compare_pairs, start_grading_pool
from nemo_recipes.grading.judges import DEFAULT_JUDGE, JUDGES, NO_ANSWER, check_judge, verdict_fields

_LIBRARIES = ("math-verify", "latex2sympy2_extended", "antlr4-python3-runtime", "sympy")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = CompareSettings(parse_timeout_s=args.parse_timeout, verify_timeout_s=args.verify_timeout)
    try:
        summary = grade_file(
            args.input,
            args.output,
            gold_key=args.gold_key,
            generation_key=args.generation_key,
            subset_key=args.subset_key,
            id_key=args.id_key,
            mode=args.mode,
            reasoning_end=args.reasoning_end,
            workers=args.workers,
            progress=not args.no_progress,
            k=args.k,
            tie_rule=args.tie_rule,
            bootstrap=args.bootstrap,
            seed=args.seed,
            equivalence_majority=args.equivalence_majority,
            settings=settings,
            judge=args.judge,
            item_deadline_s=args.item_deadline,
            metrics_output=args.metrics_output,
        )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from nemo_recipes.metrics import describe_sensitivity

    print(f"by judge: {describe_sensitivity(summary, summary['k'])}; `correct` follows {args.judge}", file=sys.stderr)
    print(json.dumps(summary))
    return 0


def grade_file(
    input_path: str | Path,
    output_path: str | Path,
    *,
    gold_key: str = "expected_answer",
    generation_key: str = "generation",
    subset_key: str = "subset_for_metrics",
    id_key: str = "id",
    mode: str = "boxed",
    reasoning_end: str | None = None,
    workers: int = 2,
    progress: bool = True,
    k: int | None = None,
    tie_rule: str = "first",
    bootstrap: int = 1000,
    seed: int = 0,
    equivalence_majority: bool = False,
    settings: CompareSettings = NEMO_SKILLS,
    judge: str = DEFAULT_JUDGE,
    item_deadline_s: float | None = None,
    metrics_output: str | Path | None = None,
) -> dict:
    """Grade `input_path` into `output_path` and return the summary that the command prints (also written to
    `metrics_output` when given). Both output paths are checked before any grading."""
    from nemo_recipes.metrics import compute_metrics

    check_judge(judge)
    for path in (output_path, metrics_output):
        if path is not None:
            check_writable(path)
    source = iter_rows(input_path, (gold_key, generation_key))
    rows: list[Row] = []
    samples: list[tuple[int, int, str, str | None]] = []  # (row index, position in the row, gold, answer)
    pair_order: dict[tuple[str, str], None] = {}

    def new_pairs() -> Iterator[tuple[str, str]]:
        """Read, extract, and yield each (gold, answer) pair the first time it appears: workers start on them
        while the rest of the file is still being read."""
        for row in source:
            rows.append(row)
            if row.data[gold_key] is None:  # str() would make it the answer "None"
                raise UserError(f"{input_path}, line {row.line_number}: '{gold_key}' is null; every row needs a "
                                f"gold answer.")
            gold = str(row.data[gold_key])
            for position, text in enumerate(row_generations(row, generation_key, input_path)):
                answer = extract_answer(text, mode=mode, reasoning_end=reasoning_end)
                samples.append((len(rows) - 1, position, gold, answer))
                if answer is not None and (gold, answer) not in pair_order:
                    pair_order[(gold, answer)] = None
                    yield gold, answer

    # Started before reading: the workers warm up (about a second) while this process reads the file.
    pool = start_grading_pool(workers, settings=settings, item_deadline_s=item_deadline_s) if workers else None
    with pool if pool is not None else contextlib.nullcontext():
        verdicts = compare_pairs(new_pairs(), workers=workers, progress=progress, settings=settings, pool=pool)
    verdict_of = dict(zip(pair_order, verdicts))

    additions: list[dict] = [{} for _ in rows]
    per_sample = []
    samples_seen: dict = {}  # rows without sample_idx: a problem's samples numbered in file order, across its rows
    for row_index, position, gold, answer in samples:
        fields = verdict_fields(NO_ANSWER if answer is None else verdict_of[(gold, answer)], judge)
        row = rows[row_index]
        for key, value in {"predicted_answer": answer, **fields}.items():
            additions[row_index].setdefault(key, []).append(value)
        problem_id = row.data.get(id_key, row.line_number)
        if "sample_idx" in row.data:
            sample_idx = _sample_field(row.data, "sample_idx", position, default=position)
        else:
            sample_idx = samples_seen[problem_id] = samples_seen.get(problem_id, -1) + 1
        per_sample.append(
            {
                "id": problem_id,
                "sample_idx": sample_idx,
                "subset": row.data.get(subset_key),
                "predicted_answer": answer,
                **fields,
                "num_generated_tokens": _sample_field(row.data, "num_generated_tokens", position),
                "finish_reason": _sample_field(row.data, "finish_reason", position),
            }
        )
    for row, added in zip(rows, additions):
        if not isinstance(row.data[generation_key], list):  # one sample: scalars, as the input had
            for key, values in added.items():
                added[key] = values[0]
        added["judge"] = judge  # one value per row, whatever its samples
    _write(output_path, lambda: write_extended_rows(output_path, rows, additions))

    equivalent = None
    if equivalence_majority:
        from nemo_recipes.grading.compare import answers_equivalent as equivalent
    metrics = compute_metrics(
        per_sample, subset_key="subset", k=k, tie_rule=tie_rule, bootstrap=bootstrap, seed=seed, equivalent=equivalent
    )
    summary = {
        "input": str(input_path),
        "output": str(output_path),
        "extraction": mode,
        "judge": judge,
        "k": metrics["k"],
        "tie_rule": metrics["tie_rule"],
        **metrics["overall"],
        "subsets": metrics["subsets"],
        "versions": {library: _version(library) for library in _LIBRARIES},
    }
    if metrics_output is not None:
        from nemo_recipes.io import write_json

        _write(metrics_output, lambda: write_json(metrics_output, summary))
    return summary


def check_writable(path: str | Path) -> None:
    """One sentence, before any work, when `path` cannot be written: its folder is missing, not a folder, or refuses
    a new file (read-only, or a file system nobody may write, which permission bits alone do not show to root)."""
    folder = Path(path).resolve().parent
    if Path(path).is_dir():
        raise UserError(f"cannot write {path}: it is a folder; give a file name.")
    if not folder.exists():
        raise UserError(f"cannot write {path}: the folder {folder} does not exist.")
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: {folder} is not a folder.")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f"cannot write {path}: the folder {folder} is not writable ({error.strerror}).") from error


def _write(path: str | Path, write) -> None:
    """write(), with a failure that the early check could not foresee (disk full, folder removed) as one sentence."""
    try:
        write()
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}.") from error


def _sample_field(row: dict, key: str, position: int, default=None):
    value = row.get(key, default)
    if isinstance(value, list):
        return value[position] if position < len(value) else default
    return value


def _version(library: str) -> str | None:
    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return None


def _marker(value: str) -> str:
    if not value:
        raise argparse.ArgumentTypeError("the marker must not be empty")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nemo_recipes.grading",
        description="Grade a JSONL file of math generations with math-verify and print pass@1 / maj@k as JSON.",
    )
    parser.add_argument("input", help="JSONL file of generations")
    parser.add_argument("--output", required=True, help="where to write the graded rows (JSONL)")
    parser.add_argument("--gold-key", default="expected_answer", help="field holding the gold answer")
    parser.add_argument("--generation-key", default="generation", help="field holding a string or a list of them")
    parser.add_argument("--subset-key", default="subset_for_metrics", help="field naming a row's subset, if any")
    parser.add_argument("--id-key", default="id", help="field identifying the problem (default: the line number)")
    parser.add_argument(
        "--mode",
        choices=EXTRACTION_MODES,
        default="boxed",
        help="boxed: last \\boxed{} or no answer, as NeMo-Skills; fallback: else 'answer is ...' or the last number",
    )
    parser.add_argument("--judge", choices=JUDGES, default=DEFAULT_JUDGE,
                        help="whose verdict is `correct`: nemo_skills (NeMo-Skills' math_equal, as the paper) or "
                             "strict (exact values); both are always computed and reported")
    parser.add_argument("--reasoning-end", type=_marker,
                        help="keep only text after this marker (e.g. '</think>'); none: no answer")
    parser.add_argument("--workers", type=_count, default=2, help="grading processes (0: grade in this process)")
    parser.add_argument("--k", type=int, help="samples per problem for maj@k and pass@k (default: all)")
    parser.add_argument("--tie-rule", choices=("first", "sorted", "average"), default="first",
                        help="how maj@k breaks ties (see nemo_recipes.metrics)")
    parser.add_argument("--equivalence-majority", action="store_true",
                        help="also report maj@k over math-verify equivalence classes of answers")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--parse-timeout", type=int, default=NEMO_SKILLS.parse_timeout_s, help="seconds per parse")
    parser.add_argument("--verify-timeout", type=int, default=NEMO_SKILLS.verify_timeout_s,
                        help="seconds per verify")
    parser.add_argument("--item-deadline", type=float, help="seconds before a silent worker is replaced")
    parser.add_argument("--metrics-output", help="also write the summary JSON to this file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser
