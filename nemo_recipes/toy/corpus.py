"""The text the toy models learn from before the pipeline starts: a base model's "pretraining" documents and the
teacher's "post-training" chats.

The base student reads arithmetic facts, worked chains of partial results in plain text, question/answer pages that
answer directly, and chat turns asking for single facts -- so the skill to reason step by step is latent and the chat
format familiar, but it has never answered a multi-step problem in a chat by reasoning through it. The teacher is that base post-trained on many chats in QwQ's format that
reason step by step, as QwQ-32B-Preview was built on the Qwen2.5 family.
"""

from __future__ import annotations

import random

from nemo_recipes.data.prompts import assistant_response, chatml, generic_math_prompt, qwq_prompt
from nemo_recipes.toy.task import MAX_VALUE, PHRASINGS, checked_ending, make_problem, reasoning_trace, scratchpad


def _fact(rng: random.Random) -> tuple[int, str, int, int]:
    a = rng.randint(0, MAX_VALUE)
    op = "+" if a == 0 or (a < MAX_VALUE and rng.random() < 0.5) else "-"
    b = rng.randint(1, min(9, MAX_VALUE - a)) if op == "+" else rng.randint(1, min(9, a))
    return a, op, b, a + b if op == "+" else a - b


def _facts_document(rng: random.Random) -> str:
    return "\n".join("Fact: {} {} {} = {}.".format(*_fact(rng)) for _ in range(8))


# What a web page may put around a worked problem. Varying it teaches the base to find the expression at any
# distance, so the skill survives the change of format to a chat turn -- as a real base model's does.
_PREFIXES = ("", "", "Problem: ", "Exercise. ", "Solve the following math problem.\n\n", "Q: ")
_LEAD_INS = ("", "", "Solution:\n", "We work it out one operation at a time.\n", "Let me think step by step.\n",
             "Answer:\n", "Working:\n")


def _chain_document(rng: random.Random) -> str:
    """A worked problem as a web page writes it. Some pages re-check the last step or fix how they state the answer,
    so the base knows the words of reflection (as any base model does) without ever using them in a chat."""
    p = make_problem(rng)
    text = rng.choice(_PREFIXES) + p["problem"] + "\n" + rng.choice(_LEAD_INS) + "\n".join(scratchpad(p["expression"]))
    ending = rng.choice(("", "", f"\nSo the final answer is \\boxed{{{p['expected_answer']}}}.",
                         "\n" + checked_ending(p["expression"], box_late=rng.random() < 0.5)))
    return text + ending


def _direct_answer_document(rng: random.Random) -> str:
    p = make_problem(rng)
    return f"Question: {p['problem']}\nAnswer: The answer is \\boxed{{{p['expected_answer']}}}."


def _fact_chat(rng: random.Random) -> str:
    """Instruction data as a base model meets it on the web: a chat turn asking for one fact, answered in one line."""
    a, op, b, c = _fact(rng)
    question = rng.choice(PHRASINGS).format(e=f"{a} {op} {b}")
    prompt = generic_math_prompt(question) if rng.random() < 0.5 else chatml("", question)
    return prompt + assistant_response(f"{a} {op} {b} = {c}.")


def base_document(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.35:
        return _facts_document(rng)
    if kind < 0.75:
        return _chain_document(rng)
    if kind < 0.85:
        return _direct_answer_document(rng)
    return _fact_chat(rng)


def teacher_chat(rng: random.Random) -> str:
    """A chat in QwQ's format reasoning step by step and re-checking its last step; in a quarter of them it first
    leaves the answer unboxed and corrects that."""
    p = make_problem(rng)
    trace = reasoning_trace(p["expression"], box_late=rng.random() < 0.25)
    return qwq_prompt(p["problem"]) + assistant_response(trace)


def tokenizer_texts(seed: int, num: int = 3000) -> list[str]:
    """A sample of every kind of text the toy world uses, so the BPE merges fit all of them."""
    rng = random.Random(seed)
    texts = [base_document(rng) for _ in range(num)] + [teacher_chat(rng) for _ in range(num)]
    texts += [generic_math_prompt(make_problem(rng)["problem"]) for _ in range(num // 4)]
    return texts
