import pytest

from nemo_recipes.grading.extract import extract_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("First \\boxed{3}, then finally \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("so $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("the set is \\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces balance each other
        ("\\fbox{9} is the answer", "9"),
        ("\\boxed{4} but then \\fbox{7}", "7"),  # the last of either command
        ("The answer is \\boxed 5.", "5."),
        ("so $\\boxed 42$ wins", "42"),
        ("\\boxed {12}", "12"),
        # NeMo-Skills takes the last \boxed occurrence: a box in a box gives the inner one.
        ("\\boxed{\\boxed{5}}", "5"),
        ("\\boxed{3} and \\boxed{x = \\boxed{7}}", "7"),
    ],
)
def test_last_box_with_matched_braces(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "The answer is 42.",  # boxed-only: no box, no answer, as NeMo-Skills grades
        "\\boxed{",
        "\\boxed{}",
        "\\boxed{  }",
        "an early \\boxed{3} and a truncated last \\boxed{\\frac{1}{",  # the last box decides, as in NeMo-Skills
        "\\boxeddot is not a box",
        "",
        None,
    ],
)
def test_no_answer(text):
    assert extract_answer(text) is None


def test_text_after_a_chat_end_token_is_ignored():
    assert extract_answer("\\boxed{5}<|im_end|>\n<|im_start|>user\n\\boxed{6}") == "5"
    assert extract_answer("\\boxed{5}<|endoftext|>\\boxed{6}") == "5"
    assert extract_answer("thinking...<|im_end|>\\boxed{6}") is None


def test_reasoning_end_keeps_the_text_after_the_last_marker():
    text = "<think>maybe \\boxed{1}</think> wait </think> so \\boxed{2}"
    assert extract_answer(text, reasoning_end="</think>") == "2"
    assert extract_answer("\\boxed{2} without the marker", reasoning_end="</think>") is None
    assert extract_answer("<think>\\boxed{1}</think> no box after") == "1"  # without the option, markers are text
    assert extract_answer("<think>\\boxed{1}</think> no box after", reasoning_end="</think>") is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("So the final answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
        ("We get 1,000 apples and then 12 pears", "12"),
        ("The answer is: 7\nThat is all.", "7"),
        ("a box still wins: the answer is 3, \\boxed{4}", "4"),
        ("no digits at all", None),
        ("The answer is \\(224\\) and \\(-176\\).", "\\(224\\) and \\(-176\\)"),  # two spans keep their delimiters
    ],
)
def test_fallback_mode_for_prompts_without_a_box(text, expected):
    assert extract_answer(text, mode="fallback") == expected


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="extraction mode"):
        extract_answer("\\boxed{1}", mode="last_number")


def test_long_and_brace_heavy_text_is_linear():
    import time

    text = "{" * 20000 + "x" * 5_000_000 + "\\boxed{" + "{" * 20000
    start = time.perf_counter()
    assert extract_answer(text) is None
    assert extract_answer(text + "}" * 20001) == "{" * 20000 + "}" * 20000
    assert extract_answer("\\boxeddot " * 200_000 + "\\boxed{5}" + " \\boxeddot" * 100_000) == "5"
    assert time.perf_counter() - start < 2.0
