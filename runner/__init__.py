"""daskfleet: provision a Dask cluster and run NLP batches on it.

Kept import-light: the nodes import `runner.batch` with only the worker stack installed, so the
control-side API (`from runner import Cluster`) is loaded on first use.
"""


def __getattr__(name: str):
    if name == "Cluster":
        from runner.cluster.cluster import Cluster

        return Cluster
    raise AttributeError(f"module 'runner' has no attribute {name!r}")


__all__ = ["Cluster"]
