"""Stage pack: the SFT set tokenized as NeMo's GPTSFTDataset does and packed into NeMo's packed .npy.

    python -m nemo_recipes experiment=demo stages=[pack] sft.pack_size=512

Writes `packed_{pack_size}_seed0.npy` (input_ids, loss_mask, seq_start_id per pack) and `pack_summary.json`. The
packs depend on the context-parallel size of the SFT run, so they are made for `student.parallel.cp`, and on the
NeMo that reads them (`sft.loss_mask_alignment`: where the loss mask marks a trained token).
"""

from __future__ import annotations

from pathlib import Path

from nemo_recipes.io import write_json
from nemo_recipes.models import local_model_dir


def run(ctx) -> dict:
    from nemo_recipes.packing import pack_sft_file
    from nemo_recipes.training.nemo_yaml import packed_sequence_flags

    cfg = ctx.cfg
    result = pack_sft_file(ctx.input_dir("select") / "sft.jsonl", local_model_dir(cfg, "base"), ctx.dir,
                           pack_size=cfg.sft.pack_size, algorithm=cfg.sft.packing_algorithm,
                           context_parallel_size=cfg.student.parallel.cp,
                           loss_mask_alignment=cfg.sft.loss_mask_alignment, **packed_sequence_flags())
    summary = {
        "path": Path(result.path).name,
        "num_packs": result.num_packs,
        "num_sequences": result.num_sequences,
        "longest_sequence": result.longest_sequence,
        "efficiency": result.efficiency,
        "avg_sequences_per_pack": result.avg_sequences_per_pack,
        "pack_size": cfg.sft.pack_size,
        "context_parallel_size": cfg.student.parallel.cp,
        "loss_mask_alignment": cfg.sft.loss_mask_alignment,
    }
    write_json(ctx.dir / "pack_summary.json", summary)
    return summary


def plan(ctx) -> list[str]:
    s = ctx.cfg.sft
    return [f"tokenize with the student's tokenizer (template '{{input}}{{output}}', add_eos False), pack "
            f"{s.packing_algorithm} into {s.pack_size}-token packs for CP={ctx.cfg.student.parallel.cp}, loss mask "
            f"aligned for '{s.loss_mask_alignment}'"]
