"""Ship a prepared dataset (a folder of parquet shards) to every worker host, once.

On each host it lands in /var/lib/daskfleet/data/<digest>/; a host that already holds that digest's
manifest is skipped, so re-running a job sends nothing.
"""

from __future__ import annotations

import os
import shlex
import tarfile
import tempfile
from pathlib import Path

from runner.cluster.hosts import Host
from runner.cluster.ssh import SSHSettings, connect, fan_out

DATA_DIR = "/var/lib/daskfleet/data"


def remote_dir(digest: str) -> str:
    return f"{DATA_DIR}/{digest}"


def ship(local_dir: Path, digest: str, hosts: list[Host], ssh: SSHSettings) -> dict[Host, bool]:
    """Return host -> True when the data was sent, False when the host had it already."""
    dest = remote_dir(digest)
    with tempfile.TemporaryDirectory(prefix="daskfleet-ship-") as tmp:
        archive = Path(tmp) / f"{digest}.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(local_dir, arcname=digest)

        def send(host: Host) -> bool:
            with connect(host, ssh) as c:
                if c.run(f"test -f {shlex.quote(dest)}/manifest.json").ok:
                    return False
                remote_tar = f"{DATA_DIR}/.{digest}.{os.getpid()}.tar"
                staging = f"{DATA_DIR}/.{digest}.{os.getpid()}"
                c.run(f"mkdir -p {DATA_DIR} {shlex.quote(staging)}", warn=False)
                c.put(str(archive), remote_tar)
                # Unpack beside the target and rename: a reader never sees half a dataset.
                c.run(f"tar -xf {remote_tar} -C {staging} && rm -rf {shlex.quote(dest)} && "
                      f"mv {staging}/{digest} {shlex.quote(dest)} && rm -rf {remote_tar} {staging}",
                      warn=False)
                return True

        return fan_out(hosts, send, "shipping the dataset")
