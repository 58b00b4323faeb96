"""An ephemeral run's checks before anything is made: a network its instances can work in
(`check_network`), and a zone that offers the instance types with room in the vCPU quotas
(`check_capacity`). Each refusal names the file's key and says "Nothing was created"."""

from __future__ import annotations

from runner.config import ClusterSpec
from runner.errors import ConfigError, ProvisionError
from runner.log import Say


def check_network(spec: ClusterSpec, ec2) -> None:
    """Refused before anything is made: with public addresses, an existing subnet that does
    not route 0.0.0.0/0 to an internet gateway (the addresses would answer nothing); with
    private ones, a subnet this machine reaches only through its default route, or one that
    does not reach out through a NAT (the instances pull their image)."""
    from runner import aws_network as net

    e, key = spec.ephemeral_spec, "ephemeral.network."
    try:
        if e.network.public:
            if e.network.subnet_id and net.egress(
                    net.subnet_routes(ec2, e.network.subnet_id)) != "igw":
                raise ConfigError(
                    f"{spec.source}: {key}subnet_id {e.network.subnet_id}: "
                    f"{key}public_addresses is true, but the subnet's route table does not "
                    "send 0.0.0.0/0 to an internet gateway, so a public address would "
                    "answer nothing. Give a public subnet, or remove public_addresses to use "
                    "private ones (through a NAT). Nothing was created.")
            return
        cidr = net.subnet_cidr(ec2, e.network.subnet_id) if e.network.subnet_id \
            else str(e.network.subnet_cidr)
        problem = net.check_private_route(cidr) if e.network.require_route else None
        if problem:
            raise ConfigError(
                f"{spec.source}: {key}{'subnet_id' if e.network.subnet_id else 'subnet_cidr'}"
                f": the instances get private addresses only, and {problem}: the client "
                "could never reach the scheduler. Submit from inside the VPC (a bastion, a "
                f"CI runner there) or over a VPN or peering that routes {cidr} (or set "
                f"{key}require_route: false if your default gateway routes the VPC). "
                "Nothing was created.")
        if e.network.subnet_id and e.network.require_nat:
            way = net.egress(net.subnet_routes(ec2, e.network.subnet_id))
            if way != "nat":
                how = ("through an internet gateway, which carries only instances with public "
                       "addresses" if way == "igw" else "nowhere")
                raise ConfigError(
                    f"{spec.source}: {key}subnet_id {e.network.subnet_id}: its route "
                    f"table sends 0.0.0.0/0 {how}; the instances (private addresses only) "
                    "could not install Docker or pull their image, and the run would wait "
                    f"out ready_timeout ({e.ready_timeout:.0f}s). Route 0.0.0.0/0 through a "
                    "NAT gateway, or set ephemeral.network.require_nat: false if the subnet "
                    "reaches your registry through VPC endpoints. Nothing was created.")
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - botocore's errors: one message naming the step
        raise ProvisionError(f"ephemeral: checking the network failed: {err}") from err

def check_capacity(spec: ClusterSpec, ec2, say: Say) -> str:
    """The zone (the file's, its subnet's, or the first that offers both instance types)
    and room in the vCPU quotas, checked before anything is made. Returns the zone."""
    import boto3

    from runner import aws_capacity as cap

    e = spec.ephemeral_spec
    key = "ephemeral.network."
    types = {e.scheduler_instance_type, e.worker_instance_type}
    try:
        offered = cap.offered_zones(ec2, types)
        if e.network.subnet_id:
            zone = cap.subnet_zone(ec2, e.network.subnet_id)
            cap.choose_zone(offered, zone, f"{key}subnet_id ({e.network.subnet_id}, in {zone})",
                            e.region)
        else:
            zone = cap.choose_zone(offered, e.network.availability_zone,
                                   f"{key}availability_zone", e.region)
        quotas = boto3.client("service-quotas", region_name=e.region)
        on_demand = {e.scheduler_instance_type: 1}
        workers_on_demand = not e.spot_workers
        unchecked = []
        if e.spot_workers:
            try:
                unchecked += cap.check_quota(ec2, quotas,
                                             {"spot": {e.worker_instance_type: e.workers}},
                                             "ephemeral.workers (spot_workers: true)")
            except ConfigError as short:
                if e.spot_fallback != "on_demand":
                    raise
                say.warning(f"WARNING: {short}; spot_fallback: on_demand, so the workers "
                            "are checked against the on-demand quota")
                workers_on_demand = True
        if workers_on_demand:
            on_demand[e.worker_instance_type] = on_demand.get(e.worker_instance_type, 0) \
                + e.workers
        unchecked += cap.check_quota(ec2, quotas, {"on-demand": on_demand},
                                     "ephemeral.workers/instance types")
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - botocore's errors: one message naming the step
        raise ProvisionError(f"ephemeral: checking zones and quotas for "
                             f"{', '.join(sorted(types))} in {e.region} failed: {err}") from err
    for what in unchecked:
        say.warning(f"WARNING: not checked before creating anything: {what}")
    return zone
