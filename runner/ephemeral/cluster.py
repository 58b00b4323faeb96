"""One ephemeral EC2 cluster: made for one job with dask-cloudprovider's EC2Cluster, always removed.

    with EphemeralCluster(spec, run_id, progress) as cluster:   # network, group, EC2Cluster
        cluster.client(); cluster.check_versions(); ...          # what submit needs
    # closed: EC2Cluster.close(), then everything tagged with the run (instances, group, key
    # pairs, subnet, VPC), whether the body succeeded, failed, or was interrupted

What EC2Cluster is given: security=True (TLS with its temporary credentials), public or private
addresses (ephemeral.network; with public ones this machine dials the scheduler's public address
and the workers its private one, which the group's member rule admits), the run's own security
group and subnet, no key pair, spot workers when asked, tags naming the
cluster, the run and its expiry on instances and volumes. Encrypted root volumes and IMDSv2 are
not options of EC2Cluster: a hook on its RunInstances calls adds them (see `harden_run_instances`).

Watchdogs, so that a run never bills for ever (the instances' shutdown behaviour is `terminate`, so
an instance that powers off is gone):
- the scheduler closes when idle (idle_timeout), and tasks that no worker can run fail after
  no_workers_timeout (every spot worker reclaimed), which makes it idle;
- a worker that cannot reach its scheduler at start exits after worker_death_timeout (one whose
  connection breaks later exits at once); the container's end powers the instance off;
- each instance's first boot command schedules its own power-off at the run's expiry
  (max_lifetime), with nothing needed from the control machine (see `hard_stop_command`).
"""

from __future__ import annotations

import json
import logging
import signal
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.config import ClusterSpec, parse_duration
from runner.ephemeral import aws
from runner.ephemeral import tags as T
from runner.errors import ClusterStartError, ConfigError, DaskfleetError, ProvisionError
from runner.log import Progress, Say

if TYPE_CHECKING:
    from runner.provision.lock import Lock

logger = logging.getLogger(__name__)

SETTLE_S = 10.0


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


def node_config() -> str:
    """What dask-cloudprovider passes the instances as DASK_INTERNAL_INHERIT_CONFIG: the
    non-default settings under distributed.comm only (its TLS), serialised as it does."""
    import dask.config
    from dask_cloudprovider.utils.config_helper import prune_defaults

    pruned = prune_defaults(dask.config.global_config,
                            dask.config.merge(*dask.config.defaults))
    comm = pruned.get(NODE_CONFIG_PREFIX[0], {}).get(NODE_CONFIG_PREFIX[1])
    return dask.config.serialize({NODE_CONFIG_PREFIX[0]: {NODE_CONFIG_PREFIX[1]: comm}}
                                 if comm else {})


def hard_stop_command(expires_epoch: int) -> str:
    """The shell command each instance runs first at boot: power off at `expires_epoch` (the run's
    daskfleet:expires), rounded down to the minute, as `shutdown -P +MINUTES` counts, so never
    after the tag says. Computed on the instance from its own clock: a late boot stops on time."""
    return (f"m=$(( ({int(expires_epoch)} - $(date +%s)) / 60 )); [ $m -gt 0 ] || m=0; "
            "shutdown -P +$m")


def with_first_command(cloud_init: str, command: str) -> str:
    """dask-cloudprovider's #cloud-config with `command` as the first runcmd entry: before its
    Docker install, which can take minutes or hang, and the container, which blocks."""
    head, sep, rest = cloud_init.partition("\nruncmd:\n")
    if not sep:
        raise ProvisionError("ephemeral: dask-cloudprovider's user data has no runcmd: section; "
                             "the instances' hard stop cannot be added (a new dask-cloudprovider?)")
    # A JSON string is a YAML double-quoted scalar: no quoting of the shell command by hand.
    return f"{head}{sep}  - {json.dumps(command)}\n{rest}"


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
        security=True,
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

    class FallbackEC2Worker(EC2Worker):
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

    class PublicEC2Scheduler(EC2Scheduler):
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
                     spot_fallback: str, spec_source: str, **kwargs):
            self._harden = harden_run_instances(root_device)
            self._hard_stop = hard_stop
            self.spot_fallback = spot_fallback
            self.spec_source = spec_source
            self.spot_refusals: list[str] = []
            self.on_demand_fallbacks: list[str] = []
            started.append(self)
            super().__init__(*args, **kwargs)

        async def _start(self):
            self.worker_class = FallbackEC2Worker  # EC2Cluster.__init__ sets EC2Worker
            if not self._use_private_ip:
                self.scheduler_class = PublicEC2Scheduler
            await super()._start()

        def render_process_cloud_init(self, process):
            return with_first_command(super().render_process_cloud_init(process), self._hard_stop)

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


@contextmanager
def deadline(seconds: float, what: str):
    """Raise ClusterStartError in the main thread after `seconds` (EC2Cluster waits for its
    scheduler's port without a timeout). Outside the main thread: no deadline."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_sig, _frame):
        raise ClusterStartError(f"ephemeral: {what} did not finish within {seconds:.0f}s "
                                "(ephemeral.ready_timeout); the cluster is removed.")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class EphemeralCluster:
    """The cluster of one run; a context manager that always removes what the run made."""

    def __init__(self, spec: ClusterSpec, run_id: str, progress: Progress | None = None):
        if spec.ephemeral is None:
            raise ProvisionError(f"{spec.source}: not an ephemeral cluster file (mode: ephemeral)")
        self.spec = spec
        self.e = spec.ephemeral
        self.run_id = run_id
        self.say = Say(progress, logger)
        self.now = datetime.now(UTC)
        self.tags = T.run_tags(spec.name, run_id, self.now, parse_duration(self.e.max_lifetime))
        self.made = aws.Made()
        self.ec2: Any = None  # a boto3 EC2 client (untyped)
        self.cluster: Any = None  # the EC2Cluster (dask-cloudprovider is untyped)
        self._started: list = []
        self._client = None
        self.timings: dict[str, float] = {}
        self.lock: Lock | None = None
        self.upload: Path | None = None
        self.teardown_error: str | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="daskfleet-ephemeral-")

    # -- what submit uses ------------------------------------------------------------------
    def client(self):
        if self._client is None:
            from distributed import Client
            from distributed.versions import VersionMismatchWarning

            with warnings.catch_warnings():  # check_versions() refuses, where this only warns
                warnings.simplefilter("ignore", VersionMismatchWarning)
                self._client = Client(self.cluster, security=self.cluster.security,
                                      direct_to_workers=False)
        return self._client

    def check_versions(self) -> dict:
        from runner.ephemeral.environment import check_environment

        assert self.upload is not None, "create() made the upload (the context manager's enter)"
        return check_environment(self.client(), self.upload.name)

    def status_record(self) -> dict:
        return {"lock_hash": self.lock.hash if self.lock else None, "run": self.run_id,
                "instances": [i["InstanceId"] for i in self.instances()]}

    def ship_dataset(self, dataset, say: Progress, job) -> list[list[str]] | None:
        """The dataset to the workers through the scheduler, each shard to ``data.copies`` of
        their hosts (to all without the features cache: a partition is then rebuilt on any
        worker). Returns, per shard, the hosts that hold it (None: every host holds every one)."""
        from runner.ephemeral.data import ship_through_dask

        t = time.monotonic()
        copies = job.data.copies if job.features.cache else None
        try:
            holders, sent = ship_through_dask(self.client(), dataset.dir, dataset.digest,
                                              list(dataset.files), copies)
        except Exception as err:  # noqa: BLE001 - a worker's error, re-raised with the step named
            raise ProvisionError(f"ephemeral: shipping the dataset through the scheduler failed: "
                                 f"{type(err).__name__}: {err}") from err
        shards = sum(len(names) for names in sent.values())
        each = "every host" if holders is None else f"{copies} host(s)"
        say(f"dataset shipped through the scheduler: {len(dataset.files)} shards, each to {each}; "
            f"{shards} shard copies sent to {sum(1 for v in sent.values() if v)} host(s), the "
            f"rest there already ({time.monotonic() - t:.1f}s)")
        return holders

    def instances(self) -> list[dict]:
        return aws.tagged_instances(self.ec2, {T.RUN: self.run_id}) if self.ec2 else []

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> EphemeralCluster:
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_network(self) -> None:
        """Refused before anything is made: with public addresses, an existing subnet that does
        not route 0.0.0.0/0 to an internet gateway (the addresses would answer nothing); with
        private ones, a subnet this machine reaches only through its default route, or one that
        does not reach out through a NAT (the instances pull their image)."""
        from runner import aws_network as net

        e, key = self.e, "ephemeral.network."
        try:
            if e.network.public:
                if e.network.subnet_id and net.egress(
                        net.subnet_routes(self.ec2, e.network.subnet_id)) != "igw":
                    raise ConfigError(
                        f"{self.spec.source}: {key}subnet_id {e.network.subnet_id}: "
                        f"{key}public_addresses is true, but the subnet's route table does not "
                        "send 0.0.0.0/0 to an internet gateway, so a public address would "
                        "answer nothing. Give a public subnet, or remove public_addresses to use "
                        "private ones (through a NAT). Nothing was created.")
                return
            cidr = net.subnet_cidr(self.ec2, e.network.subnet_id) if e.network.subnet_id \
                else str(e.network.subnet_cidr)
            problem = net.check_private_route(cidr) if e.network.require_route else None
            if problem:
                raise ConfigError(
                    f"{self.spec.source}: {key}{'subnet_id' if e.network.subnet_id else 'subnet_cidr'}"
                    f": the instances get private addresses only, and {problem}: the client "
                    "could never reach the scheduler. Submit from inside the VPC (a bastion, a "
                    f"CI runner there) or over a VPN or peering that routes {cidr} (or set "
                    f"{key}require_route: false if your default gateway routes the VPC). "
                    "Nothing was created.")
            if e.network.subnet_id and e.network.require_nat:
                way = net.egress(net.subnet_routes(self.ec2, e.network.subnet_id))
                if way != "nat":
                    how = ("through an internet gateway, which carries only instances with public "
                           "addresses" if way == "igw" else "nowhere")
                    raise ConfigError(
                        f"{self.spec.source}: {key}subnet_id {e.network.subnet_id}: its route "
                        f"table sends 0.0.0.0/0 {how}; the instances (private addresses only) "
                        "could not install Docker or pull their image, and the run would wait "
                        f"out ready_timeout ({e.ready_timeout:.0f}s). Route 0.0.0.0/0 through a "
                        "NAT gateway, or set ephemeral.network.require_nat: false if the subnet "
                        "reaches your registry through VPC endpoints. Nothing was created.")
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - botocore's errors: one message naming the step
            raise ProvisionError(f"ephemeral: checking the network failed: {err}") from err

    def _check_capacity(self) -> str:
        """The zone (the file's, its subnet's, or the first that offers both instance types)
        and room in the vCPU quotas, checked before anything is made. Returns the zone."""
        import boto3

        from runner import aws_capacity as cap

        e, say = self.e, self.say
        key = "ephemeral.network."
        types = {e.scheduler_instance_type, e.worker_instance_type}
        try:
            offered = cap.offered_zones(self.ec2, types)
            if e.network.subnet_id:
                zone = cap.subnet_zone(self.ec2, e.network.subnet_id)
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
                    unchecked += cap.check_quota(self.ec2, quotas,
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
            unchecked += cap.check_quota(self.ec2, quotas, {"on-demand": on_demand},
                                         "ephemeral.workers/instance types")
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - botocore's errors: one message naming the step
            raise ProvisionError(f"ephemeral: checking zones and quotas for "
                                 f"{', '.join(sorted(types))} in {e.region} failed: {err}") from err
        for what in unchecked:
            say.warning(f"WARNING: not checked before creating anything: {what}")
        return zone

    def create(self) -> None:
        from runner.ephemeral.environment import default_image, env_vars, project_upload
        from runner.provision.lock import derive_lock

        e, say = self.e, self.say
        t0 = time.monotonic()
        self.lock = derive_lock()
        self.upload = project_upload(Path(self._tmp.name), self.lock, say)
        self.ec2 = aws.ec2_client(e.region)
        image = aws.find_image(self.ec2, e.image.owner, e.image.name, e.image.id)
        self._check_network()
        zone = self._check_capacity()
        try:
            if e.network.subnet_id:
                self.made.subnet_id = e.network.subnet_id
                self.made.vpc_id = aws.subnet_vpc(self.ec2, e.network.subnet_id)
            else:
                vpc_cidr, subnet_cidr = e.network.vpc_cidr, e.network.subnet_cidr
                assert vpc_cidr is not None and subnet_cidr is not None, \
                    "NetworkSpec's validator: a subnet_id, or both ranges"
                aws.make_network(self.ec2, vpc_cidr, subnet_cidr, self.tags, self.made, zone,
                                 public=e.network.public)
            assert self.made.vpc_id is not None, "set by subnet_vpc or make_network"
            ports = (self.spec.dask.scheduler_port, self.spec.dask.dashboard_port)
            aws.make_group(self.ec2, self.made.vpc_id, f"daskfleet-{self.run_id}", e.admin_cidr,
                           (min(ports), max(ports)), self.tags, self.made)
        except ProvisionError:
            raise
        except Exception as err:  # noqa: BLE001 - botocore errors: one message naming the step
            raise ProvisionError(f"ephemeral: making the network or security group failed: {err}") \
                from err
        say(f"ephemeral: made {'; '.join(self.made.created)}; tags {T.RUN}={self.run_id} "
            f"{T.EXPIRES}={self.tags[T.EXPIRES]}")
        docker_image = e.docker_image or default_image(self.lock)
        say(f"ephemeral: creating the scheduler ({e.scheduler_instance_type}) and {e.workers} "
            f"worker(s) ({e.worker_instance_type}{', spot' if e.spot_workers else ''}) from "
            f"{image['ImageId']} ({image.get('Name')}), container {docker_image}")
        Cls = ec2_cluster_class()
        kwargs = cluster_kwargs(self.spec, self.tags, self.made, image["ImageId"], docker_image,
                                env_vars(self.lock))
        expires = T.parse(self.tags[T.EXPIRES])
        assert expires is not None, "run_tags writes the expiry"
        with deadline(e.ready_timeout, "creating the cluster (scheduler instance and its port)"), \
                warnings.catch_warnings():
            # "Creating your cluster is taking a surprisingly long time": booting VMs takes long
            warnings.filterwarnings("ignore", message="Creating your cluster")
            try:
                self.cluster = Cls(root_device=image.get("RootDeviceName") or "/dev/xvda",
                                   started=self._started,
                                   hard_stop=hard_stop_command(int(expires.timestamp())),
                                   spot_fallback=e.spot_fallback,
                                   spec_source=str(self.spec.source or self.spec.name), **kwargs)
            except Exception as err:  # noqa: BLE001 - SpecCluster may wrap or chain our error
                cause = _own_error(err)
                if cause is None or cause is err:
                    raise
                raise cause from err
        self.timings["create"] = time.monotonic() - t0
        addr = self.cluster.scheduler_address
        say(f"ephemeral: scheduler {addr} answering ({self.timings['create']:.1f}s); waiting for "
            f"{e.workers} worker(s)")
        t = time.monotonic()
        client = self.client()
        with deadline(e.ready_timeout, f"waiting for {e.workers} worker(s)"):
            client.wait_for_workers(e.workers, timeout=e.ready_timeout)
        client.upload_file(str(self.upload))
        self.timings["ready"] = time.monotonic() - t
        say(f"ephemeral: {e.workers} worker(s) joined, project code uploaded "
            f"({self.timings['ready']:.1f}s); every instance powers itself off at "
            f"{self.tags[T.EXPIRES]} (max_lifetime {e.max_lifetime})")
        if self.cluster.on_demand_fallbacks:
            say(f"ephemeral: EC2 refused spot capacity ({self.cluster.spot_refusals[0]}): "
                f"{len(self.cluster.on_demand_fallbacks)} of {e.workers} worker(s) run on-demand "
                "(spot_fallback: on_demand)")

    def workers_market(self) -> dict:
        """How the workers were bought, for the run record."""
        c = self._started[0] if self._started else None
        fallbacks = len(c.on_demand_fallbacks) if c is not None else 0
        spot = self.e.workers - fallbacks if self.e.spot_workers else 0
        return {"spot": spot, "on_demand": self.e.workers - spot,
                "spot_refused": c.spot_refusals[0] if c is not None and c.spot_refusals else None}

    def close(self) -> None:
        """Close the client and EC2Cluster, then remove everything tagged with the run, looking
        again with backoff until nothing is left or TEARDOWN_TIMEOUT_S passes. Never raises: a
        failure is kept in `teardown_error` for the caller to report beside the job's outcome.
        Ctrl-C and SIGTERM are held off meanwhile (a second one would only leave things behind)."""
        say = self.say
        t = time.monotonic()
        held = _hold_signals(say)
        try:
            say(f"ephemeral: closing the cluster of run {self.run_id}")
            if self._client is not None:
                try:
                    self._client.close(timeout=10)
                except Exception as err:  # noqa: BLE001 - closing anyway
                    say(f"ephemeral: closing the client: {err}")
            known: tuple[str, ...] = ()
            for c in self._started[:1]:
                known = c.instance_ids()
                try:
                    c.close(timeout=60)
                except Exception as err:  # noqa: BLE001 - the sweep below removes what is left
                    say(f"ephemeral: EC2Cluster.close: {type(err).__name__}: {err}")
            if self.ec2 is not None:
                # A start cut short may have a launch still in flight: nothing found must be
                # found twice, SETTLE_S apart. After a full start every launch has returned.
                settle = 0.0 if self.cluster is not None else SETTLE_S
                try:
                    removed = aws.remove_run(self.ec2, self.run_id, say,
                                             timeout=aws.TEARDOWN_TIMEOUT_S,
                                             known_instances=known, settle=settle)
                except Exception as err:  # noqa: BLE001 - reported beside the job's outcome
                    self.teardown_error = str(err) if isinstance(err, ProvisionError) else \
                        f"ephemeral: teardown failed: {type(err).__name__}: {err}"
                    say.warning(self.teardown_error)
                else:
                    say(f"ephemeral: removed {', '.join(removed) or 'nothing'}")
            self.timings["teardown"] = time.monotonic() - t
            if self.teardown_error is None:
                say(f"ephemeral: nothing of run {self.run_id} is left "
                    f"({self.timings['teardown']:.1f}s)")
        finally:
            _restore_signals(held)
            self._tmp.cleanup()

    def teardown_record(self) -> dict:
        """What the run record says about the teardown."""
        return {"status": "failed" if self.teardown_error else "done",
                "error": self.teardown_error,
                "seconds": round(self.timings.get("teardown", 0.0), 1)}


def _own_error(err: BaseException) -> DaskfleetError | None:
    """The project error somewhere in err's chain of causes (EC2Cluster wraps them)."""
    seen = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, DaskfleetError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _hold_signals(say: Progress) -> dict:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def hold(sig, _frame):
        say(f"ephemeral: {signal.Signals(sig).name} while closing: finishing the teardown first")

    return {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(held: dict) -> None:
    for s, h in held.items():
        signal.signal(s, h)
