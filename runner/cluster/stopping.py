"""Taking a cluster's processes away: the workers `scale` retires (before the reconcile that
starts the rest), every process on `stop`, and on `down` with destroy the machines too; each
releases the cluster's memory claims on the hosts it leaves.

Apart from runner.cluster.cluster, whose `scale`, `stop` and `down` delegate here (taking the
cluster's lock first where they do).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from runner import state
from runner.cluster import memory_claims, running
from runner.cluster.ssh import describe_ssh_error
from runner.errors import HostError, StateError
from runner.log import Progress, Say
from runner.provision import machines, terraform

if TYPE_CHECKING:
    from runner.cluster.cluster import Cluster

logger = logging.getLogger(__name__)


def scale(cluster: Cluster, n: int, progress: Progress | None) -> dict:
    """`scale`'s work, the cluster's lock held. Retire the workers that go, then reconcile: new
    workers start, and workers whose host now has another number of workers restart with their
    new share of its memory. Worker hosts that cannot be reached are skipped, and named, while
    one worker can run."""
    say = Say(progress, logger)
    before = cluster.wanted()
    after = cluster.wanted(n_workers=n)
    going = [p for p in before if p not in after]
    if going:
        names = [p.name for p in going]
        say(f"retiring {len(going)} worker(s) through the scheduler: {', '.join(names)}")
        running.retire(cluster, going, progress)
        try:
            running.per_process(going, lambda p: p.stop(cluster.ssh()),
                                "stopping retired workers")
        except HostError as e:  # a worker on a host that is down is gone anyway
            say.warning(f"WARNING: {e}")
    state.update(cluster.state_dir, n_workers=n)
    left = {p.host for p in going} - {p.host for p in after}
    if left:  # hosts this cluster no longer runs workers on
        try:
            memory_claims.release(cluster.spec.name, sorted(left, key=lambda h: h.name),
                                  cluster.ssh())
        except HostError as e:
            say.warning(f"WARNING: {e}")
    started = cluster.start(state.read(cluster.state_dir).get("env_hashes"), progress,
                            degraded_ok=True)
    return {"workers": n, "retired": [p.name for p in going], "started": started}


def stop(cluster: Cluster, progress: Progress | None = None) -> list[str]:
    """Stop every dask process this cluster started (workers first); report unreachable ones."""
    say = Say(progress, logger)
    ssh = cluster.ssh()
    hosts = cluster.hosts()  # once: the write below replaces a damaged record
    try:
        n = cluster.n_workers()
    except StateError:  # a damaged record: the hosts' pid files name what runs
        n = len(cluster.worker_hosts(hosts))
    # what the file wants, and whatever else the hosts' pid files record for this cluster
    procs = cluster.wanted(hosts, n)
    procs += [p for p in running.recorded(cluster, hosts) if p not in procs]
    cluster.close_client()
    stopped: list[str] = []
    errors: dict = {}
    for group in ([p for p in procs if p.kind == "worker"],
                  [p for p in procs if p.kind == "scheduler"]):
        with ThreadPoolExecutor(max_workers=max(1, min(32, len(group)))) as pool:
            futs = {p: pool.submit(p.stop, ssh) for p in group}
        for p, f in futs.items():
            try:
                if f.result():
                    stopped.append(f"{p.name}@{p.host.name}")
            except Exception as e:  # noqa: BLE001 - report and keep stopping the rest
                errors[p.host] = e
    state.update(cluster.state_dir, pids={})
    reachable = [h for h in cluster.worker_hosts(hosts) if h not in errors]
    try:  # no worker of this cluster runs there any more: its memory is the others' again
        memory_claims.release(cluster.spec.name, reachable, ssh)
    except HostError as e:
        say.warning(f"WARNING: {e}")
    if errors:
        raise HostError("down: could not stop processes on:\n" + "\n".join(
            f"  {describe_ssh_error(h, e)}" for h, e in errors.items()) +
            "\nThe others were stopped.", failures=errors)
    say(f"stopped {len(stopped)} process(es)")
    return stopped


def down(cluster: Cluster, destroy: bool, progress: Progress | None) -> None:
    """`down`'s work, the cluster's lock held: stop what runs; with destroy, Terraform removes
    the machines and the record forgets them."""
    say = Say(progress, logger)
    try:
        if cluster.recorded_hosts():
            try:
                cluster.stop(progress)
            except HostError as e:
                # machines Terraform is about to destroy take their processes with them;
                # existing hosts (the hosts module: lab too) outlive `down`, theirs must stop
                if not (destroy and cluster.provider.module != "hosts"):
                    raise
                say.warning(f"WARNING: {e}\nTheir machines are destroyed next, and what "
                            "ran there with them.")
    finally:
        if destroy:
            say("terraform: destroy")
            if cluster.shared and not (cluster.state_dir / "terraform" / "main.tf.json").exists():
                # a teammate's cluster: this machine never ran its Terraform
                machines.write_terraform_root(cluster)
            terraform.destroy(cluster.state_dir / "terraform", cluster.provider.terraform_env())
            cluster.inventory_path.unlink(missing_ok=True)
            # A cluster made again later resolves its image anew.
            state.update(cluster.state_dir, hosts=[], pids={}, n_workers=None, destroyed=True,
                         image=None)
