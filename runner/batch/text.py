"""Text cleaning (worker side: numpy/pandas/scikit-learn only, plain-dict parameters).

``params`` is the ``clean`` section of the job as a dict: unicode_nfkc, strip_html, lowercase,
strip_urls, strip_emails, strip_numbers, strip_punctuation, stop_words ("english", a list of
words, or None), min_token_len, stem (None or a Snowball language such as "english"). The steps
run in that order; stemming (snowballstemmer: pure Python, no data to download) comes last, after
the stop words and the length filter have seen the whole words.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

URL_RE = re.compile(r"(?:https?|ftp)://\S+|www\.\S+", re.IGNORECASE)
TAG_RE = re.compile(r"<!--.*?-->|<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# a number standing alone: 42, 3.14, 1,000, -7 (not the digits inside a word such as mp3)
NUMBER_RE = re.compile(r"(?<!\w)[-+]?\d+(?:[.,]\d+)*(?!\w)")


def _mark_ranges(limit: int = 0x20000) -> str:
    """A regex class body of the combining marks (Unicode categories Mn, Mc, Me) below
    ``limit``: vowel signs and viramas of Indic scripts, Thai tone marks, accents written apart.
    They are part of their words, yet Python's ``\\w`` does not match them."""
    ranges: list[str] = []
    start: int | None = None  # the first mark of the current run of marks
    prev = 0  # the last mark seen
    for cp in range(limit):
        if unicodedata.category(chr(cp))[0] == "M":
            if start is None:
                start = cp
            prev = cp
        elif start is not None:
            # the marks themselves (never a character special inside a regex class)
            ranges.append(f"{chr(start)}-{chr(prev)}" if prev > start else chr(start))
            start = None
    return "".join(ranges)


# anything that is not a letter, digit, combining mark or whitespace (unicode-aware), and
# underscores: without the marks, Hindi or Thai words fall apart into their consonants
PUNCT_RE = re.compile(f"[^\\w\\s{_mark_ranges()}]|_")

DEFAULT_PARAMS = {
    "unicode_nfkc": True,
    "strip_html": False,
    "strip_emails": False,
    "strip_numbers": False,
    "lowercase": True,
    "strip_urls": True,
    "strip_punctuation": True,
    "stop_words": "english",
    "min_token_len": 2,
    "stem": None,
}


# scripts written without spaces between words: Han, Hiragana, Katakana (and their
# extensions), Thai, Lao, Tibetan, Myanmar, Khmer. Hangul is not one: Korean puts spaces.
UNSPACED_RE = re.compile(
    "[\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f]")
# a text is written without spaces when at least this share of its non-space characters is
UNSPACED_SHARE = 0.5


def unspaced(text: str) -> bool:
    """Whether ``text`` is mostly in a script written without spaces between words (Chinese,
    Japanese, Thai...): split on whitespace, a whole sentence would be one token."""
    letters = len(text) - text.count(" ")
    return letters > 0 and len(UNSPACED_RE.findall(text)) >= UNSPACED_SHARE * letters


def make_stemmer(language: str):
    """A function list[str] -> list[str] stemming with Snowball's ``language`` algorithm."""
    import snowballstemmer  # imported on first use: only jobs that stem need it

    try:
        stemmer = snowballstemmer.stemmer(language)
    except KeyError:
        raise ValueError(f"unknown stemming language {language!r} (snowballstemmer knows: "
                         f"{', '.join(snowballstemmer.algorithms())})") from None
    return stemmer.stemWords


def stop_word_set(stop_words) -> frozenset[str]:
    if stop_words is None:
        return frozenset()
    if stop_words == "english":
        return ENGLISH_STOP_WORDS
    return frozenset(w.lower() for w in stop_words)


def make_cleaner(params: dict):
    """A function str -> cleaned str (tokens joined by single spaces)."""
    p = {**DEFAULT_PARAMS, **params}
    lowercase, urls, punct = p["lowercase"], p["strip_urls"], p["strip_punctuation"]
    nfkc, tags, emails, numbers = p["unicode_nfkc"], p["strip_html"], p["strip_emails"], \
        p["strip_numbers"]
    stops = stop_word_set(p["stop_words"])
    min_len = int(p["min_token_len"])
    stem = make_stemmer(p["stem"]) if p["stem"] else None

    def clean(text: str) -> str:
        if nfkc:
            text = unicodedata.normalize("NFKC", text)
        if tags:
            text = html.unescape(TAG_RE.sub(" ", text))
        if lowercase:
            text = text.lower()
        if urls:
            text = URL_RE.sub(" ", text)
        if emails:
            text = EMAIL_RE.sub(" ", text)
        if numbers:
            text = NUMBER_RE.sub(" ", text)
        if punct:
            text = PUNCT_RE.sub(" ", text)
        # stop words are lowercase; compare lowercase even when the text keeps its case
        # a token of a script written without spaces is a phrase, whose length says nothing
        # (a one-character Chinese phrase such as 好 "good" stays)
        tokens = [t for t in text.split()
                  if (len(t) >= min_len or UNSPACED_RE.match(t)) and t.lower() not in stops]
        return " ".join(stem(tokens) if stem is not None else tokens)

    return clean


def clean_text(text: str, params: dict) -> str:
    return make_cleaner(params)(text)


def clean_texts(texts: Iterable[str], params: dict) -> list[str]:
    clean = make_cleaner(params)
    return [clean(t) for t in texts]
