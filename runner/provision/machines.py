"""The provisioning half of `up`: Terraform makes (or finds) the machines, Ansible installs this
machine's environment, the TLS files and the Dask configuration on each of them."""

from __future__ import annotations

import logging
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from runner import state
from runner.cluster.hosts import Host
from runner.cluster.process_settings import cluster_user
from runner.errors import ProvisionError
from runner.log import Progress, Say
from runner.provision import ansible, inventory, terraform

if TYPE_CHECKING:
    from runner.cluster.cluster import Cluster

logger = logging.getLogger(__name__)


def write_terraform_root(cluster: Cluster) -> Path:
    workdir = cluster.state_dir / "terraform"
    variables = cluster.provider.terraform_variables(state.read(cluster.state_dir))
    shared = cluster.shared
    backend = shared.terraform_backend() if shared else None
    if shared and terraform.backend_changes(workdir, backend) and \
            terraform.local_resources(workdir) and shared.has_terraform_state():
        # moving this machine's state to the store would overwrite the one already there
        raise ProvisionError(
            f"{cluster.spec.source}: state.url {shared.where} already holds a Terraform state for "
            f"cluster {cluster.spec.name}, and this machine has its own ({workdir}, "
            f"{terraform.local_resources(workdir)} resources): they are two clusters of one "
            "name. Rename this cluster (`name:`), or remove the one you do not want "
            "(`daskfleet down --destroy` without `state:` in the file), then run `up` again. "
            "Nothing was changed.")
    terraform.write_root(workdir, cluster.provider.module, variables, cluster.provider.outputs,
                         backend)
    return workdir


def provision(cluster: Cluster, progress: Progress | None = None, yes: bool = False,
              before_apply=None) -> tuple[list[Host], float]:
    """Terraform apply (of the plan it made, saved), record the hosts, wait until they boot,
    write the inventory. A plan that destroys or replaces a machine is refused unless ``yes``;
    ``before_apply()`` runs once the plan is accepted, before anything changes. Returns the
    hosts and the seconds spent waiting for them to boot."""
    say = Say(progress, logger)
    provider = cluster.provider
    provider.before_apply(progress)

    def confirm(actions: dict[str, list[str]]) -> None:
        if actions.get("tainted"):
            say(f"terraform: replacing {', '.join(actions['tainted'])}: its creation was cut "
                "short (an interrupted or failed apply: Terraform marked it tainted), so nothing "
                "ran there")
        lost = terraform.machines_lost(actions)
        if lost:
            say(f"terraform: the plan destroys or replaces {len(lost)} machine(s): "
                f"{', '.join(lost)}")
            if not yes:
                raise ProvisionError(
                    f"{cluster.spec.source}: `up` would destroy or replace {', '.join(lost)} "
                    "(what runs there, and its disks, would be lost). Run `daskfleet plan` to "
                    "see why; to go ahead, run `daskfleet up --yes`. Nothing was changed.")
        if before_apply is not None:
            before_apply()

    # existing hosts: Terraform only checks them, and no plan can lose a machine
    makes_machines = provider.module != "hosts"
    if not makes_machines and before_apply is not None:
        before_apply()
    outputs = terraform.apply(write_terraform_root(cluster), provider.terraform_env(),
                              confirm if makes_machines else None)
    hosts = provider.hosts_from_output(outputs)
    image = {"image": outputs[provider.outputs[0]]} if provider.outputs else {}
    state.update(cluster.state_dir, name=cluster.spec.name, provider=cluster.spec.provider,
                 hosts=[h.to_dict() for h in hosts], inventory=str(cluster.inventory_path),
                 destroyed=False, **image)
    t = time.monotonic()
    provider.after_apply(hosts, cluster.ssh(), progress)
    boot_s = time.monotonic() - t
    inventory.write(cluster.inventory_path, hosts, cluster.ssh())
    return hosts, boot_s


def playbook_vars(cluster: Cluster, wheelhouses: dict) -> dict:
    """Ansible's extra vars: one environment per node architecture (machine -> Wheelhouse)."""
    any_wh = next(iter(wheelhouses.values()))
    return {
        "python_env_targets": {m: {"hash": w.hash, "archive": str(w.archive)}
                               for m, w in wheelhouses.items()},
        "python_env_python_minor": any_wh.lock.python,
        "python_env_cluster": cluster.spec.name, "dask_node_cluster": cluster.spec.name,
        # the wheelhouse is served between nodes on a free port of the range the cluster's
        # firewall opens between them (the workers')
        "python_env_fanout_ports": cluster.spec.dask.worker_port_range,
        "dask_node_user": cluster_user(cluster.spec.name),
        "dask_node_tls": cluster.spec.tls, "dask_node_tls_src": str(cluster.ca.dir),
    }


def tolerated(cluster: Cluster, hosts: list[Host]) -> frozenset[str]:
    """With min_workers, unreachable worker hosts do not fail provisioning: the reconcile
    decides whether enough workers remain for a degraded start."""
    if not cluster.spec.min_workers:
        return frozenset()
    return frozenset(h.name for h in cluster.worker_hosts(hosts) if h.role == "worker")


def wheelhouses(cluster: Cluster, hosts: list[Host], progress: Progress | None = None
                ) -> tuple[dict, dict[str, str]]:
    """Read each node's Python and architecture (refusing another Python minor version), then
    build or reuse one wheelhouse per architecture. Returns (machine -> Wheelhouse,
    host name -> environment hash)."""
    from runner.cluster import preflight
    from runner.provision.lock import derive_lock
    from runner.provision.wheelhouse import build

    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    machines = preflight.node_platforms(hosts, cluster.ssh(), minor, tolerated(cluster, hosts))
    built = {m: build(derive_lock(m), progress=progress) for m in sorted(set(machines.values()))}
    return built, {h.name: built[m].hash for h, m in machines.items()}


def install(cluster: Cluster, hosts: list[Host], progress: Progress | None = None, force: bool = False
            ) -> tuple[ansible.PlaybookResult, dict[str, str]]:
    """Ansible: the environment of this machine's lock on every node, TLS files, dask config,
    on the hosts whose record says they lack it (all of them with ``force``). Returns the
    playbook result and host name -> environment hash."""
    from runner.provision import fingerprint

    say = Say(progress, logger)
    built, env_hashes = wheelhouses(cluster, hosts, progress)
    if cluster.spec.tls:
        cluster.ca.ensure({h.name: h.dask_address for h in hosts})
    else:
        say.warning("WARNING: tls: false in the cluster file: Dask traffic is NOT encrypted and "
                    "anyone who reaches the scheduler can run code on every worker.")
    variables = playbook_vars(cluster, built)
    inventory.write_vars(cluster.inventory_path, variables)  # a run by hand is the same run
    wanted = {h.name: fingerprint.expected(cluster, h, variables) for h in hosts}
    found = {} if force else fingerprint.records(cluster, hosts, env_hashes)
    lacks = {h.name: fingerprint.difference(found.get(h.name), wanted[h.name]) for h in hosts}
    todo = [h for h in hosts if lacks[h.name]]
    if not todo:
        say(f"ansible: nothing to do: all {len(hosts)} hosts have this environment, TLS files "
            "and configuration (as recorded on each); `daskfleet up --force` runs it anyway")
        result = ansible.PlaybookResult(changed=0, per_host={}, output="")
    else:
        names = ", ".join(h.name for h in todo)
        tls_only = all(lacks[h.name] == "tls" for h in todo)
        if tls_only:
            say(f"ansible: only the TLS files changed on {names}: installing those alone")
        elif len(todo) < len(hosts):
            say(f"ansible: {', '.join(sorted(set(wanted) - {h.name for h in todo}))} up to "
                f"date; running on {names}")
        result = ansible.run_playbook(cluster.inventory_path, variables,
                                      log=cluster.state_dir / "logs" / "ansible.log",
                                      tolerate_unreachable=tolerated(cluster, hosts),
                                      progress=say,  # each task's name, as it starts
                                      limit=None if len(todo) == len(hosts) else
                                      [h.name for h in todo],
                                      tags=["tls"] if tls_only else None)
        if result.unreachable:
            say.warning(f"WARNING: ansible could not reach {', '.join(result.unreachable)}; "
                        f"continuing because min_workers is {cluster.spec.min_workers}")
        fingerprint.record(cluster, [h for h in todo if h.name not in result.unreachable],
                           wanted)
    local = built.get(platform.machine()) or next(iter(built.values()))
    state.update(cluster.state_dir, lock_hash=local.hash, env_hashes=env_hashes)
    return result, env_hashes
