"""Reading NeMo's packed .npy as NeMo-Aligner's SFT does: batches, attention blocks, and the packs each step draws.

Sources (NeMo v2.1.0 and v2.2.0): GPTSFTPackedDataset.collate_fn, _build_loss_mask and _build_samples_mapping in
`nemo/collections/nlp/data/language_modeling/megatron/gpt_sft_dataset.py`, MegatronPretrainingRandomBatchSampler in
`.../megatron/megatron_batch_samplers.py`; NeMo-Aligner v0.7.0 `examples/nlp/gpt/train_gpt_sft.py` (model.data.sample).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nemo_recipes.errors import UserError
from nemo_recipes.packing import DEFAULT_LOSS_MASK_ALIGNMENT, check_loss_mask_alignment

PACK_KEYS = ("input_ids", "loss_mask", "seq_start_id")

# What a token of a pack attends to (sft.pack_attention):
#   whole_pack   every earlier token of the pack, as one causal sequence at positions 0..T-1: NeMo-Skills' container at
#                paper time (NeMo-Aligner 35fcfd9d calls get_forward_output_and_loss_func(forward_only) without
#                tuning=True, so NeMo 19668e53's get_batch keeps no cu_seqlens; Megatron's RoPE runs over the pack)
#   per_example  only the earlier tokens of its own example, positions restarting at 0: NeMo-Aligner 0.7.0 (tuning=True
#                passes cu_seqlens to Transformer Engine's THD attention)
PACK_ATTENTIONS = ("whole_pack", "per_example")
DEFAULT_PACK_ATTENTION = "whole_pack"


def load_packs(path, loss_mask_alignment: str = DEFAULT_LOSS_MASK_ALIGNMENT) -> list[dict]:
    """The packs of a NeMo packed .npy, checked for the structure GPTSFTPackedDataset reads."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: packed data file not found.")
    try:
        packs = np.load(path, allow_pickle=True)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a NumPy .npy file ({e}).") from None
    if packs.dtype != object or packs.ndim != 1 or len(packs) == 0:
        raise UserError(f"{path}: expected a non-empty 1-D object array of packs, found {packs.dtype} {packs.shape}.")
    for index, pack in enumerate(packs):
        if not isinstance(pack, dict) or any(key not in pack for key in PACK_KEYS):
            raise UserError(f"{path}: pack {index} is not a dict with keys {', '.join(PACK_KEYS)}.")
        if len(pack["loss_mask"]) != len(pack["input_ids"]) or list(pack["seq_start_id"][:1]) != [0]:
            raise UserError(f"{path}: pack {index} has mismatched loss_mask/input_ids or a seq_start_id not from 0.")
        if not label_mask(pack, loss_mask_alignment).any():
            # NeMo divides by the pack's loss-token count, so such a pack would turn the loss into NaN.
            raise UserError(f"{path}: pack {index} has no answer token to train on.")
    return list(packs)


def packed_batch(pack: dict, loss_mask_alignment: str = DEFAULT_LOSS_MASK_ALIGNMENT) -> dict:
    """One pack as NeMo's collate_fn shapes it (micro batch 1): each sub-sequence loses its last token in `tokens`
    and its first in `labels`, `loss_mask` is read beside the labels as the NeMo of `loss_mask_alignment` reads it
    (label_mask), and `position_ids` restart at 0 per sub-sequence.

    Returns torch tensors `tokens`, `labels`, `position_ids` (int64, shape [1, T]), `loss_mask` (float32, [1, T]),
    plus `seq_lengths` (the T positions per sub-sequence) and `token_count` (T). NeMo's padding of T to a multiple
    of 16 is left out: padded positions carry no loss and attend to nothing real, so it changes no number.
    """
    import torch

    input_ids = np.asarray(pack["input_ids"], dtype=np.int64)
    bounds = _bounds(pack)
    as_input = _input_positions(bounds)
    seq_lengths = [end - start - 1 for start, end in bounds]
    position_ids = np.concatenate([np.arange(n) for n in seq_lengths])
    return {
        "tokens": torch.from_numpy(input_ids[as_input])[None],
        "labels": torch.from_numpy(input_ids[as_input + 1])[None],
        "loss_mask": torch.from_numpy(label_mask(pack, loss_mask_alignment).astype(np.float32))[None],
        "position_ids": torch.from_numpy(position_ids)[None],
        "seq_lengths": seq_lengths,
        "token_count": int(as_input.size),
    }


def label_mask(pack: dict, loss_mask_alignment: str = DEFAULT_LOSS_MASK_ALIGNMENT) -> np.ndarray:
    """The pack's loss mask over its labels, read where the NeMo of that alignment reads it (packing.nemo_loss_mask):
    mask[s:e-1] ("label", NeMo 2.2) or mask[s+1:e] ("token", NeMo 2.1) for each sub-sequence [s, e)."""
    check_loss_mask_alignment(loss_mask_alignment)
    as_input = _input_positions(_bounds(pack))
    return np.asarray(pack["loss_mask"], dtype=bool)[as_input if loss_mask_alignment == "label" else as_input + 1]


def _input_positions(bounds: list[tuple[int, int]]) -> np.ndarray:
    """Every position of the pack but each sub-sequence's last: where the inputs are (the labels are one later)."""
    return np.concatenate([np.arange(start, end - 1) for start, end in bounds])


def check_pack_attention(pack_attention: str) -> None:
    if pack_attention not in PACK_ATTENTIONS:
        raise UserError(f"sft.pack_attention '{pack_attention}' is not one of {', '.join(PACK_ATTENTIONS)}.")


def block_causal_mask(seq_lengths: list[int], device=None):
    """Boolean [1, 1, T, T] mask, True where a position may attend: causal inside each sub-sequence, nothing across
    (what NeMo's THD attention with cu_seqlens computes)."""
    import torch

    segment = torch.repeat_interleave(
        torch.arange(len(seq_lengths), device=device), torch.tensor(seq_lengths, device=device)
    )
    total = segment.numel()
    causal = torch.ones(total, total, dtype=torch.bool, device=device).tril()
    return (causal & (segment[:, None] == segment[None, :]))[None, None]


def pack_draws(num_packs: int, global_batch_size: int, max_steps: int, *, upsample: bool, seed: int) -> np.ndarray:
    """Pack indices each training step uses, shape [max_steps, global_batch_size], as NeMo-Aligner draws them.

    upsample=True (model.data.sample=True): the dataset is max_steps x GBS entries made of whole passes over the
    packs, each pass shuffled (np.random seeded with `seed`); the batch sampler then reads that list in a
    torch.randperm order seeded with `seed`. upsample=False: epochs over the packs, each a torch.randperm seeded with
    seed + epoch, the last partial batch dropped. NeMo seeds these from train_ds.seed and model.seed, both 1234 by
    default; here one `seed` stands for both.
    """
    if num_packs < 1 or global_batch_size < 1 or max_steps < 1:
        raise UserError("num_packs, global_batch_size and max_steps must all be at least 1.")
    if upsample:
        num_samples = max_steps * global_batch_size
        passes = np.arange(num_packs)[None, :].repeat(-(-num_samples // num_packs), axis=0)
        rng = np.random.RandomState(seed)
        for one_pass in passes:
            rng.shuffle(one_pass)
        dataset = passes.reshape(-1)[:num_samples]
        order = _torch_randperm(num_samples, seed)
        return dataset[order].reshape(max_steps, global_batch_size)

    steps_per_epoch = num_packs // global_batch_size
    if steps_per_epoch == 0:
        raise UserError(
            f"global_batch_size {global_batch_size} exceeds the {num_packs} packs, so an epoch has no step; "
            f"lower it or set upsample=True."
        )
    epochs = [
        _torch_randperm(num_packs, seed + epoch)[: steps_per_epoch * global_batch_size]
        for epoch in range(-(-max_steps // steps_per_epoch))
    ]
    return np.concatenate(epochs)[: max_steps * global_batch_size].reshape(max_steps, global_batch_size)


def _torch_randperm(n: int, seed: int) -> np.ndarray:
    import torch

    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(n, generator=generator).numpy()


def _bounds(pack: dict) -> list[tuple[int, int]]:
    starts = [int(s) for s in pack["seq_start_id"]]
    return list(zip(starts, starts[1:] + [len(pack["input_ids"])]))
