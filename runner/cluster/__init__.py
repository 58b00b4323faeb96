"""Running a cluster: its hosts, the SSH to them, the Dask processes on them and their reconcile.

`Cluster` is loaded on first use, so importing a helper module (ssh, hosts) stays light.
"""


def __getattr__(name: str):
    if name == "Cluster":
        from runner.cluster.cluster import Cluster

        return Cluster
    raise AttributeError(f"module 'runner.cluster' has no attribute {name!r}")


__all__ = ["Cluster"]
