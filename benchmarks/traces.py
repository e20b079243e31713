"""What the trace-structure analysis adds to a run: its share of the demo's time, and its speed at paper scale.

    python benchmarks/traces.py [--skip-demo] [--problems 256] [--samples 64] [--workers 2]

1. The demo: runs `python -m nemo_recipes experiment=demo` into a fresh folder (the toy models cached, as after a
   first `make demo`), then takes the traces stage's seconds from its manifest and times the report's trace section
   (table and figure) on the finished run. Prints their sum against the whole run's wall time; the target is < 5%.
2. Paper scale: the evaluation of one model on Comp-Math-24-25 -- problems x samples synthetic generations of 10-40
   KB, as `make bench-grading` makes them -- analysed (read, markers, lengths, boxed answers) against grading the
   same file with the grading stage's code, the CPU stage beside it in every run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grading import make_records  # benchmarks/grading.py: this script's folder is first on sys.path

REPO = Path(__file__).resolve().parents[1]


def demo_share() -> None:
    from nemo_recipes.config import compose_config
    from nemo_recipes.pipeline import stage_graph
    from nemo_recipes.report.plots import _pyplot
    from nemo_recipes.report.render import load_result
    from nemo_recipes.report.traces import trace_structure_section
    from nemo_recipes.toy.build import ensure_toy_models

    ensure_toy_models()  # built once per recipe: a first `make demo` pays for it, not the analysis's share
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "demo"
        start = time.perf_counter()
        demo = subprocess.run([sys.executable, "-m", "nemo_recipes", "experiment=demo", f"run_dir={run_dir}",
                               "progress=false"], cwd=REPO, capture_output=True, text=True)
        whole = time.perf_counter() - start
        if demo.returncode:
            sys.exit(f"the demo failed:\n{demo.stderr[-3000:]}")
        cfg = compose_config(["experiment=demo", f"run_dir={run_dir}"])
        seconds = {stage.name: json.loads((run_dir / stage.name / "manifest.json").read_text())["seconds"]
                   for stage in stage_graph(cfg)}
        results = [load_result(role, "demo", role, run_dir) for role in cfg.evaluate]
        _pyplot()  # the report stage has imported matplotlib for its other figures already: not the section's cost
        start = time.perf_counter()
        trace_structure_section(Path(folder), results, {"demo": cfg})
        section = time.perf_counter() - start
    analysis = seconds["traces"] + section
    print(f"demo: the whole run {whole:.1f} s wall (its stages {sum(seconds.values()):.1f} s: "
          + ", ".join(f"{name} {value:.1f}" for name, value in seconds.items()) + ")")
    print(f"demo: trace analysis {seconds['traces']:.2f} s (stage) + {section:.2f} s (report section and figure) = "
          f"{analysis:.2f} s, {100 * analysis / whole:.1f}% of the run (target < 5%)")


def paper_scale(problems: int, samples: int, workers: int) -> None:
    from nemo_recipes.config import compose_config
    from nemo_recipes.grading.cli import grade_file
    from nemo_recipes.io import iter_jsonl
    from nemo_recipes.stages.traces import trace_samples
    from nemo_recipes.traces.analysis import measure
    from nemo_recipes.traces.markers import markers_from_config

    markers = markers_from_config(compose_config([]).markers)
    records = make_records(problems, samples, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "graded.jsonl"
        with open(source, "w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record) + "\n")
        print(f"paper scale: {len(records)} generations, {source.stat().st_size / 1e6:.0f} MB of JSONL; machine: "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} just before timing")
        start = time.perf_counter()
        traces = measure(trace_samples(iter_jsonl(source)), markers)
        analysis = time.perf_counter() - start
        start = time.perf_counter()
        grade_file(source, Path(folder) / "regraded.jsonl", subset_key="subset", workers=workers, progress=False)
        grading = time.perf_counter() - start
    print(f"paper scale: analysis {analysis:.2f} s ({traces['samples']} samples, median "
          f"{traces['tokens']['median']:.0f} tokens, markers in {traces['with_markers']:.0%}); grading the same file "
          f"{grading:.2f} s with {workers} workers; analysis / grading = {analysis / grading:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-demo", action="store_true", help="only the paper-scale comparison")
    parser.add_argument("--problems", type=int, default=256)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not args.skip_demo:
        demo_share()
    paper_scale(args.problems, args.samples, args.workers)


if __name__ == "__main__":
    main()
