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


def engine_kwargs(model_path: str, tensor_parallel_size: int, trust_remote_code: bool = False) -> dict:
    return {
        "model": model_path,
        "tensor_parallel_size": tensor_parallel_size,
        "enable_prefix_caching": True,
        "trust_remote_code": trust_remote_code,
        "seed": 0,
    }


class VLLMGenerator:
    def __init__(self, model_path: str, sampling, tensor_parallel_size: int = 1, trust_remote_code: bool = False):
        from vllm import LLM

        self.sampling = sampling
        self.llm = LLM(**engine_kwargs(model_path, tensor_parallel_size, trust_remote_code))

    def generate(self, requests: list[dict]) -> list[dict]:
        """Each request carries its own seed: a sample is the same whichever chunk or shard it runs in."""
        from vllm import SamplingParams

        params = [SamplingParams(**sampling_params_kwargs(self.sampling, r["seed"])) for r in requests]
        outputs = self.llm.generate([r["prompt"] for r in requests], params, use_tqdm=True)
        results = []
        for output in outputs:
            completion = output.outputs[0]
            results.append({
                "generation": completion.text,
                "num_generated_tokens": len(completion.token_ids),
                "finish_reason": "length" if completion.finish_reason == "length" else "stop",
            })
        return results

    def close(self) -> None:
        del self.llm


def open_generator(model_path: str, sampling, tensor_parallel_size: int = 1, **options) -> VLLMGenerator:
    return VLLMGenerator(model_path, sampling, tensor_parallel_size=tensor_parallel_size, **options)
