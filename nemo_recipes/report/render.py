"""One report layout for every run and every reproduction target: markdown + CSV + PNGs.

Sections, in order (a toy demo's report has the same ones as a paper target's):
  Results (ours | paper | delta | 95% CI per cell, with the figures' sources, and each model's numbers under both
  grading judges), Figures, Per subset, Trace structure (nemo_recipes/report/traces.py), SFT sets and training,
  Provenance (per stage: config hash, seeds and models as the manifest recorded them, library versions, the maj@k
  tie rule).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from pathlib import Path

from nemo_recipes.io import atomic_write_text, read_json, read_jsonl
from nemo_recipes.metrics import describe_sensitivity
from nemo_recipes.report.traces import trace_structure_section

SECTIONS = ("Results", "Figures", "Per subset", "Trace structure", "SFT sets and training", "Provenance")
FIGURES = ("results.png", "curves.png", "subsets.png", "lengths.png")
# What NeMo-Skills says of run-to-run spread (research/scoring.md): the yardstick for a delta to the paper.
TOLERANCE_NOTE = ("Tolerance: NeMo-Skills reports 3-6 points of run-to-run spread on 30-problem sets (AIME); on the "
                  "whole 256-problem benchmark, a delta inside our 95% interval is agreement, and one outside it by "
                  "less than ~3 points is within the spread of a rerun.")
GRADER_NOTE = ("Grader sensitivity: every sample is graded by NeMo-Skills' `math_equal` (`nemo_skills`, the paper's "
               "grader) and by exact values (`strict`: no 6-decimal tolerance, leading zeros, `\\log` as ln, either "
               "side of a gold identity); `grading.judge` (default nemo_skills) picks the one behind the table.")
TIE_RULE_NOTE = ("NeMo-Skills broke maj@k ties by first-seen answer until 2025-06-05, by sorted (answer, correct) "
                 "pairs from then until 2025-08-18 -- its code at paper time (731558c9, 2025-07-12) -- and by "
                 "averaging the tied answers afterwards; `metrics.tie_rule` picks one, and the paper's own runs "
                 "may predate 2025-06-05.")
# Settings the provenance table lifts out of each stage manifest's config (the values its config hash covers).
_PROVENANCE_KEYS = ("seed", "path", "revision", "tie_rule", "n", "temperature", "strategy", "solution_type")


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
    status: str = "not run"        # "complete", or why the run has no numbers to show
    metrics: dict | None = None    # compute_metrics() output; None unless status is complete
    lengths: dict | None = None    # {"correct": [...], "incorrect": [...]} generated tokens

    @property
    def overall(self) -> dict:
        return self.metrics["overall"]

    @property
    def k(self) -> int:
        return self.metrics["k"]


def paper_metric(metric: str, k: int) -> str | None:
    """The paper's metric a metric of ours is compared with: pass@1, and maj@k only when k is the paper's 64."""
    if metric == "pass@1":
        return "pass@1"
    return "maj@64" if metric == f"maj@{k}" and k == 64 else None


def load_result(label: str, experiment: str, role: str, run_dir: Path, paper: dict | None = None, source: str = "",
                note: str = "", status: str = "complete") -> Result:
    """A row from a run folder; `status` is the run's state under its current config (pipeline.run_state): numbers
    are read only from a complete run, never from one whose config has changed since."""
    result = Result(label, experiment, role, Path(run_dir), dict(paper or {}), source, note, status=status)
    metrics_dir = result.run_dir / "metrics"
    if status != "complete" or _manifest(result.run_dir, "metrics") is None:
        result.status = status if status != "complete" else "not run"
        return result
    evaluated = read_json(metrics_dir / "metrics.json").get(role)
    if not evaluated:
        result.status = f"{role} not evaluated"
        return result
    result.model, result.metrics = evaluated["model"], evaluated["metrics"]
    if (metrics_dir / "lengths.json").exists():
        result.lengths = read_json(metrics_dir / "lengths.json").get(role)
    return result


def write_report(out_dir: Path, *, title: str, intro: str, results: list[Result], configs: dict) -> Path:
    """report.md, results.csv and the figures in out_dir; `configs` maps each run's experiment name to its config."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done = [r for r in results if r.metrics]
    for name in FIGURES:  # a figure left from an earlier rendering must not pass for this one's
        (out_dir / name).unlink(missing_ok=True)
    if done:
        _figures(out_dir, done, configs)
    atomic_write_text(out_dir / "results.csv", _csv(results))
    lines = [f"# {title}", "", intro, "",
             f"Written {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} into `{out_dir}`; the same "
             f"numbers are in `results.csv`.", ""]
    lines += _results_section(results)
    figures = [f"![{name[:-4]}]({name})" for name in FIGURES if (out_dir / name).exists()]
    lines += ["", "## Figures", "", *(figures or ["No run has results yet."])]
    lines += ["", *_subset_section(done), "", *trace_structure_section(out_dir, results, configs)]
    lines += ["", *_training_section(configs), "", *_provenance_section(configs)]
    atomic_write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    return out_dir / "report.md"


def _results_section(results: list[Result]) -> list[str]:
    lines = ["## Results", ""]
    ks = {r.k for r in results if r.metrics}
    if not ks:
        lines += ["No run of this report has results yet: run it, then render the report again. The paper's figures:",
                  ""]
    maj = f"maj@{ks.pop()}" if len(ks) == 1 else "maj@k"
    lines += [f"pass@1 is the mean accuracy over each problem's k samples, maj@k votes over their extracted answers; "
              f"95% intervals are bootstraps over problems. The paper reports pass@1 and maj@64: a maj@k with k other "
              f"than 64 shows the paper's figure but no delta.", "",
              f"| model | run | k | pass@1 | paper | delta | 95% CI | {maj} | paper | delta | 95% CI |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    notes: list[str] = []
    for result in results:
        marks = ""
        text = "; ".join(part for part in (result.source, result.note) if part)
        if text:
            notes.append(text)
            marks = f" [{len(notes)}]"
        cells = [f"{result.label}{marks}", f"`{result.experiment}` ({result.role})",
                 str(result.k) if result.metrics else ""]
        for kind in ("pass@1", "maj"):
            cells += _cells(result, kind)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *[f"[{i}] {note}" for i, note in enumerate(notes, start=1)], "", *_grader_sensitivity(results),
              TOLERANCE_NOTE]
    return lines


def _grader_sensitivity(results: list[Result]) -> list[str]:
    """Per evaluated model, its pass@1 and maj@k under each judge and how many verdicts differ."""
    lines = [f"- {r.label}: {describe_sensitivity(r.overall, r.k) or 'graded by one judge only; grade it again'}."
             for r in results if r.metrics]
    return [GRADER_NOTE, "", *lines, ""] if lines else []


def _cells(result: Result, kind: str) -> list[str]:
    """ours | paper | delta | 95% CI for pass@1 or for the row's maj@k."""
    paper = result.paper.get("pass@1" if kind == "pass@1" else "maj@64")
    paper_text = f"{paper:.2f}" if paper is not None else ""
    if not result.metrics:
        return [result.status, paper_text, "", ""]
    metric = "pass@1" if kind == "pass@1" else f"maj@{result.k}"
    ours = result.overall[metric]
    interval = result.overall.get(f"{metric}_ci")
    compared = paper is not None and paper_metric(metric, result.k) is not None
    return [f"{ours:.2f}", paper_text, f"{ours - paper:+.2f}" if compared else "",
            f"[{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""]


def _csv(results: list[Result]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", "experiment", "role", "model", "subset", "metric", "ours", "ci_low", "ci_high", "paper",
                     "delta", "num_problems", "k", "source", "note", "status"])
    for r in results:
        if not r.metrics:
            for metric, paper in r.paper.items():
                writer.writerow([r.label, r.experiment, r.role, "", "overall", metric, "", "", "", _num(paper), "", "",
                                 "", r.source, r.note, r.status])
            continue
        for subset, block in {"overall": r.overall, **r.metrics["subsets"]}.items():
            for metric in ("pass@1", f"maj@{r.k}", f"pass@{r.k}"):
                compared = paper_metric(metric, r.k) if subset == "overall" else None
                paper = r.paper.get(compared) if compared else None
                low, high = block.get(f"{metric}_ci") or ("", "")
                writer.writerow([r.label, r.experiment, r.role, r.model, subset, metric, block[metric], low, high,
                                 _num(paper), _num(None if paper is None else round(block[metric] - paper, 4)),
                                 block["num_problems"], r.k, r.source, r.note, r.status])
        for metric, value in _sensitivity_cells(r):
            writer.writerow([r.label, r.experiment, r.role, r.model, "overall", metric, value, "", "", "", "",
                             r.overall["num_problems"], r.k, r.source, r.note, r.status])
    return buffer.getvalue()


def _sensitivity_cells(result: Result) -> list[tuple[str, float]]:
    """(metric, value) rows for the CSV: pass@1[judge], maj@k[judge] and verdicts_differ."""
    sensitivity = result.overall.get("grader_sensitivity")
    if sensitivity is None:
        return []
    return [*((f"{metric}[{judge}]", value) for metric in ("pass@1", f"maj@{result.k}")
              for judge, value in sensitivity[metric].items()), ("verdicts_differ", sensitivity["verdicts_differ"])]


def _num(value) -> str:
    return "" if value is None else str(value)


def _subset_section(done: list[Result]) -> list[str]:
    lines = ["## Per subset", ""]
    if not done:
        return lines + ["No results yet."]
    lines += ["| model | subset | problems | k | pass@1 | maj@k | pass@k | mean tokens | no answer |",
              "|---|---|---|---|---|---|---|---|---|"]
    for result in done:
        k = result.k
        for subset, block in {"all": result.overall, **result.metrics["subsets"]}.items():
            tokens = (block.get("tokens") or {}).get("mean")
            lines.append(f"| {result.label} | {subset} | {block['num_problems']} | {k} | {block['pass@1']:.2f} | "
                         f"{block[f'maj@{k}']:.2f} | {block[f'pass@{k}']:.2f} | "
                         f"{'' if tokens is None else f'{tokens:.0f}'} | {block['no_answer']:.2f} |")
    return lines


def _training_section(configs: dict) -> list[str]:
    lines = ["## SFT sets and training", ""]
    for experiment, cfg in configs.items():
        run_dir = Path(cfg.run_dir)
        if "sft" not in cfg.evaluate:
            lines.append(f"- `{experiment}`: evaluation only, no training.")
            continue
        select, sft = _manifest(run_dir, "select"), _manifest(run_dir, "sft")
        if select is None or sft is None:
            lines.append(f"- `{experiment}`: SFT not run yet.")
            continue
        chosen, trained = select.get("summary", {}), sft.get("summary", {})
        rows = read_jsonl(run_dir / "select" / "sft.jsonl")
        s = sft.get("config", {}).get("sft") or cfg.sft
        lines.append(
            f"- `{experiment}`: {len(rows)} traces of {rows[0]['source']} (mean {chosen.get('mean_tokens', 0):.0f} "
            f"student tokens, from {chosen.get('eligible_problems', '?')} problems with an eligible trace; "
            f"`{run_dir}/select/selection_report.md`); {trained.get('backend', s['backend'])}: {s['max_steps']} steps, "
            f"global batch {s['global_batch_size']} packs of {s['pack_size']} tokens, LR {s['lr']} -> {s['min_lr']}, "
            f"seed {s['seed']}" + (f", final loss {trained['final_loss']:.4f}." if "final_loss" in trained else "."))
    return lines


def _manifest(run_dir: Path, stage: str) -> dict | None:
    path = run_dir / stage / "manifest.json"
    if not path.exists():
        return None
    manifest = read_json(path)
    return manifest if manifest.get("status") == "complete" else None


def _provenance_section(configs: dict) -> list[str]:
    lines = ["## Provenance", "", TIE_RULE_NOTE, ""]
    for experiment, cfg in configs.items():
        run_dir = Path(cfg.run_dir)
        lines += [f"### `{experiment}` (`{run_dir}`)", "",
                  "Per stage, as its manifest recorded them: the hash of the config it read, the seeds, models and "
                  "settings in that config, and the command that ran it.", "",
                  "| stage | config hash | fingerprint | settings | finished | command |", "|---|---|---|---|---|---|"]
        versions: dict = {}
        for manifest_path in sorted(run_dir.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime):
            manifest = read_json(manifest_path)
            if manifest.get("stage") == "report":
                continue
            versions = manifest.get("versions", versions)
            reused = f" (reused from `{manifest['reused_from']}`)" if manifest.get("reused_from") else ""
            lines.append(f"| {manifest.get('stage')} | `{manifest.get('config_hash', '')[:12]}` | "
                         f"`{manifest.get('fingerprint', manifest.get('status', ''))[:12]}` | "
                         f"{_settings(manifest.get('config'))} | {manifest.get('ended', '')}{reused} | "
                         f"`{' '.join(manifest.get('argv', []))}` |")
        lines += ["", "Versions: " + (", ".join(f"{name} {v}" for name, v in versions.items()) or "no stage has run") + ".",
                  ""]
    return lines


def _settings(config: dict | None) -> str:
    """`key=value` for the seeds, models and main settings in a manifest's config (nested one or two levels)."""
    if not config:
        return ""
    found = []

    def walk(prefix: str, node) -> None:
        for key, value in node.items():
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict) and name.count(".") < 1:
                walk(name, value)
            elif key in _PROVENANCE_KEYS and value is not None and not isinstance(value, (dict, list)):
                found.append(f"`{name}={value}`")

    walk("", config)
    return ", ".join(found)


def _figures(out_dir: Path, done: list[Result], configs: dict) -> None:
    from nemo_recipes.report import plots

    plots.results_bars(done, out_dir / "results.png", "pass@1 and maj@k (95% CI); black: the paper")
    plots.curves(done, out_dir / "curves.png", "against the number of samples per problem")
    plots.subset_bars(done, out_dir / "subsets.png", "per benchmark subset")
    sft_sets = {}
    for experiment, cfg in configs.items():
        path = Path(cfg.run_dir) / "select" / "sft.jsonl"
        if path.exists():
            sft_sets[experiment] = [row["num_tokens"] for row in read_jsonl(path) if "num_tokens" in row]
    plots.length_histograms(done, sft_sets, out_dir / "lengths.png", "lengths of the generations and of the SFT traces")
