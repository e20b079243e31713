"""vLLM offline generation on GPU nodes (runs in the image's vLLM virtualenv).

One `vllm.LLM` per process with tensor parallelism over its GPUs; per-request seeds make every sample
reproducible regardless of batching; prefix caching shares the long system/instruction prefix across samples.
The request construction is plain data (`sampling_params_kwargs`) so it is unit-tested without vLLM.
"""

from __future__ import annotations


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
                  revision: str | None = None) -> dict:
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
    return kwargs


class VLLMGenerator:
    def __init__(self, model_path: str, sampling, tensor_parallel_size: int = 1, trust_remote_code: bool = False,
                 revision: str | None = None):
        from vllm import LLM

        self.sampling = sampling
        self.llm = LLM(**engine_kwargs(model_path, tensor_parallel_size, trust_remote_code, revision))

    def generate(self, requests: list[dict]) -> list[dict]:
        """Each request carries its own seed: a sample is the same whichever chunk or shard it runs in."""
        from vllm import SamplingParams

        params = [SamplingParams(**sampling_params_kwargs(self.sampling, r["seed"])) for r in requests]
        outputs = self.llm.generate([r["prompt"] for r in requests], params, use_tqdm=True)
        return [_result(output.outputs[0]) for output in outputs]

    def close(self) -> None:
        del self.llm


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
