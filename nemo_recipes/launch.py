"""Megatron parallelism plan, the checks run before any GPU job starts, and the commands that start one.

Commands are argument lists for `subprocess`, never shell strings. Every command runs inside the NeMo container:
  torchrun  -- one node (`docker run ... make reproduce-main`): one process per GPU, started here
  Slurm     -- a job of ours (nemo_recipes.launching) whose srun started one task per GPU in the container: each
               task runs the training script itself (PyTorch Lightning reads its rank from Slurm)
  docker    -- `docker_run_command` prints how to get from a bare machine into it
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from nemo_recipes.errors import UserError

# What NeMo-Skills exports before NeMo-Aligner training (nemo_skills/pipeline/train.py, utils/exp.py).
# CUDA_DEVICE_MAX_CONNECTIONS=1 lets Megatron overlap TP/SP communication with compute in launch order.
# HF_HUB_OFFLINE: every model and tokenizer path is a mounted directory; compute nodes often have no internet.
SFT_ENVIRONMENT = {
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",
    "HYDRA_FULL_ERROR": "1",
    "PYTHONUNBUFFERED": "1",
    "HF_HUB_OFFLINE": "1",
}

TMPDIR = "TMPDIR"  # set per stage by sft_environment, for every NeMo process

# convert_qwen2_hf_to_nemo.py (NeMo v2.2.0) holds the fp32 HF model (4 bytes per parameter), builds the fused QKV
# and fc1 tensors with torch.cat while it is alive (~2.5 more for Qwen2.5's shapes), then the bf16 Megatron model:
# ~6.5 bytes per parameter at its peak, ~230 GB of host RAM for Qwen2.5-32B (research/nemo_aligner.md 4.1).
HF_TO_NEMO_BYTES_PER_PARAM = 7
# convert_qwen2_nemo_to_hf.py restores the whole trained model on one device (TP = PP = 1) in bf16: 2 bytes per
# parameter before its state-dict copies.
NEMO_TO_HF_BYTES_PER_PARAM = 2
# Megatron's model state per parameter with bf16 weights, fp32 gradients and the distributed optimizer (fp32 master
# weights and two Adam moments, 12 bytes, sharded over the data- and context-parallel ranks): 6 + 12 / (DP x CP),
# before activations (Megatron-LM's distributed-optimizer documentation).
MODEL_STATE_BYTES_PER_PARAM = 6
OPTIMIZER_BYTES_PER_PARAM = 12
# Activations kept per layer, token and hidden unit, in bytes (Korthikanti et al. 2022, "Reducing Activation
# Recomputation in Large Transformer Models", with flash attention): 34 / TP with sequence parallelism, 10 + 24 / TP
# without; a full recompute keeps only each layer's input, 2 (/ TP with sequence parallelism).
ACTIVATION_BYTES_SEQUENCE_PARALLEL = 34
RECOMPUTED_ACTIVATION_BYTES = 2
# The share of a GPU's memory the plan lets the estimate fill: CUDA context, NCCL and allocator slack take the rest.
GPU_MEMORY_HEADROOM = 0.9

DOCKER_GPU_FLAGS = ["--gpus", "all", "--ipc=host", "--ulimit", "memlock=-1", "--ulimit", "stack=67108864"]


@dataclass(frozen=True)
class ParallelPlan:
    nodes: int
    gpus_per_node: int
    tp: int
    pp: int
    cp: int
    sequence_parallel: bool

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def model_parallel_size(self) -> int:
        """GPUs holding one replica of the model."""
        return self.tp * self.pp * self.cp

    @property
    def data_parallel_size(self) -> int:
        return self.world_size // self.model_parallel_size

    def model_state_gb_per_gpu(self, num_params_b: float) -> float:
        """Weights, gradients and the GPU's shard of the optimizer, in GB (activations come on top)."""
        per_param = MODEL_STATE_BYTES_PER_PARAM + OPTIMIZER_BYTES_PER_PARAM / (self.data_parallel_size * self.cp)
        return num_params_b * per_param / (self.tp * self.pp)

    def activation_gb_per_gpu(self, *, num_layers: int, hidden_size: int, tokens: int, recompute: bool) -> float:
        """Activations of one packed micro batch of `tokens` (split over CP), every layer's: with 1F1B the first
        pipeline stage holds PP micro batches of layers / PP layers each."""
        if recompute:
            per_unit = RECOMPUTED_ACTIVATION_BYTES / (self.tp if self.sequence_parallel else 1)
        else:
            per_unit = ACTIVATION_BYTES_SEQUENCE_PARALLEL / self.tp if self.sequence_parallel else 10 + 24 / self.tp
        return num_layers * tokens / self.cp * hidden_size * per_unit / 1e9

    @property
    def pad_multiple(self) -> int:
        """The multiple NeMo-Aligner pads each packed batch to (builders.build_sft_dataset)."""
        return (8 * self.tp if self.sequence_parallel else 16) * self.cp


def parallel_plan(cfg) -> ParallelPlan:
    parallel = cfg.student.parallel
    return ParallelPlan(
        nodes=int(cfg.cluster.nodes),
        gpus_per_node=int(cfg.cluster.gpus_per_node),
        tp=int(parallel.tp),
        pp=int(parallel.pp),
        cp=int(parallel.cp),
        sequence_parallel=bool(parallel.sequence_parallel),
    )


def validate_sft_launch(
    cfg,
    *,
    longest_sequence: int,
    packed_context_parallel_size: int,
    paths: Mapping[str, Path],
    check_memory: bool = True,
    num_packs: int | None = None,
    meminfo_path: str | os.PathLike = "/proc/meminfo",
) -> None:
    """Raise UserError, in one sentence, for the first setting that would make the NeMo-Aligner run fail or lie.

    `paths` maps what a file is ("packed training data") to where it must be. `num_packs` (packs in the training
    file) is needed only when sft.upsample is false, to see whether max_epochs caps max_steps. `check_memory` tests
    this host's RAM for the HF->NeMo conversion; pass False when the conversion runs elsewhere or is done.
    """
    for what, path in paths.items():
        if not Path(path).exists():
            raise UserError(f"{what} not found at {path}.")
    for check in _settings_checks(cfg, num_packs):
        check()
    _check_packing(parallel_plan(cfg), cfg.sft, longest_sequence, packed_context_parallel_size)
    _check_logger(cfg.sft)
    if check_memory:
        _check_host_memory(cfg.student, Path(meminfo_path))


def sft_memory_gb(cfg) -> tuple[float, float]:
    """(weights + gradients + optimizer shard, activations) per GPU in GB, for the planned layout and pack size."""
    plan, student, sft = parallel_plan(cfg), cfg.student, cfg.sft
    state = plan.model_state_gb_per_gpu(float(student.num_params_b))
    activations = plan.activation_gb_per_gpu(num_layers=int(student.num_layers), hidden_size=int(student.hidden_size),
                                             tokens=int(sft.pack_size),
                                             recompute=bool(sft.get("activation_checkpointing", False)))
    return state, activations


def gpu_memory_problem(need_gb: float, basis: str, gpu_memory_gb: float) -> str | None:
    """One sentence when an SFT estimate of `need_gb` per GPU (`basis`: what it is made of) does not fit."""
    if need_gb <= GPU_MEMORY_HEADROOM * gpu_memory_gb:
        return None
    return (f"SFT needs ~{need_gb:.0f} GB per GPU ({basis}), more than {GPU_MEMORY_HEADROOM:.0%} of the GPUs' "
            f"{gpu_memory_gb:.0f} GB: spread it over more GPUs (e.g. cluster=slurm cluster.nodes=4 "
            f"student.parallel.cp=4) or recompute activations (sft.activation_checkpointing=true).")


def sft_settings_problems(cfg) -> list[str]:
    """What validate_sft_launch would refuse that no file or machine decides -- parallelism, batches, pack size,
    schedule, precision, cluster -- one sentence each. The plan checks these before the first stage runs, so a
    run does not sample for hours before its SFT refuses."""
    problems = []
    for check in _settings_checks(cfg, num_packs=None):
        try:
            check()
        except UserError as error:
            problems.append(str(error))
    return problems


def _settings_checks(cfg, num_packs: int | None) -> list:
    from nemo_recipes.training.lr_schedule import check_schedule
    from nemo_recipes.training.checkpoints import check_final_weights
    from nemo_recipes.training.nemo_yaml import check_precision
    from nemo_recipes.training.packed_data import check_pack_attention

    plan, sft = parallel_plan(cfg), cfg.sft
    return [
        lambda: _check_parallelism(plan, cfg.student),
        lambda: _check_batches(plan, sft),
        lambda: _check_pack_size(plan, sft),
        lambda: _check_schedule(sft, num_packs),
        lambda: check_schedule(lr=float(sft.lr), min_lr=float(sft.min_lr), warmup_steps=int(sft.warmup_steps),
                               constant_steps=int(sft.constant_steps), max_steps=int(sft.max_steps)),
        lambda: check_precision(sft.precision),
        lambda: check_pack_attention(sft.pack_attention),
        lambda: check_final_weights(sft.final_weights),
        lambda: _check_conversion_device(cfg),
        lambda: _check_cluster(cfg.cluster),
    ]


def _check_parallelism(plan: ParallelPlan, student) -> None:
    if plan.world_size < 1:
        raise UserError(
            f"cluster.nodes x cluster.gpus_per_node is {plan.nodes} x {plan.gpus_per_node}: NeMo-Aligner SFT needs "
            "GPUs (use sft=toy for the CPU reference trainer)."
        )
    if plan.world_size % plan.model_parallel_size:
        raise UserError(
            f"student.parallel needs TP x PP x CP = {plan.tp} x {plan.pp} x {plan.cp} = {plan.model_parallel_size} "
            f"GPUs per model replica, which does not divide the {plan.world_size} GPUs of cluster.nodes x "
            f"cluster.gpus_per_node = {plan.nodes} x {plan.gpus_per_node}; lower student.parallel.cp or add "
            f"nodes."
        )
    layers = int(student.num_layers)
    if layers % plan.pp:
        raise UserError(f"student.parallel.pp {plan.pp} does not divide the {layers} layers of {student.name} "
                        f"(student.num_layers).")
    if max(16, 2 * plan.cp) % (2 * plan.cp):
        # Packing pads each sample to a multiple of max(16, 2 x CP); Transformer Engine cuts every sequence into
        # 2 x CP equal chunks, so that multiple must divide by 2 x CP.
        raise UserError(f"student.parallel.cp {plan.cp} cannot split NeMo's packed sequences (padded to multiples "
                        f"of {max(16, 2 * plan.cp)}) into 2 x CP equal chunks; use a CP of 1, 2, 4, 8 or more.")
    kv_heads = int(student.num_kv_heads)
    if kv_heads % plan.tp:
        raise UserError(
            f"student.parallel.tp {plan.tp} does not divide the {kv_heads} KV heads of {student.name} "
            "(student.num_kv_heads)."
        )
    if plan.sequence_parallel and plan.tp == 1:
        raise UserError("student.parallel.sequence_parallel needs tensor parallelism, but student.parallel.tp is 1.")


def _check_batches(plan: ParallelPlan, sft) -> None:
    gbs, mbs = int(sft.global_batch_size), int(sft.micro_batch_size)
    if mbs != 1:
        raise UserError(f"sft.micro_batch_size is {mbs}, but NeMo's packed-sequence dataset needs 1.")
    if plan.data_parallel_size and gbs % (mbs * plan.data_parallel_size):  # 0: _check_parallelism says why
        raise UserError(
            f"sft.global_batch_size {gbs} is not divisible by micro batch x data-parallel size = "
            f"{mbs} x {plan.data_parallel_size}."
        )


def _check_packing(plan: ParallelPlan, sft, longest_sequence: int, packed_cp: int) -> None:
    pack_size = int(sft.pack_size)
    # A sample of n tokens fills n - 1 positions of a pack: its inputs drop the last token, its labels the first.
    if longest_sequence - 1 > pack_size:
        raise UserError(
            f"sft.pack_size {pack_size} is smaller than the longest SFT example ({longest_sequence} tokens, "
            f"{longest_sequence - 1} positions); raise sft.pack_size or drop that example."
        )
    if int(packed_cp) != plan.cp:
        raise UserError(
            f"the packed data was made for context parallel size {packed_cp} but student.parallel.cp is {plan.cp}; "
            f"pack it again with context_parallel_size={plan.cp}."
        )


def _check_pack_size(plan: ParallelPlan, sft) -> None:
    pack_size = int(sft.pack_size)
    if pack_size % plan.pad_multiple:
        raise UserError(
            f"sft.pack_size {pack_size} is not a multiple of {plan.pad_multiple}, the length NeMo pads packs to "
            f"with TP {plan.tp}{' and sequence parallel' if plan.sequence_parallel else ''} and CP {plan.cp}."
        )


def _check_schedule(sft, num_packs: int | None) -> None:
    max_steps, max_epochs = int(sft.max_steps), int(sft.max_epochs)
    save, val = int(sft.save_interval), int(sft.val_check_interval)
    if max_steps <= 0:
        raise UserError(f"sft.max_steps is {max_steps}; training is driven by steps, so give a positive number.")
    if save <= 0 or val <= 0:
        raise UserError(
            f"sft.save_interval ({save}) and sft.val_check_interval ({val}) must both be positive, or the final "
            "model is never saved."
        )
    if save % val:
        raise UserError(
            f"sft.save_interval {save} is not a multiple of sft.val_check_interval {val} (NeMo-Aligner asserts it)."
        )
    # SupervisedTrainer trains min(max_steps, max_epochs x steps_per_epoch); steps_per_epoch = samples // GBS,
    # and with model.data.sample=True the dataset holds exactly max_steps x GBS packs.
    if sft.upsample:
        steps_per_epoch = max_steps
    elif num_packs is None:  # not packed yet: the epoch cap is checked when the packs exist
        return
    else:
        steps_per_epoch = int(num_packs) // int(sft.global_batch_size)
        if steps_per_epoch == 0:
            raise UserError(
                f"the {num_packs} packs make no full global batch of {sft.global_batch_size}, so NeMo-Aligner would "
                "train 0 steps; set sft.upsample=true or lower sft.global_batch_size."
            )
    if max_epochs * steps_per_epoch < max_steps:
        raise UserError(
            f"sft.max_steps {max_steps} would be cut to {max_epochs * steps_per_epoch} by sft.max_epochs {max_epochs} "
            f"x {steps_per_epoch} steps per epoch; raise sft.max_epochs."
        )


def _check_conversion_device(cfg) -> None:
    """NeMo -> HF runs after training on one device with the whole model (final_weights.py gives it a one-device
    config, so no TP / PP / CP of training can make it fail); on a GPU its bf16 weights alone must fit."""
    gpu_memory_gb = cfg.cluster.get("gpu_memory_gb")
    if cfg.sft.get("nemo_to_hf_cpu_only", True) or not gpu_memory_gb:
        return
    weights_gb = float(cfg.student.num_params_b) * NEMO_TO_HF_BYTES_PER_PARAM
    if weights_gb > GPU_MEMORY_HEADROOM * float(gpu_memory_gb):
        raise UserError(
            f"sft.nemo_to_hf_cpu_only=false converts the trained {cfg.student.name} on one GPU, whose "
            f"{float(gpu_memory_gb):.0f} GB (cluster.gpu_memory_gb) cannot hold its ~{weights_gb:.0f} GB of bf16 "
            "weights; set sft.nemo_to_hf_cpu_only=true."
        )


def _check_cluster(cluster) -> None:
    if cluster.launcher == "local":
        if int(cluster.nodes) != 1:
            raise UserError(f"cluster.launcher local runs on one node, but cluster.nodes is {cluster.nodes}.")
        return
    if cluster.launcher != "slurm":
        raise UserError(f"cluster.launcher is '{cluster.launcher}'; use local or slurm.")
    if _optional(cluster, "partition") is None:
        raise UserError("cluster.partition must be set when cluster.launcher is slurm.")


def _check_logger(sft) -> None:
    if sft.get("logger") == "wandb" and "WANDB_API_KEY" not in os.environ:
        raise UserError("sft.logger is wandb but WANDB_API_KEY is not set; export it or use sft.logger=tensorboard.")


def _check_host_memory(student, meminfo: Path) -> None:
    needed = conversion_memory_bytes(float(student.num_params_b))
    available = _available_memory_bytes(meminfo)
    if available < needed:
        raise UserError(
            f"converting {student.name} from HF to NeMo loads it in fp32 and needs at least {needed / 1e9:.0f} GB of "
            f"host RAM, but {meminfo} shows {available / 1e9:.0f} GB available."
        )


def conversion_memory_bytes(num_params_b: float) -> int:
    return int(num_params_b * 1e9 * HF_TO_NEMO_BYTES_PER_PARAM)


def _available_memory_bytes(meminfo: Path) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024  # the kernel reports kB
    raise UserError(f"{meminfo} has no MemAvailable line, so host RAM cannot be checked.")


def training_deadline(cluster) -> float | None:
    """When training must stop and save inside a Slurm job (a time.time()): the job's start, which its script
    exports as NEMO_RECIPES_JOB_START, plus cluster.time_limit less cluster.stop_before_time_limit. None outside a job
    or without a time limit. NeMo-Skills gives NeMo the same margin: max_time_per_run = time limit - 15 minutes."""
    import time

    if not cluster.get("inside_job") or not cluster.get("time_limit"):
        return None
    started = float(os.environ.get("NEMO_RECIPES_JOB_START") or time.time())
    return started + training_seconds_per_job(cluster)


def training_seconds_per_job(cluster) -> int:
    """How long a job with cluster.time_limit trains: the limit less cluster.stop_before_time_limit."""
    return slurm_time_seconds(cluster.time_limit) - stop_margin_seconds(cluster)


def stop_margin_seconds(cluster) -> int:
    """How long before a job's time limit training stops to save (cluster.stop_before_time_limit, [D-]HH:MM:SS)."""
    written = cluster.get("stop_before_time_limit") or "00:15:00"
    margin = slurm_time_seconds(written, "cluster.stop_before_time_limit")
    if cluster.get("time_limit") and margin >= slurm_time_seconds(cluster.time_limit):
        raise UserError(f"cluster.time_limit '{cluster.time_limit}' leaves no time to train before "
                        f"cluster.stop_before_time_limit '{written}'.")
    return margin


def slurm_time_seconds(limit, key: str = "cluster.time_limit") -> int:
    """Seconds in a Slurm time written [D-]HH:MM:SS (`key` names the setting in the error)."""
    days, _, clock = str(limit).rpartition("-")
    parts = clock.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or (days and not days.isdigit()):
        raise UserError(f"{key} '{limit}' is not in Slurm's [D-]HH:MM:SS form.")
    hours, minutes, seconds = (int(p) for p in parts)
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def _optional(node, key: str):
    """node[key], or None when it is absent, null or Hydra's mandatory '???' left unset."""
    from omegaconf import OmegaConf

    if key not in node or OmegaConf.is_missing(node, key):
        return None
    return node[key]


def sft_environment(cfg, tmp_dir: os.PathLike | str | None = None) -> dict[str, str]:
    """Variables the training and conversion processes need on top of the caller's environment.

    `tmp_dir` becomes TMPDIR: NeMo writes every .nemo by moving the whole distributed checkpoint into a
    tempfile.TemporaryDirectory before taring it (nlp_overrides.py, NeMo 2.2.0) -- ~65 GB for 32B, at HF -> NeMo and
    at the end of training -- which the container's /tmp may not hold. Give a folder on the run's file system.
    """
    env = dict(SFT_ENVIRONMENT)
    if tmp_dir is not None:
        env[TMPDIR] = str(Path(tmp_dir).absolute())
    if cfg.sft.get("logger") == "wandb" and "WANDB_API_KEY" in os.environ:
        env["WANDB_API_KEY"] = os.environ["WANDB_API_KEY"]
    return env


def same_path_mounts(folders: Iterable[os.PathLike | str], extra: Sequence[str] = ()) -> list[str]:
    """`src:src` container mounts for `folders` (outermost ones only), then the user's `extra` mounts.

    Paths keep their host spelling inside the container because the HF tokenizer path is baked into the .nemo
    (research/nemo_aligner.md 4.1, 7.7): conversion, packing and training must all see the same path.
    """
    folders = sorted({Path(f).absolute() for f in folders})
    outermost = [f for f in folders if not any(f != o and f.is_relative_to(o) for o in folders)]
    return [f"{f}:{f}" for f in outermost] + [str(m) for m in extra]


def distributed_command(cfg, program: Sequence[str]) -> list[str]:
    """Run `program` (a python script and its arguments) on every GPU: torchrun here, or -- inside a Slurm job, whose
    srun started one task per GPU, each a rank that PyTorch Lightning reads from Slurm's variables -- in this task."""
    python = str(cfg.cluster.get("nemo_python", "python"))
    if cfg.cluster.launcher == "local":
        return torchrun_command(python, program, gpus_per_node=parallel_plan(cfg).gpus_per_node)
    return [python, "-u", *program]


def single_process_command(cfg, program: Sequence[str]) -> list[str]:
    """Run `program` once, in this process's container (a conversion, by the first task of a Slurm job)."""
    return [str(cfg.cluster.get("nemo_python", "python")), *program]


def torchrun_command(python: str, program: Sequence[str], *, gpus_per_node: int) -> list[str]:
    # --standalone: a private rendezvous on a free port, so two jobs on one node never share 29500.
    return [python, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={gpus_per_node}",
            *program]


def model_folder_to_mount(model_dir: Path) -> Path:
    """A Hugging Face cache snapshot (<repo>/snapshots/<commit>) holds links to ../../blobs: mount the whole repo
    folder, or the links dangle inside the container."""
    model_dir = Path(model_dir)
    return model_dir.parents[1] if model_dir.parent.name == "snapshots" else model_dir


def docker_run_command(
    image: str,
    command: Sequence[str],
    *,
    mounts: Sequence[str] = (),
    workdir: os.PathLike | str | None = None,
    env: Mapping[str, str] | None = None,
    interactive: bool = False,
) -> list[str]:
    """`docker run` with the flags NVIDIA documents for NeMo containers (GPUs, host IPC, unlimited locked memory)."""
    args = ["docker", "run", "--rm"] + (["-it"] if interactive else []) + DOCKER_GPU_FLAGS
    for mount in mounts:
        args += ["-v", mount]
    for name, value in (env or {}).items():
        args += ["-e", f"{name}={value}"]
    if workdir is not None:
        args += ["-w", str(workdir)]
    return args + [image, *command]
