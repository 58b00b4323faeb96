"""The cluster file's `ephemeral:` section: one cluster per `daskfleet submit` on EC2 (the
image, the network mode, the instances, the watchdogs)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from runner.config_base import Strict, parse_duration


class ImageSpec(Strict):
    """The AMI: an id, or the newest image of `owner` whose name matches `name` (a glob)."""

    id: str | None = None
    owner: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _one_way(self) -> ImageSpec:
        if (self.id is None) == (self.owner is None or self.name is None):
            raise ValueError("give either id (ami-...) or both owner and name (a glob such as "
                             "debian-12-amd64-*)")
        return self


class NetworkSpec(Strict):
    """Where the instances go: an existing subnet, or a VPC and subnet made for the run (tagged,
    deleted with it)."""

    subnet_id: str | None = None
    vpc_cidr: str | None = None
    subnet_cidr: str | None = None
    # The made subnet's zone; default: the first of the region that offers both instance types
    # (checked before anything is made; with subnet_id, the subnet's own zone is checked)
    availability_zone: str | None = None
    # With subnet_id: refuse a subnet whose 0.0.0.0/0 does not go through a NAT (the instances,
    # on private addresses, pull their image); false when it reaches your registry otherwise
    # (VPC endpoints)
    require_nat: bool = True
    # Refuse when this machine reaches the subnet only through its default route (the instances
    # have private addresses only); false when that gateway does route the VPC (Direct Connect)
    require_route: bool = True
    # Public addresses for the instances: this machine reaches the scheduler at its public
    # address (only from admin_cidr), the workers reach it at its private one. Default: true
    # for a VPC made for the run (it gets an internet gateway and no NAT: it works from a
    # laptop), false for a subnet_id (which must then route out through a NAT).
    public_addresses: bool | None = None

    @property
    def public(self) -> bool:
        return self.public_addresses if self.public_addresses is not None \
            else self.subnet_id is None

    @model_validator(mode="after")
    def _one_way(self) -> NetworkSpec:
        made = self.vpc_cidr is not None or self.subnet_cidr is not None
        if (self.subnet_id is None) == (not made) or (made and None in (self.vpc_cidr, self.subnet_cidr)):
            raise ValueError("give either subnet_id (an existing subnet) or both vpc_cidr and "
                             "subnet_cidr (a VPC and subnet made for the run)")
        if made and self.public_addresses is False:
            raise ValueError("public_addresses: false needs a subnet with a NAT gateway, and the "
                             "VPC made for the run has an internet gateway only (no NAT): its "
                             "instances could reach nothing. Remove public_addresses, or give the "
                             "subnet_id of a private subnet that routes out through a NAT")
        if self.subnet_id and self.availability_zone:
            raise ValueError("availability_zone is the zone of the subnet made for the run; "
                             "an existing subnet_id has its own: remove one of them")
        for key in ("vpc_cidr", "subnet_cidr"):
            if getattr(self, key) is not None:
                ipaddress.ip_network(getattr(self, key))  # ValueError names the bad range
        return self


MIN_LIFETIME_S = 120.0


class EphemeralSpec(Strict):
    """`mode: ephemeral` (provider aws): one EC2 cluster per `submit`, made with
    dask_cloudprovider's EC2Cluster and always closed after the job."""

    region: str
    # Who may reach the scheduler's and dashboard's ports: the control machine's range. No default.
    admin_cidr: str
    network: NetworkSpec
    image: ImageSpec
    scheduler_instance_type: str = "m6i.large"
    worker_instance_type: str = "m6i.large"
    workers: Annotated[int, Field(ge=1, le=200)] = 2
    spot_workers: bool = False
    # When EC2 refuses spot workers (no capacity, spot quota, price): `fail` stops the run before
    # the job; `on_demand` launches those workers on-demand (at the on-demand price) and says so.
    spot_fallback: Literal["fail", "on_demand"] = "fail"
    filesystem_size: Annotated[int, Field(ge=8, le=16384)] = 20  # GiB, encrypted root volume
    # The container every instance runs; default ghcr.io/dask/dask:<this machine's dask>-py<X.Y>
    docker_image: str | None = None
    # Install Docker at boot (dask-cloudprovider's bootstrap, Ubuntu images); false: the image has it
    bootstrap: bool = True
    # Tagged daskfleet:expires = creation + this; every instance powers itself off (and so
    # terminates) then, control machine or not; `daskfleet gc` removes what outlived it.
    max_lifetime: str = "2h"
    # The scheduler closes itself when idle this long (then its instance shuts down and terminates)
    idle_timeout: str = "30m"
    # Tasks that wait this long with no worker able to run them fail (every spot worker
    # reclaimed): the scheduler is then idle, and idle_timeout closes it.
    no_workers_timeout: str = "10m"
    # A worker that cannot reach its scheduler this long at start exits (and its instance ends);
    # one whose scheduler connection breaks later exits at once.
    worker_death_timeout: str = "5m"
    ready_timeout: Annotated[float, Field(gt=0, le=3600)] = 600.0

    @field_validator("admin_cidr")
    @classmethod
    def _admin_cidr(cls, value: str) -> str:
        net = ipaddress.ip_network(value, strict=False)
        if net.prefixlen == 0:
            raise ValueError(f"{value} opens the scheduler to the whole internet; give the control "
                             "machine's range (e.g. 203.0.113.7/32 or your VPC's CIDR)")
        return value

    @field_validator("max_lifetime", "idle_timeout", "no_workers_timeout", "worker_death_timeout")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("max_lifetime")
    @classmethod
    def _lifetime(cls, value: str) -> str:
        # The instances' own hard stop (`shutdown -P +MINUTES`) counts in whole minutes.
        if parse_duration(value) < MIN_LIFETIME_S:
            raise ValueError(f"{value} is too short: the instances power themselves off at "
                             f"max_lifetime, counted in whole minutes; give at least "
                             f"{MIN_LIFETIME_S // 60:.0f}m (longer than the job needs)")
        return value
