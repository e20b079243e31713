"""Stage report: this run's results beside the paper's figures, as markdown + CSV + PNGs, with the provenance of
every number. The layout is the one every reproduction target's report uses (nemo_recipes/report/render.py).

    python -m nemo_recipes experiment=demo stages=[report]
"""

from __future__ import annotations

def run(ctx) -> dict:
    from nemo_recipes.report.render import write_report

    from nemo_recipes.errors import UserError
    from nemo_recipes.pipeline import run_state

    cfg = ctx.cfg
    status = run_state(cfg)
    path = write_report(ctx.dir, title=cfg.report.title, intro=_intro(cfg), results=_results(ctx, status),
                        configs={cfg.experiment_name: cfg})
    ctx.log(f"wrote {path}")
    if status != "complete":  # not complete, so the next run that completes the stages renders it again
        raise UserError(f"wrote {path} without numbers ({status}); run the stages before it and the report "
                        f"renders again.")
    return {"report": path.name, "figures": sorted(p.name for p in ctx.dir.glob("*.png"))}


def hashed_context(cfg) -> str:
    """The reproduce/ figures this run's report compares with: part of the stage's hash (the engine asks for it), so
    an edited figure renders the report again."""
    import json

    from nemo_recipes.targets import paper_row

    rows = {role: paper_row(cfg.experiment_name, role) for role in cfg.evaluate}
    return json.dumps({role: [row.paper, row.source, row.note] for role, row in rows.items() if row}, sort_keys=True)


def plan(ctx) -> list[str]:
    return ["report.md + results.csv + PNGs (results, curves over k, per subset, lengths, trace structure): ours | "
            "paper | delta | 95% CI, with provenance"]


def _results(ctx, status: str) -> list:
    """Numbers only when every stage is complete under this config (`status`, pipeline.run_state): stages=[report]
    after an edit would otherwise print the old run's numbers under the new settings the intro states."""
    from nemo_recipes.models import model_name
    from nemo_recipes.report.render import load_result
    from nemo_recipes.targets import paper_figures, paper_row

    cfg = ctx.cfg
    results = []
    for role in cfg.evaluate:
        row = paper_row(cfg.experiment_name, role)
        paper, note = paper_figures(cfg, row)
        results.append(load_result(model_name(cfg, role), cfg.experiment_name, role, ctx.run_dir, paper=paper,
                                   source=row.source if paper else "", note=note, status=status))
    return results


def _intro(cfg) -> str:
    from nemo_recipes.targets import PAPER_BENCHMARK

    s = cfg.eval_sampling
    text = (f"Experiment `{cfg.experiment_name}`: {', '.join(cfg.evaluate)} evaluated on {cfg.benchmark.name} with "
            f"{s.n} samples per problem (T={s.temperature}, top_p={s.top_p}, max {s.max_tokens} tokens, prompt "
            f"'{s.prompt}').")
    if cfg.benchmark.name != PAPER_BENCHMARK:
        text += (f" The paper reports pass@1 / maj@64 on {PAPER_BENCHMARK}; this run's benchmark is "
                 f"{cfg.benchmark.name}, so no paper figure applies (reproduce/ holds them for the GPU targets).")
    return text
