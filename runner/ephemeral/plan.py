"""`daskfleet plan -c EPHEMERAL.yaml`: what one run would make, and what it costs an hour (an
estimate from the dated table in runner.ephemeral.prices). Reads nothing from AWS."""

from __future__ import annotations

from runner.config import ClusterSpec
from runner.config_base import parse_duration
from runner.ephemeral import prices
from runner.ephemeral import tags as T
from runner.ephemeral.aws import group_rules


def _usd(x: float | None) -> str:
    return "n/a (not in the price table)" if x is None else f"${x:.4f}"


def plan_text(spec: ClusterSpec, lock=None) -> str:
    from runner.ephemeral.environment import default_image, pinned_packages

    e = spec.ephemeral_spec
    image = e.image.id or f"newest of owner {e.image.owner} named {e.image.name}"
    ports = sorted({spec.dask.scheduler_port, spec.dask.dashboard_port})
    lines = [f"ephemeral cluster {spec.name} (mode: ephemeral): made by `daskfleet submit`, removed "
             "after the job", f"region {e.region}; image {image}"]
    if e.network.subnet_id:
        lines.append(f"network: existing subnet {e.network.subnet_id} (not created, not removed)")
    else:
        lines.append(f"+ vpc {e.network.vpc_cidr}, subnet {e.network.subnet_cidr}, internet "
                     "gateway, route 0.0.0.0/0 to it (removed after)")
    lines.append("+ security group daskfleet-<run id>: " + "; ".join(group_rules(e.admin_cidr,
                                                                               (ports[0], ports[-1]))))
    lines.append(f"+ 1 scheduler instance {e.scheduler_instance_type} (on-demand)")
    fallback = {"fail": "if EC2 refuses spot the run stops (spot_fallback: fail)",
                "on_demand": "on-demand where EC2 refuses spot (spot_fallback: on_demand)"}
    lines.append(f"+ {e.workers} worker instance(s) {e.worker_instance_type} "
                 f"({f'spot; {fallback[e.spot_fallback]}' if e.spot_workers else 'on-demand'})")
    address = ("a public address (the scheduler's Dask ports answer admin_cidr only)"
               if e.network.public else "private address only")
    lines.append(f"  each: {e.filesystem_size} GiB gp3 root volume, encrypted; IMDSv2 required; "
                 f"{address}; no key pair, no SSH; shuts down (terminates) when Dask "
                 f"exits, and by itself at the run's expiry (max_lifetime {e.max_lifetime})")
    lines.append(f"  watchdogs: scheduler idle {e.idle_timeout}, tasks with no worker fail after "
                 f"{e.no_workers_timeout}, a worker without its scheduler exits after "
                 f"{e.worker_death_timeout}")
    if lock is not None:
        lines.append(f"  container {e.docker_image or default_image(lock)} with "
                     f"{len(pinned_packages(lock).split())} pinned packages (EXTRA_PIP_PACKAGES); "
                     "Dask TLS with the run's temporary certificates")
    lines.append(f"  tags {T.CLUSTER}={spec.name}, {T.RUN}=<run id>, {T.EXPIRES}=<start + "
                 f"{e.max_lifetime}>; scheduler idle timeout {e.idle_timeout}")
    sched = prices.hourly(e.region, e.scheduler_instance_type)
    work = prices.hourly(e.region, e.worker_instance_type, spot=e.spot_workers)
    disk = prices.storage_hourly(e.region, e.filesystem_size)
    total = None
    if sched is not None and work is not None and disk is not None:
        total = sched + e.workers * work + (1 + e.workers) * disk
    lines.append(f"cost ESTIMATE (prices as of {prices.AS_OF}, {e.region}, USD/hour): scheduler "
                 f"{_usd(sched)}, workers {e.workers} x {_usd(work)}"
                 f"{f' (spot taken as {prices.SPOT_FRACTION:.0%} of on-demand)' if e.spot_workers else ''}"
                 f", volumes {1 + e.workers} x {_usd(disk)}; total {_usd(total)}/hour; at most "
                 f"{_usd(None if total is None else total * parse_duration(e.max_lifetime) / 3600)} "
                 f"if it ran to its expiry ({e.max_lifetime}). Data transfer not included.")
    return "\n".join(lines)
