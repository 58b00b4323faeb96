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
