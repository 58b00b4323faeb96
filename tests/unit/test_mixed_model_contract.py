"""The parallel SGD rebuilds a classifier from mixed weights (`train.make_classifier`: coef_,
intercept_, t_, classes_, n_features_in_ set on a fresh SGDClassifier). That is not public
scikit-learn API, so it is pinned here against the locked scikit-learn: a classifier rebuilt
from another's state must continue training exactly as that one does, and predict as it does."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import sklearn
from sklearn.linear_model import SGDClassifier

from runner.batch.train import make_classifier

PARAMS = {"loss": "hinge", "alpha": 1e-4, "random_state": 3}


def batch(seed: int, n: int = 300, d: int = 64):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.2, format="csr", random_state=seed, dtype=np.float32)
    y = np.asarray(rng.integers(0, 3, n))
    X = X + sp.csr_matrix((np.full(n, 2.0, np.float32), (np.arange(n), y * 5)), shape=(n, d))
    return X.tocsr(), y


@pytest.mark.parametrize("loss", ["hinge", "log_loss"])
def test_a_rebuilt_classifier_continues_exactly_as_scikit_learn_would(loss):
    classes = np.arange(3)
    params = {**PARAMS, "loss": loss}
    first = SGDClassifier(**params)
    first.partial_fit(*batch(1), classes=classes)
    state = {"coef": first.coef_, "intercept": first.intercept_, "t": first.t_, "epochs": 1}
    rebuilt = make_classifier(state, classes, params)
    X2, y2 = batch(2)
    first.partial_fit(X2, y2)
    rebuilt.partial_fit(X2, y2, classes=classes)
    message = (f"scikit-learn {sklearn.__version__} no longer continues from the state "
               "train.make_classifier sets (coef_, intercept_, t_, classes_, n_features_in_): "
               "check its SGDClassifier internals and update make_classifier")
    np.testing.assert_allclose(rebuilt.coef_, first.coef_, rtol=1e-5, atol=1e-6, err_msg=message)
    np.testing.assert_allclose(rebuilt.intercept_, first.intercept_, rtol=1e-5, atol=1e-6,
                               err_msg=message)
    assert rebuilt.t_ == first.t_, message
    X3, _ = batch(3)
    assert (rebuilt.predict(X3) == first.predict(X3)).all(), message
