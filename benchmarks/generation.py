"""Batched hf generation against one prompt at a time, on the toy teacher, in one run, as a ratio of tokens/s.

    make bench-generation        # or: .venv/bin/python benchmarks/generation.py --prompts 64 --batch-size 64

Both arms generate for the same prompts with the same sampling settings (the toy teacher's, conf/sampling/
toy-teacher.yaml); only the batch size differs. The toy models are built first if they are not cached.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _tokens_per_second(generator, requests) -> tuple[float, int]:
    started = time.perf_counter()
    results = generator.generate(requests)
    seconds = time.perf_counter() - started
    tokens = sum(r["num_generated_tokens"] for r in results)
    return tokens / seconds, tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    from omegaconf import OmegaConf

    from nemo_recipes.cli import compose_config
    from nemo_recipes.data.prompts import qwq_prompt
    from nemo_recipes.generation import open_backend
    from nemo_recipes.models import model_path
    from nemo_recipes.toy.task import make_problems

    cfg = compose_config(["experiment=demo"])
    path = model_path(cfg, "teacher")
    requests = [{"prompt": qwq_prompt(p["problem"]), "seed": 0}
                for p in make_problems(args.prompts, seed=7, prefix="bench")]
    results = {}
    for name, batch_size in (("one at a time", 1), (f"batched ({args.batch_size})", args.batch_size)):
        sampling = OmegaConf.merge(cfg.teacher_sampling, {"batch_size": batch_size})
        generator = open_backend("hf", path, sampling)
        generator.generate(requests[:2])  # warm-up: first-call allocations are not generation speed
        results[name] = _tokens_per_second(generator, requests)
        print(f"{name:>16}: {results[name][0]:8.0f} tokens/s ({results[name][1]} tokens, {args.prompts} prompts)")
    single, batched = (value[0] for value in results.values())
    print(f"machine: {os.cpu_count()} CPUs; batched / one-at-a-time: {batched / single:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
