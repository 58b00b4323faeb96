"""What every provider answers: the Terraform module and its variables, how host keys become
trusted, the login user, which address SSH uses and which Dask uses, how the client reaches the
scheduler."""

from __future__ import annotations

from pathlib import Path

from runner.cluster.hosts import Host
from runner.config import ClusterSpec, resolve_path
from runner.errors import ConfigError
from runner.log import Progress


class Provider:
    name = ""
    module = ""  # terraform/modules/<module>
    default_user = "root"
    # True: the client reaches the scheduler through an SSH local forward to the scheduler host
    # (Dask's ports are open only inside the cluster); False: it dials the scheduler directly.
    tunnel = False

    def __init__(self, spec: ClusterSpec):
        self.spec = spec

    @property
    def outputs(self) -> tuple[str, ...]:
        """Module outputs recorded besides `hosts`."""
        return ()

    @property
    def user(self) -> str:
        return self.spec.ssh.user or self.default_user

    def ssh_paths(self) -> tuple[Path, Path]:
        """(private key, known_hosts) for SSH, Ansible and Terraform's connections."""
        s = self.spec.ssh
        if s.private_key is None or s.known_hosts is None:  # the file's validator requires both
            raise ConfigError(f"{self.spec.source}: provider {self.spec.provider!r} needs "
                              "ssh.private_key and ssh.known_hosts")
        return resolve_path(self.spec, s.private_key), resolve_path(self.spec, s.known_hosts)

    def declared_hosts(self) -> list[Host]:
        """Machines known before Terraform runs (existing hosts); none for clouds."""
        return []

    def planned_names(self) -> list[str] | None:
        """The names of the machines the next apply will leave (None: not known before it)."""
        declared = self.declared_hosts()
        return [h.name for h in declared] if declared else None

    def worker_on_scheduler(self) -> bool:
        return False

    def terraform_variables(self, recorded: dict) -> dict:
        raise NotImplementedError

    def terraform_env(self) -> dict[str, str]:
        return dict(self.spec.environment)

    def before_apply(self, progress: Progress | None) -> None:
        """Checks that can refuse before anything billable exists."""

    def hosts_from_output(self, outputs: dict) -> list[Host]:
        return [Host.from_output(row, use_public=False) for row in outputs["hosts"]]

    def after_apply(self, hosts: list[Host], ssh, progress: Progress | None) -> None:
        """Make the hosts' keys trusted and wait until they answer over SSH."""
