"""Cost estimates (GPU-hours, disk) from their stated formulas, and the requirement checks that refuse a run."""

from __future__ import annotations

import pytest

from nemo_recipes.config import compose_config
from nemo_recipes.pipeline import stage_graph
from nemo_recipes.resources import estimate, total, unmet_requirements


def _stage(cfg, name):
    return next(stage for stage in stage_graph(cfg) if stage.name == name)


def test_sampling_cost_is_tokens_over_replica_throughput_times_its_gpus():
    cfg = compose_config(["experiment=main"])
    cost = estimate(cfg, _stage(cfg, "sample_teacher"), 50)
    tokens = 50 * 512 * 6000
    assert cost.gpu_hours == pytest.approx(tokens / 2000 / 3600 * 2)  # 2-GPU replicas at 2000 tokens/s each
    assert cost.gpus == 8 and cost.models == ("teacher",)
    assert cost.disk_gb == pytest.approx(2 * 50 * 512 * (6000 * 4.5 + 1500) / 1e9)
    sft_sampling = estimate(cfg, _stage(cfg, "sample_sft"), 256)
    assert sft_sampling.models == ()  # the SFT model is the run's own output, not a download


def test_training_cost_is_six_flops_per_parameter_and_token_at_the_stated_mfu():
    cfg = compose_config(["experiment=main", "sft.pack_attention=per_example", "sft.final_weights=last"])
    cost = estimate(cfg, _stage(cfg, "sft"), None)
    tokens = 50 * 1024 * 16384
    assert cost.gpu_hours == pytest.approx(6 * 32.8e9 * tokens / (989e12 * 0.35) / 3600)
    # kept: base .nemo packed and unpacked, trained .nemo, HF export (2 bytes/param each) + 2 checkpoints (14 each);
    # while it runs also the converter's intermediate weights file
    assert cost.disk_gb == pytest.approx(32.8e9 * (2 * 4 + 14 * 2) / 1e9)
    assert cost.peak_extra_gb == pytest.approx(32.8e9 * 2 / 1e9)
    lean = compose_config(["experiment=main", "sft.keep_checkpoints=false", "sft.final_weights=last"])
    lean_cost = estimate(lean, _stage(lean, "sft"), None)
    assert lean_cost.disk_gb == pytest.approx(32.8e9 * 4 / 1e9)  # trained .nemo + HF export stay
    assert lean_cost.disk_gb + lean_cost.peak_extra_gb == pytest.approx(cost.disk_gb + cost.peak_extra_gb)

    # The defaults (NeMo-Skills'): every token attends to ~8K earlier ones of its pack, and the averaged weights
    # are one more bf16 copy.
    default = compose_config(["experiment=main"])
    default_cost = estimate(default, _stage(default, "sft"), None)
    attention = 12 * 64 * 5120 * 16384 / 2 * tokens
    assert default_cost.gpu_hours == pytest.approx((6 * 32.8e9 * tokens + attention) / (989e12 * 0.35) / 3600)
    assert default_cost.disk_gb == pytest.approx(cost.disk_gb + 32.8e9 * 2 / 1e9)
    assert cost.gpus == 8 and cost.models == ("base",)
    halved = compose_config(["experiment=main", "sft.max_steps=25", "cluster.assumed_mfu=0.7"])
    assert estimate(halved, _stage(halved, "sft"), None).gpu_hours == pytest.approx(default_cost.gpu_hours / 4)


def test_the_toy_demo_needs_no_gpu_and_no_download():
    cfg = compose_config(["experiment=demo"])
    costs = [estimate(cfg, stage, 50) for stage in stage_graph(cfg)]
    assert total(costs).gpus == 0 and total(costs).gpu_hours == 0
    assert unmet_requirements(cfg, total(costs), visible_gpus=[]) == []


def test_requirements_name_each_missing_gpu_disk_and_model(tmp_path, monkeypatch):
    from nemo_recipes import resources

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = compose_config(["experiment=main", f"runs_root={tmp_path}/runs"])
    needs = total([estimate(cfg, stage, 256) for stage in stage_graph(cfg)])
    monkeypatch.setattr(resources, "free_disk_gb", lambda path: 100.0)
    problems = unmet_requirements(cfg, needs, visible_gpus=[80.0] * 4)
    assert problems[0] == "the plan needs 8 GPUs on this node (cluster.gpus_per_node=8) but nvidia-smi lists 4."
    assert problems[1].startswith("the pending stages need ~") and "has 100.0 GB free" in problems[1]
    assert problems[2].startswith("cluster.vllm_python=/opt/vllm-venv/bin/python is not an executable")
    assert [p.split(" (")[0] for p in problems[3:]] == ["Qwen/QwQ-32B-Preview", "Qwen/Qwen2.5-32B"]

    # A model in the Hugging Face cache layout is found; Slurm jobs leave the GPU count to the scheduler.
    for name in ("QwQ-32B-Preview", "Qwen2.5-32B"):
        snapshot = tmp_path / "hub" / f"models--Qwen--{name}" / "snapshots" / "0123abc"
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").write_text("{}")
    monkeypatch.setattr(resources, "free_disk_gb", lambda path: 1e6)
    here = ["cluster.vllm_python=null"]  # vLLM in this python, which exists
    cfg = compose_config(["experiment=main", f"runs_root={tmp_path}/runs", *here])
    assert unmet_requirements(cfg, needs, visible_gpus=[141.0] * 8) == []
    slurm = compose_config(["experiment=main", "cluster=slurm", "cluster.partition=batch", f"runs_root={tmp_path}",
                            *here])
    assert unmet_requirements(slurm, needs, visible_gpus=[]) == []
    # The login node needs no vLLM: the jobs run it in the image, and check it there.
    login = compose_config(["experiment=main", "cluster=slurm", "cluster.partition=batch", f"runs_root={tmp_path}"])
    assert unmet_requirements(login, needs, visible_gpus=[]) == []
    in_job = compose_config(["experiment=main", "cluster=slurm", "cluster.partition=batch", "cluster.inside_job=true",
                             f"runs_root={tmp_path}"])
    assert unmet_requirements(in_job, needs, visible_gpus=[])[0].startswith("cluster.vllm_python=/opt/vllm-venv")
    pinned = compose_config(["experiment=main", "teacher.revision=fffffff", f"runs_root={tmp_path}", *here])
    assert "--revision fffffff" in unmet_requirements(pinned, needs, visible_gpus=[141.0] * 8)[0]
    assert unmet_requirements(compose_config(["experiment=main", "cluster.allow_downloads=true", *here,
                                              "teacher.revision=fffffff"]), needs, visible_gpus=[141.0] * 8) == []
    # A branch or tag revision is found through the cache's refs/, as huggingface_hub resolves it.
    (tmp_path / "hub" / "models--Qwen--QwQ-32B-Preview" / "refs").mkdir()
    (tmp_path / "hub" / "models--Qwen--QwQ-32B-Preview" / "refs" / "main").write_text("0123abc")
    branch = compose_config(["experiment=main", "teacher.revision=main", f"runs_root={tmp_path}", *here])
    assert unmet_requirements(branch, needs, visible_gpus=[141.0] * 8) == []
    empty = compose_config(["experiment=main", "student.path=null", f"runs_root={tmp_path}", *here])
    assert unmet_requirements(empty, needs, visible_gpus=[141.0] * 8) == [
        "student.path is empty; set it to a hub id or a local Hugging Face model folder."]


def test_a_run_refuses_before_writing_anything(tmp_path, monkeypatch, capsys):
    from nemo_recipes import resources
    from nemo_recipes.cli import main

    monkeypatch.setattr(resources, "visible_gpu_memory_gb", lambda: [])
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["experiment=main", f"runs_root={tmp_path}/runs", "stages=[sample_base]"]) == 3
    out, err = capsys.readouterr()
    assert "sample_base" in out and "cost: ~36.4 GPU-hours on 8 GPU(s)" in out
    assert err.startswith("cannot start: the plan needs 8 GPUs") and "Qwen/Qwen2.5-32B (student)" in err
    assert not (tmp_path / "runs").exists()


def test_sft_settings_that_cannot_launch_refuse_the_run_before_its_first_stage():
    fits = compose_config(["experiment=main"])
    assert estimate(fits, _stage(fits, "sft"), None).refusals == ()
    cfg = compose_config(["experiment=main", "student.parallel.cp=4"])  # 32 GPUs on the one-node cluster
    cost = estimate(cfg, _stage(cfg, "sft"), None)
    assert cost.refusals == ("main sft: student.parallel needs TP x PP x CP = 8 x 1 x 4 = 32 GPUs per model replica, "
                             "which does not divide the 8 GPUs of cluster.nodes x cluster.gpus_per_node = 1 x 8; "
                             "lower student.parallel.cp or add nodes.",)
    needs = total([estimate(cfg, stage, 256) for stage in stage_graph(cfg)])
    assert cost.refusals[0] in unmet_requirements(cfg, needs, hardware=False, models=False)


def test_sft_refuses_gpus_its_memory_estimate_does_not_fit(tmp_path, monkeypatch):
    from nemo_recipes import launch

    here = [f"runs_root={tmp_path}", "cluster.allow_downloads=true", "cluster.vllm_python=null"]
    cfg = compose_config(["experiment=main", *here])
    monkeypatch.setattr("nemo_recipes.resources.free_disk_gb", lambda path: 1e6)
    needs = total([estimate(cfg, stage, 256) for stage in stage_graph(cfg)])
    state, activations = launch.sft_memory_gb(cfg)  # 32B, TP 8 on one node, 16384-token packs, no recompute
    assert state == pytest.approx(32.8 * 18 / 8) and activations == pytest.approx(64 * 16384 * 5120 * 34 / 8 / 1e9)
    assert needs.gpu_memory_gb == pytest.approx(state + activations)
    assert unmet_requirements(cfg, needs, models=False, visible_gpus=[141.0] * 8) == []  # H200s
    (problem,) = unmet_requirements(cfg, needs, models=False, visible_gpus=[80.0] * 8)  # H100s
    assert problem.startswith("SFT needs ~97 GB per GPU (74 GB of weights, gradients and optimizer shard + 23 GB of "
                              "activations at 16384 tokens per pack), more than 90% of the GPUs' 80 GB")
    four_nodes = compose_config(["experiment=main", "cluster=slurm", "cluster.partition=p", "student.parallel.cp=4",
                                 "cluster.gpu_memory_gb=80", *here])
    four = total([estimate(four_nodes, stage, 256) for stage in stage_graph(four_nodes)])
    assert unmet_requirements(four_nodes, four, models=False) == []  # ~37 + ~6 GB on 32 GPUs
    recompute = compose_config(["experiment=main", "sft.activation_checkpointing=true"])
    assert launch.sft_memory_gb(recompute)[1] == pytest.approx(64 * 16384 * 5120 * 2 / 8 / 1e9)


def test_the_plan_prints_the_sft_memory_and_what_would_refuse_it(capsys):
    from nemo_recipes.cli import main

    assert main(["experiment=main", "dry_run=true", "stages=[sft]"]) == 0
    assert "      memory: ~97 GB per GPU (74 GB of weights, gradients and optimizer shard" in capsys.readouterr().out
    assert main(["experiment=main", "dry_run=true", "stages=[sft]", "student.parallel.cp=4"]) == 0
    out = capsys.readouterr().out
    assert "      refuses: main sft: student.parallel needs TP x PP x CP = 8 x 1 x 4 = 32 GPUs" in out
    assert "memory: ~" not in out  # a layout that does not divide the GPUs has no per-GPU figure
