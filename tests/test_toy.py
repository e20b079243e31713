"""The toy world: problems whose answers are right, traces that show the work, a Qwen2.5-shaped tokenizer."""

from __future__ import annotations

import random
import re

import pytest

from nemo_recipes.data.prompts import (
    GENERIC_MATH_INSTRUCTION,
    QWEN_MATH_COT_SYSTEM_PROMPT,
    QWQ_SYSTEM_PROMPT,
    chatml,
    generic_math_prompt,
    qwen_math_cot_prompt,
    qwq_prompt,
)
from nemo_recipes.toy import corpus
from nemo_recipes.toy.task import MAX_VALUE, make_problems, reasoning_trace, scratchpad, steps


def test_problems_are_distinct_held_out_and_correct():
    train = make_problems(50, seed=1, prefix="train")
    test = make_problems(48, seed=2, prefix="test", exclude={p["expression"] for p in train})
    assert len({p["expression"] for p in train + test}) == 98
    for p in train + test:
        assert eval(p["expression"]) == int(p["expected_answer"])  # noqa: S307 -- our own digits and +/- only
        assert all(0 <= c <= MAX_VALUE for _, _, _, c in steps(p["expression"]))
        assert 3 <= len(steps(p["expression"])) + 1 <= 5
    assert make_problems(5, seed=1, prefix="train") == train[:5]  # seeded


def test_trace_walks_through_partial_results_to_the_boxed_answer():
    assert scratchpad("7 + 5 - 7 - 4") == ["= 12 - 7 - 4", "= 5 - 4", "= 1"]
    trace = reasoning_trace("7 + 5 - 7 - 4")
    assert trace.splitlines()[:2] == ["Let me think step by step.", "= 12 - 7 - 4"]
    assert "Wait, let me check the last step: 5 - 4 = 1." in trace
    assert trace.endswith("So the final answer is \\boxed{1}.")
    assert reasoning_trace("7 + 5", answer=3).endswith("\\boxed{3}.")
    late = reasoning_trace("7 + 5 - 7 - 4", box_late=True).splitlines()
    # The answer first left unboxed, then corrected: no value is ever wrong.
    assert late[-2:] == ["So the final answer is 1.", "Wait, the answer goes in a box: \\boxed{1}."]


def test_base_chats_ask_single_facts_and_teacher_chats_reason():
    rng = random.Random(0)
    chats = [d for d in (corpus.base_document(rng) for _ in range(300)) if "<|im_start|>" in d]
    assert chats and all(re.fullmatch(r"\d+ [+-] \d+ = \d+\.<\|im_end\|>\n", d.split("assistant\n")[1]) for d in chats)
    chat = corpus.teacher_chat(rng)
    assert chat.startswith(qwq_prompt(chat.split("user\n")[1].split("<|im_end|>")[0]))
    assert chat.endswith("<|im_end|>\n")


def test_teacher_chats_carry_markers_that_base_chats_never_do():
    from omegaconf import OmegaConf

    from nemo_recipes.config import CONF_DIR
    from nemo_recipes.traces.markers import markers_from_config

    markers = markers_from_config(OmegaConf.load(CONF_DIR / "config.yaml").markers)
    rng = random.Random(0)
    documents = [corpus.base_document(rng) for _ in range(2000)]
    chats = [d for d in documents if "<|im_start|>" in d]
    assert chats and not any(markers.find(chat) for chat in chats)
    # Its pages have them (a base model has read "Wait," on the web), so SFT teaches a habit, not new words.
    assert 0.05 < sum(bool(markers.find(d)) for d in documents) / len(documents) < 0.2
    teacher = [corpus.teacher_chat(rng) for _ in range(400)]
    assert all(len(markers.find(chat)) >= 2 for chat in teacher)  # "Wait, let me check": reflection, verification
    assert 0.15 < sum("goes in a box" in chat for chat in teacher) / len(teacher) < 0.35


@pytest.fixture(scope="module")
def toy_tokenizer():
    from nemo_recipes.toy.tokenizer import build_tokenizer

    return build_tokenizer(corpus.tokenizer_texts(0, num=400), vocab_size=512)


def test_tokenizer_is_qwen_shaped(toy_tokenizer):
    tok = toy_tokenizer
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|endoftext|>"
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    text = qwq_prompt("Compute 7 + 5 - 7 - 4.") + reasoning_trace("7 + 5 - 7 - 4") + "<|im_end|>\n"
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level: lossless
    assert tok.convert_ids_to_tokens(tok(" 12 - 7")["input_ids"]) == ["Ġ12", "Ġ-Ġ7"]


def test_chat_template_renders_our_prompts_byte_for_byte(toy_tokenizer):
    problem = "What is 3 + 4 - 2?"
    instruction = GENERIC_MATH_INSTRUCTION.format(problem=problem)
    for system, user, rendered in (("", instruction, generic_math_prompt(problem)),
                                   (QWQ_SYSTEM_PROMPT, problem, qwq_prompt(problem)),
                                   (QWEN_MATH_COT_SYSTEM_PROMPT, problem, qwen_math_cot_prompt(problem))):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        assert toy_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == rendered
    assert chatml("", "hi") == "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_saved_tokenizer_loads_back_with_the_same_ids(toy_tokenizer, tmp_path):
    # transformers 5's AutoTokenizer would swap in Qwen2's digit-splitting pre-tokenizer for a qwen2 config;
    # load_tokenizer must give back exactly the tokenizer the toy models were trained with.
    from nemo_recipes.tokenizer import load_tokenizer

    toy_tokenizer.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "qwen2"}')
    text = qwq_prompt("Compute 17 - 9 + 3.") + reasoning_trace("17 - 9 + 3") + "<|im_end|>\n"
    assert load_tokenizer(str(tmp_path))(text)["input_ids"] == toy_tokenizer(text)["input_ids"]
