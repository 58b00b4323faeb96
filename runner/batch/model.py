"""The saved model: ``model.joblib`` in a run folder, usable without any cluster.

The file holds a dict: ``vectorizer`` (features params), ``clean`` (cleaning params),
``classifier`` (a fitted scikit-learn classifier), ``labels`` (its classes, as str), and with
``features.tfidf`` the ``idf`` weights (numpy array, one per hashed feature); ``format`` (the
layout of this dict, MODEL_FORMAT), ``daskfleet`` and ``scikit-learn`` (the versions that wrote
it). A file of another format, or whose classifier scikit-learn says it cannot unpickle safely,
is refused naming both versions.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterable
from pathlib import Path

import joblib

from runner.batch.features import vectorize
from runner.batch.text import make_cleaner
from runner.errors import BatchError

MODEL_KEYS = ("vectorizer", "clean", "classifier", "labels")
MODEL_FORMAT = 1  # bump when the dict's layout changes; files without it are format 1
RETRAIN = "train it again with this daskfleet (`daskfleet submit JOB.yaml`)"


def _daskfleet_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("daskfleet")
    except PackageNotFoundError:
        return "unknown"


def model_stamp() -> dict:
    """The keys that say which daskfleet and scikit-learn wrote a model file."""
    import sklearn

    return {"format": MODEL_FORMAT, "daskfleet": _daskfleet_version(),
            "scikit-learn": sklearn.__version__}


def save_model(path: Path, model: dict) -> None:
    joblib.dump(model, path, compress=3)


def load_model(path: str | Path) -> dict:
    """Load a ``model.joblib`` (or a run folder that holds one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.joblib"
    from sklearn.exceptions import InconsistentVersionWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", InconsistentVersionWarning)
            model = joblib.load(path)
    except FileNotFoundError:
        raise BatchError(f"{path}: model file not found") from None
    except InconsistentVersionWarning as w:
        raise BatchError(
            f"{path}: model file from another daskfleet environment: its {w.estimator_name} was "
            f"written by scikit-learn {w.original_sklearn_version}, this is "
            f"{w.current_sklearn_version}, and the results could be wrong; {RETRAIN}, or "
            "predict with the daskfleet that made it") from None
    except (OSError, EOFError, ValueError, KeyError, AttributeError, ImportError,
            TypeError, pickle.UnpicklingError) as e:  # the ways a damaged file fails to load
        raise BatchError(f"{path}: not a daskfleet model file: {e}; give the model.joblib of a "
                         "run folder (runs/<run-id>/)") from e
    if not isinstance(model, dict) or any(k not in model for k in MODEL_KEYS):
        raise BatchError(f"{path}: not a daskfleet model file (expected keys {MODEL_KEYS}); give "
                         "the model.joblib of a run folder (runs/<run-id>/)")
    if model.get("format", 1) != MODEL_FORMAT:
        raise BatchError(
            f"{path}: model file from another daskfleet version: format {model.get('format')!r} "
            f"written by daskfleet {model.get('daskfleet', 'unknown')}, this daskfleet "
            f"{_daskfleet_version()} reads format {MODEL_FORMAT}; {RETRAIN}, or predict with the "
            "daskfleet that made it")
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
