import numpy as np
import pytest
from conftest import sft_record, write_jsonl

from nemo_recipes.errors import UserError
from nemo_recipes.packing import nemo_loss_mask, pack_lengths, pack_sft_file, tokenize_sft_example
from nemo_recipes.training.packed_data import label_mask


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


def ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


# --- tokenization ------------------------------------------------------------------------------------------------


def test_prompt_and_answer_are_tokenized_separately(tokenizer):
    record = sft_record("a", "What is 12 + 30?", "We add: \\boxed{42}.")
    sample = tokenize_sft_example(tokenizer, record)
    assert sample["input_ids"] == ids(tokenizer, record["input"]) + ids(tokenizer, record["output"])
    assert sample["answer_start_idx"] == len(ids(tokenizer, record["input"]))
    assert sample["answer_ids"] == ids(tokenizer, record["output"])
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == sample["input_ids"][0]


def test_piecewise_tokenization_differs_where_a_merge_crosses_the_boundary(tokenizer):
    record = {"input": "the answer is hel", "output": "lo world"}
    sample = tokenize_sft_example(tokenizer, record)
    concatenated = ids(tokenizer, "the answer is hello world")
    assert tokenizer.decode(sample["input_ids"]) == tokenizer.decode(concatenated)
    assert sample["input_ids"] != concatenated  # NeMo never lets "hel" + "lo" merge into "hello"
    assert sample["input_ids"][sample["answer_start_idx"] :] == ids(tokenizer, "lo world")


def test_values_lose_spaces_but_keep_newlines(tokenizer):
    sample = tokenize_sft_example(tokenizer, {"input": "  hello\n ", "output": " world\n  "})
    assert sample["input_ids"] == ids(tokenizer, "hello\n") + ids(tokenizer, "world\n")


def test_literal_template_text_is_its_own_piece(tokenizer):
    # A byte-level BPE is space-sensitive, so the space before a placeholder stays with the value.
    sample = tokenize_sft_example(tokenizer, {"input": "12", "output": "42"}, prompt_template="Q:{input}\\nA: {output}")
    assert sample["input_ids"] == ids(tokenizer, "Q:") + ids(tokenizer, "12") + ids(tokenizer, "\nA:") + ids(
        tokenizer, " 42"
    )
    assert sample["answer_start_idx"] == len(sample["input_ids"]) - len(ids(tokenizer, " 42"))


def test_add_eos_appends_the_eos_token_and_add_bos_needs_one(tokenizer):
    record = {"input": "hello", "output": "world"}
    with_eos = tokenize_sft_example(tokenizer, record, add_eos=True)
    assert with_eos["input_ids"][-1] == tokenizer.eos_token_id
    assert with_eos["input_ids"][:-1] == tokenize_sft_example(tokenizer, record)["input_ids"]
    with pytest.raises(UserError, match="no bos token"):
        tokenize_sft_example(tokenizer, record, add_bos=True)


def test_label_placeholder_must_close_the_template(tokenizer):
    with pytest.raises(UserError, match="must end with the label placeholder"):
        tokenize_sft_example(tokenizer, {"input": "a", "output": "b"}, prompt_template="{output}{input}")


def test_loss_mask_covers_the_answer_except_eos(tokenizer):
    record = {"input": "hello", "output": "world<|endoftext|><|im_end|>"}
    sample = tokenize_sft_example(tokenizer, record)
    mask = nemo_loss_mask(sample["input_ids"], sample["answer_start_idx"], tokenizer.eos_token_id, alignment="token")
    start = sample["answer_start_idx"]
    assert not mask[:start].any()
    answer = np.array(sample["input_ids"][start:])
    assert mask[start:].tolist() == (answer != tokenizer.eos_token_id).tolist()
    assert mask[-1]  # <|im_end|> is trained: it is the stop token at inference
    assert (answer == tokenizer.eos_token_id).sum() == 1 and mask[start:].sum() == len(answer) - 1


@pytest.mark.parametrize("alignment", ["label", "token"])
def test_each_alignment_trains_exactly_the_answer_tokens_when_read_as_its_nemo_reads_it(tokenizer, alignment):
    sample = tokenize_sft_example(tokenizer, {"input": "hello there", "output": "world<|endoftext|> again"})
    ids, start = sample["input_ids"], sample["answer_start_idx"]
    mask = nemo_loss_mask(ids, start, tokenizer.eos_token_id, alignment)
    read = label_mask({"input_ids": ids, "loss_mask": mask.tolist(), "seq_start_id": [0]}, alignment)
    trained_labels = [token for token, weighted in zip(ids[1:], read) if weighted]
    assert trained_labels == [token for token in ids[start:] if token != tokenizer.eos_token_id]
    if alignment == "label":  # NeMo 2.2 reads mask[s:e-1]: the input before the first answer token carries its flag
        assert mask[start - 1] and not mask[start - 2] and not mask[-1]


def test_an_unknown_loss_mask_alignment_is_one_sentence(tmp_path, tiny_tokenizer_dir):
    write_jsonl(tmp_path / "sft.jsonl", [sft_record("p0", "What is 1 + 1?", "2")])
    with pytest.raises(UserError, match="sft.loss_mask_alignment 'input' is not one of label, token"):
        pack_sft_file(tmp_path / "sft.jsonl", tiny_tokenizer_dir, tmp_path / "out", pack_size=256,
                      loss_mask_alignment="input")


# --- packing algorithm --------------------------------------------------------------------------------------------


def textbook_first_fit(lengths, capacity, order):
    packs, used = [], []
    for i in order:
        for p in range(len(packs)):
            if used[p] + lengths[i] <= capacity:
                packs[p].append(int(i))
                used[p] += lengths[i]
                break
        else:
            packs.append([int(i)])
            used.append(lengths[i])
    return packs


@pytest.mark.parametrize("algorithm", ["first_fit_decreasing", "first_fit_shuffle"])
def test_pack_lengths_is_exactly_first_fit_in_its_order(algorithm):
    rng = np.random.default_rng(0)
    for trial in range(50):
        capacity = int(rng.integers(1, 64))
        lengths = rng.integers(0, capacity + 1, size=int(rng.integers(1, 200)))
        if algorithm == "first_fit_decreasing":
            order = np.argsort(-lengths, kind="stable")
        else:  # NeMo's: the lengths shortest first, shuffled by NumPy's legacy RNG
            order = np.argsort(lengths, kind="stable")[np.random.RandomState(trial).permutation(lengths.size)]
        assert pack_lengths(lengths, capacity, algorithm, seed=trial) == textbook_first_fit(lengths, capacity, order)


def test_pack_lengths_places_every_item_once_within_capacity():
    lengths = np.random.default_rng(1).integers(1, 1000, size=5000)
    packs = pack_lengths(lengths, 2048, "first_fit_decreasing")
    assert sorted(i for pack in packs for i in pack) == list(range(lengths.size))
    assert max(lengths[pack].sum() for pack in packs) <= 2048


def test_decreasing_fills_at_least_as_well_as_shuffle():
    lengths = np.random.default_rng(2).integers(16, 1500, size=3000)
    decreasing = len(pack_lengths(lengths, 2048, "first_fit_decreasing"))
    shuffled = [len(pack_lengths(lengths, 2048, "first_fit_shuffle", seed=s)) for s in range(3)]
    assert decreasing <= min(shuffled)
    assert lengths.sum() / (decreasing * 2048) > 0.99


def test_shuffle_is_seeded():
    lengths = np.random.default_rng(3).integers(1, 100, size=300)
    assert pack_lengths(lengths, 256, "first_fit_shuffle", 5) == pack_lengths(lengths, 256, "first_fit_shuffle", 5)
    assert pack_lengths(lengths, 256, "first_fit_shuffle", 5) != pack_lengths(lengths, 256, "first_fit_shuffle", 6)


def test_pack_lengths_rejects_items_longer_than_the_pack():
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        pack_lengths(np.array([3, 11]), 10)


# --- the packed file ----------------------------------------------------------------------------------------------


def records_of_varied_length(count):
    words = ["First we add the numbers.", "Wait, let me verify that again.", "hello world", "so 12 + 30 = 42."]
    return [
        sft_record(f"p{i}", f"What is {i} + {i}?", " ".join(words[(i + j) % 4] for j in range(1 + i % 7)))
        for i in range(count)
    ]


def split_pack(pack):
    bounds = list(pack["seq_start_id"]) + [len(pack["input_ids"])]
    return [(pack["input_ids"][s:e], pack["loss_mask"][s:e]) for s, e in zip(bounds[:-1], bounds[1:])]


def test_packed_file_has_nemo_structure_and_every_sample_once(tmp_path, tiny_tokenizer_dir, tokenizer, capsys):
    records = records_of_varied_length(30)
    write_jsonl(tmp_path / "sft.jsonl", records)
    result = pack_sft_file(tmp_path / "sft.jsonl", tiny_tokenizer_dir, tmp_path / "out", pack_size=256, seed=3)

    assert result.path == tmp_path / "out" / "packed_256_seed3.npy"
    packs = np.load(result.path, allow_pickle=True)
    assert packs.dtype == object and packs.ndim == 1 and len(packs) == result.num_packs
    for pack in packs:
        assert set(pack) == {"input_ids", "loss_mask", "seq_start_id"}
        assert all(type(t) is int for t in pack["input_ids"])
        assert all(type(m) is bool for m in pack["loss_mask"])
        assert pack["seq_start_id"][0] == 0 and len(pack["loss_mask"]) == len(pack["input_ids"])
        assert len(pack["input_ids"]) - len(pack["seq_start_id"]) <= 256  # n - 1 positions per sample

    expected = []
    for record in records:
        sample = tokenize_sft_example(tokenizer, record)
        mask = nemo_loss_mask(sample["input_ids"], sample["answer_start_idx"], tokenizer.eos_token_id).tolist()
        expected.append((sample["input_ids"], mask))
    found = [piece for pack in packs for piece in split_pack(pack)]
    assert sorted(found) == sorted(expected)

    positions = sum(len(ids_) - 1 for ids_, _ in expected)
    assert result.num_sequences == 30
    assert result.efficiency == pytest.approx(positions / (result.num_packs * 256))
    assert result.avg_sequences_per_pack == pytest.approx(30 / result.num_packs)
    assert result.longest_sequence == max(len(ids_) for ids_, _ in expected)
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and f"{100 * result.efficiency:.2f}%" in printed[0]


def test_context_parallel_pads_each_sample_with_masked_eos(tmp_path, tiny_tokenizer_dir, tokenizer):
    records = records_of_varied_length(12)
    write_jsonl(tmp_path / "sft.jsonl", records)
    result = pack_sft_file(
        tmp_path / "sft.jsonl", tiny_tokenizer_dir, tmp_path, pack_size=512, context_parallel_size=16
    )
    eos = tokenizer.eos_token_id
    pieces = [piece for pack in np.load(result.path, allow_pickle=True) for piece in split_pack(pack)]
    originals = {tuple(tokenize_sft_example(tokenizer, r)["input_ids"]) for r in records}
    for piece_ids, piece_mask in pieces:
        assert (len(piece_ids) - 1) % 32 == 0  # max(16, 2 * CP) positions per sample after the shift
        unpadded = tuple(piece_ids[: len(piece_ids) - next(i for i, t in enumerate(reversed(piece_ids)) if t != eos)])
        assert unpadded in originals
        assert not any(piece_mask[len(unpadded) :])
        read = label_mask({"input_ids": piece_ids, "loss_mask": piece_mask, "seq_start_id": [0]})
        assert eos not in [token for token, weighted in zip(piece_ids[1:], read) if weighted]  # no pad is trained


def test_too_long_sample_is_refused_by_id_and_lengths(tmp_path, tiny_tokenizer_dir, tokenizer):
    records = records_of_varied_length(3)
    records[1]["output"] = "hello world " * 200
    write_jsonl(tmp_path / "sft.jsonl", records)
    n = len(tokenize_sft_example(tokenizer, records[1])["input_ids"])
    with pytest.raises(UserError) as error:
        pack_sft_file(tmp_path / "sft.jsonl", tiny_tokenizer_dir, tmp_path, pack_size=128)
    message = str(error.value)
    assert "'p1'" in message and f"{n} tokens" in message and f"{n - 1} positions" in message and "128" in message
    assert not list(tmp_path.glob("*.npy"))


def test_the_recipe_packs_as_nemo_skills_did_first_fit_in_nemos_shuffled_order():
    from nemo_recipes.config import compose_config

    for experiment in ("main", "demo"):
        assert compose_config([f"experiment={experiment}"]).sft.packing_algorithm == "first_fit_shuffle"
    lengths = np.random.default_rng(4).integers(1, 100, size=300)
    assert pack_lengths(lengths, 256) == pack_lengths(lengths, 256, "first_fit_shuffle", seed=0)
