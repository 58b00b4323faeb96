"""Cleaning rules, and that the worker-side modules import without the control-side stack."""

from __future__ import annotations

import subprocess
import sys

from runner.batch.features import vectorize
from runner.batch.text import clean_text, clean_texts

DEFAULTS = {"lowercase": True, "strip_urls": True, "strip_punctuation": True,
            "stop_words": "english", "min_token_len": 2}


def test_defaults_clean_everything():
    text = "The GNU C++ compiler, see https://gcc.gnu.org/docs and www.example.com for it!"
    assert clean_text(text, DEFAULTS) == "gnu compiler"


def test_each_option_can_be_switched_off():
    text = "A Python-3 library: see http://x.org"
    assert clean_text(text, {**DEFAULTS, "lowercase": False}) == "Python library"
    assert clean_text(text, {**DEFAULTS, "strip_urls": False}) == "python library http org"
    # "see" is one of scikit-learn's English stop words
    assert clean_text(text, {**DEFAULTS, "strip_punctuation": False}) == "python-3 library:"
    assert clean_text(text, {**DEFAULTS, "stop_words": None}) == "python library see"
    assert clean_text(text, {**DEFAULTS, "min_token_len": 1}) == "python 3 library"
    assert clean_text(text, {**DEFAULTS, "stop_words": ["library"]}) == "python see"


def test_empty_and_unicode():
    assert clean_texts(["", "   ", "Émile’s café"], DEFAULTS) == ["", "", "émile café"]


def test_vectorizer_uses_cleaned_tokens():
    X = vectorize(["python library", "python"], {"n_features": 1024, "ngram_range": [1, 2],
                                                 "alternate_sign": False, "norm": "l2"})
    assert X.shape == (2, 1024)
    assert X[0].nnz == 3 and X[1].nnz == 1  # python, library, "python library"


def test_worker_modules_import_without_pydantic_or_yaml():
    code = (
        "import sys\n"
        "for m in ('pydantic', 'yaml', 'fabric', 'paramiko'):\n"
        "    sys.modules[m] = None  # any import of them now fails\n"
        "import runner.batch\n"
        "from runner.batch import text, split, features, parts, train, evaluate, model\n"
        "from runner.batch import naive_bayes, synthetic\n"
        "from runner.batch import load_model, predict_texts\n"
        "assert 'runner.batch.job' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
