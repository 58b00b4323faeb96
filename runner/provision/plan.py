"""`daskfleet plan`: what `up` would do (Terraform plan, Ansible check mode, processes to start),
changing nothing on the hosts."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from runner.cluster import changes
from runner.errors import DaskfleetError
from runner.log import Progress, Say
from runner.provision import ansible, inventory, machines, terraform
from runner.provision.tls import CertificateAuthority

logger = logging.getLogger(__name__)


@dataclass
class PlanReport:
    terraform: dict[str, list[str]] = field(default_factory=dict)
    tasks: dict[str, list[str]] = field(default_factory=dict)  # task -> hosts it would change
    changed: int = 0
    start: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)  # table lines: what, where, why
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        out = ["terraform:"]
        if any(self.terraform.values()):
            for action, addrs in self.terraform.items():
                out += [f"  {action}: {a}" for a in addrs]
        else:
            out.append("  no changes")
        out.append(f"ansible (check mode): changed={self.changed}")
        out += [f"  would change: {t} on {', '.join(sorted(set(h)))}" for t, h in self.tasks.items()]
        out.append("processes that would start: " + (", ".join(self.start) or "none"))
        out.append("processes that would be replaced: " + ("" if self.restart else "none"))
        out += self.restart
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)


def would_change(output: str) -> dict[str, list[str]]:
    """Task name -> hosts reported `changed` in an ansible-playbook output."""
    tasks: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        m = re.match(r"^TASK \[(.+?)\]", line)
        if m:
            current = m[1]
            continue
        m = re.match(r"^changed: \[([^\]]+)\]", line)
        if m and current:
            tasks.setdefault(current, []).append(m[1].split(" ")[0])
    return tasks


def plan(cluster, progress: Progress | None = None) -> PlanReport:
    say = Say(progress, logger)
    report = PlanReport()
    spec = cluster.spec
    cluster.provider.before_apply(progress)
    workdir = machines.write_terraform_root(cluster)
    say("terraform: plan")
    report.terraform = terraform.plan(workdir, cluster.provider.terraform_env())
    try:
        hosts = cluster.hosts()
    except DaskfleetError:
        hosts = cluster.declared_hosts()
    if not hosts:
        report.notes.append("hosts are not known before `up` creates them: no Ansible check.")
        return report
    wheelhouses, env_hashes = machines.wheelhouses(cluster, hosts, progress)
    with tempfile.TemporaryDirectory(prefix="daskfleet-plan-") as tmp:
        variables = machines.playbook_vars(cluster, wheelhouses)
        if spec.tls:
            # the certificates `up` would install, made in a copy: `plan` never writes the
            # cluster's CA folder (a first `plan` makes no CA; one near its end issues nothing)
            ca = CertificateAuthority(Path(tmp) / "tls", spec.name)
            if cluster.ca.dir.is_dir():
                shutil.copytree(cluster.ca.dir, ca.dir)
            ca.ensure({h.name: h.dask_address for h in hosts})
            variables["dask_node_tls_src"] = str(ca.dir)
        inv = inventory.write(Path(tmp) / "hosts.yml", hosts, cluster.ssh())
        say(f"ansible: check mode on {len(hosts)} host(s)")
        result = ansible.run_playbook(inv, variables,
                                      log=cluster.state_dir / "logs" / "ansible-plan.log",
                                      check=True)
    report.changed = result.changed
    report.tasks = would_change(result.output)
    try:
        states = cluster.process_states()
    except DaskfleetError:
        report.start = [f"{p.name}@{p.host.name}" for p in cluster.wanted(hosts)]
        return report
    todo = changes.plan(list(states), states, env_hashes)
    report.start = [c.where for c in todo if c.action == "start"]
    report.restart = changes.table([c for c in todo if c.action == "restart"]).splitlines()
    if any(c.action == "restart" and c.proc.kind == "scheduler" for c in todo):
        report.notes.append("the scheduler would restart, and every worker with it (their data "
                            "is lost); `up` refuses while a job runs, unless --restart")
    return report
