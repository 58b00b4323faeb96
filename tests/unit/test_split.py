"""The train/test split depends on the text and the seed only, never on partitioning."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd

from runner.batch import split
from runner.batch.parts import clean_part

test_mask = split.test_mask
unit_hash = split.unit_hash

CLEAN = {"lowercase": True, "strip_urls": True, "strip_punctuation": True,
         "stop_words": "english", "min_token_len": 2}


def corpus(n=3000):
    rng = random.Random(1)
    words = ["alpha", "beta", "gamma", "delta", "kappa", "omega", "sigma", "zeta"]
    return [" ".join(rng.choices(words, k=5)) + f" {i}" for i in range(n)]


def split_by_partitions(texts, n_parts, fraction=0.2, seed=0):
    """{text: is_test} when the corpus is cut into ``n_parts`` partitions (shuffled order)."""
    order = list(range(len(texts)))
    random.Random(n_parts).shuffle(order)
    result = {}
    for chunk in np.array_split(np.asarray(order), n_parts):
        df = pd.DataFrame({"text": [texts[i] for i in chunk], "label": ["x"] * len(chunk)},
                          dtype=object)
        part = clean_part(df, CLEAN, {"test_fraction": fraction, "seed": seed})
        kept = [texts[i] for i in chunk]
        result.update(zip(kept, part["is_test"].tolist(), strict=True))
    return result


def test_same_split_whatever_the_partitioning():
    texts = corpus()
    one = split_by_partitions(texts, 1)
    for n in (2, 3, 7, 50):
        assert split_by_partitions(texts, n) == one


def test_fraction_is_respected_and_seed_changes_the_split():
    texts = corpus()
    a = test_mask(texts, 0.2, seed=0)
    assert 0.17 < a.mean() < 0.23
    b = test_mask(texts, 0.2, seed=1)
    assert (a != b).sum() > 300
    assert 0.47 < test_mask(texts, 0.5, seed=0).mean() < 0.53
    # a larger fraction only adds rows to the test split
    assert not (a & ~test_mask(texts, 0.3, seed=0)).any()


def test_hash_is_deterministic_and_in_unit_interval():
    h1, h2 = unit_hash(["a", "b", "a"], 7), unit_hash(["a", "b", "a"], 7)
    assert (h1 == h2).all() and h1[0] == h1[2] and h1[0] != h1[1]
    assert ((h1 >= 0) & (h1 < 1)).all()


def test_known_values_stay_stable():
    # pinned so that a change of the hashing (which would reshuffle every user's split) is seen
    got = test_mask([f"doc {i}" for i in range(20)], 0.5, seed=0)
    assert "".join("T" if t else "." for t in got) == "T.T..TT..T..TT.TT.T."


test_mask.__test__ = False  # a helper under test, not a test


def test_texts_the_cleaning_makes_equal_fall_on_the_same_side():
    """'The Apple pie!' and 'apple pie' are one document to the model: a split on the raw text
    would put some such twins in train and test both (an optimistic test score)."""
    import pandas as pd

    from runner.batch.job import CleanSpec
    from runner.batch.parts import clean_part

    raw = [f"word{i} pie" for i in range(300)]
    twins = [f"The WORD{i}, pie!" for i in range(300)]
    df = pd.DataFrame({"text": raw + twins, "label": ["x"] * 600})
    part = clean_part(df, CleanSpec().model_dump(mode="python"), {"test_fraction": 0.3, "seed": 0})
    assert part["text"][:300] == part["text"][300:]
    assert (part["is_test"][:300] == part["is_test"][300:]).all()
    assert (part["val_hash"][:300] == part["val_hash"][300:]).all()
    # the raw texts alone would have split many of these twins
    assert (test_mask(raw, 0.3, 0) != test_mask(twins, 0.3, 0)).sum() > 50


def test_a_stratified_split_gives_each_small_label_its_share_of_test_rows():
    rng = np.random.default_rng(0)
    sizes = {"rare": 3, "few": 10, "some": 40, "one": 1, "two": 2}
    per_part = [{lab: rng.random(n // 2) for lab, n in sizes.items()},
                {lab: rng.random(n - n // 2) for lab, n in sizes.items()}]
    thresholds = split.stratified_thresholds(per_part, 0.2)
    for lab, n in sizes.items():
        test = sum(int((p[lab] < thresholds[lab]).sum()) for p in per_part)
        expected = 0 if n == 1 else min(n - 1, max(1, round(0.2 * n)))
        assert test == expected, (lab, test, expected)
    # rows of one text share a hash: never on both sides
    for hashes in ([0.1, 0.1, 0.5, 0.9], [0.1, 0.5, 0.5, 0.9]):
        h = np.array(hashes)
        side = h < split.stratified_thresholds([{"dup": h}], 0.5)["dup"]
        assert len(set(side[h == 0.1])) == 1 and len(set(side[h == 0.5])) == 1
    held = split.held_out(np.array([0.05, 0.15, 0.5]), np.array(["dup", "big", "big"], dtype=object),
                          0.2, {"dup": 0.01})
    assert held.tolist() == [False, True, False]  # dup by its own threshold, big by the fraction


def test_small_labels_are_counted_over_every_partition():
    stats = [{"train_labels": {"a": 600, "b": 3}, "test_labels": {"a": 150}},
             {"train_labels": {"a": 300, "c": 1}, "test_labels": {"b": 1}}]
    assert split.small_labels(stats) == ["b", "c"]  # a: 1050 rows, over the limit of 1000
