import json

import numpy as np
import pytest
import torch
from conftest import sft_record, write_jsonl

from nemo_recipes.errors import UserError
from nemo_recipes.packing import nemo_loss_mask, pack_sft_file, tokenize_sft_example
from nemo_recipes.training import checkpoints, torch_reference
from nemo_recipes.training.lr_schedule import check_schedule, nemo_cosine_annealing_lr
from nemo_recipes.training.packed_data import block_causal_mask, pack_draws, packed_batch
from nemo_recipes.training.torch_reference import batch_loss, packed_loss, train

SOLUTIONS = [
    "First we add the numbers, so 12 + 30 = 42 and the answer is \\boxed{42}.",
    "Let me think step by step. hello world",
    "Wait, let me verify that again. We check the result: \\boxed{7}.",
    "So the answer is \\boxed{3}.",
    "First we add the numbers. Then we check the result. Wait, let me verify that again. \\boxed{10}.",
]
TRAIN_ARGS = dict(
    lr=1e-2, min_lr=1e-3, warmup_steps=1, weight_decay=0.01, betas=(0.9, 0.98), global_batch_size=3, max_steps=4,
    gradient_clip_val=1.0, seed=1234, progress=False,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


@pytest.fixture(scope="module")
def records():
    return [sft_record(f"r{i}", f"What is {i} + {i}?", s) for i, s in enumerate(SOLUTIONS)]


@pytest.fixture(scope="module")
def packed_path(tmp_path_factory, tiny_tokenizer_dir, records):
    directory = tmp_path_factory.mktemp("packed")
    write_jsonl(directory / "sft.jsonl", records)
    return pack_sft_file(directory / "sft.jsonl", tiny_tokenizer_dir, directory, pack_size=128,
                         algorithm="first_fit_decreasing").path


def load_model(model_dir, attn_implementation="sdpa"):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32,
                                                attn_implementation=attn_implementation).eval()


def make_pack(samples, eos_id):
    input_ids, loss_mask, starts = [], [], []
    for sample in samples:
        starts.append(len(input_ids))
        input_ids += sample["input_ids"]
        loss_mask += nemo_loss_mask(sample["input_ids"], sample["answer_start_idx"], eos_id).tolist()
    return {"input_ids": input_ids, "loss_mask": loss_mask, "seq_start_id": starts}


def unpacked_token_losses(model, sample, eos_id):
    """One sequence run alone, shifted and masked as NeMo's unpacked GPTSFTDataset.collate_fn does."""
    ids = torch.tensor(sample["input_ids"])
    with torch.no_grad():
        logits = model(input_ids=ids[None, :-1]).logits[0]
    losses = torch.nn.functional.cross_entropy(logits, ids[1:], reduction="none")
    trained = nemo_loss_mask(sample["input_ids"], sample["answer_start_idx"], eos_id, alignment="token")
    return losses, torch.from_numpy(trained[1:]).float()


# --- packed batches -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alignment, loss_mask", [
    ("token", [False, True, True, False, False, True, True]),  # NeMo 2.1: token i's flag at i
    ("label", [True, True, False, False, True, True, False]),  # NeMo 2.2: token i's flag at i - 1
])
def test_packed_batch_shifts_each_sub_sequence_like_nemo_collate(alignment, loss_mask):
    pack = {"input_ids": [11, 12, 13, 21, 22, 23, 24], "loss_mask": loss_mask, "seq_start_id": [0, 3]}
    batch = packed_batch(pack, alignment)
    assert batch["tokens"].tolist() == [[11, 12, 21, 22, 23]]
    assert batch["labels"].tolist() == [[12, 13, 22, 23, 24]]
    assert batch["loss_mask"].tolist() == [[1.0, 1.0, 0.0, 1.0, 1.0]]
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1, 2]]
    assert batch["seq_lengths"] == [2, 3] and batch["token_count"] == 5


def test_block_causal_mask_blocks_attention_across_sub_sequences():
    mask = block_causal_mask([2, 3])[0, 0].int().tolist()
    assert mask == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 1],
    ]


# --- the packed loss equals the unpacked one ----------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("members", [[2], [0, 1, 3], [4, 2, 1, 0]])
def test_per_example_packed_losses_equal_each_example_run_alone(tiny_student_dir, tokenizer, records,
                                                                 attn_implementation, members):
    model = load_model(tiny_student_dir, attn_implementation)
    eos = tokenizer.eos_token_id
    samples = [tokenize_sft_example(tokenizer, records[i]) for i in members]
    with torch.no_grad():
        loss, per_token, mask = packed_loss(model, make_pack(samples, eos), pack_attention="per_example")

    unpacked = [unpacked_token_losses(model, s, eos) for s in samples]
    expected_losses = torch.cat([losses for losses, _ in unpacked])
    expected_mask = torch.cat([m for _, m in unpacked])
    torch.testing.assert_close(per_token, expected_losses, rtol=0, atol=1e-5)
    assert torch.equal(mask, expected_mask)
    masked_sum = sum((losses * m).sum() for losses, m in unpacked)
    assert loss.item() == pytest.approx((masked_sum / expected_mask.sum()).item(), abs=1e-5)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("members", [[2], [0, 1, 3], [4, 2, 1, 0]])
def test_whole_pack_losses_equal_the_pack_run_as_one_causal_sequence(tiny_student_dir, tokenizer, records,
                                                                      attn_implementation, members):
    model = load_model(tiny_student_dir, attn_implementation)
    pack = make_pack([tokenize_sft_example(tokenizer, records[i]) for i in members], tokenizer.eos_token_id)
    batch = packed_batch(pack)
    with torch.no_grad():
        loss, per_token, mask = packed_loss(model, pack, pack_attention="whole_pack")
        # The collated row, no mask, default positions 0..T-1: what Megatron runs without cu_seqlens.
        logits = model(input_ids=batch["tokens"]).logits[0]
    expected = torch.nn.functional.cross_entropy(logits, batch["labels"][0], reduction="none")
    torch.testing.assert_close(per_token, expected, rtol=0, atol=1e-5)
    assert torch.equal(mask, batch["loss_mask"][0])
    assert loss.item() == pytest.approx(((expected * mask).sum() / mask.sum()).item(), abs=1e-5)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_the_two_attentions_agree_on_a_packs_first_example_only(tiny_student_dir, tokenizer, records,
                                                                 attn_implementation):
    model = load_model(tiny_student_dir, attn_implementation)
    samples = [tokenize_sft_example(tokenizer, records[i]) for i in (0, 1)]
    pack = make_pack(samples, tokenizer.eos_token_id)
    with torch.no_grad():
        _, isolated, _ = packed_loss(model, pack, pack_attention="per_example")
        _, whole, _ = packed_loss(model, pack, pack_attention="whole_pack")
    first = len(samples[0]["input_ids"]) - 1
    torch.testing.assert_close(whole[:first], isolated[:first], rtol=0, atol=1e-5)
    assert (whole[first:] - isolated[first:]).abs().max() > 1e-3  # the second example sees the first


# --- schedule and sampling ----------------------------------------------------------------------------------------


def test_cosine_annealing_matches_nemo_by_hand():
    lr = dict(lr=1e-3, min_lr=1e-4, max_steps=10, warmup_steps=2)
    # Warmup (s + 1) / (warmup + 1); then 1e-4 + 0.9e-3 * (1 + cos(pi * (s - 2) / 8)) / 2.
    assert nemo_cosine_annealing_lr(0, **lr) == pytest.approx(1e-3 / 3)
    assert nemo_cosine_annealing_lr(1, **lr) == pytest.approx(2e-3 / 3)
    assert nemo_cosine_annealing_lr(2, **lr) == pytest.approx(1e-3)
    assert nemo_cosine_annealing_lr(6, **lr) == pytest.approx(5.5e-4)
    assert nemo_cosine_annealing_lr(4, **lr) == pytest.approx(1e-4 + 0.9e-3 * (1 + 0.7071067811865476) / 2)
    assert nemo_cosine_annealing_lr(10, **lr) == pytest.approx(1e-4)
    assert nemo_cosine_annealing_lr(11, **lr) == pytest.approx(1e-4)


def test_cosine_annealing_with_constant_steps_is_megatrons_variant():
    lr = dict(lr=1e-3, min_lr=1e-4, max_steps=10, warmup_steps=2, constant_steps=3)
    # Warmup s / warmup (step 0 at lr 0), cosine over 10 - 2 - 3 = 5 steps, then min_lr held.
    assert nemo_cosine_annealing_lr(0, **lr) == 0.0
    assert nemo_cosine_annealing_lr(1, **lr) == pytest.approx(5e-4)
    assert nemo_cosine_annealing_lr(4, **lr) == pytest.approx(6.890576474687264e-4)  # cos(0.4 pi) = 0.30902
    assert nemo_cosine_annealing_lr(7, **lr) == pytest.approx(1e-4)
    assert nemo_cosine_annealing_lr(9, **lr) == pytest.approx(1e-4)


def test_paper_schedule_is_constant():
    assert {nemo_cosine_annealing_lr(s, lr=1e-5, min_lr=1e-5, max_steps=50) for s in range(50)} == {1e-5}


def test_schedule_settings_nemo_would_reject():
    with pytest.raises(UserError, match="above lr"):
        check_schedule(lr=1e-5, min_lr=1e-4, warmup_steps=0, constant_steps=0, max_steps=10)
    with pytest.raises(UserError, match="needs lr > min_lr"):
        check_schedule(lr=1e-5, min_lr=1e-5, warmup_steps=0, constant_steps=2, max_steps=10)


def test_upsampled_draws_are_whole_shuffled_passes():
    draws = pack_draws(3, 4, 5, upsample=True, seed=1234)
    assert draws.shape == (5, 4)
    counts = np.bincount(draws.ravel(), minlength=3)
    assert counts.sum() == 20 and set(counts) == {6, 7}  # 6 full passes plus 2 packs of a seventh
    assert np.array_equal(draws, pack_draws(3, 4, 5, upsample=True, seed=1234))
    assert not np.array_equal(draws, pack_draws(3, 4, 5, upsample=True, seed=1))


def test_epoch_draws_drop_the_last_partial_batch_and_reshuffle():
    draws = pack_draws(10, 4, 6, upsample=False, seed=0)
    epochs = draws.reshape(3, 8)  # 2 steps per epoch, 2 packs left out each time
    for epoch in epochs:
        assert len(set(epoch.tolist())) == 8
    assert not np.array_equal(epochs[0], epochs[1])
    with pytest.raises(UserError, match="exceeds the 3 packs"):
        pack_draws(3, 4, 2, upsample=False, seed=0)


# --- training -----------------------------------------------------------------------------------------------------


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_three_steps_lower_the_loss_and_write_the_model(tmp_path, tiny_student_dir, packed_path):
    pack = np.load(packed_path, allow_pickle=True)[0]
    with torch.no_grad():
        before = packed_loss(load_model(tiny_student_dir), pack)[0].item()
    summary = train(packed_path, tiny_student_dir, tmp_path, **{**TRAIN_ARGS, "max_steps": 3, "global_batch_size": 1,
                                                                "upsample": True}, log_path=tmp_path / "log.jsonl")
    with torch.no_grad():
        after = packed_loss(load_model(tmp_path / "model"), pack)[0].item()
    assert after < before - 0.1

    log = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3]
    assert set(log[0]) == {"step", "loss", "lr", "grad_norm", "tokens"}
    assert log[0]["lr"] == pytest.approx(1e-2 / 2)  # warmup step 0 of 1
    assert summary["steps"] == 3 and summary["tokens"] == sum(r["tokens"] for r in log)
    assert summary["final_loss"] == log[-1]["loss"]
    assert (tmp_path / "model" / "model.safetensors").exists()
    assert (tmp_path / "model" / "tokenizer.json").exists()


def test_step_loss_is_the_mean_of_pack_losses(tmp_path, tiny_student_dir, packed_path):
    packs = np.load(packed_path, allow_pickle=True)
    train(packed_path, tiny_student_dir, tmp_path, **{**TRAIN_ARGS, "max_steps": 1}, log_path=tmp_path / "log.jsonl")
    drawn = pack_draws(len(packs), 3, 1, upsample=True, seed=1234)[0]
    model = load_model(tiny_student_dir)
    with torch.no_grad():
        expected = np.mean([batch_loss(model, packed_batch(packs[i]))[0].item() for i in drawn])
    assert read_log(tmp_path / "log.jsonl")[0]["loss"] == pytest.approx(expected, abs=1e-6)


class Killed(Exception):
    pass


def test_resume_after_a_kill_ends_with_the_same_weights(tmp_path, tiny_student_dir, packed_path, monkeypatch):
    from safetensors.torch import load_file

    args = {**TRAIN_ARGS, "save_interval": 2}
    train(packed_path, tiny_student_dir, tmp_path / "straight", **args)

    real_save = checkpoints.save_checkpoint

    def save_then_die(root, step, model, state):
        real_save(root, step, model, state)
        (root / ".step_3.tmp_half_written").mkdir()  # as if the next save was cut off too
        raise Killed

    monkeypatch.setattr(torch_reference, "save_checkpoint", save_then_die)
    log = tmp_path / "crashed" / "log.jsonl"
    with pytest.raises(Killed):
        train(packed_path, tiny_student_dir, tmp_path / "crashed", **args, log_path=log)
    monkeypatch.setattr(torch_reference, "save_checkpoint", real_save)
    summary = train(packed_path, tiny_student_dir, tmp_path / "crashed", **args, log_path=log)

    assert summary["resumed_from_step"] == 2 and summary["steps"] == 4
    assert [r["step"] for r in read_log(log)] == [1, 2, 3, 4]
    assert not list((tmp_path / "crashed" / "checkpoints").glob(".step_*"))
    straight = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    resumed = load_file(tmp_path / "crashed" / "model" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)

    with pytest.raises(UserError, match="lr=0.01, not 0.02"):
        train(packed_path, tiny_student_dir, tmp_path / "crashed", **{**args, "lr": 2e-2})


def test_average_final_weights_are_the_mean_of_every_saved_checkpoint(tmp_path, tiny_student_dir, packed_path):
    from safetensors.torch import load_file

    args = {**TRAIN_ARGS, "save_interval": 2}
    last = train(packed_path, tiny_student_dir, tmp_path / "last", **args, final_weights="last")
    averaged = train(packed_path, tiny_student_dir, tmp_path / "average", **args, final_weights="average")
    assert (last["final_weights"], averaged["final_weights"]) == ("last step", "average of steps 2, 4")

    saved = [load_file(tmp_path / "average" / "checkpoints" / f"step_{s}" / "model" / "model.safetensors")
             for s in (2, 4)]
    final = load_file(tmp_path / "average" / "model" / "model.safetensors")
    assert final.keys() == saved[0].keys()
    for name in final:
        torch.testing.assert_close(final[name], (saved[0][name] + saved[1][name]) / 2)
    assert any(not torch.equal(final[name], saved[1][name]) for name in final)  # not merely the last step's
    last_weights = load_file(tmp_path / "last" / "model" / "model.safetensors")
    assert all(torch.equal(last_weights[name], saved[1][name]) for name in final)  # same training, same steps


# Pinned on torch 2.13.0 CPU / transformers 5.24: the first losses of the fixed-seed tiny student on the fixed packs.
# A change here means the trainer's numbers moved (loss reduction, masking, shifting, attention, schedule or optimizer).
EXPECTED_FIRST_LOSSES = {"per_example": [5.994550, 5.788887, 5.614902], "whole_pack": [5.994536, 5.789800, 5.613199]}


@pytest.mark.parametrize("pack_attention", ["per_example", "whole_pack"])
def test_first_losses_are_pinned(tmp_path, tiny_student_dir, packed_path, pack_attention):
    train(packed_path, tiny_student_dir, tmp_path, **{**TRAIN_ARGS, "max_steps": 3}, pack_attention=pack_attention,
          log_path=tmp_path / "log.jsonl")
    losses = [r["loss"] for r in read_log(tmp_path / "log.jsonl")]
    assert losses == pytest.approx(EXPECTED_FIRST_LOSSES[pack_attention], rel=1e-4)
