"""The converter's input after training: which checkpoints, which files, which config (the zarr averaging itself runs
on Megatron's own checkpoints in tests/nemo_compat/test_final_weights.py)."""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from nemo_recipes.errors import UserError
from nemo_recipes.training.final_weights import (
    checkpoints_to_average,
    last_checkpoint,
    main,
    write_final_weights,
)

NAME = "megatron_gpt_sft--val_loss={loss}-step={step}-consumed_samples={samples}.0-epoch=0"


def checkpoint(root, step, last=False, backend="torch_dist"):
    folder = root / (NAME.format(loss="1.000", step=step, samples=step * 1024) + ("-last" if last else ""))
    (folder / "model.decoder.weight").mkdir(parents=True)
    (folder / "model.decoder.weight" / "0.0").write_bytes(f"weights at {step}".encode())
    (folder / "optimizer.state.exp_avg.model.decoder.weight").mkdir()
    (folder / "metadata.json").write_text(f'{{"sharded_backend": "{backend}"}}')
    (folder / "common.pt").write_bytes(b"common")
    return folder


@pytest.fixture
def base_model(tmp_path):
    folder = tmp_path / "base_model"
    folder.mkdir()
    config = {"tensor_model_parallel_size": 1, "pipeline_model_parallel_size": 1, "num_layers": 64,
              "tokenizer": {"library": "huggingface", "type": "/models/Qwen2.5-32B"}}
    (folder / "model_config.yaml").write_text(yaml.safe_dump(config))
    (folder / "tokenizer_config.json").write_text("{}")
    return folder


def test_average_takes_every_saved_checkpoint_but_the_last_copy_in_step_order(tmp_path):
    for step in (100, 50, 150):
        checkpoint(tmp_path, step)
    checkpoint(tmp_path, 150, last=True)
    (tmp_path / "megatron_gpt_sft.nemo").write_bytes(b"a file, not a checkpoint")
    assert [p.name.split("-step=")[1].split("-")[0] for p in checkpoints_to_average(tmp_path)] == ["50", "100", "150"]
    assert last_checkpoint(tmp_path).name.endswith("step=150-consumed_samples=153600.0-epoch=0-last")


def test_last_links_the_model_weights_and_writes_the_base_config_for_one_device(tmp_path, base_model):
    checkpoints = tmp_path / "checkpoints"
    source = checkpoint(checkpoints, 50, last=True)
    output = tmp_path / "final_nemo"
    assert write_final_weights("last", checkpoints, base_model, output) == [source]

    weights = output / "model_weights"
    assert sorted(p.name for p in weights.iterdir()) == ["common.pt", "metadata.json", "model.decoder.weight"]
    chunk = weights / "model.decoder.weight" / "0.0"
    assert chunk.read_bytes() == b"weights at 50"
    assert chunk.stat().st_ino == (source / "model.decoder.weight" / "0.0").stat().st_ino  # a link, not a copy
    config = yaml.safe_load((output / "model_config.yaml").read_text())
    assert config["num_layers"] == 64 and config["tokenizer"]["type"] == "/models/Qwen2.5-32B"
    assert (config["tensor_model_parallel_size"], config["pipeline_model_parallel_size"],
            config["context_parallel_size"], config["sequence_parallel"]) == (1, 1, 1, False)
    assert (output / "tokenizer_config.json").is_file()
    assert not list(tmp_path.glob(".final_nemo.tmp*"))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(output.stat().st_mode) == 0o777 & ~umask  # the group's, as mkdir gives: not mkdtemp's 0700

    write_final_weights("last", checkpoints, base_model, output)  # again: the folder is replaced, nothing left over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base_model", "checkpoints", "final_nemo"]


def test_averaging_refuses_checkpoints_not_in_zarr_in_one_sentence(tmp_path, base_model):
    checkpoint(tmp_path / "checkpoints", 50, backend="torch_dist")
    with pytest.raises(UserError, match="is a 'torch_dist' checkpoint, but averaging reads zarr arrays"):
        write_final_weights("average", tmp_path / "checkpoints", base_model, tmp_path / "final_nemo")
    assert not (tmp_path / "final_nemo").exists() and not list(tmp_path.glob(".final_nemo.tmp*"))


@pytest.mark.parametrize("mode, message", [
    ("average", "holds no saved checkpoint to average"),
    ("last", "holds no checkpoint folder ending in -last"),
])
def test_missing_checkpoints_are_one_sentence(tmp_path, base_model, mode, message, capsys):
    (tmp_path / "checkpoints").mkdir()
    assert main([mode, "--checkpoint-dir", str(tmp_path / "checkpoints"), "--base-model-dir", str(base_model),
                 "--output-dir", str(tmp_path / "out")]) == 1
    assert message in capsys.readouterr().err
