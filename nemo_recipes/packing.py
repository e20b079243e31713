"""Sequence packing of the SFT jsonl into NeMo's single-pickle `packed_{L}_seed{S}.npy`.

    from nemo_recipes.packing import pack_sft_file
    pack_sft_file("runs/main/select/sft.jsonl", "/models/Qwen2.5-32B", "runs/main/pack", pack_size=16384)

Faithful to NeMo v2.1.0-v2.2.0 (NeMo-Aligner 0.7.0 pins 2.1.0; the NGC 25.02 image has 2.2.0), read in
`nemo/collections/nlp/data/language_modeling/megatron/gpt_sft_dataset.py` (GPTSFTDataset._process_example,
GPTSFTPackedDataset._build_loss_mask), `nemo/utils/sequence_packing_utils.py` and
`scripts/nlp_language_modeling/prepare_packed_ft_dataset.py`:

* tokenization: the prompt template is split into literal and placeholder pieces, each piece tokenized on its own,
  values `.strip(' ')`-ed; `answer_start_idx` is the number of context tokens;
* a sample of n tokens occupies n - 1 positions of a pack (its inputs drop the last token, its labels the first);
* trained tokens: `idx >= answer_start_idx and token != eos_id`, stored where the reading NeMo looks for them
  (`nemo_loss_mask`: NeMo 2.2 reads the mask one position earlier than 2.1 did);
* with context parallelism each sample is padded with eos to `ceil(n, max(16, 2*CP)) + 1` tokens;
* output: an object array of dicts `input_ids` (ints), `loss_mask` (bools), `seq_start_id` (offsets), one per pack.

The packing algorithm itself is ours and much faster than NeMo's (a max segment tree over bins instead of summing
every open bin for every sample); it makes exactly the bins that NeMo's first-fit makes for the same order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nemo_recipes.errors import UserError
from nemo_recipes.io import atomic_open, read_jsonl

PACKING_ALGORITHMS = ("first_fit_decreasing", "first_fit_shuffle")
# Where the packed loss mask stores "token j is trained" (nemo_loss_mask). "label": at j - 1, beside the input that
# predicts it -- what GPTSFTPackedDataset reads from NeMo 2.2 on, so the default (the NGC 25.02 image has 2.2.0);
# "token": at j itself -- what NeMo 2.1 reads.
LOSS_MASK_ALIGNMENTS = ("label", "token")
DEFAULT_LOSS_MASK_ALIGNMENT = "label"


@dataclass(frozen=True)
class PackResult:
    path: Path
    num_packs: int
    num_sequences: int
    longest_sequence: int  # tokens of the longest sample, before any context-parallel padding
    efficiency: float  # filled positions / (num_packs * pack_size), as NeMo logs it
    avg_sequences_per_pack: float


# ---------------------------------------------------------------------------------------------------------------
# Tokenization (GPTSFTDataset._process_example with no truncation)


def tokenize_sft_example(
    tokenizer,
    example: dict,
    *,
    prompt_template: str = "{input}{output}",
    label_key: str = "output",
    add_eos: bool = False,
    add_bos: bool = False,
) -> dict:
    """Tokenize one prompt/response record exactly as NeMo's GPTSFTDataset does.

    Returns `input_ids`, `answer_start_idx`, `context_ids`, `answer_ids`. No truncation: pack_sft_file rejects
    samples that do not fit instead of silently cutting their prompt.
    """
    # NeMo unescapes the template because "\n" arrives escaped from the command line.
    template = prompt_template.encode("utf-8").decode("unicode_escape")
    keys = re.findall(r"{(.*?)}", template)
    if not template.endswith(f"{{{label_key}}}"):
        raise UserError(f"prompt_template {prompt_template!r} must end with the label placeholder {{{label_key}}}.")
    for key in keys:
        if key not in example:
            raise UserError(f"record {example.get('id', '?')!r} has no key '{key}' required by the prompt_template.")

    values = {key: str(example[key]).strip(" ") for key in keys}
    pieces = _separate_template(template, values, _is_space_sensitive(tokenizer))
    piece_ids = [_text_to_ids(tokenizer, piece) for piece in pieces]

    context_ids = [token for ids in piece_ids[:-1] for token in ids]
    answer_ids = piece_ids[-1]
    if add_bos:
        context_ids = [_special_id(tokenizer, "bos")] + context_ids
    input_ids = context_ids + answer_ids
    if add_eos:
        input_ids = input_ids + [_special_id(tokenizer, "eos")]
    return {
        "input_ids": input_ids,
        "answer_start_idx": len(context_ids),
        "context_ids": context_ids,
        "answer_ids": answer_ids,
    }


def nemo_loss_mask(input_ids, answer_start_idx: int, eos_id: int,
                   alignment: str = DEFAULT_LOSS_MASK_ALIGNMENT) -> np.ndarray:
    """The packed mask of one sample: its answer tokens are trained, except any eos (which is also the CP pad).

    The trained tokens are the same for every NeMo; where the mask says so is not. NeMo 2.1 weights the labels
    input_ids[s+1:e] with mask[s+1:e] ("token"); NeMo 2.2 with mask[s:e-1] ("label", mask[i] is token i+1's) while
    its own packer still writes the 2.1 mask -- so NeMo 2.2 alone skips every answer's first token and, with CP
    padding, trains the first pad. NeMo 2.3 moved its packer's start one earlier; this mask is that, but also
    never trains an eos.
    """
    check_loss_mask_alignment(alignment)
    ids = np.asarray(input_ids)
    trained = (np.arange(len(ids)) >= answer_start_idx) & (ids != eos_id)
    return trained if alignment == "token" else np.append(trained[1:], False)


def check_loss_mask_alignment(alignment: str) -> None:
    if alignment not in LOSS_MASK_ALIGNMENTS:
        raise UserError(f"sft.loss_mask_alignment '{alignment}' is not one of {', '.join(LOSS_MASK_ALIGNMENTS)}.")


def _separate_template(template: str, values: dict, space_sensitive: bool) -> list[str]:
    """Split the template into literal text and filled placeholders (GPTSFTDataset._separate_template)."""
    parts = [s for s in re.split("( *?{.+?})", template) if s]
    if not space_sensitive:
        # A tokenizer that swallows one leading space loses nothing if we drop it here.
        parts = [s[1:] if s[0] == " " else s for s in parts]
    pieces = []
    for part in parts:
        name = part.lstrip(" ")
        left_spaces = " " * (len(part) - len(name))
        is_placeholder = name.startswith("{") and name.endswith("}") and name[1:-1] in values
        pieces.append(left_spaces + (values[name[1:-1]] if is_placeholder else name))
    return pieces


def _text_to_ids(tokenizer, text: str) -> list[int]:
    # NeMo's AutoTokenizer.text_to_ids: tokenize then convert, so no special tokens are ever added.
    return tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))


def _is_space_sensitive(tokenizer) -> bool:
    return _text_to_ids(tokenizer, "x y") != _text_to_ids(tokenizer, "x") + _text_to_ids(tokenizer, "y")


def _special_id(tokenizer, kind: str) -> int:
    token_id = getattr(tokenizer, f"{kind}_token_id", None)
    if token_id is None:
        raise UserError(f"the tokenizer has no {kind} token, so add_{kind}=True cannot be honoured.")
    return token_id


# ---------------------------------------------------------------------------------------------------------------
# Packing algorithm


def pack_lengths(
    lengths: np.ndarray, pack_size: int, algorithm: str = "first_fit_shuffle", seed: int = 0
) -> list[list[int]]:
    """Assign items of the given lengths to packs of capacity `pack_size`; returns the item indices of each pack.

    `first_fit_decreasing` visits items longest first (ties in input order), `first_fit_shuffle` in NeMo's random
    order for `seed` (see below); each item goes into the first pack with room. Packs are numbered in the order they
    were opened, and list their items in the order they were placed. O(n log n).

    NeMo's create_packing_strategy expands a length histogram (so: shortest first) and first_fit_shuffle shuffles
    that list with NumPy's global legacy RNG; we take the same order from np.random.RandomState(seed), so after
    np.random.seed(seed) NeMo makes packs of exactly our packs' lengths. NeMo's own script never seeds that RNG.
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or (lengths.size and not np.issubdtype(lengths.dtype, np.integer)):
        raise ValueError("lengths must be a 1-D array of integers.")
    if pack_size <= 0:
        raise ValueError(f"pack_size must be positive, got {pack_size}.")
    if lengths.size == 0:
        return []
    if lengths.min() < 0 or lengths.max() > pack_size:
        raise ValueError(f"every length must lie in [0, {pack_size}], found {lengths.min()}..{lengths.max()}.")

    if algorithm == "first_fit_decreasing":
        order = np.argsort(-lengths.astype(np.int64), kind="stable")
    elif algorithm == "first_fit_shuffle":
        shortest_first = np.argsort(lengths, kind="stable")
        order = shortest_first[np.random.RandomState(seed).permutation(lengths.size)]
    else:
        raise ValueError(f"unknown packing algorithm {algorithm!r}; choose one of {', '.join(PACKING_ALGORITHMS)}.")

    pack_of = _first_fit(lengths[order], pack_size)
    by_pack = np.argsort(pack_of, kind="stable")
    items = order[by_pack].tolist()
    ends = np.cumsum(np.bincount(pack_of)).tolist()
    return [items[start:end] for start, end in zip([0] + ends[:-1], ends)]


def _first_fit(ordered_lengths: np.ndarray, capacity: int) -> np.ndarray:
    """Pack index of each item, visiting items in the given order.

    A max segment tree over pack slots holds each pack's free space (-1 for packs not opened yet), so "the first
    pack with room for L" is one walk down the tree. A run of equal lengths is placed in bulk: the first pack with
    room takes as many as fit, and when none has room the rest of the run fills brand-new packs.
    """
    n = ordered_lengths.size
    pack_of = np.empty(n, dtype=np.int64)
    size = 1 << max(1, (n - 1).bit_length())
    free = [-1] * (2 * size)
    num_packs = 0

    run_starts = [0] + (np.flatnonzero(np.diff(ordered_lengths)) + 1).tolist()
    run_ends = run_starts[1:] + [n]
    run_lengths = ordered_lengths[run_starts].tolist()

    for start, end, length in zip(run_starts, run_ends, run_lengths):
        i = start
        while i < end and free[1] >= length:
            node = 1
            while node < size:
                node <<= 1
                if free[node] < length:
                    node += 1
            room = free[node]
            count = end - i if length == 0 else min(end - i, room // length)
            if count == 1:
                pack_of[i] = node - size
            else:
                pack_of[i : i + count] = node - size
            _set_free(free, node, room - count * length)
            i += count
        if i == end:
            continue
        per_pack = end - i if length == 0 else capacity // length
        if end - i <= per_pack:  # the common case: the rest of the run fits in one new pack
            pack_of[i:end] = num_packs
            _set_free(free, size + num_packs, capacity - (end - i) * length)
            num_packs += 1
            continue
        placed = np.arange(end - i) // per_pack
        pack_of[i:end] = num_packs + placed
        for fill in np.bincount(placed).tolist():
            _set_free(free, size + num_packs, capacity - fill * length)
            num_packs += 1
    return pack_of


def _set_free(free: list, node: int, value: int) -> None:
    free[node] = value
    while node > 1:
        sibling = free[node ^ 1]
        if sibling > value:
            value = sibling
        node >>= 1
        if free[node] == value:
            return
        free[node] = value


# ---------------------------------------------------------------------------------------------------------------
# The packed file


def pack_sft_file(
    jsonl_path,
    tokenizer_dir,
    output_dir,
    *,
    pack_size: int,
    seed: int = 0,
    algorithm: str = "first_fit_shuffle",
    context_parallel_size: int = 1,
    prompt_template: str = "{input}{output}",
    add_eos: bool = False,
    loss_mask_alignment: str = DEFAULT_LOSS_MASK_ALIGNMENT,
) -> PackResult:
    """Tokenize the SFT jsonl with the student's tokenizer, pack it, and write `packed_{pack_size}_seed{seed}.npy`."""
    from nemo_recipes.tokenizer import load_tokenizer

    if algorithm not in PACKING_ALGORITHMS:
        raise UserError(f"packing algorithm {algorithm!r} is not one of {', '.join(PACKING_ALGORITHMS)}.")
    if context_parallel_size < 1:
        raise UserError(f"context_parallel_size must be at least 1, got {context_parallel_size}.")
    check_loss_mask_alignment(loss_mask_alignment)
    records = read_jsonl(jsonl_path, required_keys=re.findall(r"{(.*?)}", prompt_template))
    if not records:
        raise UserError(f"{jsonl_path}: no records to pack.")
    tokenizer = load_tokenizer(str(tokenizer_dir))
    eos_id = _special_id(tokenizer, "eos")

    samples = [tokenize_sft_example(tokenizer, r, prompt_template=prompt_template, add_eos=add_eos) for r in records]
    longest = max(len(s["input_ids"]) for s in samples)
    for line, (record, sample) in enumerate(zip(records, samples), start=1):
        n = len(sample["input_ids"])
        if n - 1 > pack_size:
            raise UserError(
                f"{jsonl_path}: record {record.get('id', f'on line {line}')!r} is {n} tokens long "
                f"({n - 1} positions after the next-token shift), more than pack_size {pack_size}."
            )
    if context_parallel_size > 1:
        for sample in samples:
            _pad_for_context_parallel(sample, pack_size, context_parallel_size, eos_id)

    lengths = np.array([len(s["input_ids"]) - 1 for s in samples], dtype=np.int64)
    assignments = pack_lengths(lengths, pack_size, algorithm, seed)
    packs = [_fill_pack([samples[i] for i in members], eos_id, loss_mask_alignment) for members in assignments]

    path = Path(output_dir) / f"packed_{pack_size}_seed{seed}.npy"
    _save_object_array(path, packs)
    result = PackResult(
        path=path,
        num_packs=len(packs),
        num_sequences=len(samples),
        longest_sequence=longest,
        efficiency=float(lengths.sum()) / (len(packs) * pack_size),
        avg_sequences_per_pack=len(samples) / len(packs),
    )
    print(
        f"packed {result.num_sequences} sequences into {result.num_packs} packs of {pack_size}: "
        f"{100 * result.efficiency:.2f}% full, {result.avg_sequences_per_pack:.3f} sequences per pack -> {path}"
    )
    return result


def _pad_for_context_parallel(sample: dict, pack_size: int, cp_size: int, pad_id: int) -> None:
    # Transformer Engine splits every sequence into 2*CP chunks, so each one's n - 1 positions must divide evenly;
    # NeMo pads to a multiple of max(16, 2*CP), capped at the pack size, plus the one token the shift removes.
    multiple = max(16, 2 * cp_size)
    n = len(sample["input_ids"])
    padded = min(pack_size, -(-n // multiple) * multiple) + 1
    sample["input_ids"] = sample["input_ids"] + [pad_id] * (padded - n)


def _fill_pack(members: list[dict], eos_id: int, alignment: str) -> dict:
    input_ids, loss_mask, seq_start_id = [], [], []
    for sample in members:
        seq_start_id.append(len(input_ids))
        input_ids.extend(sample["input_ids"])
        loss_mask.extend(nemo_loss_mask(sample["input_ids"], sample["answer_start_idx"], eos_id, alignment).tolist())
    return {"input_ids": input_ids, "loss_mask": loss_mask, "seq_start_id": seq_start_id}


def _save_object_array(path: Path, packs: list[dict]) -> None:
    array = np.empty(len(packs), dtype=object)
    array[:] = packs
    with atomic_open(path, "wb") as f:
        np.save(f, array, allow_pickle=True)
