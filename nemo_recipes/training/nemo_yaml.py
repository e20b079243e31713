"""The complete gpt_sft YAML that NeMo-Aligner's train_gpt_sft.py reads, written by us from the Hydra `sft` config.

The NeMo-Aligner wheel ships neither train_gpt_sft.py nor gpt_sft.yaml (research/packaging.md 2a), so nothing here
patches their file: every section the script reads (trainer, exp_manager, model) is built below, key for key
against NeMo-Aligner v0.7.0's examples/nlp/gpt/conf/gpt_sft.yaml, and passed with --config-path/--config-name.

    from nemo_recipes.training.nemo_yaml import write_gpt_sft_config
    write_gpt_sft_config(cfg, nemo_model_path=..., packed_data_path=..., output_dir=stage_dir / "training")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nemo_recipes.errors import Interrupted, UserError
from nemo_recipes.training.checkpoints import check_final_weights
from nemo_recipes.training.packed_data import check_pack_attention

# The SFT data contract (DESIGN.md 1, research/nemo_aligner.md 3.3): `input` is the rendered ChatML prompt,
# `output` ends with a textual <|im_end|>. add_eos stays False because packing masks every eos_id token
# (<|endoftext|> for Qwen2.5 base), so an appended EOS would never be trained. The packer must use the same flags.
PROMPT_TEMPLATE = "{input}{output}"
LABEL_KEY = "output"
ADD_EOS = False

EXPERIMENT_NAME = "megatron_gpt_sft"  # exp_manager.name: prefix of checkpoints and of the final .nemo
CONFIG_NAME = "gpt_sft"

# trainer.precision values that train with megatron_amp_O2 (set below): NeMo's Float16Module refuses fp32 and
# MegatronBaseModel warns that fp16 with O2 is not supported for training (NeMo v2.2.0).
NEMO_PRECISIONS = ("bf16", "bf16-mixed")

LOGGERS = ("none", "tensorboard", "wandb")


def build_gpt_sft_config(cfg, *, nemo_model_path, packed_data_path, output_dir) -> dict:
    """The whole gpt_sft config as plain Python: trainer, exp_manager and model sections.

    `output_dir` becomes exp_manager.explicit_log_dir: checkpoints land in `<output_dir>/checkpoints/` and the
    final weights in `<output_dir>/checkpoints/megatron_gpt_sft.nemo` (see final_nemo_path).
    """
    sft, student, cluster = cfg.sft, cfg.student, cfg.cluster
    precision = check_precision(sft.precision)
    check_final_weights(sft.final_weights)
    check_pack_attention(sft.pack_attention)
    return {
        "name": EXPERIMENT_NAME,
        "trainer": _trainer_section(sft, cluster, precision),
        "exp_manager": _exp_manager_section(sft, cluster, output_dir),
        "model": _model_section(sft, student, nemo_model_path, packed_data_path),
    }


def check_precision(precision) -> str:
    precision = str(precision)
    if precision not in NEMO_PRECISIONS:
        raise UserError(f"sft.precision is '{precision}', but NeMo-Aligner SFT with megatron_amp_O2 trains in "
                        f"{' or '.join(NEMO_PRECISIONS)}.")
    return precision


def write_gpt_sft_config(cfg, *, nemo_model_path, packed_data_path, output_dir, config_dir=None) -> Path:
    """Write `<config_dir>/gpt_sft.yaml` (default: the parent of `output_dir`) and return its path."""
    import yaml

    from nemo_recipes.io import atomic_write_text

    config = build_gpt_sft_config(
        cfg, nemo_model_path=nemo_model_path, packed_data_path=packed_data_path, output_dir=output_dir
    )
    config_dir = Path(config_dir) if config_dir is not None else Path(output_dir).parent
    path = config_dir / f"{CONFIG_NAME}.yaml"
    header = "# Written by nemo_recipes.training.nemo_yaml for NeMo-Aligner v0.7.0 train_gpt_sft.py; do not edit.\n"
    atomic_write_text(path, header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=120))
    return path


def checkpoints_kept(sft) -> int:
    """save_top_k: NeMo-Aligner's 5 best by val_loss, or every save when final_weights averages them all (NeMo-Skills
    keeps 50)."""
    saves = -(-int(sft.max_steps) // int(sft.save_interval))
    return max(5, saves) if sft.final_weights == "average" else 5


def final_nemo_path(output_dir) -> Path:
    """Where NeMoModelCheckpoint writes the trained model at the last step (save_nemo_on_train_end)."""
    return Path(output_dir) / "checkpoints" / f"{EXPERIMENT_NAME}.nemo"


def _trainer_section(sft, cluster, precision: str) -> dict:
    return {
        "num_nodes": int(cluster.nodes),
        "devices": int(cluster.gpus_per_node),
        "accelerator": "gpu",
        "precision": precision,
        # Megatron-core's optimizer reads the top-level value; NeMo-Aligner's loop reads trainer.sft's.
        "gradient_clip_val": "${trainer.sft.gradient_clip_val}",
        "sft": {
            # max_epochs is high on purpose: SupervisedTrainer uses min(max_steps, max_epochs x steps/epoch).
            "max_epochs": int(sft.max_epochs),
            "max_steps": int(sft.max_steps),
            "val_check_interval": int(sft.val_check_interval),
            "save_interval": int(sft.save_interval),
            "limit_train_batches": 1.0,
            # One validation batch (an int, not a fraction): with model.data.sample=True the validation set is
            # up-sampled to limit_val_batches x GBS packs, and val_loss must exist for the checkpoint monitor.
            "limit_val_batches": 1,
            "gradient_clip_val": sft.gradient_clip_val,
        },
        # NeMo-Aligner: "do not change these" -- its own loop logs, checkpoints and samples.
        "logger": False,
        "enable_checkpointing": False,
        "use_distributed_sampler": False,
        "max_time": None,
        "max_epochs": "${.sft.max_epochs}",
        "max_steps": "${.sft.max_steps}",  # NeMo's LR scheduler takes its horizon from trainer.max_steps
    }


def _exp_manager_section(sft, cluster, output_dir) -> dict:
    logger = str(sft.get("logger", "tensorboard"))
    if logger not in LOGGERS:
        raise UserError(f"sft.logger is '{logger}'; use one of {', '.join(LOGGERS)}.")
    output_dir = str(Path(output_dir).absolute())
    section = {
        "explicit_log_dir": output_dir,
        "exp_dir": None,
        "name": "${name}",
        "create_tensorboard_logger": logger == "tensorboard",
        "create_wandb_logger": logger == "wandb",
        "wandb_logger_kwargs": {"project": sft.get("wandb_project"), "name": sft.get("wandb_name")},
        # A crashed or timed-out run restarts from <output_dir>/checkpoints/*-last with its step and samples.
        "resume_if_exists": True,
        "resume_ignore_no_checkpoint": True,
        "create_checkpoint_callback": True,
        "checkpoint_callback_params": {
            "monitor": "val_loss",
            "save_top_k": checkpoints_kept(sft),
            "mode": "min",
            # The .nemo written at the last step marks a finished training (the converter reads final_nemo/).
            "save_nemo_on_train_end": True,
            "filename": f"{EXPERIMENT_NAME}--{{val_loss:.3f}}-{{step}}-{{consumed_samples}}-{{epoch}}",
            "model_parallel_size": "${model.tensor_model_parallel_size}",
            # NeMo-Aligner: True would create several -last checkpoints because restore resets the best model.
            "save_best_model": False,
        },
    }
    max_time = _max_time_per_run(cluster)
    if max_time is not None:
        section["max_time_per_run"] = max_time
    return section


def _model_section(sft, student, nemo_model_path, packed_data_path) -> dict:
    parallel = student.parallel
    pack_size = int(sft.pack_size)
    packed = str(Path(packed_data_path).absolute())
    checkpoint_activations = bool(sft.get("activation_checkpointing", False))
    return {
        "seed": int(sft.seed),
        "tensor_model_parallel_size": int(parallel.tp),
        "pipeline_model_parallel_size": int(parallel.pp),
        # The packed .npy was pre-padded for this CP size; launch.validate_sft_launch checks they agree.
        "context_parallel_size": int(parallel.cp),
        "restore_from_path": str(Path(nemo_model_path).absolute()),
        "resume_from_checkpoint": None,
        # NeMo-Skills' format (sft_config.yaml): the checkpoint averaging reads each weight as its own zarr array.
        # Megatron-core 0.11 still writes it, with a deprecation warning; NeMo's default is torch_dist.
        "dist_ckpt_format": "zarr" if sft.final_weights == "average" else "torch_dist",
        "save_nemo_on_validation_end": False,  # read by NeMo's own SFT model only; Aligner saves via exp_manager
        "sync_batch_comm": False,
        # GUESS: NeMo-Skills sft_config.yaml and NeMo-Aligner's functional test use O2 (bf16 params, fp32 master
        # weights in the distributed optimizer); the Qwen2 converter writes the checkpoint with it too.
        "megatron_amp_O2": True,
        # The yaml wins over the checkpoint's value (load_and_override_model_config), so say the pack length.
        "encoder_seq_length": pack_size,
        "sequence_parallel": bool(parallel.sequence_parallel),
        "activations_checkpoint_granularity": "full" if checkpoint_activations else None,
        "activations_checkpoint_method": "uniform" if checkpoint_activations else None,
        "activations_checkpoint_num_layers": 1 if checkpoint_activations else None,
        "activations_checkpoint_layers_per_pipeline": None,
        "answer_only_loss": True,  # train_gpt_sft.py hard-codes answer-only loss; this key only documents it
        "gradient_as_bucket_view": False,
        "seq_len_interpolation_factor": None,
        "use_flash_attention": None,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "ffn_dropout": 0.0,
        "global_batch_size": "${.data.train_ds.global_batch_size}",
        "micro_batch_size": "${.data.train_ds.micro_batch_size}",
        "steerlm2": {"forward_micro_batch_size": 1, "micro_batch_size": 1},
        "peft": {
            "peft_scheme": "none",
            "restore_from_path": None,
            "lora_tuning": {
                "target_modules": ["attention_qkv"],
                "adapter_dim": 32,
                "adapter_dropout": 0.0,
                "column_init_method": "xavier",
                "row_init_method": "zero",
                "layer_selection": None,
                "weight_tying": False,
                "position_embedding_strategy": None,
            },
        },
        "data": {
            "chat": False,  # the chat dataset cannot be packed (NeMo-Aligner builders.build_sft_dataset asserts)
            # Unused by the prompt/response dataset, but the script passes them through, so they must exist.
            "chat_prompt_tokens": {
                "system_turn_start": "\x00",
                "turn_start": "\x11",
                "label_start": "\x12",
                "end_of_turn": "\n",
                "end_of_name": "\n",
            },
            # True: the dataset is up-sampled to max_steps x GBS packs, so 20 examples fill any batch size.
            "sample": bool(sft.upsample),
            "num_workers": 0,
            "train_ds": _packed_dataset(sft, packed, pack_size),
            # Validation reads the same packed file: its loss is a sanity number, not a held-out metric.
            "validation_ds": _validation_dataset(packed),
        },
        "optim": {
            "name": str(sft.optimizer),
            "lr": float(sft.lr),
            "weight_decay": float(sft.weight_decay),
            "betas": [float(b) for b in sft.betas],
            "sched": {
                "name": "CosineAnnealing",
                "warmup_steps": int(sft.warmup_steps),
                "constant_steps": int(sft.constant_steps),
                "min_lr": float(sft.min_lr),
            },
        },
    }


def _packed_dataset(sft, packed: str, pack_size: int) -> dict:
    return {
        "file_path": packed,
        "global_batch_size": int(sft.global_batch_size),  # counted in packs
        "micro_batch_size": int(sft.micro_batch_size),
        "shuffle": True,
        "memmap_workers": None,
        "max_seq_length": pack_size,  # the collate function asserts every pack fits in it
        "min_seq_length": 1,
        "drop_last": True,  # NeMo-Aligner: False is not supported
        "label_key": LABEL_KEY,
        "add_eos": ADD_EOS,
        "add_sep": False,
        "add_bos": False,
        "truncation_field": "input",
        "index_mapping_dir": None,
        "prompt_template": PROMPT_TEMPLATE,
        "hf_dataset": False,
        "truncation_method": "right",
        "seed": int(sft.seed),  # seeds the epoch shuffles of the up-sampled pack order
        "packed_sequence": True,
        # cu_seqlens switch attention to TE's THD kernel, each example attending only to itself (per_example);
        # without them the pack is one causal sequence (whole_pack), as NeMo-Skills' older Aligner trained it.
        "packed_sequence_return_cu_seqlen": sft.pack_attention == "per_example",
    }


def _validation_dataset(packed: str) -> dict:
    train = "${model.data.train_ds"
    return {
        "file_path": packed,
        "global_batch_size": f"{train}.global_batch_size}}",
        "micro_batch_size": f"{train}.micro_batch_size}}",
        "shuffle": False,
        "memmap_workers": f"{train}.memmap_workers}}",
        "max_seq_length": f"{train}.max_seq_length}}",
        "min_seq_length": 1,
        "drop_last": True,
        "label_key": f"{train}.label_key}}",
        "add_eos": f"{train}.add_eos}}",
        "add_sep": f"{train}.add_sep}}",
        "add_bos": f"{train}.add_bos}}",
        "truncation_field": f"{train}.truncation_field}}",
        "index_mapping_dir": None,
        "prompt_template": f"{train}.prompt_template}}",
        "hf_dataset": False,
        "truncation_method": "right",
        "output_original_text": True,
        "seed": f"{train}.seed}}",
        "packed_sequence": f"{train}.packed_sequence}}",
        "packed_sequence_return_cu_seqlen": f"{train}.packed_sequence_return_cu_seqlen}}",
    }


def _max_time_per_run(cluster) -> str | None:
    """Stop and checkpoint before a Slurm job's time limit, in NeMo's DD:HH:MM:SS: what is left until the job's
    deadline when the config is written (just before training starts), less cluster.stop_before_time_limit --
    15 minutes, as NeMo-Skills sets it. None for a local run."""
    import time

    from nemo_recipes.launch import training_deadline, training_seconds_per_job

    if cluster.get("launcher") != "slurm" or not cluster.get("time_limit"):
        return None
    deadline = training_deadline(cluster)
    seconds = int(deadline - time.time()) if deadline is not None else training_seconds_per_job(cluster)
    if seconds <= 0:
        raise Interrupted("no time is left in this job to train before its time limit; the next job trains.")
    days, rest = divmod(seconds, 86400)
    return f"{days:02d}:{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def packed_sequence_flags() -> dict[str, Any]:
    """The template flags the packer must share with training (pass them to packing.pack_sft_file)."""
    return {"prompt_template": PROMPT_TEMPLATE, "add_eos": ADD_EOS}

