"""Trace structure on made-up traces with known counts: markers, lengths, truncation, boxed answers, divergence, the
reasoning-mode verdict, the traces stage, the report section of a target, and the command on any file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nemo_recipes.config import compose_config
from nemo_recipes.errors import UserError
from nemo_recipes.traces.analysis import describe, divergence, measure, verdict
from nemo_recipes.traces.markers import markers_from_config

MARKERS = markers_from_config(OmegaConf.create({"reflection": ["but wait", "wait", "hmm+", "alternatively"],
                                                "verification": ["let me (?:double-)?check", "let me verify"]}))
RULE = OmegaConf.create({"min_share_with_markers": 0.5, "min_length_vs_base": 2.0, "max_truncated": 0.5})


def test_markers_are_whole_words_in_any_case_and_each_counted_once():
    text = "But wait, hmm. HMMM... Waiting is over. Wait: let me double-check. Alternatively, let me check it; wait"
    found = [MARKERS.patterns[index] for index in MARKERS.find(text)]
    assert found == [("reflection", "but wait"), ("reflection", "hmm+"), ("reflection", "hmm+"),
                     ("reflection", "wait"), ("verification", "let me (?:double-)?check"),
                     ("reflection", "alternatively"), ("verification", "let me (?:double-)?check"),
                     ("reflection", "wait")]  # "but wait" once, not also "wait"; "Waiting" is no marker
    assert MARKERS.remove("Wait, 2 + 2 = 4. Hmm, alternatively: 4. Let me verify it.") == "2 + 2 = 4. 4. it."
    assert MARKERS.find("İ wait \\W Wait") == [1, 1]  # a character whose lower case is longer moves nothing
    assert MARKERS.remove("İ, wait: x") == "İ, x"


@pytest.mark.parametrize("patterns, message", [
    ({"reflection": ["wait("]}, r"markers.reflection: 'wait\(' is not a regular expression"),
    ({"reflection": ["Wait"]}, r"markers.reflection: 'Wait' has upper-case letters; write it in lower case"),
    ({"verification": ["(?:check)?"]}, r"markers.verification: '\(\?:check\)\?' matches the empty string"),
    ({"reflection": "wait"}, r"markers.reflection must be a list of regular expressions"),
    ({"reflection": []}, r"markers: every kind is empty"),
])
def test_a_bad_marker_is_one_sentence_naming_its_key(patterns, message):
    with pytest.raises(UserError, match=message):
        markers_from_config(OmegaConf.create(patterns))


def test_the_keyword_ablation_hashes_the_marker_list_and_the_paper_strategy_does_not():
    from nemo_recipes.pipeline import config_digest, stage_graph

    def select_hash(*overrides):
        cfg = compose_config(["experiment=main", *overrides])
        return config_digest(cfg, next(s for s in stage_graph(cfg) if s.name == "select"))

    assert select_hash() == select_hash("markers.reflection=[wait]")
    assert select_hash("selection=no_keywords") != select_hash("selection=no_keywords", "markers.reflection=[wait]")


def test_measures_of_four_traces_with_known_counts():
    samples = [
        ("Wait, 2 + 2 = 4. Let me check: yes. So \\boxed{4}.", 100, "stop"),    # 1 reflection, 1 verification
        ("Hmm, hmm. The answer is \\boxed{5}.", 200, "stop"),                   # 2 reflection
        ("The answer is 6.", 300, "stop"),                                     # none, no box
        ("wait wait wait wait wait wait wait wait", 400, "length"),            # 8 reflection, truncated
    ]
    m = measure(iter(samples), MARKERS)
    assert m["samples"] == 4
    assert m["tokens"] == {"mean": 250, "p10": 130, "p25": 175, "median": 250, "p75": 325, "p90": 370, "max": 400}
    assert (m["truncated"], m["boxed"], m["with_markers"]) == (0.25, 0.5, 0.75)
    assert m["per_1k_tokens"] == {"reflection": 11 * 1000 / 1000, "verification": 1 * 1000 / 1000}
    assert m["marker_counts"] == {"but wait": 0, "wait": 9, "hmm+": 2, "alternatively": 0,
                                  "let me (?:double-)?check": 1, "let me verify": 0}
    assert measure(iter([("\\boxed{1}", 10, None)]), MARKERS)["truncated"] is None  # an SFT set has no finish reason


def test_divergence_is_jensen_shannon_in_bits():
    assert divergence({"wait": 3, "hmm": 1}, {"wait": 6, "hmm": 2}) == 0.0  # same mix, other amounts
    assert divergence({"wait": 5}, {"hmm": 2}) == 1.0  # nothing in common
    assert divergence({"wait": 0}, {"wait": 4}) is None  # a set without markers has no mix to compare
    # p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4): (1 log2(4/3) + 1/2 log2(2/3) + 1/2 log2 2) / 2
    expected = (math.log2(4 / 3) + 0.5 * math.log2(2 / 3) + 0.5) / 2
    assert divergence({"wait": 2, "hmm": 0}, {"wait": 1, "hmm": 1}) == pytest.approx(expected)


def _traces(with_markers: float, median: float, truncated: float | None) -> dict:
    return {"with_markers": with_markers, "tokens": {"median": median}, "truncated": truncated}


def test_verdict_needs_markers_length_against_the_base_and_few_truncated():
    base = _traces(0.05, 400, 0.0)
    reasoning = verdict(_traces(0.9, 4000, 0.1), base, RULE)
    assert reasoning["reasoning_mode"] is True
    assert [(c["key"], c["value"], c["ok"]) for c in reasoning["checks"]] == [
        ("min_share_with_markers", 0.9, True), ("min_length_vs_base", 10.0, True), ("max_truncated", 0.1, True)]
    assert describe(reasoning) == ("yes: markers in 90% of samples (needs >= 50%); median length 10.0x the base's "
                                   "(needs >= 2x); 10% truncated (needs <= 50%)")
    short = verdict(_traces(0.9, 600, 0.0), base, RULE)  # markers, but answers as short as the base's
    assert not short["reasoning_mode"] and "NOT median length 1.5x the base's" in describe(short)
    looping = verdict(_traces(1.0, 32768, 0.8), base, RULE)  # "wait wait wait" to max_tokens
    assert not looping["reasoning_mode"] and describe(looping).endswith("NOT 80% truncated (needs <= 50%)")
    # The base itself, or a model of a run without a base: no length condition.
    assert [c["key"] for c in verdict(base, None, RULE)["checks"]] == ["min_share_with_markers", "max_truncated"]
    assert not verdict(base, None, RULE)["reasoning_mode"]
    assert verdict(_traces(0.8, 30, None), None, RULE)["reasoning_mode"]  # QwQ evaluated alone


# --- the stage, on made-up run folders of the scale ablation -------------------------------------------------------

def _generation(text: str, tokens: int, finish: str = "stop", correct: bool = True) -> dict:
    return {"id": "p0", "sample_idx": 0, "generation": text, "num_generated_tokens": tokens, "finish_reason": finish,
            "correct": correct, "grade_status": "ok"}


SFT_TRACE = "Let me think. Wait, 2 + 2 = 4. Let me check: 4. \\boxed{4}"
MODELS = {  # what each made-up model writes: 10 samples of it
    "base": [_generation("The answer is \\boxed{4}.", 300)] * 10,
    "7b": [_generation("2 + 2 = 4, so \\boxed{4}.", 350)] * 8 + [_generation(SFT_TRACE, 900)] * 2,  # few markers
    "14b": [_generation("Wait, wait, wait, " * 50, 16384, "length")] * 7 + [_generation(SFT_TRACE, 3000)] * 3,
    "32b": [_generation(SFT_TRACE, 3000)] * 9 + [_generation("So \\boxed{4}.", 500)],
}


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _run_traces_stage(cfg, sft_model: str) -> Path:
    from nemo_recipes.pipeline import StageContext, stage_graph
    from nemo_recipes.stages import traces

    run_dir = Path(cfg.run_dir)
    _write(run_dir / "grade_base" / "graded.jsonl", MODELS["base"])
    _write(run_dir / "grade_sft" / "graded.jsonl", MODELS[sft_model])
    teacher = [_generation(SFT_TRACE, 3000)] * 6 + [_generation("Hmm " * 9, 9000, correct=False),
                                                   _generation("Hmm " * 9, 16384, "length")]
    _write(run_dir / "grade_teacher" / "graded.jsonl", teacher)
    _write(run_dir / "select" / "sft.jsonl", [{"output": SFT_TRACE + "<|im_end|>\n", "num_tokens": 2900 + i,
                                              "source": "QwQ-32B-Preview"} for i in range(20)])
    stage = next(s for s in stage_graph(cfg) if s.name == "traces")
    assert stage.needs == ("grade_base", "grade_sft", "select", "grade_teacher")
    traces.run(StageContext(cfg, stage, run_dir, progress=False))
    return run_dir / "traces" / "traces.json"


def test_the_stage_measures_models_sft_set_and_eligible_teacher_traces(tmp_path):
    cfg = compose_config(["experiment=main", f"runs_root={tmp_path}"])
    analysis = json.loads(_run_traces_stage(cfg, "32b").read_text())
    base, sft = analysis["models"]["base"], analysis["models"]["sft"]
    assert (base["model"], sft["model"]) == ("Qwen2.5-32B", "Qwen2.5-32B + SFT")
    assert not base["verdict"]["reasoning_mode"] and sft["verdict"]["reasoning_mode"]
    assert sft["with_markers"] == 0.9 and sft["tokens"]["median"] == 3000 and sft["truncated"] == 0.0
    assert base["divergence_from_sft_set"] is None and sft["divergence_from_sft_set"] == 0.0  # the SFT set's mix
    assert analysis["teacher"]["samples"] == 6  # correct and finished only: what selection could choose
    assert analysis["sft_set"]["samples"] == 20 and analysis["sft_set"]["source"] == "QwQ-32B-Preview"
    assert analysis["rule"] == {"min_share_with_markers": 0.5, "min_length_vs_base": 2.0, "max_truncated": 0.5}


def test_ablation_scale_report_shows_the_verdicts_side_by_side(tmp_path):
    from nemo_recipes import reproduce
    from nemo_recipes.report.render import Result
    from nemo_recipes.report.traces import FIGURE, trace_structure_section
    from nemo_recipes.targets import load_target

    target = load_target("ablation-scale")
    configs = reproduce.compose_runs(target, [f"runs_root={tmp_path}"])
    for experiment, model in (("ablation-scale-7b", "7b"), ("ablation-scale-14b", "14b"), ("main", "32b")):
        _run_traces_stage(configs[experiment], model)
    results = [Result(row.label, row.experiment, row.role, Path(configs[row.experiment].run_dir), {},
                      status="complete", metrics={"overall": {}}) for row in target.rows]
    text = "\n".join(trace_structure_section(tmp_path, results, configs))

    def row(label: str) -> list[str]:
        return [cell.strip() for cell in next(line for line in text.splitlines()
                                              if line.startswith(f"| {label} |")).split("|")[1:-1]]

    assert row("Qwen2.5-7B + SFT")[-1] == "no" and row("Qwen2.5-14B + SFT")[-1] == "no"
    assert row("Qwen2.5-32B + SFT")[-1] == "**yes**" and row("Qwen2.5-32B base")[-1] == "no"
    assert row("Qwen2.5-14B + SFT")[3:5] == ["16384 [3000, 16384]", "70%"]  # median [p10, p90], truncated
    assert row("Qwen2.5-7B + SFT")[-3] == "20%"  # samples with markers
    # One SFT set and one teacher shared by the three runs: one row each, naming every run.
    sft_set = row("SFT set: QwQ-32B-Preview")
    assert sft_set[1] == "`ablation-scale-7b`, `ablation-scale-14b`, `main`" and sft_set[-2:] == ["0.00", ""]
    assert row("teacher's eligible traces: QwQ-32B-Preview")[2] == "6"
    assert "- Qwen2.5-14B + SFT (`ablation-scale-14b`): no: markers in 100% of samples (needs >= 50%); median " \
           "length 54.6x the base's (needs >= 2x); NOT 70% truncated (needs <= 50%)" in text
    assert (tmp_path / FIGURE).stat().st_size > 5000 and f"]({FIGURE})" in text


def test_a_report_row_without_results_says_why(tmp_path):
    from nemo_recipes.report.render import Result
    from nemo_recipes.report.traces import FIGURE, trace_structure_section

    cfg = compose_config(["experiment=main", f"runs_root={tmp_path}"])
    (tmp_path / FIGURE).write_bytes(b"old")
    result = Result("Qwen2.5-32B + SFT", "main", "sft", tmp_path / "main", {},
                    status="sample_sft stale: config changed")
    text = "\n".join(trace_structure_section(tmp_path, [result], {"main": cfg}))
    assert "No run of this report has a trace analysis yet." in text and not (tmp_path / FIGURE).exists()


# --- the command on another harness's file -------------------------------------------------------------------------

def test_command_on_any_generations_file(tmp_path, capsys, tiny_tokenizer_dir):
    from nemo_recipes.traces.cli import main

    base, tuned, sft_set = tmp_path / "base.jsonl", tmp_path / "tuned.jsonl", tmp_path / "sft.jsonl"
    # Lists of samples per row, as some harnesses write them; the tuned file has no token counts.
    _write(base, [{"problem": "q", "generation": ["\\boxed{4}"] * 4, "num_generated_tokens": [10] * 4,
                   "finish_reason": "stop"}])
    _write(tuned, [{"problem": "q", "generation": [SFT_TRACE] * 3 + ["4"]}])
    _write(sft_set, [{"output": SFT_TRACE, "num_tokens": 30}])
    assert main([str(tuned), "--base", str(base), "--sft-set", str(sft_set), "--tokenizer",
                 str(tiny_tokenizer_dir), "traces.reasoning_mode.min_share_with_markers=0.7"]) == 0
    out = capsys.readouterr().out.splitlines()
    summary = json.loads(out[-1])
    assert summary["rule"]["min_share_with_markers"] == 0.7  # a key=value override of the pipeline's config
    tuned_traces = summary["sets"][str(tuned)]
    assert tuned_traces["samples"] == 4 and tuned_traces["with_markers"] == 0.75 and tuned_traces["truncated"] is None
    assert tuned_traces["verdict"]["reasoning_mode"] and tuned_traces["divergence_from_sft_set"] == 0.0
    assert not summary["sets"][str(base)]["verdict"]["reasoning_mode"]
    assert f"{tuned}: 4 samples" in out[1] and "reasoning mode? yes" in out[1]

    assert main([str(tuned)]) == 2  # no token counts and no tokenizer to count them
    assert capsys.readouterr().err == (f"error: {tuned}:1: no 'num_generated_tokens'; pass --tokenizer (a Hugging "
                                       f"Face tokenizer folder) to count the tokens, or --tokens-key to name the "
                                       f"field.\n")


def test_command_refuses_a_row_whose_generations_are_not_text_as_grading_does(tmp_path, capsys):
    from nemo_recipes.traces.cli import main

    source = tmp_path / "bad.jsonl"
    _write(source, [{"generation": "\\boxed{4}", "num_generated_tokens": 3}, {"generation": [5],
                                                                              "num_generated_tokens": [3]}])
    assert main([str(source)]) == 2
    assert capsys.readouterr().err == (f"error: {source}:2: 'generation' must be a string or a non-empty list of "
                                       f"strings.\n")
