"""pass@1, pass@k, maj@k with bootstrap confidence intervals, per subset and overall, from graded samples.

Definitions follow NeMo-Skills (``nemo_skills/evaluation/metrics/base.py``):
- pass@1 is pass@1[avg-of-k]: the mean correctness of a problem's k samples, averaged over problems.
- pass@j is the unbiased estimator 1 - C(n-c, j) / C(n, j) over the problem's n = k samples (Chen et al., 2021).
- maj@k votes over the exact `predicted_answer` strings of the k samples; samples without an answer do not vote,
  and a problem where none answered scores 0. Votes are counted per (answer, correct) pair, as NeMo-Skills does.
  NeMo-Skills broke ties three ways over 2025 (all in ``metrics/base.py`` or ``math_metrics.py``), so the rule is
  a choice:
    "first"   the pair seen first in sample order wins: NeMo-Skills up to 098f04d9 (2025-06-05, PR #504; e.g. the
              OpenMathReasoning release 0f7bd733) and Qwen2.5-Math's rm_maj_eval.py. The default.
    "sorted"  the pairs are sorted before counting, so the lexicographically smallest answer wins (and, for one
              answer string graded both ways, its incorrect reading): NeMo-Skills 098f04d9 .. d20fbb2c.
    "average" the mean correctness of the tied pairs: NeMo-Skills from d20fbb2c (2025-08-18, PR #679) on.
  With `equivalent`, votes are pooled over answers math-verify finds equal (see majority_vote).
- Confidence intervals are percentile bootstraps over problems (resampled with replacement, seeded).
- grader_sensitivity: when the records carry both judges' verdicts (nemo_recipes/grading/judges.py), pass@1 and maj@k
  under each judge and how many samples the judges grade differently: how much each number owes to the grader.
Percentages are 0-100. A timed-out sample (correct None) counts as incorrect, and is counted in `timeouts`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from nemo_recipes.errors import UserError

TIE_RULES = ("first", "sorted", "average")
CI_LEVEL = 0.95


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased probability that at least one of k samples drawn from n, c of them correct, is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_vote(
    answers: Sequence[str | None],
    correct: Sequence[bool | None],
    *,
    tie_rule: str = "first",
    equivalent: Callable[[str, str], bool] | None = None,
) -> tuple[float, bool]:
    """(score in [0, 1], whether the vote was tied) for one problem's samples.

    With `equivalent`, answers are first grouped into classes of mutually equivalent strings (each joins the first
    class, in sorted order, whose representative it is equivalent to); a class's votes go to its representative.
    """
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie_rule must be one of {TIE_RULES}, not {tie_rule!r}")
    votes = [(answer, bool(is_correct)) for answer, is_correct in zip(answers, correct) if answer is not None]
    if not votes:
        return 0.0, False
    if equivalent is not None:
        representative = equivalence_classes([answer for answer, _ in votes], equivalent)
        # Correctness stays each sample's own: the class is a vote, not a regrading.
        votes = [(representative[answer], is_correct) for answer, is_correct in votes]
    counts: dict[tuple[str, bool], int] = defaultdict(int)  # insertion order is first-seen order
    for vote in votes:
        counts[vote] += 1
    top = max(counts.values())
    tied = [vote for vote, count in counts.items() if count == top]
    if tie_rule == "first":
        return float(tied[0][1]), len(tied) > 1
    if tie_rule == "sorted":
        return float(min(tied)[1]), len(tied) > 1
    return sum(is_correct for _, is_correct in tied) / len(tied), len(tied) > 1


def equivalence_classes(answers: Iterable[str], equivalent: Callable[[str, str], bool]) -> dict[str, str]:
    """Map each distinct answer to the representative of its class (the class's smallest string)."""
    representatives: list[str] = []
    representative_of: dict[str, str] = {}
    for answer in sorted(set(answers)):
        representative_of[answer] = next(
            (rep for rep in representatives if equivalent(rep, answer)), answer
        )
        if representative_of[answer] == answer:
            representatives.append(answer)
    return representative_of


def bootstrap_ci(
    per_problem: np.ndarray, *, resamples: int, seed: int, level: float = CI_LEVEL
) -> list[float] | None:
    """Percentile interval (0-100) of the mean of `per_problem` scores in [0, 1], resampling problems."""
    if resamples <= 0 or len(per_problem) == 0:
        return None
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(per_problem), size=(resamples, len(per_problem)))
    means = per_problem[picks].mean(axis=1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return [round(100.0 * float(low), 4), round(100.0 * float(high), 4)]


def compute_metrics(
    graded: Sequence[dict],
    *,
    subset_key: str = "subset",
    k: int | None = None,
    tie_rule: str = "first",
    bootstrap: int = 1000,
    seed: int = 0,
    equivalent: Callable[[str, str], bool] | None = None,
) -> dict:
    """{"overall": block, "subsets": {name: block}, "k": k, "tie_rule": ...} for graded samples grouped by `id`.

    k defaults to the number of samples every problem has (problems with different counts need an explicit k, as
    NeMo-Skills refuses them too); each problem contributes its first k samples
    (by `sample_idx` when present, else in input order). A block holds pass@1, maj@k and pass@k with their
    bootstrap intervals, unbiased pass@j for powers of two below k, counts, the no-answer rate and, when the
    records carry them, generation length statistics and the truncation rate. `equivalent` (for instance
    nemo_recipes.grading.answers_equivalent) adds maj@k over equivalence classes as `maj@{k}_equiv`.
    """
    if tie_rule not in TIE_RULES:
        raise UserError(f"tie_rule must be one of {TIE_RULES}, not {tie_rule!r}.")
    problems = _group_by_problem(graded)
    if not problems:
        raise UserError("compute_metrics: no graded records.")
    smallest = min(len(samples) for samples in problems.values())
    largest = max(len(samples) for samples in problems.values())
    if k is None and smallest != largest:
        raise UserError(f"problems have between {smallest} and {largest} samples, so maj@k and pass@k have no single "
                        f"k; give k (--k) to score the first k samples of each.")
    if k is None:
        k = smallest
    if not 1 <= k <= smallest:
        raise UserError(f"k={k} but some problem has only {smallest} samples; choose k between 1 and {smallest}.")
    problems = {problem_id: samples[:k] for problem_id, samples in problems.items()}
    subsets = _subsets(problems, subset_key)
    options = dict(k=k, tie_rule=tie_rule, bootstrap=bootstrap, seed=seed, equivalent=equivalent)
    return {
        "k": k,
        "tie_rule": tie_rule,
        "overall": _block(list(problems.values()), **options),
        "subsets": {
            name: _block([problems[problem_id] for problem_id in ids], **options)
            for name, ids in sorted(subsets.items())
        },
    }


def _group_by_problem(graded: Sequence[dict]) -> dict[object, list[dict]]:
    problems: dict[object, list[dict]] = defaultdict(list)
    for position, record in enumerate(graded):
        for key in ("id", "correct"):
            if key not in record:
                raise UserError(f"graded record {position}: missing key '{key}'.")
        problems[record["id"]].append(record)
    for problem_id, samples in problems.items():
        if all("sample_idx" in sample for sample in samples):
            samples.sort(key=lambda sample: sample["sample_idx"])
            repeated = next((a["sample_idx"] for a, b in zip(samples, samples[1:])
                             if a["sample_idx"] == b["sample_idx"]), None)
            if repeated is not None:  # it would push a real sample out of the first k
                raise UserError(f"problem {problem_id!r} has sample_idx {repeated} twice; graded records must be "
                                f"one per sample.")
    return dict(problems)


def _subsets(problems: dict[object, list[dict]], subset_key: str) -> dict[str, list]:
    """Problem ids per subset; no breakdown when no record names a subset."""
    subset_of = {problem_id: samples[0].get(subset_key) for problem_id, samples in problems.items()}
    if all(subset is None for subset in subset_of.values()):
        return {}
    missing = [problem_id for problem_id, subset in subset_of.items() if subset is None]
    if missing:
        raise UserError(f"problem {missing[0]!r} has no '{subset_key}' while other problems do.")
    subsets: dict[str, list] = defaultdict(list)
    for problem_id, subset in subset_of.items():
        subsets[str(subset)].append(problem_id)
    return subsets


def _block(problems: list[list[dict]], *, k, tie_rule, bootstrap, seed, equivalent) -> dict:
    correct = np.array([[sample["correct"] is True for sample in samples] for samples in problems], dtype=float)
    answers = [[sample.get("predicted_answer") for sample in samples] for samples in problems]
    majority = [majority_vote(a, c, tie_rule=tie_rule) for a, c in zip(answers, correct.astype(bool))]
    per_problem = {
        "pass@1": correct.mean(axis=1),
        f"maj@{k}": np.array([score for score, _ in majority]),
        f"pass@{k}": correct.max(axis=1),
    }
    if equivalent is not None:
        per_problem[f"maj@{k}_equiv"] = np.array(
            [majority_vote(a, c, tie_rule=tie_rule, equivalent=equivalent)[0] for a, c in zip(answers, correct)]
        )
    block: dict = {}
    for name, scores in per_problem.items():
        block[name] = round(100.0 * float(scores.mean()), 4)
        block[f"{name}_ci"] = bootstrap_ci(scores, resamples=bootstrap, seed=seed)
    successes = correct.sum(axis=1).astype(int)
    for j in _powers_of_two_below(k):
        block[f"pass@{j}"] = round(100.0 * float(np.mean([pass_at_k(k, int(c), j) for c in successes])), 4)
    block["curve"] = _curve(correct, answers, successes, k=k, tie_rule=tie_rule)
    sensitivity = grader_sensitivity(problems, answers, k=k, tie_rule=tie_rule)
    if sensitivity is not None:
        block["grader_sensitivity"] = sensitivity
    samples = [sample for problem in problems for sample in problem]
    statuses = [sample.get("grade_status") for sample in samples]
    block.update(
        num_problems=len(problems),
        num_generations=len(samples),
        no_answer=round(100.0 * sum(sample.get("predicted_answer") is None for sample in samples) / len(samples), 4),
        timeouts=statuses.count("timeout"),
        parse_errors=statuses.count("parse_error"),
        majority_ties=sum(tied for _, tied in majority),
    )
    block.update(_length_stats(samples))
    return block


def _curve(correct: np.ndarray, answers: list[list], successes: np.ndarray, *, k: int, tie_rule: str) -> list[dict]:
    """pass@1, maj@j and pass@j for j = 1, 2, 4, ... and k, as NeMo-Skills reports them: pass@1[avg-of-j] and maj@j
    over each problem's first j samples, pass@j unbiased from all k."""
    points = []
    for j in [1, *_powers_of_two_below(k), k] if k > 1 else [1]:
        majority = [majority_vote(a[:j], c[:j], tie_rule=tie_rule)[0] for a, c in zip(answers, correct.astype(bool))]
        points.append({
            "k": j,
            "pass@1": round(100.0 * float(correct[:, :j].mean()), 4),
            "maj": round(100.0 * float(np.mean(majority)), 4),
            "pass": round(100.0 * float(np.mean([pass_at_k(k, int(c), j) for c in successes])), 4),
        })
    return points


def grader_sensitivity(problems: list[list[dict]], answers: list[list], *, k: int, tie_rule: str) -> dict | None:
    """pass@1 and maj@k under each judge, the number of samples whose verdicts differ, and how many each judge alone
    accepts; None unless every sample carries every judge's `correct_<judge>`."""
    from nemo_recipes.grading.judges import JUDGES

    fields = [f"correct_{judge}" for judge in JUDGES]
    if not all(field in sample for samples in problems for sample in samples for field in fields):
        return None
    verdicts = {judge: np.array([[sample[f"correct_{judge}"] is True for sample in samples] for samples in problems])
                for judge in JUDGES}
    accepted_by_all = np.logical_and.reduce(list(verdicts.values()))
    return {
        "pass@1": {judge: round(100.0 * float(correct.mean()), 4) for judge, correct in verdicts.items()},
        f"maj@{k}": {
            judge: round(100.0 * float(np.mean([majority_vote(a, c, tie_rule=tie_rule)[0]
                                                for a, c in zip(answers, correct)])), 4)
            for judge, correct in verdicts.items()
        },
        "verdicts_differ": int((np.logical_or.reduce(list(verdicts.values())) & ~accepted_by_all).sum()),
        "correct_only_under": {judge: int((correct & ~accepted_by_all).sum()) for judge, correct in verdicts.items()},
    }


def describe_sensitivity(block: dict, k: int) -> str | None:
    """A block's grader sensitivity in one line, for logs and reports; None when the records had one verdict only.

    "pass@1 17.10 / 16.92, maj@64 27.73 / 27.34 (nemo_skills / strict); 31 of 16384 verdicts differ (accepted by
    nemo_skills alone 29, by strict alone 2)"
    """
    sensitivity = block.get("grader_sensitivity")
    if sensitivity is None:
        return None
    judges = list(sensitivity["pass@1"])
    scores = ", ".join(f"{metric} " + " / ".join(f"{sensitivity[metric][judge]:.2f}" for judge in judges)
                       for metric in ("pass@1", f"maj@{k}"))
    alone = ", by ".join(f"{judge} alone {count}" for judge, count in sensitivity["correct_only_under"].items())
    return (f"{scores} ({' / '.join(judges)}); {sensitivity['verdicts_differ']} of {block['num_generations']} "
            f"verdicts differ (accepted by {alone})")


def _powers_of_two_below(k: int) -> list[int]:
    return [2**power for power in range(1, k.bit_length()) if 2**power < k]


def _length_stats(samples: list[dict]) -> dict:
    stats: dict = {}
    lengths = [(sample["num_generated_tokens"], sample["correct"] is True) for sample in samples
               if isinstance(sample.get("num_generated_tokens"), (int, float))]
    if lengths:
        tokens = np.array([length for length, _ in lengths], dtype=float)
        is_correct = np.array([ok for _, ok in lengths])
        stats["tokens"] = {
            "mean": round(float(tokens.mean()), 1),
            "median": float(np.median(tokens)),
            "p90": float(np.quantile(tokens, 0.9)),
            "max": int(tokens.max()),
            "mean_correct": round(float(tokens[is_correct].mean()), 1) if is_correct.any() else None,
            "mean_incorrect": round(float(tokens[~is_correct].mean()), 1) if (~is_correct).any() else None,
        }
    reasons = [sample["finish_reason"] for sample in samples if sample.get("finish_reason") is not None]
    if reasons:
        stats["truncated"] = round(100.0 * reasons.count("length") / len(reasons), 4)
    return stats
