"""Trace structure of any JSONL file of generations, ours or another harness's: did the model enter reasoning mode?

    python -m nemo_recipes.traces GENERATIONS.jsonl [MORE.jsonl ...] [--base BASE.jsonl] [--sft-set SFT.jsonl]
        [--generation-key generation] [--tokens-key num_generated_tokens] [--finish-key finish_reason]
        [--tokenizer DIR] [--output traces.json] [key=value ...]

Each file is one model's generations; the generation field holds one string or a list of strings (several samples
per row), the token and finish-reason fields a value or a list beside it. Without token counts, --tokenizer (a
Hugging Face tokenizer folder) counts them. --base names the base model's generations, whose median length the
verdict compares with; --sft-set an SFT set (`output` and `num_tokens`, as the select stage writes it), whose marker
profile each file's is compared with. The markers and the verdict rule are the pipeline's config (`markers`,
`traces.reasoning_mode`); `key=value` overrides them as on the pipeline's command line. Prints one line per file,
then, as the last line of stdout, one JSON object with every number; bad input is one sentence, `error: ...`, and
exit status 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence

from nemo_recipes.errors import UserError
from nemo_recipes.grading.files import iter_rows, row_generations
from nemo_recipes.traces.analysis import describe, divergence, measure, verdict
from nemo_recipes.traces.markers import markers_from_config

_OVERRIDE = re.compile(r"[+~]?[A-Za-z_][\w.]*=")  # a Hydra key=value, told apart from a file name



def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [arg for arg in argv if _OVERRIDE.match(arg)]
    args = _parser().parse_args([arg for arg in argv if not _OVERRIDE.match(arg)])
    try:
        summary = analyse_files(args.inputs, base=args.base, sft_set=args.sft_set, overrides=overrides,
                                generation_key=args.generation_key, tokens_key=args.tokens_key,
                                finish_key=args.finish_key, tokenizer=args.tokenizer)
        if args.output:
            from nemo_recipes.io import write_json

            write_json(args.output, summary)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, traces in summary["sets"].items():
        tokens = traces["tokens"]
        verdict_text = f"; reasoning mode? {describe(traces['verdict'])}" if "verdict" in traces else ""
        print(f"{name}: {traces['samples']} samples, median {tokens['median']:.0f} tokens, "
              f"markers in {traces['with_markers']:.0%}{verdict_text}")
    print(json.dumps(summary))
    return 0


def analyse_files(inputs: Sequence[str], *, base: str | None = None, sft_set: str | None = None,
                  overrides: Sequence[str] = (), generation_key: str = "generation",
                  tokens_key: str = "num_generated_tokens", finish_key: str = "finish_reason",
                  tokenizer: str | None = None) -> dict:
    """The measures of each file (and of --base and --sft-set), with each model's verdict: what the command prints."""
    from omegaconf import OmegaConf

    from nemo_recipes.config import compose_config

    cfg = compose_config(list(overrides))
    markers = markers_from_config(cfg.markers)
    rule = cfg.traces.reasoning_mode
    count = _token_counter(tokenizer)
    files = list(dict.fromkeys([*([base] if base else []), *inputs]))
    sets = {path: measure(_samples(path, generation_key, tokens_key, finish_key, count), markers) for path in files}
    reference = measure(_samples(sft_set, "output", "num_tokens", None, count), markers) if sft_set else None
    for path, traces in sets.items():
        traces["divergence_from_sft_set"] = (divergence(traces["marker_counts"], reference["marker_counts"])
                                             if reference else None)
        traces["verdict"] = verdict(traces, sets[base] if base and path != base else None, rule)
    if reference:
        sets[f"{sft_set} (SFT set)"] = reference
    return {"sets": sets, "markers": OmegaConf.to_container(cfg.markers, resolve=True),
            "rule": OmegaConf.to_container(rule, resolve=True)}


def _samples(path: str, text_key: str, tokens_key: str, finish_key: str | None, count):
    """(text, tokens, finish_reason) of every sample in the file, a row's list of samples one by one."""
    for row in iter_rows(path, (text_key,)):
        texts = row_generations(row, text_key, path)
        tokens = row.data.get(tokens_key)
        if tokens is None:
            if count is None:
                raise UserError(f"{path}:{row.line_number}: no '{tokens_key}'; pass --tokenizer (a Hugging Face "
                                f"tokenizer folder) to count the tokens, or --tokens-key to name the field.")
            tokens = count([text or "" for text in texts])
        finish = row.data.get(finish_key) if finish_key else None
        for position, text in enumerate(texts):
            yield (text or "", _at(tokens, position, path, row.line_number, tokens_key),
                   _at(finish, position, path, row.line_number, finish_key))


def _at(value, position: int, path: str, line_number: int, key: str):
    """A row's value for its `position`-th sample: the list entry, or the scalar every sample shares."""
    if not isinstance(value, list):
        return value
    if position >= len(value):
        raise UserError(f"{path}:{line_number}: '{key}' has {len(value)} entries, fewer than the generations.")
    return value[position]


def _token_counter(tokenizer: str | None):
    if tokenizer is None:
        return None
    from nemo_recipes.tokenizer import token_counter

    return token_counter(tokenizer)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nemo_recipes.traces",
        description="Trace structure of JSONL generation files -- lengths, truncation, boxed answers, reflection and "
                    "verification markers -- and whether each model is in reasoning mode.",
        epilog="Trailing key=value arguments override the pipeline's config, e.g. markers.reflection=[wait,hmm+] "
               "traces.reasoning_mode.min_length_vs_base=3.")
    parser.add_argument("inputs", nargs="+", help="JSONL files of generations, one model each")
    parser.add_argument("--base", help="the base model's generations: the length the verdict compares with")
    parser.add_argument("--sft-set", help="an SFT set (output, num_tokens): the marker profile each file is compared "
                                          "with")
    parser.add_argument("--generation-key", default="generation", help="field holding a string or a list of them")
    parser.add_argument("--tokens-key", default="num_generated_tokens", help="field holding each sample's tokens")
    parser.add_argument("--finish-key", default="finish_reason", help="field holding why generation stopped "
                                                                      "('length': truncated)")
    parser.add_argument("--tokenizer", help="Hugging Face tokenizer folder to count tokens where the field is missing")
    parser.add_argument("--output", help="also write the JSON summary to this file")
    return parser
