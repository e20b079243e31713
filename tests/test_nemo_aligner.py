"""The NeMo-Aligner SFT path on a CPU: the gpt_sft YAML, the conversion commands, and run_sft with the launcher
replaced by a fake that writes what each real step would (no GPU, no container here)."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import compose_cfg

from nemo_recipes.errors import UserError
from nemo_recipes.training import conversion, nemo_yaml
from nemo_recipes.training.nemo_aligner import count_packs, plan_sft, run_logged, run_sft

def build(cfg, tmp_path=Path("/runs/main/sft")):
    return nemo_yaml.build_gpt_sft_config(
        cfg, nemo_model_path=tmp_path / "base_model.nemo", packed_data_path=tmp_path / "packed_16384_seed0.npy",
        output_dir=tmp_path / "training",
    )


def test_main_experiment_yaml_carries_every_paper_default():
    config = build(compose_cfg("student.parallel.cp=4"))  # on Slurm's 4 nodes, the OpenMathReasoning layout
    trainer, model, exp = config["trainer"], config["model"], config["exp_manager"]
    train_ds, optim = model["data"]["train_ds"], model["optim"]

    assert optim["name"] == "distributed_fused_adam"
    assert optim["lr"] == 1e-5 and optim["sched"]["min_lr"] == 1e-5  # constant LR
    assert optim["weight_decay"] == 0.01 and optim["betas"] == [0.9, 0.98]
    assert optim["sched"] == {"name": "CosineAnnealing", "warmup_steps": 0, "constant_steps": 0, "min_lr": 1e-5}
    assert train_ds["global_batch_size"] == 1024 and train_ds["micro_batch_size"] == 1
    assert trainer["sft"]["max_steps"] == 50
    assert trainer["sft"]["max_epochs"] == 10000  # never caps the 50 steps
    assert trainer["sft"]["gradient_clip_val"] is None  # NeMo-Skills: no clipping
    assert model["data"]["sample"] is True  # 20 examples up-sampled to 50 x 1024 packs

    # NeMo-Skills' Aligner at paper time: no cu_seqlens, each pack one causal sequence.
    assert train_ds["packed_sequence"] is True and train_ds["packed_sequence_return_cu_seqlen"] is False
    # NeMo-Skills' checkpoint format, which the averaging of every saved checkpoint reads.
    assert model["dist_ckpt_format"] == "zarr"
    assert train_ds["max_seq_length"] == 16384 == model["encoder_seq_length"]
    assert (train_ds["prompt_template"], train_ds["label_key"], train_ds["add_eos"]) == ("{input}{output}",
                                                                                         "output", False)
    assert model["data"]["chat"] is False
    packed = "/runs/main/sft/packed_16384_seed0.npy"
    assert model["data"]["validation_ds"]["file_path"] == train_ds["file_path"] == packed
    assert trainer["sft"]["limit_val_batches"] == 1

    # The 32B plan: TP 8, CP 4, PP 1, sequence parallel, on 4 nodes x 8 GPUs.
    assert (model["tensor_model_parallel_size"], model["context_parallel_size"],
            model["pipeline_model_parallel_size"], model["sequence_parallel"]) == (8, 4, 1, True)
    assert (trainer["num_nodes"], trainer["devices"], trainer["precision"]) == (4, 8, "bf16")

    assert model["restore_from_path"] == "/runs/main/sft/base_model.nemo"
    assert exp["explicit_log_dir"] == "/runs/main/sft/training"
    assert exp["resume_if_exists"] is True and exp["resume_ignore_no_checkpoint"] is True
    assert exp["checkpoint_callback_params"]["save_nemo_on_train_end"] is True
    assert (trainer["sft"]["save_interval"], trainer["sft"]["val_check_interval"]) == (50, 50)


# Every leaf key of NeMo-Aligner v0.7.0's examples/nlp/gpt/conf/gpt_sft.yaml (tag v0.7.0, 0d72d2829d34): the wheel
# ships neither that file nor train_gpt_sft.py, so our YAML must stand in for all of it.
ALIGNER_V070_GPT_SFT_KEYS = """
name trainer.num_nodes trainer.devices trainer.accelerator trainer.precision trainer.gradient_clip_val
trainer.sft.max_epochs trainer.sft.max_steps trainer.sft.val_check_interval trainer.sft.save_interval
trainer.sft.limit_train_batches trainer.sft.limit_val_batches trainer.sft.gradient_clip_val trainer.logger
trainer.enable_checkpointing trainer.use_distributed_sampler trainer.max_time trainer.max_epochs trainer.max_steps
exp_manager.explicit_log_dir exp_manager.exp_dir exp_manager.name exp_manager.create_wandb_logger
exp_manager.wandb_logger_kwargs.project exp_manager.wandb_logger_kwargs.name exp_manager.resume_if_exists
exp_manager.resume_ignore_no_checkpoint exp_manager.create_checkpoint_callback
exp_manager.checkpoint_callback_params.monitor exp_manager.checkpoint_callback_params.save_top_k
exp_manager.checkpoint_callback_params.mode exp_manager.checkpoint_callback_params.save_nemo_on_train_end
exp_manager.checkpoint_callback_params.filename exp_manager.checkpoint_callback_params.model_parallel_size
exp_manager.checkpoint_callback_params.save_best_model model.seed model.tensor_model_parallel_size
model.pipeline_model_parallel_size model.context_parallel_size model.restore_from_path model.resume_from_checkpoint
model.save_nemo_on_validation_end model.sync_batch_comm model.megatron_amp_O2 model.encoder_seq_length
model.sequence_parallel model.activations_checkpoint_granularity model.activations_checkpoint_method
model.activations_checkpoint_num_layers model.activations_checkpoint_layers_per_pipeline model.answer_only_loss
model.gradient_as_bucket_view model.seq_len_interpolation_factor model.use_flash_attention model.hidden_dropout
model.attention_dropout model.ffn_dropout model.global_batch_size model.micro_batch_size
model.steerlm2.forward_micro_batch_size model.steerlm2.micro_batch_size model.peft.peft_scheme
model.peft.restore_from_path model.peft.lora_tuning.target_modules model.peft.lora_tuning.adapter_dim
model.peft.lora_tuning.adapter_dropout model.peft.lora_tuning.column_init_method model.peft.lora_tuning.row_init_method
model.peft.lora_tuning.layer_selection model.peft.lora_tuning.weight_tying
model.peft.lora_tuning.position_embedding_strategy model.data.chat model.data.chat_prompt_tokens.system_turn_start
model.data.chat_prompt_tokens.turn_start model.data.chat_prompt_tokens.label_start
model.data.chat_prompt_tokens.end_of_turn model.data.chat_prompt_tokens.end_of_name model.data.sample
model.data.num_workers model.optim.name model.optim.lr model.optim.weight_decay model.optim.betas
model.optim.sched.name model.optim.sched.warmup_steps model.optim.sched.constant_steps model.optim.sched.min_lr
""".split() + [
    f"model.data.{split}.{key}"
    for split in ("train_ds", "validation_ds")
    for key in "file_path global_batch_size micro_batch_size shuffle memmap_workers max_seq_length min_seq_length "
               "drop_last label_key add_eos add_sep add_bos truncation_field index_mapping_dir prompt_template "
               "hf_dataset truncation_method".split()
] + ["model.data.validation_ds.output_original_text"]


def test_yaml_has_every_key_of_aligner_v070_gpt_sft():
    from omegaconf import OmegaConf

    config = OmegaConf.create(build(compose_cfg()))
    missing = [key for key in ALIGNER_V070_GPT_SFT_KEYS if OmegaConf.select(config, key, default="<no>") == "<no>"]
    assert len(ALIGNER_V070_GPT_SFT_KEYS) == 122 and missing == []


def test_written_yaml_resolves_like_nemo_will_read_it(tmp_path):
    from omegaconf import OmegaConf

    path = nemo_yaml.write_gpt_sft_config(
        compose_cfg(), nemo_model_path=tmp_path / "base.nemo", packed_data_path=tmp_path / "p.npy",
        output_dir=tmp_path / "training",
    )
    assert path == tmp_path / "gpt_sft.yaml"
    loaded = OmegaConf.load(path)
    OmegaConf.resolve(loaded)  # what resolve_and_create_trainer does first
    assert loaded.trainer.max_steps == 50 and loaded.trainer.max_epochs == 10000
    assert loaded.trainer.gradient_clip_val is None
    assert loaded.model.global_batch_size == 1024 and loaded.model.micro_batch_size == 1
    validation = loaded.model.data.validation_ds
    assert validation.packed_sequence is True and validation.global_batch_size == 1024
    assert validation.prompt_template == "{input}{output}" and validation.add_eos is False
    assert loaded.exp_manager.name == "megatron_gpt_sft"
    assert loaded.exp_manager.checkpoint_callback_params.model_parallel_size == 8
    assert loaded.model.data.chat_prompt_tokens.end_of_turn == "\n"


@pytest.mark.parametrize(
    "logger, tensorboard, wandb", [("tensorboard", True, False), ("wandb", False, True), ("none", False, False)]
)
def test_logger_choice(logger, tensorboard, wandb):
    exp = build(compose_cfg(f"sft.logger={logger}", "sft.wandb_project=r1-sft"))["exp_manager"]
    assert (exp["create_tensorboard_logger"], exp["create_wandb_logger"]) == (tensorboard, wandb)
    assert exp["wandb_logger_kwargs"]["project"] == "r1-sft"


@pytest.mark.parametrize(
    "overrides, sentence",
    [
        (["sft.logger=mlflow"], "sft.logger is 'mlflow'; use one of none, tensorboard, wandb."),
        (["sft.precision=fp32"], "sft.precision is 'fp32', but NeMo-Aligner SFT with megatron_amp_O2 trains in"),
        (["sft.precision=16-mixed"], "sft.precision is '16-mixed', but NeMo-Aligner SFT with megatron_amp_O2"),
        (["cluster.time_limit='4h'"], "cluster.time_limit '4h' is not in Slurm's [D-]HH:MM:SS form."),
        (["cluster.time_limit='00:10:00'"], "cluster.time_limit '00:10:00' leaves no time to train"),
        (["sft.final_weights=best"], "sft.final_weights is 'best'; use one of average, last."),
        (["sft.pack_attention=sliding"], "sft.pack_attention 'sliding' is not one of whole_pack, per_example."),
    ],
)
def test_yaml_rejects_unusable_settings(overrides, sentence):
    with pytest.raises(UserError) as error:
        build(compose_cfg(*overrides))
    assert sentence in str(error.value)


@pytest.mark.parametrize("limit, expected", [("'04:00:00'", "00:03:45:00"), ("'1-00:00:00'", "00:23:45:00")])
def test_slurm_time_limit_becomes_max_time_per_run_with_a_save_margin(limit, expected):
    assert build(compose_cfg(f"cluster.time_limit={limit}"))["exp_manager"]["max_time_per_run"] == expected


def test_local_runs_have_no_time_limit_and_one_node():
    config = build(compose_cfg(cluster="local"))
    assert "max_time_per_run" not in config["exp_manager"]
    assert (config["trainer"]["num_nodes"], config["trainer"]["devices"]) == (1, 8)


@pytest.mark.parametrize("overrides, clip, cu_seqlens, checkpoint_format", [
    ([], None, False, "zarr"),  # NeMo-Skills' defaults at paper time
    (["sft.gradient_clip_val=1.0", "sft.pack_attention=per_example", "sft.final_weights=last"],
     1.0, True, "torch_dist"),  # NeMo-Aligner 0.7.0's own
])
def test_each_nemo_skills_default_is_one_override_from_aligners(overrides, clip, cu_seqlens, checkpoint_format):
    config = build(compose_cfg(*overrides))
    assert config["trainer"]["sft"]["gradient_clip_val"] == clip
    assert config["model"]["data"]["train_ds"]["packed_sequence_return_cu_seqlen"] is cu_seqlens
    assert config["model"]["dist_ckpt_format"] == checkpoint_format


def test_averaging_keeps_every_save_that_it_averages():
    averaged = build(compose_cfg("sft.save_interval=5", "sft.val_check_interval=5"))
    assert averaged["exp_manager"]["checkpoint_callback_params"]["save_top_k"] == 10  # 50 steps / 5
    last = build(compose_cfg("sft.save_interval=5", "sft.val_check_interval=5", "sft.final_weights=last"))
    assert last["exp_manager"]["checkpoint_callback_params"]["save_top_k"] == 5


def test_activation_checkpointing_switch():
    model = build(compose_cfg("sft.activation_checkpointing=true"))["model"]
    assert (model["activations_checkpoint_granularity"], model["activations_checkpoint_method"],
            model["activations_checkpoint_num_layers"]) == ("full", "uniform", 1)


def test_packer_and_trainer_share_the_template_flags():
    assert nemo_yaml.packed_sequence_flags() == {"prompt_template": "{input}{output}", "add_eos": False}


def test_hf_to_nemo_command_uses_nemo_qwen2_converter_in_bf16():
    program = conversion.hf_to_nemo_program("/opt/NeMo", hf_model_dir="/models/Qwen2.5-32B",
                                            nemo_path="/runs/sft/base_model.nemo", precision="bf16")
    assert program == [
        "/opt/NeMo/scripts/checkpoint_converters/convert_qwen2_hf_to_nemo.py",
        "--input_name_or_path", "/models/Qwen2.5-32B", "--output_path", "/runs/sft/base_model.nemo",
        "--precision", "bf16",
    ]


def test_nemo_to_hf_command_writes_a_full_hf_folder_on_cpu():
    program = conversion.nemo_to_hf_program(
        "/opt/NeMo", nemo_path="/r/t.nemo", hf_model_dir="/models/Q", weights_path="/r/w.bin",
        hf_output_dir="/r/model", precision="bf16-mixed", cpu_only=True,
    )
    assert program == [
        "/opt/NeMo/scripts/checkpoint_converters/convert_qwen2_nemo_to_hf.py",
        "--input_name_or_path", "/r/t.nemo", "--output_path", "/r/w.bin",
        "--hf_input_path", "/models/Q", "--hf_output_path", "/r/model", "--precision", "bf16", "--cpu-only",
    ]
    assert "--input_tokenizer" not in program  # it would resize Qwen2.5's 152064-row embeddings and fail


def test_tokenizer_files_are_copied_and_a_folder_without_one_is_refused(tmp_path):
    source, target = tmp_path / "base", tmp_path / "model"
    source.mkdir()
    target.mkdir()
    with pytest.raises(UserError, match="holds no tokenizer.json or vocab.json"):
        conversion.copy_tokenizer_files(source, target)
    for name in ("tokenizer.json", "tokenizer_config.json", "merges.txt", "model.safetensors"):
        (source / name).write_text(name)
    copied = conversion.copy_tokenizer_files(source, target)
    assert sorted(p.name for p in copied) == ["merges.txt", "tokenizer.json", "tokenizer_config.json"]
    assert not (target / "model.safetensors").exists()


# ---- plan_sft / run_sft -------------------------------------------------------------------------------------


@pytest.fixture
def sft_inputs(tmp_path):
    """A local one-node cfg whose container paths point at fake scripts, an HF folder and a packed file."""
    nemo_dir, aligner_dir = tmp_path / "opt" / "NeMo", tmp_path / "opt" / "NeMo-Aligner"
    for script in (nemo_dir / conversion.HF_TO_NEMO_SCRIPT, nemo_dir / conversion.NEMO_TO_HF_SCRIPT,
                   aligner_dir / "examples/nlp/gpt/train_gpt_sft.py"):
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text("# stands in for the container's script\n")
    hf = tmp_path / "models" / "Qwen2.5-7B"
    hf.mkdir(parents=True)
    for name in ("config.json", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"):
        (hf / name).write_text("{}")
    packed = tmp_path / "pack" / "packed_16384_seed0.npy"
    packed.parent.mkdir()
    np.save(packed, np.array([{"input_ids": [1, 2], "loss_mask": [0, 1], "seq_start_id": [0]}] * 3), allow_pickle=True)
    cfg = compose_cfg(
        f"cluster.nemo_dir={nemo_dir}", f"cluster.nemo_aligner_dir={aligner_dir}",
        "student.num_params_b=0.001",  # keeps the HF->NeMo RAM check satisfiable on any test box
        # The final weights are written by our module for real; averaging reads zarr, which only .venv-nemo has
        # (tests/nemo_compat average Megatron's own checkpoints), so these runs take the last checkpoint.
        "sft.final_weights=last",
        student="qwen2.5-7b", cluster="local",
    )
    return dict(cfg=cfg, stage_dir=tmp_path / "runs" / "sft", packed=packed, hf=hf, nemo_dir=nemo_dir,
                aligner_dir=aligner_dir)


class FakeLauncher:
    """Records each command and its environment, and writes the output its real script would write (ours, the
    final weights, runs for real)."""

    def __init__(self, fail_step=None, skip_output_step=None):
        self.commands, self.fail_step, self.skip_output_step = [], fail_step, skip_output_step
        self.environments = []

    def __call__(self, command, log_path, environment):
        self.commands.append(list(command))
        self.environments.append(dict(environment))
        step = log_path.stem
        connections = environment["CUDA_DEVICE_MAX_CONNECTIONS"]
        log_path.write_text(f"{step} ran with CUDA_DEVICE_MAX_CONNECTIONS={connections}\n")
        if step == self.fail_step:
            return 1
        if step != self.skip_output_step:
            self._write_output(step, command)
        return 0

    @staticmethod
    def _write_output(step, command):
        def arg(flag):
            return Path(command[command.index(flag) + 1])

        if step == "hf_to_nemo":  # a .nemo is a plain tar of the config and the weights folder
            write_nemo(arg("--output_path"), BASE_MODEL_CONFIG)
        elif step in ("unpack_base", "final_weights"):  # Python's tarfile command and our module: run for real
            import subprocess

            subprocess.run([sys.executable, *command[1:]], check=True)
        elif step == "train":  # NeMo saves the training's model section, parallelism included, in the .nemo
            config = yaml.safe_load((Path(command[-2].split("=", 1)[1]) / "gpt_sft.yaml").read_text())
            checkpoints = Path(config["exp_manager"]["explicit_log_dir"]) / "checkpoints"
            checkpoints.mkdir(parents=True)
            write_nemo(checkpoints / "megatron_gpt_sft.nemo", {**BASE_MODEL_CONFIG, **{
                key: config["model"][key] for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size",
                                                      "context_parallel_size", "sequence_parallel")}})
            for name in ("megatron_gpt_sft--val_loss=1.234-step=50-consumed_samples=51200.0-epoch=0",
                         "megatron_gpt_sft--val_loss=1.234-step=50-consumed_samples=51200.0-epoch=0-last"):
                for entry, data in (("common.pt", b"common"), ("metadata.json", b'{"sharded_backend": "zarr"}'),
                                    ("model.decoder.final_layernorm.weight/0", b"w"),
                                    ("optimizer.state.exp_avg.model.decoder.final_layernorm.weight/0", b"m")):
                    (checkpoints / name / entry).parent.mkdir(parents=True, exist_ok=True)
                    (checkpoints / name / entry).write_bytes(data)
        elif step == "nemo_to_hf":
            arg("--output_path").write_bytes(b"weights")
            arg("--hf_output_path").mkdir()
            (arg("--hf_output_path") / "model.safetensors").write_bytes(b"w")


BASE_MODEL_CONFIG = {"precision": "bf16", "tensor_model_parallel_size": 1, "pipeline_model_parallel_size": 1,
                     "hidden_size": 3584, "num_layers": 28}


def write_nemo(path, model_config):
    import tarfile

    with tarfile.open(path, "w:") as nemo:
        for name, data in (("model_config.yaml", yaml.safe_dump(model_config).encode()),
                           ("model_weights/common.pt", b"w")):
            member = tarfile.TarInfo(f"./{name}")
            member.size = len(data)
            nemo.addfile(member, io.BytesIO(data))


def converter_input_config(path: Path) -> dict:
    """model_config.yaml of what convert_qwen2_nemo_to_hf.py restores: a .nemo tar or an unpacked folder."""
    import tarfile

    if path.is_dir():
        return yaml.safe_load((path / "model_config.yaml").read_text())
    with tarfile.open(path) as nemo:
        return yaml.safe_load(nemo.extractfile("./model_config.yaml").read())


def run(inputs, launcher, **overrides):
    arguments = dict(stage_dir=inputs["stage_dir"], packed_data_path=inputs["packed"], hf_model_dir=str(inputs["hf"]),
                     longest_sequence=3000, packed_context_parallel_size=2, run_command=launcher)
    arguments.update(overrides)
    return run_sft(inputs["cfg"], **arguments)


def test_plan_lists_convert_train_convert_back_for_one_node(sft_inputs):
    stage, hf, nemo_dir = sft_inputs["stage_dir"], sft_inputs["hf"], sft_inputs["nemo_dir"]
    commands = plan_sft(sft_inputs["cfg"], stage_dir=stage, packed_data_path=sft_inputs["packed"],
                        hf_model_dir=str(hf))
    assert commands == [
        ["python", str(nemo_dir / conversion.HF_TO_NEMO_SCRIPT), "--input_name_or_path", str(hf),
         "--output_path", str(stage / "base_model.nemo"), "--precision", "bf16"],
        ["python", "-m", "tarfile", "-e", str(stage / "base_model.nemo"), str(stage / "base_model")],
        ["python", "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=8",
         str(sft_inputs["aligner_dir"] / "examples/nlp/gpt/train_gpt_sft.py"),
         f"--config-path={stage}", "--config-name=gpt_sft"],
        ["python", "-m", "nemo_recipes.training.final_weights", "last", "--checkpoint-dir",
         str(stage / "training/checkpoints"), "--base-model-dir", str(stage / "base_model"),
         "--output-dir", str(stage / "final_nemo")],
        ["python", str(nemo_dir / conversion.NEMO_TO_HF_SCRIPT),
         "--input_name_or_path", str(stage / "final_nemo"),
         "--output_path", str(stage / "hf_weights.bin"), "--hf_input_path", str(hf),
         "--hf_output_path", str(stage / "model"), "--precision", "bf16", "--cpu-only"],
    ]
    assert not stage.exists(), "planning writes nothing"


def test_sft_script_path_is_configurable(sft_inputs):
    cfg = sft_inputs["cfg"]
    cfg.cluster.sft_script = "/workspace/NeMo-Skills/start_sft.py"
    train = plan_sft(cfg, stage_dir=sft_inputs["stage_dir"], packed_data_path=sft_inputs["packed"],
                     hf_model_dir=str(sft_inputs["hf"]))[2]
    assert "/workspace/NeMo-Skills/start_sft.py" in train


def test_run_sft_runs_each_step_with_its_log_and_returns_the_hf_folder(sft_inputs):
    launcher = FakeLauncher()
    model_dir = run(sft_inputs, launcher)
    stage = sft_inputs["stage_dir"]

    assert model_dir == stage / "model"
    assert [Path(c[1]).name if c[1] != "-m" else c[2] for c in launcher.commands] == [
        "convert_qwen2_hf_to_nemo.py", "tarfile", "torch.distributed.run", "nemo_recipes.training.final_weights",
        "convert_qwen2_nemo_to_hf.py"]
    assert (stage / "base_model" / "model_config.yaml").is_file()  # unpacked once, for every rank to read
    for step in ("hf_to_nemo", "unpack_base", "train", "final_weights", "nemo_to_hf"):
        assert "CUDA_DEVICE_MAX_CONNECTIONS=1" in (stage / "logs" / f"{step}.log").read_text()
        marker = json.loads((stage / "logs" / f"{step}.done").read_text())
        assert marker["step"] == step and marker["command"] in launcher.commands
    assert (model_dir / "tokenizer.json").exists() and (model_dir / "vocab.json").exists()
    assert not (stage / "hf_weights.bin").exists(), "the intermediate weights copy is removed"
    written = yaml.safe_load((stage / "gpt_sft.yaml").read_text())
    assert written["model"]["restore_from_path"] == str(stage / "base_model")
    assert written["model"]["data"]["train_ds"]["file_path"] == str(sft_inputs["packed"])

    again = FakeLauncher()
    assert run(sft_inputs, again) == model_dir
    assert again.commands == [], "every step is complete, nothing is relaunched"


def test_checkpoints_are_kept_unless_asked_and_the_models_always_are(sft_inputs):
    stage = sft_inputs["stage_dir"]
    checkpoints = stage / "training" / "checkpoints"
    run(sft_inputs, FakeLauncher())
    last = "megatron_gpt_sft--val_loss=1.234-step=50-consumed_samples=51200.0-epoch=0-last"
    assert (checkpoints / last).is_dir() and (stage / "base_model.nemo").exists()

    shutil.rmtree(stage)
    sft_inputs["cfg"].sft.keep_checkpoints = False
    model_dir = run(sft_inputs, FakeLauncher())
    assert sorted(p.name for p in checkpoints.iterdir()) == ["megatron_gpt_sft.nemo"]
    assert not (stage / "base_model.nemo").exists() and not (stage / "base_model").exists()
    assert (model_dir / "model.safetensors").exists() and (model_dir / "tokenizer.json").exists()
    # The final weights were hard links into the -last checkpoint: they outlive it.
    assert (stage / "final_nemo" / "model_weights" / "model.decoder.final_layernorm.weight" / "0").read_bytes() == b"w"


def test_a_crashed_training_is_resumed_without_converting_again(sft_inputs):
    with pytest.raises(UserError, match=r"the sft step 'train' exited with status 1; see .*train\.log\.$"):
        run(sft_inputs, FakeLauncher(fail_step="train"))
    retry = FakeLauncher()
    run(sft_inputs, retry)
    assert len(retry.commands) == 3 and "torch.distributed.run" in retry.commands[0]


def test_training_that_stops_early_is_not_converted(sft_inputs):
    launcher = FakeLauncher(skip_output_step="train")
    with pytest.raises(UserError, match="training stopped before sft.max_steps"):
        run(sft_inputs, launcher)
    assert launcher.commands[-1][2] == "torch.distributed.run", "NeMo -> HF never ran on a partial model"


def test_missing_container_script_says_how_to_enter_the_container(sft_inputs):
    (sft_inputs["aligner_dir"] / "examples/nlp/gpt/train_gpt_sft.py").unlink()
    launcher = FakeLauncher()
    with pytest.raises(UserError) as error:
        run(sft_inputs, launcher)
    message = str(error.value)
    assert "train_gpt_sft.py is not on this machine, so this is not the NeMo container" in message
    assert "docker run --rm -it --gpus all --ipc=host" in message and "nemo_recipes:latest bash" in message
    assert launcher.commands == []


def test_validation_runs_before_any_step(sft_inputs):
    launcher = FakeLauncher()
    with pytest.raises(UserError, match="the packed data was made for context parallel size 1"):
        run(sft_inputs, launcher, packed_context_parallel_size=1)
    with pytest.raises(UserError, match="the student's tokenizer merges not found"):
        (sft_inputs["hf"] / "merges.txt").unlink()
        run(sft_inputs, launcher)
    assert launcher.commands == []


def test_a_missing_packed_file_is_named_even_without_upsampling(sft_inputs):
    sft_inputs["cfg"].sft.upsample = False
    sft_inputs["packed"].unlink()
    with pytest.raises(UserError, match=r"^the packed training data not found at .*packed_16384_seed0\.npy\.$"):
        run(sft_inputs, FakeLauncher())


def test_without_upsampling_the_pack_count_feeds_the_epoch_check(sft_inputs):
    assert count_packs(sft_inputs["packed"]) == 3
    sft_inputs["cfg"].sft.upsample = False
    with pytest.raises(UserError, match="the 3 packs make no full global batch of 1024"):
        run(sft_inputs, FakeLauncher())


def test_run_logged_captures_output_and_environment(tmp_path):
    log = tmp_path / "logs" / "step.log"
    program = "import os, sys; print('rank0', os.environ['HYDRA_FULL_ERROR']); sys.exit(3)"
    status = run_logged([sys.executable, "-c", program], log, {"HYDRA_FULL_ERROR": "1"})
    assert status == 3
    text = log.read_text()
    assert "$ " in text and "rank0 1" in text


@pytest.mark.parametrize("context_parallel_size", [2, 4])
def test_the_converter_reads_a_one_device_config_whatever_the_training_cp(sft_inputs, context_parallel_size):
    """convert_qwen2_nemo_to_hf.py restores on one device and resets only TP and PP; NeMo's megatron_init then
    asserts world_size 1 % (TP x PP x CP) == 0. It must never see the trained model's CP (7B's default 2, or 4 on
    four nodes)."""
    cfg = sft_inputs["cfg"]
    cfg.student.parallel.cp = context_parallel_size
    cfg.cluster.gpus_per_node = 4 * context_parallel_size
    launcher = FakeLauncher()
    run(sft_inputs, launcher, packed_context_parallel_size=context_parallel_size)

    trained = converter_input_config(sft_inputs["stage_dir"] / "training/checkpoints/megatron_gpt_sft.nemo")
    assert trained["context_parallel_size"] == context_parallel_size  # what NeMo saved after training
    to_hf = launcher.commands[-1]
    read = converter_input_config(Path(to_hf[to_hf.index("--input_name_or_path") + 1]))
    layout = read["tensor_model_parallel_size"] * read["pipeline_model_parallel_size"] * read["context_parallel_size"]
    assert 1 % layout == 0 and read["sequence_parallel"] is False
    assert {key: read[key] for key in ("hidden_size", "num_layers", "precision")} == {
        "hidden_size": 3584, "num_layers": 28, "precision": "bf16"}  # the base model's own config
    weights = sft_inputs["stage_dir"] / "final_nemo" / "model_weights"
    assert sorted(p.name for p in weights.iterdir()) == ["common.pt", "metadata.json",
                                                         "model.decoder.final_layernorm.weight"]  # no optimizer


def test_every_nemo_process_stages_its_temporary_files_on_the_runs_file_system(sft_inputs, tmp_path):
    launcher = FakeLauncher()
    run(sft_inputs, launcher)
    tmp_dir = sft_inputs["stage_dir"] / "tmp"
    assert [env["TMPDIR"] for env in launcher.environments] == [str(tmp_dir)] * 5  # torchrun and python alike
    assert tmp_dir.is_dir()

    # In a Slurm job every task runs these same commands with this environment; the job's own TMPDIR (runs_root/.tmp)
    # reaches the container by name (tests/test_launching.py).

    # The docker command that says how to enter the container sets it too.
    (sft_inputs["aligner_dir"] / "examples/nlp/gpt/train_gpt_sft.py").unlink()
    shutil.rmtree(sft_inputs["stage_dir"])
    with pytest.raises(UserError) as error:
        run(sft_inputs, FakeLauncher())
    assert f"-e TMPDIR={tmp_dir}" in str(error.value)


def test_a_killed_steps_temporary_files_are_cleared_before_the_next(sft_inputs):
    tmp_dir = sft_inputs["stage_dir"] / "tmp"
    with pytest.raises(UserError):
        run(sft_inputs, FakeLauncher(fail_step="train"))
    (tmp_dir / "tmpabc123").mkdir()
    (tmp_dir / "tmpabc123" / "model_weights.half").write_bytes(b"a staged checkpoint cut off by a kill")
    run(sft_inputs, FakeLauncher())
    assert list(tmp_dir.iterdir()) == []


def test_the_default_final_weights_average_every_saved_checkpoint(sft_inputs):
    cfg = sft_inputs["cfg"]
    cfg.sft.final_weights = "average"
    final = plan_sft(cfg, stage_dir=sft_inputs["stage_dir"], packed_data_path=sft_inputs["packed"],
                     hf_model_dir=str(sft_inputs["hf"]))[3]
    assert final[1:4] == ["-m", "nemo_recipes.training.final_weights", "average"]
