"""Packing speed and fill: our `pack_lengths` beside NeMo's `first_fit_shuffle` on the same lengths, one run.

    .venv-nemo/bin/python benchmarks/packing.py                 # 1,000,000 sequences, pack size 16384
    .venv-nemo/bin/python benchmarks/packing.py --num-sequences 200000 --nemo-subsets 1000 2000 4000

NeMo's first fit sums every open pack for every sequence (quadratic), so it cannot pack a million sequences in
minutes: it is timed on fixed subsets of the same lengths, and its time for the full set is extrapolated with the
power law fitted to those subsets (the printout says which numbers are measured and which extrapolated). NeMo's
shuffle is seeded with ours, so the two first_fit_shuffle runs make packs of the same lengths: the same fill.
Exit status 2 when NeMo is not importable (run it in .venv-nemo: make test-nemo builds it).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def synthetic_lengths(count: int, pack_size: int, seed: int) -> np.ndarray:
    """Token lengths shaped like long chain-of-thought SFT samples: log-normal, median ~3,000 tokens (the paper's
    target trace length), a long right tail, clipped to [200, pack_size]."""
    rng = np.random.default_rng(seed)
    lengths = rng.lognormal(mean=np.log(3000), sigma=0.6, size=count)
    return np.clip(lengths, 200, pack_size).astype(np.int64)


def efficiency(lengths: np.ndarray, num_packs: int, pack_size: int) -> float:
    """Filled positions over available positions, as NeMo logs "Packing is X% efficient"."""
    return float(lengths.sum()) / (num_packs * pack_size)


def time_ours(lengths: np.ndarray, pack_size: int, algorithm: str, seed: int) -> tuple[float, int]:
    from nemo_recipes.packing import pack_lengths

    start = time.perf_counter()
    packs = pack_lengths(lengths, pack_size, algorithm, seed)
    return time.perf_counter() - start, len(packs)


def time_nemo(lengths: np.ndarray, pack_size: int, seed: int) -> tuple[float, int]:
    """NeMo's path from a length histogram, as prepare_packed_ft_dataset.py calls it (global NumPy RNG)."""
    from nemo.utils.sequence_packing_utils import create_packing_strategy

    histogram = np.bincount(lengths, minlength=pack_size + 1).tolist()
    np.random.seed(seed)
    start = time.perf_counter()
    result = create_packing_strategy(histogram, pack_size, "first_fit_shuffle")
    seconds = time.perf_counter() - start
    # NeMo 2.2 returns (assignments, packing metadata); 2.1 returned the assignments alone.
    packs = result[0] if isinstance(result, tuple) else result
    return seconds, len(packs)


def extrapolate(sizes: list[int], seconds: list[float], target: int) -> tuple[float, float]:
    """Fit seconds = a * n**b on the measured subsets; return (seconds at target, b)."""
    exponent, log_a = np.polyfit(np.log(sizes), np.log(seconds), 1)
    return float(np.exp(log_a) * target**exponent), float(exponent)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-sequences", type=int, default=1_000_000)
    parser.add_argument("--pack-size", type=int, default=16384)  # conf/sft/paper.yaml
    parser.add_argument("--nemo-subsets", type=int, nargs="+", default=[2000, 4000, 8000, 16000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    try:
        import nemo.utils.sequence_packing_utils  # noqa: F401
        from nemo.utils import logging as nemo_logging
    except ImportError as error:
        print(f"NeMo is not importable here ({error}); run this with .venv-nemo/bin/python.", file=sys.stderr)
        return 2
    nemo_logging.setLevel(nemo_logging.WARNING)  # it logs every packing's efficiency at INFO

    n, pack_size = args.num_sequences, args.pack_size
    lengths = synthetic_lengths(n, pack_size, args.seed)
    print(f"{n:,} synthetic long-CoT lengths (median {int(np.median(lengths)):,}, mean {lengths.mean():,.0f}, "
          f"max {lengths.max():,} tokens), pack size {pack_size:,}")

    ours = {}
    for algorithm in ("first_fit_shuffle", "first_fit_decreasing"):
        seconds, packs = time_ours(lengths, pack_size, algorithm, args.seed)
        ours[algorithm] = seconds
        fill = 100 * efficiency(lengths, packs, pack_size)
        print(f"  ours {algorithm:<21} n={n:>9,}: {seconds:8.2f} s  {fill:6.2f}% full  {packs:,} packs  [measured]")

    from nemo import __version__ as nemo_version

    subsets = sorted(s for s in args.nemo_subsets if s <= n)
    nemo_seconds = []
    for size in subsets:
        subset = lengths[:size]
        nemo_time, nemo_packs = time_nemo(subset, pack_size, args.seed)
        our_time, our_packs = time_ours(subset, pack_size, "first_fit_shuffle", args.seed)
        _, decreasing_packs = time_ours(subset, pack_size, "first_fit_decreasing", args.seed)
        nemo_seconds.append(nemo_time)
        nemo_fill, our_fill = (100 * efficiency(subset, packs, pack_size) for packs in (nemo_packs, our_packs))
        print(f"  NeMo {nemo_version} first_fit_shuffle n={size:>9,}: {nemo_time:8.2f} s  {nemo_fill:6.2f}% full  "
              f"[measured]; ours on the same subset {our_time:.4f} s, {our_fill:.2f}% full (first_fit_decreasing "
              f"{100 * efficiency(subset, decreasing_packs, pack_size):.2f}%) -> NeMo/ours time ratio "
              f"{nemo_time / our_time:,.0f}x")

    if len(subsets) >= 2:
        projected, exponent = extrapolate(subsets, nemo_seconds, n)
        print(f"  NeMo {nemo_version} first_fit_shuffle n={n:>9,}: {projected:8.0f} s (~{projected / 3600:,.1f} h)  "
              f"[extrapolated: t ~ n^{exponent:.2f} fitted on n={', '.join(f'{s:,}' for s in subsets)}]")
        print(f"speed ratio NeMo / ours at n={n:,}, first_fit_shuffle: {projected / ours['first_fit_shuffle']:,.0f}x "
              "(NeMo extrapolated, ours measured)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
