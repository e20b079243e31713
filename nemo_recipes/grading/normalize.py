"""String clean-up applied to a gold and a predicted answer before math-verify sees them.

Each rule covers a form math-verify 0.9.0 parses badly (research/scoring.md §3, packaging.md §4): a percent gold
parses to the string ``'50\\%'``, a trailing sentence period or a ``\\text{}`` around a number hides the number,
and a degree sign leaves a ``^\\circ`` the comparison cannot cancel. The first two are NeMo-Skills' own
(``math_grader.py::_additional_normalization``); the last two are ours.
"""

from __future__ import annotations

import re

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_PERCENT = re.compile(
    rf"^({_NUMBER})\s*(?:\\%|%|\\text\{{\s*(?:\\?%|pct|percent|percentage)\s*\}}|pct|percent|percentage)$"
)
_TEXT_NUMBER = re.compile(rf"^\\(?:text|textbf|textrm|mathrm|mbox)\{{\s*({_NUMBER})\s*\}}$")
_DEGREES = re.compile(r"\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°|\\degree|\\text\{\s*degrees?\s*\})$")
# One math span around the whole answer; the comparison re-wraps it, and the rules above need to see its end.
# A span holds no other delimiter of its kind: `\(224\) and \(-176\)` is two spans, not one to strip.
_WHOLE_MATH_SPAN = re.compile(
    r"^(?:\$([^$]*)\$|\\\(((?:(?!\\[()]).)*)\\\)|\\\[((?:(?!\\[\[\]]).)*)\\\])$", re.DOTALL)


def normalize_answer(answer: str) -> str:
    """`answer` without its enclosing math span, sentence period, percent or degree sign, or ``\\text{}`` wrapper."""
    answer = answer.strip()
    while True:
        before = answer
        answer = answer.rstrip(".\\").rstrip()
        span = _WHOLE_MATH_SPAN.match(answer)
        if span:
            answer = next(group for group in span.groups() if group is not None).strip()
        answer = _DEGREES.sub("", answer)
        answer = _PERCENT.sub(r"\1", answer)
        answer = _TEXT_NUMBER.sub(r"\1", answer)
        if answer == before:
            return answer
