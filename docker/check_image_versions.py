#!/usr/bin/env python3
"""Check that the base image ships the NeMo stack our NeMo-compat tests were run against.

The Dockerfile runs this right after FROM, before anything slow, so a wrong base image fails the build in seconds:

    python3 docker/check_image_versions.py --requirements requirements/nemo-cpu.txt

It compares the installed nemo_toolkit, megatron-core and nemo-aligner with the `name==version` pins in
requirements/nemo-cpu.txt (the environment tests/nemo_compat runs in, taken from NeMo-Aligner v0.7.0's Dockerfile),
and checks that the three scripts the nemo_aligner backend launches are where conf/cluster/local.yaml expects them.
Each problem is one sentence; the exit status is 1 if there is any. Standard library only: it runs on the image's
own python3 before our package is installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
from pathlib import Path

# The distributions whose versions our YAML, packed data and launch code were checked against.
PACKAGES = ("nemo_toolkit", "megatron-core", "nemo-aligner")

# The scripts the nemo_aligner backend runs inside the container (conf/cluster/local.yaml: nemo_aligner_dir, nemo_dir).
SFT_SCRIPT = "/opt/NeMo-Aligner/examples/nlp/gpt/train_gpt_sft.py"
QWEN2_CONVERTER = "/opt/NeMo/scripts/checkpoint_converters/convert_qwen2_hf_to_nemo.py"
QWEN2_EXPORTER = "/opt/NeMo/scripts/checkpoint_converters/convert_qwen2_nemo_to_hf.py"

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REQUIREMENTS = REPO_ROOT / "requirements" / "nemo-cpu.txt"

_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==\s*([^\s;,]+)")


def normalize(name: str) -> str:
    """PEP 503 name: nemo_toolkit, nemo-toolkit and Nemo.Toolkit are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(text: str, packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """The `name==version` pins for `packages` in a requirements file; comments and other lines are ignored."""
    wanted = {normalize(p): p for p in packages}
    pins = {}
    for line in text.splitlines():
        match = _PIN.fullmatch(line.split("#", 1)[0].strip())
        if match and normalize(match.group(1)) in wanted:
            pins[wanted[normalize(match.group(1))]] = match.group(2)
    return pins


def installed_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """The installed version of each package (None when absent), trying the name with `-` and with `_`."""
    versions: dict[str, str | None] = {}
    for package in packages:
        versions[package] = None
        for candidate in (package, package.replace("-", "_"), package.replace("_", "-")):
            try:
                versions[package] = importlib.metadata.version(candidate)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def check(pins: dict[str, str], installed: dict[str, str | None], scripts: dict[str, str | Path],
          requirements_label: str = "requirements/nemo-cpu.txt") -> list[str]:
    """One sentence per problem: a package missing from the pins, absent, at another version, or a missing script."""
    where = f"{requirements_label} (the NeMo-compat test environment)"
    problems = []
    for package in PACKAGES:
        want = pins.get(package)
        have = installed.get(package)
        if want is None:
            problems.append(f"{where} has no `{package}==<version>` pin, so the base image cannot be checked "
                            f"against it: pin {package} there.")
        elif have is None:
            problems.append(f"the base image has no {package} installed but {where} pins {want}: "
                            f"build FROM an image that ships it.")
        elif have.split("+", 1)[0] != want:
            problems.append(f"the base image has {package} {have} but {where} pins {want}: "
                            f"build FROM an image that ships it, or change both together.")
    for role, path in scripts.items():
        if not Path(path).is_file():
            problems.append(f"the base image has no {path} ({role}): build FROM an NGC NeMo image that ships "
                            f"NeMo under /opt/NeMo and NeMo-Aligner under /opt/NeMo-Aligner, or pass its path.")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requirements", default=str(DEFAULT_REQUIREMENTS),
                        help="pip requirements file holding the pins (default: %(default)s)")
    parser.add_argument("--sft-script", default=SFT_SCRIPT, help="NeMo-Aligner's SFT entry point")
    parser.add_argument("--qwen2-converter", default=QWEN2_CONVERTER, help="NeMo's Qwen2 HF->NeMo converter")
    parser.add_argument("--qwen2-exporter", default=QWEN2_EXPORTER, help="NeMo's Qwen2 NeMo->HF converter")
    args = parser.parse_args(argv)

    requirements = Path(args.requirements)
    if not requirements.is_file():
        print(f"{requirements} does not exist: copy requirements/nemo-cpu.txt into the image before this check.",
              file=sys.stderr)
        return 1
    pins = read_pins(requirements.read_text())
    installed = installed_versions()
    scripts = {"NeMo-Aligner's SFT entry point": args.sft_script, "NeMo's Qwen2 HF->NeMo converter": args.qwen2_converter,
               "NeMo's Qwen2 NeMo->HF converter": args.qwen2_exporter}
    label = "requirements/nemo-cpu.txt" if requirements.resolve() == DEFAULT_REQUIREMENTS else str(requirements)
    problems = check(pins, installed, scripts, requirements_label=label)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    found = ", ".join(f"{package} {installed[package]}" for package in PACKAGES)
    print(f"base image OK: {found} as {label} pins; the SFT script and the Qwen2 converter are present.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
