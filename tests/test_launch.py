"""Pre-launch validation (one sentence per broken rule) and the torchrun / srun / docker command lists."""

from __future__ import annotations


import pytest

from conftest import compose_cfg as compose_groups

from nemo_recipes import launch
from nemo_recipes.errors import UserError


def compose_cfg(*overrides, cluster="slurm"):
    """The 32B student; on Slurm (4 nodes) in the NeMo-Skills OpenMathReasoning layout, TP 8 x CP 4 = 32 GPUs."""
    layout = ["student.parallel.cp=4"] if cluster == "slurm" else []
    return compose_groups(*layout, *overrides, cluster=cluster)


def validate(cfg, **kwargs):
    arguments = dict(longest_sequence=4000, packed_context_parallel_size=int(cfg.student.parallel.cp), paths={},
                     check_memory=False)
    arguments.update(kwargs)
    launch.validate_sft_launch(cfg, **arguments)


def test_paper_plan_for_32b_on_four_nodes_passes_and_has_one_replica():
    cfg = compose_cfg()
    validate(cfg)
    plan = launch.parallel_plan(cfg)
    assert (plan.world_size, plan.model_parallel_size, plan.data_parallel_size) == (32, 32, 1)
    assert plan.pad_multiple == 8 * 8 * 4  # 8 x TP with sequence parallel, times CP


@pytest.mark.parametrize(
    "overrides, kwargs, sentence",
    [
        (["cluster.gpus_per_node=0"], {},
         "cluster.nodes x cluster.gpus_per_node is 4 x 0: NeMo-Aligner SFT needs GPUs"),
        (["cluster.nodes=1"], {}, "TP x PP x CP = 8 x 1 x 4 = 32 GPUs per model replica, which does not divide "
                                  "the 8 GPUs of cluster.nodes x cluster.gpus_per_node = 1 x 8; lower "
                                  "student.parallel.cp or add nodes."),
        (["student.parallel.pp=3", "cluster.nodes=12"], {},
         "student.parallel.pp 3 does not divide the 64 layers of Qwen2.5-32B (student.num_layers)."),
        (["student.parallel.cp=3", "cluster.nodes=3"], {},
         "student.parallel.cp 3 cannot split NeMo's packed sequences (padded to multiples of 16) into 2 x CP"),
        (["sft.precision=32"], {}, "sft.precision is '32', but NeMo-Aligner SFT with megatron_amp_O2 trains in bf16 "
                                   "or bf16-mixed."),
        (["sft.constant_steps=10"], {}, "constant_steps 10 > 0 needs lr > min_lr (NeMo asserts it)"),
        (["cluster.nodes=12"], {}, "sft.global_batch_size 1024 is not divisible by micro batch x data-parallel "
                                   "size = 1 x 3."),
        (["sft.micro_batch_size=2"], {}, "sft.micro_batch_size is 2, but NeMo's packed-sequence dataset needs 1."),
        ([], {"longest_sequence": 16386}, "sft.pack_size 16384 is smaller than the longest SFT example (16386 tokens, "
                                          "16385 positions); raise sft.pack_size or drop that example."),
        (["sft.pack_size=16000"], {}, "sft.pack_size 16000 is not a multiple of 256, the length NeMo pads packs to "
                                      "with TP 8 and sequence parallel and CP 4."),
        ([], {"packed_context_parallel_size": 1},
         "the packed data was made for context parallel size 1 but student.parallel.cp is 4; pack it again with "
         "context_parallel_size=4."),
        (["sft.save_interval=30", "sft.val_check_interval=20"], {},
         "sft.save_interval 30 is not a multiple of sft.val_check_interval 20"),
        (["sft.save_interval=0"], {}, "sft.save_interval (0) and sft.val_check_interval (50) must both be positive"),
        (["sft.max_steps=-1"], {}, "sft.max_steps is -1; training is driven by steps"),
        (["sft.upsample=false", "sft.global_batch_size=1", "sft.max_epochs=10"], {"num_packs": 4},
         "sft.max_steps 50 would be cut to 40 by sft.max_epochs 10 x 4 steps per epoch; raise sft.max_epochs."),
        (["sft.upsample=false"], {"num_packs": 4},
         "the 4 packs make no full global batch of 1024, so NeMo-Aligner would train 0 steps"),
        (["sft.max_epochs=0"], {}, "sft.max_steps 50 would be cut to 0 by sft.max_epochs 0"),
        (["student.parallel.tp=16", "cluster.nodes=8"], {},
         "student.parallel.tp 16 does not divide the 8 KV heads of Qwen2.5-32B (student.num_kv_heads)."),
        (["student.parallel.tp=1"], {},
         "student.parallel.sequence_parallel needs tensor parallelism, but student.parallel.tp is 1."),
        (["~cluster.partition"], {}, "cluster.partition must be set when cluster.launcher is slurm."),
        (["cluster.launcher=local"], {}, "cluster.launcher local runs on one node, but cluster.nodes is 4."),
        (["cluster.launcher=k8s"], {}, "cluster.launcher is 'k8s'; use local or slurm."),
        # Settings that would only fail after training: refused before the first stage.
        (["sft.final_weights=best"], {}, "sft.final_weights is 'best'; use one of average, last."),
        (["sft.pack_attention=causal"], {}, "sft.pack_attention 'causal' is not one of whole_pack, per_example."),
        (["sft.nemo_to_hf_cpu_only=false", "cluster.gpu_memory_gb=40"], {},
         "sft.nemo_to_hf_cpu_only=false converts the trained Qwen2.5-32B on one GPU, whose 40 GB "
         "(cluster.gpu_memory_gb) cannot hold its ~66 GB of bf16 weights; set sft.nemo_to_hf_cpu_only=true."),
    ],
)
def test_each_rule_raises_its_own_sentence(overrides, kwargs, sentence):
    cfg = compose_cfg(*overrides)
    with pytest.raises(UserError) as error:
        validate(cfg, **kwargs)
    message = str(error.value)
    assert sentence in message
    assert message.count(". ") == 0, "one sentence only"


def test_the_settings_are_checked_before_anything_exists_and_each_problem_is_listed():
    assert launch.sft_settings_problems(compose_cfg()) == []
    problems = launch.sft_settings_problems(compose_cfg("cluster.nodes=1", "sft.precision=16", "sft.pack_size=16000"))
    assert [p.split(" ")[0] for p in problems] == ["student.parallel", "sft.pack_size", "sft.precision"]
    problems = launch.sft_settings_problems(compose_cfg("sft.pack_size=16000", "sft.save_interval=30"))
    assert [p.split(" ")[0] for p in problems] == ["sft.pack_size", "sft.save_interval"]


@pytest.mark.parametrize("student, cp, nodes, gigabytes", [
    ("qwen2.5-32b", 1, 1, 73.8),  # 32.8B x (6 + 12) / 8
    ("qwen2.5-32b", 4, 4, 36.9),  # 32.8B x (6 + 12 / 4) / 8: the optimizer is sharded over DP x CP
    ("qwen2.5-7b", 2, 1, 22.8),   # 7.6B x (6 + 12 / 2) / 4
])
def test_model_state_per_gpu_follows_megatrons_distributed_optimizer(student, cp, nodes, gigabytes):
    cfg = compose_groups(f"student.parallel.cp={cp}", f"cluster.nodes={nodes}", student=student)
    plan = launch.parallel_plan(cfg)
    assert plan.model_state_gb_per_gpu(float(cfg.student.num_params_b)) == pytest.approx(gigabytes, abs=0.05)


@pytest.mark.parametrize("student", ["qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b"])
def test_every_student_default_fits_the_default_one_node_cluster(student):
    assert launch.sft_settings_problems(compose_groups(student=student, cluster="local")) == []


def test_a_sample_filling_the_pack_exactly_fits():
    validate(compose_cfg(), longest_sequence=16385)  # 16384 positions after the next-token shift


def test_missing_input_path_is_named(tmp_path):
    present = tmp_path / "packed.npy"
    present.write_bytes(b"")
    missing = tmp_path / "Qwen2.5-32B" / "config.json"
    with pytest.raises(UserError, match=rf"^the student's HF config not found at {missing}\.$"):
        validate(compose_cfg(), paths={"the packed training data": present, "the student's HF config": missing})


def test_host_memory_check_reads_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   23000000 kB\n")
    with pytest.raises(UserError, match=r"needs at least 230 GB of host RAM, but .*meminfo shows 24 GB available\.$"):
        validate(compose_cfg(), check_memory=True, meminfo_path=meminfo)
    meminfo.write_text("MemAvailable:   240000000 kB\n")
    validate(compose_cfg(), check_memory=True, meminfo_path=meminfo)


def test_wandb_logger_needs_its_key(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(UserError, match="WANDB_API_KEY is not set"):
        validate(compose_cfg("sft.logger=wandb"))
    monkeypatch.setenv("WANDB_API_KEY", "test-key")
    validate(compose_cfg("sft.logger=wandb"))
    assert launch.sft_environment(compose_cfg("sft.logger=wandb"))["WANDB_API_KEY"] == "test-key"


def test_the_epoch_cap_waits_for_the_pack_count_without_upsampling():
    validate(compose_cfg("sft.upsample=false"))  # not packed yet: nothing to check
    with pytest.raises(UserError, match="make no full global batch"):
        validate(compose_cfg("sft.upsample=false"), num_packs=4)


def test_local_launch_is_torchrun_on_every_gpu():
    cfg = compose_cfg(cluster="local")
    command = launch.distributed_command(cfg, ["/opt/train.py", "--config-name=gpt_sft"])
    assert command == [
        "python", "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=8",
        "/opt/train.py", "--config-name=gpt_sft",
    ]
    assert launch.single_process_command(cfg, ["/opt/convert.py", "--a"]) == ["python", "/opt/convert.py", "--a"]


def test_in_a_slurm_job_each_task_runs_its_rank_of_the_training_itself():
    # The job's srun started one task per GPU in the container (launching/sbatch.py): no torchrun, no srun here.
    cfg = compose_cfg("cluster.inside_job=true")
    assert launch.distributed_command(cfg, ["/opt/train.py", "--config-name=gpt_sft"]) == [
        "python", "-u", "/opt/train.py", "--config-name=gpt_sft"]
    assert launch.single_process_command(cfg, ["/opt/convert.py"]) == ["python", "/opt/convert.py"]


@pytest.mark.parametrize("start_offset, expected", [(0, 3 * 3600 + 45 * 60), (-3600, 2 * 3600 + 45 * 60)])
def test_training_inside_a_job_stops_its_margin_before_the_jobs_time_limit(monkeypatch, start_offset, expected):
    import time

    now = time.time()
    monkeypatch.setenv("NEMO_RECIPES_JOB_START", str(now + start_offset))  # the job's script exports its start
    deadline = launch.training_deadline(compose_cfg("cluster.inside_job=true").cluster)  # 04:00:00 less 00:15:00
    assert deadline - now == pytest.approx(expected, abs=1)
    assert launch.training_deadline(compose_cfg().cluster) is None  # the submit command on the login node trains none
    assert launch.training_deadline(compose_cfg("cluster.inside_job=true", "cluster.time_limit=null").cluster) is None


def test_a_margin_that_leaves_no_time_is_refused_in_one_sentence():
    with pytest.raises(UserError, match=r"^cluster.time_limit '00:10:00' leaves no time to train before "
                                        r"cluster.stop_before_time_limit '00:15:00'.$"):
        launch.stop_margin_seconds(compose_cfg("cluster.time_limit='00:10:00'").cluster)


def test_docker_run_command_has_nvidia_flags_and_mounts():
    command = launch.docker_run_command("nemo_recipes:latest", ["make", "reproduce-main"], mounts=["/w:/w"],
                                        workdir="/w", env={"HF_HOME": "/w/.cache"})
    assert command == [
        "docker", "run", "--rm", "--gpus", "all", "--ipc=host", "--ulimit", "memlock=-1",
        "--ulimit", "stack=67108864", "-v", "/w:/w", "-e", "HF_HOME=/w/.cache", "-w", "/w",
        "nemo_recipes:latest", "make", "reproduce-main",
    ]


def test_same_path_mounts_keep_outermost_folders_once(tmp_path):
    runs, stage = tmp_path / "runs", tmp_path / "runs" / "main" / "sft"
    models = tmp_path / "models"
    mounts = launch.same_path_mounts([stage, models, runs, stage], extra=["/scratch:/scratch"])
    assert mounts == [f"{models}:{models}", f"{runs}:{runs}", "/scratch:/scratch"]
