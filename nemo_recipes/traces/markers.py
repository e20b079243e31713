"""The reasoning markers of config `markers`: found in traces by the analysis, removed by selection=no_keywords.

Each kind (reflection, verification, ...) is a list of regular expressions, written in lower case and matched as
whole words in text of any case (ASCII letters). Where two could match at the same place, the earlier in the config
wins, and a match is never counted twice ("but wait" is one reflection marker, not two).

A paper-scale run has gigabytes of traces. Python's `re` has no fast path for a case-insensitive alternation
(2 MB/s on long traces), but finds one lower-case pattern at hundreds of MB/s: so each pattern is searched on its own
in the lowered text and the matches are merged as the alternation would have taken them.
"""

from __future__ import annotations

import dataclasses
import functools
import re

from nemo_recipes.errors import UserError

# What the keyword ablation removes along with a marker: the punctuation and spaces that followed it ("Wait, ").
_TRAILING = re.compile(r"[,.!:]?[ \t]*")
_ESCAPE = re.compile(r"\\.")


@dataclasses.dataclass(frozen=True)
class Markers:
    patterns: tuple[tuple[str, str], ...]  # (kind, regular expression), in config order
    _compiled: tuple[re.Pattern, ...]

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(kind for kind, _ in self.patterns))

    def find(self, text: str) -> list[int]:
        """The index in `patterns` of each marker in `text`, in order of appearance."""
        return [index for _, _, index in self._matches(text)]

    def remove(self, text: str) -> str:
        """`text` without its markers and the punctuation and spaces right after each; the rest untouched."""
        kept, position = [], 0
        for start, end, _ in self._matches(text):
            kept.append(text[position:start])
            position = _TRAILING.match(text, end).end()
        return "".join(kept) + text[position:]

    def _matches(self, text: str) -> list[tuple[int, int, int]]:
        """(start, end, pattern index) of each marker, left to right, none overlapping."""
        # bytes.lower() lowers ASCII letters only, so every character keeps its place (str.lower() may not: "İ").
        lowered = text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")
        found = []
        for index, compiled in enumerate(self._compiled):
            for match in compiled.finditer(lowered):
                start = match.start()
                if _is_word(lowered[start - 1] if start else " ") != _is_word(lowered[start]):  # the leading \b
                    found.append((start, match.end(), index))
        found.sort()  # by place, then config order: the alternation's choice where two start at the same place
        taken, end = [], 0
        for match in found:
            if match[0] >= end:
                taken.append(match)
                end = match[1]
        return taken


def _is_word(character: str) -> bool:
    return character.isalnum() or character == "_"


def markers_from_config(node) -> Markers:
    """Markers from config `markers` ({kind: [regex, ...]}), each pattern checked: one sentence naming the key."""
    if not hasattr(node, "items") or not node:
        raise UserError("markers must map each kind (e.g. reflection, verification) to a list of regular expressions.")
    patterns = []
    for kind, values in node.items():
        if isinstance(values, str) or not all(isinstance(value, str) for value in values or ()):
            raise UserError(f"markers.{kind} must be a list of regular expressions (strings).")
        patterns += [(str(kind), value) for value in values]
    if not patterns:
        raise UserError("markers: every kind is empty; give at least one regular expression.")
    return _compile(tuple(patterns))


@functools.lru_cache(maxsize=8)
def _compile(patterns: tuple[tuple[str, str], ...]) -> Markers:
    compiled = []
    for kind, pattern in patterns:
        where = f"markers.{kind}: '{pattern}'"
        try:
            compiled.append(re.compile(rf"(?:{pattern})\b"))  # the trailing \b; the leading one is checked by hand
        except re.error as error:
            raise UserError(f"{where} is not a regular expression ({error}).") from None
        if any(character.isupper() for character in _ESCAPE.sub("", pattern)):
            raise UserError(f"{where} has upper-case letters; write it in lower case (it matches any case).")
        if re.fullmatch(pattern, ""):
            raise UserError(f"{where} matches the empty string, so it would be found everywhere.")
    return Markers(patterns, tuple(compiled))
