"""Every YAML in conf/ composes, the CLI's fast paths stay fast (no torch import), and bad config is one sentence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nemo_recipes.cli import main
from nemo_recipes.config import CONF_DIR, compose_config, config_options
from nemo_recipes.errors import UserError

GROUP_KEYS = {  # config group -> the keys it is mounted at in config.yaml
    "problems": ["problems"], "benchmark": ["benchmark"], "model": ["teacher", "student"],
    "sampling": ["teacher_sampling", "eval_sampling"], "selection": ["selection"], "sft": ["sft"],
    "cluster": ["cluster"], "experiment": ["experiment"],
}


def _all_overrides():
    for group, options in config_options().items():
        for option in options:
            for key in GROUP_KEYS[group]:
                mount = key if key == group else f"{group}@{key}"
                yield pytest.param(f"{mount}={option}" if group != "experiment" else f"experiment={option}",
                                   id=f"{key}={option}")


def test_every_group_is_mounted():
    assert set(config_options()) == set(GROUP_KEYS)


@pytest.mark.parametrize("override", list(_all_overrides()))
def test_every_config_composes_and_resolves(override):
    from omegaconf import OmegaConf

    for experiment in config_options()["experiment"]:
        cfg = compose_config([f"experiment={experiment}", override] if "experiment=" not in override else [override])
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
        assert cfg.run_dir.startswith("runs/")


def test_every_config_file_starts_with_a_comment_showing_its_command():
    for path in CONF_DIR.rglob("*.yaml"):
        head = path.read_text().splitlines()[:4]
        assert any(line.startswith("#") and ("nemo_recipes" in line or "make " in line) for line in head), path


def test_demo_is_the_embedded_default_and_main_keeps_the_paper_values():
    demo = compose_config([])
    assert demo.experiment_name == "demo" and demo.student.source == "toy" and demo.sft.backend == "torch_reference"
    main_cfg = compose_config(["experiment=main"])
    assert main_cfg.student.path == "Qwen/Qwen2.5-32B" and main_cfg.teacher.path == "Qwen/QwQ-32B-Preview"
    assert (main_cfg.sft.lr, main_cfg.sft.global_batch_size, main_cfg.sft.max_steps) == (1e-5, 1024, 50)
    assert main_cfg.selection.num_examples == 20 and main_cfg.teacher_sampling.n == 512
    assert main_cfg.eval_sampling.n == 64 and main_cfg.eval_sampling.prompt == "generic_math"
    assert main_cfg.teacher_sampling.prompt == "qwq"


def test_unknown_group_option_is_one_sentence(capsys):
    with pytest.raises(UserError, match=r"unknown option 'gpt5' for config group 'model' .* choose one of: qwen2.5-14b"):
        compose_config(["model@student=gpt5"])
    assert main(["sft=nonesuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown option 'nonesuch' for config group 'sft'") and "\n" not in err


def test_unknown_key_is_one_sentence():
    with pytest.raises(UserError, match=r"there is no key 'sft.no_such_key' to override; .* '\+sft.no_such_key=...'"):
        compose_config(["sft.no_such_key=1"])


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])


def test_help_and_dry_run_do_not_import_torch(tmp_path):
    code = (
        "import sys, io, contextlib\n"
        "from nemo_recipes.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    assert main(['--help']) == 0\n"
        f"    assert main(['experiment=main', 'dry_run=true', 'run_dir={tmp_path}/main']) == 0\n"
        f"    assert main(['dry_run=true', 'run_dir={tmp_path}/demo']) == 0\n"
        "bad = [m for m in ('torch', 'transformers', 'vllm', 'nemo', 'math_verify') if m in sys.modules]\n"
        "print(repr(bad))\n"
        "print(out.getvalue())\n"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    first, _, plan = result.stdout.partition("\n")
    assert first == "[]"
    assert "train_gpt_sft.py" in plan and "convert_qwen2_hf_to_nemo.py" in plan
    assert "512 = 25600 samples, ~153.60M tokens" in plan  # 50 seed problems x 512 teacher samples x 6000 tokens
    # 153.6M tokens / 2000 tokens/s per 2-GPU replica = 42.7 GPU-hours; the 4 replicas fill the node's 8 GPUs
    assert "cost: ~42.7 GPU-hours on 8 GPU(s), ~1.5 GB disk (153.6M tokens at 2000 tokens/s per 2-GPU replica" in plan
    assert "vllm.LLM(model='Qwen/QwQ-32B-Preview', tensor_parallel_size=2, enable_prefix_caching=True" in plan
    assert "-m nemo_recipes.stages.sample_replica experiment=main" in plan
    assert not (tmp_path / "main").exists()  # a dry run writes nothing


@pytest.mark.parametrize("override, sentence", [
    ("teacher_sampling.n=abc", "teacher_sampling.n is 'abc'; it must be a whole number of at least 1."),
    ("eval_sampling.n=0", "eval_sampling.n is 0; it must be a whole number of at least 1."),
    ("sft.save_interval=0", "sft.save_interval is 0; it must be a whole number of at least 1."),
    ("selection.num_examples=2.5", "selection.num_examples is 2.5; it must be a whole number of at least 1."),
    ("eval_sampling.top_p=1.5", "eval_sampling.top_p is 1.5; it must be a number from 0 to 1."),
    ("cluster.assumed_mfu=0", "cluster.assumed_mfu is 0; it must be a number from 0.01 to 1."),
    ("sft.lr=true", "sft.lr is True; it must be a number of at least 0."),
    ("student.parallel.cp=0", "student.parallel.cp is 0; it must be a whole number of at least 1."),
    ("sft.lr=${oc.env:NEMO_RECIPES_UNSET_VARIABLE}", "sft.lr cannot be resolved: KeyError raised while resolving "
     "interpolation: \"Environment variable 'NEMO_RECIPES_UNSET_VARIABLE' not found\"."),
])
def test_a_setting_of_the_wrong_kind_or_range_is_refused_when_composed(override, sentence):
    with pytest.raises(UserError) as error:
        compose_config(["experiment=main", override])
    assert str(error.value) == sentence


def test_a_number_from_an_environment_variable_is_taken(monkeypatch):
    monkeypatch.setenv("NEMO_RECIPES_TEST_GPUS", "4")
    cfg = compose_config(["experiment=main", "cluster.gpus_per_node=${oc.env:NEMO_RECIPES_TEST_GPUS}"])
    assert int(cfg.cluster.gpus_per_node) == 4
