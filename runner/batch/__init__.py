"""The NLP training batch: job file, corpus shards, and the distributed pipeline.

Worker machines import the worker-side modules of this package (text, split, features, parts,
train, evaluate, model) without pydantic or yaml installed, so this file imports nothing eagerly;
the public names are resolved on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = ["JobSpec", "load_job", "prepare_dataset", "Dataset", "run_job", "load_model",
           "predict_texts"]

_WHERE = {
    "JobSpec": "runner.batch.job",
    "load_job": "runner.batch.job",
    "prepare_dataset": "runner.batch.corpus",
    "Dataset": "runner.batch.corpus_shards",
    "run_job": "runner.batch.pipeline",
    "load_model": "runner.batch.model",
    "predict_texts": "runner.batch.model",
}

if TYPE_CHECKING:
    from runner.batch.corpus import prepare_dataset
    from runner.batch.corpus_shards import Dataset
    from runner.batch.job import JobSpec, load_job
    from runner.batch.model import load_model, predict_texts
    from runner.batch.pipeline import run_job


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
