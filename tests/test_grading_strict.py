import pytest

from nemo_recipes.grading import CompareSettings, Verdict, strict
from nemo_recipes.grading.strict import compare_strict, read_strictly


@pytest.mark.parametrize(
    "answer, read",
    [
        ("007", "7"),
        ("-007", "-7"),
        ("000", "0"),
        ("$007$.", "7"),
        ("\\text{007}", "7"),
        ("0.07", "0.07"),  # a decimal keeps its zero
        ("10{,}000", "10{,}000"),  # zeros after a thousands separator lead nothing
        ("1,007", "1,007"),
        ("\\text{Alice}", "Alice"),
        ("\\textbf{(C)}", "(C)"),
        ("5th", "5"),
        ("5\\text{th}", "5"),
        ("5^{th}", "5"),
        ("5^{\\text{th}}", "5"),
        ("\\text{21st}", "21"),
        ("\\log 2", "\\ln 2"),
        ("\\log_{3} 9", "\\log_{3} 9"),  # a written base stays
        ("\\log_3 9", "\\log_3 9"),
        ("\\logarithm", "\\logarithm"),
        ("\\text{width}", "width"),  # `th` ends an ordinal only after a number
    ],
)
def test_how_the_strict_judge_reads_an_answer(answer, read):
    assert read_strictly(answer) == read


@pytest.mark.parametrize(
    "gold, answer, correct",
    [
        ("\\{1, 2\\}", "\\{2, 1\\}", True),  # a set in any order
        ("\\{1, 2\\}", "\\{1, 3\\}", False),
        ("(1, 2)", "(2, 1)", False),  # an ordered pair in order
        ("\\left(-\\frac{13}{96}, \\frac{13}{40}\\right)", "(-\\frac{13}{96}, \\frac{13}{40})", True),
        ("\\left(-\\frac{13}{96}, \\frac{13}{40}\\right)", "[-\\frac{13}{96}, \\frac{13}{40}]", False),  # its ends
        ("(1, 2)", "1, 2", True),  # an open interval and a pair are one notation
        ("[1, 2)", "1, 2", False),
        ("1 < x < 2", "(1, 2)", True),  # an inequality is the set it allows
        ("x \\ge 3", "[3, \\infty)", True),
        ("x \\ge 3", "(3, \\infty)", False),
        ("(-\\infty, 2) \\cup (3, \\infty)", "(3, \\infty) \\cup (-\\infty, 2)", True),
        ("5", "\\{5\\}", True),
        ("0, \\pm i \\sqrt{6}", "\\pm i\\sqrt{6}, 0", True),
        ("0, \\pm i \\sqrt{6}", "0, i\\sqrt{6}", False),
        ("\\begin{pmatrix} 1 \\\\ \\frac{1}{2} \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 0.5 \\end{pmatrix}", True),
        ("\\begin{pmatrix} 1 \\\\ \\frac{1}{3} \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 0.333333 \\end{pmatrix}", False),
        ("x + 1", "1 + x", True),
        ("2x", "x + x", True),
        ("x + 1", "y + 1", False),  # variables matter
        ("x = 5", "2x = 10", True),  # an equivalent equation
        ("x = 5", "y = 5", False),
        ("2x + 4y - 3 = 0", "y = -\\frac{1}{2}x + \\frac{3}{4}", True),
        ("a = b = 3", "3", True),
        ("x \\in (1, 2)", "(1, 2)", True),
        ("12:00", "1:00", False),  # both parse to 1/0, which equals nothing
        ("2^{25} 26!", "2^{25} \\cdot 26!", True),
        ("4\\sqrt{5} - \\sqrt{7}", "\\sqrt{80} - \\sqrt{7}", True),
        ("\\frac{9\\sqrt{23}}{23}", "\\frac{9}{\\sqrt{23}}", True),
        ("\\sqrt{\\sqrt{6}}", "\\sqrt{6}", False),
    ],
)
def test_containers_equations_and_expressions_compare_by_exact_value(gold, answer, correct):
    assert compare_strict(gold, answer) == Verdict(correct, "ok")


def test_statuses():
    assert compare_strict("5", None) == Verdict(False, "no_answer")
    assert compare_strict("5", "\\frac{2}{") == Verdict(False, "parse_error")
    quick = CompareSettings(parse_timeout_s=1, verify_timeout_s=1)
    assert compare_strict("5", "9^{9^{9^{9}}}", quick) == Verdict(None, "timeout")


def test_the_plain_number_path_agrees_with_the_exact_one(monkeypatch):
    """Integers, decimals and a/b are decided without parsing; parsed, they must get the same verdicts."""
    pairs = [("7", "007"), ("0.75", "3/4"), ("0.75", "0.750"), ("0.75", "0.751"), ("0.33", "1/3"), ("0.33", "0.333"),
             ("2", "2.0"), ("1/2", ".5"), ("-2445", "-2445"), ("1000000", "1000000.000001"), ("5", "5/1"),
             ("1/3", "0.333333"), ("0.5", "0.4999996"), ("3/4", "-3/4")]
    fast = [compare_strict(gold, answer) for gold, answer in pairs]
    monkeypatch.setattr(strict, "plain_number", lambda text: None)
    assert [compare_strict(gold, answer) for gold, answer in pairs] == fast
    assert [verdict.correct for verdict in fast] == [True, True, True, False, True, False, True, True, True, False,
                                                     True, False, False, False]
