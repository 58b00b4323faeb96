"""Train/test split by a stable hash of each document's cleaned text (worker side).

A row's side depends only on its cleaned text and the seed, never on which partition it sits in or on
how many partitions there are, so every worker computes the same split independently and
texts the cleaning makes identical (duplicates, or texts that differ only in case,
punctuation or stop words) never straddle train and test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _hash_key(seed: int) -> str:
    # hash_pandas_object takes a 16-character key; derive it from the seed
    return f"{int(seed) % 10**16:016d}"


def unit_hash(texts, seed: int) -> np.ndarray:
    """A float in [0, 1) per text, stable across processes, machines and partitionings."""
    values = pd.Series(np.asarray(list(texts), dtype=object), dtype=object)
    h = pd.util.hash_pandas_object(values, index=False, hash_key=_hash_key(seed))
    return (h.to_numpy(dtype=np.uint64) >> np.uint64(11)).astype(np.float64) / float(2**53)


def test_mask(texts, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean array: True where the text belongs to the test split."""
    return unit_hash(texts, seed) < float(test_fraction)


# labels with at most this many rows get a split of their own (below); a larger label's share of
# test rows by the plain hash is within about a point of test_fraction already
STRATIFY_MAX_ROWS = 1000


def small_labels(stats: list[dict]) -> list[str]:
    """The labels of at most ``STRATIFY_MAX_ROWS`` rows, from the partitions' statistics
    (``parts.part_stats``: their train and test label counts)."""
    totals: dict[str, int] = {}
    for s in stats:
        for key in ("train_labels", "test_labels"):
            for label, n in s[key].items():
                totals[label] = totals.get(label, 0) + n
    return sorted(label for label, n in totals.items() if n <= STRATIFY_MAX_ROWS)


def stratified_thresholds(hashes: list[dict[str, np.ndarray]], test_fraction: float) -> dict:
    """Per small label, the hash threshold below which its rows are test rows, so that it gets
    round(test_fraction x its rows) of them (at least one, and at least one training row; a
    label of one row trains). ``hashes``: each partition's ``unit_hash`` of the rows of each
    small label. Rows with the same cleaned text keep the same hash, so they stay on one side."""
    merged: dict[str, list[np.ndarray]] = {}
    for part in hashes:
        for label, h in part.items():
            merged.setdefault(label, []).append(np.asarray(h, dtype=np.float64))
    out = {}
    for label, arrays in merged.items():
        h = np.sort(np.concatenate(arrays))
        n = len(h)
        k = 0 if n < 2 else min(n - 1, max(1, round(test_fraction * n)))
        # between the k-th and the (k+1)-th smallest hash: exactly k rows below it
        out[label] = 0.0 if k == 0 else float((h[k - 1] + h[k]) / 2)
    return out


def held_out(hashes: np.ndarray, labels: np.ndarray, test_fraction: float,
              thresholds: dict | None) -> np.ndarray:
    """Boolean array: True where the row is a test row (a label's own threshold where it has
    one, ``test_fraction`` otherwise)."""
    if not thresholds:
        return hashes < float(test_fraction)
    limit = np.fromiter((thresholds.get(lab, test_fraction) for lab in labels),
                        dtype=np.float64, count=len(labels))
    return hashes < limit
