"""Reference helpers for the tests that run NeMo's own code on our artifacts, in .venv-nemo (make test-nemo).

Every module here starts with `pytest.importorskip` on NeMo, so the plain venv collects and skips them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
SKIP_REASON = "needs NeMo 2.2 and NeMo-Aligner 0.7 (the .venv-nemo environment: make test-nemo)"

PROMPT = (
    "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nSolve the following math problem. Make sure to put the "
    "answer (and only answer) inside \\boxed{{}}.\n\nWhat is {a} + {b}?<|im_end|>\n<|im_start|>assistant\n"
)


def write_sft_jsonl(path: Path, count: int = 10) -> Path:
    """SFT records shaped like ours (ChatML prompt, answer closed by <|im_end|>) whose lengths grow in steps
    of well over 16 tokens, so NeMo's random choice among equal-length samples never comes into play."""
    with open(path, "w", encoding="utf-8") as f:
        for k in range(count):
            solution = "Let me think step by step. " * (1 + 4 * k) + f"So the answer is \\boxed{{{k + 40}}}."
            record = {"id": f"p{k}", "input": PROMPT.format(a=k, b=40), "output": solution + "<|im_end|>\n"}
            f.write(json.dumps(record) + "\n")
    return path


def compose_cfg(*overrides: str, student: str = "qwen2.5-32b", cluster: str = "slurm"):
    """cfg.sft / cfg.student / cfg.cluster composed by this environment's Hydra from the repo's conf/ groups."""
    from hydra import compose, initialize_config_dir

    base = ["+sft=paper", f"+model@student={student}", f"+cluster={cluster}"]
    if cluster == "slurm":
        base.append("cluster.partition=batch")
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        return compose(config_name=None, overrides=base + list(overrides))


def nemo_tokenizer(tokenizer_dir: Path):
    """The tokenizer NeMo builds from an HF folder (what a Qwen2 .nemo's `library: huggingface` resolves to)."""
    from nemo.collections.nlp.modules.common.tokenizer_utils import get_nmt_tokenizer

    return get_nmt_tokenizer(library="huggingface", model_name=str(tokenizer_dir), use_fast=True)


def nemo_packed_file(jsonl: Path, tokenizer, output_dir: Path, *, pack_size: int, context_parallel_size: int) -> Path:
    """Pack `jsonl` with NeMo's own pieces, as its prepare_packed_ft_dataset.py script does (the script is not in
    the wheel): GPTSFTDataset tokenization with our template flags, the context-parallel pre-padding, then
    create_hist -> create_packing_strategy(first_fit_decreasing) -> fill_packing_strategy."""
    from nemo.collections.nlp.data.language_modeling.megatron.gpt_sft_dataset import GPTSFTDataset
    from nemo.utils.sequence_packing_utils import create_hist, create_packing_strategy, fill_packing_strategy

    dataset = GPTSFTDataset(
        file_path=str(jsonl), tokenizer=tokenizer, max_seq_length=pack_size, min_seq_length=1,
        add_bos=False, add_eos=False, add_sep=False, label_key="output", truncation_field="input",
        prompt_template="{input}{output}", index_mapping_dir=str(output_dir / "index"), is_test=True,
    )
    samples = [dataset[i] for i in range(len(dataset))]
    if context_parallel_size > 1:
        multiple = max(16, 2 * context_parallel_size)
        for sample in samples:  # the script's pre_pad_dataset: eos up to ceil(n, multiple), plus one
            target = min(pack_size, -(-len(sample["input_ids"]) // multiple) * multiple)
            sample["input_ids"] = sample["input_ids"] + [tokenizer.eos_id] * (target - len(sample["input_ids"]) + 1)
    sequences, histogram = create_hist(np.array(samples), pack_size)
    assignments = create_packing_strategy(histogram, pack_size, "first_fit_decreasing")
    if isinstance(assignments, tuple):  # NeMo >= 2.2 returns (assignments, packing metadata)
        assignments = assignments[0]
    packs = fill_packing_strategy(assignments, sequences, pack_size, tokenizer.eos_id)
    path = output_dir / f"packed_{pack_size}_seed0.npy"
    np.save(path, packs)
    return path
