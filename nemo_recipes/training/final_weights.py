"""The trained model NeMo's Qwen2 NeMo -> HF converter reads: an unpacked .nemo folder holding the final weights and
the base model's config, written as NeMo-Skills wrote it after `ns train` (731558c9).

    python -m nemo_recipes.training.final_weights average --checkpoint-dir training/checkpoints \\
        --base-model-dir base_model --output-dir final_nemo

average  every saved checkpoint but the `-last` copy of the final one, element-wise (NeMo-Skills'
         training/average_checkpoints.py, `ns train`'s default): checkpoints written in Megatron's zarr format
         (model.dist_ckpt_format: zarr, as NeMo-Skills' sft_config.yaml sets), one array per weight
last     the `-last` checkpoint alone (training/copy_checkpoint.py, `ns train --save_last_ckpt`), in any format,
         hard-linked rather than copied

Either way the optimizer state is left out and model_config.yaml is the base model's with tensor, pipeline and
context parallelism 1: the converter restores on one device (convert_qwen2_nemo_to_hf.py, NeMo 2.2.0, resets only
TP and PP), so the trained model's own config -- CP 2 for 7B, CP 4 on four nodes -- would fail Megatron's
`world_size % (TP x PP x CP)` assertion after all the training was done.

Ours differs from NeMo-Skills' script in two ways that change no weight of a one-checkpoint run: the sum is kept in
fp32 one array at a time (theirs holds every array in its own dtype, bf16), and the result is written under a
temporary name and renamed into place, so a killed run leaves no half-written folder.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

from nemo_recipes.errors import UserError
from nemo_recipes.io import link_or_copy
from nemo_recipes.training.checkpoints import FINAL_WEIGHTS, check_final_weights, publish_directory

WEIGHTS_DIR = "model_weights"
MODEL_CONFIG = "model_config.yaml"
# A checkpoint folder NeMo's ModelCheckpoint names from the filename template: ...-step=<N>-...[-last]
CHECKPOINT_STEP = re.compile(r"-step=(\d+)-")
OPTIMIZER_PREFIX = "optimizer."
# One-device layout for the converter (megatron_init: world_size 1 must divide TP x PP x CP).
ONE_DEVICE = {"tensor_model_parallel_size": 1, "pipeline_model_parallel_size": 1, "context_parallel_size": 1,
              "sequence_parallel": False}


def write_final_weights(mode: str, checkpoint_dir, base_model_dir, output_dir) -> list[Path]:
    """Write `output_dir` (an unpacked .nemo) from the checkpoints; returns the checkpoints it was made from."""
    check_final_weights(mode, "the final weights mode")
    checkpoint_dir, base_model_dir, output_dir = Path(checkpoint_dir), Path(base_model_dir), Path(output_dir)
    if not (base_model_dir / MODEL_CONFIG).is_file():
        raise UserError(f"{base_model_dir} has no {MODEL_CONFIG}: it must be the unpacked base .nemo.")
    sources = checkpoints_to_average(checkpoint_dir) if mode == "average" else [last_checkpoint(checkpoint_dir)]

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.tmp"))
    try:
        if mode == "average":
            _write_average([weights_folder(c) for c in sources], tmp / WEIGHTS_DIR)
        else:
            _link_model_weights(weights_folder(sources[0]), tmp / WEIGHTS_DIR)
        write_one_device_config(base_model_dir / MODEL_CONFIG, tmp / MODEL_CONFIG)
        for pattern in ("*.model", "*.json"):  # tokenizer artifacts, as NeMo-Skills copies them
            for file in base_model_dir.glob(pattern):
                shutil.copy2(file, tmp / file.name)
        publish_directory(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sources


def checkpoints_to_average(checkpoint_dir: Path) -> list[Path]:
    """Every checkpoint folder NeMo saved, in step order, but the `-last` copy of the final one."""
    found = sorted((int(m.group(1)), p) for p in _checkpoint_folders(checkpoint_dir)
                   if not p.name.endswith("-last") and (m := CHECKPOINT_STEP.search(p.name)))
    if not found:
        raise UserError(f"{checkpoint_dir} holds no saved checkpoint to average (folders named ...-step=N-...).")
    return [p for _, p in found]


def last_checkpoint(checkpoint_dir: Path) -> Path:
    found = sorted((int(m.group(1)) if (m := CHECKPOINT_STEP.search(p.name)) else -1, p)
                   for p in _checkpoint_folders(checkpoint_dir) if p.name.endswith("-last"))
    if not found:
        raise UserError(f"{checkpoint_dir} holds no checkpoint folder ending in -last.")
    return found[-1][1]


def weights_folder(checkpoint: Path) -> Path:
    """Where a checkpoint's distributed weights are: model_weights/ in a .nemo, the folder itself in a training
    checkpoint."""
    return checkpoint / WEIGHTS_DIR if (checkpoint / WEIGHTS_DIR).is_dir() else checkpoint


def write_one_device_config(base_config: Path, target: Path) -> None:
    import yaml

    config = yaml.safe_load(base_config.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise UserError(f"{base_config} is not a YAML mapping.")
    config.update(ONE_DEVICE)
    target.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def _checkpoint_folders(checkpoint_dir: Path) -> list[Path]:
    if not checkpoint_dir.is_dir():
        raise UserError(f"{checkpoint_dir} does not exist: training wrote no checkpoints.")
    return [p for p in checkpoint_dir.iterdir() if p.is_dir()]


def _write_average(folders: list[Path], target: Path) -> None:
    """Average every model array of zarr-format checkpoints into `target`; everything else comes from the first."""
    first = folders[0]
    _require_zarr(first)
    import numpy as np
    import tensorstore  # noqa: F401  registers NumPy's bfloat16, the dtype Megatron writes zarr arrays in
    import zarr

    target.mkdir(parents=True)
    for entry in sorted(first.iterdir()):
        if entry.name.startswith(OPTIMIZER_PREFIX):
            continue
        if not (entry / ".zarray").is_file():  # common.pt, metadata.json, Transformer Engine's _extra_state objects
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, target / entry.name)
            continue
        total = None
        for folder in folders:
            if not (folder / entry.name / ".zarray").is_file():
                raise UserError(f"{folder} has no weight {entry.name}, which {first} has: the checkpoints differ.")
            values = zarr.open(str(folder / entry.name), mode="r")[...].astype(np.float32)
            total = values if total is None else total + values
        # The source's metadata (shape, chunks, dtype, no compressor) with the averaged values written into it.
        (target / entry.name).mkdir()
        for name in (".zarray", ".zattrs"):
            if (entry / name).is_file():
                shutil.copy2(entry / name, target / entry.name / name)
        array = zarr.open(str(target / entry.name), mode="r+")
        array[...] = (total / len(folders)).astype(array.dtype)


def _require_zarr(folder: Path) -> None:
    metadata = folder / "metadata.json"
    backend = json.loads(metadata.read_text()).get("sharded_backend") if metadata.is_file() else None
    if backend != "zarr":
        raise UserError(f"{folder} is a '{backend}' checkpoint, but averaging reads zarr arrays: train with "
                        "model.dist_ckpt_format zarr (sft.final_weights=average sets it) or use "
                        "sft.final_weights=last.")


def _link_model_weights(source: Path, target: Path) -> None:
    """The checkpoint's files without its optimizer state, as hard links (the same file system: no copy)."""
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name.startswith(OPTIMIZER_PREFIX):
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, copy_function=link_or_copy)
        else:
            link_or_copy(entry, target / entry.name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=FINAL_WEIGHTS)
    parser.add_argument("--checkpoint-dir", required=True, help="exp_manager's <explicit_log_dir>/checkpoints")
    parser.add_argument("--base-model-dir", required=True, help="the unpacked base .nemo: its config and tokenizer")
    parser.add_argument("--output-dir", required=True, help="the unpacked .nemo to write")
    args = parser.parse_args(argv)
    try:
        sources = write_final_weights(args.mode, args.checkpoint_dir, args.base_model_dir, args.output_dir)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.output_dir}: {args.mode} of {', '.join(p.name for p in sources)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
