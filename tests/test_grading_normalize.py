import pytest

from nemo_recipes.grading.normalize import normalize_answer


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("$3 \\sqrt{6}$.", "3 \\sqrt{6}"),  # Comp-Math golds with a sentence period outside the math
        ("185\\", "185"),  # NeMo-Skills' trailing-backslash case
        ("50\\%", "50"),
        ("12 %", "12"),
        ("0.5%", "0.5"),
        ("$30^\\circ$", "30"),
        ("30^{\\circ}.", "30"),
        ("45°", "45"),
        ("\\frac{180}{7}^\\circ", "\\frac{180}{7}"),
        ("\\text{17}", "17"),
        ("\\textbf{-2.5}", "-2.5"),
        ("\\(5\\)", "5"),
        ("\\[ 7 \\]", "7"),
    ],
)
def test_forms_math_verify_misses_are_reduced(answer, expected):
    assert normalize_answer(answer) == expected


@pytest.mark.parametrize(
    "answer",
    [
        "$a$ and $b$",  # two math spans: not one wrapped answer
        "\\(224\\) and \\(-176\\)",
        "\\[224\\] and \\[-176\\]",
        "\\frac{1}{2}",
        "x^2 + 1",
        "\\text{Evelyn}",  # \text{} only drops around a number
        "10\\% of x",  # percent only on a bare number
        "1, 2, 3",
    ],
)
def test_other_answers_are_left_alone(answer):
    assert normalize_answer(answer) == answer


def test_an_answer_of_two_math_spans_grades_like_the_list_it_is():
    from nemo_recipes.grading.compare import compare_answers

    assert compare_answers("224, -176", "\\(224\\) and \\(-176\\)") == (True, "ok")
