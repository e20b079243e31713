"""The toy demo's small setting: same stages and code paths as `make demo`, fewer samples and steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "teacher_sampling.n=4", "teacher_sampling.chunk_size=40", "eval_sampling.n=2", "benchmark.num_problems=16",
    "sft.max_steps=8", "sft.save_interval=4", "metrics.bootstrap=50", "progress=false",
]


def run_small(run_dir: Path, *overrides: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nemo_recipes", f"run_dir={run_dir}", *SMALL, *overrides],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)
