"""Per-partition tasks of the batch (worker side).

Every function here runs on a worker, takes plain arguments (paths, dicts, numbers) and returns
plain data (pandas, numpy, scipy). Imports are limited to the worker stack.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from runner.batch.features import vectorize
from runner.batch.split import held_out, unit_hash
from runner.batch.text import make_cleaner

COLUMNS = ["text", "label"]


def read_shard(path) -> pd.DataFrame:
    """One parquet shard as a DataFrame with object columns text and label (a partition the
    workers already hold, read where the corpus lives, is passed through as it is)."""
    if isinstance(path, pd.DataFrame):
        return path
    table = pq.read_table(path, columns=COLUMNS)
    return pd.DataFrame({c: np.asarray(table.column(c).to_pylist(), dtype=object)
                         for c in COLUMNS})


def _present(values: np.ndarray) -> np.ndarray:
    return np.fromiter(
        (isinstance(v, str) and v.strip() != "" for v in values), dtype=bool, count=len(values)
    )


def clean_part(df: pd.DataFrame, clean_params: dict, split_params: dict) -> dict:
    """Drop rows without text or label, assign the split, clean the text."""
    text = df["text"].to_numpy(dtype=object)
    label = df["label"].to_numpy(dtype=object)
    keep = _present(text) & _present(label)
    text = np.asarray([t.strip() for t in text[keep]], dtype=object)
    label = np.asarray([lab.strip() for lab in label[keep]], dtype=object)
    clean = make_cleaner(clean_params)
    cleaned = [clean(t) for t in text]
    # the split hashes the cleaned text: texts that differ only in case, punctuation or stop
    # words are the same document to the model, so they must fall on the same side
    split_hash = unit_hash(cleaned, split_params["seed"])
    is_test = held_out(split_hash, label, split_params["test_fraction"],
                        split_params.get("thresholds"))
    return {
        "rows": int(len(df)),
        "dropped": int((~keep).sum()),
        "text": cleaned,
        "label": label,
        "is_test": is_test,
        "split_hash": split_hash,
        # a second, independent hash: the validation split of the training rows (grid search)
        "val_hash": unit_hash(cleaned, int(split_params["seed"]) + 1),
    }


def label_hashes(part: dict, labels: list[str]) -> dict:
    """The split hashes of the rows of each of ``labels`` (the small ones, for a stratified
    split: ``split.stratified_thresholds``)."""
    wanted = set(labels)
    out: dict[str, list[float]] = {}
    for lab, h in zip(part["label"], part["split_hash"], strict=True):
        if lab in wanted:
            out.setdefault(lab, []).append(h)
    return {lab: np.asarray(h, dtype=np.float64) for lab, h in out.items()}


def with_thresholds(part: dict, split_params: dict) -> dict:
    """The cleaned partition with its test rows chosen again by ``split_params`` (its
    ``thresholds`` per label)."""
    return {**part, "is_test": held_out(part["split_hash"], part["label"],
                                         split_params["test_fraction"],
                                         split_params.get("thresholds"))}


def shard_label_hashes(path: str, clean_params: dict, split_params: dict, labels: list[str]):
    """``label_hashes`` of a shard read and cleaned inside the task (nothing kept)."""
    return label_hashes(clean_part(read_shard(path), clean_params, split_params), labels)


def vectorize_part(part: dict, vectorizer_params: dict) -> dict:
    """Hashed features, already split into train and test (the matrices stay on the worker)."""
    X = vectorize(part["text"], vectorizer_params)
    is_test = part["is_test"]
    return {
        "X_train": X[~is_test],
        "y_train": part["label"][~is_test],
        "val_hash": part["val_hash"][~is_test],
        "X_test": X[is_test],
        "y_test": part["label"][is_test],
    }


# texts per partition looked at for the script (``features.analyzer: auto``): partitions are
# mixed, so a sample tells the corpus's script, and a huge partition costs no more
SCRIPT_SAMPLE = 2000


def part_stats(part: dict) -> dict:
    """Row counts and label counts of a cleaned partition (a cheap pass for the client), and
    how many of a sample of its texts are written without spaces."""
    from runner.batch.text import unspaced

    label, is_test = part["label"], part["is_test"]
    sample = part["text"][:SCRIPT_SAMPLE]
    train = pd.Series(label[~is_test], dtype=object).value_counts()
    test = pd.Series(label[is_test], dtype=object).value_counts()
    return {
        "rows": part["rows"],
        "dropped": part["dropped"],
        "train_labels": {str(k): int(v) for k, v in train.items()},
        "test_labels": {str(k): int(v) for k, v in test.items()},
        "sampled_texts": len(sample),
        "unspaced_texts": sum(1 for t in sample if unspaced(t)),
    }


def carve_validation(part: dict, fraction: float, seed: int) -> dict:
    """The partition's training rows split again by the text hash (another seed): ``X_train``
    keeps the rows to fit on, ``X_test`` holds the validation rows (for the grid search)."""
    keep = part["val_hash"] >= float(fraction)
    return {"X_train": part["X_train"][keep], "y_train": part["y_train"][keep],
            "X_test": part["X_train"][~keep], "y_test": part["y_train"][~keep]}


def train_frequencies(part: dict) -> dict:
    """Document frequencies of the partition's training rows (for TF-IDF)."""
    from runner.batch.features import document_frequencies

    return document_frequencies(part["X_train"])


def tfidf_part(part: dict, idf, norm: str | None) -> dict:
    """The partition with raw counts replaced by tf-idf weights (train and test rows)."""
    from runner.batch.features import apply_idf

    return {**part, "X_train": apply_idf(part["X_train"], idf, norm),
            "X_test": apply_idf(part["X_test"], idf, norm)}


# Without the feature cache (``features.cache: false``) nothing per partition stays on the
# workers between passes: every task of a pass reads its shard again, cleans, splits and hashes
# it (the same functions as above, so the same rows, split and features), does its work and
# returns only the small result. ``load_params``: {"clean": ..., "split": ..., "vectorizer": ...}.


def shard_stats(path: str, clean_params: dict, split_params: dict) -> dict:
    """``part_stats`` of a shard read and cleaned inside the task (the data is not kept)."""
    return part_stats(clean_part(read_shard(path), clean_params, split_params))


def shard_features(path: str, load_params: dict, idf=None) -> dict:
    """The vectorized partition of one shard, as ``vectorize_part`` (and ``tfidf_part`` with
    ``idf``) would give from the cached pipeline."""
    part = clean_part(read_shard(path), load_params["clean"], load_params["split"])
    vec = vectorize_part(part, load_params["vectorizer"])
    del part
    if idf is not None:
        vec = tfidf_part(vec, idf, load_params["vectorizer"].get("norm"))
    return vec


def on_shard(func, path: str, load_params: dict, idf, *args):
    """``func(partition, *args)`` on the partition rebuilt from the shard at ``path``; only
    ``func``'s result leaves the task."""
    return func(shard_features(path, load_params, idf), *args)


def shard_here_or_fetched(path: str, load_params: dict, idf=None, holders=None) -> dict:
    """``shard_features`` of the shard at ``path`` when this host has it; else (a group task
    that moved off its host: its worker was lost, or mixing has fewer groups than hosts) rebuilt
    by a task on one of ``holders`` (the hosts that hold it), and only the partition comes here."""
    if holders is None or os.path.exists(path):
        return shard_features(path, load_params, idf)
    from distributed import worker_client

    with worker_client() as client:  # secedes: the wait holds no thread of this worker
        return client.submit(shard_features, path, load_params, idf, workers=list(holders),
                             pure=False).result()


class LazyParts:
    """The partitions of several shards, each rebuilt (``shard_features``) when it is reached
    and dropped after: a worker streams its shards through one task in bounded memory.
    ``holders``: per shard, the hosts that hold it (``shard_here_or_fetched``)."""

    def __init__(self, paths: list[str], load_params: dict, idf=None, holders=None):
        self.paths, self.load_params, self.idf, self.holders = paths, load_params, idf, holders

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        return shard_here_or_fetched(self.paths[i], self.load_params, self.idf,
                                     None if self.holders is None else self.holders[i])


def on_shards(func, paths: list[str], load_params: dict, idf, *args, holders=None):
    """``func(partitions, *args)`` over the shards at ``paths``, rebuilt one at a time."""
    return func(LazyParts(list(paths), load_params, idf, holders), *args)


BATCH_ROWS = 20_000


def batches(parts, order, x_key: str, y_key: str, min_rows: int = BATCH_ROWS):
    """(X, y) of the partitions in ``order``, consecutive ones stacked until at least
    ``min_rows`` rows (the last batch may be smaller). scikit-learn's linear models pay a cost of
    the order of classes x features on every call (a copy of the weights), so a worker with many
    small partitions makes few large calls, with a bounded copy of its rows."""
    import scipy.sparse as sp

    Xs, ys, n = [], [], 0
    for j in order:
        part = parts[int(j)]
        X = part[x_key]
        if X.shape[0] == 0:
            continue
        Xs.append(X)
        ys.append(part[y_key])
        n += X.shape[0]
        if n >= min_rows:
            yield (Xs[0] if len(Xs) == 1 else sp.vstack(Xs, format="csr")), np.concatenate(ys)
            Xs, ys, n = [], [], 0
    if Xs:
        yield (Xs[0] if len(Xs) == 1 else sp.vstack(Xs, format="csr")), np.concatenate(ys)
