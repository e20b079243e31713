"""Pull the final answer string out of a generation: the last ``\\boxed{...}``, as NeMo-Skills grades.

NeMo-Skills (``nemo_skills/evaluation/math_grader.py::extract_answer``) takes the last ``\\boxed`` occurrence and
matches braces from there; a generation without a box has no answer. We keep that rule and its consequences
(``\\boxed{\\boxed{5}}`` and ``\\boxed{x = \\boxed{5}}`` give ``5``: the last occurrence is the inner box; a last box
left open by a truncated generation gives no answer, even if an earlier box was closed) and add what it misses:
``\\fbox{...}``, the brace-less ``\\boxed 5``, whitespace before the brace, and text after a chat end token.
"""

from __future__ import annotations

import re

CHAT_END_TOKENS = ("<|im_end|>", "<|endoftext|>")
EXTRACTION_MODES = ("boxed", "fallback")

_BRACE = re.compile(r"[{}]")
# `\boxed 5` boxes one TeX token; models mean the whole number, so take the run up to a space or a math delimiter.
_BARE_BOX_ARGUMENT = re.compile(r"\s*([^\s{$]+?)(?=\s|\$|\\\]|\\\)|$)")
_ANSWER_PHRASE = re.compile(r"answer is[:\s]*(.+?)\s*(?:$|\n)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_MATH_DELIMITERS = re.compile(r"^\s*(?:\$+|\\\(|\\\[)|(?:\$+|\\\)|\\\])\s*\.?\s*$")
_ANY_MATH_DELIMITER = re.compile(r"\$|\\[()\[\]]")


def extract_answer(text: str | None, *, mode: str = "boxed", reasoning_end: str | None = None) -> str | None:
    """The final answer in `text`, or None when it states none.

    mode="boxed" (default) is NeMo-Skills' rule: the last box or nothing. mode="fallback" is for harnesses whose
    prompts ask for no box: without a box it takes the text after the last "answer is", else the last number.
    reasoning_end (e.g. "</think>") keeps only the text after its last occurrence and, as NeMo-Skills'
    parse_reasoning does, gives no answer when it is missing.
    """
    if mode not in EXTRACTION_MODES:
        raise ValueError(f"extraction mode must be one of {EXTRACTION_MODES}, not {mode!r}")
    if not text:
        return None
    text = cut_at_chat_end(text)
    if reasoning_end is not None:
        _, found, text = text.rpartition(reasoning_end)
        if not found:
            return None
    answer = last_boxed(text)
    if answer is None and mode == "fallback":
        answer = _unboxed_answer(text)
    return answer


def cut_at_chat_end(text: str) -> str:
    """Drop everything from the first chat end token on: a model that runs past it is answering another turn."""
    if "<|" not in text:  # one scan for the usual case: the server already stopped at the token
        return text
    for token in CHAT_END_TOKENS:
        position = text.find(token)
        if position >= 0:
            text = text[:position]
    return text


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed``/``\\fbox`` in `text`; None if absent, unclosed or empty."""
    start = _after_last_box_command(text)
    if start is None:
        return None
    bare_start = start
    while start < len(text) and text[start].isspace():
        start += 1
    if start < len(text) and text[start] == "{":
        content = _braced_content(text, start)
    else:
        bare = _BARE_BOX_ARGUMENT.match(text, bare_start)
        content = bare.group(1) if bare else None
    if content is None or not content.strip():
        return None
    return content.strip()


def _after_last_box_command(text: str) -> int | None:
    """Index just past the last ``\\boxed`` or ``\\fbox`` command (not ``\\boxeddot``).

    Searched from the end, never over the same text twice: a 40 KB generation costs microseconds.
    """
    end = len(text)
    while True:
        boxed = text.rfind("\\boxed", 0, end)
        fbox = text.rfind("\\fbox", max(boxed, 0), end)  # only an \fbox after that \boxed can be the last
        start, command = (fbox, "\\fbox") if fbox > boxed else (boxed, "\\boxed")
        if start < 0:
            return None
        after = start + len(command)
        if after >= len(text) or not text[after].isalpha():
            return after
        end = start


def _braced_content(text: str, open_index: int) -> str | None:
    """Text between the brace at `open_index` and its match; None if it never closes.

    Every brace counts, escaped ones too, as in NeMo-Skills: ``\\{1,2\\}`` balances itself.
    """
    depth = 0
    for brace in _BRACE.finditer(text, open_index):
        depth += 1 if brace.group() == "{" else -1
        if depth == 0:
            return text[open_index + 1 : brace.start()]
    return None


def _unboxed_answer(text: str) -> str | None:
    phrases = _ANSWER_PHRASE.findall(text)
    if phrases:
        answer = _MATH_DELIMITERS.sub("", phrases[-1]).strip()
        if _ANY_MATH_DELIMITER.search(answer):  # several spans ("\(224\) and \(-176\)"): keep every delimiter
            answer = phrases[-1].strip().rstrip(".").strip()
        if answer:
            return answer
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None
