"""Generation backends behind one interface.

    generator = open_backend("hf", model_path, sampling)       # loads the model once
    results = generator.generate([{"prompt": "...", "seed": 7}, ...])
    # -> [{"generation": str, "num_generated_tokens": int, "finish_reason": "stop" | "length"}, ...]

The prompt is always a string rendered by nemo_recipes.data.prompts, never a chat template applied by a server, and
every backend encodes it with nemo_recipes.tokenizer, so they all generate from the token ids SFT packing uses.
`generation` excludes the stop string, as vLLM's output does. Backends import their heavy library lazily, so the
engine and the planner never import vLLM or transformers.
"""

from __future__ import annotations

import importlib

from nemo_recipes.errors import UserError

BACKENDS = {"hf": "nemo_recipes.generation.hf", "vllm": "nemo_recipes.generation.vllm"}


def open_backend(name: str, model_path: str, sampling, **options):
    if name not in BACKENDS:
        raise UserError(f"sampling.backend: unknown backend '{name}'; use one of {', '.join(BACKENDS)}.")
    return importlib.import_module(BACKENDS[name]).open_generator(model_path, sampling, **options)
