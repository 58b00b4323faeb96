"""Hashing features (worker side). ``params`` is the job's ``features`` section as a dict."""

from __future__ import annotations

from sklearn.feature_extraction.text import HashingVectorizer

DEFAULT_PARAMS = {"n_features": 2**18, "ngram_range": [1, 2], "alternate_sign": False,
                  "norm": "l2"}


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
        norm=p["norm"],
        lowercase=False,
        tokenizer=str.split,
        token_pattern=None,
        preprocessor=None,
    )


def vectorize(texts, params: dict):
    """scipy.sparse CSR matrix (n_texts x n_features) for cleaned texts."""
    return make_vectorizer(params).transform(list(texts))
