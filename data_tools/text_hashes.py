"""Deterministic text fingerprints for cleaning: exact-duplicate keys, MinHash LSH band keys, prompt n-grams.

Every hash here is keyed content hashing (blake2b, crc32), never Python's `hash`, which is salted per process:
workers and reruns must agree.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass, field

import numpy as np
from datasketch import MinHash, MinHashLSH

# Words and single symbols: "9 * 7" and "9 + 7" must not look alike.
_WORD = re.compile(r"\w+|[^\w\s]")
_SPACE = re.compile(r"\s+")


def hash64(text: str) -> int:
    """A stable 63-bit hash of a string (non-negative, so Arrow stores it as int64).

    >>> hash64("abc") == hash64("abc") != hash64("abd")
    True
    """
    return _digest63(text.encode())


def _digest63(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


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
    """Hashes of every window of `n` consecutive tokens (none when there are fewer tokens)."""
    return [hash64(" ".join(tokens[i : i + n])) for i in range(len(tokens) - n + 1)]


@dataclass
class NearDuplicateHasher:
    """MinHash signatures over word shingles, cut into LSH bands: two texts share a band key with high
    probability when their shingle Jaccard similarity is above `threshold` (datasketch picks the bands)."""

    threshold: float = field(default=0.8, metadata={"help": "Jaccard similarity the bands are tuned for."})
    num_perm: int = field(default=64, metadata={"help": "MinHash permutations."})
    shingle: int = field(default=5, metadata={"help": "Words per shingle."})

    def __post_init__(self) -> None:
        lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
        self.bands, self.band_rows = lsh.b, lsh.r
        self._permutations = MinHash(num_perm=self.num_perm, seed=1).permutations

    def band_keys(self, text: str) -> list[int]:
        """One 63-bit key per LSH band of the text's MinHash signature.

        >>> hasher = NearDuplicateHasher()
        >>> text = " ".join(f"word{i}" for i in range(100))
        >>> a, b = hasher.band_keys(text), hasher.band_keys(text + " and one more")
        >>> len(a) == hasher.bands, bool(set(a) & set(b)), bool(set(a) & set(hasher.band_keys("other text")))
        (True, True, False)
        """
        tokens = words(text)
        n = self.shingle
        shingles = {" ".join(tokens[i : i + n]).encode() for i in range(max(1, len(tokens) - n + 1))}
        # crc32 rather than datasketch's default sha1: 32 bits is what the affine32 scheme consumes, at half the cost.
        minhash = MinHash(num_perm=self.num_perm, permutations=self._permutations, scheme="affine32",
                          hashfunc=zlib.crc32)
        minhash.update_batch(list(shingles))
        signature = np.asarray(minhash.hashvalues, dtype=np.uint32)
        r = self.band_rows
        return [_digest63(signature[i * r : (i + 1) * r].tobytes()) for i in range(self.bands)]
