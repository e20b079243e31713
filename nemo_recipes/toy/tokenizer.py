"""A small byte-level BPE tokenizer shaped like Qwen2.5's: ChatML special tokens, eos `<|endoftext|>` (as in the
Qwen2.5 base models), and a Qwen2-style chat template.

Unlike Qwen, digits are not split one by one: the toy numbers 0..20 and each "+ 5" become single tokens, so an
arithmetic step is one lookup a tiny model learns in minutes on a CPU, instead of a carry it would need hours for."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from nemo_recipes.data.prompts import ENDOFTEXT, IM_END, IM_START

SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
# Pre-token pieces: an operator with its operand (" + 5"), a number, a word, punctuation, whitespace. BPE then
# learns " + 5" and " 12" as single tokens.
_PIECES = r" ?[+\-] \d+| ?\d+| ?[A-Za-z]+| ?[^\sA-Za-z\d]+|\s+"

# Qwen2's chat template with the default system prompt removed: the system turn is rendered only when given.
# Our prompts always give it (possibly empty), so the template and data/prompts.py agree byte for byte.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer(texts: Iterable[str], vocab_size: int = 384):
    """Train the tokenizer on `texts` and return it wrapped as a transformers PreTrainedTokenizerFast."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PIECES), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )


def save_tokenizer(tokenizer, directory: str | Path) -> None:
    tokenizer.save_pretrained(str(directory))
