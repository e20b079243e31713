"""Atomic training checkpoints of the reference trainer: `checkpoints/step_N/` = `model/` (HF safetensors) +
`training_state.pt` (optimizer, scheduler step, RNG, sampler position, the settings it was trained with).

A checkpoint is written under a temporary name and renamed into place, so a `step_N` directory is always complete
and a kill mid-write leaves only a temporary directory, removed on the next start.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from nemo_recipes.errors import UserError
from nemo_recipes.io import make_shareable

STEP_DIR = re.compile(r"step_(\d+)")
TRAINING_STATE = "training_state.pt"
# sft.final_weights: the last step's weights, or the mean of every saved checkpoint's -- what NeMo-Skills' `ns train`
# did by default (average_steps "all": every checkpoint but the -last copy of the final one).
FINAL_WEIGHTS = ("average", "last")


def check_final_weights(final_weights, key: str = "sft.final_weights") -> str:
    if final_weights not in FINAL_WEIGHTS:
        raise UserError(f"{key} is '{final_weights}'; use one of {', '.join(FINAL_WEIGHTS)}.")
    return final_weights


def latest_checkpoint(root) -> Path | None:
    """The complete checkpoint with the highest step under `root`, or None."""
    steps = saved_checkpoints(root)
    return steps[-1][1] if steps else None


def saved_checkpoints(root) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint under `root`, in step order."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.fullmatch(p.name)))


def average_checkpoint_weights(root, steps=None) -> tuple[dict, list[int]]:
    """The element-wise mean of the model weights of every checkpoint under `root` (of those `steps` only, when
    given), summed in fp32 one checkpoint at a time and returned in each tensor's own dtype; and the steps averaged."""
    from safetensors.torch import load_file

    checkpoints = [(step, folder) for step, folder in saved_checkpoints(root) if steps is None or step in steps]
    if not checkpoints:
        raise UserError(f"{root} holds no checkpoint to average; set save_interval or use final_weights last.")
    sums, dtypes = {}, {}
    for _, folder in checkpoints:
        files = sorted((folder / "model").glob("*.safetensors"))
        if not files:
            raise UserError(f"{folder / 'model'} holds no .safetensors weights to average.")
        for file in files:
            for name, tensor in load_file(file).items():
                dtypes.setdefault(name, tensor.dtype)
                sums[name] = sums[name] + tensor.float() if name in sums else tensor.float()
    count = len(checkpoints)
    return {name: (total / count).to(dtypes[name]) for name, total in sums.items()}, [s for s, _ in checkpoints]


def remove_partial_checkpoints(root) -> None:
    root = Path(root)
    if root.is_dir():
        for path in root.glob(".step_*.tmp*"):
            shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(root, step: int, model, training_state: dict) -> Path:
    import torch

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step_{step}.tmp"))
    try:
        model.save_pretrained(tmp / "model")
        torch.save(training_state, tmp / TRAINING_STATE)
        if final.exists():  # a rerun of the same step after a crash between rename and the next step
            shutil.rmtree(final)
        make_shareable(tmp, directory=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_training_state(checkpoint: Path) -> dict:
    import torch

    return torch.load(Path(checkpoint) / TRAINING_STATE, weights_only=True)


def publish_directory(tmp: Path, final: Path) -> None:
    """Move a fully written directory into place, replacing an older one."""
    make_shareable(tmp, directory=True)
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
