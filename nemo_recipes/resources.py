"""What a plan needs -- GPUs, GPU-hours, disk, models on local disk -- and whether this machine has it.

Every figure is an estimate from stated inputs, printed next to it: model sizes (conf/model `num_params_b`), token
counts (samples x `expected_tokens`; SFT steps x global batch x pack size) and throughput assumptions
(`throughput_tokens_per_s` of one vLLM replica; `cluster.gpu_bf16_tflops` x `cluster.assumed_mfu` for training).
No torch, no hub client: this runs in the dry run, which must stay instant.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from pathlib import Path

GB = 1e9
# A generation record: ~4 bytes per token of text plus the repeated problem, sampling and bookkeeping fields.
JSONL_BYTES_PER_TOKEN = 4.5
JSONL_BYTES_PER_RECORD = 1500
# Megatron checkpoint with distributed Adam: bf16 weights (2) + fp32 master weights and two moments (12).
CHECKPOINT_BYTES_PER_PARAM = 14
BF16_BYTES_PER_PARAM = 2


@dataclasses.dataclass
class Estimate:
    gpus: int = 0                 # GPUs the stage holds at once on a node (0: CPU only)
    gpu_hours: float = 0.0
    disk_gb: float = 0.0          # what the stage leaves under the run folder
    peak_extra_gb: float = 0.0    # written while it runs and deleted before it ends (checkpoints, converter copies)
    models: tuple[str, ...] = ()  # roles whose weights must be on local disk before it starts
    basis: str = ""               # the assumption behind gpu_hours
    vllm: bool = False            # runs vLLM workers (cluster.vllm_python must exist)
    refusals: tuple[str, ...] = ()  # settings its launch would refuse, known before anything runs
    gpu_memory_gb: float = 0.0    # what each GPU must hold (SFT on GPUs), and what that is made of
    gpu_memory_basis: str = ""

    def line(self) -> str:
        parts = [f"~{self.gpu_hours:,.1f} GPU-hours on {self.gpus} GPU(s)" if self.gpus else "CPU only",
                 f"~{size_text(self.disk_gb)} disk" + (f" (+{size_text(self.peak_extra_gb)} while it runs)"
                                                      if self.peak_extra_gb else "")]
        return "cost: " + ", ".join(parts) + (f" ({self.basis})" if self.basis else "")

    def lines(self) -> list[str]:
        """What the plan prints under a stage that will run: its cost, each GPU's memory, what would refuse it."""
        memory = ([f"memory: ~{self.gpu_memory_gb:.0f} GB per GPU ({self.gpu_memory_basis}; Megatron's 6 + 12 / "
                   f"(DP x CP) bytes per parameter, activations as Korthikanti et al. 2022)"]
                  if self.gpu_memory_gb else [])
        return [self.line(), *memory, *(f"refuses: {refusal}" for refusal in self.refusals)]


def estimate(cfg, stage, num_problems: int | None) -> Estimate:
    """The cost of one stage of `cfg`'s experiment; `num_problems` is the size of the set it samples, if known."""
    kind = stage.module
    if kind == "sample":
        return _sampling(cfg, stage.param("role"), num_problems)
    if kind == "grade":
        from nemo_recipes.models import sampling_config

        role = str(stage.param("source")).removeprefix("sample_")
        return Estimate(disk_gb=_records_gb(sampling_config(cfg, role), num_problems))
    if kind == "sft":
        return _training(cfg)
    return Estimate(disk_gb=0.01)


def _sampling(cfg, role: str, num_problems: int | None) -> Estimate:
    from nemo_recipes.models import model_config, sampling_config

    sampling = sampling_config(cfg, role)
    model = model_config(cfg, role)
    tokens = (num_problems or 0) * sampling.n * sampling.expected_tokens
    disk = 2 * _records_gb(sampling, num_problems)  # chunk files plus the merged generations.jsonl
    models = () if role == "sft" else (role,)
    if model.source == "toy":
        return Estimate(disk_gb=disk, models=models, basis="toy model on CPU")
    tp = model.generation_tp if sampling.backend == "vllm" else 1
    gpus = max(tp, int(cfg.cluster.gpus_per_node)) if sampling.backend == "vllm" else 1
    hours = tokens / sampling.throughput_tokens_per_s / 3600 * tp
    basis = (f"{tokens / 1e6:,.1f}M tokens at {sampling.throughput_tokens_per_s} tokens/s per {tp}-GPU replica, "
             f"`throughput_tokens_per_s`, an assumption")
    return Estimate(gpus=gpus, gpu_hours=hours, disk_gb=disk, models=models, basis=basis,
                    vllm=sampling.backend == "vllm")


def _records_gb(sampling, num_problems: int | None) -> float:
    """One jsonl copy of the stage's generation records."""
    samples = (num_problems or 0) * sampling.n
    return samples * (sampling.expected_tokens * JSONL_BYTES_PER_TOKEN + JSONL_BYTES_PER_RECORD) / GB


def _training(cfg) -> Estimate:
    sft, student, cluster = cfg.sft, cfg.student, cfg.cluster
    params = float(student.num_params_b) * 1e9
    if student.source == "toy" or (sft.backend == "torch_reference" and int(cluster.gpus_per_node) == 0):
        return Estimate(disk_gb=params * 16 / GB + 0.01, models=("base",), basis="reference trainer on CPU")
    tokens = sft.max_steps * sft.global_batch_size * sft.pack_size
    flops = 6 * params * tokens  # forward + backward of a dense decoder's weights
    if sft.pack_attention == "whole_pack":
        # Each token also attends to ~pack_size / 2 earlier ones: QK^T and AV, 4 x hidden FLOPs per pair forward,
        # 3x with backward (per_example keeps each token to its own ~3K-token example: left out).
        flops += 12 * int(student.num_layers) * int(student.hidden_size) * sft.pack_size / 2 * tokens
    hours = flops / (cluster.gpu_bf16_tflops * 1e12 * cluster.assumed_mfu) / 3600
    from nemo_recipes.training.nemo_yaml import checkpoints_kept

    checkpoints = min(checkpoints_kept(sft), math.ceil(sft.max_steps / sft.save_interval)) + 1  # and the -last copy
    # the trained .nemo, the HF export, and the averaged weights (the last checkpoint's are hard links)
    kept = (3 if sft.final_weights == "average" else 2) * BF16_BYTES_PER_PARAM
    transient = BF16_BYTES_PER_PARAM  # the NeMo->HF converter's intermediate weights file
    # the base .nemo, packed and unpacked (restore_from_path), and the Megatron checkpoints
    training = 2 * BF16_BYTES_PER_PARAM + CHECKPOINT_BYTES_PER_PARAM * checkpoints
    if sft.get("keep_checkpoints", True):
        kept += training
    else:
        transient += training
    gpus, refusals, memory, memory_basis = 1, (), 0.0, ""
    if sft.backend == "nemo_aligner":
        from nemo_recipes.launch import sft_memory_gb, sft_settings_problems

        gpus = int(cluster.nodes) * int(cluster.gpus_per_node)
        refusals = tuple(f"{cfg.experiment_name} sft: {problem}" for problem in sft_settings_problems(cfg))
        if not refusals:  # a layout that does not divide the GPUs has no per-GPU figure
            state, activations = sft_memory_gb(cfg)
            memory = state + activations
            memory_basis = (f"{state:.0f} GB of weights, gradients and optimizer shard + {activations:.0f} GB of "
                            f"activations at {sft.pack_size} tokens per pack")
    attention = " + attention across each pack" if sft.pack_attention == "whole_pack" else ""
    basis = (f"6 x {student.num_params_b}B params x {tokens / 1e6:,.0f}M tokens{attention} ({sft.max_steps} steps x "
             f"{sft.global_batch_size} packs x {sft.pack_size}) at {cluster.assumed_mfu:.0%} of "
             f"{cluster.gpu_bf16_tflops} TFLOP/s, `cluster.assumed_mfu`, an assumption; {checkpoints} checkpoints")
    return Estimate(gpus=gpus, gpu_hours=hours, disk_gb=params * kept / GB, peak_extra_gb=params * transient / GB,
                    models=("base",), basis=basis, refusals=refusals, gpu_memory_gb=memory,
                    gpu_memory_basis=memory_basis)


def total(estimates: list[Estimate]) -> Estimate:
    return Estimate(gpus=max((e.gpus for e in estimates), default=0),
                    gpu_hours=sum(e.gpu_hours for e in estimates),
                    disk_gb=sum(e.disk_gb for e in estimates),
                    peak_extra_gb=max((e.peak_extra_gb for e in estimates), default=0.0),  # stages run one at a time
                    models=tuple(dict.fromkeys(m for e in estimates for m in e.models)),
                    vllm=any(e.vllm for e in estimates),
                    refusals=tuple(dict.fromkeys(r for e in estimates for r in e.refusals)),
                    **_largest_memory(estimates))


def _largest_memory(estimates: list[Estimate]) -> dict:
    largest = max(estimates, key=lambda e: e.gpu_memory_gb, default=Estimate())
    return {"gpu_memory_gb": largest.gpu_memory_gb, "gpu_memory_basis": largest.gpu_memory_basis}


def size_text(gb: float) -> str:
    return f"{gb / 1000:,.2f} TB" if gb >= 1000 else f"{gb:,.1f} GB" if gb >= 0.1 else f"{gb * 1000:,.0f} MB"


def unmet_requirements(cfg, needs: Estimate, *, hardware: bool = True, models: bool = True,
                       visible_gpus: list[float] | None = None) -> list[str]:
    """One sentence per requirement of the pending stages that this machine does not meet (empty: go).

    hardware: GPUs on this node (with the memory SFT needs) and free disk under the run folder; models: the weights
    the stages read are on local disk (unless cluster.allow_downloads). Settings a stage's launch would refuse are
    always problems. `visible_gpus` (each GPU's memory in GB) stands in for nvidia-smi."""
    problems = list(needs.refusals)
    if hardware:
        problems += _unmet_hardware(cfg, needs, visible_gpus)
        # vLLM runs where the stages run: on this machine, or in the image of a Slurm job (not on the login node)
        runs_here = cfg.cluster.launcher == "local" or cfg.cluster.get("inside_job")
        if needs.vllm and runs_here and missing_vllm_python(cfg):
            problems.append(missing_vllm_python(cfg))
    if models and not cfg.cluster.allow_downloads:
        problems += [problem for role in needs.models if (problem := _missing_model(cfg, role))]
    return problems


def vllm_python(cfg) -> str:
    """The interpreter of the environment vLLM is installed in (cluster.vllm_python; null: this one)."""
    import sys

    return cfg.cluster.vllm_python or sys.executable


def missing_vllm_python(cfg) -> str | None:
    if shutil.which(vllm_python(cfg)):
        return None
    return (f"cluster.vllm_python={vllm_python(cfg)} is not an executable; point it at the python of the virtualenv "
            f"that has vLLM (our image: /opt/vllm-venv/bin/python), or set it to null to run vLLM with this python.")


def _unmet_hardware(cfg, needs: Estimate, visible_gpus: int | None) -> list[str]:
    from nemo_recipes.launch import gpu_memory_problem

    problems = []
    memory = cfg.cluster.get("gpu_memory_gb")
    if needs.gpus and cfg.cluster.launcher == "local":  # under Slurm the allocation is the scheduler's business
        if visible_gpus is None:
            visible_gpus = visible_gpu_memory_gb()
        if len(visible_gpus) < needs.gpus:
            problems.append(f"the plan needs {needs.gpus} GPUs on this node (cluster.gpus_per_node="
                            f"{cfg.cluster.gpus_per_node}) but nvidia-smi lists {len(visible_gpus)}.")
        elif visible_gpus and memory is None:
            memory = min(visible_gpus)
    if needs.gpu_memory_gb and memory:
        problem = gpu_memory_problem(needs.gpu_memory_gb, needs.gpu_memory_basis, float(memory))
        if problem:
            problems.append(problem)
    free = free_disk_gb(Path(cfg.runs_root))
    if free < needs.disk_gb + needs.peak_extra_gb:
        problems.append(f"the pending stages need ~{size_text(needs.disk_gb + needs.peak_extra_gb)} under "
                        f"{cfg.runs_root} at their peak but its file system "
                        f"has {size_text(free)} free; free space or set runs_root to a bigger disk.")
    return problems


def visible_gpu_memory_gb() -> list[float]:
    """Each GPU nvidia-smi lists, by its memory in GB; none without the driver. No torch import: this runs before
    every job."""
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [int(line) * 2**20 / GB for line in listing.stdout.split() if line.isdigit()]  # MiB


def free_disk_gb(path: Path) -> float:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free / GB


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps models (HF_HUB_CACHE, else $HF_HOME/hub), found without importing it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def hub_repo_dir(repo_id: str) -> Path:
    return hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"


def _missing_model(cfg, role: str) -> str | None:
    from nemo_recipes.models import model_config

    model = model_config(cfg, role)
    key = "teacher" if role == "teacher" else "student"
    if model.source in ("hub", "local") and not model.path:
        return f"{key}.path is empty; set it to a hub id or a local Hugging Face model folder."
    if model.source == "local" and not (Path(model.path) / "config.json").is_file():
        return f"{key}.path={model.path} has no config.json; point it at a Hugging Face model folder."
    if model.source != "hub":
        return None
    repo = hub_repo_dir(model.path)
    if model.revision:  # a commit id names its snapshot; a branch or tag is resolved through refs/
        ref = repo / "refs" / model.revision
        wanted = [repo / "snapshots" / (ref.read_text().strip() if ref.is_file() else model.revision)]
    else:
        wanted = list((repo / "snapshots").glob("*"))
    if any((folder / "config.json").is_file() for folder in wanted):
        return None
    size = f" (~{size_text(float(model.num_params_b) * BF16_BYTES_PER_PARAM)})" if model.get("num_params_b") else ""
    revision = f" --revision {model.revision}" if model.revision else ""
    return (f"{model.path} ({key}) is not in the Hugging Face cache {hub_cache_dir()}: download it first with "
            f"`huggingface-cli download {model.path}{revision}`{size}, set {key}.path to a local folder with "
            f"{key}.source=local, or allow downloads with cluster.allow_downloads=true.")
