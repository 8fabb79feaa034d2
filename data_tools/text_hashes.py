"""Deterministic text fingerprints for cleaning: exact-duplicate keys, MinHash LSH band keys, prompt n-grams.

Every hash here is keyed content hashing (blake2b, crc32), never Python's `hash`, which is salted per process:
workers and reruns must agree.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash

# Words and single symbols: "9 * 7" and "9 + 7" must not look alike.
_WORD = re.compile(r"\w+|[^\w\s]")
_SPACE = re.compile(r"\s+")


def hash64(text: str) -> int:
    """A stable 63-bit hash of a string (non-negative, so Arrow stores it as int64).

    >>> hash64("abc") == hash64("abc") != hash64("abd")
    True
    """
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def normalize(text: str) -> str:
    """Case- and whitespace-insensitive form of a text: what "the same text" means for exact dedupe.

    >>> normalize("  Hello\\n  WORLD ")
    'hello world'
    """
    return _SPACE.sub(" ", text).strip().lower()


def conversation_text(messages: list[dict[str, str]]) -> str:
    """A conversation as one string, roles included (the same words said by another role differ)."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def words(text: str) -> list[str]:
    """Lower-cased word and symbol tokens of a text.

    >>> words("What is 9 * 7?")
    ['what', 'is', '9', '*', '7', '?']
    """
    return _WORD.findall(text.lower())


def ngram_hashes(text: str, n: int) -> list[int]:
    """Hashes of the text's word n-grams; a text of fewer than n words is one n-gram, itself.

    >>> len(ngram_hashes("one two three four", 2)), len(ngram_hashes("one two", 8))
    (3, 1)
    """
    tokens = words(text)
    return window_hashes(tokens, min(n, len(tokens))) if tokens else []


def window_hashes(tokens: list[str], n: int) -> list[int]:
    """64-bit hashes of every window of `n` consecutive tokens (none when there are fewer tokens).

    crc32 and adler32 side by side: two C calls, a fifth of blake2b's cost on the many short windows of a prompt.
    """
    windows = (" ".join(tokens[i : i + n]).encode() for i in range(len(tokens) - n + 1))
    return [zlib.crc32(w) << 32 | zlib.adler32(w) for w in windows]


def _fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (wrapping uint32 arithmetic): datasketch's affine32 pre-mix."""
    values = values ^ (values >> np.uint32(16))
    values = values * np.uint32(0x85EBCA6B)
    values = values ^ (values >> np.uint32(13))
    values = values * np.uint32(0xC2B2AE35)
    return values ^ (values >> np.uint32(16))


def lsh_bands(threshold: float, num_perm: int, recall: float = 0.999) -> tuple[int, int]:
    """LSH bands and rows per band for `num_perm` MinHash values: the most rows per band (the fewest candidate
    pairs to check) that still make a pair at Jaccard `threshold` a candidate with probability >= `recall`.

    A pair at Jaccard J shares at least one of b bands of r rows with probability 1 - (1 - J^r)^b.

    >>> lsh_bands(0.8, 64)
    (16, 4)
    """
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= recall:
            return bands, rows
    raise AssertionError("one row per band always reaches the recall")


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sets given as sorted unique arrays.

    >>> jaccard(np.array([1, 2, 3]), np.array([2, 3, 4]))
    0.5
    """
    shared = len(np.intersect1d(a, b, assume_unique=True))
    return shared / max(len(a) + len(b) - shared, 1)


@dataclass
class NearDuplicateHasher:
    """MinHash signatures over word shingles, cut into LSH bands that find candidate pairs; a candidate is a near
    duplicate when the Jaccard similarity of its shingle sets is at least `threshold`
    (`data_tools.selection.near_duplicates` checks).

    The bands are tuned for recall (`lsh_bands`: 99.9% of pairs at the threshold become candidates, more above
    it), since every candidate is then checked exactly. The signatures are datasketch's affine32 MinHash (its
    permutations), computed for a whole batch in numpy passes instead of one `MinHash` object per text, which
    costs several times more.
    """

    threshold: float  # the options and their defaults are `data_tools.spec.DedupeSpec`'s
    num_perm: int
    shingle: int

    def __post_init__(self) -> None:
        self.bands, self.band_rows = lsh_bands(self.threshold, self.num_perm)
        self._a, self._b = MinHash(num_perm=self.num_perm, seed=1).permutations
        self._word_hashes: dict[str, int] = {}

    def shingle_hashes(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """32-bit hashes of every `shingle`-word window of each text (the whole text when shorter), flat, and
        how many each text has. A window's hash is a polynomial of its words' crc32s, computed for the whole batch
        at once; words repeat so much that their crc32s are cached."""
        n, cache = self.shingle, self._word_hashes
        per_text = []
        for text in texts:
            tokens = words(text) or [""]
            per_text.append([cache.get(t) or cache.setdefault(t, zlib.crc32(t.encode()) | 1 << 32) for t in tokens])
        lengths = np.fromiter((len(h) for h in per_text), dtype=np.int64, count=len(per_text))
        flat = np.fromiter((h for hs in per_text for h in hs), dtype=np.uint64, count=int(lengths.sum()))
        # Shorter texts use all their words: pad each text's windows on the right with zeros.
        width = np.minimum(lengths, n)
        padded = np.concatenate((flat, np.zeros(n, dtype=np.uint64)))
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        counts = lengths - width + 1
        first = np.repeat(starts, counts) + (np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts))
        limit = np.repeat(starts + lengths, counts)
        value = np.zeros(len(first), dtype=np.uint64)
        for j in range(n):
            inside = first + j < limit
            value = value * np.uint64(0x100000001B3) + np.where(inside, padded[np.minimum(first + j, len(flat))], 0)
        return (value ^ (value >> np.uint64(32))).astype(np.uint32), counts

    def shingle_sets(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's set of shingle hashes, as a sorted unique uint32 array (what `jaccard` compares)."""
        if not texts:
            return []
        hashes, counts = self.shingle_hashes(texts)
        return [np.unique(part) for part in np.split(hashes, np.cumsum(counts)[:-1])]

    def signatures(self, texts: list[str]) -> np.ndarray:
        """MinHash signatures, (texts, num_perm) uint32: datasketch's affine32 scheme over `shingle_hashes`
        (equal to `MinHash(scheme="affine32", hashfunc=int)` updated with them)."""
        hashes, counts = self.shingle_hashes(texts)
        permuted = _fmix32(hashes)[:, None] * self._a[None, :] + self._b[None, :]  # (shingles, num_perm), mod 2^32
        return np.minimum.reduceat(permuted, np.concatenate(([0], np.cumsum(counts)[:-1])), axis=0)

    def band_keys(self, texts: list[str]) -> np.ndarray:
        """One 63-bit key per LSH band of each text's signature, (texts, bands) int64.

        >>> hasher = NearDuplicateHasher(threshold=0.8, num_perm=64, shingle=5)
        >>> text = " ".join(f"word{i}" for i in range(100))
        >>> a, b, c = hasher.band_keys([text, text + " and one more", "other text"])
        >>> len(a) == hasher.bands, bool(set(a) & set(b)), bool(set(a) & set(c))
        (True, True, False)
        """
        r = self.band_rows
        bands = self.signatures(texts)[:, : self.bands * r].astype(np.uint64).reshape(len(texts), self.bands, r)
        keys = np.zeros((len(texts), self.bands), dtype=np.uint64)
        for j in range(r):  # polynomial combination of the band's r values, wrapping mod 2^64
            keys = keys * np.uint64(0x9E3779B97F4A7C15) + bands[:, :, j] + np.uint64(j + 1)
        return (keys >> np.uint64(1)).astype(np.int64)
