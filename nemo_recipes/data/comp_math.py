"""Comp-Math-24-25, the paper's benchmark: NeMo-Skills' file at a pinned commit, sha256-checked and cached.

256 problems (research/scoring.md §1): AIME 2024 (30), AIME 2025 (30), HMMT Nov 2024 (62), Feb 2024 (68) and
Feb 2025 (66), in three metrics subsets (`subset_for_metrics`): aime24, aime25, hmmt-24-25. NeMo-Skills'
``prepare.py`` only copies ``test.txt`` to ``test.jsonl``; we read the same bytes. The golds are kept as published,
for parity with the paper; GOLD_ISSUES lists the ones known to be wrong or ungradable, for the report.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from nemo_recipes.errors import UserError
from nemo_recipes.io import make_shareable, read_jsonl, sha256_file

COMP_MATH_COMMIT = "0b012df8a09cd4730d31b16e90a0d8f13d145fb8"
COMP_MATH_URL = (
    f"https://raw.githubusercontent.com/NVIDIA/NeMo-Skills/{COMP_MATH_COMMIT}"
    "/nemo_skills/dataset/comp-math-24-25/test.txt"
)
COMP_MATH_SHA256 = "c83c51386c1bb15e26b665caf880e8158e57585bffb3579a824f93eec4c49190"
SUBSETS = ("aime24", "aime25", "hmmt-24-25")
SUBSET_KEY = "subset_for_metrics"


@dataclass(frozen=True)
class GoldIssue:
    kind: str  # "wrong": the published value is false; "misparsed": math-verify reads it wrongly; "ungradable": prose
    reason: str
    corrected_answer: str | None = None  # the true answer, where one is known


# research/scoring.md §1.5, each checked there numerically or against MathArena's independent key.
GOLD_ISSUES: dict[str, GoldIssue] = {
    "hmmt_F_2025_geometry_8": GoldIssue(
        "wrong", "a square root became a nested \\sqrt (MathArena's key and a numeric solve give MD = 2.449490)",
        "\\sqrt{6}",
    ),
    "hmmt_F_2025_guts_15": GoldIssue(
        "wrong", "a square root became a nested \\sqrt (a numeric solve gives DE = 3.605551)", "\\sqrt{13}"
    ),
    "hmmt_F_2024_guts_32": GoldIssue(
        "wrong",
        "a cube root became a square root, making the gold purely imaginary (the minimum Re(x) is -1.3336915)",
        "-\\sqrt[3]{\\frac{\\sqrt{33}-1}{2}}",  # the real cube root: sympy's of a negative number is complex
    ),
    "hmmt_N_2024_guts_25": GoldIssue(
        "wrong", "the answer was wrapped in an extra \\sqrt (a numeric solve gives BC = 6.692130)",
        "\\sqrt{6}+3\\sqrt{2}",
    ),
    "hmmt_F_2024_guts_11": GoldIssue(
        "misparsed", "math-verify reads '98,118,122,142' as one number (thousands separators); only the "
        "space-free string comparison matches a list answer",
    ),
    "hmmt_F_2025_guts_36": GoldIssue(
        "misparsed", "an ordered sequence that math-verify reads as the set {5, 6, 7}: '5,6,7' scores correct",
    ),
    "hmmt_F_2025_team_9": GoldIssue(
        "misparsed", "a prose answer math-verify reduces to p = 5, so the incomplete answer '5' scores correct",
    ),
    "hmmt_F_2024_team_10": GoldIssue("ungradable", "a prose characterisation of Gaussian rationals"),
    "hmmt_F_2025_team_10": GoldIssue("ungradable", "a prose characterisation of the integers n"),
    "hmmt_F_2024_team_4": GoldIssue("ungradable", "an elided sequence '0,3,6,9, \\ldots, 6048': only a literal match"),
    "hmmt_F_2024_team_6": GoldIssue("ungradable", "a case split of functional equations: only a literal match"),
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("NEMO_RECIPES_CACHE") or Path.home() / ".cache" / "nemo_recipes")


def load_comp_math(
    path: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None, url: str = COMP_MATH_URL
) -> list[dict]:
    """The 256 problems as `id, problem, expected_answer, subset` plus the source fields.

    `path` reads a local copy of test.txt; otherwise it is downloaded from `url` once into `cache_dir`. Either way
    its sha256 must be COMP_MATH_SHA256.
    """
    if path is not None:
        path = Path(path)
        _check_sha256(path, f"{path}")
    else:
        path = fetch_comp_math(cache_dir=cache_dir, url=url)
    records = read_jsonl(path, required_keys=("id", "problem", "expected_answer", SUBSET_KEY))
    return [{**record, "subset": record[SUBSET_KEY]} for record in records]


def fetch_comp_math(*, cache_dir: str | os.PathLike | None = None, url: str = COMP_MATH_URL) -> Path:
    """The cached, checked copy of test.txt, downloading it first if absent or damaged."""
    target = Path(cache_dir or default_cache_dir()) / "comp-math-24-25" / COMP_MATH_COMMIT / "test.jsonl"
    if target.is_file() and sha256_file(target) == COMP_MATH_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".test.jsonl.", suffix=".tmp")
    make_shareable(descriptor)
    try:
        with os.fdopen(descriptor, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    while block := response.read(1 << 16):
                        out.write(block)
            except (urllib.error.URLError, OSError) as error:
                raise UserError(
                    f"could not download Comp-Math-24-25 from {url} ({error}); pass a local copy of test.txt instead."
                ) from None
        _check_sha256(Path(temporary), url)
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return target


def corrected_expected_answer(record: dict) -> str:
    """The gold with the known-wrong values replaced: the report's corrected-gold column."""
    issue = GOLD_ISSUES.get(record["id"])
    if issue is not None and issue.kind == "wrong" and issue.corrected_answer is not None:
        return issue.corrected_answer
    return record["expected_answer"]


def _check_sha256(path: Path, source: str) -> None:
    if not path.is_file():
        raise UserError(f"{path}: file not found.")
    actual = sha256_file(path)
    if actual != COMP_MATH_SHA256:
        raise UserError(
            f"{source}: sha256 is {actual}, expected {COMP_MATH_SHA256} (NeMo-Skills @ {COMP_MATH_COMMIT[:8]})."
        )
