"""One ephemeral EC2 cluster: made for one job with dask-cloudprovider's EC2Cluster, always removed.

    with EphemeralCluster(spec, run_id, progress) as cluster:   # network, group, EC2Cluster
        cluster.client(); cluster.check_versions(); ...          # what submit needs
    # closed: EC2Cluster.close(), then everything tagged with the run (instances, group, key
    # pairs, subnet, VPC), whether the body succeeded, failed, or was interrupted

What EC2Cluster is given, and daskfleet's subclass of it (TLS, public or private addresses, the
run's own security group and subnet, encrypted root volumes, IMDSv2, spot workers with their
fallback): runner/ephemeral/ec2cluster.py. How each instance gets its TLS files at boot, never
through its user data: runner/ephemeral/join.py.

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

from runner.config import ClusterSpec
from runner.config_base import parse_duration
from runner.ephemeral import aws, join, preflight, teardown
from runner.ephemeral import tags as T
from runner.ephemeral.ec2cluster import cluster_kwargs, ec2_cluster_class, hard_stop_command
from runner.errors import ClusterStartError, DaskfleetError, ProvisionError
from runner.log import Progress, Say

if TYPE_CHECKING:
    from runner.provision.lock import Lock

logger = logging.getLogger(__name__)

SETTLE_S = 10.0
CLIENT_ATTEMPTS = 3


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

            def connect():
                with warnings.catch_warnings():  # check_versions() refuses; this only warns
                    warnings.simplefilter("ignore", VersionMismatchWarning)
                    return Client(self.cluster, security=self.cluster.security,
                                  direct_to_workers=False)

            self._client = self._retried(connect, "connecting to the scheduler")
        return self._client

    def _retried(self, call, what: str):
        """``call()``, tried again when a connection to the scheduler is dropped while the
        cluster comes up (a network blip; on the lab, a gateway whose MAC changed did it before
        it was fixed); its calls here ask and change nothing twice over."""
        for attempt in range(CLIENT_ATTEMPTS):
            try:
                return call()
            except OSError as err:  # CommClosedError and connection errors are OSErrors
                if attempt + 1 == CLIENT_ATTEMPTS:
                    raise
                self.say(f"ephemeral: {what}: the connection to the scheduler was dropped "
                         f"({err}); trying again")
                time.sleep(2.0)
        raise AssertionError("unreachable")

    def check_versions(self) -> dict:
        from runner.ephemeral.environment import check_environment

        assert self.upload is not None, "create() made the upload (the context manager's enter)"
        versions = check_environment(self.client(), self.upload.name)
        # the environment matched: the tasks' modules, imported by each worker (and each that
        # joins later) in one thread before its first task (ephemeral/warm_imports.py)
        from runner.ephemeral.warm_imports import WarmImports

        self._retried(lambda: self.client().register_plugin(WarmImports()),
                      "importing the project code on the workers")
        return versions

    def status_record(self) -> dict:
        return {"lock_hash": self.lock.hash if self.lock else None, "run": self.run_id,
                "instances": [i["InstanceId"] for i in self.instances()]}

    def ship_dataset(self, dataset, say: Progress, job) -> list[list[str]] | None:
        """The dataset to the workers through the scheduler, each shard to ``data.copies`` of
        their hosts. Returns, per shard, the hosts that hold it (None: every host holds every one)."""
        from runner.ephemeral.data import ship_through_dask

        t = time.monotonic()
        copies = job.data.copies
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
        return teardown.tagged_instances(self.ec2, {T.RUN: self.run_id}) if self.ec2 else []

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

    def create(self) -> None:
        from runner.ephemeral.environment import default_image, env_vars, project_upload
        from runner.provision.lock import derive_lock

        e, say = self.e, self.say
        t0 = time.monotonic()
        self.lock = derive_lock()
        self.upload = project_upload(Path(self._tmp.name), self.lock, say)
        self.ec2 = aws.ec2_client(e.region)
        image = aws.find_image(self.ec2, e.image.owner, e.image.name, e.image.id)
        preflight.check_network(self.spec, self.ec2)
        zone = preflight.check_capacity(self.spec, self.ec2, self.say)
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
                                   spec_source=str(self.spec.source or self.spec.name),
                                   join_identity=join.JoinIdentity.make(
                                       Path(self._tmp.name) / "join",
                                       parse_duration(e.max_lifetime)),
                                   console=lambda iid: aws.console_output(self.ec2, iid),
                                   join_timeout=e.ready_timeout, say=say, **kwargs)
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
            self._retried(lambda: client.wait_for_workers(e.workers, timeout=e.ready_timeout),
                          "waiting for the workers")
        self._retried(lambda: client.upload_file(str(self.upload)), "uploading the project code")
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
                    removed = teardown.remove_run(self.ec2, self.run_id, say,
                                                  timeout=teardown.TEARDOWN_TIMEOUT_S,
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
