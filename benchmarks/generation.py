"""Generation speed on the toy teacher, in one run: vLLM (its CPU build) and batched hf against one prompt at a time.

    make bench-generation        # or: .venv/bin/python benchmarks/generation.py --prompts 64 --batch-size 64 \
                                 #         --vllm-python .venv-vllm/bin/python

Every arm generates for the same prompts with the same sampling settings (the toy teacher's, conf/sampling/
toy-teacher.yaml), after a two-prompt warm-up; the hf arms differ only in batch size. vLLM runs in its own
environment (--vllm-python, a separate process of this script), where its engine start is timed too. Prints
tokens/s per arm and the ratios. The toy models are built first if they are not cached.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _tokens_per_second(generator, requests) -> tuple[float, int]:
    generator.generate(requests[:2])  # warm-up: first-call allocations are not generation speed
    started = time.perf_counter()
    results = generator.generate(requests)
    seconds = time.perf_counter() - started
    tokens = sum(r["num_generated_tokens"] for r in results)
    return tokens / seconds, tokens


def _toy_teacher(num_prompts: int):
    from nemo_recipes.config import compose_config
    from nemo_recipes.data.prompts import qwq_prompt
    from nemo_recipes.models import model_path
    from nemo_recipes.toy.task import make_problems

    cfg = compose_config(["experiment=demo"])
    requests = [{"prompt": qwq_prompt(p["problem"]), "seed": seed}
                for seed, p in enumerate(make_problems(num_prompts, seed=7, prefix="bench"))]
    return cfg, model_path(cfg, "teacher"), requests


def _vllm_arm(num_prompts: int) -> None:
    """Runs in vLLM's environment: prints the engine start time and tokens/s as one JSON line."""
    import vllm
    from vllm.platforms import current_platform

    from nemo_recipes.generation import open_backend

    cfg, path, requests = _toy_teacher(num_prompts)
    started = time.perf_counter()
    generator = open_backend("vllm", path, cfg.teacher_sampling)
    start_s = time.perf_counter() - started
    try:
        speed, tokens = _tokens_per_second(generator, requests)
    finally:
        generator.close()
    print("VLLM " + json.dumps({"build": f"{vllm.__version__} ({current_platform.device_type})", "start_s": start_s,
                                "speed": speed, "tokens": tokens}))


def _run_vllm_arm(python: str, num_prompts: int) -> dict:
    from nemo_recipes import processes

    child = processes.start([python, __file__, "--vllm-arm", "--prompts", str(num_prompts)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        out, _ = child.communicate()
    finally:
        processes.stop(child, grace_s=30)
    lines = [line for line in out.splitlines() if line.startswith("VLLM ")]
    if child.returncode or not lines:
        raise SystemExit(f"the vLLM arm failed in {python} (exit {child.returncode}); run it alone to see why: "
                         f"{python} {__file__} --vllm-arm")
    return json.loads(lines[-1][5:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--vllm-python", help="the python of vLLM's environment (.venv-vllm/bin/python); "
                                              "without it the vLLM arm is left out")
    parser.add_argument("--vllm-arm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.vllm_arm:
        _vllm_arm(args.prompts)
        return 0

    from omegaconf import OmegaConf

    from nemo_recipes.generation import open_backend

    cfg, path, requests = _toy_teacher(args.prompts)
    speeds = {}
    for name, batch_size in (("one at a time", 1), (f"hf batched ({args.batch_size})", args.batch_size)):
        generator = open_backend("hf", path, OmegaConf.merge(cfg.teacher_sampling, {"batch_size": batch_size}))
        speeds[name], tokens = _tokens_per_second(generator, requests)
        print(f"{name:>20}: {speeds[name]:8.0f} tokens/s ({tokens} tokens, {args.prompts} prompts)", flush=True)
    single, batched = speeds.values()
    ratios = f"batched / one-at-a-time: {batched / single:.1f}x"
    if args.vllm_python:
        arm = _run_vllm_arm(args.vllm_python, args.prompts)
        print(f"{'vLLM ' + arm['build']:>20}: {arm['speed']:8.0f} tokens/s ({arm['tokens']} tokens, "
              f"{args.prompts} prompts); engine start {arm['start_s']:.1f} s")
        ratios += f"; vLLM / hf batched: {arm['speed'] / batched:.2f}x"
    print(f"machine: {os.cpu_count()} CPUs; {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
