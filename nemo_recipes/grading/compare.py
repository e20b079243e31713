"""Decide whether an extracted answer equals the gold, the way NeMo-Skills' ``math_equal`` does, with a status.

The steps (NeMo-Skills @ 0b012df8 ``nemo_skills/evaluation/math_grader.py::math_equal``): a multiple-choice letter
check, light string normalisation, an exact comparison of the LaTeX-normalised strings, and only then math-verify
0.9.0 on both sides ``$``-wrapped and parsed with the LaTeX extraction config, gold first. Parsing a gold with the
expression config instead silently turns ``10\\pi`` into 10 (research/scoring.md §1.5c).

math-verify's timeouts use SIGALRM, so this module must run in a process's main thread (the grading pool's workers,
or the caller's main thread). Its TimeoutException is a BaseException that math-verify itself turns into a plain
"no match"; we ask it to raise instead, so that a timeout is reported as one and never passes for "incorrect".
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from nemo_recipes.grading.normalize import normalize_answer

STATUSES = ("ok", "no_answer", "timeout", "parse_error")
EXTRACTION_TARGETS = ("latex", "expr")

_MATH_ENVIRONMENT = re.compile(r"\$.*\$|\\\(.*\\\)|\\\[.*\\\]|\\boxed\{", re.DOTALL)
_CHOICE_LETTERS = "ABCDEFGHIJ"
_CHOICE_LETTER = re.compile(f"[{_CHOICE_LETTERS}]")
# NeMo-Skills' "literal" answers: words only or digits only. Two of them are equal only as strings, so `007` is not
# 7 here, though math-verify alone says it is: the paper's grader refused AIME answers written in three digits (the
# strict judge reads them as integers).
_LITERAL = re.compile(r"[a-zA-Z ,]+|[0-9 ]+")
_PLAIN_NUMBER = re.compile(r"(?P<number>-?(?:\d+(?:\.\d*)?|\.\d+))(?:\s*/\s*(?P<denominator>\d+))?")


@dataclass(frozen=True)
class CompareSettings:
    """How an answer is compared with its gold. The defaults are NeMo-Skills' settings for math benchmarks."""

    targets: tuple[str, ...] = ("latex",)  # math-verify extraction configs, the same for gold and answer
    boxed_match_priority: int = 50  # LatexExtractionConfig's default, which NeMo-Skills keeps
    wrap_in_math: bool = True  # `$`-wrap a string with no math delimiter: bare LaTeX otherwise parses to []
    normalize: bool = True  # our normalisation plus NeMo-Skills' choice-letter and literal-string steps
    float_rounding: int = 6
    numeric_precision: int = 15
    strict: bool = True
    allow_set_relation_comp: bool = False
    parse_timeout_s: int = 5  # math-verify's default
    verify_timeout_s: int = 10  # NeMo-Skills' evaluator passes timeout_seconds=10

    def __post_init__(self) -> None:
        unknown = set(self.targets) - set(EXTRACTION_TARGETS)
        if not self.targets or unknown:
            raise ValueError(f"targets must be a non-empty subset of {EXTRACTION_TARGETS}, not {self.targets}")


NEMO_SKILLS = CompareSettings()


class Verdict(NamedTuple):
    correct: bool | None  # None only when the comparison timed out
    status: str  # one of STATUSES


def compare_answers(gold: str, answer: str | None, settings: CompareSettings = NEMO_SKILLS) -> Verdict:
    """Grade one extracted `answer` against `gold` (gold first: math-verify's verify is not symmetric)."""
    return judged(_compare, gold, answer, settings)


def judged(compare: Callable[[str, str, CompareSettings], Verdict], gold: str, answer: str | None,
           settings: CompareSettings) -> Verdict:
    """compare(gold, answer, settings) with the statuses every judge shares: no answer, a timeout (never counted
    as incorrect), and a parse error for input math-verify or sympy cannot handle."""
    from math_verify.errors import TimeoutException

    if answer is None:
        return Verdict(False, "no_answer")
    try:
        return compare(str(gold), answer, settings)
    except TimeoutException:
        return Verdict(None, "timeout")
    except Exception:  # math-verify raising on input it cannot handle (asked to, via raise_on_error), or sympy
        return Verdict(False, "parse_error")


def answers_equivalent(first: str, second: str, settings: CompareSettings = NEMO_SKILLS) -> bool:
    """True when `second` grades correct against `first` taken as the gold (used to cluster votes)."""
    return compare_answers(first, second, settings).correct is True


def _compare(gold: str, answer: str, settings: CompareSettings) -> Verdict:
    if settings.normalize:
        if _CHOICE_LETTER.fullmatch(gold.strip()) and _same_choice_letter(gold, answer, settings):
            return Verdict(True, "ok")
        gold, answer = normalize_answer(gold), normalize_answer(answer)
        literal = _literal_verdict(gold, answer)
        if literal is None:
            literal = _plain_number_verdict(gold, answer, settings)
        if literal is not None:
            return Verdict(literal, "ok")
    parsed_gold = parse_latex(gold, settings, gold=True)
    if not parsed_gold:
        return Verdict(False, "parse_error")
    parsed_answer = parse_latex(answer, settings)
    if not parsed_answer:
        return Verdict(False, "parse_error")
    verdict = _verify(parsed_gold, parsed_answer, settings)
    if verdict == (False, "ok") and not (has_math(parsed_gold) and has_math(parsed_answer)):
        # Only the raw strings were compared: say the answer (or gold) could not be read, not just "wrong".
        return Verdict(False, "parse_error")
    return verdict


def has_math(parsed: list) -> bool:
    """Whether math-verify read a math object, not only its fallback string."""
    return any(not isinstance(reading, str) for reading in parsed)


def _same_choice_letter(gold: str, answer: str, settings: CompareSettings) -> bool:
    from math_verify import StringExtractionConfig, parse, verify

    config = [StringExtractionConfig(strings=tuple(_CHOICE_LETTERS))]
    timeout = settings.parse_timeout_s
    return verify(
        parse(gold, config, parsing_timeout=timeout, raise_on_error=True),
        parse(answer, config, parsing_timeout=timeout, raise_on_error=True),
        timeout_seconds=settings.verify_timeout_s,
        raise_on_error=True,
    )


def _literal_verdict(gold: str, answer: str) -> bool | None:
    """NeMo-Skills' string step: equal normalised strings match; word-only or digit-only ones are only strings."""
    from latex2sympy2_extended import NormalizationConfig, normalize_latex

    config = NormalizationConfig()
    normalized_gold = normalize_latex(gold, config)
    normalized_answer = normalize_latex(answer, config)
    if normalized_gold.replace(" ", "") == normalized_answer.replace(" ", ""):
        return True
    if _LITERAL.fullmatch(normalized_gold) and _LITERAL.fullmatch(normalized_answer):
        return False
    return None


def _plain_number_verdict(gold: str, answer: str, settings: CompareSettings) -> bool | None:
    """Two plain numbers (integer, decimal or a/b) decided without parsing them: equal values, or values too far
    apart for math-verify's rounding to join (see _numbers_far_apart). None: leave it to math-verify.

    Integer and decimal answers are most of Comp-Math's, and LaTeX parsing costs milliseconds per string.
    """
    gold_value, answer_value = plain_number(gold), plain_number(answer)
    if gold_value is None or answer_value is None:
        return None
    if gold_value == answer_value:
        return True
    if abs(gold_value - answer_value) > Fraction(10) ** (1 - settings.float_rounding):
        return False
    return None


def plain_number(text: str) -> Fraction | None:
    """The value of an integer, a decimal or an `a/b` written in digits; None for anything else."""
    match = _PLAIN_NUMBER.fullmatch(text.strip())
    if match is None or match["denominator"] is not None and int(match["denominator"]) == 0:
        return None
    value = Fraction(match["number"])
    return value / int(match["denominator"]) if match["denominator"] else value


def parse_latex(text: str, settings: CompareSettings, *, gold: bool = False) -> list:
    """math-verify's readings of `text`, `$`-wrapped when it has no math delimiter.

    Parsing is most of a comparison's cost, and both judges parse the same strings: a gold is kept for the process
    (it repeats across every sample of its problem), an answer for the next few calls (the other judge reads it).
    """
    return (_parse_gold if gold else _parse_answer)(text, settings)


@functools.lru_cache(maxsize=4096)
def _parse_gold(text: str, settings: CompareSettings) -> list:
    return _parse(text, settings)


@functools.lru_cache(maxsize=64)
def _parse_answer(text: str, settings: CompareSettings) -> list:
    return _parse(text, settings)


def _parse(text: str, settings: CompareSettings) -> list:
    from math_verify import parse

    if settings.wrap_in_math and not _MATH_ENVIRONMENT.search(text):
        text = f"${text}$"
    return parse(
        text, _extraction_config(settings), parsing_timeout=settings.parse_timeout_s, raise_on_error=True
    )


@functools.lru_cache(maxsize=64)
def _extraction_config(settings: CompareSettings) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    configs = {
        "latex": lambda: LatexExtractionConfig(boxed_match_priority=settings.boxed_match_priority),
        "expr": ExprExtractionConfig,
    }
    return [configs[target]() for target in settings.targets]


def _verify(parsed_gold: list, parsed_answer: list, settings: CompareSettings) -> Verdict:
    """math-verify's verify over every (gold, answer) reading, one call per pair.

    verify(list, list) gives up on the first pair that raises; calling it per pair keeps its "any pair matches"
    rule while telling a timed-out pair from a failed one.
    """
    from math_verify import verify
    from math_verify.errors import TimeoutException

    timed_out = False
    for gold_reading, answer_reading in itertools.product(parsed_gold, parsed_answer):
        try:
            if _numbers_far_apart(gold_reading, answer_reading, settings):
                continue
            if verify(
                gold_reading,
                answer_reading,
                float_rounding=settings.float_rounding,
                numeric_precision=settings.numeric_precision,
                strict=settings.strict,
                allow_set_relation_comp=settings.allow_set_relation_comp,
                timeout_seconds=settings.verify_timeout_s,
                raise_on_error=True,
            ):
                return Verdict(True, "ok")
        except TimeoutException:
            timed_out = True
        except Exception:  # what verify(raise_on_error=False) would have called a non-match
            continue
    return Verdict(None, "timeout") if timed_out else Verdict(False, "ok")


def _numbers_far_apart(gold_reading, answer_reading, settings: CompareSettings) -> bool:
    """True for two numbers that differ and that math-verify's numeric step also calls different: its verdict is then
    "different" without the sympy simplify of the difference (~40 ms) it would try next.

    That simplify can only find an exact zero, which a 30-digit gap above 10^-float_rounding rules out, so skipping
    it changes no verdict. The numeric step itself is math-verify's own call: at 15 digits it can lose huge terms --
    against 4^{2024}/\\binom{4048}{2024} - 2 (hmmt_F_2024_combinatorics_8) it calls 4^{2023}/\\binom{4048}{2024} - 2
    equal, and NeMo-Skills with it, which is the verdict this judge must give. The strict judge says they differ.
    Expressions holding a percent are left to verify (its 9% equals 9 rule). Runs under math-verify's own timeout.
    """
    from math_verify.grader import sympy_numeric_eq
    from math_verify.utils import timeout
    from sympy import Expr, UnevaluatedExpr

    readings = (gold_reading, answer_reading)
    if not all(isinstance(reading, Expr) and reading.is_number for reading in readings):
        return False
    if gold_reading == answer_reading or any(reading.has(UnevaluatedExpr) for reading in readings):
        return False

    @timeout(timeout_seconds=settings.verify_timeout_s)
    def far_apart() -> bool:
        gap = abs((gold_reading - answer_reading).evalf(30))
        if not (gap.is_Number and gap.is_finite and gap > 10 ** (1 - settings.float_rounding)):
            return False
        return not sympy_numeric_eq(gold_reading, answer_reading, settings.float_rounding, settings.numeric_precision)

    return far_apart()
