"""A Dask cluster made of hosts: provisioned by Terraform and Ansible, run by Fabric over SSH.

This is the face of a cluster: its hosts, its client and its commands (up, scale, down, status).
The work is done in provision/machines.py (Terraform, Ansible), cluster/up_steps.py (`up`'s
steps, timed), cluster/reconcile.py (what runs against what is wanted), cluster/stopping.py
(what `scale`, `stop` and `down` take away) and cluster/readiness.py (waiting until it is ready).
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from runner import state
from runner.cluster import readiness, reconcile, rotation, running, status_report, stopping, up_steps
from runner.cluster.hosts import Host
from runner.cluster.process_settings import DaskSettings, ProcStatus
from runner.cluster.processes import RemoteProcess
from runner.cluster.ssh import ConnectionPool, SSHSettings, connect, fan_out
from runner.cluster.up_steps import UpSummary
from runner.config import ClusterSpec, load_cluster
from runner.dask_workers import joined_workers
from runner.errors import ClusterStartError, ConfigError, DaskfleetError, StateError
from runner.log import Progress, Say
from runner.provision import machines, providers, terraform
from runner.provision.tls import CertificateAuthority
from runner.shared_state import SharedState

logger = logging.getLogger(__name__)


class Cluster:
    def __init__(self, spec: ClusterSpec):
        self.spec = spec
        self.provider = providers.for_spec(spec)
        self._client = None
        self._ssh: SSHSettings | None = None
        self.pool = ConnectionPool()
        self._forward = None  # the SSH tunnel to the scheduler, on providers that need one
        self._said_damaged = False  # a damaged state.json: said once
        # `state:` in the file: this machine's copy is refreshed from the team's store first
        self.shared = SharedState.for_spec(spec)
        if self.shared is not None:
            self.shared.pull(self.state_dir)

    @classmethod
    def from_file(cls, path: str | Path) -> Cluster:
        return cls(load_cluster(path))

    # -- context manager / client -----------------------------------------------------------
    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.close_client()
        self.pool.close()

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._forward is not None:
            self._forward.close()
            self._forward = None

    @property
    def state_dir(self) -> Path:
        return self.spec.state_dir

    @contextmanager
    def locked(self, what: str, progress: Progress | None = None) -> Iterator[None]:
        """Hold the cluster's lock for a command that changes it: this machine's, and with
        shared state the store's, under which the copy here is refreshed first and written back
        last (also when the command fails: what it made is recorded)."""
        say = Say(progress, logger)
        with state.locked(self.state_dir, what, progress=progress):
            if self.shared is None:
                yield
                return
            with self.shared.locked(what, progress=progress):
                self.shared.pull(self.state_dir, progress)
                try:
                    yield
                except BaseException:
                    try:
                        self.shared.push(self.state_dir)
                    except Exception as e:  # noqa: BLE001 - the command's own error comes first
                        say.warning(f"WARNING: the shared state was not written back: {e}")
                    raise
                self.shared.push(self.state_dir)

    @property
    def ca(self) -> CertificateAuthority:
        return CertificateAuthority(self.state_dir / "tls", self.spec.name)

    @property
    def inventory_path(self) -> Path:
        return self.spec.inventory_path

    def settings(self) -> DaskSettings:
        d = self.spec.dask
        return DaskSettings(cluster=self.spec.name, scheduler_port=d.scheduler_port,
                            dashboard_port=d.dashboard_port,
                            worker_port_range=d.worker_port_range,
                            nanny_port_range=d.nanny_port_range,
                            threads_per_worker=d.threads_per_worker, memory_limit=d.memory_limit,
                            tls=self.spec.tls, memory_share=d.memory_share,
                            limits=d.limits.ulimits())

    # -- hosts ------------------------------------------------------------------------------
    def ssh(self) -> SSHSettings:
        if self._ssh is None:
            self._ssh = self._ssh_settings()
        return self._ssh

    def _ssh_settings(self) -> SSHSettings:
        s = self.spec.ssh
        key, known = self.provider.ssh_paths()
        return SSHSettings(private_key=Path(key), known_hosts=Path(known),
                           connect_timeout=s.connect_timeout,
                           insecure_skip_host_key_check=s.insecure_skip_host_key_check,
                           pool=self.pool)

    def declared_hosts(self) -> list[Host]:
        """The machines the cluster file names (lab: the running lab's hosts; clouds: none)."""
        return self.provider.declared_hosts()

    def hosts(self) -> list[Host]:
        """The hosts as last provisioned (Terraform's output, recorded in state.json; read from
        Terraform's own state when state.json is damaged)."""
        recorded = self.recorded_hosts()
        if not recorded:
            raise DaskfleetError(f"cluster {self.spec.name}: not provisioned yet (no record in "
                                 f"{self.state_dir}); run `daskfleet up -c {self.spec.source}`.")
        return [Host.from_dict(h) for h in recorded]

    def recorded_hosts(self) -> list[dict]:
        try:
            return state.read(self.state_dir).get("hosts") or []
        except StateError as damaged:
            workdir = self.state_dir / "terraform"
            if not (workdir / "terraform.tfstate").exists():
                raise
            try:
                outputs = terraform.outputs(workdir, self.provider.terraform_env())
                hosts = self.provider.hosts_from_output(outputs)
            except DaskfleetError:
                raise damaged from None
            if not self._said_damaged:  # once, however often the hosts are asked for
                self._said_damaged = True
                logger.warning(f"warning: {damaged.path} is damaged; the hosts come from "
                               "Terraform's state")
            return [h.to_dict() for h in hosts]

    def worker_hosts(self, hosts: list[Host] | None = None) -> list[Host]:
        hosts = hosts or self.hosts()
        workers = [h for h in hosts if h.role == "worker"]
        if self.provider.worker_on_scheduler():
            workers.insert(0, next(h for h in hosts if h.role == "scheduler"))
        return workers

    def live_worker_hosts(self, progress: Progress | None = None) -> list[Host]:
        """The worker hosts with a worker joined to the scheduler right now: a degraded cluster
        works with these (data is shipped only there), and the missing ones are said."""
        joined = {w["host"] for w in joined_workers(self.client()).values()}
        hosts = self.worker_hosts()
        live = [h for h in hosts if h.dask_address in joined]
        missing = [h.name for h in hosts if h not in live]
        if not live:
            raise ClusterStartError(f"cluster {self.spec.name}: no worker has joined the scheduler; "
                                    f"see `daskfleet status -c {self.spec.source}`, then run "
                                    "`daskfleet up` to heal it.")
        if missing:
            Say(progress, logger).warning(
                f"WARNING: degraded: no live worker on {', '.join(missing)}; working with "
                f"{', '.join(h.name for h in live)}")
        return live

    def n_workers(self) -> int:
        """Workers wanted: one per worker host unless `daskfleet scale N` said otherwise."""
        return state.read(self.state_dir).get("n_workers") or len(self.worker_hosts())

    def wanted(self, hosts: list[Host] | None = None, n_workers: int | None = None
               ) -> list[RemoteProcess]:
        """The scheduler, then n workers spread round-robin over the worker hosts."""
        hosts = hosts or self.hosts()
        sched = next(h for h in hosts if h.role == "scheduler")
        settings = self.settings()
        workers = self.worker_hosts(hosts)
        n = n_workers if n_workers is not None else self.n_workers()
        per_host = [len(range(h, n, len(workers))) for h in range(len(workers))]
        return [RemoteProcess(sched, "scheduler", sched, settings)] + [
            RemoteProcess(workers[i % len(workers)], "worker", sched, settings,
                          index=i // len(workers), per_host=per_host[i % len(workers)])
            for i in range(n)
        ]

    # -- the work, elsewhere ------------------------------------------------------------------
    def provision(self, progress: Progress | None = None, yes: bool = False,
                  before_apply=None) -> list[Host]:
        hosts, self.boot_s = machines.provision(self, progress, yes, before_apply)
        return hosts

    def install(self, hosts: list[Host], progress: Progress | None = None, force: bool = False):
        return machines.install(self, hosts, progress, force)

    def process_states(self) -> dict[RemoteProcess, ProcStatus]:
        return running.process_states(self)

    def start(self, env_hashes: dict[str, str] | None = None, progress: Progress | None = None,
              extra_hosts: Sequence[Host] = (), degraded_ok: bool = False,
              restart_scheduler: bool = False) -> list[str]:
        """Reconcile what runs with what is wanted (cluster/reconcile.py)."""
        return reconcile.reconcile(self, env_hashes, progress, extra_hosts, degraded_ok,
                                   restart_scheduler)

    def wait_ready(self, wanted: set[str], timeout: float | None = None) -> None:
        readiness.wait_ready(self, wanted, timeout)

    def scheduler_forward(self):
        """The SSH tunnel from this machine to the scheduler's port (cloud providers)."""
        from runner.cluster.tunnel import Forward

        if self._forward is None:
            sched = next(h for h in self.hosts() if h.role == "scheduler")
            self._forward = Forward(sched, sched.dask_address, self.spec.dask.scheduler_port,
                                    self.ssh())
        return self._forward


    def status_record(self) -> dict:
        return state.read(self.state_dir)

    def client(self):
        if self._client is None:
            import warnings

            from distributed import Client
            from distributed.versions import VersionMismatchWarning

            # distributed only warns on mismatches (and flags the Python patch level, which the
            # nodes' system Python may differ in); check_versions() refuses them instead.
            warnings.filterwarnings("ignore", category=VersionMismatchWarning)

            address = state.read(self.state_dir).get("scheduler") or self.wanted()[0].scheduler_address
            if self.provider.tunnel:
                protocol = address.split("://")[0]
                address = f"{protocol}://127.0.0.1:{self.scheduler_forward().local_port}"
            security = self.ca.client_security() if self.spec.tls else None
            self._client = Client(address, security=security, timeout="15s")
        return self._client

    def check_versions(self) -> dict:
        from runner.cluster.versions import check_versions

        return check_versions(self.client())

    # -- up / down / status -----------------------------------------------------------------
    def up(self, progress: Progress | None = None, force: bool = False, restart: bool = False,
           yes: bool = False, new_image: bool = False) -> UpSummary:
        """Provision, install and start (a reconcile), holding the cluster's lock. ``restart``:
        restart the scheduler when it must, even under a running job. ``yes``: apply a plan
        that destroys or replaces machines. ``new_image``: look the image up again."""
        say = Say(progress, logger)
        with self.locked("daskfleet up", progress=progress):
            if new_image:
                state.update(self.state_dir, image=None)
                say("up: the image is looked up again; VMs on another image will be "
                    "replaced (which `up` applies only with --yes)")
            return self.apply(progress, force, restart, yes)

    def apply(self, progress: Progress | None, force: bool = False, restart: bool = False,
              yes: bool = False) -> UpSummary:
        """`up`'s work (Terraform, Ansible, the reconcile), the cluster's lock already held."""
        return up_steps.apply(self, progress, force, restart, yes)

    def scale(self, n: int, progress: Progress | None = None) -> dict:
        """N workers over the worker hosts. Workers that go are retired through the scheduler
        first (their data moves to the workers that stay), then their processes stop."""
        if n < 1:
            raise ConfigError(f"scale: N must be at least 1, not {n}.")
        with self.locked("daskfleet scale", progress=progress):
            return stopping.scale(self, n, progress)

    def stop(self, progress: Progress | None = None) -> list[str]:
        """Stop every dask process this cluster started (workers first); report unreachable ones."""
        return stopping.stop(self, progress)

    def down(self, destroy: bool = False, progress: Progress | None = None,
             purge: bool = False) -> None:
        """Stop Dask; with destroy, remove the infrastructure too. The cluster's CA (and, on
        clouds, the host keys daskfleet generated) are kept, and said so, unless purge."""
        say = Say(progress, logger)
        if purge and not destroy:
            raise ConfigError("down: --purge removes the CA of a destroyed cluster; use it with "
                              "--destroy.")
        with self.locked("daskfleet down", progress=progress):
            stopping.down(self, destroy, progress)
            if purge:  # under the lock: with shared state, the store's copy goes too
                import shutil

                for folder in (self.ca.dir, self.state_dir / "host_keys"):
                    shutil.rmtree(folder, ignore_errors=True)
                say(f"purged the cluster's CA and host keys ({self.state_dir}"
                    + (f", {self.shared.where}" if self.shared else "") + ")")
        if destroy and not purge and self.ca.ca_cert.exists():
            say(f"kept the cluster's CA ({self.ca.dir}): a cluster made again from this file "
                "trusts the same CA; `down --destroy --purge` removes it")

    def status(self) -> dict:
        return status_report.status(self)

    def rotate(self, progress: Progress | None = None, restart: bool = False,
               new_ca: bool = False) -> UpSummary:
        return rotation.rotate(self, progress, restart, new_ca)

    def run_on_hosts(self, command: list[str]) -> dict[Host, str]:
        """Run a read-only command on every host (used by tests and `status`)."""
        ssh = self.ssh()

        def run(h: Host) -> str:
            with connect(h, ssh) as c:
                return c.run(shlex.join(command)).stdout

        return fan_out(self.hosts(), run, shlex.join(command))
