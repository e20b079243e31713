"""The toy demo's exact numbers in the locked environment: recorded once, then checked on every `make test`.

    make record-demo        ==  python tests/demo_record.py

runs `make demo`'s setting and the small setting of the tests (SMALL in conftest.py), each from scratch in a
temporary folder, writes their numbers with the library versions they came from to demo_record.json beside this file,
and rewrites the README's expected-numbers block from it. integration/test_demo_record.py checks that the small
setting still gives exactly the recorded numbers and that the README shows the record, so a dependency bump that
moves a result fails there instead of leaving the README wrong.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from conftest import REPO, SMALL, run_small

RECORD = Path(__file__).with_name("demo_record.json")
README = REPO / "README.md"
LOCK = "requirements/locks/venv.txt"
DEMO = ["experiment=demo", "progress=false"]  # `make demo`, without progress bars
# The libraries the toy models and the pipeline's numbers depend on; the README names them.
NAMED_VERSIONS = ("python", "torch", "transformers", "tokenizers", "math-verify")
README_START = "<!-- demo-numbers: written by `make record-demo` from tests/demo_record.json -->"
README_END = "<!-- /demo-numbers -->"


def numbers(run_dir: Path) -> dict:
    """What a dependency bump would move, read from a finished demo run folder."""
    teacher = _manifest(run_dir, "grade_teacher")["summary"]
    metrics = json.loads((run_dir / "metrics" / "metrics.json").read_text())
    models = json.loads((run_dir / "traces" / "traces.json").read_text())["models"]
    students = {}
    for role, result in metrics.items():
        overall, k = result["metrics"]["overall"], result["metrics"]["k"]
        traces = models[role]
        students[role] = {"pass@1": overall["pass@1"], "pass@1_ci": overall["pass@1_ci"],
                          f"maj@{k}": overall[f"maj@{k}"], "num_problems": overall["num_problems"],
                          "num_generations": overall["num_generations"],
                          "answers_with_markers": round(traces["with_markers"] * traces["samples"]),
                          "median_tokens": traces["tokens"]["median"]}
    return {
        "teacher_correct": teacher["num_correct"],
        "teacher_samples": teacher["num_graded"],
        "sft_examples": _manifest(run_dir, "select")["summary"]["num_examples"],
        "sft_final_loss": _manifest(run_dir, "sft")["summary"]["final_loss"],
        "students": students,
    }


def versions(run_dir: Path) -> dict[str, str]:
    """The library versions the run's stages recorded in their manifests (the pipeline writes them)."""
    return _manifest(run_dir, "sft")["versions"]


def readme_block(record: dict) -> str:
    """The README's expected-numbers block, between its markers, for `make demo`'s recorded numbers."""
    demo, named = record["demo"], record["versions"]
    base, sft = demo["students"]["base"], demo["students"]["sft"]
    k = next(key for key in sft if key.startswith("maj@"))
    samples = sft["num_generations"] // sft["num_problems"]
    versions_named = ", ".join(f"{name} {named[name]}" for name in NAMED_VERSIONS)
    intro = (f"Expected numbers, exactly: `runs/demo/report/report.md` of `make demo` in the locked environment "
             f"(`{LOCK}`: {versions_named}); {sft['num_problems']} problems x {samples} samples, brackets are 95% "
             f"bootstrap intervals.")
    rows = [("toy base student", base), (f"toy student + SFT on {demo['sft_examples']} teacher traces", sft)]
    table = [f"| model | pass@1 | {k} | command |", "|---|---|---|---|"] + [
        f"| {label} | {s['pass@1']:.2f} [{s['pass@1_ci'][0]:.1f}, {s['pass@1_ci'][1]:.1f}] | {s[k]:.2f} | `make demo` |"
        for label, s in rows]
    ratio = f" ({sft['median_tokens'] / base['median_tokens']:.1f}x the base's)" if base["median_tokens"] else ""
    outro = (f"The teacher solved {demo['teacher_correct']} of its {demo['teacher_samples']} sampled traces and SFT "
             f"ended at loss {demo['sft_final_loss']:.4f}. Trace structure: the base wrote a reflection or "
             f"verification marker in {base['answers_with_markers']} of its {base['num_generations']} answers, median "
             f"{base['median_tokens']:.0f} tokens; the student + SFT in {sft['answers_with_markers']} of "
             f"{sft['num_generations']}, median {sft['median_tokens']:.0f} tokens{ratio}. `make test` checks that the "
             f"small setting of the same demo gives exactly its recorded numbers (`{RECORD.relative_to(REPO)}`); "
             f"after `make lock` moves a pin, `make record-demo` runs both settings again and rewrites the record and "
             f"this table.")
    return "\n".join([README_START, _wrap(intro), "", *table, "", _wrap(outro), README_END])


def _wrap(paragraph: str) -> str:
    return textwrap.fill(paragraph, width=118, break_long_words=False, break_on_hyphens=False)


def replace_readme_block(readme: str, block: str) -> str:
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.DOTALL)
    if len(pattern.findall(readme)) != 1:
        raise SystemExit(f"README.md must hold the expected-numbers block once, from '{README_START}' "
                         f"to '{README_END}'.")
    return pattern.sub(lambda _: block, readme)


def _manifest(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "manifest.json").read_text())


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")


def main() -> None:
    from nemo_recipes.toy.build import ToyRecipe

    with tempfile.TemporaryDirectory(prefix="record-demo-") as scratch:
        demo_dir, small_dir = Path(scratch) / "demo", Path(scratch) / "small" / "demo"
        _run([sys.executable, "-m", "nemo_recipes", *DEMO, f"run_dir={demo_dir}"])
        small = run_small(small_dir)
        if small.returncode != 0:
            raise SystemExit(f"the small demo failed:\n{small.stderr[-3000:]}")
        record = {
            "versions": versions(demo_dir),
            "toy_models": ToyRecipe().fingerprint(),
            "demo": {"overrides": DEMO, **numbers(demo_dir)},
            "small_demo": {"overrides": SMALL, **numbers(small_dir)},
        }
    old = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    README.write_text(replace_readme_block(README.read_text(), readme_block(record)))
    print(f"wrote {RECORD.relative_to(REPO)} and the README's expected numbers:")
    for setting in ("demo", "small_demo"):
        for key, value in flat(record[setting]).items():
            before = flat(old.get(setting, {})).get(key, value)
            print(f"  {setting} {key}: {value}" + ("" if before == value else f" (was {before})"))


def flat(numbers: dict, prefix: str = "") -> dict:
    """{"students.sft.pass@1": 40.9, ...}: one key per recorded number, for printing and diffing."""
    keyed = {}
    for key, value in numbers.items():
        if isinstance(value, dict):
            keyed.update(flat(value, f"{prefix}{key}."))
        elif key != "overrides":
            keyed[f"{prefix}{key}"] = value
    return keyed


if __name__ == "__main__":
    main()
