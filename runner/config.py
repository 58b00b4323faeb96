"""Cluster files (clusters/*.yaml) -> a validated ClusterSpec.

Defaults are written once, here. Every error names the file and the dotted key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runner.errors import ConfigError

PROVIDERS = ("lab", "hosts", "aws", "gcp", "azure")
CLOUD_PROVIDERS = ("aws", "gcp", "azure")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SSHSpec(_Strict):
    user: str | None = None  # default: the provider's (root; aws admin; gcp, azure daskfleet)
    private_key: Path | None = None  # lab: the lab's key
    # lab: the lab's; cloud providers: written by daskfleet (default .daskfleet/<cluster>/known_hosts)
    known_hosts: Path | None = None
    connect_timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    # New VMs: how long to wait for their sshd (with the host key daskfleet gave them).
    boot_timeout: Annotated[float, Field(gt=0, le=1800)] = 300.0
    # Skipping host key verification is possible, but only by name, never by default.
    insecure_skip_host_key_check: bool = False


class HostSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    address: str
    role: Literal["scheduler", "worker"]
    user: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 22


class LabSpec(_Strict):
    hosts: Annotated[int, Field(ge=2, le=32)] = 3
    # Run a worker next to the scheduler on the first host too.
    worker_on_scheduler: bool = False


class DaskSpec(_Strict):
    scheduler_port: Annotated[int, Field(ge=1024, le=65535)] = 8786
    dashboard_port: Annotated[int, Field(ge=1024, le=65535)] = 8787
    worker_port_range: Annotated[str, Field(pattern=r"^\d+:\d+$")] = "40000:40099"
    nanny_port_range: Annotated[str, Field(pattern=r"^\d+:\d+$")] = "40100:40199"
    threads_per_worker: Annotated[int, Field(ge=1, le=256)] = 1
    memory_limit: str = "auto"
    start_timeout: Annotated[float, Field(gt=0, le=600)] = 60.0


class ClusterSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")]
    provider: Literal["lab", "hosts", "aws", "gcp", "azure"]
    ssh: SSHSpec = SSHSpec()
    hosts: list[HostSpec] = []
    lab: LabSpec = LabSpec()
    terraform: dict[str, Any] = {}
    dask: DaskSpec = DaskSpec()
    tls: bool = True
    # Environment variables for Terraform only (a provider endpoint, test credentials, a CLI
    # config with a provider mirror); they override the shell's.
    environment: dict[str, str] = {}
    min_workers: Annotated[int, Field(ge=1)] | None = None
    # Where the file came from: relative paths in it are resolved against its folder.
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("hosts")
    @classmethod
    def _unique_names(cls, hosts: list[HostSpec]) -> list[HostSpec]:
        names = [h.name for h in hosts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"host names must be unique; repeated: {', '.join(dupes)}")
        return hosts

    @model_validator(mode="after")
    def _hosts_match_provider(self) -> ClusterSpec:
        if self.provider == "hosts":
            roles = [h.role for h in self.hosts]
            if roles.count("scheduler") != 1 or "worker" not in roles:
                raise ValueError(
                    "provider 'hosts' needs `hosts:` with exactly one role: scheduler and at least "
                    "one role: worker"
                )
            if self.ssh.private_key is None or self.ssh.known_hosts is None:
                raise ValueError(
                    "provider 'hosts' needs ssh.private_key and ssh.known_hosts (host keys are "
                    "verified against that file)"
                )
        elif self.hosts:
            raise ValueError(f"`hosts:` is only for provider 'hosts', not {self.provider!r}")
        if self.provider in CLOUD_PROVIDERS:
            if self.ssh.private_key is None:
                raise ValueError(f"provider {self.provider!r} needs ssh.private_key (its .pub is "
                                 "installed on the VMs for the login user)")
            if "admin_cidr" not in self.terraform:
                raise ValueError(f"provider {self.provider!r} needs terraform.admin_cidr: the "
                                 "IPv4 range allowed to reach the VMs over SSH (your address, "
                                 "e.g. 203.0.113.7/32); it has no default")
        return self

    @property
    def project_dir(self) -> Path:
        """Where the cluster's state and inventory live, whatever the current directory: the
        folder above `clusters/` when the file sits in one (this repository's layout), else the
        file's own folder. So the same file always finds the same state (and CA)."""
        if self.source is None:
            return Path.cwd()
        folder = self.source.parent
        return folder.parent if folder.name == "clusters" else folder

    @property
    def state_dir(self) -> Path:
        root = os.environ.get("DASKFLEET_STATE_DIR")
        return (Path(root).resolve() if root else self.project_dir / ".daskfleet") / self.name

    @property
    def inventory_path(self) -> Path:
        root = os.environ.get("DASKFLEET_INVENTORY_DIR")
        return (Path(root).resolve() if root else self.project_dir / "inventory") / self.name \
            / "hosts.yml"


def _loc(err: dict) -> str:
    return ".".join(str(p) for p in err["loc"]) or "(top level)"


def format_validation_error(path: Path, exc: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for err in exc.errors():
        key = _loc(err)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, err["loc"][:-1])
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            lines.append(f"{path}: {key}: unknown key{hint}")
        elif err["type"] == "missing":
            lines.append(f"{path}: {key}: required key is missing")
        else:
            lines.append(f"{path}: {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines) + "\nFix the file and run the command again."


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Walk `loc` through nested models to list the keys allowed where an unknown one was."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            inner = getattr(cand, "__args__", None)
            if inner and isinstance(inner[0], type) and issubclass(inner[0], BaseModel):
                cand = inner[0]
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                current = cand
                break
        else:
            return []
    return sorted(getattr(current, "model_fields", {}))


def read_yaml(path: Path, what: str) -> dict:
    if not path.exists():
        raise ConfigError(f"{path}: {what} file not found. Check the path (-c / argument).")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of keys (name:, provider:, ...), "
                          f"not {type(data).__name__}.")
    return data


def load_cluster(path: str | Path) -> ClusterSpec:
    path = Path(path)
    data = read_yaml(path, "cluster")
    try:
        spec = ClusterSpec.model_validate({**data, "source": path.resolve()})
    except ValidationError as e:
        raise ConfigError(format_validation_error(path, e, ClusterSpec)) from e
    # A cloud provider's known_hosts is written by daskfleet, so it need not exist yet.
    keys = ("private_key",) if spec.provider in CLOUD_PROVIDERS else ("private_key", "known_hosts")
    for key in keys:
        value = getattr(spec.ssh, key)
        if value is not None and not _resolve(spec, value).exists():
            raise ConfigError(f"{path}: ssh.{key}: file not found: {_resolve(spec, value)}")
    return spec


def _resolve(spec: ClusterSpec, p: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() or spec.source is None else (spec.source.parent / p).resolve()


def resolve_path(spec: ClusterSpec, p: Path) -> Path:
    return _resolve(spec, p)
