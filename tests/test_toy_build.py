"""The toy build: the same models from the same recipe and library versions, on any machine and under any load."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# A short recipe (seconds, not minutes) built in a fresh process that starts on `threads` torch threads, as a
# machine with that many cores or OMP_NUM_THREADS would; it prints what a cache user sees of the result.
BUILD = """
import hashlib, json, sys
import torch
from nemo_recipes.toy.build import ToyRecipe, ensure_toy_models
torch.set_num_threads(int(sys.argv[2]))
recipe = ToyRecipe(base_steps=60, teacher_steps=30)
paths = ensure_toy_models(sys.argv[1], recipe, progress=False)
print(json.dumps({"fingerprint": recipe.fingerprint(), "threads_after": torch.get_num_threads(),
                  **{role: hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
                     for role, path in paths.items()}}))
"""


@pytest.mark.slow
def test_build_gives_the_same_fingerprint_and_weights_whatever_the_thread_count(tmp_path):
    built = {}
    for threads in (1, 5):  # 5 threads split torch's reductions otherwise than 1, 2 or 4 do
        result = subprocess.run([sys.executable, "-c", BUILD, str(tmp_path / f"cache-{threads}"), str(threads)],
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        built[threads] = json.loads(result.stdout.splitlines()[-1])
    assert built[1]["threads_after"] == 1 and built[5]["threads_after"] == 5  # the caller's threads given back
    for key in ("fingerprint", "teacher", "student"):
        assert built[1][key] == built[5][key], key


def test_fingerprint_names_the_library_versions(monkeypatch):
    from nemo_recipes.toy import build

    recipe = build.ToyRecipe()
    before = recipe.fingerprint()
    versions = build._library_versions()
    assert set(versions) == {"torch", "transformers", "tokenizers"}
    monkeypatch.setattr(build, "_library_versions", lambda: {**versions, "transformers": "0.0.1"})
    assert recipe.fingerprint() != before
