"""Cleaning rules, and that the worker-side modules import without the control-side stack."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runner.batch.features import resolve_analyzer, vectorize
from runner.batch.text import clean_text, clean_texts, unspaced

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


@pytest.mark.parametrize("text, cleaned", [
    # vowel signs and viramas are part of the word (before, "हिन्दी" became "ह न द", then nothing)
    ("हिन्दी भाषा बहुत सुंदर है", "हिन्दी भाषा बहुत सुंदर है"),
    ("ภาษาไทยที่สวยงาม", "ภาษาไทยที่สวยงาม"),  # Thai tone marks
    # Chinese and Japanese characters stay; their punctuation goes
    ("今天我们的球队在决赛进球了。好！", "今天我们的球队在决赛进球了 好"),
    ("東京タワーに行きました、ラーメンを食べた", "東京タワーに行きました ラーメンを食べた"),
    ("ｆｕｌｌｗｉｄｔｈ　ＡＢＣ", "fullwidth abc"),  # NFKC: full-width Latin is ASCII
])
def test_cleaning_keeps_the_letters_and_marks_of_every_script(text, cleaned):
    assert clean_text(text, {"stop_words": None}) == cleaned


@pytest.mark.parametrize("text, expected", [
    ("今天我们的球队在决赛进球了", True), ("東京タワーに行きました", True),
    ("ภาษาไทยที่สวยงาม", True), ("한국어 문장입니다", False),  # Korean puts spaces
    ("plain english words", False), ("an english sentence with 中文 in it", False), ("", False),
])
def test_text_written_without_spaces_is_recognised(text, expected):
    assert unspaced(text) is expected


def test_the_analyzer_is_chosen_from_the_texts_and_a_wrong_choice_is_warned_about():
    auto = {"n_features": 16, "analyzer": "auto", "ngram_range": None}
    params, note, warn = resolve_analyzer(auto, unspaced=90, texts=100)
    assert (params["analyzer"], params["ngram_range"], warn) == ("char_wb", [1, 3], False)
    assert "90% of the texts are written without spaces" in note
    params, note, warn = resolve_analyzer(auto, unspaced=0, texts=100)
    assert (params["analyzer"], params["ngram_range"], note) == ("word", [1, 2], None)
    # a few unspaced texts keep words, with a note; an explicit word on such texts is a warning
    assert resolve_analyzer(auto, unspaced=5, texts=100)[1] is not None
    params, note, warn = resolve_analyzer({**auto, "analyzer": "word"}, unspaced=80, texts=100)
    assert params["analyzer"] == "word" and warn and "char_wb" in note
    # a given ngram_range is kept
    assert resolve_analyzer({**auto, "ngram_range": [2, 4]}, 90, 100)[0]["ngram_range"] == [2, 4]
    with pytest.raises(ValueError, match="not resolved"):
        vectorize(["a b"], auto)
