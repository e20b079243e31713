"""The toy demo's numbers are exactly the recorded ones (demo_record.json), and the README shows that record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from demo_record import LOCK, README, RECORD, flat, numbers, readme_block, replace_readme_block
from conftest import SMALL
from test_locks import pins


def _record() -> dict:
    return json.loads(RECORD.read_text())


def test_record_is_of_the_small_setting_the_tests_run():
    assert _record()["small_demo"]["overrides"] == SMALL, "SMALL in tests/conftest.py changed: run `make record-demo`"


def test_readme_shows_the_recorded_demo_numbers():
    readme = README.read_text()
    assert replace_readme_block(readme, readme_block(_record())) == readme, (
        "README.md's expected numbers are not tests/demo_record.json's: run `make record-demo`")


@pytest.mark.slow
def test_small_demo_gives_exactly_the_recorded_numbers(small_demo):
    run_dir, result = small_demo
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = {key: value for key, value in _record()["small_demo"].items() if key != "overrides"}
    got = numbers(run_dir)
    assert got == recorded, _explain(recorded, got)


def _explain(recorded: dict, got: dict) -> str:
    from nemo_recipes.pipeline import library_versions
    from nemo_recipes.toy.build import ToyRecipe

    record = _record()
    lines = ["The small demo's numbers are not the recorded ones (tests/demo_record.json):"]
    recorded, got = flat(recorded), flat(got)
    lines += [f"  {key}: recorded {recorded.get(key)}, now {got.get(key)}"
              for key in sorted(set(recorded) | set(got)) if recorded.get(key) != got.get(key)]
    now = library_versions()
    moved = [f"{name} {version} -> {now.get(name)}" for name, version in record["versions"].items()
             if now.get(name) != version]
    lines.append("  library versions since the record: " + (", ".join(moved) or "none moved"))
    if ToyRecipe().fingerprint() != record["toy_models"]:
        lines.append(f"  toy models: {ToyRecipe().fingerprint()}, recorded {record['toy_models']} (their sources "
                     "or library versions changed)")
    unlocked = _differences_from_the_lock()
    if unlocked:
        lines.append(f"  this environment is not {LOCK}: " + ", ".join(unlocked) + " (`make install` makes it so)")
    lines.append("If a dependency moved on purpose: run `make lock`, then `make record-demo`, and commit the locks, "
                 "the record and README.md together. Otherwise this change moved the demo's results.")
    return "\n".join(lines)


def _differences_from_the_lock() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    differences = []
    for name, (pinned, _) in pins(Path(LOCK).stem).items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "not installed"
        if installed != pinned:
            differences.append(f"{name} {installed} (lock {pinned})")
    return differences
