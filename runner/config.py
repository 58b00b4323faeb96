"""Cluster files (clusters/*.yaml) -> a validated ClusterSpec.

Defaults are written once, here. Every error names the file and the dotted key.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from runner.batch.job import ResultsSpec
from runner.config_base import Strict
from runner.config_ephemeral import EphemeralSpec
from runner.errors import ConfigError
from runner.spec_errors import format_validation_error, read_yaml

logger = logging.getLogger(__name__)

PROVIDERS = ("lab", "hosts", "aws", "gcp", "azure")
CLOUD_PROVIDERS = ("aws", "gcp", "azure")
class SSHSpec(Strict):
    user: str | None = None  # default: the provider's (root; aws admin; gcp, azure daskfleet)
    private_key: Path | None = None  # lab: the lab's key
    # lab: the lab's; cloud providers: written by daskfleet (default .daskfleet/<cluster>/known_hosts)
    known_hosts: Path | None = None
    connect_timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    # New VMs: how long to wait for their sshd (with the host key daskfleet gave them).
    boot_timeout: Annotated[float, Field(gt=0, le=1800)] = 300.0
    # Cloud VMs on private addresses (aws use_public_ip false): refuse when this machine reaches
    # their subnet only through its default route; false when that gateway does route the VPC
    # (Direct Connect, a corporate router)
    require_private_route: bool = True
    # Skipping host key verification is possible, but only by name, never by default.
    insecure_skip_host_key_check: bool = False


HOST_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class HostSpec(Strict):
    name: str
    address: str
    role: Literal["scheduler", "worker"]
    user: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 22

    @field_validator("name")
    @classmethod
    def _host_name(cls, value: str) -> str:
        # it names the host's certificate, log files and Dask worker: one DNS label
        if not HOST_LABEL.match(value):
            raise ValueError(f"{value!r} is not a valid host name: use 1 to 63 lowercase letters, "
                             "digits and '-', not starting or ending with '-' (e.g. worker-1)")
        return value

    @field_validator("address")
    @classmethod
    def _host_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        labels = value.rstrip(".").split(".")
        if len(value) > 253 or not all(HOST_LABEL.match(label.lower()) for label in labels):
            raise ValueError(f"{value!r} is neither an IP address nor a valid DNS name "
                             "(e.g. 10.0.0.11 or node1.example.com)")
        return value


class LabSpec(Strict):
    hosts: Annotated[int, Field(ge=2, le=32, description=(
        "the first lab host runs the scheduler, so 2 or more give at least one worker"))] = 3
    # Run a worker next to the scheduler on the first host too.
    worker_on_scheduler: bool = False


class ProcessLimits(Strict):
    """Resource limits every Dask process of the cluster starts with, as systemd's LimitNOFILE,
    LimitNPROC and LimitCORE would set them (soft and hard alike). Unset: the node's defaults."""

    nofile: Annotated[int, Field(ge=64, le=1048576)] | None = None  # open files
    nproc: Annotated[int, Field(ge=64, le=4194304)] | None = None  # the user's processes
    core_dumps: bool | None = None  # False: none written (a worker holds data), True: unlimited

    def ulimits(self) -> tuple[tuple[str, str], ...]:
        """(flag, value) pairs for bash's `ulimit`, in a fixed order."""
        out = []
        if self.nofile is not None:
            out.append(("-n", str(self.nofile)))
        if self.nproc is not None:
            out.append(("-u", str(self.nproc)))
        if self.core_dumps is not None:
            out.append(("-c", "unlimited" if self.core_dumps else "0"))
        return tuple(out)


class DaskSpec(Strict):
    scheduler_port: Annotated[int, Field(ge=1024, le=65535)] = 8786
    dashboard_port: Annotated[int, Field(ge=1024, le=65535)] = 8787
    worker_port_range: Annotated[str, Field(pattern=r"^\d+:\d+$")] = "40000:40099"
    nanny_port_range: Annotated[str, Field(pattern=r"^\d+:\d+$")] = "40100:40199"
    threads_per_worker: Annotated[int, Field(ge=1, le=256)] = 1
    memory_limit: str = "auto"
    # With memory_limit auto: the fraction of each worker host's memory this cluster's workers
    # share (default: all of it). Clusters sharing hosts each need one; together at most 1.
    memory_share: Annotated[float, Field(gt=0, le=1)] | None = None
    start_timeout: Annotated[float, Field(gt=0, le=600)] = 60.0
    limits: ProcessLimits = ProcessLimits()

    @model_validator(mode="after")
    def _share_with_auto(self) -> DaskSpec:
        if self.memory_share is not None and self.memory_limit != "auto":
            raise ValueError(f"dask.memory_share is the share of each host that memory_limit: "
                             f"auto splits between the workers; with memory_limit: "
                             f"{self.memory_limit} the workers' limits are set: remove one of "
                             "the two keys")
        return self

    @model_validator(mode="after")
    def _ports_apart(self) -> DaskSpec:
        ranges = {"dask.scheduler_port": (self.scheduler_port, self.scheduler_port),
                  "dask.dashboard_port": (self.dashboard_port, self.dashboard_port)}
        for key in ("worker_port_range", "nanny_port_range"):
            lo, hi = (int(n) for n in getattr(self, key).split(":"))
            if not 1024 <= lo <= hi <= 65535:
                raise ValueError(f"dask.{key}: {lo}:{hi} is not a port range within "
                                 "1024:65535 (low:high, low <= high), e.g. 40000:40099")
            ranges[f"dask.{key}"] = (lo, hi)
        keys = list(ranges)
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                (alo, ahi), (blo, bhi) = ranges[a], ranges[b]
                if alo <= bhi and blo <= ahi:
                    raise ValueError(f"{a} and {b} collide (both use port {max(alo, blo)}); "
                                     "give every Dask process kind its own ports")
        return self


class StateSpec(Strict):
    """`state:` a store the team shares the cluster's state in (runner/shared_state.py)."""

    # s3://bucket/prefix: the cluster's state goes under <prefix>/<cluster name>/
    url: str
    # fsspec's names, as data.storage_options (endpoint_url, key, secret, token, region); without
    # key, the standard AWS chain of this machine (environment, profile)
    storage_options: dict[str, Any] = {}
    # the variable holding the passphrase the CA and host keys are encrypted with in the store
    passphrase_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = \
        "DASKFLEET_STATE_PASSPHRASE"

    @field_validator("url")
    @classmethod
    def _s3_url(cls, value: str) -> str:
        import urllib.parse

        parts = urllib.parse.urlsplit(value)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"{value!r} is not an s3://bucket/prefix URL (the shared state "
                             "lives in an S3 bucket, or an S3-compatible store with "
                             "storage_options.endpoint_url)")
        return value.rstrip("/")

    @field_validator("storage_options")
    @classmethod
    def _options(cls, value: dict) -> dict:
        known = ("key", "secret", "token", "endpoint_url", "region", "connect_timeout",
                 "request_timeout")
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}; the keys are "
                             f"{', '.join(known)} (fsspec's names)")
        return value


class ClusterSpec(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")]
    provider: Literal["lab", "hosts", "aws", "gcp", "azure"]
    # long-lived: up / submit / down; ephemeral (aws only): submit makes and removes the cluster
    mode: Literal["long-lived", "ephemeral"] = "long-lived"
    ephemeral: EphemeralSpec | None = None
    ssh: SSHSpec = SSHSpec()
    hosts: list[HostSpec] = []
    lab: LabSpec = LabSpec()
    terraform: dict[str, Any] = {}
    dask: DaskSpec = DaskSpec()
    tls: bool = True
    # Environment variables for Terraform only (a provider endpoint, test credentials, a CLI
    # config with a provider mirror); they override the shell's.
    environment: dict[str, str] = {}
    # detached runs (`submit --detach`) at once; the others wait in the scheduler host's queue
    max_running_jobs: Annotated[int, Field(ge=1, le=64)] = 1
    # Shared state (Terraform's, the record, the CA, the lock) in an object store, for a team
    state: StateSpec | None = None
    # Where every job run on this cluster copies its run folder, unless its job file says
    results: ResultsSpec | None = None
    min_workers: Annotated[int | None, Field(ge=1, description=(
        "the fewest workers a degraded start may have; leave it out to need them all"))] = None
    # Where the file came from: relative paths in it are resolved against its folder.
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("hosts")
    @classmethod
    def _unique_names(cls, hosts: list[HostSpec]) -> list[HostSpec]:
        names = [h.name for h in hosts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"host names must be unique; repeated: {', '.join(dupes)} "
                             "(rename all but one)")
        return hosts

    @model_validator(mode="after")
    def _hosts_match_provider(self) -> ClusterSpec:
        if self.mode == "ephemeral" or self.ephemeral is not None:
            return self._ephemeral_only()
        if self.provider == "hosts":
            schedulers = [h.name for h in self.hosts if h.role == "scheduler"]
            if len(schedulers) > 1:
                raise ValueError(f"hosts: {len(schedulers)} hosts have role: scheduler "
                                 f"({', '.join(schedulers)}); a cluster has exactly one: make the "
                                 "others role: worker")
            if len(schedulers) != 1 or len(self.hosts) == 1:
                raise ValueError(
                    "provider 'hosts' needs `hosts:` with exactly one role: scheduler and at least "
                    f"one role: worker (the file has {len(schedulers)} scheduler(s) and "
                    f"{len(self.hosts) - len(schedulers)} worker(s)); add the missing host(s)"
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

    def _ephemeral_only(self) -> ClusterSpec:
        if self.mode != "ephemeral":
            raise ValueError("ephemeral: is only read with `mode: ephemeral`; add that key or "
                             "remove the ephemeral: block")
        if self.provider != "aws":
            raise ValueError(f"mode: ephemeral is for provider aws only, not {self.provider!r}")
        if self.ephemeral is None:
            raise ValueError("mode: ephemeral needs an `ephemeral:` block (region, admin_cidr, "
                             "network, image, ...); see clusters/aws-ephemeral.example.yaml")
        extra = [k for k in ("hosts", "terraform", "state") if getattr(self, k)]
        if extra:
            raise ValueError(f"{extra[0]}: is not used by mode: ephemeral (dask-cloudprovider makes "
                             "the instances, not Terraform); remove it")
        if not self.tls:
            raise ValueError("tls: false is refused for mode: ephemeral (its scheduler listens on "
                             "a cloud address); remove the key")
        return self

    @property
    def ephemeral_spec(self) -> EphemeralSpec:
        """The `ephemeral:` block, for code that runs only on a `mode: ephemeral` file (whose
        validator makes the block required there)."""
        if self.ephemeral is None:
            raise ConfigError(f"{self.source}: mode: {self.mode}: not an ephemeral cluster file "
                              "(no `ephemeral:` block)")
        return self.ephemeral

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
            raise ConfigError(f"{path}: ssh.{key}: file not found: {_resolve(spec, value)}; "
                              "fix the path (a relative one is read from the cluster file's "
                              "folder, ~ from your home)")
    if spec.ssh.private_key is not None:
        _check_private_key(path, _resolve(spec, spec.ssh.private_key))
    if spec.provider == "hosts" and not spec.ssh.insecure_skip_host_key_check:
        assert spec.ssh.known_hosts is not None, "provider hosts: the validator requires it"
        _check_known_hosts(path, spec, _resolve(spec, spec.ssh.known_hosts))
    logger.debug(f"{path}: cluster {spec.name}, provider {spec.provider}, mode {spec.mode}; state "
                 f"in {spec.state_dir}")
    return spec


def _read_ssh_file(path: Path, key: str, file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: ssh.{key}: cannot read {file}: {e.strerror or e}. Point "
                          f"ssh.{key} at a file this user can read.") from None


def _check_private_key(path: Path, key: Path) -> None:
    head = _read_ssh_file(path, "private_key", key)[:64]
    if head.startswith((b"ssh-", b"ecdsa-", b"sk-")):
        raise ConfigError(f"{path}: ssh.private_key: {key} is a public key; point ssh.private_key "
                          "at the private key (the same name without .pub)")


def _check_known_hosts(path: Path, spec: ClusterSpec, known_hosts: Path) -> None:
    """Every host of the file must have a key there, else SSH refuses it (no trust on first use)."""
    import paramiko

    _read_ssh_file(path, "known_hosts", known_hosts)
    keys = paramiko.HostKeys()
    try:  # the parser the SSH connections use (load_host_keys)
        keys.load(str(known_hosts))
    except (UnicodeDecodeError, paramiko.SSHException, ValueError) as e:
        raise ConfigError(f"{path}: ssh.known_hosts: {known_hosts} is not a known_hosts file "
                          f"({e}); point ssh.known_hosts at one") from None
    missing = []
    for h in spec.hosts:
        target = h.address if h.port == 22 else f"[{h.address}]:{h.port}"
        if keys.lookup(target) is None:
            missing.append((h, target))
    if missing:
        names = ", ".join(f"{h.name} ({target})" for h, target in missing)
        h, _ = missing[0]
        raise ConfigError(
            f"{path}: ssh.known_hosts: {known_hosts} has no host key for {names}, so SSH would "
            f"refuse {'it' if len(missing) == 1 else 'them'}. Add each host's key after checking "
            f"its fingerprint (e.g. `ssh-keyscan -p {h.port} {h.address} >> {known_hosts}`, "
            "compared with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host), or "
            "fix hosts[].address"
        )


def _resolve(spec: ClusterSpec, p: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() or spec.source is None else (spec.source.parent / p).resolve()


def resolve_path(spec: ClusterSpec, p: Path) -> Path:
    return _resolve(spec, p)
