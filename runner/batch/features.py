"""Hashing features (worker side). ``params`` is the job's ``features`` section as a dict."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

DEFAULT_PARAMS = {"n_features": 2**18, "ngram_range": [1, 2], "alternate_sign": False,
                  "norm": "l2", "tfidf": False}


def make_vectorizer(params: dict) -> HashingVectorizer:
    """The vectorizer for already-cleaned text (tokens separated by whitespace).

    Cleaning (lowercase, stop words, token length) is done by runner.batch.text, so the
    vectorizer only splits on whitespace; it is stateless, so every worker builds its own.
    """
    p = {**DEFAULT_PARAMS, **params}
    return HashingVectorizer(
        n_features=int(p["n_features"]),
        ngram_range=tuple(p["ngram_range"]),
        alternate_sign=bool(p["alternate_sign"]),
        # with TF-IDF the counts stay raw; the norm is applied after the idf weights
        norm=None if p["tfidf"] else p["norm"],
        lowercase=False,
        tokenizer=str.split,
        token_pattern=None,
        preprocessor=None,
        # float32 end to end: half the memory of the features and the weights, and
        # scikit-learn's SGD keeps the dtype it is given
        dtype=np.float32,
    )


def vectorize(texts, params: dict, idf: np.ndarray | None = None):
    """scipy.sparse CSR matrix (n_texts x n_features) for cleaned texts (with ``idf``: tf-idf)."""
    texts = list(texts)
    if not texts:  # a partition whose rows were all dropped (HashingVectorizer raises on [])
        n_features = int({**DEFAULT_PARAMS, **params}["n_features"])
        return sp.csr_matrix((0, n_features), dtype=np.float32)
    X = make_vectorizer(params).transform(texts)
    if idf is not None:
        X = apply_idf(X, idf, {**DEFAULT_PARAMS, **params}["norm"])
    return X


# TF-IDF over hashed counts, with the document frequencies reduced across all partitions: each
# partition counts in how many of its training documents every feature occurs, the counts are
# summed, and the idf weights (scikit-learn's TfidfTransformer formula, smooth_idf=True) are
# computed once from the sums and applied to every partition, train and test rows alike.


def document_frequencies(X) -> dict:
    """Per-feature count of the rows (documents) where it occurs, and the number of rows."""
    X = sp.csr_matrix(X)
    df = np.bincount(X.indices[X.data != 0], minlength=X.shape[1]).astype(np.int64)
    return {"df": df, "n_docs": int(X.shape[0])}


def add_frequencies(*parts: dict) -> dict:
    return {"df": np.sum([p["df"] for p in parts], axis=0),
            "n_docs": sum(p["n_docs"] for p in parts)}


def idf_weights(freq: dict) -> np.ndarray:
    """log((1 + n) / (1 + df)) + 1, as TfidfTransformer(smooth_idf=True)."""
    n = freq["n_docs"]
    return np.log((1.0 + n) / (1.0 + np.asarray(freq["df"], dtype=np.float64))) + 1.0


def apply_idf(X, idf: np.ndarray, norm: str | None):
    """Raw counts -> tf-idf weights, then the row norm (``norm``: l1, l2 or None)."""
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    X.data *= idf[X.indices]
    return normalize(X, norm=norm, copy=False) if norm else X
