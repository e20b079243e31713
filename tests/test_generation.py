"""Generation backends: the hf backend on a tiny random Qwen2, the vLLM request construction as plain data, and the
sampling stage's chunk seeds and shards."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from nemo_recipes.errors import UserError
from nemo_recipes.generation import open_backend
from nemo_recipes.generation.vllm import engine_kwargs, sampling_params_kwargs
from nemo_recipes.stages.sample import _my_chunks, chunk_seed


def _sampling(**overrides):
    base = dict(n=2, temperature=0.7, top_p=0.95, top_k=-1, max_tokens=12, stop=["<|im_end|>", "<|endoftext|>"],
                prompt="generic_math", backend="hf", seed=0, chunk_size=4, batch_size=3, num_shards=1, shard=None)
    return OmegaConf.create({**base, **overrides})


@pytest.fixture(scope="module")
def hf_generator(tiny_student_dir):
    return open_backend("hf", str(tiny_student_dir), _sampling())


def test_hf_backend_returns_one_result_per_request_without_the_stop_token(hf_generator):
    requests = [{"prompt": f"<|im_start|>user\nWhat is {i} + 1?<|im_end|>\n<|im_start|>assistant\n", "seed": 5}
                for i in range(7)]  # 7 requests in batches of 3: the last batch is short
    results = hf_generator.generate(requests)
    assert len(results) == 7
    for result in results:
        assert result["finish_reason"] in ("stop", "length")
        assert 0 <= result["num_generated_tokens"] <= 12
        assert "<|im_end|>" not in result["generation"] and "<|endoftext|>" not in result["generation"]
        if result["finish_reason"] == "length":
            assert result["num_generated_tokens"] == 12
    assert hf_generator.generate(requests) == results  # the chunk seed makes a chunk reproducible
    assert hf_generator.generate([{**r, "seed": 6} for r in requests]) != results


def test_hf_backend_finish_reason_stop_when_a_stop_token_is_generated(tiny_student_dir):
    # Greedy decoding of a random model, with every token of its vocabulary a stop token: it must stop at once.
    from transformers import AutoTokenizer

    vocabulary = list(AutoTokenizer.from_pretrained(str(tiny_student_dir)).get_vocab())
    generator = open_backend("hf", str(tiny_student_dir), _sampling(temperature=0.0, stop=vocabulary))
    (result,) = generator.generate([{"prompt": "hello", "seed": 0}])
    assert result == {"generation": "", "num_generated_tokens": 0, "finish_reason": "stop"}


def test_unknown_backend_is_one_sentence():
    with pytest.raises(UserError, match="sampling.backend: unknown backend 'sglang'; use one of hf, vllm."):
        open_backend("sglang", "x", _sampling())


def test_vllm_requests_carry_the_paper_sampling_and_a_per_request_seed():
    sampling = _sampling(temperature=0.7, top_p=0.95, max_tokens=16384)
    assert sampling_params_kwargs(sampling, seed=1234) == {
        "n": 1, "temperature": 0.7, "top_p": 0.95, "top_k": -1, "max_tokens": 16384,
        "stop": ["<|im_end|>", "<|endoftext|>"], "seed": 1234, "skip_special_tokens": False,
    }
    assert engine_kwargs("/models/QwQ-32B-Preview", 2) == {
        "model": "/models/QwQ-32B-Preview", "tensor_parallel_size": 2, "enable_prefix_caching": True,
        "trust_remote_code": False, "seed": 0,
    }


def test_chunk_seeds_and_shards_do_not_depend_on_how_the_work_is_split():
    seeds = [chunk_seed(0, c) for c in range(10)]
    assert len(set(seeds)) == 10 and seeds == [chunk_seed(0, c) for c in range(10)]
    assert chunk_seed(1, 0) != chunk_seed(0, 0)
    shards = [_my_chunks(_sampling(num_shards=3, shard=s), 10) for s in range(3)]
    assert sorted(c for shard in shards for c in shard) == list(range(10))
    assert _my_chunks(_sampling(), 10) == list(range(10))
    with pytest.raises(UserError, match="sampling.shard=3 must be between 0 and num_shards-1=2"):
        _my_chunks(_sampling(num_shards=3, shard=3), 10)
