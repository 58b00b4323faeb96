"""Ship a prepared dataset to the workers through the scheduler (an ephemeral cluster has no SSH).

Each shard goes to ``copies`` of the workers' hosts (runner.jobs.ship.placement, as over SSH on a
long-lived cluster), so the control machine sends about ``copies`` x the corpus whatever the
number of workers, and each host stores its share only. A host receives its shards as one tar
archive (built for it alone, one host at a time: never the whole corpus in memory) and unpacks
it at the same path as on a long-lived cluster (runner.jobs.ship.DATA_DIR/<digest>/), each shard
renamed into place whole, so the job reads its shards the same way everywhere. `_receive` is
stdlib only: it runs on the workers.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

DATA_DIR = "/var/lib/daskfleet/data"  # runner.jobs.ship.DATA_DIR, kept equal by a unit test


def _receive(digest: str, archive: bytes) -> list[str]:
    """Unpack the shards of ``archive`` (members ``<digest>/<file>``) that this host lacks;
    returns the names unpacked now."""
    dest = os.path.join(DATA_DIR, digest)
    staging = os.path.join(DATA_DIR, f".{digest}.{os.getpid()}")
    os.makedirs(staging, exist_ok=True)
    os.makedirs(dest, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4; Debian 12 has 3.11.2
                tar.extractall(staging, filter="data")
            else:
                for m in tar.getmembers():  # our own archive, checked anyway: nothing leaves it
                    if m.name.startswith("/") or ".." in m.name.split("/") \
                            or not (m.isfile() or m.isdir()):
                        raise ValueError(f"unsafe member {m.name!r} in the dataset archive")
                tar.extractall(staging)
        got = os.path.join(staging, digest)
        new = []
        for name in sorted(os.listdir(got)):
            if not os.path.exists(os.path.join(dest, name)):
                os.rename(os.path.join(got, name), os.path.join(dest, name))
                new.append(name)
        return new
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _archive(local_dir: Path, digest: str, names: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in names:
            tar.add(local_dir / name, arcname=f"{digest}/{name}")
    return buf.getvalue()


def ship_through_dask(client, local_dir: Path, digest: str, files: list[str],
                      copies: int | None) -> tuple[list[list[str]] | None, dict[str, list[str]]]:
    """Send each of ``files`` to ``copies`` of the workers' hosts (every host when None).
    Returns (per file, the hosts that hold it, or None when every host holds every file;
    host -> the files unpacked there now)."""
    import cloudpickle
    from distributed.comm import get_address_host

    import runner.ephemeral.data as me
    from runner.dask_workers import joined_workers
    from runner.jobs.ship import holders_or_all, placement

    cloudpickle.register_pickle_by_value(me)  # the workers may import it from the upload only
    by_host: dict[str, str] = {}  # host -> one worker on it (a worker's disk is its host's)
    for address in sorted(joined_workers(client)):  # never the client's cached (maybe empty) view
        by_host.setdefault(get_address_host(address), address)
    hosts = sorted(by_host)
    sizes = {f: (local_dir / f).stat().st_size for f in files}
    where = placement(sizes, hosts, copies or len(hosts))
    sent: dict[str, list[str]] = {}
    for host in hosts:
        mine = [f for f in files if host in where[f]]
        if mine:  # one host's archive at a time
            out = client.run(_receive, digest, _archive(local_dir, digest, mine),
                             workers=[by_host[host]])
            sent[host] = out[by_host[host]]
    holders = [list(where[f]) for f in files]
    return holders_or_all(holders, len(hosts)), sent
