"""Hashing features (worker side). ``params`` is the job's ``features`` section as a dict."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

# a saved model of an earlier version has no analyzer: it hashed word n-grams
DEFAULT_PARAMS = {"n_features": 2**18, "analyzer": "word", "ngram_range": [1, 2],
                  "alternate_sign": False, "norm": "l2", "tfidf": False}
DEFAULT_NGRAMS = {"word": [1, 2], "char": [1, 3], "char_wb": [1, 3]}
# with analyzer auto, char_wb when at least this share of the texts is written without spaces
AUTO_CHAR_SHARE = 0.3


def resolve_analyzer(params: dict, unspaced: int, texts: int) -> tuple[dict, str | None, bool]:
    """``params`` with ``analyzer`` and ``ngram_range`` made concrete; a note for the run log
    when the choice was made for the user or deserves a look, and whether it is a warning
    (``unspaced`` of ``texts`` cleaned texts are mostly in a script written without spaces,
    ``text.unspaced``)."""
    analyzer, share = params.get("analyzer", "word"), unspaced / texts if texts else 0.0
    note = None
    if analyzer == "auto":
        analyzer = "char_wb" if share >= AUTO_CHAR_SHARE else "word"
        if analyzer == "char_wb":
            note = (f"features.analyzer auto: {share:.0%} of the texts are written without spaces "
                    "(Chinese, Japanese, Thai...), so words cannot be split on whitespace: "
                    "character n-grams (char_wb) are used; set features.analyzer to choose")
        elif unspaced:
            note = (f"features.analyzer auto: {share:.0%} of the texts are written without spaces "
                    "(Chinese, Japanese, Thai...) and are hashed as whole-sentence words; set "
                    "features.analyzer: char_wb if they matter")
    elif analyzer == "word" and share >= AUTO_CHAR_SHARE:
        note = (f"features.analyzer word: {share:.0%} of the texts are written without spaces "
                "(Chinese, Japanese, Thai...): each sentence is one word, and the model cannot "
                "generalise; use features.analyzer: char_wb (or auto)")
    ngrams = params.get("ngram_range") or DEFAULT_NGRAMS[analyzer]
    resolved = {**params, "analyzer": analyzer, "ngram_range": list(ngrams)}
    return resolved, note, note is not None and analyzer == "word"


def make_vectorizer(params: dict) -> HashingVectorizer:
    """The vectorizer for already-cleaned text (tokens separated by whitespace).

    Cleaning (lowercase, stop words, token length) is done by runner.batch.text, so the
    word analyzer only splits on whitespace, and the character analyzers take the cleaned text
    as it is; it is stateless, so every worker builds its own.
    """
    p = {**DEFAULT_PARAMS, **params}
    analyzer = p["analyzer"]
    if analyzer not in DEFAULT_NGRAMS:  # "auto" is resolved by the client, before any task
        raise ValueError(f"features.analyzer {analyzer!r} was not resolved before vectorizing")
    words = analyzer == "word"
    return HashingVectorizer(
        n_features=int(p["n_features"]),
        analyzer=analyzer,
        ngram_range=tuple(p["ngram_range"] or DEFAULT_NGRAMS[analyzer]),
        alternate_sign=bool(p["alternate_sign"]),
        # with TF-IDF the counts stay raw; the norm is applied after the idf weights
        norm=None if p["tfidf"] else p["norm"],
        lowercase=False,
        tokenizer=str.split if words else None,
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
