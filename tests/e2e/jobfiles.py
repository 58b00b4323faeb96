"""Job files the e2e tests submit (imported by the tests of this folder)."""

from __future__ import annotations


def small_job(name: str, seed: int, epochs: int = 2, n_docs: int = 3000) -> str:
    """A job file's text: a small synthetic corpus that trains in seconds on the lab."""
    return (f"name: {name}\ndata:\n  source: synthetic\n  synthetic: {{n_docs: {n_docs}, "
            f"n_classes: 3, vocab_size: 1500, doc_len: 25, noise: 0.02, seed: {seed}}}\n"
            f"features: {{n_features: 16384}}\nmodel: {{kind: sgd, epochs: {epochs}}}\n")


# A job that trains for a while, for tests that act on the cluster while a job runs: 40,000
# synthetic documents of 20 classes (each epoch 20 binary fits, about 0.3-0.5 s on the lab's two
# workers). The corpus does not depend on the name or epochs: it is generated and cached once.
MID_TRAINING = "train: epoch 1/"


def training_job(name: str, epochs: int, n_docs: int = 40000) -> str:
    return (f"name: {name}\ndata:\n  source: synthetic\n  synthetic: {{n_docs: {n_docs}, "
            "n_classes: 20, vocab_size: 5000, doc_len: 40, noise: 0.05, seed: 7}\n"
            f"  shard_rows: 5000\nfeatures: {{n_features: 262144}}\n"
            f"model: {{kind: sgd, epochs: {epochs}}}\n")


def busy_job(name: str, epochs: int) -> str:
    """The training job on 20,000 documents, for tests that end it themselves (`runs finish`,
    cancel, a signal) while they act on the cluster: its 16,000 training rows make one mixed
    model (``train.MIN_MODEL_ROWS``), so it keeps one worker training, its epochs as long as
    ``training_job``'s, and burns half its CPU for as long as the test runs (the full tier's two
    labs share two cores)."""
    return training_job(name, epochs, n_docs=20000)
