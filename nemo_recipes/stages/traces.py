"""Stage traces: did each evaluated model enter reasoning mode? Its traces' structure beside its SFT set's and the
teacher's.

    python -m nemo_recipes experiment=demo stages=[traces] traces.reasoning_mode.min_length_vs_base=3

Measures (nemo_recipes/traces/analysis.py) each evaluated model's generations, the SFT set and the teacher's
eligible traces (those selection could choose from): token lengths, truncation, boxed answers, and the reflection and
verification markers of config `markers` (the list selection=no_keywords removes) per 1,000 tokens. Then the
divergence of each marker profile from the SFT set's, and each model's verdict by the rule in
`traces.reasoning_mode`, with the numbers it was decided on. Writes `traces.json`: {"models": {role: ...},
"sft_set": ..., "teacher": ..., "rule": ...} (a set the run does not have is null).
"""

from __future__ import annotations

from nemo_recipes.io import iter_jsonl, read_jsonl, write_json
from nemo_recipes.models import model_name
from nemo_recipes.traces.analysis import describe, divergence, measure, verdict
from nemo_recipes.traces.markers import markers_from_config

_GENERATION_KEYS = ("generation", "num_generated_tokens", "finish_reason")


def run(ctx) -> dict:
    from omegaconf import OmegaConf

    cfg = ctx.cfg
    markers = markers_from_config(cfg.markers)
    sft_set = _sft_set(ctx, markers) if "select" in ctx.stage.needs else None
    teacher = _teacher(ctx, markers) if "grade_teacher" in ctx.stage.needs else None
    models = {role: _model(ctx, role, markers) for role in cfg.evaluate}

    for traces in (*models.values(), teacher, sft_set):
        if traces is not None:
            traces["divergence_from_sft_set"] = (divergence(traces["marker_counts"], sft_set["marker_counts"])
                                                 if sft_set else None)
    rule = cfg.traces.reasoning_mode
    for role, traces in models.items():
        traces["verdict"] = verdict(traces, None if role == "base" else models.get("base"), rule)
        ctx.log(f"{traces['model']}: median {traces['tokens']['median']:.0f} tokens; in reasoning mode? "
                f"{describe(traces['verdict'])}")
    write_json(ctx.dir / "traces.json", {"models": models, "sft_set": sft_set, "teacher": teacher,
                                         "rule": OmegaConf.to_container(rule, resolve=True)})
    return {role: traces["verdict"]["reasoning_mode"] for role, traces in models.items()}


def plan(ctx) -> list[str]:
    rule = ctx.cfg.traces.reasoning_mode
    sets = [*(f"{role} model" for role in ctx.cfg.evaluate),
            *(name for need, name in (("select", "SFT set"), ("grade_teacher", "teacher's eligible traces"))
              if need in ctx.stage.needs)]
    return [f"lengths, truncation, boxed answers, {' and '.join(ctx.cfg.markers)} markers per 1,000 tokens of: "
            f"{', '.join(sets)}; reasoning mode when markers in >= {rule.min_share_with_markers:.0%} of samples, "
            f"median length >= {rule.min_length_vs_base:g}x the base's, <= {rule.max_truncated:.0%} truncated"]


def _model(ctx, role: str, markers) -> dict:
    graded = iter_jsonl(ctx.input_dir(f"grade_{role}") / "graded.jsonl", required_keys=_GENERATION_KEYS)
    return {"model": model_name(ctx.cfg, role), **measure(trace_samples(graded), markers)}


def _teacher(ctx, markers) -> dict:
    """The teacher's traces that selection could have chosen (correct and finished, or as selection.require says)."""
    from nemo_recipes.stages.select import is_eligible

    graded = iter_jsonl(ctx.input_dir("grade_teacher") / "graded.jsonl", required_keys=(*_GENERATION_KEYS, "correct"))
    eligible = (record for record in graded if is_eligible(record, ctx.cfg.selection))
    return {"model": model_name(ctx.cfg, "teacher"), **measure(trace_samples(eligible), markers)}


def _sft_set(ctx, markers) -> dict:
    rows = read_jsonl(ctx.input_dir("select") / "sft.jsonl", required_keys=("output", "num_tokens", "source"))
    return {"source": ", ".join(sorted({row["source"] for row in rows})),
            **measure(((row["output"], row["num_tokens"], None) for row in rows), markers)}


def trace_samples(records):
    """(text, tokens, finish_reason) of each graded record, as traces.analysis.measure takes them."""
    return ((record["generation"] or "", record["num_generated_tokens"], record["finish_reason"])
            for record in records)
