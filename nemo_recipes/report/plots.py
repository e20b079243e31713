"""The report's figures, one function per PNG. Each takes the report's results (nemo_recipes.report.render.Result)
that have metrics; matplotlib is imported inside, with the Agg backend (no display on CI machines or GPU nodes)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path)
    _pyplot().close(figure)


def results_bars(results: list, path: Path, title: str) -> None:
    """pass@1 and maj@k (each run's own k) per model with their 95% bootstrap intervals; the paper's as marks."""
    from nemo_recipes.report.render import paper_metric

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(2.2 + 1.7 * len(results), 3.8), dpi=120)
    width = 0.38
    top = 0.0
    for offset, kind in enumerate(("pass@1", "maj@k")):
        xs = [i + (offset - 0.5) * width for i in range(len(results))]
        metrics = ["pass@1" if kind == "pass@1" else f"maj@{r.k}" for r in results]
        values = [r.overall[m] for r, m in zip(results, metrics)]
        intervals = [r.overall.get(f"{m}_ci") or [v, v] for r, m, v in zip(results, metrics, values)]
        bars = axis.bar(xs, values, width, yerr=[[v - lo for v, (lo, _) in zip(values, intervals)],
                                                 [hi - v for v, (_, hi) in zip(values, intervals)]],
                        capsize=3, label=kind)
        axis.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
        top = max(top, *(hi for _, hi in intervals))
        papers = [r.paper.get(paper_metric(m, r.k)) if paper_metric(m, r.k) else None for r, m in zip(results, metrics)]
        marked = [(x, p) for x, p in zip(xs, papers) if p is not None]
        if marked:
            axis.scatter(*zip(*marked), marker="_", s=400, color="black", zorder=3,
                         label="paper" if offset == 0 else None)
            top = max(top, *(p for _, p in marked))
    axis.set_xticks(range(len(results)), [_wrap(r.label) for r in results], fontsize=7)
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(0, min(100, top * 1.25 + 5))
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, frameon=False)
    _save(figure, path)


def curves(results: list, path: Path, title: str) -> None:
    """maj@k and pass@1[avg-of-k] against the number of samples k, one line per model."""
    results = [r for r in results if "curve" in r.overall]  # runs from before the curves were recorded have none
    if not results:
        return
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120, sharey=True)
    for result in results:
        points = result.overall["curve"]
        ks = [p["k"] for p in points]
        axes[0].plot(ks, [p["maj"] for p in points], marker="o", ms=3, label=_wrap(result.label, 40))
        axes[1].plot(ks, [p["pass@1"] for p in points], marker="o", ms=3)
    for axis, name in zip(axes, ("maj@k", "pass@1 over the first k samples")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("k (samples per problem)")
        axis.set_title(name, fontsize=9)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(fontsize=6, frameon=False)
    figure.suptitle(title, fontsize=9)
    _save(figure, path)


def subset_bars(results: list, path: Path, title: str) -> None:
    """pass@1 and maj@k (each run's own k) per benchmark subset, one bar per model."""
    subsets = sorted({name for r in results for name in r.metrics["subsets"]})
    if not subsets:
        return
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(4 + 1.4 * len(subsets) * 2, 3.6), dpi=120, sharey=True)
    width = 0.8 / len(results)
    for axis, metric in zip(axes, ("pass@1", "maj@k")):
        for i, result in enumerate(results):
            key = metric if metric == "pass@1" else f"maj@{result.k}"
            values = [result.metrics["subsets"].get(name, {}).get(key, 0.0) for name in subsets]
            xs = [s + (i - (len(results) - 1) / 2) * width for s in range(len(subsets))]
            axis.bar(xs, values, width, label=_wrap(result.label, 40))
        axis.set_xticks(range(len(subsets)), subsets, fontsize=8)
        axis.set_title(metric, fontsize=9)
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(fontsize=6, frameon=False)
    figure.suptitle(title, fontsize=9)
    _save(figure, path)


def length_histograms(results: list, sft_sets: dict[str, list[int]], path: Path, title: str) -> None:
    """Generation lengths per model (correct and incorrect samples), and the token lengths of each SFT set."""
    plt = _pyplot()
    panels = [r for r in results if r.lengths] + ([None] if sft_sets else [])
    if not panels:
        return
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.6 * rows), dpi=120, squeeze=False)
    for axis, result in zip(axes.flat, panels):
        if result is None:
            for name, lengths in sft_sets.items():
                axis.hist(lengths, bins=20, alpha=0.6, label=name)
            axis.set_title("SFT traces (student tokens)", fontsize=8)
            axis.legend(fontsize=6, frameon=False)
            continue
        for verdict in ("correct", "incorrect"):
            if result.lengths.get(verdict):
                axis.hist(result.lengths[verdict], bins=30, alpha=0.6, label=verdict)
        axis.set_title(_wrap(result.label, 45), fontsize=7)
        axis.legend(fontsize=6, frameon=False)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    for axis in axes[-1]:
        axis.set_xlabel("generated tokens", fontsize=7)
    figure.suptitle(title, fontsize=9)
    _save(figure, path)


def _wrap(text: str, width: int = 22) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
