"""After training, with NeMo 2.2 / Megatron-core 0.11's own code: our final weights are the mean of Megatron's zarr
checkpoints as Megatron reads them back, and the config we give the NeMo -> HF converter passes the model-parallel
set-up its one-device restore runs, where the trained model's own (CP 2 or 4) fails."""

from __future__ import annotations

import os
import socket

import pytest
import yaml

from nemo_reference import SKIP_REASON

pytest.importorskip("nemo.collections.nlp", reason=SKIP_REASON)
pytest.importorskip("zarr", reason=SKIP_REASON)

pytestmark = pytest.mark.nemo_compat

CHECKPOINT = "megatron_gpt_sft--val_loss=1.000-step={step}-consumed_samples={step}.0-epoch=0"
BASE_CONFIG = {"precision": "bf16", "num_layers": 2, "hidden_size": 8, "tensor_model_parallel_size": 1,
               "pipeline_model_parallel_size": 1, "megatron_amp_O2": True}


@pytest.fixture(scope="module")
def one_process_group():
    """A one-rank gloo group: Megatron's checkpointing and NeMo's model-parallel set-up both need one."""
    import torch

    if not torch.distributed.is_initialized():
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    yield


def model_state(weights: dict, extra_state: bytes, optimizer: bool = True):
    """A Megatron sharded state dict like a training checkpoint's: bf16 weights, a TE extra state and (optimizer)
    an fp32 Adam moment; without it, what the converter's model asks a .nemo for."""
    import io

    from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor

    state = {name: ShardedTensor.from_rank_offsets(name, tensor) for name, tensor in weights.items()}
    if optimizer:
        moment = weights["model.decoder.final_layernorm.weight"].float() * 0 + 3
        state["optimizer"] = ShardedTensor.from_rank_offsets(
            "optimizer.state.exp_avg.model.decoder.final_layernorm.weight", moment)
    key = "model.decoder.layers.self_attention.core_attention._extra_state"
    state["extra"] = ShardedObject(key, io.BytesIO(extra_state), (1,), (0,))
    return state


def save_checkpoint(folder, weights, extra_state=b"te state"):
    from megatron.core import dist_checkpointing

    folder.mkdir(parents=True)
    dist_checkpointing.save(model_state(weights, extra_state), str(folder), sharded_strategy=("zarr", 1))


def test_average_is_the_mean_megatron_reads_back(tmp_path, one_process_group, monkeypatch):
    import torch
    from megatron.core import dist_checkpointing

    from nemo_recipes.training.final_weights import write_final_weights

    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)  # the zarr writer waits for the GPU; there is none

    torch.manual_seed(0)
    shapes = {"model.embedding.word_embeddings.weight": (16, 8), "model.decoder.final_layernorm.weight": (8,)}
    steps = {step: {name: torch.randn(shape).bfloat16() for name, shape in shapes.items()} for step in (10, 20, 30)}
    checkpoints = tmp_path / "checkpoints"
    for step, weights in steps.items():
        save_checkpoint(checkpoints / CHECKPOINT.format(step=step), weights)
    save_checkpoint(checkpoints / (CHECKPOINT.format(step=30) + "-last"), {n: w * 0 for n, w in steps[30].items()})
    base = tmp_path / "base_model"
    base.mkdir()
    (base / "model_config.yaml").write_text(yaml.safe_dump(BASE_CONFIG))

    sources = write_final_weights("average", checkpoints, base, tmp_path / "final_nemo")
    assert [p.name for p in sources] == [CHECKPOINT.format(step=s) for s in (10, 20, 30)]  # not the -last copy

    weights_dir = tmp_path / "final_nemo" / "model_weights"
    assert not any(p.name.startswith("optimizer.") for p in weights_dir.iterdir())
    template = {name: torch.empty(shape, dtype=torch.bfloat16) for name, shape in shapes.items()}
    loaded = dist_checkpointing.load(model_state(template, b"", optimizer=False), str(weights_dir))
    for name in shapes:
        mean = sum(steps[s][name].float() for s in steps) / len(steps)
        assert loaded[name].dtype == torch.bfloat16
        assert torch.equal(loaded[name], mean.bfloat16()), name
    assert loaded["extra"].read() == b"te state"


def converter_parallel_setup(model_dir):
    """What convert_qwen2_nemo_to_hf.py (NeMo 2.2.0) does before it loads a weight: read the config with
    MegatronGPTModel.restore_from(return_config=True), reset TP and PP to 1, then MegatronBaseModel's
    initialize_model_parallel_for_nemo with world size 1 and NLPDDPStrategy's init_model_parallel."""
    from lightning.pytorch import Trainer

    from nemo.collections.nlp.models.language_modeling.megatron_gpt_model import MegatronGPTModel
    from nemo.collections.nlp.modules.common.megatron.megatron_init import initialize_model_parallel_for_nemo
    from nemo.collections.nlp.parts.nlp_overrides import init_model_parallel

    trainer = Trainer(devices=1, accelerator="cpu", logger=False, enable_checkpointing=False)
    config = MegatronGPTModel.restore_from(str(model_dir), trainer=trainer, return_config=True)
    config.tensor_model_parallel_size = 1
    config.pipeline_model_parallel_size = 1
    initialize_model_parallel_for_nemo(
        world_size=1, global_rank=0, local_rank=0, tensor_model_parallel_size=config.tensor_model_parallel_size,
        pipeline_model_parallel_size=config.pipeline_model_parallel_size,
        context_parallel_size=config.get("context_parallel_size", 1), seed=1234,
    )
    init_model_parallel(sharp=False)


@pytest.mark.parametrize("context_parallel_size", [2, 4])
def test_the_converter_sets_up_our_config_and_not_the_trained_one(tmp_path, one_process_group,
                                                                 context_parallel_size):
    from nemo_recipes.training.final_weights import write_final_weights

    trained = {**BASE_CONFIG, "tensor_model_parallel_size": 8, "context_parallel_size": context_parallel_size,
               "sequence_parallel": True}
    checkpoint = tmp_path / "checkpoints" / (CHECKPOINT.format(step=50) + "-last")
    (checkpoint / "model.decoder.final_layernorm.weight").mkdir(parents=True)
    (checkpoint / "metadata.json").write_text('{"sharded_backend": "zarr"}')
    for folder, config in ((tmp_path / "trained", trained), (tmp_path / "base_model", BASE_CONFIG)):
        folder.mkdir()
        (folder / "model_config.yaml").write_text(yaml.safe_dump(config))

    with pytest.raises(RuntimeError, match=f"world_size \\(1\\) is not divisible by {context_parallel_size}"):
        converter_parallel_setup(tmp_path / "trained")  # what converting the trained .nemo did
    write_final_weights("last", tmp_path / "checkpoints", tmp_path / "base_model", tmp_path / "final_nemo")
    converter_parallel_setup(tmp_path / "final_nemo")
