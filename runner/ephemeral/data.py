"""Ship a prepared dataset to the workers through the scheduler (an ephemeral cluster has no SSH).

Each worker receives the shards as one tar archive and unpacks it at the same path as on a
long-lived cluster (runner.jobs.ship.DATA_DIR/<digest>/), beside the target and renamed into place,
so the job reads its shards the same way everywhere. Stdlib only: it runs on the workers.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

DATA_DIR = "/var/lib/daskfleet/data"  # runner.jobs.ship.DATA_DIR, kept equal by a unit test


def _receive(digest: str, archive: bytes) -> bool:
    dest = os.path.join(DATA_DIR, digest)
    if os.path.exists(os.path.join(dest, "manifest.json")):
        return False
    staging = os.path.join(DATA_DIR, f".{digest}.{os.getpid()}")
    os.makedirs(staging, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4; Debian 12 has 3.11.2
            tar.extractall(staging, filter="data")
        else:
            for m in tar.getmembers():  # our own archive, checked anyway: no path leaves staging
                if m.name.startswith("/") or ".." in m.name.split("/") or not (m.isfile() or m.isdir()):
                    raise ValueError(f"unsafe member {m.name!r} in the dataset archive")
            tar.extractall(staging)
    os.rename(os.path.join(staging, digest), dest)
    os.rmdir(staging)
    return True


def ship_through_dask(client, local_dir: Path, digest: str) -> dict[str, bool]:
    """Send the folder to every worker: worker address -> True when it was unpacked there,
    False when the worker had it already."""
    import cloudpickle

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(local_dir, arcname=digest)
    import runner.ephemeral.data as me

    cloudpickle.register_pickle_by_value(me)  # the workers may import it from the upload only
    return client.run(_receive, digest, buf.getvalue())
