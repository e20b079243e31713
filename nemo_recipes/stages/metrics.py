"""Stage metrics: pass@1, maj@k, pass@k, per subset and overall, with bootstrap CIs, for every evaluated model.

    python -m nemo_recipes experiment=demo stages=[metrics] metrics.tie_rule=average

Writes `metrics.json`: {role: {"model": name, "metrics": compute_metrics(...)}}, and `lengths.json`: {role:
{"correct": [tokens...], "incorrect": [tokens...]}}, the generation lengths the report plots. Each metrics block
holds `grader_sensitivity`: pass@1 and maj@k under both judges and how many verdicts differ.
"""

from __future__ import annotations

from nemo_recipes.io import read_jsonl, write_json
from nemo_recipes.models import model_name


def run(ctx) -> dict:
    from nemo_recipes.metrics import compute_metrics, describe_sensitivity

    cfg = ctx.cfg
    results, lengths = {}, {}
    for role in cfg.evaluate:
        graded = read_jsonl(ctx.input_dir(f"grade_{role}") / "graded.jsonl", required_keys=("id", "correct"))
        metrics = compute_metrics(graded, subset_key="subset", tie_rule=cfg.metrics.tie_rule,
                                  bootstrap=cfg.metrics.bootstrap, seed=cfg.metrics.seed)
        results[role] = {"model": model_name(cfg, role), "metrics": metrics}
        lengths[role] = {verdict: [r["num_generated_tokens"] for r in graded
                                   if (r["correct"] is True) == (verdict == "correct") and "num_generated_tokens" in r]
                         for verdict in ("correct", "incorrect")}
        overall, k = metrics["overall"], metrics["k"]
        ctx.log(f"{results[role]['model']}: pass@1 {overall['pass@1']:.2f}, maj@{k} {overall[f'maj@{k}']:.2f}")
        sensitivity = describe_sensitivity(overall, k)
        if sensitivity:
            ctx.log(f"{results[role]['model']}, by judge: {sensitivity}")
    write_json(ctx.dir / "metrics.json", results)
    write_json(ctx.dir / "lengths.json", lengths)
    return {role: {key: r["metrics"]["overall"][key] for key in ("pass@1", f"maj@{r['metrics']['k']}")}
            for role, r in results.items()}


def plan(ctx) -> list[str]:
    m = ctx.cfg.metrics
    return [f"pass@1, maj@k (ties: {m.tie_rule}), unbiased pass@k, {m.bootstrap} bootstrap resamples "
            f"for 95% CIs, per subset and overall, for: {', '.join(ctx.cfg.evaluate)}"]
