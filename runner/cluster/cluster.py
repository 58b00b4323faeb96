"""A Dask cluster made of hosts: provisioned by Terraform and Ansible, run by Fabric over SSH.

The cluster keeps the processes it wants (one scheduler, workers) apart from those that run, and
`start` reconciles them: it starts only what is missing and leaves healthy processes alone.
"""

from __future__ import annotations

import shlex
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from runner import state
from runner.cluster.hosts import Host
from runner.cluster.processes import RUN_DIR, DaskSettings, ProcStatus, RemoteProcess
from runner.cluster.ssh import ConnectionPool, SSHSettings, connect, describe_ssh_error, fan_out
from runner.config import ClusterSpec, load_cluster
from runner.errors import (
    ClusterStartError,
    ConfigError,
    DaskfleetError,
    HostError,
)
from runner.provision import ansible, inventory, providers, terraform
from runner.provision.tls import CertificateAuthority

READY_POLL_CAP_S = 0.25  # readiness polls are cheap: a late poll costs more than one more


def _say(msg: str) -> None:
    print(f"[daskfleet] {msg}", flush=True)


@dataclass
class UpSummary:
    timings: dict[str, float] = field(default_factory=dict)
    changed: int = 0
    started: list[str] = field(default_factory=list)
    lock_hash: str = ""

    def line(self) -> str:
        phases = " ".join(f"{k}={v:.1f}s" for k, v in self.timings.items())
        started = ", ".join(self.started) or "nothing (all running)"
        return f"up: {phases} changed={self.changed}; started: {started}"


class Cluster:
    def __init__(self, spec: ClusterSpec):
        self.spec = spec
        self.provider = providers.for_spec(spec)
        self._client = None
        self._ssh: SSHSettings | None = None
        self._pool = ConnectionPool()
        self._forward = None  # the SSH tunnel to the scheduler, on providers that need one

    @classmethod
    def from_file(cls, path: str | Path) -> Cluster:
        return cls(load_cluster(path))

    # -- context manager / client -----------------------------------------------------------
    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._close_client()
        self._pool.close()

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._forward is not None:
            self._forward.close()
            self._forward = None

    @property
    def state_dir(self) -> Path:
        return self.spec.state_dir

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
                            tls=self.spec.tls)

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
                           pool=self._pool)

    def declared_hosts(self) -> list[Host]:
        """The machines the cluster file names (lab: the running lab's hosts; clouds: none)."""
        return self.provider.declared_hosts()

    def hosts(self) -> list[Host]:
        """The hosts as last provisioned (Terraform's output, recorded in state.json)."""
        recorded = state.read(self.state_dir).get("hosts")
        if not recorded:
            raise DaskfleetError(f"cluster {self.spec.name}: not provisioned yet (no record in "
                                 f"{self.state_dir}); run `daskfleet up -c {self.spec.source}`.")
        return [Host.from_dict(h) for h in recorded]

    def worker_hosts(self, hosts: list[Host] | None = None) -> list[Host]:
        hosts = hosts or self.hosts()
        workers = [h for h in hosts if h.role == "worker"]
        if self.provider.worker_on_scheduler():
            workers.insert(0, next(h for h in hosts if h.role == "scheduler"))
        return workers

    def live_worker_hosts(self, progress=None) -> list[Host]:
        """The worker hosts with a worker joined to the scheduler right now: a degraded cluster
        works with these (data is shipped only there), and the missing ones are said."""
        joined = {w["host"] for w in self.client().scheduler_info(n_workers=-1)["workers"].values()}
        hosts = self.worker_hosts()
        live = [h for h in hosts if h.dask_address in joined]
        missing = [h.name for h in hosts if h not in live]
        if not live:
            raise ClusterStartError(f"cluster {self.spec.name}: no worker has joined the scheduler; "
                                    f"see `daskfleet status -c {self.spec.source}`, then run "
                                    "`daskfleet up` to heal it.")
        if missing and progress is not None:
            progress(f"WARNING: degraded: no live worker on {', '.join(missing)}; working with "
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

    # -- provisioning -----------------------------------------------------------------------
    def terraform_variables(self) -> dict:
        return self.provider.terraform_variables(state.read(self.state_dir))

    def write_terraform_root(self) -> Path:
        workdir = self.state_dir / "terraform"
        terraform.write_root(workdir, self.provider.module, self.terraform_variables(),
                             self.provider.outputs)
        return workdir

    def provision(self, progress=_say) -> list[Host]:
        self.provider.before_apply(progress)
        workdir = self.write_terraform_root()
        outputs = terraform.apply(workdir, self.provider.terraform_env())
        hosts = self.provider.hosts_from_output(outputs)
        image = {"image": outputs[self.provider.outputs[0]]} if self.provider.outputs else {}
        state.update(self.state_dir, name=self.spec.name, provider=self.spec.provider,
                     hosts=[h.to_dict() for h in hosts], inventory=str(self.inventory_path),
                     destroyed=False, **image)
        t = time.monotonic()
        self.provider.after_apply(hosts, self.ssh(), progress)
        self.boot_s = time.monotonic() - t
        inventory.write(self.inventory_path, hosts, self.ssh())
        return hosts

    def playbook_vars(self, wheelhouses: dict) -> dict:
        """Ansible's extra vars: one environment per node architecture (machine -> Wheelhouse)."""
        any_wh = next(iter(wheelhouses.values()))
        return {
            "python_env_targets": {m: {"hash": w.hash, "archive": str(w.archive)}
                                   for m, w in wheelhouses.items()},
            "python_env_python_minor": any_wh.lock.python,
            "python_env_cluster": self.spec.name, "dask_node_cluster": self.spec.name,
            "dask_node_tls": self.spec.tls, "dask_node_tls_src": str(self.ca.dir),
        }

    def _tolerated(self, hosts: list[Host]) -> frozenset[str]:
        # With min_workers, unreachable worker hosts do not fail provisioning: start() decides
        # whether enough workers remain for a degraded start.
        if not self.spec.min_workers:
            return frozenset()
        return frozenset(h.name for h in self.worker_hosts(hosts) if h.role == "worker")

    def wheelhouses(self, hosts: list[Host], progress=_say) -> tuple[dict, dict[str, str]]:
        """Read each node's Python and architecture (refusing another Python minor version), then
        build or reuse one wheelhouse per architecture. Returns (machine -> Wheelhouse,
        host name -> environment hash)."""
        import sys

        from runner.cluster import preflight
        from runner.provision.lock import derive_lock
        from runner.provision.wheelhouse import build

        minor = f"{sys.version_info.major}.{sys.version_info.minor}"
        machines = preflight.node_platforms(hosts, self.ssh(), minor, self._tolerated(hosts))
        built = {m: build(derive_lock(m), progress=progress) for m in sorted(set(machines.values()))}
        return built, {h.name: built[m].hash for h, m in machines.items()}

    def install(self, hosts: list[Host], progress=_say) -> tuple[ansible.PlaybookResult, dict]:
        """Ansible: the environment of this machine's lock on every node, TLS files, dask config.
        Returns the playbook result and host name -> environment hash."""
        import platform

        wheelhouses, env_hashes = self.wheelhouses(hosts, progress)
        if self.spec.tls:
            self.ca.ensure({h.name: h.dask_address for h in hosts})
        else:
            progress("WARNING: tls: false in the cluster file: Dask traffic is NOT encrypted and "
                     "anyone who reaches the scheduler can run code on every worker.")
        result = ansible.run_playbook(self.inventory_path, self.playbook_vars(wheelhouses),
                                      log=self.state_dir / "logs" / "ansible.log",
                                      tolerate_unreachable=self._tolerated(hosts),
                                      progress=progress)
        if result.unreachable:
            progress(f"WARNING: ansible could not reach {', '.join(result.unreachable)}; "
                     f"continuing because min_workers is {self.spec.min_workers}")
        local = wheelhouses.get(platform.machine()) or next(iter(wheelhouses.values()))
        state.update(self.state_dir, lock_hash=local.hash, env_hashes=env_hashes)
        return result, env_hashes

    # -- processes --------------------------------------------------------------------------
    def process_states(self) -> dict[RemoteProcess, ProcStatus]:
        ssh = self.ssh()
        procs = self.wanted()
        with ThreadPoolExecutor(max_workers=min(32, len(procs))) as pool:
            return dict(zip(procs, pool.map(lambda p: p.status(ssh), procs), strict=True))

    def running_names(self, hosts: list[Host]) -> dict[Host, list[str]]:
        """What runs for this cluster on each reachable host, by its pid files (named after the
        cluster): host -> process names. Unreachable hosts are left out."""
        prefix = f"{self.spec.name}-"
        cmd = f"cd {RUN_DIR} 2>/dev/null && ls -1 -- {shlex.quote(prefix)}*.pid 2>/dev/null; true"

        def names(h: Host) -> list[str]:
            with connect(h, self.ssh()) as c:
                out = c.run(cmd).stdout.split()
            return [n.removeprefix(prefix).removesuffix(".pid") for n in out]

        try:
            return fan_out(hosts, names, "listing the cluster's processes")
        except HostError as e:
            return e.results

    def close_unwanted(self, extra_hosts: list[Host] = (), progress=_say) -> list[str]:
        """Close what runs for this cluster but is no longer wanted (a worker host removed from
        the file, worker_on_scheduler turned off, ...): retired through the scheduler first (its
        data moves to the workers that stay), then stopped. Returns `name@host` of each."""
        wanted = {(p.host.name, p.name) for p in self.wanted()}
        sched = self.wanted()[0]
        hosts = {h.name: h for h in [*self.hosts(), *extra_hosts]}
        going = []
        for host, names in self.running_names(list(hosts.values())).items():
            for name in names:
                if (host.name, name) in wanted:
                    continue
                if name == "scheduler":
                    going.append(RemoteProcess(host, "scheduler", host, self.settings()))
                elif name.startswith(f"{host.name}-w") and name.rsplit("-w", 1)[1].isdigit():
                    going.append(RemoteProcess(host, "worker", sched.host, self.settings(),
                                               index=int(name.rsplit("-w", 1)[1])))
        if not going:
            return []
        workers = [p.name for p in going if p.kind == "worker"]
        progress(f"closing what is no longer wanted: {', '.join(f'{p.name}@{p.host.name}' for p in going)}")
        if workers and self.process_states().get(sched, ProcStatus("dead")).state == "running":
            try:
                self.client().retire_workers(names=workers, close_workers=True, remove=True)
            except Exception as e:  # noqa: BLE001 - retiring moves data; stopping must go on
                progress(f"WARNING: could not retire {', '.join(workers)} first ({e}); stopping")
        _per_process(going, lambda p: p.stop(self.ssh()), "stopping unwanted processes")
        return [f"{p.name}@{p.host.name}" for p in going]

    def start(self, env_hashes: dict[str, str] | None = None, progress=_say,
              extra_hosts: list[Host] = ()) -> list[str]:
        """Reconcile: close what runs and is not wanted, start what is wanted and not running (or
        runs another environment than env_hashes[host] says), leave the rest alone, then wait
        until every wanted worker has joined.

        Worker hosts that cannot be reached are skipped when `min_workers` still allows it
        (a degraded start, reported); otherwise start fails naming them."""
        ssh = self.ssh()
        self.close_unwanted(list(extra_hosts), progress)
        procs = self.wanted()
        current = self.process_states()
        sched = procs[0]
        if current[sched].state == "unreachable":
            raise ClusterStartError(f"start: cannot reach the scheduler host {sched.host.name} "
                                    f"({sched.host.address}) over SSH; check it is up and run "
                                    "`daskfleet up` again.")
        lost = [p for p in procs[1:] if current[p].state == "unreachable"]
        if lost:
            names = ", ".join(sorted({p.host.name for p in lost}))
            can_run = len(procs) - 1 - len(lost)
            if self.spec.min_workers is None or can_run < self.spec.min_workers:
                allowed = "" if self.spec.min_workers is None else (
                    f" ({can_run} workers could start, min_workers is {self.spec.min_workers})")
                raise ClusterStartError(f"start: cannot reach {names} over SSH{allowed}; check "
                                        "the hosts are up and run `daskfleet up` again.")
            progress(f"WARNING: starting degraded without {names} (unreachable): {can_run} "
                     f"workers, min_workers {self.spec.min_workers}")
            procs = [p for p in procs if p not in lost]
        env_hashes = env_hashes or {}
        stale = [p for p in procs if current[p].state == "running" and p.host.name in env_hashes
                 and current[p].env != env_hashes[p.host.name]]
        if any(current[p].state != "running" for p in procs) or stale:
            from runner.cluster import preflight

            workers = sorted({p.host for p in procs[1:]}, key=lambda h: h.name)
            checks = preflight.run(sorted({p.host for p in procs}, key=lambda h: h.name), workers,
                                   sched.host, self.spec.dask.scheduler_port, ssh)
            progress(f"pre-flight: SSH to {len({p.host for p in procs})} host(s) ok; scheduler port "
                     f"reachable from {len(checks) - len({p.host for p in procs})} worker host(s)")
        if stale:
            progress(f"restarting {len(stale)} process(es) on this machine's environment: "
                     + ", ".join(f"{p.name}@{p.host.name}" for p in stale))
            for group in ([p for p in stale if p.kind == "worker"],
                          [p for p in stale if p.kind == "scheduler"]):
                _per_process(group, lambda p: p.stop(ssh), "stopping")
        needed = [p for p in procs if current[p].state != "running" or p in stale]
        pids = {p.name: current[p].pid for p in procs if p not in needed}
        started: list[str] = []
        try:
            if sched in needed:
                progress(f"starting scheduler on {sched.host.name} ({sched.scheduler_address})")
                pids[sched.name] = sched.start(ssh)
                started.append(f"{sched.name}@{sched.host.name}")
            self._wait_port(sched, pids[sched.name] if sched in needed else None)
            missing = [p for p in needed if p.kind == "worker"]
            if missing:
                progress(f"starting {len(missing)} worker(s): " + ", ".join(
                    f"{p.name}@{p.host.name}" for p in missing))
                by_proc = _per_process(missing, lambda p: p.start(ssh), "starting workers")
                for p in missing:
                    pids[p.name] = by_proc[p]
                    started.append(f"{p.name}@{p.host.name}")
            state.update(self.state_dir, pids=pids, scheduler=sched.scheduler_address,
                         dashboard=f"http://{sched.host.dask_address}:"
                                   f"{self.spec.dask.dashboard_port}")
            self.wait_ready({p.name for p in procs[1:]})
        except BaseException as e:
            # Whatever went wrong (Ctrl-C included), what this run started is stopped again.
            if started:
                progress(f"start failed; stopping what this run started: {', '.join(started)}")
                for p in procs:
                    if f"{p.name}@{p.host.name}" in started:
                        try:
                            p.stop(ssh)
                        except Exception:  # noqa: BLE001 - best effort, the original error wins
                            pass
            if not isinstance(e, DaskfleetError):
                raise
            self._collect_logs(procs)
            raise ClusterStartError(f"{e}\nAll logs copied to {self.state_dir / 'logs'}.") from e
        return started

    def _answering_pid(self) -> int | None:
        """The pid of the scheduler that answers on our address (another process may hold the
        port: a scheduler of another cluster, a stale one)."""
        import cloudpickle

        from runner.cluster import nodeinfo

        cloudpickle.register_pickle_by_value(nodeinfo)
        try:
            return self.client().run_on_scheduler(nodeinfo.describe)["pid"]
        except (OSError, TimeoutError):
            return None

    def _wait_port(self, sched: RemoteProcess, pid: int | None = None) -> None:
        """Poll the scheduler's port (and, for one we just started, that it is our process that
        answers); stop early, with its log, if the process died."""
        deadline = time.monotonic() + self.spec.dask.start_timeout
        delay = 0.05
        next_alive_check = time.monotonic() + 1.0
        while True:
            try:
                if not self._scheduler_port_open(sched):
                    raise OSError("the scheduler's port does not accept connections yet")
                if pid is None or self._answering_pid() == pid:
                    return
                raise OSError("another process answers on the scheduler's port")
            except OSError:
                now = time.monotonic()
                dead = False
                if now > next_alive_check:
                    dead = sched.status(self.ssh()).state == "dead"
                    next_alive_check = now + 1.0
                if dead or now > deadline:
                    tail = sched.log_tail(self.ssh())
                    why = "exited" if dead else (f"does not accept connections after "
                                                 f"{self.spec.dask.start_timeout:.0f}s")
                    raise ClusterStartError(
                        f"{sched.host.name}: the scheduler {why} (port "
                        f"{self.spec.dask.scheduler_port}). Last lines of {sched.log_file}:\n"
                        f"{tail}") from None
                time.sleep(delay)
                delay = min(delay * 2, READY_POLL_CAP_S)

    def _scheduler_port_open(self, sched: RemoteProcess) -> bool:
        """A TCP connect to the scheduler's port, by the route the client takes."""
        if self.provider.tunnel:
            return self._scheduler_forward().probe(timeout=2)
        try:
            with socket.create_connection((sched.host.dask_address,
                                           self.spec.dask.scheduler_port), timeout=2):
                return True
        except OSError:
            return False

    def _scheduler_forward(self):
        """The SSH tunnel from this machine to the scheduler's port (cloud providers)."""
        from runner.cluster.tunnel import Forward

        if self._forward is None:
            sched = next(h for h in self.hosts() if h.role == "scheduler")
            self._forward = Forward(sched, sched.dask_address, self.spec.dask.scheduler_port,
                                    self.ssh())
        return self._forward

    def wait_ready(self, wanted: set[str], timeout: float | None = None) -> None:
        """Poll the scheduler's own view until every wanted worker (by name) has joined, under a
        deadline."""
        client = self.client()
        deadline = time.monotonic() + (timeout or self.spec.dask.start_timeout)
        delay = 0.05
        next_alive_check = time.monotonic() + 1.0
        n_workers = len(wanted)
        while True:
            joined = {w.get("name") for w in client.scheduler_info(n_workers=-1)["workers"].values()}
            names = joined & wanted
            if names == wanted:
                return
            dead = []
            if time.monotonic() > next_alive_check:  # a worker that died will never join
                missing = [p for p in self.wanted()[1:] if p.name in wanted - names]
                dead = [p for p in missing if p.status(self.ssh()).state == "dead"]
                next_alive_check = time.monotonic() + 1.0
            if dead:
                tails = "\n".join(f"--- {p.host.name}: {p.log_file}\n{p.log_tail(self.ssh())}"
                                  for p in dead)
                raise ClusterStartError(
                    f"worker(s) exited before joining the scheduler: "
                    f"{', '.join(f'{p.name} on {p.host.name}' for p in dead)}.\n{tails}")
            if time.monotonic() > deadline:
                missing = [p for p in self.wanted()[1:] if p.name in wanted - names]
                tails = "\n".join(f"--- {p.host.name}: {p.log_file}\n{p.log_tail(self.ssh())}"
                                  for p in missing)
                raise ClusterStartError(
                    f"only {len(names)} of {n_workers} workers joined the scheduler within "
                    f"{self.spec.dask.start_timeout:.0f}s; missing: "
                    f"{', '.join(p.name for p in missing)}.\n{tails}")
            time.sleep(delay)
            delay = min(delay * 2, READY_POLL_CAP_S)

    def _collect_logs(self, procs: list[RemoteProcess]) -> None:
        dest = self.state_dir / "logs"
        dest.mkdir(parents=True, exist_ok=True)
        for p in procs:
            try:
                with connect(p.host, self.ssh()) as c:
                    text = c.run(f"cat {p.log_file}").stdout
                (dest / f"{p.host.name}-{p.name}.log").write_text(text)
            except Exception:  # noqa: BLE001 - an unreachable host has no log to copy
                pass

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
                address = f"{protocol}://127.0.0.1:{self._scheduler_forward().local_port}"
            security = self.ca.client_security() if self.spec.tls else None
            self._client = Client(address, security=security, timeout="15s")
        return self._client

    def check_versions(self) -> dict:
        from runner.cluster.versions import check_versions

        return check_versions(self.client())

    # -- up / down / status -----------------------------------------------------------------
    def up(self, progress=_say) -> UpSummary:
        """Provision, install and start (a reconcile), holding the cluster's lock."""
        with state.locked(self.state_dir, "daskfleet up", progress=progress):
            return self._up(progress)

    def _up(self, progress) -> UpSummary:
        summary = UpSummary()
        t = time.monotonic()
        progress("terraform: apply")
        self.boot_s = 0.0
        # Hosts the last `up` provisioned: any that the file no longer names get closed.
        before = [Host.from_dict(h) for h in state.read(self.state_dir).get("hosts") or []]
        hosts = self.provision(progress)
        summary.timings["terraform"] = time.monotonic() - t - self.boot_s
        if self.provider.tunnel:  # new VMs: until each answers over SSH with its host key
            summary.timings["boot"] = self.boot_s
        t = time.monotonic()
        progress(f"ansible: installing the environment on {len(hosts)} hosts")
        result, env_hashes = self.install(hosts, progress)
        summary.lock_hash = ", ".join(sorted(set(env_hashes.values())))
        summary.changed = result.changed
        summary.timings["ansible"] = time.monotonic() - t
        t = time.monotonic()
        summary.started = self.start(env_hashes, progress, extra_hosts=[
            h for h in before if h.name not in {x.name for x in hosts}])
        summary.timings["start"] = time.monotonic() - t
        self.check_versions()
        return summary

    def scale(self, n: int, progress=_say) -> dict:
        """N workers over the worker hosts. Workers that go are retired through the scheduler
        first (their data moves to the workers that stay), then their processes stop."""
        if n < 1:
            raise ConfigError(f"scale: N must be at least 1, not {n}.")
        with state.locked(self.state_dir, "daskfleet scale", progress=progress):
            return self._scale(n, progress)

    def _scale(self, n: int, progress) -> dict:
        before = self.wanted()
        after = self.wanted(n_workers=n)
        going = [p for p in before if p not in after]
        if going:
            names = [p.name for p in going]
            progress(f"retiring {len(going)} worker(s) through the scheduler: {', '.join(names)}")
            self.client().retire_workers(names=names, close_workers=True, remove=True)
            _per_process(going, lambda p: p.stop(self.ssh()), "stopping retired workers")
        state.update(self.state_dir, n_workers=n)
        started = self.start(state.read(self.state_dir).get("env_hashes"), progress)
        self.wait_ready({p.name for p in after[1:]})
        return {"workers": n, "retired": [p.name for p in going], "started": started}

    def stop(self, progress=_say) -> list[str]:
        """Stop every dask process this cluster started (workers first); report unreachable ones."""
        ssh = self.ssh()
        procs = self.wanted()
        self._close_client()
        stopped: list[str] = []
        errors: dict = {}
        for group in (procs[1:], procs[:1]):
            with ThreadPoolExecutor(max_workers=max(1, min(32, len(group)))) as pool:
                futs = {p: pool.submit(p.stop, ssh) for p in group}
            for p, f in futs.items():
                try:
                    if f.result():
                        stopped.append(f"{p.name}@{p.host.name}")
                except Exception as e:  # noqa: BLE001 - report and keep stopping the rest
                    errors[p.host] = e
        state.update(self.state_dir, pids={})
        if errors:
            raise HostError("down: could not stop processes on:\n" + "\n".join(
                f"  {describe_ssh_error(h, e)}" for h, e in errors.items()) +
                "\nThe others were stopped.", failures=errors)
        progress(f"stopped {len(stopped)} process(es)")
        return stopped

    def down(self, destroy: bool = False, progress=_say, purge: bool = False) -> None:
        """Stop Dask; with destroy, remove the infrastructure too. The cluster's CA (and, on
        clouds, the host keys daskfleet generated) are kept, and said so, unless purge."""
        if purge and not destroy:
            raise ConfigError("down: --purge removes the CA of a destroyed cluster; use it with "
                              "--destroy.")
        with state.locked(self.state_dir, "daskfleet down", progress=progress):
            self._down(destroy, progress)
        if purge:
            import shutil

            for folder in (self.ca.dir, self.state_dir / "host_keys"):
                shutil.rmtree(folder, ignore_errors=True)
            progress(f"purged the cluster's CA and host keys ({self.state_dir})")
        elif destroy and self.ca.ca_cert.exists():
            progress(f"kept the cluster's CA ({self.ca.dir}): a cluster made again from this file "
                     "trusts the same CA; `down --destroy --purge` removes it")

    def _down(self, destroy: bool, progress) -> None:
        try:
            if state.read(self.state_dir).get("hosts"):
                self.stop(progress)
        finally:
            if destroy:
                progress("terraform: destroy")
                terraform.destroy(self.state_dir / "terraform", self.provider.terraform_env())
                self.inventory_path.unlink(missing_ok=True)
                # A cluster made again later resolves its image anew.
                state.update(self.state_dir, hosts=[], pids={}, n_workers=None, destroyed=True,
                             image=None)

    def status(self) -> dict:
        record = state.read(self.state_dir)
        procs_state = self.process_states()
        joined: dict[str, dict] = {}
        if any(p.kind == "scheduler" and s.state == "running" for p, s in procs_state.items()):
            try:
                info = self.client().scheduler_info(n_workers=-1)
                joined = {w.get("name"): {"address": a, **w} for a, w in info["workers"].items()}
            except Exception:  # noqa: BLE001 - a scheduler that does not answer is degraded
                joined = {}
        hosts = []
        workers = []
        for p, ps in procs_state.items():
            st, pid = ps.state, ps.pid
            hosts.append({"host": p.host.name, "address": p.host.address, "user": p.host.user,
                          "private_address": p.host.dask_address, "role": p.kind,
                          "process": p.name, "pid": pid, "state": st, "env": ps.env})
            if p.kind == "worker":
                w = joined.get(p.name, {})
                workers.append({"name": p.name, "host": p.host.name, "pid": pid, "state": st,
                                "joined": bool(w), "threads": w.get("nthreads"),
                                "memory_limit": w.get("memory_limit"),
                                "memory_used": (w.get("metrics") or {}).get("memory")})
        healthy = all(h["state"] == "running" for h in hosts) and all(w["joined"] for w in workers)
        return {"cluster": self.spec.name, "healthy": healthy,
                "scheduler": {"address": record.get("scheduler"),
                              "dashboard": record.get("dashboard")},
                "lock_hash": record.get("lock_hash"), "workers": workers, "hosts": hosts}

    def run_on_hosts(self, command: list[str]) -> dict[Host, str]:
        """Run a read-only command on every host (used by tests and `status`)."""
        ssh = self.ssh()

        def run(h: Host) -> str:
            with connect(h, ssh) as c:
                return c.run(shlex.join(command)).stdout

        return fan_out(self.hosts(), run, shlex.join(command))


def _per_process(procs: list[RemoteProcess], fn, what: str) -> dict[RemoteProcess, object]:
    """fan_out over processes (several may share a host): a result per process, or one HostError
    naming every host that failed."""
    from runner.cluster.ssh import fan_out_items

    return fan_out_items(procs, fn, what, host_of=lambda p: p.host)
