"""One object per provider: what differs between the lab, existing hosts and each cloud."""

from __future__ import annotations

from runner.provision.providers.base import Provider


def for_spec(spec) -> Provider:
    from runner.provision.providers.cloud import AWS, GCP, Azure
    from runner.provision.providers.existing import Hosts, LabHosts

    kinds = {"lab": LabHosts, "hosts": Hosts, "aws": AWS, "gcp": GCP, "azure": Azure}
    return kinds[spec.provider](spec)


__all__ = ["Provider", "for_spec"]
