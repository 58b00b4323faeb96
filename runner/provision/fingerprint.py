"""Ansible only where it would change something.

After a successful playbook run every node records a fingerprint of what it was provisioned with:
the playbooks, the shared and the cluster's variables (environment hash, TLS on or off), the
host's login and its TLS files. A later `up` reads the records (one SSH command per host, which
also checks that the environment and the cluster's link and config are still in place) and runs
the playbook only on hosts whose record differs. `up --force` runs it everywhere.

A record has two parts, ``<everything else>:<TLS files>``. When only the TLS part differs on every
host to do (a certificate rotation, a CA change's phase), only the playbook's `tls` tasks run:
a few file copies per host instead of the whole environment check.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from typing import TYPE_CHECKING

from runner.cluster.hosts import Host
from runner.cluster.process_settings import privileged
from runner.cluster.ssh import connect, fan_out
from runner.errors import HostError
from runner.provision.ansible import PLAYBOOKS
from runner.provision.inventory import SHARED_VARS

if TYPE_CHECKING:
    from runner.cluster.cluster import Cluster

ENVS = "/opt/daskfleet/envs"  # python_env_root of the playbook's python_env role


def record_path(cluster: str) -> str:
    return f"/var/lib/daskfleet/{cluster}/provisioned"


def expected(cluster: Cluster, host: Host, variables: dict) -> str:
    """What `host` would be provisioned with by this `up`: ``<the rest>:<its TLS files>``."""
    h = hashlib.sha256()
    for path in sorted(p for p in [*PLAYBOOKS.rglob("*"), SHARED_VARS] if p.is_file()):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(json.dumps(variables, sort_keys=True, default=str).encode())
    h.update(json.dumps([host.name, host.user, host.port, host.become]).encode())
    tls = hashlib.sha256()
    if cluster.spec.tls:
        ca = cluster.ca
        for path in (ca.ca_cert, ca.cert(host.name), ca.key(host.name)):
            tls.update(path.read_bytes() if path.exists() else b"-")
    return f"{h.hexdigest()}:{tls.hexdigest()}"


def difference(found: str | None, wanted: str) -> str | None:
    """What a host lacks, from its record: None (nothing), "tls" (only its TLS files) or "all"
    (no record, an unreadable one, or anything besides TLS)."""
    if found == wanted:
        return None
    rest, _, _ = wanted.partition(":")
    return "tls" if found and found.count(":") == 1 and found.split(":")[0] == rest else "all"


def _probe(cluster: str, env_hash: str, root: str = "") -> str:
    """Prints the node's record, if its environment, link and config are still in place.
    ``root``: a folder standing for / (tests run the script against one)."""
    env = f"{ENVS}/{env_hash}"
    q = shlex.quote
    return (f"[ -e {q(root + env)}/.daskfleet-complete ] && "
            f"[ \"$(readlink {q(f'{root}/opt/daskfleet/clusters/{cluster}/current')})\" = "
            f"{q(env)} ] && [ -e {q(f'{root}/etc/daskfleet/{cluster}/dask/daskfleet.yaml')} ] "
            f"&& cat {q(root + record_path(cluster))} 2>/dev/null; true")


def records(cluster: Cluster, hosts: list[Host], env_hashes: dict[str, str]) -> dict[str, str]:
    """Host name -> its record, for the hosts whose environment, link and config are in place
    (an unreachable host, or one without a record, reads as "")."""
    name = cluster.spec.name

    def read(h: Host) -> str:
        with connect(h, cluster.ssh()) as c:
            return c.run(privileged(h, _probe(name, env_hashes[h.name]))).stdout.strip()

    known = [h for h in hosts if h.name in env_hashes]
    try:
        found = fan_out(known, read, "reading what the nodes were provisioned with")
    except HostError as e:
        found = e.results
    return {h.name: fp for h, fp in found.items()}


def record(cluster: Cluster, hosts: list[Host], wanted: dict[str, str]) -> None:
    """Write each host's record, after the playbook succeeded on it."""
    path = record_path(cluster.spec.name)

    def write(h: Host) -> None:
        script = (f"mkdir -p {shlex.quote(path.rsplit('/', 1)[0])} && "
                  f"printf '%s\\n' {shlex.quote(wanted[h.name])} > {shlex.quote(path)}.tmp && "
                  f"mv {shlex.quote(path)}.tmp {shlex.quote(path)}")
        with connect(h, cluster.ssh()) as c:
            c.run(privileged(h, script), warn=False)

    fan_out([h for h in hosts if h.name in wanted], write, "recording what the nodes have")
