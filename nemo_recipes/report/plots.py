"""The report's figure: pass@1 and maj@k per model with their 95% bootstrap intervals."""

from __future__ import annotations

from pathlib import Path


def results_bar_chart(rows: list[dict], k: int, path: Path, title: str) -> None:
    """rows: [{"model": str, "pass@1": float, "pass@1_ci": [lo, hi], "maj": float, "maj_ci": [lo, hi]}]."""
    import matplotlib

    matplotlib.use("Agg")  # no display on CI machines and GPU nodes
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(1.8 + 1.6 * len(rows), 3.6), dpi=120)
    width = 0.38
    for offset, (key, label) in enumerate((("pass@1", "pass@1"), ("maj", f"maj@{k}"))):
        xs = [i + (offset - 0.5) * width for i in range(len(rows))]
        values = [row[key] for row in rows]
        errors = [[v - row[f"{key}_ci"][0] for v, row in zip(values, rows)],
                  [row[f"{key}_ci"][1] - v for v, row in zip(values, rows)]]
        bars = axis.bar(xs, values, width, yerr=errors, capsize=3, label=label)
        axis.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    axis.set_xticks(range(len(rows)), [row["model"] for row in rows], fontsize=8)
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(0, min(100, max(max(r["pass@1_ci"][1], r["maj_ci"][1]) for r in rows) * 1.25 + 5))
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8, frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
