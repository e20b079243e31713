"""Stage prepare: the seed problems the teacher solves and the benchmark the students are graded on.

    python -m nemo_recipes experiment=demo stages=[prepare]

Writes `problems.jsonl` and `benchmark.jsonl` (id, problem, expected_answer, subset, + source fields).
"""

from __future__ import annotations

from nemo_recipes.data.problems import BENCHMARK_FILE, SEED_PROBLEMS_FILE, load_problem_set
from nemo_recipes.io import write_jsonl


def run(ctx) -> dict:
    cfg = ctx.cfg
    problems = load_problem_set(cfg.problems, cache_dir=cfg.cache_dir, key="problems")
    # Toy benchmarks exclude every seed expression, so the student is graded on problems it never trained on.
    seen = frozenset(p["expression"] for p in problems if "expression" in p)
    benchmark = load_problem_set(cfg.benchmark, cache_dir=cfg.cache_dir, key="benchmark", exclude_expressions=seen)
    write_jsonl(ctx.dir / SEED_PROBLEMS_FILE, problems)
    write_jsonl(ctx.dir / BENCHMARK_FILE, benchmark)
    ctx.log(f"{len(problems)} seed problems ({cfg.problems.name}), {len(benchmark)} benchmark problems "
            f"({cfg.benchmark.name})")
    return {"num_problems": len(problems), "num_benchmark": len(benchmark)}


def plan(ctx) -> list[str]:
    cfg = ctx.cfg
    return [f"load seed problems: {_describe(cfg.problems)}", f"load benchmark: {_describe(cfg.benchmark)}"]


def _describe(spec) -> str:
    if spec.source == "toy":
        return f"{spec.name} ({spec.num_problems} generated, seed {spec.seed})"
    if spec.source == "comp_math":
        from nemo_recipes.data.comp_math import COMP_MATH_COMMIT, COMP_MATH_SHA256

        where = spec.local_path or f"NeMo-Skills test.txt @ {COMP_MATH_COMMIT[:12]}"
        return f"{spec.name} ({where}, sha256 {COMP_MATH_SHA256[:12]}...)"
    if spec.get("local_path"):
        return f"{spec.name} ({spec.local_path})"
    return f"{spec.name} ({spec.hf_id}@{spec.revision})"
