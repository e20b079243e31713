"""The toy demo in its small setting, run once per session, for the tests that check it or compare with it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from small_demo import run_small


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The small demo run locally from scratch: its run folder and how the command ended."""
    run_dir = tmp_path_factory.mktemp("small-demo") / "demo"
    return run_dir, run_small(run_dir)
