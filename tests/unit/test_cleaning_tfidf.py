"""Cleaning options and TF-IDF with document frequencies reduced over partitions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfTransformer

from runner.batch.features import (
    add_frequencies,
    apply_idf,
    document_frequencies,
    idf_weights,
    vectorize,
)
from runner.batch.model import predict_texts
from runner.batch.text import clean_text

BARE = {"stop_words": None, "min_token_len": 1, "strip_punctuation": False}


@pytest.mark.parametrize(("params", "text", "expected"), [
    ({}, "ＡＢＣ ﬁle ①", "abc file 1"),  # NFKC: full-width letters, ligature, circled digit
    ({"unicode_nfkc": False}, "ﬁle", "ﬁle"),
    ({"strip_html": True}, "<p>Fish &amp; <b>chips</b></p><!-- x --><style>p{}</style>",
     "fish & chips"),
    ({"strip_html": False}, "<b>x</b>", "<b>x</b>"),
    ({"strip_emails": True}, "write to jane.doe+news@mail.example.org today",
     "write to today"),
    ({"strip_numbers": True}, "call 555 1,000 3.14 -7 times mp3 b2b", "call times mp3 b2b"),
    ({"strip_numbers": False}, "mp3 42", "mp3 42"),
    ({"min_token_len": 4}, "a bb ccc dddd eeeee", "dddd eeeee"),
])
def test_cleaning_options(params, text, expected):
    assert clean_text(text, {**BARE, **params}) == expected


def test_defaults_keep_old_behaviour_for_ascii():
    assert clean_text("The Python 3 library, see https://x.org", {}) == "python library"


def test_tfidf_df_reduction_equals_tfidf_transformer_on_whole_matrix():
    rng = np.random.default_rng(0)
    X = sp.random(500, 200, density=0.04, format="csr", random_state=1)
    X.data = np.ceil(X.data * 4)  # counts
    keep = np.ones(500)
    keep[3] = 0
    X = (sp.diags(keep) @ X).tocsr()  # an empty document
    X.eliminate_zeros()
    cuts = [0, 1, 170, 420, 500]
    freq = add_frequencies(*[document_frequencies(X[a:b]) for a, b in zip(cuts, cuts[1:],
                                                                           strict=False)])
    idf = idf_weights(freq)
    for norm in ("l2", "l1", None):
        ref = TfidfTransformer(norm=norm, smooth_idf=True).fit(X)
        np.testing.assert_allclose(idf, ref.idf_, rtol=0, atol=1e-12)
        Xt = sp.random(40, 200, density=0.05, format="csr", random_state=int(rng.integers(99)))
        got = apply_idf(Xt, idf, norm)
        assert got.dtype == np.float32  # the features are float32 end to end
        np.testing.assert_allclose(got.toarray(), ref.transform(Xt).toarray(), rtol=1e-6,
                                   atol=1e-7)


def test_vectorize_with_idf_and_prediction_uses_it():
    params = {"n_features": 64, "ngram_range": [1, 1], "alternate_sign": False, "norm": "l2",
              "tfidf": True}
    raw = vectorize(["aa bb bb", "aa"], params)
    assert raw[0].sum() == 3.0  # raw counts when tf-idf is on
    idf = np.full(64, 2.0)
    weighted = vectorize(["aa bb bb", "aa"], params, idf)
    np.testing.assert_allclose(sp.linalg.norm(weighted, axis=1), [1.0, 1.0])

    class Echo:  # a stand-in classifier: predicts the rounded sum of the features
        def predict(self, X):
            return [str(round(float(v), 3)) for v in np.asarray(X.sum(axis=1)).ravel()]

    model = {"vectorizer": {**params, "norm": None}, "clean": {}, "classifier": Echo(),
             "idf": np.full(64, 2.0)}
    assert predict_texts(model, ["aa bb bb"]) == ["6.0"]
    assert predict_texts({**model, "idf": None}, ["aa bb bb"]) == ["3.0"]


def test_stemming_after_stop_words_and_length():
    params = {"stem": "english", "min_token_len": 3}
    assert clean_text("Running the parsers, parsing libraries", params) == "run parser pars librari"
    assert clean_text("Running", {}) == "running"  # off by default


def test_stemming_language_is_checked(tmp_path):
    from runner.batch.job import load_job
    from runner.errors import ConfigError

    path = tmp_path / "job.yaml"
    path.write_text("name: j\ndata: {source: debian-packages}\nclean: {stem: klingon}\n")
    with pytest.raises(ConfigError, match=r"clean.stem: unknown stemming language 'klingon' "
                                          r"\(use one of: .*english"):
        load_job(path)
    path.write_text("name: j\ndata: {source: debian-packages}\nclean: {stem: english}\n")
    assert load_job(path).clean_params()["stem"] == "english"
