"""Our packed .npy, read by NeMo's GPTSFTPackedDataset and batched by its collate_fn, gives exactly the tokens,
labels, loss masks, positions and cu_seqlens that NeMo's own tokenization and packing give for the same data -- and,
with the loss mask where this NeMo reads it, trains exactly each answer's tokens (NeMo 2.2's own packer does not)."""

from __future__ import annotations

import pytest

from nemo_reference import SKIP_REASON, compose_cfg, nemo_packed_file, nemo_tokenizer, write_sft_jsonl

pytest.importorskip("nemo.collections.nlp", reason=SKIP_REASON)
pytest.importorskip("nemo_aligner", reason=SKIP_REASON)

pytestmark = pytest.mark.nemo_compat

PACK_SIZE = 512
BATCH_KEYS = ("tokens", "labels", "loss_mask", "position_ids", "cu_seqlens", "cu_seqlens_unpadded", "max_seqlen")


def packed_dataset(path, tokenizer, context_parallel_size: int, pack_attention: str = "per_example"):
    """NeMo-Aligner's build_sft_dataset on the train_ds section of the YAML we generate, reading `path`."""
    from omegaconf import OmegaConf

    from nemo_aligner.data.nlp.builders import build_sft_dataset
    from nemo_recipes.training.nemo_yaml import build_gpt_sft_config

    cfg = compose_cfg(
        f"sft.pack_size={PACK_SIZE}", "student.parallel.tp=1", "student.parallel.sequence_parallel=false",
        f"student.parallel.cp={context_parallel_size}", f"sft.pack_attention={pack_attention}",
    )
    config = OmegaConf.create(build_gpt_sft_config(cfg, nemo_model_path="/unused.nemo", packed_data_path=path,
                                                   output_dir="/unused/training"))
    OmegaConf.resolve(config)
    return build_sft_dataset(config.model.data.train_ds, tokenizer, None, answer_only_loss=True, is_chat=False,
                             special_tokens=config.model.data.chat_prompt_tokens, model_cfg=config.model)


def as_lists(batch: dict) -> tuple:
    return tuple(batch[key].tolist() for key in BATCH_KEYS)


def collated_packs(path, tokenizer, context_parallel_size: int) -> list[tuple]:
    dataset = packed_dataset(path, tokenizer, context_parallel_size)
    return [as_lists(dataset.collate_fn([dataset[i]])) for i in range(len(dataset))]


def raw_packs(path) -> list[tuple]:
    import numpy as np

    return [(list(p["input_ids"]), [bool(m) for m in p["loss_mask"]], list(p["seq_start_id"]))
            for p in np.load(path, allow_pickle=True)]


@pytest.mark.parametrize("context_parallel_size", [1, 2])
def test_our_packs_match_nemos_token_for_token(tmp_path, tiny_tokenizer_dir, context_parallel_size):
    from nemo_recipes.packing import pack_sft_file

    jsonl = write_sft_jsonl(tmp_path / "sft.jsonl")
    tokenizer = nemo_tokenizer(tiny_tokenizer_dir)
    (tmp_path / "nemo").mkdir()
    reference = nemo_packed_file(jsonl, tokenizer, tmp_path / "nemo", pack_size=PACK_SIZE,
                                 context_parallel_size=context_parallel_size)
    # NeMo's packer writes the mask the NeMo 2.1 way ("token"), whichever NeMo reads it.
    ours = pack_sft_file(jsonl, tiny_tokenizer_dir, tmp_path / "ours", pack_size=PACK_SIZE, seed=0,
                         algorithm="first_fit_decreasing", context_parallel_size=context_parallel_size,
                         prompt_template="{input}{output}", add_eos=False, loss_mask_alignment="token")

    nemo_rows = raw_packs(reference)
    sample_lengths = sorted(b - a for _, _, starts in nemo_rows for a, b in zip(starts, starts[1:]))
    assert len(set(sample_lengths)) == len(sample_lengths), "precondition: NeMo's packing is deterministic"
    assert 1 < len(nemo_rows) < ours.num_sequences, "several packs, several sequences in some"

    assert raw_packs(ours.path) == nemo_rows
    ours_batches, nemo_batches = (collated_packs(p, tokenizer, context_parallel_size) for p in (ours.path, reference))
    assert ours_batches == nemo_batches
    tokens, labels, loss_mask, positions, cu_seqlens, _, _ = ours_batches[0]
    assert len(tokens[0]) % (16 * context_parallel_size) == 0  # padded to what TE's THD kernel with CP needs
    assert cu_seqlens[0][0] == 0 and positions[0][0] == 0
    assert sum(loss_mask[0]) > 0


def _image_check():
    """docker/check_image_versions.py, which asks the installed NeMo where it reads a packed loss mask."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "docker" / "check_image_versions.py"
    spec = importlib.util.spec_from_file_location("check_image_versions", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pinned_nemo_reads_the_loss_mask_where_our_default_puts_it():
    from nemo.package_info import __version__

    from nemo_recipes.packing import DEFAULT_LOSS_MASK_ALIGNMENT

    if tuple(int(part) for part in __version__.split(".")[:2]) < (2, 2):
        pytest.skip(f"the default is for NeMo 2.2 on (the image's); this is NeMo {__version__}")
    assert _image_check().loss_mask_alignment() == DEFAULT_LOSS_MASK_ALIGNMENT


@pytest.mark.parametrize("context_parallel_size", [1, 2])
def test_nemo_trains_exactly_the_answer_tokens_of_our_packs(tmp_path, tiny_tokenizer_dir, context_parallel_size):
    """Through NeMo's own dataset and collate_fn: the labels with loss weight 1 are each sample's answer tokens,
    in pack order -- the first answer token included, no context token and no CP pad -- for packs made with the
    alignment this NeMo reads (label on 2.2, the default; token on 2.1)."""
    import numpy as np

    from nemo_recipes.io import read_jsonl
    from nemo_recipes.packing import pack_sft_file, tokenize_sft_example
    from nemo_recipes.tokenizer import load_tokenizer

    jsonl = write_sft_jsonl(tmp_path / "sft.jsonl")
    tokenizer = nemo_tokenizer(tiny_tokenizer_dir)
    ours = pack_sft_file(jsonl, tiny_tokenizer_dir, tmp_path / "ours", pack_size=PACK_SIZE,
                         context_parallel_size=context_parallel_size,
                         loss_mask_alignment=_image_check().loss_mask_alignment())
    hf_tokenizer = load_tokenizer(str(tiny_tokenizer_dir))
    answers = {tuple(sample["input_ids"]): sample["answer_ids"]
               for sample in (tokenize_sft_example(hf_tokenizer, record) for record in read_jsonl(jsonl))}

    dataset = packed_dataset(ours.path, tokenizer, context_parallel_size)
    for index, pack in enumerate(np.load(ours.path, allow_pickle=True)):
        batch = dataset.collate_fn([dataset[index]])
        labels, weights = batch["labels"][0].tolist(), batch["loss_mask"][0].tolist()
        trained = [label for label, weight in zip(labels, weights) if weight]
        starts = list(pack["seq_start_id"]) + [len(pack["input_ids"])]
        expected = []
        for start, end in zip(starts, starts[1:]):
            ids = list(pack["input_ids"][start:end])
            while ids[-1] == tokenizer.eos_id:  # the CP pad
                ids.pop()
            expected += answers[tuple(ids)]
        assert trained == expected


@pytest.mark.parametrize("context_parallel_size", [1, 2])
def test_whole_pack_attention_is_the_same_batch_with_one_causal_mask(tmp_path, tiny_tokenizer_dir,
                                                                     context_parallel_size):
    """sft.pack_attention whole_pack through NeMo's own collate_fn: the tokens, labels, loss mask and positions of
    per_example, but no cu_seqlens (so no THD attention) and a causal mask over the whole padded pack."""
    import torch

    from nemo_recipes.packing import pack_sft_file

    jsonl = write_sft_jsonl(tmp_path / "sft.jsonl")
    tokenizer = nemo_tokenizer(tiny_tokenizer_dir)
    ours = pack_sft_file(jsonl, tiny_tokenizer_dir, tmp_path, pack_size=PACK_SIZE,
                         context_parallel_size=context_parallel_size)
    isolated = packed_dataset(ours.path, tokenizer, context_parallel_size, "per_example")
    whole = packed_dataset(ours.path, tokenizer, context_parallel_size, "whole_pack")
    assert len(isolated) == len(whole) == ours.num_packs
    for index in range(len(whole)):
        a, b = isolated.collate_fn([isolated[index]]), whole.collate_fn([whole[index]])
        for key in ("tokens", "labels", "loss_mask", "position_ids"):
            assert torch.equal(a[key], b[key]), key
        assert "cu_seqlens" in a and "cu_seqlens" not in b
        length = b["tokens"].shape[1]
        assert length % (2 * context_parallel_size) == 0  # Megatron's plain CP split needs 2 x CP equal chunks
        # NeMo's attention_mask marks the blocked positions: the strict upper triangle of one causal mask.
        blocked = torch.ones(length, length, dtype=torch.bool).triu(1)
        assert torch.equal(b["attention_mask"].reshape(length, length).bool(), blocked)


def test_our_shuffled_packs_are_nemos_for_the_same_seed():
    """NeMo's first_fit_shuffle draws its order from NumPy's global RNG, which its packing script never seeds;
    seeded with our seed, it makes packs of exactly our packs' lengths, in our order."""
    import numpy as np

    from nemo.utils.sequence_packing_utils import create_packing_strategy

    from nemo_recipes.packing import pack_lengths

    lengths = np.random.default_rng(7).integers(200, 9000, size=3000)
    for seed in (0, 1234):
        np.random.seed(seed)
        assignments = create_packing_strategy(np.bincount(lengths, minlength=16385).tolist(), 16384,
                                              "first_fit_shuffle")
        nemo_packs = assignments[0] if isinstance(assignments, tuple) else assignments
        ours = pack_lengths(lengths, 16384, "first_fit_shuffle", seed)
        assert [sorted(lengths[pack].tolist()) for pack in ours] == [sorted(pack) for pack in nemo_packs]
