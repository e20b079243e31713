"""top_k: null -- the model folder's generation_config.json decides, as NeMo-Skills' vLLM server did at paper time."""

from __future__ import annotations

import json
import shutil

import pytest

from nemo_recipes.config import compose_config
from nemo_recipes.errors import UserError
from nemo_recipes.generation import open_backend
from nemo_recipes.generation.top_k import TOP_K_OFF, generation_config_top_k, resolved_sampling


def model_with_generation_config(tmp_path, source_dir, config: dict | None):
    model_dir = tmp_path / "model"
    shutil.copytree(source_dir, model_dir)
    (model_dir / "generation_config.json").unlink(missing_ok=True)
    if config is not None:
        (model_dir / "generation_config.json").write_text(json.dumps(config))
    return model_dir


@pytest.mark.parametrize("config, top_k", [
    ({"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}, 20),
    ({"top_k": 50}, TOP_K_OFF),  # transformers 4.x's default: vLLM 0.9's to_diff_dict dropped it
    ({"top_k": 0}, TOP_K_OFF),
    ({"do_sample": False, "max_new_tokens": 2048}, TOP_K_OFF),  # Qwen2.5 base models set no top_k
    (None, TOP_K_OFF),  # no generation_config.json at all
])
def test_generation_config_top_k_is_what_vllm_09_applied(tmp_path, config, top_k):
    if config is not None:
        (tmp_path / "generation_config.json").write_text(json.dumps(config))
    assert generation_config_top_k(tmp_path) == top_k


@pytest.mark.parametrize("text", ['{"top_k": "20"}', '{"top_k": -3}', '[1, 2]', "{not json"])
def test_an_unreadable_top_k_is_one_sentence_naming_the_file(tmp_path, text):
    (tmp_path / "generation_config.json").write_text(text)
    with pytest.raises(UserError, match=r"generation_config\.json"):
        generation_config_top_k(tmp_path)


def test_teacher_and_eval_sampling_default_to_the_models_generation_config(tmp_path, tiny_student_dir):
    model_dir = model_with_generation_config(tmp_path, tiny_student_dir, {"top_k": 20, "temperature": 0.7})
    models = [f"teacher.source=local", f"teacher.path={model_dir}", f"student.source=local",
              f"student.path={model_dir}"]
    cfg = compose_config(["experiment=main", *models])
    assert cfg.teacher_sampling.top_k is None and cfg.eval_sampling.top_k is None
    assert resolved_sampling(cfg, "teacher").top_k == 20
    assert resolved_sampling(cfg, "base").top_k == 20
    # The rest is the configured sampling, untouched.
    assert resolved_sampling(cfg, "teacher").temperature == cfg.teacher_sampling.temperature == 0.7
    assert resolved_sampling(cfg, "base").temperature == cfg.eval_sampling.temperature == 0.6

    explicit = compose_config(["experiment=main", *models, "teacher_sampling.top_k=-1"])
    assert resolved_sampling(explicit, "teacher").top_k == TOP_K_OFF


def test_the_resolved_top_k_reaches_the_hf_backend(tmp_path, tiny_student_dir):
    # top_k 1 keeps only the likeliest token: sampling at temperature 1 must then be greedy decoding.
    model_dir = model_with_generation_config(tmp_path, tiny_student_dir, {"top_k": 1})
    models = ["teacher.source=local", f"teacher.path={model_dir}", "teacher_sampling.backend=hf",
              "teacher_sampling.temperature=1.0", "teacher_sampling.max_tokens=12", "teacher_sampling.batch_size=4"]
    sampling = resolved_sampling(compose_config(["experiment=main", *models]), "teacher")
    greedy = resolved_sampling(compose_config(["experiment=main", *models, "teacher_sampling.temperature=0"]),
                               "teacher")
    requests = [{"prompt": f"hello {i}", "seed": 3} for i in range(4)]
    sampled = open_backend("hf", str(model_dir), sampling).generate(requests)
    assert sampled == open_backend("hf", str(model_dir), greedy).generate(requests)


def test_the_sample_stage_records_the_resolved_top_k(tmp_path, tiny_student_dir):
    from nemo_recipes.io import read_json, read_jsonl
    from nemo_recipes.pipeline import run_pipeline

    model_dir = model_with_generation_config(tmp_path, tiny_student_dir, {"top_k": 7})
    cfg = compose_config(["experiment=demo", f"run_dir={tmp_path}/run", "progress=false", "teacher.source=local",
                          f"teacher.path={model_dir}", "problems.limit=2", "teacher_sampling.n=2",
                          "teacher_sampling.max_tokens=4", "stages=[prepare,sample_teacher]"])
    run_pipeline(cfg, check=False)  # a local model counts as a GPU model in the plan; this one runs on the CPU
    stage = tmp_path / "run" / "sample_teacher"
    assert read_json(stage / "manifest.json")["summary"]["top_k"] == 7
    assert {record["sampling"]["top_k"] for record in read_jsonl(stage / "generations.jsonl")} == {7}
