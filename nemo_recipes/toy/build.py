"""Build the toy teacher and base student once, on the CPU, and cache them by recipe fingerprint.

    python -m nemo_recipes.toy.build            # builds (or finds) the models and prints their paths

Both are Qwen2-architecture models saved in Hugging Face format with a ChatML tokenizer, so every later stage
treats them exactly as it treats Qwen2.5 checkpoints.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import random
import shutil
import time
from pathlib import Path

from nemo_recipes.toy import corpus

# The models depend on these sources; their text is part of the cache key, so editing one rebuilds the models.
_SOURCES = ("toy/task.py", "toy/corpus.py", "toy/tokenizer.py", "toy/build.py", "data/prompts.py")
# ...and on these libraries, whose versions are part of the key too.
_LIBRARIES = ("torch", "transformers", "tokenizers")


@dataclasses.dataclass(frozen=True)
class ToyRecipe:
    seed: int = 0
    vocab_size: int = 768
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    seq_len: int = 128
    batch_size: int = 16
    lr: float = 3e-3
    base_steps: int = 1400    # "pretraining" of the base model (the student)
    teacher_steps: int = 500  # "post-training" of the base into the reasoning teacher
    # torch splits a CPU reduction by its thread count, so the weights depend on it (5 threads train other weights
    # than 2): the build always runs on this many, whatever the machine's cores or OMP_NUM_THREADS. One, because
    # OpenMP threads that wait for each other on a loaded machine made a step 7x slower with 2 threads than with 1.
    num_threads: int = 1

    def fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())
        package = Path(__file__).resolve().parents[1]
        for source in _SOURCES:
            digest.update((package / source).read_bytes())
        # Other library versions train other weights: a cache filled under other pins is not these models.
        digest.update(json.dumps(_library_versions(), sort_keys=True).encode())
        return digest.hexdigest()[:12]


def _library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in _LIBRARIES}


def default_cache_dir() -> Path:
    return Path(os.environ.get("NEMO_RECIPES_CACHE", Path.home() / ".cache" / "nemo_recipes"))


def ensure_toy_models(cache_dir: str | Path | None = None, recipe: ToyRecipe = ToyRecipe(),
                      progress: bool = True) -> dict[str, Path]:
    """Return {"teacher": dir, "student": dir}, building both under a lock if they are not cached yet."""
    root = Path(cache_dir or default_cache_dir()) / f"toy-models-{recipe.fingerprint()}"
    paths = {"teacher": root / "teacher", "student": root / "student"}
    done = root / "DONE"
    if done.exists():
        return paths
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if we are killed
        if not done.exists():
            _build(root, recipe, progress)
            done.write_text(json.dumps(dataclasses.asdict(recipe)) + "\n")
    return paths


def _build(root: Path, recipe: ToyRecipe, progress: bool) -> None:
    import torch

    start = time.time()
    work = root.parent / f".{root.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.num_threads)
    try:
        _train_both(work, recipe, progress)
    finally:
        torch.set_num_threads(threads)  # the build may run inside a pipeline process: give it its threads back

    shutil.rmtree(root, ignore_errors=True)
    os.replace(work, root)
    if progress:
        print(f"toy models built in {time.time() - start:.0f} s: {root}", flush=True)


def _train_both(work: Path, recipe: ToyRecipe, progress: bool) -> None:
    """The base model ("pretraining"), saved as the student, then the same weights post-trained into the teacher."""
    import torch

    from nemo_recipes.toy.tokenizer import build_tokenizer

    torch.manual_seed(recipe.seed)
    tokenizer = build_tokenizer(corpus.tokenizer_texts(recipe.seed), vocab_size=recipe.vocab_size)
    model = _new_model(recipe, tokenizer)

    rng = random.Random(recipe.seed)
    _train(model, tokenizer, lambda: corpus.base_document(rng), recipe, recipe.base_steps, "toy base (student)",
           progress)
    model.save_pretrained(work / "student")
    tokenizer.save_pretrained(work / "student")

    _train(model, tokenizer, lambda: corpus.teacher_chat(rng), recipe, recipe.teacher_steps, "toy teacher",
           progress)
    model.save_pretrained(work / "teacher")
    tokenizer.save_pretrained(work / "teacher")


def _new_model(recipe: ToyRecipe, tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_kv_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForCausalLM(config)


def _train(model, tokenizer, next_document, recipe: ToyRecipe, num_steps: int, desc: str, progress: bool) -> None:
    """Causal-LM training on a stream of documents joined by <|endoftext|>, cut into fixed-length rows."""
    import torch
    from tqdm import tqdm

    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.98), weight_decay=0.01)
    eos = tokenizer.eos_token_id
    buffer: list[int] = []
    row_len = recipe.seq_len + 1
    model.train()
    bar = tqdm(range(num_steps), desc=desc, disable=not progress, mininterval=2)
    for step in bar:
        while len(buffer) < recipe.batch_size * row_len:
            buffer += tokenizer(next_document())["input_ids"] + [eos]
        rows = torch.tensor(buffer[: recipe.batch_size * row_len]).view(recipe.batch_size, row_len)
        del buffer[: recipe.batch_size * row_len]
        warmup = min(1.0, (step + 1) / 30)
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr * warmup * 0.5 * (1 + math.cos(math.pi * step / num_steps))
        loss = _lm_loss(model, rows)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()


def _lm_loss(model, rows):
    import torch.nn.functional as F

    logits = model(input_ids=rows[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), rows[:, 1:].reshape(-1))


def main() -> None:
    for role, path in ensure_toy_models().items():
        print(f"{role}: {path}")


if __name__ == "__main__":
    main()
