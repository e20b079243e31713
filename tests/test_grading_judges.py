"""Both judges on each class of answer the issue names, in both directions: right answers accepted, near misses
refused. The nemo_skills column is what NeMo-Skills' math_equal (731558c9, the paper's time, with math-verify 0.9.0)
returns for the pair, checked by running its source: that judge must keep NeMo-Skills' mistakes, the strict one
must not make them."""

import pytest

from nemo_recipes.errors import UserError
from nemo_recipes.grading import JUDGES, Verdict, Verdicts, check_judge, judge_pair, verdict_fields

# (gold, answer, nemo_skills accepts, strict accepts)
LEADING_ZEROS = [
    # AIME answers are 000-999 and models often write three digits. NeMo-Skills compares two digit-only strings as
    # strings (its "literal" step), so it refuses them; math-verify alone would accept.
    ("7", "007", False, True),
    ("0", "000", False, True),
    ("12", "012", False, True),
    ("70", "070", False, True),
    ("$7$", "\\text{007}", False, True),
    ("7", "007.", False, True),
    ("-7", "-007", True, True),  # the sign makes it no literal: math-verify decides
    ("7", "0070", False, False),
    ("7", "700", False, False),
    ("700", "007", False, False),
    ("70", "007", False, False),
    ("7", "0.07", False, False),
    ("100", "001", False, False),
]
HUGE_POWERS = [
    ("\\frac{1}{2^{60}}", "2^{-60}", True, True),
    ("\\frac{3^{100}}{2^{100}}", "\\left(\\frac{3}{2}\\right)^{100}", True, True),
    ("\\frac{4^{2024}}{\\binom{4048}{2024}}-2", "\\frac{2^{4048}}{\\binom{4048}{2024}}-2", True, True),
    # math-verify evaluates the difference at 15 digits and chops it to zero
    ("\\frac{3^{100}}{2^{100}}", "\\frac{3^{100}+1}{2^{100}}", True, False),
    ("\\frac{4^{2024}}{\\binom{4048}{2024}}-2", "\\frac{4^{2023}}{\\binom{4048}{2024}}-2", True, False),
    ("\\frac{4^{2024}}{\\binom{4048}{2024}}-2", "\\frac{4^{2024}+1}{\\binom{4048}{2024}}-2", True, False),
]
NEIGHBOURING_POWERS_OF_TWO = [
    ("\\frac{1}{2^{60}}", "\\frac{2}{2^{61}}", True, True),
    ("\\frac{1}{1024}", "0.0009765625", True, True),
    # both round to 0 at 6 decimals
    ("\\frac{1}{2^{60}}", "\\frac{1}{2^{61}}", True, False),
    ("\\frac{1}{2^{61}}", "\\frac{1}{2^{60}}", True, False),
    ("\\frac{1}{2^{20}}", "\\frac{1}{2^{21}}", False, False),
    ("\\frac{1}{1024}", "0.001", False, False),
]
SHORT_DECIMALS = [
    ("\\frac{1}{2}", "0.5", True, True),  # a decimal that is the exact value
    ("\\frac{1}{1+\\sqrt{2}}", "\\sqrt{2}-1", True, True),
    # six decimals of an exact irrational (or of 1/3) pass math-verify's rounding
    ("\\sqrt{2}", "1.414214", True, False),
    ("\\pi", "3.1415926535", True, False),
    ("\\frac{1}{3}", "0.333333", True, False),
    ("1-\\frac{2}{\\pi}", "0.363380", True, False),
    ("\\sqrt{3}-1", "0.732051", True, False),
    ("\\pi", "3.14159", False, False),
]
DECIMAL_GOLDS = [
    # a gold written as a decimal is the one place for a numeric comparison: at the gold's own decimals
    ("0.75", "\\frac{3}{4}", True, True),
    ("2.875", "\\frac{23}{8}", True, True),
    ("0.75", "0.750", True, True),
    ("6.54", "\\frac{327}{50}", True, True),
    ("0.33", "\\frac{1}{3}", False, True),
    ("1.41", "\\sqrt{2}", False, True),
    ("0.75", "0.751", False, False),  # a decimal answer is taken at its word
    ("0.33", "0.333", False, False),
    ("6.54", "6.55", False, False),
    ("0.5", "0.4999996", True, False),
    ("1.41", "\\sqrt{3}", False, False),
]
NATURAL_LOGS = [
    ("\\ln 2", "\\log 2", False, True),
    ("2\\ln 3", "\\log 9", False, True),
    ("\\log 2", "\\ln 2", False, True),
    ("\\frac{\\ln 5}{\\ln 2}", "\\log_2 5", True, True),
    ("\\log_2 8", "3", True, True),
    ("\\ln 2", "\\log_{10} 2", False, False),  # a written base is kept
    ("\\ln 2", "\\log 3", False, False),
]
GOLD_IDENTITIES = [
    ("\\binom{5}{2} = 10", "10", False, True),
    ("2^{10}=1024", "2^{10}", False, True),
    ("2^{10}=1024", "1024", False, True),
    ("x = 5", "5", True, True),
    ("y = x^2+2x+1", "(x+1)^2", True, True),
    ("\\binom{5}{2} = 10", "11", False, False),
    ("x = 5", "x", False, False),  # the name is no answer
    ("AB = 12", "AB", False, False),
    ("7 = 11a+c", "11a+c", False, False),  # an equation in unknowns is no identity
]
TEXT_AND_ORDINALS = [
    ("\\text{5th}", "5", False, True),
    ("5^{\\text{th}}", "5", False, True),
    ("3", "3^{\\text{rd}}", False, True),
    ("\\text{2nd}", "2", False, True),
    ("\\text{(C)}", "C", True, True),
    ("\\text{Alice}", "Alice", True, True),
    ("\\text{5th}", "6", False, False),
    ("3", "4\\text{th}", False, False),
    ("\\text{Alice}", "Bob", False, False),
    ("\\text{(C)}", "D", False, False),
]
CLASSES = {
    "leading zeros": LEADING_ZEROS,
    "huge powers": HUGE_POWERS,
    "neighbouring powers of two": NEIGHBOURING_POWERS_OF_TWO,
    "short decimals": SHORT_DECIMALS,
    "decimal golds": DECIMAL_GOLDS,
    "natural logs": NATURAL_LOGS,
    "gold identities": GOLD_IDENTITIES,
    "text and ordinals": TEXT_AND_ORDINALS,
}
CASES = [
    pytest.param(gold, answer, nemo_skills, strict, id=f"{name}: {gold} vs {answer}")
    for name, cases in CLASSES.items()
    for gold, answer, nemo_skills, strict in cases
]


@pytest.mark.parametrize("gold, answer, nemo_skills, strict", CASES)
def test_each_judge_on_each_class(gold, answer, nemo_skills, strict):
    verdicts = judge_pair((gold, answer))
    assert (verdicts.nemo_skills.correct, verdicts.strict.correct) == (nemo_skills, strict)
    assert verdicts.strict.status == "ok"  # read and compared, not a parse failure that happens to be "wrong"


def test_every_class_has_answers_accepted_and_near_misses_refused_by_the_strict_judge():
    for name, cases in CLASSES.items():
        assert {strict for *_, strict in cases} == {True, False}, name


def test_record_fields_keep_nemo_skills_names_and_add_each_judge():
    verdicts = Verdicts(Verdict(False, "ok"), Verdict(True, "ok"))
    assert verdict_fields(verdicts) == {
        "correct": False, "grade_status": "ok",
        "correct_nemo_skills": False, "grade_status_nemo_skills": "ok", "correct_strict": True,
        "grade_status_strict": "ok",
    }
    assert verdict_fields(verdicts, "strict")["correct"] is True
    assert JUDGES == ("nemo_skills", "strict")


def test_an_unknown_judge_is_one_sentence():
    with pytest.raises(UserError, match="grading.judge is 'exact'; it must be one of nemo_skills, strict."):
        check_judge("exact")
