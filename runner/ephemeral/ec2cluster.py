"""What dask-cloudprovider's EC2Cluster is given for one run, and daskfleet's subclass of it.

EC2Cluster's arguments (`cluster_kwargs`: plain data, checked in unit tests): security=True (TLS
with its temporary credentials), public or private addresses (ephemeral.network; with public
ones this machine dials the scheduler's public address and the workers its private one, which
the group's member rule admits), the run's own security group and subnet, no key pair, spot
workers when asked, tags naming the cluster, the run and its expiry on instances and volumes.

What EC2Cluster has no option for, added by `ec2_cluster_class`'s subclass: an encrypted root
volume and IMDSv2 (a hook on its RunInstances calls: `harden_run_instances`), each instance's
hard stop at the run's expiry as its first boot command (`hard_stop_command`), the on-demand
fallback of workers that EC2 refuses spot capacity, the TLS files handed to each instance after
its launch rather than put in its user data (runner/ephemeral/join.py), and of this machine's
dask config only the TLS settings, naming those files (`node_config`).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from runner.config import ClusterSpec
from runner.config_base import parse_duration
from runner.ephemeral import aws, join
from runner.errors import ProvisionError


def harden_run_instances(root_device: str):
    """A botocore `before-parameter-build.ec2.RunInstances` handler. dask-cloudprovider
    (2025.9) maps /dev/sda1 (Ubuntu's root device; on other images an extra volume) with
    Encrypted: False and sets no MetadataOptions; this maps the image's own root device,
    encrypted (the account's default EBS key), and requires IMDSv2 tokens with a hop limit of 1
    (a container on the host network still reaches it; nothing further away does)."""

    def handler(params: dict, **_kwargs) -> None:
        for mapping in params.get("BlockDeviceMappings", []):
            if "Ebs" in mapping:
                mapping["DeviceName"] = root_device
                mapping.pop("VirtualName", None)  # only meaningful for instance-store volumes
                mapping["Ebs"]["Encrypted"] = True
        params["MetadataOptions"] = {"HttpTokens": "required", "HttpEndpoint": "enabled",
                                     "HttpPutResponseHopLimit": 1}

    return handler


# The only dask settings the instances get from this machine (in their user data): the TLS
# that EC2Cluster sets. A user's own ~/.config/dask stays here; it would otherwise be serialised
# into every instance's user data and could push it past EC2's 16,384-byte limit.
NODE_CONFIG_PREFIX = ("distributed", "comm")
# Where a node's processes find the TLS files the join hands it (every role: Security.temporary
# has one certificate; a task's worker_client is a client).
NODE_TLS = {"ca-file": f"{join.NODE_TLS_DIR}/ca.pem",
            **{role: {"cert": f"{join.NODE_TLS_DIR}/cert.pem",
                      "key": f"{join.NODE_TLS_DIR}/key.pem"}
               for role in ("scheduler", "worker", "client")}}
DOCKER_ARGS = f"-v {join.NODE_TLS_DIR}:{join.NODE_TLS_DIR}:ro"


def node_config() -> str:
    """What dask-cloudprovider passes the instances as DASK_INTERNAL_INHERIT_CONFIG: the
    non-default settings under distributed.comm only, serialised as it does, with the TLS
    files' paths on the node where EC2Cluster's config has their contents (a key in the user
    data would be readable through the EC2 API)."""
    import dask.config
    from dask_cloudprovider.utils.config_helper import prune_defaults

    pruned = prune_defaults(dask.config.global_config,
                            dask.config.merge(*dask.config.defaults))
    comm = dict(pruned.get(NODE_CONFIG_PREFIX[0], {}).get(NODE_CONFIG_PREFIX[1]) or {})
    if "tls" in comm:
        comm["tls"] = NODE_TLS
    return dask.config.serialize({NODE_CONFIG_PREFIX[0]: {NODE_CONFIG_PREFIX[1]: comm}}
                                 if comm else {})


def tls_files(security) -> dict[str, str]:
    """What the join hands each instance: the run's CA and its certificate and key (PEM text,
    as Security.temporary() holds them)."""
    files = {"ca.pem": security.tls_ca_file, "cert.pem": security.tls_worker_cert,
             "key.pem": security.tls_worker_key}
    if not all(isinstance(v, str) and v.startswith("-----BEGIN") for v in files.values()):
        raise ProvisionError("ephemeral: EC2Cluster's TLS credentials are not PEM text (a new "
                             "dask-cloudprovider?): the instances' TLS files cannot be made")
    return files


def hard_stop_command(expires_epoch: int) -> str:
    """The shell command each instance runs first at boot: power off at `expires_epoch` (the run's
    daskfleet:expires), rounded down to the minute, as `shutdown -P +MINUTES` counts, so never
    after the tag says. Computed on the instance from its own clock: a late boot stops on time."""
    return (f"m=$(( ({int(expires_epoch)} - $(date +%s)) / 60 )); [ $m -gt 0 ] || m=0; "
            "shutdown -P +$m")


def with_first_commands(cloud_init: str, commands: list[str]) -> str:
    """dask-cloudprovider's #cloud-config with `commands` as the first runcmd entries: before
    its Docker install, which can take minutes or hang, and the container, which blocks."""
    head, sep, rest = cloud_init.partition("\nruncmd:\n")
    if not sep:
        raise ProvisionError("ephemeral: dask-cloudprovider's user data has no runcmd: section; "
                             "the instances' hard stop cannot be added (a new dask-cloudprovider?)")
    # A JSON string is a YAML double-quoted scalar: no quoting of the shell command by hand.
    return head + sep + "".join(f"  - {json.dumps(c)}\n" for c in commands) + rest


def before_container(cloud_init: str, command: str) -> str:
    """The #cloud-config with `command` as the runcmd entry just before the container's."""
    marker = "\n  - 'docker run "
    head, sep, rest = cloud_init.partition(marker)
    if not sep:
        raise ProvisionError("ephemeral: dask-cloudprovider's user data has no `docker run` "
                             "entry; the wait for the TLS files cannot be added (a new "
                             "dask-cloudprovider?)")
    return f"{head}\n  - {json.dumps(command)}{sep}{rest}"


# What EC2 answers RunInstances when it will not give spot capacity: no capacity for the type in
# the zone, the account's spot quota, or a maximum price under the spot price.
SPOT_REFUSED = frozenset({"InsufficientInstanceCapacity", "UnfulfillableCapacity",
                          "InsufficientCapacity", "MaxSpotInstanceCountExceeded",
                          "SpotMaxPriceTooLow"})


def cluster_kwargs(spec: ClusterSpec, tags: dict, made: aws.Made, ami: str, docker_image: str,
                   env: dict[str, str]) -> dict:
    """EC2Cluster's arguments for one run (plain data: the watchdogs are checked in unit tests)."""
    e = spec.ephemeral_spec
    memory = spec.dask.memory_limit
    secs = lambda text: f"{parse_duration(text):.0f}s"  # noqa: E731
    return dict(
        region=e.region, ami=ami, bootstrap=e.bootstrap, auto_shutdown=True,
        scheduler_instance_type=e.scheduler_instance_type,
        worker_instance_type=e.worker_instance_type, vpc=made.vpc_id,
        subnet_id=made.subnet_id, security_groups=[made.group_id],
        filesystem_size=e.filesystem_size, key_name=None, docker_image=docker_image,
        instance_tags=dict(tags), volume_tags=dict(tags), use_private_ip=not e.network.public,
        enable_detailed_monitoring=False, spot=e.spot_workers, n_workers=e.workers,
        security=True, docker_args=DOCKER_ARGS,
        # no-workers-timeout is read from the config only (not a Scheduler argument); the
        # container's environment reaches the scheduler's dask config.
        env_vars={**env, "DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT":
                  secs(e.no_workers_timeout)},
        scheduler_options={"port": spec.dask.scheduler_port,
                           "dashboard_address": f":{spec.dask.dashboard_port}",
                           "idle_timeout": secs(e.idle_timeout)},
        worker_options={"nthreads": spec.dask.threads_per_worker,
                        "death_timeout": secs(e.worker_death_timeout),
                        **({} if memory == "auto" else {"memory_limit": memory})},
        silence_logs=True,
    )


def ec2_cluster_class():
    try:
        from dask_cloudprovider.aws import EC2Cluster
        from dask_cloudprovider.aws.ec2 import EC2Scheduler, EC2Worker
        from dask_cloudprovider.generic import vmcluster
    except ImportError:
        raise ProvisionError(aws.INSTALL_HINT) from None

    vmcluster.serialize_custom_config = node_config

    class JoinedVM:
        """An instance that, once launched, is handed its TLS files (runner/ephemeral/join.py)
        at the address this machine reaches it by, before its start counts as done."""

        async def create_vm(self):
            addresses = await super().create_vm()
            cluster, iid = self.cluster, self.instance["InstanceId"]
            took = await self.call_async(
                join.join, iid, addresses[0], lambda: cluster.console(iid),
                cluster.join_identity, tls_files(cluster.security), cluster.join_timeout,
                cluster.say)
            cluster.say(f"ephemeral: {self.name} ({iid}) joined: its TLS files handed over at "
                        f"{addresses[0]}:{join.JOIN_PORT} ({took:.1f}s after its launch)")
            return addresses

    class JoinedEC2Scheduler(JoinedVM, EC2Scheduler):
        pass

    class FallbackEC2Worker(JoinedVM, EC2Worker):
        """A worker that, when EC2 refuses it spot capacity, launches on-demand if the file's
        spot_fallback allows it, and otherwise fails naming that key."""

        async def create_vm(self):
            try:
                return await super().create_vm()
            except Exception as err:  # noqa: BLE001 - botocore ClientError, told by its code
                code = aws.error_code(err)
                if not self.spot or code not in SPOT_REFUSED:
                    raise
                cluster = self.cluster
                cluster.spot_refusals.append(f"{code}: {err}")
                if cluster.spot_fallback != "on_demand":
                    raise ProvisionError(
                        f"ephemeral: EC2 refused spot capacity for a worker ({code}: {err}). "
                        f"{cluster.spec_source}: ephemeral.spot_fallback is `fail`, so the run "
                        "stops before the job; set `spot_fallback: on_demand` to launch such "
                        "workers on-demand (at the on-demand price), or set `spot_workers: false`, "
                        "or try again later or with another worker_instance_type.") from err
                cluster.on_demand_fallbacks.append(self.name)
                cluster._log(f"spot refused ({code}); launching {self.name} on-demand")
                self.spot = False
                return await super().create_vm()

        async def destroy_vm(self):
            # A worker EC2 refused has no instance: closing the failed start must not fail on it
            # (EC2Worker's would, and its TypeError would hide the refusal).
            if getattr(self, "instance", None) is not None:
                await super().destroy_vm()

    class PublicEC2Scheduler(JoinedEC2Scheduler):
        """With public addresses, EC2Scheduler gives its public address to the workers too: they
        would dial it through the internet gateway, from public addresses that the group's
        member rule does not match (it matches private ones). Here the workers get the private
        address and this machine the public one (the scheduler's external_address)."""

        async def create_vm(self):
            public, _ = await super().create_vm()
            return self.instance["PrivateIpAddress"], public

    class HardenedEC2Cluster(EC2Cluster):
        """EC2Cluster whose instances get an encrypted root volume and IMDSv2 and, first at
        boot, their hard stop at the run's expiry (see above); whose workers fall back to
        on-demand when allowed. It records itself before starting, so an interrupted start can
        still be closed."""

        def __init__(self, *args, root_device: str, started: list, hard_stop: str,
                     spot_fallback: str, spec_source: str, join_identity: join.JoinIdentity,
                     console: Callable[[str], str], join_timeout: float,
                     say: Callable[[str], None], **kwargs):
            self._harden = harden_run_instances(root_device)
            self._hard_stop = hard_stop
            self.join_identity = join_identity
            self.console = console
            self.join_timeout = join_timeout
            self.say = say
            self.spot_fallback = spot_fallback
            self.spec_source = spec_source
            self.spot_refusals: list[str] = []
            self.on_demand_fallbacks: list[str] = []
            started.append(self)
            super().__init__(*args, **kwargs)

        async def _start(self):
            self.worker_class = FallbackEC2Worker  # EC2Cluster.__init__ sets EC2Worker
            self.scheduler_class = JoinedEC2Scheduler if self._use_private_ip else \
                PublicEC2Scheduler
            await super()._start()

        def render_process_cloud_init(self, process):
            cloud_init = with_first_commands(
                super().render_process_cloud_init(process),
                [self._hard_stop, join.agent_command(self.join_identity.cert_pem)])
            return before_container(cloud_init, join.wait_command())

        def instance_ids(self) -> tuple[str, ...]:
            """What RunInstances returned so far (scheduler and workers)."""
            vms = [getattr(self, "scheduler", None), *getattr(self, "workers", {}).values()]
            return tuple(vm.instance["InstanceId"] for vm in vms
                         if isinstance(getattr(vm, "instance", None), dict)
                         and "InstanceId" in vm.instance)

        # EC2Cluster.__init__ makes its aiobotocore session itself: hook whichever it sets.
        @property
        def boto_session(self):
            return self._boto_session

        @boto_session.setter
        def boto_session(self, session) -> None:
            session.register("before-parameter-build.ec2.RunInstances", self._harden)
            self._boto_session = session

    return HardenedEC2Cluster
