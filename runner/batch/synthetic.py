"""A seeded generator of labelled documents, for tests and benchmarks (numpy only).

Words follow a Zipf law (the r-th most frequent word has weight 1 / r**1.1). Every class has its
own ranking of the vocabulary (a seeded permutation), so its frequent words differ from the other
classes'; a document of class c draws each word from c's distribution with probability
``TOPIC_SHARE`` and from the shared background distribution otherwise. Document lengths are
Poisson around ``doc_len``. With probability ``noise`` a document's label is replaced by a
uniformly drawn class (label noise). The same parameters give the same documents, in the same
order, on any machine (numpy's PCG64 with a fixed seed sequence).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

GENERATOR_VERSION = "synthetic-1"
ZIPF_EXPONENT = 1.1
TOPIC_SHARE = 0.35
CHUNK_DOCS = 4096
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"


def vocabulary(size: int) -> np.ndarray:
    """``size`` distinct lowercase pseudo-words of two or more syllables (never English)."""
    syllables = [c + v for c in CONSONANTS for v in VOWELS]
    n = len(syllables)
    words = []
    for i in range(size):
        parts = [syllables[i % n]]
        i //= n
        parts.append(syllables[i % n])
        i //= n
        while i:
            parts.append(syllables[i % n])
            i //= n
        words.append("".join(parts) + "x")  # "x": never an English stop word
    return np.asarray(words, dtype=object)


def _zipf_cdf(size: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1) ** ZIPF_EXPONENT
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def class_names(n_classes: int) -> list[str]:
    return [f"class{c:0{len(str(n_classes - 1))}d}" for c in range(n_classes)]


def generate(n_docs: int, n_classes: int, vocab_size: int, doc_len: int, noise: float,
             seed: int) -> Iterator[tuple[str, str]]:
    """(text, label) for ``n_docs`` documents."""
    rng = np.random.default_rng([seed, 20260101])
    words = vocabulary(vocab_size)
    cdf = _zipf_cdf(vocab_size)
    rankings = np.stack([rng.permutation(vocab_size) for _ in range(n_classes + 1)])
    background, topics = rankings[0], rankings[1:]
    labels = np.asarray(class_names(n_classes), dtype=object)
    max_len = max(1, int(doc_len + 6 * np.sqrt(doc_len) + 1))
    done = 0
    while done < n_docs:
        m = min(CHUNK_DOCS, n_docs - done)
        cls = rng.integers(0, n_classes, size=m)
        lengths = np.clip(rng.poisson(doc_len, size=m), 1, max_len)
        ranks = np.searchsorted(cdf, rng.random((m, max_len)), side="right")
        ranks = np.minimum(ranks, vocab_size - 1)
        from_topic = rng.random((m, max_len)) < TOPIC_SHARE
        ids = np.where(from_topic, topics[cls[:, None], ranks], background[ranks])
        noisy = rng.random(m) < noise
        shown = np.where(noisy, rng.integers(0, n_classes, size=m), cls)
        for row, n, label in zip(ids, lengths, shown, strict=True):
            yield " ".join(words[row[:n]]), labels[label]
        done += m
