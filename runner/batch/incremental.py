"""The sequential baseline: dask-ml's ``Incremental`` wrapping ``SGDClassifier``.

One epoch is one ``Incremental.partial_fit`` over a dask array whose blocks are the partitions'
training matrices (scipy.sparse blocks, kept on the workers where they were built): the model
visits the blocks one after another, so it sees every row in sequence, as a single
``partial_fit`` loop would, at the cost of no parallelism in training. It is here to measure the
parallel ``sgd`` against (bench/training.py).

Checked with dask-ml 2025.1.0, dask 2026.8 and pandas 3: this works when every block's row count
is known (``da.from_delayed`` with exact shapes, taken from the clean phase's counts); dask-ml's
HashingVectorizer is not used (its meta inference fails on a pandas 3 Series). Each epoch's
``partial_fit`` starts from the model held by the client, so the weights travel client -> graph
once per epoch (20 MB for 10 classes x 2**18 features).
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Sequence

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
from dask_ml.wrappers import Incremental
from sklearn.linear_model import SGDClassifier


def partitions_as_arrays(parts: Sequence, n_rows: Sequence[int], n_features: int):
    """(X, y) dask arrays over the partitions' training rows (futures of vectorize_part dicts)."""
    xs, ys = [], []
    for part, n in zip(parts, n_rows, strict=True):
        if n == 0:
            continue
        xs.append(da.from_delayed(dask.delayed(operator.getitem)(part, "X_train"),
                                  shape=(n, n_features), dtype=np.float32,
                                  meta=sp.csr_matrix((0, n_features), dtype=np.float32)))
        ys.append(da.from_delayed(dask.delayed(operator.getitem)(part, "y_train"),
                                  shape=(n,), dtype=object))
    return da.concatenate(xs, axis=0), da.concatenate(ys, axis=0)


def fit_incremental(parts: Sequence, n_rows: Sequence[int], n_features: int, classes: list[str],
                    sgd_params: dict, epochs: int, on_epoch=None) -> SGDClassifier:
    """``epochs`` sequential passes of SGDClassifier.partial_fit over the partitions."""
    X, y = partitions_as_arrays(parts, n_rows, n_features)
    inc = Incremental(SGDClassifier(**sgd_params), scoring=None, shuffle_blocks=True,
                      random_state=sgd_params.get("random_state"))
    for epoch in range(epochs):
        with warnings.catch_warnings():
            # from the second epoch on, dask-ml embeds the fitted model (k x n_features weights)
            # in the graph it sends: distributed warns about the large graph on every epoch
            warnings.filterwarnings("ignore", message="Sending large graph")
            inc.partial_fit(X, y, classes=np.asarray(classes, dtype=object))
        if on_epoch is not None:
            on_epoch(epoch)
    return inc.estimator_
