"""The saved model: ``model.joblib`` in a run folder, usable without any cluster.

The file holds a dict: ``vectorizer`` (features params), ``clean`` (cleaning params),
``classifier`` (a fitted scikit-learn classifier), ``labels`` (its classes, as str), and with
``features.tfidf`` the ``idf`` weights (numpy array, one per hashed feature).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path

import joblib

from runner.batch.features import vectorize
from runner.batch.text import make_cleaner
from runner.errors import BatchError

MODEL_KEYS = ("vectorizer", "clean", "classifier", "labels")


def save_model(path: Path, model: dict) -> None:
    joblib.dump(model, path, compress=3)


def load_model(path: str | Path) -> dict:
    """Load a ``model.joblib`` (or a run folder that holds one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.joblib"
    try:
        model = joblib.load(path)
    except FileNotFoundError:
        raise BatchError(f"{path}: model file not found") from None
    except (OSError, EOFError, ValueError, KeyError, AttributeError, ImportError,
            TypeError, pickle.UnpicklingError) as e:  # the ways a damaged file fails to load
        raise BatchError(f"{path}: not a daskfleet model file: {e}") from e
    if not isinstance(model, dict) or any(k not in model for k in MODEL_KEYS):
        raise BatchError(f"{path}: not a daskfleet model file (expected keys {MODEL_KEYS})")
    return model


def predict_texts(model: dict, texts: Iterable[str]) -> list[str]:
    """Labels for raw texts: the same cleaning and hashing as training, then the classifier."""
    texts = ["" if t is None else str(t) for t in texts]
    if not texts:
        return []
    clean = make_cleaner(model["clean"])
    X = vectorize([clean(t) for t in texts], model["vectorizer"], model.get("idf"))
    return [str(p) for p in model["classifier"].predict(X)]


def predict_shard(path: str, model: dict):
    """Worker side: predictions for one prediction-input shard (columns row, text, label).

    Returns a DataFrame with the shard's row numbers, its label (None when the input had none)
    and the prediction: one per input row, rows without text predicted from the empty text.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["row", "text", "label"])
    texts = table.column("text").to_pylist()
    return pd.DataFrame({
        "row": table.column("row").to_numpy(),
        "label": pd.Series(table.column("label").to_pylist(), dtype=object),
        "prediction": pd.Series(predict_texts(model, texts), dtype=object),
    })
