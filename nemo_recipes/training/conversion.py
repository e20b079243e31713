"""Qwen2 checkpoint conversion with NeMo's own scripts (the same arguments in v2.1.0 and v2.2.0, the image's), run
inside the NeMo container.

HF -> NeMo:  {nemo_dir}/scripts/checkpoint_converters/convert_qwen2_hf_to_nemo.py
NeMo -> HF:  {nemo_dir}/scripts/checkpoint_converters/convert_qwen2_nemo_to_hf.py, reading final_weights.py's folder:
             the converter restores on one device and resets only TP and PP, so it must not see training's CP

The HF -> NeMo converter writes the HF directory as given into the .nemo as its tokenizer (v2.2.0: library
huggingface, use_fast, trust_remote_code -- harmless for a Qwen2.5 folder, which holds no code; the fast tokenizer
reads tokenizer.json, as our packer does), so training must see that directory at the same path: we always pass
absolute paths and mount them unchanged (launch.same_path_mounts).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from nemo_recipes.errors import UserError

HF_TO_NEMO_SCRIPT = "scripts/checkpoint_converters/convert_qwen2_hf_to_nemo.py"
NEMO_TO_HF_SCRIPT = "scripts/checkpoint_converters/convert_qwen2_nemo_to_hf.py"

# Files of a Qwen2 HF tokenizer. The NeMo -> HF converter writes the tokenizer only when given --input_tokenizer,
# and then resizes the embeddings to len(tokenizer) (151665 for Qwen2.5) before loading the 152064-row NeMo
# weights, which fails; so we copy these files from the base model instead.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
)

# What the converters' --precision takes, for each trainer.precision we allow.
_CONVERTER_PRECISION = {"bf16": "bf16", "bf16-mixed": "bf16", "16": "16", "16-mixed": "16", "32": "32"}


def converter_precision(precision) -> str:
    try:
        return _CONVERTER_PRECISION[str(precision)]
    except KeyError:
        raise UserError(
            f"sft.precision '{precision}' has no checkpoint-converter equivalent; use one of "
            f"{sorted(_CONVERTER_PRECISION)}."
        ) from None


def hf_to_nemo_program(nemo_dir, *, hf_model_dir, nemo_path, precision) -> list[str]:
    """The converter and its arguments (prefix a python or a launcher).

    bf16 needs a visible GPU: without one the script silently falls back to fp16, so run it on a GPU node.
    """
    return [
        str(Path(nemo_dir) / HF_TO_NEMO_SCRIPT),
        "--input_name_or_path",
        str(Path(hf_model_dir).absolute()),
        "--output_path",
        str(Path(nemo_path).absolute()),
        "--precision",
        converter_precision(precision),
    ]


def unpack_nemo_program(nemo_path, output_dir) -> list[str]:
    """Python's own tarfile command unpacking a .nemo (a plain tar) into `output_dir`, for restore_from_path: NeMo and
    NeMo-Aligner restore from an unpacked folder as is (NeMo-Aligner utils.load_from_nemo, model_extracted_dir)."""
    return ["-m", "tarfile", "-e", str(Path(nemo_path).absolute()), str(Path(output_dir).absolute())]


def final_weights_program(mode: str, *, checkpoint_dir, base_model_dir, output_dir) -> list[str]:
    """Our final_weights.py (in the image beside NeMo): the converter's input, an unpacked .nemo of the averaged or
    last checkpoint with the base model's one-device config, so any TP / PP / CP of training converts."""
    return [
        "-m",
        "nemo_recipes.training.final_weights",
        mode,
        "--checkpoint-dir",
        str(Path(checkpoint_dir).absolute()),
        "--base-model-dir",
        str(Path(base_model_dir).absolute()),
        "--output-dir",
        str(Path(output_dir).absolute()),
    ]


def nemo_to_hf_program(nemo_dir, *, nemo_path, hf_model_dir, weights_path, hf_output_dir, precision,
                       cpu_only: bool) -> list[str]:
    """The converter writing a full HF folder: config from `hf_model_dir`, weights from the .nemo.

    `weights_path` is the converter's intermediate state-dict file; `cpu_only` restores the model on the CPU
    (Qwen2.5-32B in bf16 is ~65 GB, tight on one 80 GB GPU).
    """
    program = [
        str(Path(nemo_dir) / NEMO_TO_HF_SCRIPT),
        "--input_name_or_path",
        str(Path(nemo_path).absolute()),
        "--output_path",
        str(Path(weights_path).absolute()),
        "--hf_input_path",
        str(Path(hf_model_dir).absolute()),
        "--hf_output_path",
        str(Path(hf_output_dir).absolute()),
        "--precision",
        converter_precision(precision),
    ]
    return program + (["--cpu-only"] if cpu_only else [])


def copy_tokenizer_files(hf_model_dir, hf_output_dir) -> list[Path]:
    """Copy the base model's tokenizer next to the converted weights; returns the files copied."""
    source, target = Path(hf_model_dir), Path(hf_output_dir)
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
            copied.append(target / name)
    if not any(p.name in ("tokenizer.json", "vocab.json") for p in copied):
        raise UserError(f"{source} holds no tokenizer.json or vocab.json to copy into {target}.")
    return copied
