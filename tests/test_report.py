"""A target's report renders from fixture results: ours | paper | delta | 95% CI per cell, CSV, figures, provenance."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from nemo_recipes import reproduce
from nemo_recipes.errors import UserError
from nemo_recipes.metrics import compute_metrics
from nemo_recipes.report.render import FIGURES, SECTIONS
from nemo_recipes.targets import load_target

NUM_PROBLEMS, K = 12, 64


def _graded(correct_per_problem: list[int]) -> list[dict]:
    """64 samples per problem; problem i has correct_per_problem[i] correct ones, all answering the same wrong '0'.
    The strict judge refuses each problem's first correct sample."""
    records = []
    for i, num_correct in enumerate(correct_per_problem):
        for s in range(K):
            ok = s < num_correct
            records.append({"id": f"p{i}", "subset": "aime24" if i < 4 else "hmmt-24-25", "sample_idx": s,
                            "correct": ok, "predicted_answer": str(i) if ok else "0",
                            "correct_nemo_skills": ok, "correct_strict": ok and s > 0,
                            "num_generated_tokens": 3000 + 10 * s, "finish_reason": "stop"})
    return records


def _write_run(cfg, roles: dict[str, list[int]]) -> dict:
    """A run folder whose every stage is complete under `cfg`, as the engine leaves it: manifests with the config
    hashes and input fingerprints the engine computes, and the files the report reads."""
    from nemo_recipes.pipeline import _inputs_digest, config_digest, config_values, stage_graph

    run_dir = Path(cfg.run_dir)
    versions = {"python": "3.11", "vllm": "0.32.0", "nemo_aligner": "0.7.0"}
    summaries = {"select": {"mean_tokens": 3012, "eligible_problems": 41},
                 "sft": {"backend": "nemo_aligner", "final_loss": 0.4321}}
    for number, stage in enumerate(s for s in stage_graph(cfg) if s.name != "report"):
        (run_dir / stage.name).mkdir(parents=True, exist_ok=True)
        manifest = {"stage": stage.name, "status": "complete", "config_hash": config_digest(cfg, stage),
                    "inputs_hash": _inputs_digest(stage, run_dir), "config": config_values(cfg, stage),
                    "fingerprint": f"{number:02d}" * 32, "ended": "2026-11-29T00:00:00+00:00",
                    "argv": ["python", "-m", "nemo_recipes", f"experiment={cfg.experiment_name}"],
                    "versions": versions, "summary": summaries.get(stage.name, {})}
        (run_dir / stage.name / "manifest.json").write_text(json.dumps(manifest))
    metrics = {role: {"model": f"model-{role}", "metrics": compute_metrics(_graded(counts), bootstrap=200, seed=0)}
               for role, counts in roles.items()}
    (run_dir / "metrics" / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "metrics" / "lengths.json").write_text(json.dumps(
        {role: {"correct": [3000, 3100], "incorrect": [5000]} for role in roles}))
    if (run_dir / "select").exists():
        (run_dir / "select" / "sft.jsonl").write_text("".join(
            json.dumps({"input": "q", "output": "a", "num_tokens": 2900 + i, "source": "QwQ-32B-Preview"}) + "\n"
            for i in range(20)))
    return metrics


@pytest.fixture
def rendered(tmp_path):
    target = load_target("main")
    configs = reproduce.compose_runs(target, [f"runs_root={tmp_path}", "metrics.seed=7", "metrics.tie_rule=sorted"])
    sft_counts = [0, 8, 16, 24, 32, 40, 48, 56, 64, 0, 8, 16]
    metrics = _write_run(configs["main"], {"base": [0] * 12, "sft": sft_counts})
    path = reproduce.render_target_report(target, configs)  # eval-qwen2.5-math-72b-instruct has not run
    return path, metrics, sft_counts


def test_report_has_the_shared_sections_figures_and_csv(rendered):
    path, _, _ = rendered
    text = path.read_text()
    assert [line[3:] for line in text.splitlines() if line.startswith("## ")] == list(SECTIONS)
    for figure in FIGURES:
        assert (path.parent / figure).stat().st_size > 5000, figure
        assert f"]({figure})" in text


def test_each_cell_shows_ours_paper_delta_and_ci(rendered):
    path, metrics, sft_counts = rendered
    overall = metrics["sft"]["metrics"]["overall"]
    pass1 = 100 * sum(sft_counts) / (NUM_PROBLEMS * K)
    assert overall["pass@1"] == pytest.approx(pass1)
    # the wrong '0' wins the vote unless at least half are correct: the fixture's metrics break a 32-32 tie by
    # first-seen answer, the correct one
    maj = 100 * sum(count >= K // 2 for count in sft_counts) / NUM_PROBLEMS
    assert overall["maj@64"] == pytest.approx(maj)
    low, high = overall["pass@1_ci"]
    maj_low, maj_high = overall["maj@64_ci"]
    row = (f"| Qwen2.5-32B + SFT on 20 QwQ-32B-Preview traces [1] | `main` (sft) | 64 | {pass1:.2f} | 17.10 | "
           f"{pass1 - 17.10:+.2f} | [{low:.2f}, {high:.2f}] | {maj:.2f} | 27.73 | {maj - 27.73:+.2f} | "
           f"[{maj_low:.2f}, {maj_high:.2f}] |")
    text = path.read_text()
    assert row in text
    # The baseline has not run: its paper figures are still shown, with their note; the untuned base has no figure.
    assert "| Qwen2.5-Math-72B-Instruct [2] | `eval-qwen2.5-math-72b-instruct` (base) |  | not run | 11.72 |  |  | " \
           "not run | 16.14 |  |  |" in text
    assert "| Qwen2.5-32B base (no SFT) [3] | `main` (base) | 64 | 0.00 |  |  | [0.00, 0.00] | 0.00 |  |  |" in text
    assert "[3] the paper's figure for the untuned base was not obtained" in text
    assert "3-6 points of run-to-run spread" in text

    rows = list(csv.DictReader((path.parent / "results.csv").open()))
    cell = next(r for r in rows if r["experiment"] == "main" and r["role"] == "sft" and r["subset"] == "overall"
                and r["metric"] == "pass@1")
    assert float(cell["delta"]) == pytest.approx(pass1 - 17.10, abs=1e-3)
    assert (float(cell["ci_low"]), float(cell["ci_high"])) == (low, high) and cell["paper"] == "17.1"
    subsets = {r["subset"] for r in rows if r["experiment"] == "main" and r["role"] == "sft"}
    assert subsets == {"overall", "aime24", "hmmt-24-25"}
    missing = [r for r in rows if r["experiment"] == "eval-qwen2.5-math-72b-instruct"]
    assert {(r["metric"], r["paper"], r["ours"]) for r in missing} == {("pass@1", "11.72", ""), ("maj@64", "16.14", "")}


def test_each_model_shows_its_numbers_under_both_judges(rendered):
    path, metrics, sft_counts = rendered
    split = sum(count > 0 for count in sft_counts)  # one verdict per problem with a correct sample
    nemo_skills = 100 * sum(sft_counts) / (NUM_PROBLEMS * K)
    strict = 100 * (sum(sft_counts) - split) / (NUM_PROBLEMS * K)
    maj = metrics["sft"]["metrics"]["overall"]["grader_sensitivity"]["maj@64"]
    text = path.read_text()
    assert "Grader sensitivity: every sample is graded by NeMo-Skills' `math_equal`" in text
    assert (f"- Qwen2.5-32B + SFT on 20 QwQ-32B-Preview traces: pass@1 {nemo_skills:.2f} / {strict:.2f}, maj@64 "
            f"{maj['nemo_skills']:.2f} / {maj['strict']:.2f} (nemo_skills / strict); {split} of {NUM_PROBLEMS * K} "
            f"verdicts differ (accepted by nemo_skills alone {split}, by strict alone 0).") in text
    assert "- Qwen2.5-32B base (no SFT): pass@1 0.00 / 0.00, maj@64 0.00 / 0.00 (nemo_skills / strict); 0 of" in text
    rows = list(csv.DictReader((path.parent / "results.csv").open()))
    by_judge = {r["metric"]: float(r["ours"]) for r in rows if r["experiment"] == "main" and r["role"] == "sft"
                and "[" in r["metric"] or r["metric"] == "verdicts_differ" and r["role"] == "sft"}
    assert by_judge == {"pass@1[nemo_skills]": pytest.approx(nemo_skills), "pass@1[strict]": pytest.approx(strict),
                        "maj@64[nemo_skills]": maj["nemo_skills"], "maj@64[strict]": maj["strict"],
                        "verdicts_differ": split}


def test_provenance_and_training_come_from_the_manifests(rendered):
    text = rendered[0].read_text()
    assert "- `main`: 20 traces of QwQ-32B-Preview (mean 3012 student tokens, from 41 problems" in text
    assert "final loss 0.4321" in text
    assert "- `eval-qwen2.5-math-72b-instruct`: evaluation only, no training." in text
    # Seeds and settings as each stage's manifest recorded them (the run was made with metrics.seed=7, sorted ties)
    assert "| metrics | `" in text and "`metrics.tie_rule=sorted`, `metrics.seed=7`" in text
    assert "`teacher_sampling.n=512`, `teacher_sampling.temperature=0.7`" in text and "`teacher_sampling.seed=0`" in text
    assert "`teacher.path=Qwen/QwQ-32B-Preview`" in text and "`eval_sampling.seed=1000`" in text
    assert "`selection.strategy=paper`" in text and "`sft.seed=1234`" in text
    assert "Versions: python 3.11, vllm 0.32.0, nemo_aligner 0.7.0." in text
    assert "731558c9, 2025-07-12" in text  # which tie rule NeMo-Skills used at paper time


def test_curve_points_agree_with_the_headline_metrics():
    metrics = compute_metrics(_graded([0, 8, 40, 64]), bootstrap=0)
    curve = metrics["overall"]["curve"]
    assert [point["k"] for point in curve] == [1, 2, 4, 8, 16, 32, 64]
    last = curve[-1]
    assert (last["pass@1"], last["maj"], last["pass"]) == (metrics["overall"]["pass@1"], metrics["overall"]["maj@64"],
                                                           metrics["overall"]["pass@64"])
    # first j samples: the correct ones come first, so pass@1 over the first sample is the share of problems with any
    assert curve[0]["pass@1"] == 75.0 and curve[0]["maj"] == 75.0


def test_a_run_whose_config_changed_since_is_reported_stale_not_with_its_old_numbers(tmp_path):
    target = load_target("main")
    configs = reproduce.compose_runs(target, [f"runs_root={tmp_path}"])
    _write_run(configs["main"], {"base": [0] * NUM_PROBLEMS, "sft": [64] * NUM_PROBLEMS})
    changed = reproduce.compose_runs(target, [f"runs_root={tmp_path}", "eval_sampling.n=16"])
    text = reproduce.render_target_report(target, changed).read_text()
    assert "| `main` (sft) |  | sample_base stale: config changed | 17.10 |" in text
    assert "100.00" not in text


def test_runs_with_different_sample_counts_share_one_report(tmp_path):
    target = load_target("main")
    configs = reproduce.compose_runs(target, [f"runs_root={tmp_path}"])
    _write_run(configs["main"], {"base": [0] * NUM_PROBLEMS, "sft": [64] * NUM_PROBLEMS})
    baseline = configs["eval-qwen2.5-math-72b-instruct"]
    _write_run(baseline, {"base": [64] * NUM_PROBLEMS})  # then its metrics are replaced by 8 samples per problem
    eight = compute_metrics([r for r in _graded([8] * NUM_PROBLEMS) if r["sample_idx"] < 8], bootstrap=0)
    (Path(baseline.run_dir) / "metrics" / "metrics.json").write_text(
        json.dumps({"base": {"model": "m", "metrics": eight}}))
    text = reproduce.render_target_report(target, configs).read_text()
    assert "| model | run | k | pass@1 | paper | delta | 95% CI | maj@k | paper | delta | 95% CI |" in text
    # k=8: the paper's maj@64 is shown but not subtracted; pass@1 still is
    assert "| Qwen2.5-Math-72B-Instruct [2] | `eval-qwen2.5-math-72b-instruct` (base) | 8 | 100.00 | 11.72 | +88.28 |" \
           "  | 100.00 | 16.14 |  |" in text


def test_a_runs_own_report_after_a_config_edit_shows_no_numbers_under_the_new_settings(tmp_path):
    from nemo_recipes.config import compose_config
    from nemo_recipes.pipeline import StageContext, stage_graph
    from nemo_recipes.stages import report

    _write_run(compose_config(["experiment=main", f"runs_root={tmp_path}"]),
               {"base": [0] * NUM_PROBLEMS, "sft": [64] * NUM_PROBLEMS})
    changed = compose_config(["experiment=main", f"runs_root={tmp_path}", "eval_sampling.n=16"])  # stages=[report]
    stage = next(s for s in stage_graph(changed) if s.name == "report")
    with pytest.raises(UserError, match=r"without numbers \(sample_base stale: config changed\); run the stages"):
        report.run(StageContext(changed, stage, Path(changed.run_dir), progress=False))  # so it is not complete
    text = (Path(changed.run_dir) / "report" / "report.md").read_text()
    assert "16 samples per problem" in text and "sample_base stale: config changed" in text
    assert "100.00" not in text


def test_a_run_on_part_of_the_benchmark_is_not_compared_with_the_papers_figures():
    from nemo_recipes.config import compose_config
    from nemo_recipes.targets import paper_figures, paper_row

    row = paper_row("main", "sft")
    assert paper_figures(compose_config(["experiment=main"]), row)[0] == {"pass@1": 17.10, "maj@64": 27.73}
    paper, note = paper_figures(compose_config(["experiment=main", "benchmark.limit=30"]), row)
    assert paper == {} and "takes its first 30 problems (benchmark.limit), so none is compared" in note


def test_the_report_renders_again_when_any_stage_config_changes_even_with_the_same_output():
    from nemo_recipes.config import compose_config
    from nemo_recipes.pipeline import config_digest, stage_graph

    def report_hash(*overrides):
        cfg = compose_config(["experiment=main", *overrides])
        return config_digest(cfg, next(s for s in stage_graph(cfg) if s.name == "report"))

    assert report_hash() == report_hash("grading.workers=5")  # changes no stage
    assert report_hash() != report_hash("grading.timeout_s=11")  # grade stages rerun: the provenance changes
