"""Problem-set loaders: the paper's seed problems, the benchmark, or a toy set -- all into one schema.

Every loader returns records `id, problem, expected_answer, subset` (plus the source's own fields), the schema of
DESIGN.md section 2 that NeMo-Skills' tools also read.
"""

from __future__ import annotations

from pathlib import Path

from nemo_recipes.errors import UserError
from nemo_recipes.io import read_jsonl

SOURCES = ("toy", "comp_math", "hf", "jsonl")
# What the prepare stage writes: the seed problems the teacher samples, the benchmark the students are graded on.
SEED_PROBLEMS_FILE = "problems.jsonl"
BENCHMARK_FILE = "benchmark.jsonl"
_KNOWN_SIZES = {"comp_math": 256, "hf": 50}


def prepared_problems_file(run_dir, role: str) -> Path:
    """The prepared set a model role samples: the seed problems for the teacher, the benchmark for the students."""
    return Path(run_dir) / "prepare" / (SEED_PROBLEMS_FILE if role == "teacher" else BENCHMARK_FILE)


def planned_problem_count(cfg, run_dir, role: str) -> int | None:
    """How many problems `role` samples: counted when prepare has run, else the configured or known size."""
    path = prepared_problems_file(run_dir, role)
    if path.exists():
        with open(path, encoding="utf-8") as lines:
            return sum(1 for _ in lines)
    spec = cfg.problems if role == "teacher" else cfg.benchmark
    if spec.get("limit"):
        return int(spec.limit)
    return spec.get("num_problems") or _KNOWN_SIZES.get(spec.source)


def load_problem_set(spec, *, cache_dir: str, key: str, exclude_expressions: frozenset[str] = frozenset()) -> list[dict]:
    """Load the set described by the config node `spec` (found at config key `key`, named in errors)."""
    if spec.source not in SOURCES:
        raise UserError(f"{key}.source: unknown source '{spec.source}'; use one of {', '.join(SOURCES)}.")
    if spec.source == "toy":
        from nemo_recipes.toy.task import make_problems

        records = make_problems(spec.num_problems, seed=spec.seed, prefix=spec.name, exclude=exclude_expressions)
        records = [{**r, "subset": spec.subset} for r in records]
    elif spec.source == "comp_math":
        from nemo_recipes.data.comp_math import load_comp_math

        records = load_comp_math(spec.local_path, cache_dir=cache_dir)
    elif spec.source == "jsonl" or spec.get("local_path"):
        records = _from_jsonl(spec, key)
    else:
        records = _from_hub(spec, key, cache_dir)
    if spec.get("limit"):
        records = records[: spec.limit]
    if not records:
        raise UserError(f"{key}: the problem set is empty.")
    return records


def _from_jsonl(spec, key: str) -> list[dict]:
    path = spec.local_path
    if not path:
        raise UserError(f"{key}.local_path must name a jsonl file when {key}.source is jsonl.")
    rows = read_jsonl(path, required_keys=(spec.problem_key, spec.answer_key))
    return _to_schema(rows, spec)


def _from_hub(spec, key: str, cache_dir: str) -> list[dict]:
    """The Hugging Face dataset at a pinned revision (needs network and the `datasets` package)."""
    try:
        import datasets
    except ImportError:
        raise UserError(f"{key}: loading {spec.hf_id} from the hub needs the `datasets` package "
                        f"(pip install datasets), or set {key}.local_path to a jsonl copy.") from None
    try:
        rows = datasets.load_dataset(spec.hf_id, revision=spec.revision, split=spec.split,
                                     cache_dir=f"{cache_dir}/hf-datasets")
    except Exception as error:  # the hub client raises many types; the user needs the one line
        raise UserError(f"{key}: could not load {spec.hf_id}@{spec.revision} ({type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''}); set {key}.local_path to a copy.") from None
    return _to_schema(list(rows), spec)


def _to_schema(rows: list[dict], spec) -> list[dict]:
    """Our schema from a source's rows, one record per problem in first-seen order.

    The dataset card has one row per (problem, solution_type); with `solution_type_key` set, a problem's released
    solutions are gathered into `solutions: {solution_type: text}` (human_stage1..4, qwq_32b_preview) for the
    data-source ablation.
    """
    records, by_problem = [], {}
    type_key, solution_key = spec.get("solution_type_key"), spec.get("solution_key")
    for number, row in enumerate(rows, start=1):
        if row[spec.answer_key] is None:  # str() would make it the gold answer "None"
            raise UserError(f"{spec.get('local_path') or spec.get('hf_id') or spec.name}, row {number}: "
                            f"'{spec.answer_key}' is null; every problem needs a gold answer.")
        problem = row[spec.problem_key]
        if problem not in by_problem:
            identifier = str(row[spec.id_key]) if spec.get("id_key") else f"{spec.name}-{len(records):04d}"
            record = {key: value for key, value in row.items() if key not in (type_key, solution_key)}
            record.update(id=identifier, problem=problem, expected_answer=str(row[spec.answer_key]), subset=spec.subset)
            if type_key:
                record["solutions"] = {}
            by_problem[problem] = record
            records.append(record)
        if type_key:
            by_problem[problem]["solutions"][row[type_key]] = row[solution_key]
    return records
