"""Stage sample_<role>: n samples per problem from the teacher (seed problems) or a student (benchmark).

    python -m nemo_recipes experiment=demo stages=[sample_teacher]
    python -m nemo_recipes experiment=main stages=[sample_teacher] teacher_sampling.num_shards=4 teacher_sampling.shard=0

Requests (problem x sample_idx, problem-major) are cut into chunks of `chunk_size`; each finished chunk is written
atomically to `chunks/chunk_NNNNN.jsonl`, so a killed run resumes at the first missing chunk without losing or
repeating a record. Chunk c belongs to shard c % num_shards: nodes can each run one shard into the same folder
(a shared file system); a shard run writes its chunks and ends, and a run without `shard` merges every chunk into
`generations.jsonl` -- after generating any that are missing, or, with `merge_only` (the merge job that follows a
Slurm array of shards, on a node without GPUs), refusing to.
Each sample's seed is derived from (sampling.seed, request index) alone, so sharded and unsharded runs agree: vLLM
seeds every request with it, the hf backend seeds each chunk with its first request's.
"""

from __future__ import annotations

import os
import time

from nemo_recipes.data.problems import planned_problem_count, prepared_problems_file
from nemo_recipes.data.prompts import render_prompt
from nemo_recipes.errors import UserError
from nemo_recipes.generation.top_k import resolved_sampling
from nemo_recipes.io import iter_jsonl, read_jsonl, write_jsonl
from nemo_recipes.models import model_config, model_name, model_path, sampling_config, sampling_key

PROBLEM_KEYS = ("id", "problem", "expected_answer", "subset")
_SAMPLING_RECORD_KEYS = ("temperature", "top_p", "top_k", "max_tokens", "prompt", "backend")


def run(ctx) -> dict:
    role = ctx.stage.param("role")
    sampling = resolved_sampling(ctx.cfg, role)  # top_k null: the model's generation_config.json
    problems, requests, chunks = _chunked_requests(ctx, role, sampling)
    chunk_dir = ctx.dir / "chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    done = _done_chunks(chunk_dir)
    if done:
        ctx.log(f"{len(done)} of {len(chunks)} chunks already done")
    mine = _my_chunks(sampling, len(chunks))
    todo = [c for c in mine if c not in done]
    if todo and sampling.merge_only:
        raise UserError(f"{len(todo)} of {len(chunks)} chunks are missing in {chunk_dir} (shards "
                        f"{_shards_text(todo, sampling.num_shards)}), and this run only merges "
                        f"({sampling_key(role)}.merge_only): a shard job failed or was cancelled (its log says why); "
                        f"submit again to generate them.")
    if todo and sampling.backend == "vllm":
        _drop_claims(chunk_dir, todo)  # left by a killed run's workers; this run holds the lock on these chunks
        _run_replicas(ctx, _replica_groups(ctx.cfg, role, sampling, os.environ.get("CUDA_VISIBLE_DEVICES")))
    elif todo:
        _generate_chunks(ctx, role, sampling, chunks, todo, chunk_dir)

    done = _done_chunks(chunk_dir)
    missing = [c for c in mine if c not in done]
    if missing:
        raise UserError(f"{len(missing)} chunks are still missing in {chunk_dir} after generation (see the replica "
                        f"logs in {ctx.dir / 'logs'}); run the stage again to generate them.")
    if sampling.shard is not None:  # the other shards' chunks come from other nodes; the merge runs after them all
        ctx.log(f"shard {sampling.shard} of {sampling.num_shards}: its {len(mine)} chunks are written, "
                f"{len(chunks) - len(done)} chunks of other shards are still to come")
        return {"shard": sampling.shard, "num_chunks": len(mine)}
    records = [r for c in range(len(chunks)) for r in iter_jsonl(_chunk_path(chunk_dir, c))]
    if len(records) != len(requests):
        raise UserError(f"{chunk_dir}: found {len(records)} records for {len(requests)} requests; a chunk file was "
                        f"edited by hand -- delete the bad chunk files and run again.")
    _drop_claims(chunk_dir, range(len(chunks)))
    write_jsonl(ctx.dir / "generations.jsonl", records)
    truncated = sum(r["finish_reason"] == "length" for r in records)
    tokens = sum(r["num_generated_tokens"] for r in records)
    ctx.log(f"{len(records)} generations ({len(problems)} problems x {sampling.n}), {tokens} tokens, "
            f"{truncated} truncated at max_tokens")
    return {"num_generations": len(records), "num_problems": len(problems), "generated_tokens": tokens,
            "truncated": truncated, "model": model_name(ctx.cfg, role), "top_k": sampling.top_k}


def plan(ctx) -> list[str]:
    role = ctx.stage.param("role")
    cfg = ctx.cfg
    sampling = sampling_config(cfg, role)
    num = planned_problem_count(cfg, ctx.run_dir, role)
    samples = f"{num} problems x {sampling.n} = {num * sampling.n} samples" if num else f"? problems x {sampling.n}"
    tokens = f"~{num * sampling.n * sampling.expected_tokens / 1e6:.2f}M tokens" if num else "tokens: ?"
    lines = [
        f"model: {model_name(cfg, role)} ({model_path(cfg, role, build=False)})",
        f"backend {sampling.backend}, prompt '{sampling.prompt}', T={sampling.temperature}, top_p={sampling.top_p}, "
        f"max_tokens={sampling.max_tokens}",
        f"{samples}, {tokens} (at sampling.expected_tokens={sampling.expected_tokens}), "
        f"chunks of {sampling.chunk_size}, shards {sampling.num_shards}",
    ]
    if sampling.backend == "vllm":
        lines += _vllm_plan(ctx, role, sampling)
    return lines


def _vllm_plan(ctx, role: str, sampling) -> list[str]:
    """The exact engine, request and worker commands the stage will use (generation/vllm.py builds the same)."""
    from nemo_recipes.stages.sample_replica import worker_command
    from nemo_recipes.generation.vllm import engine_kwargs, sampling_params_kwargs
    from nemo_recipes.resources import vllm_python

    model = model_config(ctx.cfg, role)
    groups = _replica_groups(ctx.cfg, role, sampling)
    engine = engine_kwargs(model_path(ctx.cfg, role, build=False), model.generation_tp, model.trust_remote_code,
                           _revision(ctx.cfg, role), cpu=int(ctx.cfg.cluster.gpus_per_node) == 0)
    params = {**sampling_params_kwargs(sampling, 0), "seed": "<per sample>"}
    python = vllm_python(ctx.cfg)
    return [f"vllm.LLM({_kwargs(engine)}) x {len(groups)} replica(s), CUDA_VISIBLE_DEVICES {' | '.join(groups)}",
            f"vllm.SamplingParams({_kwargs(params)})",
            "$ " + " ".join(worker_command(python, ctx.argv, ctx.stage.name, 0, len(groups)))
            + (f"   (and --replica 1..{len(groups) - 1})" if len(groups) > 1 else "")]


def _kwargs(values: dict) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in values.items())


def _chunked_requests(ctx, role: str, sampling):
    """The problems, the (problem, sample_idx) requests in problem-major order, and those cut into chunks."""
    problems = read_jsonl(prepared_problems_file(ctx.run_dir, role), required_keys=PROBLEM_KEYS)
    requests = [(problem, sample_idx) for problem in problems for sample_idx in range(sampling.n)]
    chunks = [requests[i:i + sampling.chunk_size] for i in range(0, len(requests), sampling.chunk_size)]
    return problems, requests, chunks


def _shards_text(chunks: list[int], num_shards: int) -> str:
    return ", ".join(str(shard) for shard in sorted({c % num_shards for c in chunks}))


def _my_chunks(sampling, num_chunks: int) -> list[int]:
    if sampling.shard is None:
        return list(range(num_chunks))
    if not 0 <= sampling.shard < sampling.num_shards:
        raise UserError(f"sampling.shard={sampling.shard} must be between 0 and num_shards-1={sampling.num_shards - 1}.")
    return [c for c in range(num_chunks) if c % sampling.num_shards == sampling.shard]


def _chunk_path(chunk_dir, index: int):
    return chunk_dir / f"chunk_{index:05d}.jsonl"


def _done_chunks(chunk_dir) -> set[int]:
    """Indices of the chunk files on disk: each was written atomically, so present means complete."""
    return {int(path.stem.split("_")[1]) for path in chunk_dir.glob("chunk_*.jsonl")} if chunk_dir.is_dir() else set()


def sample_seed(base_seed: int, request_index: int) -> int:
    """A seed per sample that depends only on the base seed and the request's position, never on sharding.

    Distinct per sample: vLLM given one seed for the n samples of a prompt would return n copies of one sample.
    """
    return (base_seed * 1_000_003 + request_index) % (2**31 - 1)


def _revision(cfg, role: str) -> str | None:
    """The pinned hub revision of a hub model; None for local folders, toy models and the SFT output."""
    model = model_config(cfg, role)
    return model.get("revision") if role != "sft" and model.source == "hub" else None


def _replica_groups(cfg, role: str, sampling, visible: str | None = None) -> list[str]:
    """GPU groups of the vLLM workers on this node, cut from `visible` (this process's CUDA_VISIBLE_DEVICES when it
    runs them; None when planning: the planning machine's GPUs are not the node's); [""] for the hf backend."""
    if sampling.backend != "vllm":
        return [""]
    from nemo_recipes.generation.replicas import gpu_groups

    tp = model_config(cfg, role).generation_tp
    return gpu_groups(max(int(cfg.cluster.gpus_per_node), tp), tp, visible)


def _vllm_python(cfg) -> str:
    """The interpreter of the environment vLLM is installed in, checked (the plan only names it)."""
    from nemo_recipes.resources import missing_vllm_python, vllm_python

    problem = missing_vllm_python(cfg)
    if problem:
        raise UserError(problem)
    return vllm_python(cfg)


def _run_replicas(ctx, groups: list[str]) -> None:
    """One worker process per GPU group, each generating its share of the chunks; logs in the stage folder.

    The workers, and vLLM's engine processes in their process groups, end with this process however it ends
    (nemo_recipes/processes.py), so a resumed run never finds the GPUs held by orphans of the last one."""
    import subprocess
    import sys

    from nemo_recipes import processes
    from nemo_recipes.generation.replicas import worker_environment
    from nemo_recipes.stages.sample_replica import SHUTDOWN_GRACE_S, worker_command

    python = _vllm_python(ctx.cfg)
    logs = ctx.dir / "logs"
    logs.mkdir(exist_ok=True)
    workers = []
    with processes.sigterm_raises():
        try:
            for replica, gpus in enumerate(groups):
                command = worker_command(python, ctx.argv, ctx.stage.name, replica, len(groups))
                ctx.record_command(command)
                log = open(logs / f"replica_{replica}.log", "a")
                env = worker_environment(os.environ, gpus, own_python=python == sys.executable)
                workers.append((processes.start(command, env=env, stdout=log, stderr=subprocess.STDOUT), log))
            ctx.log(f"{len(groups)} vLLM replicas on GPUs {' | '.join(groups)}; logs in {logs}")
            failed = [replica for replica, (process, _) in enumerate(workers) if process.wait() != 0]
        finally:  # each worker's own shutdown goes first
            processes.stop(*(process for process, _ in workers), grace_s=SHUTDOWN_GRACE_S + 5)
            for _, log in workers:
                log.close()
    if failed:
        raise UserError(f"vLLM replicas {failed} failed (see {logs}/replica_N.log); their finished chunks are kept, "
                        f"run again to resume.")


def generate_replica(ctx, replica: int, replicas: int) -> None:
    """A replica worker: this node's chunks not on disk yet, each claimed before it is generated, so the replicas
    share the work as they go (stages/sample_replica.py)."""
    role = ctx.stage.param("role")
    sampling = resolved_sampling(ctx.cfg, role)
    _, _, chunks = _chunked_requests(ctx, role, sampling)
    chunk_dir = ctx.dir / "chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    done = _done_chunks(chunk_dir)
    todo = [c for c in _my_chunks(sampling, len(chunks)) if c not in done]
    if todo:
        ctx.log(f"replica {replica} of {replicas}: claiming from {len(todo)} chunks")
        _generate_chunks(ctx, role, sampling, chunks, _claims(chunk_dir, todo), chunk_dir,
                         total=sum(len(chunks[c]) for c in todo))


def _claim_path(chunk_dir, index: int):
    return chunk_dir / f".claim_{index:05d}"


def _claims(chunk_dir, candidates: list[int]):
    """The chunks this worker claims, one at a time as it gets to them: a claim file made with O_EXCL is one
    worker's alone (on NFS too), and a chunk written meanwhile is skipped."""
    for index in candidates:
        if _chunk_path(chunk_dir, index).exists():
            continue
        try:
            os.close(os.open(_claim_path(chunk_dir, index), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        yield index


def _drop_claims(chunk_dir, indices) -> None:
    """Claims of chunks no live worker holds: those of a killed run before new workers start, all after the merge."""
    for index in indices:
        _claim_path(chunk_dir, index).unlink(missing_ok=True)


def _generate_chunks(ctx, role, sampling, chunks, todo, chunk_dir, total: int | None = None) -> None:
    from nemo_recipes.generation import open_backend

    cfg = ctx.cfg
    path = model_path(cfg, role)
    model = model_config(cfg, role)
    options = {"trust_remote_code": bool(model.trust_remote_code), "revision": _revision(cfg, role)}
    if sampling.backend == "vllm":
        options["tensor_parallel_size"] = model.generation_tp
    ctx.log(f"loading {model_name(cfg, role)} from {path} ({sampling.backend})")
    generator = open_backend(sampling.backend, path, sampling, **options)
    try:
        _write_chunks(ctx, role, sampling, chunks, todo, chunk_dir, generator, total)
    finally:
        generator.close()  # vLLM's engine processes end here, also when a SIGTERM interrupts a chunk


def _write_chunks(ctx, role, sampling, chunks, todo, chunk_dir, generator, total: int | None) -> None:
    from tqdm import tqdm

    sampling_record = {key: sampling[key] for key in _SAMPLING_RECORD_KEYS}
    total = total if total is not None else sum(len(chunks[c]) for c in todo)  # todo may be lazy (claims)
    started, tokens = time.time(), 0
    with tqdm(total=total, desc=f"sample {role}", unit="sample", disable=not ctx.progress) as bar:
        for c in todo:
            seeds = [sample_seed(sampling.seed, c * sampling.chunk_size + j) for j in range(len(chunks[c]))]
            requests = [{"prompt": render_prompt(sampling.prompt, problem["problem"]), "seed": seed}
                        for (problem, _), seed in zip(chunks[c], seeds)]
            results = generator.generate(requests)
            records = [
                {**problem, "sample_idx": sample_idx, "seed": seed, **result, "model": model_name(ctx.cfg, role),
                 "sampling": sampling_record}
                for (problem, sample_idx), seed, result in zip(chunks[c], seeds, results)
            ]
            write_jsonl(_chunk_path(chunk_dir, c), records)
            tokens += sum(r["num_generated_tokens"] for r in records)
            bar.update(len(records))
            bar.set_postfix(tok_per_s=f"{tokens / max(time.time() - started, 1e-9):.0f}", refresh=False)
