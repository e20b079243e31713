"""The reproduction targets in `reproduce/`: one file per paper table, naming the runs it needs and the paper's figures.

    python -m nemo_recipes.reproduce main dry_run=true      # what `make reproduce-main ARGS="dry_run=true"` runs

A target file:

    name: main                      # the file's stem
    title: ...
    make: reproduce-main            # the Makefile target that runs it
    rows:                           # one table row per (run, model role)
      - label: Qwen2.5-32B + SFT on 20 QwQ-32B-Preview traces
        experiment: main            # conf/experiment/<experiment>.yaml: the run (runs/<experiment_name>/)
        role: sft                   # base | sft: which evaluated model of that run
        paper: {pass@1: 17.10, maj@64: 27.73}   # null where the paper's figure was not obtained
        source: where the figures come from
        note: optional, e.g. why a figure is blank
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

from nemo_recipes.errors import UserError

REPRODUCE_DIR = Path(os.environ.get("NEMO_RECIPES_REPRODUCE", Path(__file__).resolve().parents[1] / "reproduce"))
PAPER_METRICS = ("pass@1", "maj@64")
PAPER_BENCHMARK = "comp-math-24-25"  # every figure in reproduce/ is on Comp-Math-24-25
ROLES = ("base", "sft")


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    experiment: str
    role: str
    paper: dict            # metric -> the paper's figure (percent) or None when it was not obtained
    source: str = ""
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    title: str
    make: str
    rows: tuple[Row, ...]
    description: str = ""

    @property
    def experiments(self) -> list[str]:
        """The runs the target needs, in the order its rows first name them."""
        return list(dict.fromkeys(row.experiment for row in self.rows))


def target_names() -> list[str]:
    return sorted(path.stem for path in REPRODUCE_DIR.glob("*.yaml"))


def load_target(name: str) -> Target:
    path = REPRODUCE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"unknown reproduction target '{name}'; the targets in {REPRODUCE_DIR} are "
                        f"{', '.join(target_names())}.")
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping with name, title, make and rows.")
    for key in ("name", "title", "make", "rows"):
        if key not in data:
            raise UserError(f"{path}: missing key '{key}'.")
    if not isinstance(data["rows"], list) or not data["rows"]:
        raise UserError(f"{path}: rows must be a non-empty list.")
    if data["name"] != name:
        raise UserError(f"{path}: name is '{data['name']}' but the file is {name}.yaml; make them the same.")
    rows = tuple(_row(path, index, row) for index, row in enumerate(data["rows"]))
    return Target(name=name, title=data["title"], make=data["make"], rows=rows, description=data.get("description", ""))


def _row(path: Path, index: int, row: dict) -> Row:
    where = f"{path}: rows[{index}]"
    if not isinstance(row, dict):
        raise UserError(f"{where} must be a mapping with label, experiment, role and paper.")
    for key in ("label", "experiment", "role", "paper"):
        if key not in row:
            raise UserError(f"{where}: missing key '{key}'.")
    if not isinstance(row["paper"], dict):
        raise UserError(f"{where}.paper must map pass@1 and maj@64 to figures (null where not obtained).")
    if row["role"] not in ROLES:
        raise UserError(f"{where}.role is '{row['role']}'; use one of {', '.join(ROLES)}.")
    from nemo_recipes.config import CONF_DIR

    if not (CONF_DIR / "experiment" / f"{row['experiment']}.yaml").is_file():
        raise UserError(f"{where}.experiment: there is no conf/experiment/{row['experiment']}.yaml.")
    unknown = set(row["paper"]) - set(PAPER_METRICS)
    if unknown:
        raise UserError(f"{where}.paper has {sorted(unknown)}; the paper reports {', '.join(PAPER_METRICS)}.")
    blank = [metric for metric in PAPER_METRICS if row["paper"].get(metric) is None]
    if blank and not row.get("note"):
        raise UserError(f"{where}: the paper's {', '.join(blank)} is blank; add a note saying why.")
    paper = {metric: row["paper"].get(metric) for metric in PAPER_METRICS}
    return Row(label=row["label"], experiment=row["experiment"], role=row["role"], paper=paper,
               source=row.get("source", ""), note=row.get("note", ""))


def paper_figures(cfg, row: Row | None) -> tuple[dict, str]:
    """The paper's figures a run's numbers are compared with, and a note when none apply to this run's config."""
    if row is None:
        return {}, ""
    if cfg.benchmark.name != PAPER_BENCHMARK:
        return {}, (f"the paper's figures are on {PAPER_BENCHMARK}; this run's benchmark is {cfg.benchmark.name}, so "
                    f"none is compared")
    if cfg.benchmark.get("limit"):
        return {}, (f"the paper's figures are on all of {PAPER_BENCHMARK}; this run takes its first "
                    f"{cfg.benchmark.limit} problems (benchmark.limit), so none is compared")
    return dict(row.paper), row.note


def paper_row(experiment: str, role: str) -> Row | None:
    """The first target row for this run and role: where a single run's report finds the paper's figures."""
    return _rows_by_run(_files_state()).get((experiment, role))


def _files_state() -> tuple:
    return tuple((path.name, path.stat().st_mtime_ns) for path in sorted(REPRODUCE_DIR.glob("*.yaml")))


@functools.lru_cache(maxsize=4)
def _rows_by_run(files_state: tuple) -> dict:
    """{(experiment, role): row} over every target, the headline table first; read again when a file changes."""
    rows: dict = {}
    for name in sorted(target_names(), key=lambda name: name != "main"):
        for row in load_target(name).rows:
            rows.setdefault((row.experiment, row.role), row)
    return rows
