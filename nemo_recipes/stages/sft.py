"""Stage sft: fine-tune the base student on the packed SFT set; the result is a Hugging Face model in `sft/model/`.

    python -m nemo_recipes experiment=demo stages=[sft] sft.max_steps=60        # torch_reference on CPU
    python -m nemo_recipes experiment=main stages=[sft]                         # NeMo-Aligner in the container

Backend `nemo_aligner` converts HF -> NeMo, writes the complete gpt_sft YAML and launches
`train_gpt_sft.py` with torchrun or srun, then converts NeMo -> HF (training/nemo_aligner.py). Backend
`torch_reference` trains the same packed file with the same loss, schedule and up-sampling in plain PyTorch
(training/torch_reference.py). Both resume after a kill: exp_manager's resume_if_exists, or our checkpoints.
"""

from __future__ import annotations

from nemo_recipes.errors import UserError
from nemo_recipes.io import read_json
from nemo_recipes.models import local_model_dir

BACKENDS = ("nemo_aligner", "torch_reference")


def run(ctx) -> dict:
    cfg = ctx.cfg
    backend = _backend(cfg)
    packed, pack_summary = _packed_input(ctx)
    base = local_model_dir(cfg, "base")
    if backend == "nemo_aligner":
        from nemo_recipes.training.nemo_aligner import plan_sft, run_sft

        for command in plan_sft(cfg, stage_dir=ctx.dir, packed_data_path=packed, hf_model_dir=base):
            ctx.record_command(command)
        model_dir = run_sft(cfg, stage_dir=ctx.dir, packed_data_path=packed, hf_model_dir=base,
                            longest_sequence=pack_summary["longest_sequence"],
                            packed_context_parallel_size=pack_summary["context_parallel_size"])
        return {"backend": backend, "model": str(model_dir)}

    from nemo_recipes.launch import training_deadline
    from nemo_recipes.training.torch_reference import train

    s = cfg.sft
    summary = train(packed, base, ctx.dir, lr=s.lr, min_lr=s.min_lr, warmup_steps=s.warmup_steps,
                    constant_steps=s.constant_steps, weight_decay=s.weight_decay, betas=tuple(s.betas),
                    global_batch_size=s.global_batch_size, max_steps=s.max_steps, upsample=s.upsample,
                    gradient_clip_val=s.gradient_clip_val, seed=s.seed, save_interval=s.save_interval,
                    final_weights=s.final_weights, pack_attention=s.pack_attention,
                    progress=ctx.progress, log_path=ctx.dir / "train_log.jsonl", precision=s.precision,
                    loss_mask_alignment=pack_summary["loss_mask_alignment"], deadline=training_deadline(cfg.cluster))
    ctx.log(f"{summary['steps']} steps, final loss {summary['final_loss']:.4f}, {summary['seconds']:.0f} s")
    return {"backend": backend, **{k: v for k, v in summary.items() if k != "model_path"}}


def follow(ctx, leader_done) -> None:
    """A task after the first of a multi-node NeMo-Aligner job: one rank of the training the first task leads."""
    if _backend(ctx.cfg) != "nemo_aligner":
        return
    from nemo_recipes.training.nemo_aligner import follow_sft

    follow_sft(ctx.cfg, stage_dir=ctx.dir, packed_data_path=_packed_input(ctx)[0],
               hf_model_dir=local_model_dir(ctx.cfg, "base", download=False), leader_done=leader_done)


def plan(ctx) -> list[str]:
    cfg, s = ctx.cfg, ctx.cfg.sft
    backend = _backend(cfg)
    lines = [f"backend {backend}: LR {s.lr} -> {s.min_lr}, warmup {s.warmup_steps}, GBS {s.global_batch_size} packs, "
             f"{s.max_steps} steps, up-sample {s.upsample}, optimizer {s.optimizer}, gradient clip "
             f"{s.gradient_clip_val}, attention {s.pack_attention}, final weights {s.final_weights}"]
    if backend == "nemo_aligner":
        from nemo_recipes.training.nemo_aligner import plan_sft

        p = cfg.student.parallel
        # Memory per GPU and the settings that would refuse the launch follow in the stage's cost (resources.py).
        lines.append(f"parallelism TP {p.tp} x PP {p.pp} x CP {p.cp}, sequence parallel {p.sequence_parallel}, "
                     f"activation recompute {bool(s.get('activation_checkpointing'))}, on {cfg.cluster.nodes} "
                     f"node(s) x {cfg.cluster.gpus_per_node} GPUs ({cfg.cluster.launcher})")
        packed = ctx.input_dir("pack") / f"packed_{s.pack_size}_seed0.npy"
        for command in plan_sft(cfg, stage_dir=ctx.dir, packed_data_path=packed,
                                hf_model_dir=local_model_dir(cfg, "base", download=False)):
            lines.append("$ " + " ".join(command))
    return lines


def _backend(cfg) -> str:
    if cfg.sft.backend not in BACKENDS:
        raise UserError(f"sft.backend: unknown backend '{cfg.sft.backend}'; use one of {', '.join(BACKENDS)}.")
    return cfg.sft.backend


def _packed_input(ctx):
    summary = read_json(ctx.input_dir("pack") / "pack_summary.json")
    return ctx.input_dir("pack") / summary["path"], summary
