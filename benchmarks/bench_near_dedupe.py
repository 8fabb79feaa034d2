"""Near-dedupe recall and precision against the exact Jaccard similarity of word-shingle sets.

    .venv/bin/python benchmarks/bench_near_dedupe.py [--pairs 300] [--threshold 0.8]

Each pair is a text of 200 random words and a copy with some words replaced (the number of replacements sweeps the
similarity); every pair has its own vocabulary, so pairs never collide with each other. The pairs are binned by the
exact Jaccard similarity of their 5-word shingle sets (what `dedupe.threshold` means) and each bin reports the
share of pairs whose second text is dropped as a near duplicate:

- `checked`: the builder's rule (LSH bands tuned for recall, every candidate checked against the threshold);
- `bands only`: the former rule (datasketch's bands for the threshold, a band collision counts unchecked).

Below the threshold the share is the false-positive rate, at or above it the recall. Precision is over all pairs.
"""

from __future__ import annotations

import argparse
import random

import numpy as np
from datasketch import MinHashLSH

from data_tools.selection import near_duplicates
from data_tools.text_hashes import NearDuplicateHasher, jaccard

BINS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)


def make_pairs(pairs: int, words: int, seed: int) -> list[str]:
    """Texts in pairs (base, edited): 0 to words/10 words of the base replaced at random positions."""
    rng = random.Random(seed)
    texts = []
    for p in range(pairs):
        base = [f"w{p}x{rng.randrange(10**6)}" for _ in range(words)]
        edited = list(base)
        for position in rng.sample(range(words), rng.randrange(0, words // 10 + 1)):
            edited[position] = f"n{p}x{rng.randrange(10**6)}"
        texts += [" ".join(base), " ".join(edited)]
    return texts


def flagged(hasher: NearDuplicateHasher, texts: list[str], bands_only: bool) -> np.ndarray:
    """Whether each pair's second text is dropped."""
    sets = hasher.shingle_sets(texts)
    if bands_only:  # the former rule: datasketch's bands for the threshold, any collision counts
        lsh = MinHashLSH(threshold=hasher.threshold, num_perm=hasher.num_perm)
        hasher = NearDuplicateHasher(hasher.threshold, hasher.num_perm, hasher.shingle)
        hasher.bands, hasher.band_rows = lsh.b, lsh.r
    duplicate = near_duplicates(hasher.band_keys(texts), 0.0 if bands_only else hasher.threshold,
                                lambda rows: [sets[i] for i in rows])
    return duplicate[1::2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--words", type=int, default=200)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    hasher = NearDuplicateHasher(threshold=args.threshold, num_perm=64, shingle=5)
    texts = make_pairs(args.pairs, args.words, args.seed)
    sets = hasher.shingle_sets(texts)
    similarity = np.array([jaccard(sets[i], sets[i + 1]) for i in range(0, len(texts), 2)])
    results = {rule: flagged(hasher, texts, rule == "bands only") for rule in ("checked", "bands only")}
    print(f"threshold {args.threshold}, {hasher.num_perm} permutations, shingles of {hasher.shingle} words; "
          f"checked: {hasher.bands} bands x {hasher.band_rows} rows")
    print("| Jaccard | pairs | dropped, checked | dropped, bands only |")
    print("|---|---|---|---|")
    low = 0.0
    for high in BINS:
        inside = (similarity >= low) & ((similarity < high) if high < 1 else (similarity <= high))
        if inside.any():
            shares = [f"{results[rule][inside].mean():.1%}" for rule in results]
            print(f"| {low:.2f}-{high:.2f} | {int(inside.sum())} | {shares[0]} | {shares[1]} |")
        low = high
    truth = similarity >= args.threshold
    for rule, dropped in results.items():
        precision = (dropped & truth).sum() / max(dropped.sum(), 1)
        recall = (dropped & truth).sum() / max(truth.sum(), 1)
        print(f"{rule}: precision {precision:.3f}, recall {recall:.3f} (pairs at or above {args.threshold})")


if __name__ == "__main__":
    main()
