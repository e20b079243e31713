"""Prompt strings rendered by our code, byte for byte, for the teacher and the student.

Never let a server or a chat template fill these in: Qwen's template inserts "You are Qwen, created by Alibaba
Cloud..." when the system turn is missing, which would silently change the training and evaluation string
(research/nemo_aligner.md 3.3 and 6.1).
"""

from __future__ import annotations

# QwQ-32B-Preview's official system prompt (model card; NeMo-Skills prompt/config/qwen/qwq.yaml).
QWQ_SYSTEM_PROMPT = (
    "You are a helpful and harmless assistant. You are Qwen developed by Alibaba. You should think step-by-step."
)

# NeMo-Skills generic/math user prompt: the student's training and evaluation instruction.
GENERIC_MATH_INSTRUCTION = (
    "Solve the following math problem. Make sure to put the answer (and only answer) inside \\boxed{{}}.\n\n{problem}"
)

# Qwen2.5-Math-Instruct's chain-of-thought system prompt (its model card), for evaluating that model as a baseline.
QWEN_MATH_COT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
STOP_STRINGS = (IM_END, ENDOFTEXT)


def chatml(system: str, user: str) -> str:
    """A ChatML prompt with the system turn always present (even empty) and the assistant turn opened."""
    return f"{IM_START}system\n{system}{IM_END}\n{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n"


def qwq_prompt(problem: str) -> str:
    """The teacher's prompt: QwQ's system prompt, the bare problem as the user turn."""
    return chatml(QWQ_SYSTEM_PROMPT, problem)


def generic_math_prompt(problem: str) -> str:
    """The student's prompt at SFT and evaluation: empty system turn + NeMo-Skills generic/math instruction."""
    return chatml("", GENERIC_MATH_INSTRUCTION.format(problem=problem))


def qwen_math_cot_prompt(problem: str) -> str:
    """Qwen2.5-Math-Instruct's own CoT prompt: its system prompt, the bare problem as the user turn."""
    return chatml(QWEN_MATH_COT_SYSTEM_PROMPT, problem)


def assistant_response(solution: str) -> str:
    """The SFT `output` field: the solution closed by <|im_end|>, trained as text (add_eos=False)."""
    return f"{solution}{IM_END}\n"


PROMPTS = {"qwq": qwq_prompt, "generic_math": generic_math_prompt, "qwen_math_cot": qwen_math_cot_prompt}


def render_prompt(name: str, problem: str) -> str:
    try:
        return PROMPTS[name](problem)
    except KeyError:
        raise KeyError(f"unknown prompt '{name}'; choose one of {sorted(PROMPTS)}") from None
