"""Stage report: a markdown report with a results table, per-subset numbers, the paper's figures, the SFT set,
training, and the provenance of every number; plus `results.png`.

    python -m nemo_recipes experiment=demo stages=[report]
"""

from __future__ import annotations

import datetime as dt

from nemo_recipes.io import atomic_write_text, read_json, read_jsonl


def run(ctx) -> dict:
    from nemo_recipes.report.plots import results_bar_chart

    cfg = ctx.cfg
    results = read_json(ctx.input_dir("metrics") / "metrics.json")
    k = next(iter(results.values()))["metrics"]["k"]
    rows = [_row(role, r, k) for role, r in results.items()]
    results_bar_chart(rows, k, ctx.dir / "results.png", f"{cfg.benchmark.name}: pass@1 and maj@{k} (95% CI)")
    text = _markdown(ctx, results, rows, k)
    atomic_write_text(ctx.dir / "report.md", text)
    ctx.log(f"wrote {ctx.dir / 'report.md'} and results.png")
    return {"report": "report.md", "figure": "results.png"}


def plan(ctx) -> list[str]:
    return ["report.md (results, per subset, paper figures, SFT set, training, provenance) and results.png"]


def _row(role: str, result: dict, k: int) -> dict:
    overall = result["metrics"]["overall"]
    return {"role": role, "model": result["model"], "pass@1": overall["pass@1"], "pass@1_ci": overall["pass@1_ci"],
            "maj": overall[f"maj@{k}"], "maj_ci": overall[f"maj@{k}_ci"], "overall": overall}


def _markdown(ctx, results: dict, rows: list[dict], k: int) -> str:
    cfg = ctx.cfg
    first = next(iter(results.values()))["metrics"]["overall"]
    lines = [
        f"# {cfg.report.title}", "",
        f"Experiment `{cfg.experiment_name}`, run folder `{ctx.run_dir}`, written "
        f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", "",
        f"## Results on {cfg.benchmark.name}", "",
        f"{first['num_problems']} problems, {k} samples each (T={cfg.eval_sampling.temperature}, "
        f"top_p={cfg.eval_sampling.top_p}, max {cfg.eval_sampling.max_tokens} tokens). pass@1 is the mean accuracy "
        f"over the {k} samples; maj@{k} votes over their extracted answers (ties: {cfg.metrics.tie_rule}); "
        f"brackets are 95% bootstrap intervals over problems.", "",
        f"| model | pass@1 | maj@{k} | pass@{k} | no answer | mean tokens |", "|---|---|---|---|---|---|",
    ]
    for row in rows:
        o = row["overall"]
        lines.append(f"| {row['model']} | {_ci(o, 'pass@1')} | {_ci(o, f'maj@{k}')} | {o[f'pass@{k}']:.2f} | "
                     f"{o['no_answer']:.2f} | {_mean_tokens(o)} |")
    lines += ["", "![results](results.png)", "", "## Per subset", "",
              f"| model | subset | problems | pass@1 | maj@{k} |", "|---|---|---|---|---|"]
    for role, result in results.items():
        for subset, block in result["metrics"]["subsets"].items():
            lines.append(f"| {result['model']} | {subset} | {block['num_problems']} | {block['pass@1']:.2f} | "
                         f"{block[f'maj@{k}']:.2f} |")
    lines += ["", *_paper_section(cfg, rows, k), "", *_sft_section(ctx), "", *_provenance(ctx)]
    return "\n".join(lines) + "\n"


def _ci(block: dict, key: str) -> str:
    low, high = block[f"{key}_ci"]
    return f"{block[key]:.2f} [{low:.1f}, {high:.1f}]"


def _mean_tokens(block: dict) -> str:
    tokens = block.get("tokens") or {}
    return f"{tokens['mean']:.0f}" if "mean" in tokens else "-"


def _paper_section(cfg, rows: list[dict], k: int) -> list[str]:
    lines = ["## The paper's figures", ""]
    if cfg.benchmark.name != "comp-math-24-25":
        return lines + [f"The paper reports pass@1 / maj@64 on Comp-Math-24-25; this run's benchmark is "
                        f"{cfg.benchmark.name}, so its numbers are not comparable and no delta is shown. For "
                        f"reference: Qwen2.5-32B SFT on 20 QwQ-32B-Preview traces "
                        f"{cfg.paper.sft_32b_20_qwq['pass@1']:.2f} / {cfg.paper.sft_32b_20_qwq['maj@64']:.2f}, "
                        f"Qwen2.5-Math-72B-Instruct {cfg.paper['qwen2.5-math-72b-instruct']['pass@1']:.2f} / "
                        f"{cfg.paper['qwen2.5-math-72b-instruct']['maj@64']:.2f}."]
    lines += ["| model | metric | ours | paper | delta |", "|---|---|---|---|---|"]
    paper_rows = {"sft": cfg.paper.sft_32b_20_qwq}
    for row in rows:
        figures = paper_rows.get(row["role"])
        if not figures:
            continue
        for metric, ours in (("pass@1", row["pass@1"]), (f"maj@{k}", row["maj"])):
            theirs = figures.get(metric)
            delta = f"{ours - theirs:+.2f}" if theirs is not None else "-"
            lines.append(f"| {row['model']} | {metric} | {ours:.2f} | {theirs if theirs is not None else '-'} | {delta} |")
    return lines


def _sft_section(ctx) -> list[str]:
    select = read_json(ctx.input_dir("select") / "manifest.json").get("summary", {})
    sft = read_json(ctx.input_dir("sft") / "manifest.json").get("summary", {})
    rows = read_jsonl(ctx.input_dir("select") / "sft.jsonl")
    s = ctx.cfg.sft
    lines = ["## SFT set and training", "",
             f"{len(rows)} traces of {rows[0]['source']} (mean {select.get('mean_tokens', 0):.0f} student tokens, "
             f"chosen from {select.get('eligible_problems', '?')} problems with an eligible trace; see "
             f"`select/selection_report.md`).",
             f"Backend {sft.get('backend', s.backend)}: {s.max_steps} steps, global batch {s.global_batch_size} packs "
             f"of {s.pack_size} tokens, LR {s.lr} -> {s.min_lr}, seed {s.seed}"
             + (f"; final loss {sft['final_loss']:.4f}." if "final_loss" in sft else ".")]
    return lines


def _provenance(ctx) -> list[str]:
    cfg = ctx.cfg
    from nemo_recipes.pipeline import stage_graph

    stages = [stage.name for stage in stage_graph(cfg) if stage.name != "report"]
    lines = ["## Provenance", "",
             "| stage | config hash | fingerprint | finished | command |", "|---|---|---|---|---|"]
    versions = {}
    for stage in stages:
        manifest = read_json(ctx.input_dir(stage) / "manifest.json")
        versions = manifest.get("versions", versions)
        lines.append(f"| {stage} | `{manifest['config_hash'][:12]}` | `{manifest['fingerprint'][:12]}` | "
                     f"{manifest.get('ended', '')} | `{' '.join(manifest.get('argv', []))}` |")
    seeds = (f"teacher sampling seed {cfg.teacher_sampling.seed}, eval sampling seed {cfg.eval_sampling.seed}, "
             f"selection seed {cfg.selection.seed}, SFT seed {cfg.sft.seed}, bootstrap seed {cfg.metrics.seed}")
    lines += ["", f"Models: teacher {cfg.teacher.name} ({cfg.teacher.path or 'toy'}), student {cfg.student.name} "
              f"({cfg.student.path or 'toy'}).", f"Seeds: {seeds}.",
              "Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()) + "."]
    return lines
