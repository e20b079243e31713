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

from nemo_recipes.io import make_shareable

STEP_DIR = re.compile(r"step_(\d+)")
TRAINING_STATE = "training_state.pt"


def latest_checkpoint(root) -> Path | None:
    """The complete checkpoint with the highest step under `root`, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    steps = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.fullmatch(p.name))]
    return max(steps)[1] if steps else None


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
