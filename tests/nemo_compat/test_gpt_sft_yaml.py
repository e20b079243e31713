"""The gpt_sft YAML we write, loaded the way train_gpt_sft.py loads it (Hydra 1.3.2, OmegaConf 2.3.0), and handed
to the NeMo / NeMo-Aligner code that consumes each of its sections. Nothing here needs a GPU."""

from __future__ import annotations

import inspect

import pytest

from nemo_reference import SKIP_REASON, compose_cfg, nemo_packed_file, nemo_tokenizer, write_sft_jsonl

pytest.importorskip("nemo.collections.nlp", reason=SKIP_REASON)
pytest.importorskip("nemo_aligner", reason=SKIP_REASON)

pytestmark = pytest.mark.nemo_compat


@pytest.fixture(scope="module")
def main_experiment_yaml(tmp_path_factory):
    """Our gpt_sft.yaml for the 32B plan (TP 8, CP 4, SP, 4 nodes), composed by Hydra as the script's
    @hydra_runner does with --config-path/--config-name, then resolved as resolve_and_create_trainer does."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from nemo_recipes.training.nemo_yaml import write_gpt_sft_config

    stage = tmp_path_factory.mktemp("sft_stage")
    path = write_gpt_sft_config(compose_cfg("student.parallel.cp=4"), nemo_model_path=stage / "base_model",
                                packed_data_path=stage / "packed_16384_seed0.npy", output_dir=stage / "training")
    with initialize_config_dir(str(path.parent), version_base=None):
        config = compose(config_name=path.stem, overrides=["trainer.sft.limit_train_batches=1.0"])
    OmegaConf.resolve(config)
    return config


def test_hydra_composes_it_with_the_values_we_wrote(main_experiment_yaml):
    config = main_experiment_yaml
    assert config.trainer.max_steps == 50 and config.trainer.max_epochs == 10000
    assert config.model.global_batch_size == 1024 and config.model.micro_batch_size == 1
    assert config.model.data.validation_ds.packed_sequence is True
    assert config.exp_manager.checkpoint_callback_params.model_parallel_size == 8


def test_exp_manager_section_fits_nemos_schema(main_experiment_yaml):
    from omegaconf import OmegaConf

    from nemo.utils.exp_manager import ExpManagerConfig

    merged = OmegaConf.merge(OmegaConf.structured(ExpManagerConfig), main_experiment_yaml.exp_manager)
    assert merged.resume_if_exists and merged.checkpoint_callback_params.save_nemo_on_train_end
    assert merged.max_time_per_run == "00:03:45:00"


def test_trainer_section_is_what_lightning_takes(main_experiment_yaml):
    from lightning.pytorch import Trainer

    accepted = set(inspect.signature(Trainer.__init__).parameters)
    # resolve_and_create_trainer pops trainer.sft, then passes every other key to Trainer(**cfg.trainer).
    assert set(main_experiment_yaml.trainer) - {"sft"} <= accepted


def test_every_key_the_training_path_reads_directly_is_present(main_experiment_yaml):
    from omegaconf import OmegaConf

    # Attribute reads (not .get) in train_gpt_sft.py, SupervisedTrainer, build_sft_dataset, GPTSFTModel,
    # MegatronTrainerBuilder and init_peft at NeMo-Aligner v0.7.0 / NeMo v2.1.0.
    read_directly = [
        "model.restore_from_path", "trainer.precision", "model.data.chat", "model.data.chat_prompt_tokens",
        "trainer.sft.max_steps", "trainer.sft.limit_val_batches", "trainer.sft.val_check_interval",
        "trainer.sft.save_interval", "trainer.sft.max_epochs", "trainer.sft.gradient_clip_val",
        "model.data.train_ds.global_batch_size", "model.data.train_ds.micro_batch_size",
        "model.data.train_ds.drop_last", "model.data.train_ds.file_path", "model.data.train_ds.max_seq_length",
        "model.data.train_ds.min_seq_length", "model.data.validation_ds.global_batch_size",
        "model.data.validation_ds.micro_batch_size", "model.data.validation_ds.drop_last",
        "model.data.validation_ds.file_path", "model.gradient_as_bucket_view", "model.optim.name",
        "model.peft.peft_scheme", "model.encoder_seq_length", "exp_manager.explicit_log_dir",
    ]
    missing = [key for key in read_directly if OmegaConf.select(main_experiment_yaml, key, default="<missing>")
               == "<missing>"]
    assert missing == []


def test_a_run_of_max_steps_validates_and_saves_at_its_last_step(main_experiment_yaml):
    from nemo_aligner.utils.trainer_utils import check_progress

    sft = main_experiment_yaml.trainer.sft
    # the assert inside check_progress (save_interval % val_check_interval) must hold, and the final step saves
    assert check_progress(sft.max_steps, sft.max_steps, sft.val_check_interval, sft.save_interval,
                          sft.limit_val_batches) == (True, True, True)


def test_build_sft_dataset_accepts_our_train_and_validation_sections(tmp_path, tiny_tokenizer_dir,
                                                                     main_experiment_yaml):
    from omegaconf import OmegaConf, open_dict

    from nemo.collections.nlp.data.language_modeling.megatron.gpt_sft_dataset import GPTSFTPackedDataset
    from nemo_aligner.data.nlp.builders import build_sft_dataset

    tokenizer = nemo_tokenizer(tiny_tokenizer_dir)
    packed = nemo_packed_file(write_sft_jsonl(tmp_path / "sft.jsonl"), tokenizer, tmp_path, pack_size=16384,
                              context_parallel_size=4)
    config = OmegaConf.create(OmegaConf.to_container(main_experiment_yaml))
    with open_dict(config):
        config.model.data.train_ds.file_path = config.model.data.validation_ds.file_path = str(packed)
    sft = config.trainer.sft

    # train_gpt_sft.py with model.data.sample=True: max_steps x GBS training packs, limit_val_batches x GBS for val
    train = build_sft_dataset(config.model.data.train_ds, tokenizer, sft.max_steps * 1024, answer_only_loss=True,
                              is_chat=False, special_tokens=config.model.data.chat_prompt_tokens,
                              model_cfg=config.model)
    validation = build_sft_dataset(config.model.data.validation_ds, tokenizer, sft.limit_val_batches * 1024,
                                   answer_only_loss=True, is_chat=False,
                                   special_tokens=config.model.data.chat_prompt_tokens, model_cfg=config.model)
    assert isinstance(train, GPTSFTPackedDataset) and isinstance(validation, GPTSFTPackedDataset)
    assert (len(train), len(validation)) == (50 * 1024, 1024)
    assert train.pad_seq_length_to_mult == 8 * 8 * 4  # 8 x TP (sequence parallel) x CP
    batch = train.collate_fn([train[0]])
    assert batch["tokens"].shape[1] % 256 == 0 and batch["tokens"].shape[1] <= 16384
    # NeMo-Skills' paper-time attention (sft.pack_attention whole_pack): no cu_seqlens, so Megatron runs each pack
    # as one causal sequence, split over CP ranks as any sequence is (tokens padded to a multiple of 2 x CP).
    assert not train.return_cu_seqlen and "cu_seqlens" not in batch


def test_checkpoints_are_saved_in_the_zarr_format_the_averaging_reads(main_experiment_yaml):
    from nemo.utils.callbacks.dist_ckpt_io import DistributedCheckpointIO

    # MegatronTrainerBuilder builds the checkpoint writer from the model section, as here.
    assert DistributedCheckpointIO.from_config(main_experiment_yaml.model).save_ckpt_format == "zarr"
