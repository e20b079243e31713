"""Multi-step arithmetic: the toy stand-in for competition math.

A problem chains 3-5 single-digit operands with + and - ("Compute 7 + 8 - 3 + 9."), partial results 0..20. Answering in one shot is hard
for a tiny model; walking through the partial results one operation at a time is easy. That gap is the paper in
miniature: a base model that answers directly fails, the same model after SFT on a few step-by-step traces succeeds.
"""

from __future__ import annotations

import random

PHRASINGS = ("Compute {e}.", "What is {e}?", "Evaluate {e}.", "Find the value of {e}.")


MAX_VALUE = 20  # every partial result stays in 0..20: a fact table small enough for a tiny model to learn


def make_problem(rng: random.Random, min_terms: int = 3, max_terms: int = 5) -> dict:
    """A random expression of single-digit operands whose partial results all stay in 0..MAX_VALUE."""
    num_terms = rng.randint(min_terms, max_terms)
    value = rng.randint(1, 9)
    expression = str(value)
    for _ in range(num_terms - 1):
        op = rng.choice("+-")
        if op == "+" and value > MAX_VALUE - 1:
            op = "-"
        if op == "-" and value < 1:
            op = "+"
        b = rng.randint(1, min(9, MAX_VALUE - value)) if op == "+" else rng.randint(1, min(9, value))
        value = value + b if op == "+" else value - b
        expression += f" {op} {b}"
    return {"problem": rng.choice(PHRASINGS).format(e=expression), "expression": expression,
            "expected_answer": str(value)}


def make_problems(num: int, seed: int, prefix: str, exclude: set[str] = frozenset()) -> list[dict]:
    """`num` distinct problems, none of whose expressions is in `exclude` (keeps the benchmark held out)."""
    rng = random.Random(seed)
    problems, seen = [], set(exclude)
    while len(problems) < num:
        p = make_problem(rng)
        if p["expression"] in seen:
            continue
        seen.add(p["expression"])
        problems.append({"id": f"{prefix}-{len(problems):04d}", **p})
    return problems


def steps(expression: str) -> list[tuple[int, str, int, int]]:
    """The left-to-right partial results: (a, op, b, a op b) per operation."""
    tokens = expression.split()
    value = int(tokens[0])
    out = []
    for op, b in zip(tokens[1::2], tokens[2::2]):
        new = value + int(b) if op == "+" else value - int(b)
        out.append((value, op, int(b), new))
        value = new
    return out


def scratchpad(expression: str) -> list[str]:
    """The expression rewritten after each operation: "= 12 - 4", "= 8" for "7 + 5 - 4".

    Each line is the previous one with its first operation done, so a tiny transformer only has to copy the tail
    and add two small numbers -- the step-by-step skill the toy models can actually learn on a CPU in a minute.
    """
    tokens = expression.split()
    lines = []
    value = int(tokens[0])
    rest = tokens[1:]
    while rest:
        op, b, rest = rest[0], int(rest[1]), rest[2:]
        value = value + b if op == "+" else value - b
        lines.append("= " + " ".join([str(value), *rest]))
    return lines


def reasoning_trace(expression: str, answer: int | None = None, box_late: bool = False) -> str:
    """A long-CoT-style solution: step by step, then the reflective ending (see checked_ending)."""
    return "\n".join(["Let me think step by step.", *scratchpad(expression),
                      checked_ending(expression, answer, box_late)])


def checked_ending(expression: str, answer: int | None = None, box_late: bool = False) -> str:
    """A re-check of the last step, then the boxed answer -- or, with `box_late`, the answer first left unboxed and
    then corrected ("Wait, the answer goes in a box").

    The correction is of the answer's form, never of a value: a tiny model cannot check arithmetic, and traces that
    fix a wrong number teach it to "fix" right ones (we tried: the toy teacher fell from 398 to 342 correct of 400).
    `answer` overrides the final value (used to make traces with a wrong final answer).
    """
    a, op, b, c = steps(expression)[-1]
    value = c if answer is None else answer
    ending = (f"So the final answer is {value}.\nWait, the answer goes in a box: \\boxed{{{value}}}." if box_late
              else f"So the final answer is \\boxed{{{value}}}.")
    return f"Wait, let me check the last step: {a} {op} {b} = {c}.\n{ending}"


def direct_answer(expression: str, answer: int) -> str:
    """A non-reasoning answer: no steps, just the (possibly wrong) result."""
    return f"The answer is \\boxed{{{answer}}}."
