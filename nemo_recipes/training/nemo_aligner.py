"""The NeMo-Aligner SFT backend: HF -> NeMo, train_gpt_sft.py on packed data, NeMo -> HF, in the NeMo container.

    from nemo_recipes.training.nemo_aligner import plan_sft, run_sft
    plan_sft(cfg, stage_dir=..., packed_data_path=..., hf_model_dir=...)   # the three commands, nothing run
    run_sft(cfg, stage_dir=..., packed_data_path=..., hf_model_dir=...,
            longest_sequence=..., packed_context_parallel_size=...)         # -> stage_dir / "model"

Stage folder:
    base_model.nemo            HF -> NeMo output
    base_model/                the same, unpacked once (restore_from_path): given the .nemo tarball, NeMo unpacks
                               it on every rank into a temporary folder (~65 GB each for 32B)
    gpt_sft.yaml               the complete NeMo-Aligner config (nemo_yaml.py)
    training/                  exp_manager.explicit_log_dir: checkpoints/, the final .nemo, TensorBoard events
    final_nemo/                sft.final_weights -- the average of the saved checkpoints or the last one -- as an
                               unpacked .nemo with the base model's one-device config (final_weights.py)
    model/                     the trained model as an HF folder (weights, config, tokenizer)
    tmp/                       TMPDIR of every NeMo process: each .nemo NeMo writes is staged there in full first
    logs/<step>.log, .done     each command's output, and a marker once it finished cleanly

A rerun skips every step with its marker and output in place; a crashed training resumes from its last
checkpoint (exp_manager.resume_if_exists).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Sequence

from nemo_recipes import launch
from nemo_recipes.errors import UserError
from nemo_recipes.io import write_json
from nemo_recipes.training import conversion, nemo_yaml
from nemo_recipes.training.nemo_yaml import build_gpt_sft_config, write_gpt_sft_config  # noqa: F401 (backend API)

TRAIN_SCRIPT = "examples/nlp/gpt/train_gpt_sft.py"

# (command, log file, extra environment) -> exit status
CommandRunner = Callable[[Sequence[str], Path, Mapping[str, str]], int]


@dataclass(frozen=True)
class SftStep:
    name: str
    command: list[str]
    output: Path  # exists once the step has done its work
    scripts: tuple[Path, ...] = field(default=())  # container scripts it runs (checked only when launched locally)


@dataclass(frozen=True)
class SftLayout:
    stage_dir: Path

    @property
    def base_nemo(self) -> Path:
        return self.stage_dir / "base_model.nemo"

    @property
    def base_model_dir(self) -> Path:
        return self.stage_dir / "base_model"

    @property
    def training_dir(self) -> Path:
        return self.stage_dir / "training"

    @property
    def trained_nemo(self) -> Path:
        return nemo_yaml.final_nemo_path(self.training_dir)

    @property
    def final_nemo(self) -> Path:
        return self.stage_dir / "final_nemo"

    @property
    def tmp_dir(self) -> Path:
        return self.stage_dir / "tmp"

    @property
    def config_path(self) -> Path:
        return self.stage_dir / f"{nemo_yaml.CONFIG_NAME}.yaml"

    @property
    def hf_weights(self) -> Path:
        """The NeMo -> HF converter's intermediate state dict, deleted once the HF folder is written."""
        return self.stage_dir / "hf_weights.bin"

    @property
    def hf_model(self) -> Path:
        return self.stage_dir / "model"

    def log(self, step: str) -> Path:
        return self.stage_dir / "logs" / f"{step}.log"

    def done_marker(self, step: str) -> Path:
        return self.stage_dir / "logs" / f"{step}.done"

    def followers_marker(self) -> Path:
        """Written when this Slurm job's training may start on every task (hidden: not an output of the stage)."""
        return self.stage_dir / "logs" / f".train-go-{os.environ.get('SLURM_JOB_ID', 'local')}"


def plan_sft(cfg, *, stage_dir: Path, packed_data_path: Path, hf_model_dir: str) -> list[list[str]]:
    """The exact commands run_sft would launch, in order; nothing is run or written."""
    return [step.command for step in sft_steps(cfg, stage_dir=stage_dir, packed_data_path=packed_data_path,
                                               hf_model_dir=hf_model_dir)]


def run_sft(
    cfg,
    *,
    stage_dir: Path,
    packed_data_path: Path,
    hf_model_dir: str,
    longest_sequence: int,
    packed_context_parallel_size: int,
    run_command: CommandRunner | None = None,
) -> Path:
    """Validate, then run each step not yet complete with its log in `stage_dir/logs`; return the HF model folder."""
    run_command = run_command or run_logged
    layout = SftLayout(Path(stage_dir).absolute())
    packed_data_path = Path(packed_data_path).absolute()
    steps = sft_steps(cfg, stage_dir=layout.stage_dir, packed_data_path=packed_data_path, hf_model_dir=hf_model_dir)
    pending = [step for step in steps if not _is_complete(layout, step)]

    launch.validate_sft_launch(
        cfg,
        longest_sequence=longest_sequence,
        packed_context_parallel_size=packed_context_parallel_size,
        paths=_input_paths(Path(hf_model_dir), packed_data_path),
        check_memory=any(step.name == "hf_to_nemo" for step in pending),  # this process converts, on this node
        num_packs=None if cfg.sft.upsample or not packed_data_path.exists() else count_packs(packed_data_path),
    )
    _require_container_scripts(cfg, layout, [script for step in pending for script in step.scripts])

    _write_config(cfg, layout, packed_data_path)
    environment = launch.sft_environment(cfg, tmp_dir=layout.tmp_dir)
    for step in pending:
        _fresh_tmp_dir(layout)  # what a killed step staged there (a whole .nemo) is of no use to the next
        if step.name == "train":
            # Again, now: in a Slurm job, exp_manager.max_time_per_run is what the conversions left of its time.
            _write_config(cfg, layout, packed_data_path)
            _release_followers(layout)
        _run_step(layout, step, run_command, environment)
        _finish_step(layout, step, Path(hf_model_dir), keep_checkpoints=bool(cfg.sft.get("keep_checkpoints", True)))
    return layout.hf_model


def follow_sft(cfg, *, stage_dir: Path, packed_data_path: Path, hf_model_dir: str,
               leader_done: Callable[[], bool], poll_s: float = 2.0) -> None:
    """One rank of a Slurm training job other than the first: wait until the first task has converted the model
    and written the config (or is done without training), run this rank of the same training command, then wait
    for the first task to finish converting back, so that srun never ends it early."""
    layout = SftLayout(Path(stage_dir).absolute())
    train = next(step for step in sft_steps(cfg, stage_dir=layout.stage_dir, packed_data_path=packed_data_path,
                                            hf_model_dir=hf_model_dir) if step.name == "train")
    go = layout.followers_marker()
    while not go.exists() and not leader_done():
        time.sleep(poll_s)
    if go.exists():
        environment = {**os.environ, **launch.sft_environment(cfg, tmp_dir=layout.tmp_dir)}
        status = subprocess.run(train.command, env=environment).returncode
        if status:
            raise UserError(f"training rank {os.environ.get('SLURM_PROCID')} exited with status {status}; the "
                            f"first task's log is {layout.log('train')}.")
    while not leader_done():
        time.sleep(poll_s)


def _write_config(cfg, layout: SftLayout, packed_data_path: Path) -> None:
    nemo_yaml.write_gpt_sft_config(cfg, nemo_model_path=layout.base_model_dir, packed_data_path=packed_data_path,
                                   output_dir=layout.training_dir, config_dir=layout.stage_dir)


def _release_followers(layout: SftLayout) -> None:
    """Tell the other tasks of this Slurm job (one per GPU) to start their ranks of the training."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        marker = layout.followers_marker()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{datetime.now(timezone.utc).isoformat()}\n")


def _delete_training_state(layout: SftLayout) -> None:
    """sft.keep_checkpoints=false: what only further training would read -- the Megatron checkpoints (14 bytes per
    parameter each) and the base .nemo, packed and unpacked. The trained .nemo and the HF model stay."""
    layout.base_nemo.unlink(missing_ok=True)
    shutil.rmtree(layout.base_model_dir, ignore_errors=True)
    shutil.rmtree(layout.tmp_dir, ignore_errors=True)
    for entry in layout.trained_nemo.parent.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        elif entry != layout.trained_nemo:
            entry.unlink()


def sft_steps(cfg, *, stage_dir: Path, packed_data_path: Path, hf_model_dir: str) -> list[SftStep]:
    layout = SftLayout(Path(stage_dir).absolute())
    hf_model_dir = Path(hf_model_dir).absolute()
    nemo_dir = Path(cfg.cluster.nemo_dir)
    train_script = Path(cfg.cluster.get("sft_script") or Path(cfg.cluster.nemo_aligner_dir) / TRAIN_SCRIPT)
    precision = cfg.sft.precision

    to_nemo = conversion.hf_to_nemo_program(
        nemo_dir, hf_model_dir=hf_model_dir, nemo_path=layout.base_nemo, precision=precision
    )
    unpack = conversion.unpack_nemo_program(layout.base_nemo, layout.base_model_dir)
    train = [str(train_script), f"--config-path={layout.stage_dir}", f"--config-name={nemo_yaml.CONFIG_NAME}"]
    final_weights = conversion.final_weights_program(
        str(cfg.sft.final_weights), checkpoint_dir=layout.trained_nemo.parent, base_model_dir=layout.base_model_dir,
        output_dir=layout.final_nemo,
    )
    to_hf = conversion.nemo_to_hf_program(
        nemo_dir,
        nemo_path=layout.final_nemo,
        hf_model_dir=hf_model_dir,
        weights_path=layout.hf_weights,
        hf_output_dir=layout.hf_model,
        precision=precision,
        cpu_only=bool(cfg.sft.get("nemo_to_hf_cpu_only", True)),
    )
    return [
        SftStep("hf_to_nemo", launch.single_process_command(cfg, to_nemo), layout.base_nemo, (Path(to_nemo[0]),)),
        SftStep("unpack_base", launch.single_process_command(cfg, unpack), layout.base_model_dir),
        SftStep("train", launch.distributed_command(cfg, train), layout.trained_nemo, (train_script,)),
        SftStep("final_weights", launch.single_process_command(cfg, final_weights), layout.final_nemo),
        SftStep("nemo_to_hf", launch.single_process_command(cfg, to_hf), layout.hf_model, (Path(to_hf[0]),)),
    ]


def count_packs(packed_data_path: Path) -> int:
    """Packs in NeMo's single-pickle .npy (an object array of dicts)."""
    import numpy as np

    return len(np.load(packed_data_path, allow_pickle=True))


def run_logged(command: Sequence[str], log_path: Path, environment: Mapping[str, str]) -> int:
    """Run `command`, appending its output to `log_path` and echoing it here; returns the exit status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n# {datetime.now(timezone.utc).isoformat()}\n$ {shlex.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **environment}
        )
        for line in process.stdout:
            log.write(line)
            sys.stdout.buffer.write(line)
        return process.wait()


def _input_paths(hf_model_dir: Path, packed_data_path: Path) -> dict[str, Path]:
    # The converters read the HF folder with Qwen2ForCausalLM and the slow Qwen2Tokenizer (vocab.json + merges.txt).
    return {
        "the student's HF config (student.path must be a local folder)": hf_model_dir / "config.json",
        "the student's tokenizer vocabulary": hf_model_dir / "vocab.json",
        "the student's tokenizer merges": hf_model_dir / "merges.txt",
        "the packed training data": packed_data_path,
    }


def _require_container_scripts(cfg, layout: SftLayout, scripts: Sequence[Path]) -> None:
    for script in scripts:
        if not script.is_file():
            hint = launch.docker_run_command(
                str(cfg.cluster.get("docker_image") or "nemo_recipes:latest"),
                ["bash"],
                mounts=launch.same_path_mounts([Path.cwd(), layout.stage_dir]),
                workdir=Path.cwd(),
                env={launch.TMPDIR: str(layout.tmp_dir)},
                interactive=True,
            )
            raise UserError(
                f"{script} is not on this machine, so this is not the NeMo container: run the sft stage inside it "
                f"({shlex.join(hint)}) or set cluster.nemo_dir / cluster.nemo_aligner_dir."
            )


def _fresh_tmp_dir(layout: SftLayout) -> None:
    shutil.rmtree(layout.tmp_dir, ignore_errors=True)
    layout.tmp_dir.mkdir(parents=True)


def _is_complete(layout: SftLayout, step: SftStep) -> bool:
    return layout.done_marker(step.name).is_file() and step.output.exists()


def _run_step(layout: SftLayout, step: SftStep, run_command: CommandRunner, environment: Mapping[str, str]) -> None:
    log = layout.log(step.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    status = run_command(step.command, log, environment)
    if status != 0:
        raise UserError(f"the sft step '{step.name}' exited with status {status}; see {log}.")
    if not step.output.exists():
        reason = (
            "training stopped before sft.max_steps (e.g. at exp_manager.max_time_per_run); run the stage again to "
            "resume from the last checkpoint"
            if step.name == "train"
            else "see the log"
        )
        raise UserError(f"the sft step '{step.name}' finished without writing {step.output}: {reason} ({log}).")


def _finish_step(layout: SftLayout, step: SftStep, hf_model_dir: Path, keep_checkpoints: bool = True) -> None:
    if step.name == "nemo_to_hf":
        conversion.copy_tokenizer_files(hf_model_dir, layout.hf_model)
        layout.hf_weights.unlink(missing_ok=True)  # a second full copy of the weights
        if not keep_checkpoints:
            _delete_training_state(layout)
    write_json(layout.done_marker(step.name), {
        "step": step.name,
        "command": step.command,
        "output": str(step.output),
        "finished": datetime.now(timezone.utc).isoformat(),
    })

