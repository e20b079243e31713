"""Shared fixtures: a tiny Qwen2.5-shaped tokenizer and a tiny random Qwen2 student, built locally (no hub)."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest
import yaml

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nSolve the following math problem. Make sure to put the "
    "answer (and only answer) inside \\boxed{}.\n\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n",
    "Let me think step by step. hello world, so the answer is \\boxed{42}.<|im_end|>\n",
    "First we add the numbers, then we check the result. Wait, let me verify that again.",
] * 20


def sft_record(record_id: str, problem: str, solution: str) -> dict:
    """An SFT record as the select stage writes it: rendered ChatML prompt, solution ending in <|im_end|>."""
    prompt = (
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nSolve the following math problem. Make sure to put the "
        f"answer (and only answer) inside \\boxed{{}}.\n\n{problem}<|im_end|>\n<|im_start|>assistant\n"
    )
    return {"id": record_id, "input": prompt, "output": solution + "<|im_end|>\n", "num_tokens": 0, "source": "test"}


def write_jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    # eos <|endoftext|>, as in the Qwen2.5 base models; no bos, as in Qwen2.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    directory = tmp_path_factory.mktemp("tiny_tokenizer")
    tokenizer.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def tiny_student_dir(tmp_path_factory, tiny_tokenizer_dir):
    """A random 2-layer Qwen2 (GQA, like Qwen2.5) with the tiny tokenizer beside it, seeded so numbers are fixed."""
    import shutil

    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    directory = tmp_path_factory.mktemp("tiny_student")
    for path in tiny_tokenizer_dir.iterdir():
        shutil.copy2(path, directory / path.name)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(str(directory))
    return directory


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@functools.lru_cache(maxsize=None)
def _composed(student: str, cluster: str):
    from hydra import compose, initialize_config_dir

    overrides = ["+sft=paper", f"+model@student={student}", f"+cluster={cluster}"]
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        return compose(config_name=None, overrides=overrides)


def compose_cfg(*overrides, student="qwen2.5-32b", cluster="slurm"):
    """cfg.sft / cfg.student / cfg.cluster from the repo's conf/ groups, then `key=yaml-value` or `~key` overrides.

    Hydra composes each group pair once; the overrides go through OmegaConf's struct mode, so a key the
    configs lack fails here as it would on the command line.
    """
    from omegaconf import OmegaConf, open_dict

    cfg = copy.deepcopy(_composed(student, cluster))
    if cluster == "slurm":
        cfg.cluster.partition = "batch"
    for override in overrides:
        if override.startswith("~"):
            parent, _, key = override[1:].rpartition(".")
            with open_dict(cfg):
                del OmegaConf.select(cfg, parent)[key]
        else:
            key, _, value = override.partition("=")
            OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)
    return cfg


REPO = Path(__file__).resolve().parents[1]
# The toy demo's small setting: same stages and code paths as `make demo`, fewer samples and steps. 24 SFT steps:
# after 8 the student still answers most problems in one line, outside reasoning mode.
SMALL = [
    "teacher_sampling.n=4", "teacher_sampling.chunk_size=40", "eval_sampling.n=2", "benchmark.num_problems=16",
    "sft.max_steps=24", "sft.save_interval=4", "metrics.bootstrap=50", "progress=false",
]


def run_small(run_dir: Path, *overrides: str, timeout: int = 1800):
    """`python -m nemo_recipes` in the small setting, into `run_dir`; the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "nemo_recipes", f"run_dir={run_dir}", *SMALL, *overrides],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    """The small demo run locally from scratch, once per session: (its run folder, how the command ended)."""
    run_dir = tmp_path_factory.mktemp("small-demo") / "demo"
    return run_dir, run_small(run_dir)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run the slow toy-pipeline tests (make test does)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow (make test does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
