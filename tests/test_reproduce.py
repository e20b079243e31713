"""The reproduction targets (reproduce/*.yaml): their experiments compose, their paper figures are the paper's, the
Makefile runs each one, and a target's plan is printed before it refuses on a machine that cannot run it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from nemo_recipes import reproduce
from nemo_recipes.errors import UserError
from nemo_recipes.targets import Target, load_target, paper_row, target_names

REPO = Path(__file__).resolve().parents[1]

# The figures the issue lists, with where they come from: the paper (seed summary) and the dataset card's Table A.
PAPER = {
    ("main", "main", "sft"): {"pass@1": 17.10, "maj@64": 27.73},
    ("main", "eval-qwen2.5-math-72b-instruct", "base"): {"pass@1": 11.72, "maj@64": 16.14},
    ("ablation-source", "ablation-source-human-stage1", "sft"): {"pass@1": 5.60, "maj@64": 12.89},
    ("ablation-source", "ablation-source-human-stage2", "sft"): {"pass@1": 5.92, "maj@64": 13.28},
    ("ablation-source", "ablation-source-human-stage3", "sft"): {"pass@1": 3.69, "maj@64": 13.67},
    ("ablation-source", "ablation-source-human-stage4", "sft"): {"pass@1": 5.21, "maj@64": 13.28},
    ("ablation-source", "main", "sft"): {"pass@1": 17.10, "maj@64": 27.73},
    ("ablation-scale", "main", "sft"): {"pass@1": 17.10, "maj@64": 27.73},
    ("ablation-correctness", "main", "sft"): {"pass@1": 17.10, "maj@64": 27.73},
    ("eval-baselines", "eval-qwen2.5-math-72b-instruct", "base"): {"pass@1": 11.72, "maj@64": 16.14},
}
TARGETS = ("main", "ablation-scale", "ablation-source", "ablation-correctness", "eval-baselines")


def test_the_targets_are_the_papers_tables():
    assert sorted(target_names()) == sorted(TARGETS)


@pytest.mark.parametrize("name", TARGETS)
def test_paper_figures_match_the_sources_and_blank_ones_say_why(name):
    target = load_target(name)
    for row in target.rows:
        expected = PAPER.get((name, row.experiment, row.role))
        if expected:
            assert row.paper == expected, row.label
            assert row.source, f"{row.label}: a figure without its source"
        else:
            assert row.paper == {"pass@1": None, "maj@64": None}, f"{row.label}: a figure the issue does not list"
            assert row.note, f"{row.label}: a blank figure needs a note"
    listed = {(e, r) for (t, e, r) in PAPER if t == name}
    assert listed <= {(row.experiment, row.role) for row in target.rows}


@pytest.mark.parametrize("name", TARGETS)
def test_every_run_of_every_target_composes_into_the_run_it_names(name):
    from nemo_recipes.pipeline import stage_graph

    target = load_target(name)
    configs = reproduce.compose_runs(target, ["runs_root=/tmp/nowhere"])
    assert list(configs) == target.experiments
    for experiment, cfg in configs.items():
        assert cfg.experiment_name == experiment and cfg.run_dir == f"/tmp/nowhere/{experiment}"
        stages = [stage.name for stage in stage_graph(cfg)]
        roles = {row.role for row in target.rows if row.experiment == experiment}
        assert {f"grade_{role}" for role in roles} <= set(stages)
        if cfg.selection.strategy == "released":  # the dataset's own solutions: nothing to sample from a teacher
            assert "sample_teacher" not in stages and cfg.selection.num_examples == 50
        if "sft" not in cfg.evaluate:
            assert stages == ["prepare", "sample_base", "grade_base", "metrics", "traces", "report"]
        assert cfg.benchmark.name == "comp-math-24-25" and cfg.eval_sampling.n == 64


# What each ablation may change relative to the main run (plus its name, folder and report title); everything else --
# the teacher sampling its reuse of main's stages depends on, the SFT recipe, the evaluation -- must be main's.
ABLATED = {
    "ablation-scale-7b": {"student"},
    "ablation-scale-14b": {"student"},
    "ablation-correctness-incorrect": {"selection"},
    "ablation-non-reasoning": {"teacher", "teacher_sampling"},
    "ablation-source-qwq-released": {"selection"},
    **{f"ablation-source-human-stage{stage}": {"selection"} for stage in range(1, 5)},
}


def test_each_ablation_changes_only_what_it_ablates():
    from omegaconf import OmegaConf

    configs = {}
    for name in ("ablation-scale", "ablation-source", "ablation-correctness"):
        configs.update(reproduce.compose_runs(load_target(name), []))
    main = OmegaConf.to_container(configs.pop("main"), resolve=True)
    assert set(configs) == set(ABLATED)
    for experiment, cfg in configs.items():
        values = OmegaConf.to_container(cfg, resolve=True)
        changed = {key for key in main if values[key] != main[key]} - {"experiment_name", "run_dir", "report"}
        assert changed == ABLATED[experiment], experiment
    assert configs["ablation-scale-7b"].student.path == "Qwen/Qwen2.5-7B"
    assert configs["ablation-scale-14b"].student.path == "Qwen/Qwen2.5-14B"
    assert configs["ablation-correctness-incorrect"].selection.require == "incorrect"
    assert configs["ablation-non-reasoning"].teacher.path == "Qwen/Qwen2.5-72B-Instruct"
    for stage in range(1, 5):
        selection = configs[f"ablation-source-human-stage{stage}"].selection
        assert (selection.strategy, selection.solution_type) == ("released", f"human_stage{stage}")
    assert configs["ablation-source-qwq-released"].selection.solution_type == "qwq_32b_preview"


def test_the_makefile_runs_each_target_with_its_name():
    for name in TARGETS:
        target = load_target(name)
        dry = subprocess.run(["make", "-n", target.make, "ARGS=dry_run=true", "NEMO_RECIPES_IMAGE=1"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
        assert f"-m nemo_recipes.reproduce {name} dry_run=true" in dry, dry
    report = subprocess.run(["make", "-n", "report", "NEMO_RECIPES_IMAGE=1"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout
    assert "-m nemo_recipes.reproduce --report" in report
    # Inside the image the tests still build their own .venv: never pip-install into the image's (NGC) python.
    tests = subprocess.run(["make", "-n", "-B", "test", "NEMO_RECIPES_IMAGE=1"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout
    assert ".venv/bin/python -m pip install" in tests and "python3 -m pip" not in tests


def test_dry_run_prints_every_runs_plan_with_the_nemo_aligner_and_vllm_commands(tmp_path, capsys):
    assert reproduce.main(["ablation-correctness", "dry_run=true", f"runs_root={tmp_path}"]) == 0
    plan = capsys.readouterr().out
    assert plan.count("experiment main: run folder") == 1
    assert plan.count("experiment ablation-correctness-incorrect: run folder") == 1
    assert "/opt/NeMo-Aligner/examples/nlp/gpt/train_gpt_sft.py" in plan
    assert "convert_qwen2_hf_to_nemo.py" in plan and "convert_qwen2_nemo_to_hf.py" in plan
    assert "vllm.LLM(model='Qwen/QwQ-32B-Preview'" in plan
    assert "/opt/vllm-venv/bin/python -m nemo_recipes.stages.sample_replica experiment=ablation-correctness-incorrect" in plan
    assert re.search(r"target ablation-correctness, still to run: ~[\d,.]+ GPU-hours \(up to 8 GPUs at once\), "
                     r"~[\d.]+ TB of disk", plan)
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_a_target_refuses_before_any_run_starts_when_the_machine_lacks_gpus_or_models(tmp_path, capsys, monkeypatch):
    from nemo_recipes import resources

    monkeypatch.setattr(resources, "visible_gpu_memory_gb", lambda: [])
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    code = reproduce.main(["eval-baselines", f"runs_root={tmp_path}/runs"])
    out, err = capsys.readouterr()
    assert code == 3
    assert "experiment eval-qwen2.5-math-72b-instruct: run folder" in out  # the plan came first
    assert "cannot start: the plan needs 8 GPUs on this node (cluster.gpus_per_node=8) but nvidia-smi lists 0." in err
    assert ("cannot start: Qwen/Qwen2.5-Math-72B-Instruct (student) is not in the Hugging Face cache "
            f"{tmp_path / 'hub'}: download it first with `huggingface-cli download Qwen/Qwen2.5-Math-72B-Instruct`") in err
    assert not (tmp_path / "runs").exists()


def test_per_run_keys_cannot_be_overridden_for_a_whole_target():
    with pytest.raises(UserError, match="would give every run of target main the same run_dir"):
        reproduce.compose_runs(load_target("main"), ["run_dir=/tmp/x"])


def test_a_bad_target_file_is_one_sentence_naming_the_file_and_row(tmp_path, monkeypatch):
    from nemo_recipes import targets

    (tmp_path / "reproduce").mkdir()
    monkeypatch.setattr(targets, "REPRODUCE_DIR", tmp_path / "reproduce")
    bad = tmp_path / "reproduce" / "bad.yaml"
    bad.write_text("name: bad\ntitle: t\nmake: bad\nrows:\n"
                   "  - {label: a, experiment: main, role: sft, paper: {pass@1: 1.0, maj@64: 2.0}}\n"
                   "  - {label: b, experiment: main, role: sft, paper: {pass@1: null, maj@64: 2.0}}\n")
    with pytest.raises(UserError, match=re.escape(f"{bad}: rows[1]: the paper's pass@1 is blank; add a note")):
        load_target("bad")
    bad.write_text("name: bad\ntitle: t\nmake: bad\nrows:\n"
                   "  - {label: a, experiment: mian, role: sft, paper: {pass@1: 1.0}}\n")
    with pytest.raises(UserError, match=re.escape(f"{bad}: rows[0].experiment: there is no conf/experiment/mian.yaml")):
        load_target("bad")


def test_a_single_runs_report_finds_its_paper_figures_in_the_main_table_first():
    row = paper_row("main", "sft")
    assert row.paper == {"pass@1": 17.10, "maj@64": 27.73} and "seed summary" in row.source
    assert paper_row("demo", "sft") is None
    assert isinstance(load_target("main"), Target)


def test_a_targets_plan_counts_a_stage_its_runs_share_once(tmp_path, capsys):
    assert reproduce.main(["ablation-correctness", "dry_run=true", f"runs_root={tmp_path}"]) == 0
    plan = capsys.readouterr().out
    incorrect = plan.split("experiment ablation-correctness-incorrect: run folder")[1]
    for stage in ("prepare", "sample_teacher", "grade_teacher", "sample_base", "grade_base"):
        assert re.search(rf"{stage} +\[reused from run main\]", incorrect), stage
    for stage in ("select", "pack", "sft", "sample_sft"):
        assert re.search(rf"{stage} +\[pending\]", incorrect), stage
    # The incorrect run costs only its own SFT (154.2) and SFT evaluation (36.4); the target adds main's 269.6.
    runs = [float(hours.replace(",", "")) for hours in re.findall(r"\nstill to run: ~([\d,.]+) GPU-hours", plan)]
    assert runs == [269.6, 190.6]
    assert "target ablation-correctness, still to run: ~460.2 GPU-hours" in plan


def test_an_edited_paper_figure_makes_the_runs_report_stage_render_again(tmp_path, monkeypatch):
    import shutil

    from nemo_recipes import targets
    from nemo_recipes.config import compose_config
    from nemo_recipes.pipeline import config_digest, stage_graph

    def report_hash():
        cfg = compose_config(["experiment=main"])
        return config_digest(cfg, next(stage for stage in stage_graph(cfg) if stage.name == "report"))

    before = report_hash()
    copy = tmp_path / "reproduce"
    shutil.copytree(targets.REPRODUCE_DIR, copy)
    monkeypatch.setattr(targets, "REPRODUCE_DIR", copy)
    assert report_hash() == before  # same figures, same hash
    main = copy / "main.yaml"
    main.write_text(main.read_text().replace("{pass@1: 17.10, maj@64: 27.73}", "{pass@1: 17.20, maj@64: 27.73}"))
    assert report_hash() != before


def test_stage_lists_given_to_a_target_apply_to_the_runs_that_have_those_stages():
    target = load_target("main")
    configs = reproduce.compose_runs(target, ["force=[sft,sample_base]", "stages=[sft]"])
    assert list(configs["main"].force) == ["sft", "sample_base"] and list(configs["main"].stages) == ["sft"]
    baseline = configs["eval-qwen2.5-math-72b-instruct"]  # evaluation only: no sft stage
    assert list(baseline.force) == ["sample_base"] and list(baseline.stages) == []
    with pytest.raises(UserError, match="force: unknown stage 'sftt'; the runs of target main have grade_base"):
        reproduce.compose_runs(target, ["force=[sftt]"])
