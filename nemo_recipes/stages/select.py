"""Stage select: the SFT set -- one teacher trace per problem for `num_examples` problems.

    python -m nemo_recipes experiment=demo stages=[select] selection.target_tokens=50

Strategy `paper`: keep traces whose final answer is correct (or incorrect, for the correctness ablation) and that
ended on a stop string, count their tokens with the student's tokenizer, keep per problem the trace closest to
`target_tokens`, then take `num_examples` problems in the `problem_order` (seeded random, hardest first by the
teacher's pass rate, or most diverse first by problem-text overlap). Strategy `no_keywords` does the same, then removes
the reasoning markers of config `markers` ("Wait,", "Hmm", "Alternatively", "let me check", ...) from each chosen
trace -- the list the traces stage counts. Strategy `released` skips the teacher: it takes the dataset's own
solutions of `solution_type` (human_stage1..4 or qwq_32b_preview) -- the data-source ablation.
Writes `sft.jsonl` (`input`, `output`, `id`, `num_tokens`, `source`, ...) in the format NeMo-Skills fed
NeMo-Aligner, and `selection_report.md` saying what was chosen and why.
"""

from __future__ import annotations

import random
from collections import defaultdict

from nemo_recipes.data.problems import prepared_problems_file
from nemo_recipes.data.prompts import assistant_response, generic_math_prompt
from nemo_recipes.errors import UserError
from nemo_recipes.io import atomic_write_text, read_jsonl, write_jsonl
from nemo_recipes.models import local_model_dir, model_name

STRATEGIES = ("paper", "no_keywords", "released")
ORDERS = ("random", "hardest", "diverse")
REQUIRE = ("correct", "incorrect")


def _validate(sel) -> None:
    for key, value, allowed in (("strategy", sel.strategy, STRATEGIES), ("problem_order", sel.problem_order, ORDERS),
                                ("require", sel.require, REQUIRE)):
        if value not in allowed:
            raise UserError(f"selection.{key}: '{value}' is not one of {', '.join(allowed)}.")
    if sel.strategy == "released" and sel.problem_order == "hardest":
        raise UserError("selection.problem_order: 'hardest' needs teacher samples; released solutions have none.")


def _released(ctx, sel) -> tuple[list[dict], int]:
    """The dataset's own solutions of one type (human_stage1..4, qwq_32b_preview) as single candidates."""
    problems = read_jsonl(prepared_problems_file(ctx.run_dir, "teacher"), required_keys=("id", "problem"))
    candidates = [{**p, "generation": p["solutions"][sel.solution_type], "sample_idx": 0, "correct": None,
                   "finish_reason": "stop"}
                  for p in problems if sel.solution_type in (p.get("solutions") or {})]
    return candidates, len(problems)


def is_eligible(record: dict, sel) -> bool:
    """Whether a candidate may enter the SFT set: the traces stage measures the teacher's eligible traces too."""
    if sel.strategy == "released":
        return True  # the data-source ablation trains on every released solution, as the dataset card's runs did
    if record["finish_reason"] != "stop":
        return False
    if sel.require == "incorrect":  # a wrong final answer -- not a trace that states none or could not be parsed
        return record["correct"] is False and record.get("grade_status") == "ok"
    return record["correct"] is True


def run(ctx) -> dict:
    cfg, sel = ctx.cfg, ctx.cfg.selection
    _validate(sel)
    if sel.strategy == "released":
        candidates, num_problems = _released(ctx, sel)
    else:
        candidates = read_jsonl(ctx.input_dir("grade_teacher") / "graded.jsonl",
                                required_keys=("id", "problem", "generation", "correct", "finish_reason"))
        num_problems = len({r["id"] for r in candidates})
    _count_tokens(candidates, local_model_dir(cfg, "base"))

    by_problem = defaultdict(list)
    for record in candidates:
        by_problem[record["id"]].append(record)
    pass_rate = {pid: sum(r["correct"] is True for r in rs) / len(rs) for pid, rs in by_problem.items()}
    best = {}
    for pid, records in by_problem.items():
        eligible = [r for r in records if is_eligible(r, sel)]
        if eligible:
            best[pid] = min(eligible, key=lambda r: (abs(r["num_tokens"] - sel.target_tokens), r["sample_idx"]))
    if len(best) < sel.num_examples:
        what = (f"a '{sel.solution_type}' solution" if sel.strategy == "released"
                else f"a {sel.require} trace that finished")
        raise UserError(
            f"selection: only {len(best)} of {num_problems} problems have {what}, but selection.num_examples="
            f"{sel.num_examples}; sample more (teacher_sampling.n) or lower selection.num_examples.")
    texts = {pid: records[0]["problem"] for pid, records in by_problem.items()}
    chosen = _order(sorted(best), pass_rate, sel, texts)[: sel.num_examples]
    source = sel.solution_type if sel.strategy == "released" else model_name(cfg, "teacher")
    rows = [_sft_row(best[pid], source) for pid in chosen]
    if sel.strategy == "no_keywords":
        from nemo_recipes.traces.markers import markers_from_config

        markers = markers_from_config(cfg.markers)
        rows = [{**row, "output": markers.remove(row["output"])} for row in rows]
        _count_tokens(rows, local_model_dir(cfg, "base"), key="output")
    write_jsonl(ctx.dir / "sft.jsonl", rows)
    atomic_write_text(ctx.dir / "selection_report.md", _report(rows, by_problem, pass_rate, best, sel))
    lengths = [r["num_tokens"] for r in rows]
    ctx.log(f"{len(rows)} traces from {len(best)} eligible problems, {min(lengths)}-{max(lengths)} tokens "
            f"(target {sel.target_tokens})")
    return {"num_examples": len(rows), "eligible_problems": len(best), "mean_tokens": sum(lengths) / len(lengths),
            "ids": chosen}


def plan(ctx) -> list[str]:
    s = ctx.cfg.selection
    if s.strategy == "released":
        return [f"strategy released: the dataset's '{s.solution_type}' solutions of {s.num_examples} problems, "
                f"problems in {s.problem_order} order (seed {s.seed})"]
    return [f"strategy {s.strategy}: {s.num_examples} {s.require} traces, one per problem, closest to "
            f"{s.target_tokens} tokens (student tokenizer), problems in {s.problem_order} order (seed {s.seed})"]


def _count_tokens(records: list[dict], tokenizer_path: str, key: str = "generation") -> None:
    """num_tokens of each record's `key` text with the student's tokenizer, in one batched call."""
    from nemo_recipes.tokenizer import token_counter

    for record, count in zip(records, token_counter(tokenizer_path)([r[key] for r in records])):
        record["num_tokens"] = count


def _order(problem_ids: list[str], pass_rate: dict, sel, problems: dict[str, str]) -> list[str]:
    if sel.problem_order == "hardest":
        return sorted(problem_ids, key=lambda pid: (pass_rate[pid], pid))
    shuffled = list(problem_ids)
    random.Random(sel.seed).shuffle(shuffled)
    if sel.problem_order == "diverse":
        return most_diverse_first(shuffled, problems)
    return shuffled


def most_diverse_first(problem_ids: list[str], problems: dict[str, str]) -> list[str]:
    """Greedy farthest-point order: each next problem is the one least like (word-trigram Jaccard) all before it.

    Starts from the first id (callers pass them shuffled by the selection seed); ties keep the given order.
    """
    def trigrams(text: str) -> set:
        words = text.lower().split()
        return {tuple(words[i:i + 3]) for i in range(max(1, len(words) - 2))}

    grams = {pid: trigrams(problems[pid]) for pid in problem_ids}
    order, rest = problem_ids[:1], list(problem_ids[1:])
    nearest = {pid: 1.0 for pid in rest}  # distance to the closest chosen problem
    while rest:
        last = grams[order[-1]]
        for pid in rest:
            union = grams[pid] | last
            nearest[pid] = min(nearest[pid], 1 - len(grams[pid] & last) / len(union) if union else 0.0)
        chosen = max(rest, key=lambda pid: nearest[pid])  # max keeps the first of equals
        order.append(chosen)
        rest.remove(chosen)
    return order


def _sft_row(record: dict, source: str) -> dict:
    return {
        "input": generic_math_prompt(record["problem"]),
        "output": assistant_response(record["generation"]),
        "id": record["id"],
        "num_tokens": record["num_tokens"],
        "source": source,
        "sample_idx": record["sample_idx"],
        "expected_answer": record["expected_answer"],
        "correct": record["correct"],
    }


def _report(rows, by_problem, pass_rate, best, sel) -> str:
    lengths = sorted(r["num_tokens"] for r in rows)
    lines = [
        "# SFT set selection", "",
        f"Strategy `{sel.strategy}`: one {sel.require} trace per problem, the one closest to {sel.target_tokens} "
        f"tokens; {len(rows)} problems taken in `{sel.problem_order}` order (seed {sel.seed}) from {len(best)} "
        f"eligible of {len(by_problem)}.", "",
        f"Chosen lengths (student tokens): min {lengths[0]}, median {lengths[len(lengths) // 2]}, max {lengths[-1]}.",
        "", "## Length histogram of the chosen traces", "", "```", *_histogram(lengths), "```", "",
        "## Chosen traces", "", "| problem | sample | tokens | teacher pass rate |", "|---|---|---|---|",
    ]
    rate = (lambda pid: "-") if sel.strategy == "released" else (lambda pid: f"{pass_rate[pid]:.2f}")
    lines += [f"| {r['id']} | {r['sample_idx']} | {r['num_tokens']} | {rate(r['id'])} |" for r in rows]
    lines += ["", "## Teacher pass rate per problem", "", "| problem | samples | pass rate | eligible |",
              "|---|---|---|---|"]
    lines += [f"| {pid} | {len(rs)} | {rate(pid)} | {'yes' if pid in best else 'no'} |"
              for pid, rs in sorted(by_problem.items())]
    return "\n".join(lines) + "\n"


def _histogram(values: list[int], bins: int = 8, width: int = 40) -> list[str]:
    low, high = values[0], values[-1]
    step = max(1, -(-(high - low + 1) // bins))
    counts = defaultdict(int)
    for v in values:
        counts[(v - low) // step] += 1
    top = max(counts.values())
    return [f"{low + b * step:>7}-{low + (b + 1) * step - 1:<7} {'#' * max(1, counts[b] * width // top)} {counts[b]}"
            for b in sorted(counts)]
