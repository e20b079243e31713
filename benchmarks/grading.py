"""Grading throughput: our pipeline against a naive parse(full text) + verify loop, on the same generations.

    python benchmarks/grading.py [--problems 256] [--samples 64] [--workers 2] [--naive-subset 512]

Builds problems x samples synthetic generations of 10-40 KB (Comp-Math-like golds: integers, decimals, fractions,
radicals, multiples of pi, pairs; answers drawn from the gold, equivalent forms -- AIME's three digits among them
--, near misses, short decimals, wrong values and no box), writes them as a JSONL file, then times `grade_file` on
it end to end (read, extract, both judges in worker processes, write, metrics). The naive loop, one judge's
`verify(parse(gold), parse(generation))` per sample in one process, is timed on a fixed random subset and
extrapolated; the output says so. Prints both times and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from nemo_recipes.grading.cli import grade_file
from nemo_recipes.metrics import describe_sensitivity

FILLER_SENTENCES = (
    "Let $a_{{{i}}} = {a}$ and $b_{{{i}}} = {b}$, so that $a_{{{i}}} + b_{{{i}}} = {s}$.",
    "Substituting $x = {a}$ into $x^2 - {b}x + {c}$ gives ${v}$, which is not zero.",
    "By the AM-GM inequality, $\\frac{{{a} + {b}}}{{2}} \\geq \\sqrt{{{a} \\cdot {b}}}$.",
    "Wait, let me double-check the case $n = {a}$: the sum of digits is ${b}$.",
    "\\[ \\sum_{{k=1}}^{{{a}}} k = \\frac{{{a}({a}+1)}}{{2}} = {t} \\]",
    "Hmm, that seems off. Let's reconsider: the triangle has sides ${a}$, ${b}$ and ${c}$.",
    "Then $\\binom{{{a}}}{{2}} = {p}$ pairs, and each pair contributes ${b}$ to the total.",
    "So the probability is $\\frac{{{a}}}{{{d}}}$ in this case, and we still need the other cases.",
)


def make_gold(rng: random.Random, index: int) -> tuple[str, str, list[str]]:
    """(kind, gold, equivalent forms) with Comp-Math's mix: 64% integers, 2% decimals, 34% LaTeX."""
    draw = rng.random()
    if draw < 0.64:
        n = rng.randint(-50, 999)
        return "int", str(n), [f"{n}.", f"{n}.0", f"\\text{{{n}}}", f"{n:03d}"]
    if draw < 0.66:
        value = round(rng.uniform(0, 100), 2)
        return "decimal", str(value), [f"{value:.3f}", str(Fraction(str(value)))]
    kind = rng.choice(["frac", "radical", "pi", "frac_radical", "pair"])
    a, b, m = rng.randint(1, 60), rng.randint(2, 30), rng.choice([2, 3, 5, 6, 7, 10, 11, 13])
    if kind == "frac":
        value = Fraction(a, b) if Fraction(a, b).denominator != 1 else Fraction(a, b + 1)
        p, q = value.numerator, value.denominator
        return kind, f"\\frac{{{p}}}{{{q}}}", [f"\\dfrac{{{p}}}{{{q}}}", f"{p}/{q}", f"\\frac{{{2 * p}}}{{{2 * q}}}"]
    if kind == "radical":  # six decimals: math-verify's rounding accepts them, the strict judge does not
        return kind, f"{a}\\sqrt{{{m}}}", [f"\\sqrt{{{a * a * m}}}", f"{a} \\sqrt{m}", f"{a * m ** 0.5:.6f}"]
    if kind == "pi":
        return kind, f"{a}\\pi", [f"{a} \\pi", f"\\pi \\cdot {a}"]
    if kind == "frac_radical":
        return kind, f"\\frac{{{a}\\sqrt{{{m}}}}}{{{b}}}", [f"\\frac{{{a}}}{{{b}}}\\sqrt{{{m}}}"]
    return kind, f"{a}, {b}", [f"{b}, {a}", f"{a},{b}"]


def wrong_value(rng: random.Random, kind: str) -> str:
    a, b, m = rng.randint(1, 999), rng.randint(2, 40), rng.choice([2, 3, 5, 6, 7, 10, 11, 13, 17])
    return {
        "int": str(a),
        "decimal": f"{a / b:.2f}",
        "frac": f"\\frac{{{a}}}{{{b}}}",
        "radical": f"{rng.randint(1, 60)}\\sqrt{{{m}}}",
        "pi": f"{rng.randint(1, 90)}\\pi",
        "frac_radical": f"\\frac{{{rng.randint(1, 60)}\\sqrt{{{m}}}}}{{{b}}}",
        "pair": f"{rng.randint(1, 60)}, {rng.randint(1, 60)}",
    }[kind]


def near_miss(rng: random.Random, kind: str, gold: str) -> str:
    if kind == "int":
        return str(int(gold) + rng.choice([-2, -1, 1, 2]))
    if kind == "decimal":
        return f"{float(gold) + rng.choice([-0.1, 0.01, 0.1]):.2f}"
    if kind == "pair":
        first, second = gold.split(", ")
        return f"{first}, {int(second) + 1}"
    return gold.replace("{", "{1", 1) if rng.random() < 0.5 else f"2{gold}"


def make_text(rng: random.Random, answer: str | None, target_bytes: int) -> str:
    parts, size = [], 0
    while size < target_bytes:
        sentence = rng.choice(FILLER_SENTENCES).format(
            i=rng.randint(1, 9), a=rng.randint(2, 99), b=rng.randint(2, 99), c=rng.randint(2, 99),
            d=rng.randint(100, 999), s=rng.randint(4, 198), v=rng.randint(-999, 999), t=rng.randint(3, 4950),
            p=rng.randint(1, 4851),
        )
        parts.append(sentence)
        size += len(sentence) + 1
    ending = f"Therefore, the final answer is $\\boxed{{{answer}}}$." if answer is not None else "I am not sure."
    return " ".join(parts) + "\n\n" + ending


def make_records(problems: int, samples: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for index in range(problems):
        kind, gold, equivalents = make_gold(rng, index)
        wrong_pool = [wrong_value(rng, kind) for _ in range(12)]
        for sample_idx in range(samples):
            draw = rng.random()
            if draw < 0.25:
                answer = gold
            elif draw < 0.35:
                answer = rng.choice(equivalents)
            elif draw < 0.55:
                answer = near_miss(rng, kind, gold)
            elif draw < 0.95:
                answer = rng.choice(wrong_pool)
            else:
                answer = None
            text = make_text(rng, answer, rng.randint(10_000, 40_000))
            records.append(
                {
                    "id": f"synthetic-{index}",
                    "problem": f"Synthetic problem {index} ({kind}).",
                    "expected_answer": gold,
                    "subset": ["aime24", "aime25", "hmmt-24-25"][index % 3],
                    "sample_idx": sample_idx,
                    "seed": sample_idx,
                    "generation": text,
                    "num_generated_tokens": len(text) // 4,
                    "finish_reason": "stop",
                }
            )
    return records


def time_naive(records: list[dict], subset: int, seed: int) -> tuple[float, int]:
    from math_verify import parse, verify

    picked = random.Random(seed).sample(records, min(subset, len(records)))
    start = time.perf_counter()
    for record in picked:
        verify(parse(record["expected_answer"]), parse(record["generation"]))
    return time.perf_counter() - start, len(picked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=256)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--naive-subset", type=int, default=512, help="samples the naive loop is timed on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    records = make_records(args.problems, args.samples, args.seed)
    with tempfile.TemporaryDirectory() as folder:
        source, graded = Path(folder) / "generations.jsonl", Path(folder) / "graded.jsonl"
        with open(source, "w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record) + "\n")
        megabytes = source.stat().st_size / 1e6
        print(f"{len(records)} generations, {megabytes:.0f} MB of JSONL")
        # Other work on the machine shows up directly in wall time: say how busy it was.
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} just before timing")

        start = time.perf_counter()
        summary = grade_file(source, graded, subset_key="subset", workers=args.workers, progress=False)
        ours = time.perf_counter() - start

    naive_seconds, naive_count = time_naive(records, args.naive_subset, args.seed)
    naive_total = naive_seconds / naive_count * len(records)
    print(
        f"ours : {ours:.2f} s wall for all {len(records)} (read, extract, both judges with {args.workers} workers, "
        f"write, metrics); {describe_sensitivity(summary, summary['k'])}; no_answer {summary['no_answer']:.2f}%, "
        f"timeouts {summary['timeouts']}"
    )
    print(
        f"naive: {naive_seconds:.2f} s for a fixed random {naive_count} of them, one process; "
        f"extrapolated to {naive_total:.1f} s for all {len(records)}"
    )
    print(f"speed-up: {naive_total / ours:.1f}x")


if __name__ == "__main__":
    main()
