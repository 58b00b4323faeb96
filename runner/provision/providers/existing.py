"""Machines that exist already: the local lab's hosts, or hosts listed in the cluster file.
Their host keys must already be in known_hosts; Terraform's hosts module checks each one."""

from __future__ import annotations

from pathlib import Path

from runner.cluster.hosts import Host, known_host_key
from runner.errors import ConfigError
from runner.provision.providers.base import Provider


class Hosts(Provider):
    name = module = "hosts"

    def declared_hosts(self) -> list[Host]:
        return [Host(h.name, h.address, h.role, h.user or self.user, h.port)
                for h in self.spec.hosts]

    def terraform_variables(self, recorded: dict) -> dict:
        key, known_hosts = self.ssh_paths()
        known = known_hosts.read_text() if known_hosts.exists() else ""
        tf_hosts = []
        for h in self.declared_hosts():
            host_key = known_host_key(known, h.address, h.port)
            if host_key is None:
                raise ConfigError(
                    f"{self.spec.source}: host {h.name} ({h.address}) has no entry in "
                    f"{known_hosts}; add its host key (after checking its fingerprint).")
            tf_hosts.append({**h.to_dict(), "host_key": host_key})
        return {"cluster_name": self.spec.name, **self.spec.terraform, "hosts": tf_hosts,
                "ssh_private_key_path": str(key),
                "connect_timeout": f"{int(self.spec.ssh.connect_timeout)}s"}


class LabHosts(Hosts):
    """The local lab: a set of existing machines whose key, known_hosts and login user the lab
    recorded when it made them."""

    name = "lab"

    def _lab(self):
        from runner.lab import Lab

        return Lab()

    def ssh_paths(self) -> tuple[Path, Path]:
        lab, s = self._lab(), self.spec.ssh
        return Path(s.private_key or lab.key), Path(s.known_hosts or lab.known_hosts)

    def worker_on_scheduler(self) -> bool:
        return self.spec.lab.worker_on_scheduler

    def declared_hosts(self) -> list[Host]:
        lab_hosts = self._lab().hosts()
        if not lab_hosts:
            raise ConfigError(f"{self.spec.source}: provider 'lab' but no lab is running; "
                              f"run `daskfleet lab up --hosts {self.spec.lab.hosts}` first.")
        return [Host(h.name, h.address, "scheduler" if i == 0 else "worker",
                     self.spec.ssh.user or h.user, h.port) for i, h in enumerate(lab_hosts)]
