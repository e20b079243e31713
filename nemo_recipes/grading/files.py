"""JSONL in and out for generation files: tolerant of broken UTF-8, and fast on files of hundreds of megabytes.

A model's output can carry broken bytes (a byte-level tokenizer cut mid-character): raw in a file written by one
harness, or as lone-surrogate escapes (``"\\udc80"``) in one written by Python. nemo_recipes.io is strict UTF-8, which
is right for our own artifacts but would refuse a whole benchmark run over one sample. Here a broken byte is read as a
lone surrogate, and a lone surrogate is written as its JSON escape, so the output is valid UTF-8 JSON again.

Graded rows are the input rows plus a few small fields. Re-serialising 64 samples x 256 problems of 10-40 KB text
costs seconds, so a row read from valid UTF-8 is written back as its own bytes with the new fields spliced in
before the closing brace.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from nemo_recipes.errors import UserError
from nemo_recipes.io import atomic_open, parse_jsonl_line


class Row(NamedTuple):
    line_number: int
    data: dict
    raw: bytes | None  # the line as read, when it is valid UTF-8 and can be extended in place


def iter_rows(path: str | os.PathLike, required_keys: Sequence[str] = ()) -> Iterator[Row]:
    """The JSON objects of a JSONL file, naming file, line and key of the first bad line.

    A missing file is reported at the call, not at the first row.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found.")
    return _rows(path, required_keys)


def row_generations(row: Row, key: str, path) -> list[str | None]:
    """A row's samples under `key`: its one string as a list of one, or its list of strings (None for a sample
    that produced nothing)."""
    value = row.data[key]
    texts = value if isinstance(value, list) else [value]
    if not texts or not all(text is None or isinstance(text, str) for text in texts):
        raise UserError(f"{path}:{row.line_number}: '{key}' must be a string or a non-empty list of strings.")
    return texts


def _rows(path: Path, required_keys: Sequence[str]) -> Iterator[Row]:
    with open(path, "rb") as lines:
        for line_number, raw in enumerate(lines, start=1):
            if raw.isspace():
                continue
            try:
                text, clean = raw.decode("utf-8"), True
            except UnicodeDecodeError:
                text, clean = raw.decode("utf-8", errors="surrogateescape"), False
            data = parse_jsonl_line(text, path, line_number, required_keys)
            yield Row(line_number, data, raw if clean and data else None)


def write_extended_rows(path: str | os.PathLike, rows: Sequence[Row], additions: Sequence[dict]) -> int:
    """Write each row with its additions (new keys win), atomically: temp file, fsync, rename."""
    with atomic_open(path, "wb") as out:
        for row, added in zip(rows, additions, strict=True):
            if row.raw is not None and not added.keys() & row.data.keys():
                # `{...` up to its closing brace, then `, "key": value...}`: the additions minus their `{`.
                out.write(memoryview(row.raw)[: row.raw.rindex(b"}")])
                out.write(b", " + _encode(added)[1:] + b"\n")
            else:
                out.write(_encode({**row.data, **added}) + b"\n")
    return len(rows)


def _encode(obj: dict) -> bytes:
    # backslashreplace turns a lone surrogate into the six characters of its JSON escape: it only ever occurs
    # inside a JSON string, where that escape reads back as the same character.
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", errors="backslashreplace")
