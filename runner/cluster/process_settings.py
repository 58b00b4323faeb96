"""What every Dask process of a cluster shares, whichever it is: its folders and files on a node
(per cluster, so clusters sharing a host never touch each other's), the system user it runs as,
`dask-<cluster>` (``cluster_user``, created by playbooks/roles/dask_node), with the shell that
switches to that user or to root (``as_user``, ``privileged``: root switches with runuser, any
other login through `sudo -n`), the DaskSettings the cluster file gives it, and ProcStatus,
what its node reports of it.

Apart from runner.cluster.processes (one process: its commands, scripts and identity), which
imports it, so code that needs only these (detached runs, provisioning, memory claims) does not
import the process machinery.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from typing import Literal

from runner.cluster.hosts import Host

# Per cluster, so clusters sharing a host never touch each other's environment link or config.
ENV_LINK = "/opt/daskfleet/clusters/{cluster}/current"
DASK_CONFIG = "/etc/daskfleet/{cluster}/dask"
LOG_DIR = "/var/log/daskfleet"
RUN_DIR = "/run/daskfleet"  # a tmpfs: a reboot clears what it records of the processes
# A cluster's own folder (its user's, 0700): its processes' working folder and the compiled
# bytecode of the environments, written by its user (who cannot write into them): without it
# every process start compiles numpy, pandas and distributed again (about 2 s of a scheduler's
# start on the lab). The cache mirrors each module's path: /opt/daskfleet/envs/<hash>/...
CLUSTER_DIR = "/var/lib/daskfleet/clusters/{cluster}"
WORK_DIR = CLUSTER_DIR + "/work"
PYCACHE_DIR = CLUSTER_DIR + "/pycache"


def cluster_user(cluster: str) -> str:
    """The system user of a cluster's processes: ``dask-<cluster>``; Linux user names are at
    most 32 characters, so a longer one is cut and told apart by a hash of the whole name."""
    name = f"dask-{cluster}"
    if len(name) <= 32:
        return name
    return f"dask-{cluster[:17]}-{hashlib.sha256(cluster.encode()).hexdigest()[:8]}"


def privileged(host: Host, script: str) -> str:
    """A shell command that runs `script` as root on `host`: as is for a root login, else
    through sudo (never prompting: a login without passwordless sudo fails at once)."""
    return shlex.join(["sudo", "-n", "--", "sh", "-c", script]) if host.become else script


def as_user(host: Host, user: str, script: str) -> str:
    """A shell command that runs `script` (bash) as ``user``, a cluster's user."""
    # bash, not sh: Debian's sh (dash) takes `kill -TERM -- -PGID` as a bad pid and kills
    # nothing, so a process group would never be stopped.
    return privileged(host, shlex.join(["runuser", "-u", user, "--", "bash", "-c", script]))


@dataclass(frozen=True)
class DaskSettings:
    cluster: str = "default"
    scheduler_port: int = 8786
    dashboard_port: int = 8787
    worker_port_range: str = "40000:40099"
    nanny_port_range: str = "40100:40199"
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    tls: bool = True
    memory_share: float | None = None  # of each host, for all of the cluster's workers there
    # (flag, value) pairs for `ulimit`, set by root before the switch to the cluster's user
    limits: tuple[tuple[str, str], ...] = ()

    @property
    def protocol(self) -> str:
        return "tls" if self.tls else "tcp"

    @property
    def user(self) -> str:
        return cluster_user(self.cluster)

    @property
    def run_dir(self) -> str:
        """What the cluster's processes' starts record (the digest of the node files each
        started with; an older daskfleet's pid files): on the tmpfs, made again at each start."""
        return f"{RUN_DIR}/{self.cluster}"

    @property
    def work_dir(self) -> str:
        return WORK_DIR.format(cluster=self.cluster)


State = Literal["running", "dead", "unreachable"]


@dataclass(frozen=True)
class ProcStatus:
    state: State
    pid: int | None = None
    env: str | None = None  # the lock hash of the environment it runs from
    memory_limit: str | None = None  # a worker's --memory-limit, as it was started
    spec: str | None = None  # the spec digest it was started with (command line, environment)
    files: str | None = None  # the digest of its node files (config, certificates) at its start
    files_now: str | None = None  # the same digest of the files on the node now
    unit: bool | None = None  # whether systemd runs it as its unit (False: an older daskfleet's)
    restarts: int | None = None  # how often systemd has started it again since its unit's start
