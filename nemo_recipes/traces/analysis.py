"""What a set of traces looks like, and whether a model has entered reasoning mode.

`measure` reads one set -- a model's generations, an SFT set, the teacher's eligible traces -- in one pass:

    samples         how many traces
    tokens          mean, p10, p25, median, p75, p90 and max length in tokens
    truncated       share that stopped at max_tokens (finish_reason "length"); None for a set without finish reasons
    boxed           share holding a \\boxed{} answer (the last box, as grading extracts it)
    with_markers    share holding at least one marker (config `markers`, any kind)
    per_1k_tokens   {kind: markers of that kind per 1,000 tokens of the whole set}
    marker_counts   {pattern: occurrences}: the set's marker profile

`divergence` says how far one profile is from another, and `verdict` applies the rule of config
`traces.reasoning_mode` to a model's measures, keeping the number behind each condition.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from nemo_recipes.grading.extract import cut_at_chat_end, last_boxed
from nemo_recipes.traces.markers import Markers

Sample = tuple[str, int, str | None]  # (text, length in tokens, finish_reason or None)
QUANTILES = (("p10", 10), ("p25", 25), ("median", 50), ("p75", 75), ("p90", 90))


def measure(samples: Iterable[Sample], markers: Markers) -> dict:
    lengths: list[int] = []
    truncated = finish_known = boxed = with_markers = 0
    counts = [0] * len(markers.patterns)
    for text, tokens, finish_reason in samples:
        lengths.append(tokens)
        if finish_reason is not None:
            finish_known += 1
            truncated += finish_reason == "length"
        boxed += last_boxed(cut_at_chat_end(text)) is not None
        found = markers.find(text)
        with_markers += bool(found)
        for index in found:
            counts[index] += 1
    n, total_tokens = len(lengths), sum(lengths)
    per_kind = dict.fromkeys(markers.kinds, 0)
    for (kind, _), count in zip(markers.patterns, counts):
        per_kind[kind] += count
    return {
        "samples": n,
        "tokens": _distribution(lengths),
        "truncated": truncated / finish_known if finish_known else None,
        "boxed": boxed / n if n else None,
        "with_markers": with_markers / n if n else None,
        "per_1k_tokens": {kind: 1000 * count / total_tokens if total_tokens else None
                          for kind, count in per_kind.items()},
        "marker_counts": {pattern: count for (_, pattern), count in zip(markers.patterns, counts)},
    }


def _distribution(lengths: list[int]) -> dict | None:
    if not lengths:
        return None
    ordered = sorted(lengths)
    return {"mean": sum(ordered) / len(ordered), **{name: _percentile(ordered, q) for name, q in QUANTILES},
            "max": ordered[-1]}


def _percentile(ordered: list[int], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def divergence(counts: dict[str, int], reference: dict[str, int]) -> float | None:
    """Jensen-Shannon divergence (base 2) between two marker profiles: 0 when the markers are used in the same
    proportions, 1 when the two use none in common; None when either holds no marker at all (nothing to compare)."""
    total, reference_total = sum(counts.values()), sum(reference.values())
    if not total or not reference_total:
        return None
    result = 0.0
    for pattern in counts.keys() | reference.keys():
        p, q = counts.get(pattern, 0) / total, reference.get(pattern, 0) / reference_total
        middle = (p + q) / 2
        result += sum(x * math.log2(x / middle) for x in (p, q) if x) / 2
    return min(1.0, max(0.0, result))  # rounding can leave it a hair outside [0, 1]


def verdict(measures: dict, base: dict | None, rule) -> dict:
    """Whether a model is in reasoning mode by `rule` (config traces.reasoning_mode), and each condition with its
    number: markers in most samples, generations some multiple longer than the base model's (not asked of the base
    itself, or where the run has no base), and not mostly cut off at max_tokens (a model that loops is not
    reasoning)."""
    checks = [_check("min_share_with_markers", measures["with_markers"], rule.min_share_with_markers)]
    if base is not None:
        ratio = measures["tokens"]["median"] / max(base["tokens"]["median"], 1)
        checks.append(_check("min_length_vs_base", ratio, rule.min_length_vs_base))
    if measures["truncated"] is not None:
        checks.append(_check("max_truncated", measures["truncated"], rule.max_truncated))
    return {"reasoning_mode": all(check["ok"] for check in checks), "checks": checks}


def _check(key: str, value: float, threshold: float) -> dict:
    ok = value <= threshold if key.startswith("max_") else value >= threshold
    return {"key": key, "value": value, "threshold": threshold, "ok": ok}


def describe(result: dict) -> str:
    """A verdict as one line: 'yes' or 'no', then each condition with its number and threshold."""
    texts = {
        "min_share_with_markers": lambda c: f"markers in {c['value']:.0%} of samples (needs >= {c['threshold']:.0%})",
        "min_length_vs_base": lambda c: f"median length {c['value']:.1f}x the base's (needs >= {c['threshold']:g}x)",
        "max_truncated": lambda c: f"{c['value']:.0%} truncated (needs <= {c['threshold']:.0%})",
    }
    parts = [("" if check["ok"] else "NOT ") + texts[check["key"]](check) for check in result["checks"]]
    return ("yes: " if result["reasoning_mode"] else "no: ") + "; ".join(parts)
