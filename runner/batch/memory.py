"""How much memory a job's model needs on a worker at its peak, per model kind (control side,
pure): the check that refuses a job before any feature or training task is built on it.

- sgd, incremental: float32 weights (k x n_features; one row for two classes),
  ``train.TRAINING_COPIES`` copies while training (``train.AVERAGE_COPIES`` more with
  ``average``), plus one more state per further search candidate (their states live side by
  side; two copies each with ``average``).
- naive_bayes: scikit-learn builds dense float64 counts (k x n_features) from the summed sparse
  counts: a fit peaks at ``NB_PEAK_COPIES`` copies (counts, smoothed counts, log probabilities
  and a temporary; measured with tracemalloc for both variants, 4.03 and 4.05) and keeps
  ``NB_KEPT_COPIES``; a search fits one candidate per worker thread at a time, and every fitted
  candidate stays until it is scored.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.batch.train import AVERAGE_COPIES, MEMORY_BUDGET, TRAINING_COPIES, WEIGHT_BYTES

NB_PEAK_COPIES = 4
NB_KEPT_COPIES = 2
NB_VALUE_BYTES = 8  # float64


@dataclass(frozen=True)
class ModelMemory:
    rows: int  # rows of one copy (classes; one for a two-class linear model)
    value_bytes: int
    copies: int  # copies of a rows x n_features matrix held at once at the peak
    what: str  # the copies, in words

    def copy_bytes(self, n_features: int) -> int:
        return self.rows * n_features * self.value_bytes

    def need(self, n_features: int) -> int:
        return self.copies * self.copy_bytes(n_features)


def model_memory(kind: str, n_classes: int, candidates: int = 1, threads: int = 1,
                 average: bool = False) -> ModelMemory:
    if kind == "naive_bayes":
        at_once = max(1, min(candidates, threads))
        copies = NB_PEAK_COPIES * at_once + NB_KEPT_COPIES * (candidates - at_once)
        return ModelMemory(n_classes, NB_VALUE_BYTES, copies,
                           f"{copies} float64 copies of the class-feature counts at the fit's "
                           f"peak" + (f" ({candidates} candidates, {at_once} fitted at once)"
                                      if candidates > 1 else ""))
    rows = 1 if n_classes == 2 else n_classes
    per_state = 2 if average else 1  # the plain weights and their running average
    copies = TRAINING_COPIES + (AVERAGE_COPIES if average else 0) + (candidates - 1) * per_state
    return ModelMemory(rows, WEIGHT_BYTES, copies,
                       f"{copies} float32 copies of the weights while training"
                       + (f" ({candidates} search candidates)" if candidates > 1 else "")
                       + (" (averaged: average)" if average else ""))


def largest_fitting(memory: ModelMemory, limit: int) -> int | None:
    """The largest power-of-two ``n_features`` (at least 16) that fits the workers' budget."""
    n = 2**24
    while n >= 16:
        if memory.need(n) <= MEMORY_BUDGET * limit:
            return n
        n //= 2
    return None
