"""Job files the e2e tests submit (imported by the tests of this folder)."""

from __future__ import annotations


def small_job(name: str, seed: int, epochs: int = 2, n_docs: int = 3000) -> str:
    """A job file's text: a small synthetic corpus that trains in seconds on the lab."""
    return (f"name: {name}\ndata:\n  source: synthetic\n  synthetic: {{n_docs: {n_docs}, "
            f"n_classes: 3, vocab_size: 1500, doc_len: 25, noise: 0.02, seed: {seed}}}\n"
            f"features: {{n_features: 16384}}\nmodel: {{kind: sgd, epochs: {epochs}}}\n")
