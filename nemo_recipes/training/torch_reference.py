"""Reference SFT in plain PyTorch on the HF model, reading the packed .npy that NeMo-Aligner trains on.

    from nemo_recipes.training.torch_reference import train
    train("runs/demo/pack/packed_256_seed0.npy", "runs/demo/toy/student", "runs/demo/sft",
          lr=1e-3, min_lr=1e-4, warmup_steps=2, weight_decay=0.01, betas=(0.9, 0.98),
          global_batch_size=4, max_steps=40, gradient_clip_val=1.0, save_interval=20)

It runs the toy demo and the CPU tests, and is the oracle for the packed loss. What it shares with NeMo-Aligner 0.7.0
on NeMo 2.1.0-2.2.0 (sources in packed_data.py and lr_schedule.py):
* per pack: inputs/labels shifted per sub-sequence, attention either causal across the whole pack (positions 0..T-1,
  NeMo-Skills' container at paper time) or within each sub-sequence only (positions restarting at 0, NeMo-Aligner
  0.7.0) -- packed_data.PACK_ATTENTIONS -- and loss = sum(token loss * mask) / mask.sum() (MegatronGPTModel.loss_func);
* per step: the mean of those pack losses over the global batch (Megatron divides each micro-batch by their count);
* AdamW (distributed_fused_adam is Adam with decoupled weight decay), eps 1e-8, no weight decay on biases -- and
  decay on the norm weights, as NeMo's param groups give them under Transformer Engine;
* CosineAnnealing with warmup, min_lr and constant_steps over max_steps, stepped once per update;
* global-norm gradient clipping when gradient_clip_val is set;
* the packs each step draws (model.data.sample up-sampling or epochs with drop_last);
* final weights: the last step's, or the mean of every saved checkpoint (NeMo-Skills' average_checkpoints.py).
Where it differs: fp32 master weights with optional bf16 autocast instead of Megatron's O2 mixed precision, no
model parallelism, and a pack drawn k times in one step is run once with weight k (the same gradient, k times
cheaper -- the 20-example recipe draws each pack hundreds of times per step).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from nemo_recipes.errors import Interrupted, UserError
from nemo_recipes.io import atomic_write_text, sha256_file, write_json
from nemo_recipes.packing import DEFAULT_LOSS_MASK_ALIGNMENT
from nemo_recipes.training.checkpoints import (
    average_checkpoint_weights,
    check_final_weights,
    latest_checkpoint,
    load_training_state,
    publish_directory,
    remove_partial_checkpoints,
    save_checkpoint,
)
from nemo_recipes.training.lr_schedule import check_schedule, nemo_cosine_annealing_lr
from nemo_recipes.training.packed_data import (
    DEFAULT_PACK_ATTENTION,
    block_causal_mask,
    check_pack_attention,
    load_packs,
    pack_draws,
    packed_batch,
)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
PRECISIONS = ("fp32", "bf16")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")  # the two that honour an explicit 4D mask


def packed_loss(model, pack: dict, loss_mask_alignment: str = DEFAULT_LOSS_MASK_ALIGNMENT,
                pack_attention: str = DEFAULT_PACK_ATTENTION):
    """NeMo's loss of one pack: returns (loss, per-token losses [T], loss mask [T])."""
    return batch_loss(model, packed_batch(pack, loss_mask_alignment), pack_attention)


def batch_loss(model, batch: dict, pack_attention: str = DEFAULT_PACK_ATTENTION):
    """packed_loss on a batch already built by packed_data.packed_batch."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    if pack_attention == "per_example":
        attention_mask = block_causal_mask(batch["seq_lengths"], device=device)
        position_ids = batch["position_ids"].to(device)
    else:  # whole_pack: Megatron's RoPE ignores the collated position ids and counts over the whole pack
        attention_mask = block_causal_mask([batch["token_count"]], device=device)
        position_ids = torch.arange(batch["token_count"], device=device)[None]
    if model.config._attn_implementation == "eager":
        # eager attention adds the mask to the scores, so it needs 0 / -inf rather than True / False.
        blocked = torch.finfo(next(model.parameters()).dtype).min
        attention_mask = torch.zeros(attention_mask.shape, device=device).masked_fill(~attention_mask, blocked)
    logits = model(
        input_ids=batch["tokens"].to(device),
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
    ).logits
    per_token = F.cross_entropy(logits[0].float(), batch["labels"][0].to(device), reduction="none")
    loss_mask = batch["loss_mask"][0].to(device)
    return (per_token * loss_mask).sum() / loss_mask.sum(), per_token, loss_mask


def train(
    packed_path,
    model_dir,
    output_dir,
    *,
    lr: float,
    min_lr: float,
    warmup_steps: int,
    constant_steps: int = 0,
    weight_decay: float,
    betas,
    global_batch_size: int,
    max_steps: int,
    upsample: bool = True,
    gradient_clip_val: float | None = None,
    seed: int = 1234,
    save_interval: int | None = None,
    final_weights: str = "last",
    pack_attention: str = DEFAULT_PACK_ATTENTION,
    progress: bool = True,
    log_path=None,
    device: str | None = None,
    precision: str = "fp32",
    attn_implementation: str = "sdpa",
    loss_mask_alignment: str = DEFAULT_LOSS_MASK_ALIGNMENT,
    deadline: float | None = None,
) -> dict:
    """Fine-tune the HF model in `model_dir` on the packs; write `output_dir/model/` and return a summary.

    `loss_mask_alignment` is the packed file's (the pack stage's summary says which it wrote).
    Resumes from the latest complete `output_dir/checkpoints/step_N/` if there is one (written every
    `save_interval` steps and at the last step). Logs one JSON line per step to `log_path`.
    `final_weights` "average" writes the mean of every saved checkpoint's weights instead of the last step's.
    Past `deadline` (a time.time(): a Slurm job's time limit less a margin, as NeMo's exp_manager.max_time_per_run)
    it saves a checkpoint and raises Interrupted, so the next job resumes where it stopped.
    """
    import torch
    from tqdm import tqdm

    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    if attn_implementation not in ATTENTION_IMPLEMENTATIONS:
        raise UserError(f"attn_implementation {attn_implementation!r} is not one of sdpa, eager.")
    if save_interval is not None and save_interval < 1:
        raise UserError(f"save_interval must be a positive number of steps or None, got {save_interval}.")
    check_final_weights(final_weights, "final_weights")
    check_pack_attention(pack_attention)
    check_schedule(lr=lr, min_lr=min_lr, warmup_steps=warmup_steps, constant_steps=constant_steps, max_steps=max_steps)
    settings = {
        "packed_sha256": sha256_file(packed_path),
        "model_dir": str(Path(model_dir).resolve()),
        "lr": lr,
        "min_lr": min_lr,
        "warmup_steps": warmup_steps,
        "constant_steps": constant_steps,
        "weight_decay": weight_decay,
        "betas": [float(b) for b in betas],
        "global_batch_size": global_batch_size,
        "max_steps": max_steps,
        "upsample": upsample,
        "gradient_clip_val": gradient_clip_val,
        "seed": seed,
        "precision": precision,
        "loss_mask_alignment": loss_mask_alignment,
        "pack_attention": pack_attention,
    }
    packs = load_packs(packed_path, loss_mask_alignment)
    draws = pack_draws(len(packs), global_batch_size, max_steps, upsample=upsample, seed=seed)
    output_dir = Path(output_dir)
    checkpoint_root = output_dir / "checkpoints"
    remove_partial_checkpoints(checkpoint_root)
    resume_from = latest_checkpoint(checkpoint_root)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    torch.manual_seed(seed)
    model = _load_model(resume_from / "model" if resume_from else model_dir, device, attn_implementation)
    optimizer = _adamw(model, lr=lr, betas=settings["betas"], weight_decay=weight_decay)
    progress_state = {"step": 0, "tokens": 0, "loss": None}
    if resume_from:
        progress_state = _restore(resume_from, optimizer, settings)
    resumed_from_step = progress_state["step"]
    _drop_log_lines_after(log_path, resumed_from_step)

    # The save schedule; a checkpoint saved to stop before a time limit is not in it (a run without that stop would
    # not have it), so the average leaves it out.
    save_steps = {s for s in range(1, max_steps + 1) if s % save_interval == 0 or s == max_steps} if save_interval \
        else set()
    batches: dict[int, dict] = {}
    started = time.time()
    bar = tqdm(total=max_steps, initial=resumed_from_step, desc="SFT", unit="step", file=sys.stderr,
               disable=not progress)
    for step in range(resumed_from_step, max_steps):
        if deadline is not None and step > resumed_from_step and time.time() >= deadline:
            bar.close()
            _stop_before_time_limit(checkpoint_root, step, max_steps, model, optimizer, progress_state, settings,
                                    saved=step in save_steps)
        step_lr = nemo_cosine_annealing_lr(
            step, lr=lr, min_lr=min_lr, max_steps=max_steps, warmup_steps=warmup_steps, constant_steps=constant_steps
        )
        for group in optimizer.param_groups:
            group["lr"] = step_lr
        optimizer.zero_grad(set_to_none=True)
        loss, tokens = _accumulate_gradients(model, packs, batches, draws[step], precision, loss_mask_alignment,
                                             pack_attention)
        grad_norm = _clip_gradients(model, gradient_clip_val)
        optimizer.step()

        progress_state = {"step": step + 1, "tokens": progress_state["tokens"] + tokens, "loss": loss}
        _append_log(log_path, {"step": step + 1, "loss": loss, "lr": step_lr, "grad_norm": grad_norm, "tokens": tokens})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{step_lr:.2e}")
        if step + 1 in save_steps:
            _save(checkpoint_root, model, optimizer, progress_state, settings)
    bar.close()

    model_path = output_dir / "model"
    averaged = []
    if final_weights == "average" and save_steps:
        weights, averaged = average_checkpoint_weights(checkpoint_root, steps=save_steps)
        _load_weights(model, weights)
    _save_final_model(model, model_dir, model_path)
    summary = {
        "final_loss": progress_state["loss"],
        "steps": progress_state["step"],
        "tokens": progress_state["tokens"],
        "seconds": round(time.time() - started, 3),
        "resumed_from_step": resumed_from_step,
        "num_packs": len(packs),
        "final_weights": f"average of steps {', '.join(map(str, averaged))}" if averaged else "last step",
        "model_path": str(model_path),
    }
    write_json(output_dir / "train_summary.json", summary)
    return summary


def _save(checkpoint_root: Path, model, optimizer, progress_state: dict, settings: dict) -> Path:
    state = {**progress_state, "optimizer": optimizer.state_dict(), "settings": settings, **_rng_state()}
    return save_checkpoint(checkpoint_root, progress_state["step"], model, state)


def _stop_before_time_limit(checkpoint_root: Path, step: int, max_steps: int, model, optimizer, progress_state: dict,
                            settings: dict, *, saved: bool) -> None:
    """Save `step` (unless the schedule just `saved` it) and stop; the stage's next run resumes from there."""
    checkpoint = latest_checkpoint(checkpoint_root) if saved else _save(
        checkpoint_root, model, optimizer, progress_state, settings)
    raise Interrupted(f"training stopped at step {step} of {max_steps} to save before the job's time limit "
                      f"({checkpoint}); the next run of the stage resumes there.")


def _load_model(path, device, attn_implementation: str):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=torch.float32, attn_implementation=attn_implementation
    )
    return model.to(device).train()


def _adamw(model, *, lr: float, betas, weight_decay: float):
    import torch

    # NeMo exempts parameters named *bias from decay. Its norm exemption only matches Apex norm classes, and Qwen2
    # under Transformer Engine has none of those, so the norm weights decay like every other weight.
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if name.endswith("bias") else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=tuple(betas), eps=1e-8)


def _accumulate_gradients(model, packs, batches: dict, step_draws, precision: str, loss_mask_alignment: str,
                          pack_attention: str) -> tuple[float, int]:
    """Backpropagate the mean pack loss of one global batch; returns (that mean, input tokens drawn)."""
    import torch

    global_batch_size = len(step_draws)
    device_type = next(model.parameters()).device.type
    loss_sum, tokens = 0.0, 0
    for index, count in sorted(Counter(step_draws.tolist()).items()):
        if index not in batches:
            batches[index] = packed_batch(packs[index], loss_mask_alignment)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, _, _ = batch_loss(model, batches[index], pack_attention)
        (loss * (count / global_batch_size)).backward()
        loss_sum += loss.item() * count
        tokens += batches[index]["token_count"] * count
    return loss_sum / global_batch_size, tokens


def _clip_gradients(model, max_norm: float | None) -> float:
    """Global gradient norm before clipping (what NeMo-Aligner logs); clips to max_norm when it is set."""
    import torch

    parameters = [p for p in model.parameters() if p.grad is not None]
    if max_norm:
        return float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))
    return float(torch.nn.utils.get_total_norm([p.grad for p in parameters]))


def _load_weights(model, weights: dict) -> None:
    """Load averaged weights; a tensor save_pretrained left out as tied to another (lm_head) follows it."""
    result = model.load_state_dict(weights, strict=False)
    untied = [key for key in result.missing_keys if key not in _tied_keys(model)]
    if result.unexpected_keys or untied:
        raise UserError(f"the averaged checkpoints do not match the model: unexpected {result.unexpected_keys}, "
                        f"missing {untied}.")


def _tied_keys(model) -> set[str]:
    owners: dict[int, str] = {}
    tied = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in owners:
            tied.add(name)
        owners.setdefault(id(tensor), name)
    return tied


def _rng_state() -> dict:
    import torch

    state = {"rng_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore(checkpoint: Path, optimizer, settings: dict) -> dict:
    import torch

    state = load_training_state(checkpoint)
    for key, value in settings.items():
        if state["settings"].get(key) != value:
            raise UserError(
                f"{checkpoint} was trained with {key}={state['settings'].get(key)!r}, not {value!r}; "
                f"resume with the same settings or use a new output directory."
            )
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng_cpu"])
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return {"step": state["step"], "tokens": state["tokens"], "loss": state["loss"]}


def _append_log(log_path, record: dict) -> None:
    if log_path is None:
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _drop_log_lines_after(log_path, step: int) -> None:
    """A run redoes every step after its checkpoint (or all of them), so their earlier log lines would be duplicates."""
    if log_path is None or not Path(log_path).exists():
        return
    lines = Path(log_path).read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(log_path, "".join(line + "\n" for line in kept))


def _save_final_model(model, model_dir, model_path: Path) -> None:
    model_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=model_path.parent, prefix=f".{model_path.name}.tmp"))
    try:
        model.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (Path(model_dir) / name).exists():
                shutil.copy2(Path(model_dir) / name, tmp / name)
        publish_directory(tmp, model_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
