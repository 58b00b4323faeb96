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


def predict_texts(model: dict, texts: Iterable[str | None]) -> list[str]:
    """Labels for raw texts (a missing one is read as empty): the same cleaning and hashing as
    training, then the classifier."""
    strings = ["" if t is None else str(t) for t in texts]
    if not strings:
        return []
    clean = make_cleaner(model["clean"])
    X = vectorize([clean(t) for t in strings], model["vectorizer"], model.get("idf"))
    return [str(p) for p in model["classifier"].predict(X)]


def score_kind(model: dict) -> str:
    """"probability" when the classifier gives class probabilities (log_loss, modified_huber,
    naive Bayes), else "decision" (its decision function: hinge and the other margins)."""
    # scikit-learn hides predict_proba where the loss has none
    return "probability" if hasattr(model["classifier"], "predict_proba") else "decision"


def score_texts(model: dict, texts: list[str | None]):
    """(class labels, predictions, n_texts x n_classes scores) from one cleaning and hashing of
    ``texts``: scores are probabilities or decision scores (``score_kind``)."""
    import numpy as np

    clean = make_cleaner(model["clean"])
    X = vectorize([clean("" if t is None else str(t)) for t in texts], model["vectorizer"],
                  model.get("idf"))
    clf = model["classifier"]
    labels = [str(c) for c in clf.classes_]
    predictions = [str(p) for p in clf.predict(X)]
    if score_kind(model) == "probability":
        return labels, predictions, clf.predict_proba(X)
    scores = clf.decision_function(X)
    if scores.ndim == 1:  # two classes: one margin, positive for the second class
        scores = np.column_stack([-scores, scores])
    return labels, predictions, scores


def predict_shard(path: str, model: dict, top_k: int = 0, proba: bool = False):
    """Worker side: predictions for one prediction-input shard (columns row, text, label);
    ``predict_frame`` says what comes back."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["row", "text", "label"])
    return predict_frame(table.to_pandas(), model, top_k, proba)


def predict_frame(frame, model: dict, top_k: int = 0, proba: bool = False):
    """Predictions for the rows of ``frame`` (columns row, text, label).

    Returns a DataFrame with the rows' numbers, their label (None when the input had none)
    and the prediction: one per input row, rows without text predicted from the empty text.
    With ``top_k``, columns top_1..top_k and score_1..score_k (the best classes, best first);
    with ``proba``, one score column per class (``score:<label>``). Scores are probabilities or
    decision scores (``score_kind``).
    """
    import numpy as np
    import pandas as pd

    texts = [t if isinstance(t, str) else None for t in frame["text"].tolist()]
    out = {"row": frame["row"].to_numpy(dtype=np.int64),
           "label": pd.Series([v if isinstance(v, str) else None for v in frame["label"]],
                              dtype=object)}
    if not (top_k or proba):
        out["prediction"] = pd.Series(predict_texts(model, texts), dtype=object)
        return pd.DataFrame(out)
    labels, predictions, scores = score_texts(model, texts)
    out["prediction"] = pd.Series(predictions, dtype=object)
    if top_k:
        best = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        for k in range(best.shape[1]):
            out[f"top_{k + 1}"] = pd.Series([labels[j] for j in best[:, k]], dtype=object)
            out[f"score_{k + 1}"] = scores[np.arange(len(texts)), best[:, k]]
    if proba:
        for j, label in enumerate(labels):
            out[f"score:{label}"] = scores[:, j]
    return pd.DataFrame(out)
