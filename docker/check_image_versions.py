#!/usr/bin/env python3
"""Check that the base image ships the NeMo stack our NeMo-compat tests were run against.

The Dockerfile runs this right after FROM, before anything slow, so a wrong base image fails the build in seconds:

    python3 docker/check_image_versions.py --requirements requirements/nemo-cpu.txt

It compares the installed nemo_toolkit, megatron-core and nemo-aligner with the `name==version` pins in
requirements/nemo-cpu.txt (the environment tests/nemo_compat runs in: the NGC 25.02 image's NeMo 2.2.0 stack),
checks that the three scripts the nemo_aligner backend launches are where conf/cluster/local.yaml expects them, and
asks the image's GPTSFTPackedDataset where it reads a packed loss mask (NeMo 2.2 reads it one position earlier than
2.1; our packs are written for one of the two, sft.loss_mask_alignment). Each problem is one sentence; the exit
status is 1 if there is any. Standard library and the image's NeMo only: it runs on the image's own python3 before
our package is installed.
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

# Where our packs put the loss mask by default (nemo_recipes.packing.DEFAULT_LOSS_MASK_ALIGNMENT; a test keeps the
# two equal): "label" = GPTSFTPackedDataset weights the labels of [s, e) with mask[s:e-1], as NeMo 2.2 does.
EXPECTED_LOSS_MASK_ALIGNMENT = "label"

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


def loss_mask_alignment() -> str:
    """Where the installed NeMo's GPTSFTPackedDataset reads a packed loss mask: "label" (mask[s:e-1] beside the
    labels input_ids[s+1:e], NeMo 2.2), "token" (mask[s+1:e], NeMo 2.1), or a sentence saying why neither."""
    from types import SimpleNamespace

    positions = list(range(8))  # a mask whose values are its positions shows which positions are read
    example = {"input_ids": [0] * 8, "loss_mask": positions, "seq_boundaries": [0, 8]}
    try:
        from nemo.collections.nlp.data.language_modeling.megatron.gpt_sft_dataset import GPTSFTPackedDataset

        read = [int(x) for x in GPTSFTPackedDataset._build_loss_mask(SimpleNamespace(answer_only_loss=True), example)]
    except Exception as error:  # noqa: BLE001 -- any failure is the answer: the mask cannot be checked
        return f"unknown ({type(error).__name__} asking GPTSFTPackedDataset: {error})"
    return {tuple(positions[:-1]): "label", tuple(positions[1:]): "token"}.get(
        tuple(read), f"positions {read} of an 8-token sequence")


def check(pins: dict[str, str], installed: dict[str, str | None], scripts: dict[str, str | Path],
          requirements_label: str = "requirements/nemo-cpu.txt", alignment: str = EXPECTED_LOSS_MASK_ALIGNMENT
          ) -> list[str]:
    """One sentence per problem: a package missing from the pins, absent, at another version, a missing script, or
    a packed loss mask read where our packs do not put it."""
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
    if alignment != EXPECTED_LOSS_MASK_ALIGNMENT:
        problems.append(f"the base image has a NeMo that reads packed loss masks as '{alignment}', but our packs "
                        f"put them as '{EXPECTED_LOSS_MASK_ALIGNMENT}' (mask[s:e-1] beside the labels, NeMo 2.2), so "
                        f"every answer would train shifted by one token: build FROM an image with NeMo 2.2.")
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
    problems = check(pins, installed, scripts, requirements_label=label, alignment=loss_mask_alignment())
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    found = ", ".join(f"{package} {installed[package]}" for package in PACKAGES)
    print(f"base image OK: {found} as {label} pins; the SFT script and the Qwen2 converters are present; packed "
          f"loss masks are read as '{EXPECTED_LOSS_MASK_ALIGNMENT}'.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
