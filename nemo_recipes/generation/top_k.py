"""`top_k: null` -- the model's own generation_config.json decides top_k, as it did for NeMo-Skills' samples.

    from nemo_recipes.generation.top_k import resolved_sampling
    sampling = resolved_sampling(cfg, "teacher")     # teacher_sampling with top_k an int: what both backends send

NeMo-Skills at the paper's time (731558c9, July 2025) sent top_k to its vLLM server only when it was above 0
(nemo_skills/inference/model/vllm.py, VLLMModel._build_request_body) and its pipelines passed ++inference.top_k=0,
so the server filled it in: vLLM 0.9's ModelConfig.get_diff_sampling_param takes top_k from the model's
generation_config.json, keeping only values that differ from transformers' GenerationConfig defaults (to_diff_dict),
so a file's top_k of 50 -- transformers 4.x's default -- was never applied. Temperature, top_p, min_p and
repetition_penalty NeMo-Skills always sent itself. Our vLLM call takes SamplingParams as given (LLM.generate reads
the model's defaults only without them), so the resolved value is sent explicitly, by both backends.
"""

from __future__ import annotations

import json
from pathlib import Path

from nemo_recipes.errors import UserError

TOP_K_OFF = -1  # vLLM's "no top-k filtering"; the hf backend skips top_k unless it is above 0
TRANSFORMERS_DEFAULT_TOP_K = 50  # GenerationConfig().top_k in transformers 4.x, which vLLM 0.9 left out


def generation_config_top_k(model_dir) -> int:
    """The top_k vLLM 0.9's server took from `model_dir/generation_config.json`; TOP_K_OFF when it took none."""
    path = Path(model_dir) / "generation_config.json"
    if not path.is_file():
        return TOP_K_OFF
    try:
        top_k = json.loads(path.read_text(encoding="utf-8")).get("top_k")
    except (OSError, ValueError, AttributeError) as error:
        raise UserError(f"{path} is not a JSON object ({error}); top_k: null reads the model's top_k there.") from None
    if top_k is None or top_k == TRANSFORMERS_DEFAULT_TOP_K:
        return TOP_K_OFF
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise UserError(f"{path}: top_k is {top_k!r}, not a whole number of at least 0.")
    return top_k or TOP_K_OFF  # 0 disables top-k in transformers and vLLM alike


def resolved_sampling(cfg, role: str):
    """The role's sampling settings with top_k an int: its own, or with top_k null the model folder's
    generation_config.json (a hub model's pinned snapshot in the Hugging Face cache)."""
    from omegaconf import OmegaConf, open_dict

    from nemo_recipes.models import local_model_dir, sampling_config

    sampling = sampling_config(cfg, role)
    if sampling.top_k is not None:
        return sampling
    resolved = OmegaConf.create(OmegaConf.to_container(sampling, resolve=True))
    with open_dict(resolved):
        resolved.top_k = generation_config_top_k(local_model_dir(cfg, role))
    return resolved
