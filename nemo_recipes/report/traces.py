"""The report's "Trace structure" section: did each model enter reasoning mode, with the numbers behind the verdict.

One table row per model the report shows, then one per distinct SFT set and teacher of its runs, all read from each
run's `traces/traces.json` (stage traces); one figure, `traces.png`: markers per 1,000 tokens and the length
distribution of every row.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from nemo_recipes.io import read_json
from nemo_recipes.traces.analysis import describe

HEADING = "Trace structure"
FIGURE = "traces.png"


@dataclasses.dataclass
class TraceRow:
    label: str
    runs: list[str]              # the experiments whose traces these are (an SFT set shared by several runs: all)
    traces: dict | None          # the measures of nemo_recipes.traces.analysis; None when the run has none
    status: str = "complete"     # why there are no measures

    @property
    def is_model(self) -> bool:
        return self.traces is not None and "verdict" in self.traces


def trace_structure_section(out_dir: Path, results: list, configs: dict) -> list[str]:
    """The section's markdown lines, and traces.png in out_dir when any run has measures. `results` are the
    report's rows (nemo_recipes.report.render.Result), `configs` each run's config by experiment name."""
    (out_dir / FIGURE).unlink(missing_ok=True)  # a figure from an earlier rendering must not pass for this one's
    rows = trace_rows(results)
    lines = [f"## {HEADING}", "", _explanation(next(iter(configs.values()))), ""]
    measured = [row for row in rows if row.traces and row.traces["samples"]]
    if not measured:
        return lines + ["No run of this report has a trace analysis yet."]
    kinds = list(measured[0].traces["per_1k_tokens"])
    lines += ["| traces | run | samples | median tokens [p10, p90] | truncated | boxed | "
              + " | ".join(f"{kind} per 1k tokens" for kind in kinds)
              + " | samples with markers | JSD to SFT set | reasoning mode |",
              "|---" * (9 + len(kinds)) + "|"]
    lines += [_table_row(row, kinds) for row in rows]
    lines += ["", "The verdicts and the numbers they were decided on:", ""]
    lines += [f"- {row.label} (`{row.runs[0]}`): {describe(row.traces['verdict'])}" for row in rows if row.is_model]
    _figure(measured, out_dir / FIGURE, kinds)
    return lines + ["", f"![trace structure]({FIGURE})"]


def trace_rows(results: list) -> list[TraceRow]:
    """A row per report row with metrics (status otherwise), then each run's SFT set and teacher, once per
    distinct set of traces (the main run and the scale ablation's runs select from the same teacher samples)."""
    analyses: dict[str, dict] = {}
    rows, sets = [], {}
    for result in results:
        path = result.run_dir / "traces" / "traces.json"
        if not result.metrics or not path.exists():
            status = result.status if not result.metrics else "traces not run"
            rows.append(TraceRow(result.label, [result.experiment], None, status))
            continue
        if result.experiment not in analyses:
            analyses[result.experiment] = read_json(path)
        rows.append(TraceRow(result.label, [result.experiment], analyses[result.experiment]["models"][result.role]))
    for experiment, analysis in analyses.items():
        for key, label in (("sft_set", "SFT set: {source}"), ("teacher", "teacher's eligible traces: {model}")):
            traces = analysis.get(key)
            if traces is None:
                continue
            same = json.dumps(traces, sort_keys=True)
            if same in sets:
                sets[same].runs.append(experiment)
            else:
                sets[same] = TraceRow(label.format(**traces), [experiment], traces)
    return rows + list(sets.values())


def _explanation(cfg) -> str:
    rule = cfg.traces.reasoning_mode
    markers = "; ".join(f"{kind}: {', '.join(f'`{p}`' for p in patterns)}" for kind, patterns in cfg.markers.items())
    return (f"Did each model enter reasoning mode? A model is in it when markers appear in at least "
            f"{rule.min_share_with_markers:.0%} of its samples, its median generation is at least "
            f"{rule.min_length_vs_base:g}x as long as its run's base model's (not asked of the base itself), and at "
            f"most {rule.max_truncated:.0%} of its samples ran into max_tokens (`traces.reasoning_mode`; a rule of "
            f"ours: the paper's own criterion was not found). Markers are case-insensitive regular expressions "
            f"(`markers`, the list `selection=no_keywords` removes) -- {markers}. JSD is the Jensen-Shannon "
            f"divergence (base 2) of a row's marker mix from its run's SFT set's: 0 for the same proportions, 1 for "
            f"no marker in common. Lengths are in the generating model's tokens (the SFT set: the student's); "
            f"boxed is the share with a `\\boxed{{}}` answer.")


def _table_row(row: TraceRow, kinds: list[str]) -> str:
    runs = ", ".join(f"`{run}`" for run in row.runs)
    if not row.traces:
        return f"| {row.label} | {runs} | {row.status} |" + " |" * (6 + len(kinds))
    t = row.traces
    tokens = t["tokens"]
    cells = [row.label, runs, str(t["samples"]),
             f"{tokens['median']:.0f} [{tokens['p10']:.0f}, {tokens['p90']:.0f}]" if tokens else "",
             _share(t["truncated"]), _share(t["boxed"]),
             *(_number(t["per_1k_tokens"].get(kind)) for kind in kinds), _share(t["with_markers"]),
             _number(t.get("divergence_from_sft_set"), "{:.2f}"),
             ("**yes**" if t["verdict"]["reasoning_mode"] else "no") if row.is_model else ""]
    return "| " + " | ".join(cells) + " |"


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


def _number(value: float | None, fmt: str = "{:.1f}") -> str:
    return "" if value is None else fmt.format(value)


def _figure(rows: list[TraceRow], path: Path, kinds: list[str]) -> None:
    """Markers per 1,000 tokens (a bar per kind) above token lengths (median, quartiles, p10-p90), a column per row;
    models in reasoning mode have their label in bold."""
    from nemo_recipes.report.plots import _pyplot, _save, _wrap

    plt = _pyplot()
    figure, (markers, lengths) = plt.subplots(2, 1, figsize=(max(6.0, 1.5 + 1.25 * len(rows)), 6.4), dpi=120,
                                              sharex=True)
    positions = range(len(rows))
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        xs = [x + (i - (len(kinds) - 1) / 2) * width for x in positions]
        bars = markers.bar(xs, [row.traces["per_1k_tokens"].get(kind) or 0.0 for row in rows], width, label=kind)
        markers.bar_label(bars, fmt="%.1f", fontsize=6, padding=2)
    markers.set_ylabel("markers per 1,000 tokens", fontsize=8)
    markers.legend(fontsize=7, frameon=False)
    stats = [{"med": t["median"], "q1": t["p25"], "q3": t["p75"], "whislo": t["p10"], "whishi": t["p90"],
              "mean": t["mean"]} for t in (row.traces["tokens"] for row in rows)]
    lengths.bxp(stats, positions=list(positions), showmeans=True, showfliers=False)
    lengths.set_ylabel("tokens", fontsize=8)
    lengths.set_title("length: median, quartiles, p10-p90 whiskers, mean (triangle)", fontsize=8)
    if max(s["whishi"] for s in stats) > 20 * max(1.0, min(s["whislo"] for s in stats)):
        lengths.set_yscale("log")
    lengths.set_xticks(list(positions), [_wrap(row.label + _verdict_mark(row), 20) for row in rows], fontsize=6)
    for label, row in zip(lengths.get_xticklabels(), rows):
        if row.is_model and row.traces["verdict"]["reasoning_mode"]:
            label.set_fontweight("bold")
    for axis in (markers, lengths):
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("trace structure: the models (in reasoning mode or not), their SFT sets and teachers", fontsize=9)
    _save(figure, path)


def _verdict_mark(row: TraceRow) -> str:
    if not row.is_model:
        return ""
    return " [reasoning mode]" if row.traces["verdict"]["reasoning_mode"] else " [not reasoning]"
