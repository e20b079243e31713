"""One report layout for every run and every reproduction target: markdown + CSV + PNGs.

Sections, in order (a toy demo's report has the same ones as a paper target's):
  Results (ours | paper | delta | 95% CI per cell, with the figures' sources), Figures, Per subset,
  SFT sets and training, Provenance (config hashes, models, seeds, library versions, the maj@k tie rule).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from pathlib import Path

from nemo_recipes.io import atomic_write_text, read_json, read_jsonl

SECTIONS = ("Results", "Figures", "Per subset", "SFT sets and training", "Provenance")
FIGURES = ("results.png", "curves.png", "subsets.png", "lengths.png")
# What NeMo-Skills says of run-to-run spread (research/scoring.md): the yardstick for a delta to the paper.
TOLERANCE_NOTE = ("Tolerance: NeMo-Skills reports 3-6 points of run-to-run spread on 30-problem sets (AIME); on the "
                  "whole 256-problem benchmark, a delta inside our 95% interval is agreement, and one outside it by "
                  "less than ~3 points is within the spread of a rerun.")
TIE_RULE_NOTE = ("NeMo-Skills broke maj@k ties by first-seen answer until 2025-06-05, by sorted (answer, correct) "
                 "pairs from then until 2025-08-18 -- its code at paper time (731558c9, 2025-07-12) -- and by "
                 "averaging the tied answers afterwards; `metrics.tie_rule` picks one, and the paper's own runs "
                 "may predate 2025-06-05.")


@dataclasses.dataclass
class Result:
    """One row: a model evaluated in one run, with the paper's figures for it."""

    label: str
    experiment: str
    role: str
    run_dir: Path
    paper: dict                    # metric -> figure or None
    source: str = ""
    note: str = ""
    model: str = ""
    metrics: dict | None = None    # compute_metrics() output; None until the run has evaluated the model
    lengths: dict | None = None    # {"correct": [...], "incorrect": [...]} generated tokens

    @property
    def overall(self) -> dict:
        return self.metrics["overall"]


def load_result(label: str, experiment: str, role: str, run_dir: Path, paper: dict | None = None, source: str = "",
                note: str = "") -> Result:
    result = Result(label, experiment, role, Path(run_dir), dict(paper or {}), source, note)
    metrics_file = result.run_dir / "metrics" / "metrics.json"
    manifest = result.run_dir / "metrics" / "manifest.json"
    # Only a complete metrics stage: a running or failed one may hold the previous config's numbers.
    if metrics_file.exists() and manifest.exists() and read_json(manifest).get("status") == "complete":
        evaluated = read_json(metrics_file).get(role)
        if evaluated:
            result.model, result.metrics = evaluated["model"], evaluated["metrics"]
    lengths_file = result.run_dir / "metrics" / "lengths.json"
    if result.metrics and lengths_file.exists():
        result.lengths = read_json(lengths_file).get(role)
    return result


def write_report(out_dir: Path, *, title: str, intro: str, results: list[Result], configs: dict) -> Path:
    """report.md, results.csv and the figures in out_dir; `configs` maps each run's experiment name to its config."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done = [r for r in results if r.metrics]
    k = done[0].metrics["k"] if done else None
    if done:
        _figures(out_dir, done, k, configs, title)
    atomic_write_text(out_dir / "results.csv", _csv(results))
    lines = [f"# {title}", "", intro, "",
             f"Written {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} into `{out_dir}`; the same "
             f"numbers are in `results.csv`.", ""]
    lines += _results_section(results, k)
    lines += ["", "## Figures", ""]
    lines += [f"![{name[:-4]}]({name})" for name in FIGURES if (out_dir / name).exists()] if done else \
        ["No run has results yet."]
    lines += ["", *_subset_section(done, k), "", *_training_section(configs), "", *_provenance_section(configs)]
    atomic_write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    return out_dir / "report.md"


def _results_section(results: list[Result], k: int | None) -> list[str]:
    lines = ["## Results", ""]
    if k is None:
        lines += ["No run of this report has results yet: run it, then render the report again. The paper's figures:",
                  ""]
        k = 64
    lines += [f"pass@1 is the mean accuracy over each problem's {k} samples, maj@{k} votes over their extracted "
              f"answers; 95% intervals are bootstraps over problems. Paper figures are pass@1 and maj@64"
              + ("." if k == 64 else f"; with {k} samples our maj@{k} is not the paper's maj@64, so its delta is "
                 f"left out."), "",
              f"| model | run | pass@1 | paper | delta | 95% CI | maj@{k} | paper | delta | 95% CI |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    notes: list[str] = []
    for result in results:
        marks = ""
        text = "; ".join(part for part in (result.source, result.note) if part)
        if text:
            notes.append(text)
            marks = f" [{len(notes)}]"
        cells = [f"{result.label}{marks}", f"`{result.experiment}` ({result.role})"]
        for metric, paper_metric in (("pass@1", "pass@1"), (f"maj@{k}", "maj@64" if k == 64 else None)):
            cells += _cells(result, metric, paper_metric)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *[f"[{i}] {note}" for i, note in enumerate(notes, start=1)], "", TOLERANCE_NOTE]
    return lines


def _cells(result: Result, metric: str, paper_metric: str | None) -> list[str]:
    paper = result.paper.get(paper_metric) if paper_metric else None
    paper_text = f"{paper:.2f}" if paper is not None else ("" if paper_metric else "n/a")
    if not result.metrics:
        return ["not run", paper_text, "", ""]
    ours = result.overall[metric]
    interval = result.overall.get(f"{metric}_ci")
    delta = f"{ours - paper:+.2f}" if paper is not None else ""
    ci = f"[{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""
    return [f"{ours:.2f}", paper_text, delta, ci]


def _csv(results: list[Result]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", "experiment", "role", "model", "subset", "metric", "ours", "ci_low", "ci_high", "paper",
                     "delta", "num_problems", "k", "source", "note"])
    for r in results:
        if not r.metrics:
            for metric in r.paper:
                writer.writerow([r.label, r.experiment, r.role, "", "overall", metric, "", "", "", _num(r.paper[metric]),
                                 "", "", "", r.source, r.note])
            continue
        k = r.metrics["k"]
        blocks = {"overall": r.overall, **r.metrics["subsets"]}
        for subset, block in blocks.items():
            for metric in ("pass@1", f"maj@{k}", f"pass@{k}"):
                paper_metric = {"pass@1": "pass@1", "maj@64": "maj@64"}.get(metric) if subset == "overall" else None
                paper = r.paper.get(paper_metric) if paper_metric else None
                low, high = block.get(f"{metric}_ci") or ("", "")
                writer.writerow([r.label, r.experiment, r.role, r.model, subset, metric, block[metric], low, high,
                                 _num(paper), _num(None if paper is None else round(block[metric] - paper, 4)),
                                 block["num_problems"], k, r.source, r.note])
    return buffer.getvalue()


def _num(value) -> str:
    return "" if value is None else str(value)


def _subset_section(done: list[Result], k: int | None) -> list[str]:
    lines = ["## Per subset", ""]
    if not done:
        return lines + ["No results yet."]
    lines += [f"| model | subset | problems | pass@1 | maj@{k} | pass@{k} | mean tokens | no answer |",
              "|---|---|---|---|---|---|---|---|"]
    for result in done:
        for subset, block in {"all": result.overall, **result.metrics["subsets"]}.items():
            tokens = (block.get("tokens") or {}).get("mean")
            lines.append(f"| {result.label} | {subset} | {block['num_problems']} | {block['pass@1']:.2f} | "
                         f"{block[f'maj@{k}']:.2f} | {block[f'pass@{k}']:.2f} | "
                         f"{'' if tokens is None else f'{tokens:.0f}'} | {block['no_answer']:.2f} |")
    return lines


def _training_section(configs: dict) -> list[str]:
    lines = ["## SFT sets and training", ""]
    for experiment, cfg in configs.items():
        run_dir = Path(cfg.run_dir)
        select = _summary(run_dir, "select")
        sft = _summary(run_dir, "sft")
        if "sft" not in cfg.evaluate:
            lines.append(f"- `{experiment}`: evaluation only, no training.")
            continue
        if select is None or sft is None:
            lines.append(f"- `{experiment}`: SFT not run yet.")
            continue
        rows = read_jsonl(run_dir / "select" / "sft.jsonl")
        s = cfg.sft
        lines.append(
            f"- `{experiment}`: {len(rows)} traces of {rows[0]['source']} (mean {select.get('mean_tokens', 0):.0f} "
            f"student tokens, from {select.get('eligible_problems', '?')} problems with an eligible trace; "
            f"`{run_dir}/select/selection_report.md`); {sft.get('backend', s.backend)}: {s.max_steps} steps, global "
            f"batch {s.global_batch_size} packs of {s.pack_size} tokens, LR {s.lr} -> {s.min_lr}, seed {s.seed}"
            + (f", final loss {sft['final_loss']:.4f}." if "final_loss" in sft else "."))
    return lines


def _summary(run_dir: Path, stage: str) -> dict | None:
    path = run_dir / stage / "manifest.json"
    if not path.exists():
        return None
    manifest = read_json(path)
    return manifest.get("summary", {}) if manifest.get("status") == "complete" else None


def _provenance_section(configs: dict) -> list[str]:
    lines = ["## Provenance", "", TIE_RULE_NOTE, ""]
    for experiment, cfg in configs.items():
        run_dir = Path(cfg.run_dir)
        lines += [f"### `{experiment}` (`{run_dir}`)", "",
                  f"Models: teacher {cfg.teacher.name} ({cfg.teacher.path or 'toy'}), student {cfg.student.name} "
                  f"({cfg.student.path or 'toy'}). Seeds: teacher sampling {cfg.teacher_sampling.seed}, eval sampling "
                  f"{cfg.eval_sampling.seed}, selection {cfg.selection.seed}, SFT {cfg.sft.seed}, bootstrap "
                  f"{cfg.metrics.seed}. maj@k ties: `{cfg.metrics.tie_rule}`.", "",
                  "| stage | config hash | fingerprint | finished | command |", "|---|---|---|---|---|"]
        versions: dict = {}
        for manifest_path in sorted(run_dir.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime):
            manifest = read_json(manifest_path)
            if manifest.get("stage") == "report":
                continue
            versions = manifest.get("versions", versions)
            lines.append(f"| {manifest.get('stage')} | `{manifest.get('config_hash', '')[:12]}` | "
                         f"`{manifest.get('fingerprint', manifest.get('status', ''))[:12]}` | {manifest.get('ended', '')} | "
                         f"`{' '.join(manifest.get('argv', []))}` |")
        lines += ["", "Versions: " + (", ".join(f"{name} {v}" for name, v in versions.items()) or "no stage has run") + ".",
                  ""]
    return lines


def _figures(out_dir: Path, done: list[Result], k: int, configs: dict, title: str) -> None:
    from nemo_recipes.report import plots

    plots.results_bars(done, k, out_dir / "results.png", f"pass@1 and maj@{k} (95% CI); black: the paper")
    plots.curves(done, out_dir / "curves.png", "against the number of samples per problem")
    plots.subset_bars(done, k, out_dir / "subsets.png", "per benchmark subset")
    sft_sets = {}
    for experiment, cfg in configs.items():
        path = Path(cfg.run_dir) / "select" / "sft.jsonl"
        if path.exists():
            sft_sets[experiment] = [row["num_tokens"] for row in read_jsonl(path) if "num_tokens" in row]
    plots.length_histograms(done, sft_sets, out_dir / "lengths.png", "lengths of the generations and of the SFT traces")
