"""Generation backends: the hf backend on a tiny random Qwen2, the vLLM request construction as plain data, and the
sampling stage's chunk seeds and shards."""

from __future__ import annotations

import os
import shutil

import pytest
from omegaconf import OmegaConf

from nemo_recipes.errors import UserError
from nemo_recipes.generation import open_backend
from nemo_recipes.generation.vllm import engine_kwargs, sampling_params_kwargs
from nemo_recipes.stages.sample import _my_chunks, sample_seed


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
    assert result == {"generation": "", "num_generated_tokens": 1, "finish_reason": "stop"}  # the stop token, as vLLM


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
    # vLLM's CPU build cannot rewind a seeded request's generator after a partial prefill: prompts go in whole.
    assert engine_kwargs("toy", 1, cpu=True) == {**engine_kwargs("toy", 1), "enable_chunked_prefill": False}
    pinned = engine_kwargs("Qwen/QwQ-32B-Preview", 2, revision="91906fe4")
    assert (pinned["revision"], pinned["tokenizer_revision"]) == ("91906fe4", "91906fe4")


def test_sampling_reads_a_hub_models_pinned_revision_and_nothing_else_does():
    from nemo_recipes.config import compose_config
    from nemo_recipes.stages.sample import _revision

    cfg = compose_config(["experiment=main", "teacher.revision=91906fe4", "student.revision=abc123"])
    assert (_revision(cfg, "teacher"), _revision(cfg, "base"), _revision(cfg, "sft")) == ("91906fe4", "abc123", None)
    local = compose_config(["experiment=main", "teacher.source=local", "teacher.revision=91906fe4"])
    assert _revision(local, "teacher") is None


@pytest.mark.parametrize("reason", ["abort", "error", "repetition"])
def test_a_vllm_request_that_neither_stopped_nor_hit_max_tokens_fails_its_chunk(reason):
    from types import SimpleNamespace

    from nemo_recipes.generation.vllm import _result

    assert _result(SimpleNamespace(text="x", token_ids=[1, 2], finish_reason="length"))["finish_reason"] == "length"
    with pytest.raises(RuntimeError, match=f"finish_reason='{reason}'; the chunk is not written"):
        _result(SimpleNamespace(text="x", token_ids=[1], finish_reason=reason))


def test_hf_backend_ignores_the_models_own_generation_defaults(tiny_student_dir, tmp_path):
    import json

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_student_dir, model_dir)
    (model_dir / "generation_config.json").write_text(json.dumps({"repetition_penalty": 50.0, "top_k": 1}))
    plain = open_backend("hf", str(tiny_student_dir), _sampling()).generate([{"prompt": "hello", "seed": 3}])
    tuned = open_backend("hf", str(model_dir), _sampling()).generate([{"prompt": "hello", "seed": 3}])
    assert tuned == plain


def test_sample_seeds_and_shards_do_not_depend_on_how_the_work_is_split():
    seeds = [sample_seed(0, i) for i in range(1000)]
    assert len(set(seeds)) == 1000 and seeds == [sample_seed(0, i) for i in range(1000)]
    assert sample_seed(1, 0) != sample_seed(0, 0)
    shards = [_my_chunks(_sampling(num_shards=3, shard=s), 10) for s in range(3)]
    assert sorted(c for shard in shards for c in shard) == list(range(10))
    assert _my_chunks(_sampling(), 10) == list(range(10))
    with pytest.raises(UserError, match="sampling.shard=3 must be between 0 and num_shards-1=2"):
        _my_chunks(_sampling(num_shards=3, shard=3), 10)


def test_vllm_replicas_split_a_node_into_gpu_groups():
    from nemo_recipes.generation.replicas import gpu_groups
    from nemo_recipes.stages.sample_replica import worker_command

    assert gpu_groups(8, 2) == ["0,1", "2,3", "4,5", "6,7"]
    assert gpu_groups(8, 8) == ["0,1,2,3,4,5,6,7"]
    # Devices the scheduler or the user gave this process are the ones split.
    assert gpu_groups(4, 2, visible="4,5,6,7") == ["4,5", "6,7"]
    assert gpu_groups(2, 1, visible="GPU-aa, GPU-bb") == ["GPU-aa", "GPU-bb"]
    with pytest.raises(UserError, match="CUDA_VISIBLE_DEVICES=4,5 names 2 GPUs but cluster.gpus_per_node is 4"):
        gpu_groups(4, 2, visible="4,5")
    with pytest.raises(UserError, match="cluster.gpus_per_node=8 cannot be split into vLLM replicas of generation_tp=3"):
        gpu_groups(8, 3)
    command = worker_command("/opt/vllm-venv/bin/python", ["experiment=main", "teacher_sampling.n=8"],
                             "sample_teacher", 1, 4)
    assert command == ["/opt/vllm-venv/bin/python", "-m", "nemo_recipes.stages.sample_replica", "experiment=main",
                       "teacher_sampling.n=8", "--stage", "sample_teacher", "--replica", "1", "--replicas", "4"]


def test_replicas_claim_each_chunk_once_as_they_go_and_skip_written_ones(tmp_path):
    from nemo_recipes.stages.sample import _chunk_path, _claims, _drop_claims

    first, second = _claims(tmp_path, [0, 1, 2, 3, 4]), _claims(tmp_path, [0, 1, 2, 3, 4])
    assert [next(first), next(second), next(second), next(first)] == [0, 1, 2, 3]  # a faster replica takes more
    _chunk_path(tmp_path, 4).write_text("")  # written by a worker of a run before
    assert list(first) == [] and list(second) == []
    _drop_claims(tmp_path, [0, 1])  # a killed run's claims, cleared before new workers start
    assert list(_claims(tmp_path, [0, 1, 2])) == [0, 1]


def test_sample_stage_starts_one_worker_per_gpu_group_for_vllm(tmp_path, monkeypatch):
    from nemo_recipes import processes
    from nemo_recipes.config import compose_config
    from nemo_recipes.pipeline import StageContext, stage_graph
    from nemo_recipes.stages import sample

    # vLLM runs in its own virtualenv: a python other than this one (here the system's python3 stands in for it).
    other_python = shutil.which("python3")
    cfg = compose_config([f"run_dir={tmp_path}", "experiment=main", "cluster.gpus_per_node=8",
                          f"cluster.vllm_python={other_python}"])
    stage = next(s for s in stage_graph(cfg) if s.name == "sample_teacher")
    ctx = StageContext(cfg, stage, tmp_path, progress=False, argv=["experiment=main"])
    assert sample._replica_groups(cfg, "teacher", cfg.teacher_sampling) == ["0,1", "2,3", "4,5", "6,7"]
    assert sample._replica_groups(cfg, "teacher", compose_config(["experiment=demo"]).teacher_sampling) == [""]
    # One GPU group is still a worker process: the pipeline's own python may not have vLLM.
    one_node = compose_config(["experiment=main", "cluster.gpus_per_node=2"])
    assert sample._replica_groups(one_node, "teacher", one_node.teacher_sampling) == ["0,1"]
    monkeypatch.setenv("PYTHONPATH", "/opt/NeMo")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/local/lib/python3.12/dist-packages/torch/lib:/usr/local/nvidia/lib64")
    started, stopped = [], []

    class FakeProcess:
        def __init__(self, command, env, stdout, stderr):
            assert command[0] == other_python and "PYTHONPATH" not in env
            assert env["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib64"
            started.append((command, env["CUDA_VISIBLE_DEVICES"]))
            self.code = 1 if command[-3] == "2" else 0  # replica 2 crashes

        def wait(self):
            return self.code

    monkeypatch.setattr(processes, "start", FakeProcess)
    monkeypatch.setattr(processes, "stop", lambda *children, grace_s: stopped.append(children))
    (tmp_path / "sample_teacher").mkdir()
    with pytest.raises(UserError, match=r"vLLM replicas \[2\] failed .*replica_N.log\); their finished chunks are kept"):
        sample._run_replicas(ctx, sample._replica_groups(cfg, "teacher", cfg.teacher_sampling))
    assert [gpus for _, gpus in started] == ["0,1", "2,3", "4,5", "6,7"]
    assert [command[-3] for command, _ in started] == ["0", "1", "2", "3"]
    assert len(stopped) == 1 and len(stopped[0]) == 4  # every worker's group is ended at once, the finished too
    missing = compose_config(["experiment=main", "cluster.vllm_python=/opt/no-such-venv/bin/python"])
    with pytest.raises(UserError, match="cluster.vllm_python=/opt/no-such-venv/bin/python is not an executable"):
        sample._vllm_python(missing)
    assert ctx.commands[0][2:] == ["nemo_recipes.stages.sample_replica", "experiment=main", "--stage", "sample_teacher",
                                   "--replica", "0", "--replicas", "4"]


def test_a_worker_environment_keeps_the_containers_python_libraries_out_of_the_vllm_venv():
    from nemo_recipes.generation.replicas import worker_environment

    environ = {"PYTHONPATH": "/opt/NeMo", "HOME": "/home/recipes",
               "LD_LIBRARY_PATH": "/usr/local/lib/python3.12/dist-packages/torch/lib:/usr/local/lib/python3.12/"
                                  "dist-packages/torch_tensorrt/lib:/usr/local/cuda/compat/lib:/usr/local/nvidia/lib"}
    env = worker_environment(environ, "0,1", own_python=False)
    assert env == {"HOME": "/home/recipes", "CUDA_VISIBLE_DEVICES": "0,1",
                   "LD_LIBRARY_PATH": "/usr/local/cuda/compat/lib:/usr/local/nvidia/lib"}
    assert "LD_LIBRARY_PATH" not in worker_environment({"LD_LIBRARY_PATH": "/x/site-packages/torch/lib"}, "0", False)
    assert worker_environment(environ, "3", own_python=True) == {**environ, "CUDA_VISIBLE_DEVICES": "3"}


def test_the_image_check_imports_vllm_in_a_workers_environment(tmp_path, monkeypatch, capsys):
    from nemo_recipes.generation.replicas import check_worker_imports

    fake_python = tmp_path / "python"  # succeeds only if the container's torch libraries were dropped
    fake_python.write_text('#!/bin/sh\n[ "$LD_LIBRARY_PATH" = /usr/local/nvidia/lib64 ] || '
                           '{ echo "ImportError: undefined symbol: initModule" >&2; exit 1; }\necho vLLM 0.32.0 torch 2.13.0\n')
    fake_python.chmod(0o755)
    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/local/lib/python3.12/dist-packages/torch/lib:/usr/local/nvidia/lib64")
    check_worker_imports(str(fake_python))
    assert capsys.readouterr().out.strip() == "vLLM 0.32.0 torch 2.13.0"
    monkeypatch.setenv("LD_LIBRARY_PATH", "/elsewhere/lib")
    with pytest.raises(SystemExit, match="cannot import torch and vLLM in a replica's environment: ImportError: "
                                         "undefined symbol: initModule"):
        check_worker_imports(str(fake_python))


@pytest.mark.parametrize("cpu, user_setting, expected", [(True, None, "1"), (True, "8", "8"), (False, None, None)])
def test_vllm_backend_hands_vllm_our_token_ids_and_bounds_the_cpu_kv_cache(cpu, user_setting, expected, monkeypatch,
                                                                          tiny_student_dir):
    import sys
    from types import ModuleType, SimpleNamespace

    from nemo_recipes.generation.vllm import VLLMGenerator
    from nemo_recipes.tokenizer import load_tokenizer

    engines = []

    class FakeLLM:  # what vllm.LLM receives; the engine itself runs in tests/integration/test_vllm_engine.py
        def __init__(self, **kwargs):
            self.kwargs, self.prompts = kwargs, None
            engines.append(self)

        def generate(self, prompts, params, use_tqdm):
            self.prompts = prompts
            return [SimpleNamespace(outputs=[SimpleNamespace(text="4", token_ids=[1], finish_reason="stop")])
                    for _ in prompts]

    vllm = ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = FakeLLM, lambda **kwargs: kwargs
    platforms = ModuleType("vllm.platforms")
    platforms.current_platform = SimpleNamespace(is_cpu=lambda: cpu)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", user_setting or "")  # restored after the test, whatever it sets
    if not user_setting:
        monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE")

    prompt = "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n"
    VLLMGenerator(str(tiny_student_dir), _sampling()).generate([{"prompt": prompt, "seed": 1}])
    assert os.environ.get("VLLM_CPU_KVCACHE_SPACE") == expected
    assert engines[0].kwargs == engine_kwargs(str(tiny_student_dir), 1, cpu=cpu)
    ours = load_tokenizer(str(tiny_student_dir))(prompt, add_special_tokens=False)["input_ids"]
    assert engines[0].prompts == [{"prompt_token_ids": ours}]


def test_the_plan_prints_the_engine_arguments_of_the_machine_it_runs_on(tmp_path):
    from nemo_recipes.config import compose_config
    from nemo_recipes.pipeline import StageContext, stage_graph
    from nemo_recipes.stages import sample

    def engine_line(*overrides):
        cfg = compose_config([f"run_dir={tmp_path}", "teacher_sampling.backend=vllm", *overrides])
        stage = next(s for s in stage_graph(cfg) if s.name == "sample_teacher")
        return sample.plan(StageContext(cfg, stage, tmp_path, progress=False, argv=[]))[3]

    assert engine_line("experiment=demo").endswith("seed=0, enable_chunked_prefill=False) x 1 replica(s), "
                                                   "CUDA_VISIBLE_DEVICES 0")  # cluster=cpu: vLLM's CPU build
    assert "enable_chunked_prefill" not in engine_line("experiment=main")
