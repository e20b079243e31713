"""The strict judge: an answer is right when it is exactly the gold's value, read the way competitions write it.

NeMo-Skills' ``math_equal`` (compare.py) is what the paper was graded with, and it errs both ways: it compares
digit strings as strings (``007`` is not 7, though every AIME answer is a three-digit integer), reads ``\\log`` as
base 10, takes only the right side of a gold ``expression = value``, cannot read a ``\\text{}``-wrapped gold or an
ordinal, and lets math-verify's 6-decimal rounding join different exact values (exact.py). This judge reads both
strings the same way first (the shared clean-up, then the rules below), parses them with math-verify's LaTeX
parser as NeMo-Skills does, and compares the values exactly (exact.py).

Like compare.py it runs in a process's main thread: math-verify's parser and our comparison time out with SIGALRM.
"""

from __future__ import annotations

import re
from fractions import Fraction

from nemo_recipes.grading.compare import (
    NEMO_SKILLS,
    CompareSettings,
    Verdict,
    has_math,
    judged,
    parse_latex,
    plain_number,
)
from nemo_recipes.grading.normalize import normalize_answer

# A whole answer wrapped in one text command: `\text{Alice}`, `\textbf{(C)}`.
_TEXT_WRAPPER = re.compile(r"^\\(?:text|textbf|textrm|textit|textnormal|mathrm|mathbf|mbox)\s*\{([^{}]*)\}$")
# An ordinal suffix after a number, bare or as text or a superscript: 5th, 5\text{th}, 5^{th}, 5^{\text{th}}.
_ORDINAL = re.compile(
    r"(?<=\d)\s*(?:\^\s*)?(?:\{\s*)?(?:\\(?:text|textrm|mathrm|textsuperscript)\s*\{\s*)?(?:st|nd|rd|th)\b\s*\}?\s*\}?")
_BASELESS_LOG = re.compile(r"\\log(?![a-zA-Z])(?!\s*_)")
# An integer with leading zeros, as AIME answers (000-999) are often written. Only a whole answer: inside one, zeros
# after a thousands separator (10{,}000) are no leading zeros.
_LEADING_ZEROS = re.compile(r"([-+]?)0+(\d+)")
_DECIMAL = re.compile(r"[-+]?\d*\.(\d+)")
_DECIMAL_POINT = re.compile(r"\.\d")


def compare_strict(gold: str, answer: str | None, settings: CompareSettings = NEMO_SKILLS) -> Verdict:
    """Grade one extracted `answer` against `gold` by exact value (gold first: only a gold equation has sides)."""
    return judged(_compare, gold, answer, settings)


def read_strictly(answer: str) -> str:
    """`answer` as the strict judge reads it: the shared clean-up, then the text wrapper, ordinal suffix, base of
    ``\\log`` (natural, as competitions write it) and leading zeros of integers."""
    while True:
        before = answer
        answer = normalize_answer(answer)
        wrapped = _TEXT_WRAPPER.match(answer)
        if wrapped:
            answer = wrapped.group(1).strip()
        answer = _ORDINAL.sub("", answer)
        if answer == before:
            break
    answer = _BASELESS_LOG.sub(r"\\ln", answer)
    integer = _LEADING_ZEROS.fullmatch(answer)
    return integer[1] + integer[2] if integer else answer


def _compare(gold: str, answer: str, settings: CompareSettings) -> Verdict:
    from math_verify.utils import timeout

    from nemo_recipes.grading.exact import same_value

    gold, answer = read_strictly(gold), read_strictly(answer)
    if gold.replace(" ", "") == answer.replace(" ", ""):
        return Verdict(True, "ok")
    # Against a gold written as a decimal, an exact answer may round to it; one written with decimals is taken at its
    # word: 0.751 is not 0.75.
    decimals = None if _DECIMAL_POINT.search(answer) else _decimals(gold)
    gold_number, answer_number = plain_number(gold), plain_number(answer)
    if gold_number is not None and answer_number is not None:
        return Verdict(_same_plain_number(gold_number, answer_number, decimals), "ok")
    parsed_gold = [reading for reading in parse_latex(gold, settings, gold=True) if has_math([reading])]
    parsed_answer = [reading for reading in parse_latex(answer, settings) if has_math([reading])]
    if not parsed_gold or not parsed_answer:
        return Verdict(False, "parse_error")

    @timeout(timeout_seconds=settings.verify_timeout_s)
    def equal() -> bool:
        return any(same_value(g, a, gold_decimals=decimals) for g in parsed_gold for a in parsed_answer)

    return Verdict(equal(), "ok")


def _decimals(gold: str) -> int | None:
    """The number of decimals of a gold written as a decimal number; None for any other gold."""
    match = _DECIMAL.fullmatch(gold)
    return len(match.group(1)) if match else None


def _same_plain_number(gold: Fraction, answer: Fraction, decimals: int | None) -> bool:
    """Exact equality or, given the decimals of a decimal gold, rounding to it."""
    if gold == answer:
        return True
    return decimals is not None and abs(answer - gold) <= Fraction(1, 2 * 10**decimals)
