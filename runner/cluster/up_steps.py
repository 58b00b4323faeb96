"""`up`'s steps once the cluster's lock is held: Terraform, Ansible and the reconcile, each timed
(UpSummary), with the workers of machines that go retired before Terraform removes them.

Apart from runner.cluster.cluster, whose `apply` delegates here (`up` and `rotate` run it), so
that module stays the face of a cluster: its hosts, client and commands.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runner import state
from runner.cluster import running
from runner.cluster.hosts import Host
from runner.log import Progress, Say

if TYPE_CHECKING:
    from runner.cluster.cluster import Cluster

logger = logging.getLogger(__name__)


@dataclass
class UpSummary:
    timings: dict[str, float] = field(default_factory=dict)
    changed: int = 0
    started: list[str] = field(default_factory=list)
    lock_hash: str = ""

    def line(self) -> str:
        phases = " ".join(f"{k}={v:.1f}s" for k, v in self.timings.items())
        started = ", ".join(self.started) or "nothing (all running)"
        return f"up: {phases} changed={self.changed}; started: {started}"


def apply(cluster: Cluster, progress: Progress | None, force: bool = False,
          restart: bool = False, yes: bool = False) -> UpSummary:
    """`up`'s work (Terraform, Ansible, the reconcile), the cluster's lock already held."""
    say = Say(progress, logger)
    summary = UpSummary()
    t = time.monotonic()
    say("terraform: apply")
    cluster.boot_s = 0.0
    # Hosts the last `up` provisioned: any that the file no longer names get closed.
    before = [Host.from_dict(h) for h in state.read(cluster.state_dir).get("hosts") or []]
    planned = cluster.provider.planned_names()
    going = [h for h in before if planned is not None and h.name not in planned]
    # their workers' data moves before Terraform removes the machines: once the plan is
    # accepted (a refused plan leaves every process running)
    def retire_going() -> None:
        running.close_hosts(cluster, going, progress)
        # nor does a connection to a machine Terraform destroys stay pooled: the next step
        # lists what ran there, and a dead peer's connection would hang rather than fail
        cluster.pool.drop(going)
        # no client idles through Terraform's minutes (its tunnel's SSH connection could
        # drop meanwhile, and the client give up on it): the next step makes a new one
        cluster.close_client()

    hosts = cluster.provision(progress, yes, before_apply=retire_going if going else None)
    summary.timings["terraform"] = time.monotonic() - t - cluster.boot_s
    if cluster.provider.tunnel:  # new VMs: until each answers over SSH with its host key
        summary.timings["boot"] = cluster.boot_s
    t = time.monotonic()
    say(f"ansible: installing the environment on {len(hosts)} hosts")
    result, env_hashes = cluster.install(hosts, progress, force)
    summary.lock_hash = ", ".join(sorted(set(env_hashes.values())))
    summary.changed = result.changed
    summary.timings["ansible"] = time.monotonic() - t
    t = time.monotonic()
    summary.started = cluster.start(env_hashes, progress, extra_hosts=[
        h for h in before if h.name not in {x.name for x in hosts}], restart_scheduler=restart)
    summary.timings["start"] = time.monotonic() - t
    cluster.check_versions()
    return summary
