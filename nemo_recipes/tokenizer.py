"""Load a tokenizer exactly as its tokenizer.json defines it.

transformers 5's AutoTokenizer picks the class from the model type and, for Qwen2, rebuilds Qwen2's own
pre-tokenizer, ignoring the one in tokenizer.json. For the real Qwen2.5 checkpoints both agree; for any other
tokenizer (the toy models', a patched one) they do not -- and NeMo, which runs transformers 4 inside the container,
reads tokenizer.json as written. Packing, token counting and generation must all see the same token ids.
"""

from __future__ import annotations

from pathlib import Path


def load_tokenizer(path: str, trust_remote_code: bool = False, revision: str | None = None):
    """`path` is a local folder or a hub id (`revision`: the hub commit to read)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (Path(path) / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, revision=revision)


def token_counter(path: str):
    """A function from texts to their token counts under the tokenizer at `path`, one batched call each: the
    model's own tokens, without the special tokens a chat template or the generation adds around them."""
    tokenizer = load_tokenizer(path)
    return lambda texts: [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False,
                                                        verbose=False)["input_ids"]]
