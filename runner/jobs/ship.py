"""Ship a prepared dataset (a folder of parquet shards) to every worker host, once.

On each host it lands in /var/lib/daskfleet/data/<cluster>/<digest>/ (a folder the playbook makes
readable by the login user and the cluster's own user only: another cluster on the host cannot
read it); a host that already holds that digest's manifest is skipped, so re-running a job sends
nothing.
"""

from __future__ import annotations

import os
import shlex
import tarfile
import tempfile
from pathlib import Path

from runner.cluster.hosts import Host
from runner.cluster.ssh import SSHSettings, connect, fan_out
from runner.errors import HostError

DATA_DIR = "/var/lib/daskfleet/data"


def remote_dir(digest: str, cluster: str | None = None) -> str:
    """Where a dataset lives on a node: the cluster's own folder (an ephemeral cluster's
    instances serve one cluster: no ``cluster``)."""
    return f"{DATA_DIR}/{cluster}/{digest}" if cluster else f"{DATA_DIR}/{digest}"


def ship(local_dir: Path, digest: str, hosts: list[Host], ssh: SSHSettings,
         cluster: str) -> dict[Host, bool]:
    """Return host -> True when the data was sent, False when the host had it already."""
    dest = remote_dir(digest, cluster)
    base = f"{DATA_DIR}/{cluster}"
    with tempfile.TemporaryDirectory(prefix="daskfleet-ship-") as tmp:
        archive = Path(tmp) / f"{digest}.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(local_dir, arcname=digest)

        def send(host: Host) -> bool:
            with connect(host, ssh) as c:
                if c.run(f"test -f {shlex.quote(dest)}/manifest.json").ok:
                    return False
                remote_tar = f"{base}/.{digest}.{os.getpid()}.tar"
                staging = f"{base}/.{digest}.{os.getpid()}"
                if not c.run(f"test -d {shlex.quote(base)} -a -w {shlex.quote(base)}").ok:
                    raise HostError(
                        f"{host.name}: {base} is missing or not writable by {host.user}; the "
                        f"cluster's data folder is made by the playbook: run `daskfleet up` "
                        "first.", failures={host: RuntimeError(base)})
                c.run(f"mkdir -p {shlex.quote(staging)}", warn=False)
                c.put(str(archive), remote_tar)
                # Unpack beside the target and rename: a reader never sees half a dataset.
                c.run(f"tar -xf {remote_tar} -C {staging} && rm -rf {shlex.quote(dest)} && "
                      f"mv {staging}/{digest} {shlex.quote(dest)} && rm -rf {remote_tar} {staging}",
                      warn=False)
                return True

        return fan_out(hosts, send, "shipping the dataset")
