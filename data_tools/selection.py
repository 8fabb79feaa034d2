"""Decide which rows make the mix: drop bad, contaminated, too-long and duplicate rows, then sample each source to
its target and shuffle, all on numpy columns (a few bytes per row); of the rows themselves only the texts of
near-duplicate candidates (rows sharing an LSH band key) are read, to check their similarity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_tools.process import BLANK, OK
from data_tools.text_hashes import NearDuplicateHasher, conversation_text, jaccard

# Drop reasons, in the order they are checked; a row counts under the first that applies.
REASONS = ("invalid", "contaminated", "too_long", "duplicate", "near_duplicate")


@dataclass
class Selection:
    """The outcome: final row order (indices into the processed rows) and what happened to every row."""

    order: np.ndarray  # int64 indices of the mix's rows, shuffled
    source_index: np.ndarray  # per processed row, its source's position in the spec
    reason: np.ndarray  # per processed row: -2 blank, -1 kept, else an index into REASONS
    selected: np.ndarray  # per processed row: in the mix


def first_occurrences(values: np.ndarray) -> np.ndarray:
    """True where a value appears for the first time (in array order).

    >>> first_occurrences(np.array([3, 1, 3, 2, 1])).tolist()
    [True, True, False, True, False]
    """
    first = np.zeros(len(values), dtype=bool)
    first[np.unique(values, return_index=True)[1]] = True
    return first


def near_duplicates(bands: np.ndarray, threshold: float,
                    shingle_sets: Callable[[np.ndarray], list[np.ndarray]]) -> np.ndarray:
    """True for rows whose shingle sets have Jaccard similarity >= `threshold` with an earlier kept row that shares
    an LSH band key with them. `bands` is (rows, bands); `shingle_sets(indices)` gives those rows' sets (sorted
    unique arrays), asked only for rows that share a band key with another row.

    >>> sets = [np.arange(10), np.arange(1, 11), np.arange(5, 15), np.arange(20, 30)]
    >>> near_duplicates(np.array([[1, 2], [1, 3], [4, 2], [5, 6]]), 0.8, lambda rows: [sets[i] for i in rows]).tolist()
    [False, True, False, False]
    """
    shared = np.zeros(len(bands), dtype=bool)
    for band in bands.T:
        _, inverse, counts = np.unique(band, return_inverse=True, return_counts=True)
        shared |= counts[inverse.ravel()] > 1
    rows = np.flatnonzero(shared)
    sets = dict(zip(rows.tolist(), shingle_sets(rows), strict=True))
    kept_in: list[dict[int, list[int]]] = [{} for _ in range(bands.shape[1])]  # band key -> kept rows, per band
    duplicate = np.zeros(len(bands), dtype=bool)
    for i in rows.tolist():
        keys = bands[i].tolist()
        earlier = {j for band, key in enumerate(keys) for j in kept_in[band].get(key, ())}
        if any(jaccard(sets[i], sets[j]) >= threshold for j in earlier):
            duplicate[i] = True
            continue
        for band, key in enumerate(keys):
            kept_in[band].setdefault(key, []).append(i)
    return duplicate


def select_rows(
    table: pa.Table, source_lengths: list[int], targets: list[int | None], max_tokens: int | None, seed: int,
    exact: bool = True, near: NearDuplicateHasher | None = None,
) -> Selection:
    """Choose the mix's rows from the processed rows' internal columns (`_status`, `_eval`, `_key`, `_bands`,
    `num_tokens`); sources are consecutive in `table`, `source_lengths` long each. `exact` drops repeated `_key`s;
    `near` (the hasher that made `_bands`) drops near duplicates, reading `messages` of the candidates only."""
    n = table.num_rows
    source_index = np.repeat(np.arange(len(source_lengths)), source_lengths)
    status = table.column("_status")
    reason = np.full(n, -1, dtype=np.int8)
    reason[pc.equal(status, BLANK).to_numpy()] = -2
    checks = [
        pc.and_(pc.not_equal(status, OK), pc.not_equal(status, BLANK)),
        pc.is_valid(table.column("_eval")),
        pc.greater(table.column("num_tokens"), max_tokens) if max_tokens is not None else None,
    ]
    for code, check in enumerate(checks):
        if check is not None:
            reason[(reason == -1) & check.to_numpy()] = code
    if exact:
        alive = np.flatnonzero(reason == -1)
        duplicate = ~first_occurrences(table.column("_key").to_numpy()[alive])
        reason[alive[duplicate]] = REASONS.index("duplicate")
    if near is not None:
        num_bands = near.bands
        band_lengths = pc.list_value_length(table.column("_bands")).fill_null(0).to_numpy()
        with_bands = np.flatnonzero(band_lengths == num_bands)
        flat = pc.list_flatten(table.column("_bands")).to_numpy().reshape(-1, num_bands)
        has = np.zeros(n, dtype=bool)
        has[with_bands] = True
        candidates = np.flatnonzero((reason == -1) & has)
        # Rows of `flat` are the rows with bands, in order: find each candidate's row there.
        rows_in_flat = np.searchsorted(with_bands, candidates)

        def shingle_sets(rows: np.ndarray) -> list[np.ndarray]:
            messages = pc.take(table.column("messages"), pa.array(candidates[rows])).to_pylist()
            return near.shingle_sets([conversation_text(m) for m in messages])

        duplicate = near_duplicates(flat[rows_in_flat], near.threshold, shingle_sets)
        reason[candidates[duplicate]] = REASONS.index("near_duplicate")
    rng = np.random.default_rng(seed)
    selected = np.zeros(n, dtype=bool)
    for i, target in enumerate(targets):
        kept = np.flatnonzero((reason == -1) & (source_index == i))
        if target is not None and target < len(kept):
            kept = np.sort(rng.choice(kept, size=target, replace=False))
        selected[kept] = True
    order = rng.permutation(np.flatnonzero(selected))
    return Selection(order=order, source_index=source_index, reason=reason, selected=selected)
