"""Dask processes on remote hosts: started detached over SSH, tracked by pid files, kept
running by the node's supervisor (crashes, reboots) until they are stopped on purpose.

A scheduler and a worker differ only in the command they build. Each process runs in its own
session (setsid), so stopping it stops its whole process group (a worker's nanny and its child).
Each runs as its cluster's own system user (runner.cluster.process_settings, with its folders on
the node), whatever the login user is: its TLS files, working folder, bytecode cache and pid
files are that user's alone, so clusters sharing a host cannot read each other's keys or signal
each other's processes. Processes started by a daskfleet before per-cluster users (as `dask`,
pid files in /run/daskfleet/<cluster>-<name>.pid) are still found and stopped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Literal

from runner.cluster.hosts import Host
from runner.cluster.process_settings import (
    DASK_CONFIG,
    ENV_LINK,
    LOG_DIR,
    PYCACHE_DIR,
    RUN_DIR,
    DaskSettings,
    ProcStatus,
    privileged,
)
from runner.cluster.ssh import SSHSettings, connect, describe_ssh_error, is_trust_failure
from runner.errors import ClusterStartError, HostError

STOP_GRACE_S = 10.0
# Whom processes of a daskfleet before per-cluster users ran as: still recognised as ours
LEGACY_USER = "dask"
# The first line of a supervisor script that runs as root and switches to the cluster's user
# itself (an older script has none: the supervisor runs it as LEGACY_USER)
SUPERVISE_HEADER = "# daskfleet-supervise: 2"
# What the node's supervisor keeps running (playbooks/roles/dask_node/files/daskfleet-supervise):
# one script per process, written by `start`, removed by `stop` before it stops the process.
SUPERVISE_DIR = "/var/lib/daskfleet/supervise"
LOCK_WAIT_S = 60

# Shell: the start time of $pid in clock ticks since boot (field 22 of /proc/<pid>/stat, read
# after the command name, which may hold spaces).
START_TIME = "sed 's/.*) //' /proc/$pid/stat | cut -d' ' -f20"


def explain_start_failure(output: str) -> str:
    """The start script's output, and what to do when it is a limit the host would not raise."""
    if "ulimit:" in output and "cannot modify limit" in output:
        return (f"{output}\n(dask.limits asks for more than the host's hard limit, which its "
                "root may not raise there: a container without CAP_SYS_RESOURCE does not; lower "
                "the value in the cluster file, or raise the host's own limit)")
    return output


@dataclass(frozen=True)
class RemoteProcess:
    host: Host
    kind: Literal["scheduler", "worker"]
    scheduler: Host
    settings: DaskSettings
    index: int = 0  # several workers on one host get distinct names and files
    # Workers sharing the host: "auto" memory is split between them. Not part of identity, so
    # a scale that changes it does not restart the workers already running.
    per_host: int = field(default=1, compare=False)

    @property
    def name(self) -> str:
        return "scheduler" if self.kind == "scheduler" else f"{self.host.name}-w{self.index}"

    @property
    def pid_file(self) -> str:
        # In the cluster's folder, so two clusters sharing a host never mix up their processes.
        return f"{self.settings.run_dir}/{self.name}.pid"

    @property
    def legacy_pid_file(self) -> str:
        """Where a daskfleet before per-cluster users kept it (still read, to stop it)."""
        return f"{RUN_DIR}/{self.settings.cluster}-{self.name}.pid"

    @property
    def supervise_file(self) -> str:
        return f"{SUPERVISE_DIR}/{self.settings.cluster}-{self.name}.sh"

    @property
    def lock_file(self) -> str:
        # start and stop, by `up` or by the supervisor, one at a time per process
        return f"{RUN_DIR}/{self.settings.cluster}-{self.name}.lock"

    @property
    def log_file(self) -> str:
        return f"{LOG_DIR}/{self.settings.cluster}-{self.name}.log"

    @property
    def scheduler_address(self) -> str:
        return (f"{self.settings.protocol}://{self.scheduler.dask_address}:"
                f"{self.settings.scheduler_port}")

    def command(self) -> list[str]:
        s = self.settings
        dask = f"{ENV_LINK.format(cluster=s.cluster)}/bin/dask"
        if self.kind == "scheduler":
            return [dask, "scheduler", "--protocol", s.protocol, "--host", self.host.dask_address,
                    "--port", str(s.scheduler_port),
                    "--dashboard-address", f"{self.host.dask_address}:{s.dashboard_port}"]
        return [dask, "worker", self.scheduler_address, "--name", self.name,
                "--host", self.host.dask_address, "--nthreads", str(s.threads_per_worker),
                "--nworkers", "1", "--memory-limit", self.memory_limit,
                "--worker-port", s.worker_port_range, "--nanny-port", s.nanny_port_range,
                "--local-directory", s.work_dir, "--no-dashboard",
                # registers as soon as the scheduler listens (it may still be importing)
                "--preload-nanny", "runner.cluster.nanny_wait"]

    @property
    def memory_limit(self) -> str:
        s = self.settings
        if s.memory_limit == "auto" and (self.per_host > 1 or s.memory_share is not None):
            # a fraction of the host's memory: the cluster's share of it, split
            return f"{0.95 * (s.memory_share or 1.0) / self.per_host:.4f}"
        return s.memory_limit

    @property
    def identity(self) -> list[str]:
        """What the command line of this very process holds whatever its settings: the
        cluster's own `dask` (clusters sharing a host differ there), its kind and, for a worker,
        its name. Its settings are not identity: a process whose settings changed is still the
        one to replace (see ``spec_digest``), never an orphan left running."""
        mine = [f"clusters/{self.settings.cluster}/current/bin/dask {self.kind} "]
        return mine + ([f" --name {self.name} "] if self.kind == "worker" else [])

    def environment(self) -> dict[str, str]:
        return {"DASK_CONFIG": DASK_CONFIG.format(cluster=self.settings.cluster),
                "PYTHONPYCACHEPREFIX": PYCACHE_DIR.format(cluster=self.settings.cluster)}

    @property
    def spec_digest(self) -> str:
        """A digest of what the control machine decides of this process: its full command line
        (addresses, ports, threads), environment and resource limits. The memory limit is left out: it follows
        the host's number of workers, and is compared on its own (``changes.memory_reason``)."""
        argv = self.command()
        if "--memory-limit" in argv:
            argv[argv.index("--memory-limit") + 1] = "(compared apart)"
        what: dict = {"argv": argv, "env": self.environment()}
        if self.settings.limits:  # (absent when unset: no restart for clusters without any)
            what["limits"] = [list(x) for x in self.settings.limits]
        blob = json.dumps(what, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _files_digest(self) -> str:
        """Shell: a digest of the node's files that shape the process (its cluster's Dask
        config, the CA and node certificates; not the key), as they are now."""
        etc = f"/etc/daskfleet/{self.settings.cluster}"
        return (f"$(cat -- {etc}/dask/* {etc}/tls/*.pem 2>/dev/null | sha256sum | cut -c1-16)")

    def _ours(self) -> str:
        """Shell: define and call `ours`, which sets $pid, $spec and $files from the pid file
        (or the one an older daskfleet wrote) and returns 0 if that pid is this very process
        (same start time as recorded: a reused pid after a reboot differs; run by the cluster's
        user, or the older daskfleet's; our identity in its command line), 3 without a pid file,
        4 otherwise. A function and `return`, never `exit` inside `{ }`, which would end the
        whole script."""
        checks = "".join(f"case \"$cmd\" in *{shlex.quote(part)}*) ;; *) return 4;; esac; "
                         for part in self.identity)
        users = "|".join(shlex.quote(u) for u in (self.settings.user, LEGACY_USER))
        return ("ours() { "
                f"{{ read pid st spec files < {self.pid_file} || "
                f"read pid st spec files < {self.legacy_pid_file}; }} 2>/dev/null || return 3; "
                f"[ -n \"$pid\" ] && [ -r /proc/$pid/stat ] || return 4; "
                f"[ -z \"$st\" ] || [ \"$({START_TIME})\" = \"$st\" ] || return 4; "
                f"case \"$(stat -c %U /proc/$pid)\" in {users}) ;; *) return 4;; esac; "
                "cmd=\"$(tr '\\0' ' ' < /proc/$pid/cmdline) \"; " + checks + "}; ours")

    def _start_script(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.environment().items())
        return (
            f"cd {self.settings.work_dir} && "
            f"echo \"--- $(date -u +%FT%TZ) start {self.name}\" >> {self.log_file} && "
            # Only the dask command goes to the background, with every fd redirected, so the
            # SSH channel closes at once; setsid makes its pid the process group to stop later.
            # The pid file records the start time too (a pid alone may be reused after a
            # reboot) and the digests of what the process was started with.
            f"{{ files={self._files_digest()}; "
            f"{env} setsid {shlex.join(self.command())} >> {self.log_file} 2>&1 < /dev/null & "
            f"pid=$!; echo \"$pid $({START_TIME}) {self.spec_digest} $files\" "
            f"> {self.pid_file}.tmp; }} && mv {self.pid_file}.tmp {self.pid_file}"
        )

    def _status_script(self) -> str:
        # Running = the pid in the file is alive and is this process; its command line names
        # the environment it runs from (/opt/daskfleet/envs/<hash>/bin/python) and, for a
        # worker, the memory limit it was started with; the digests say what it started with
        # and what its node files are now.
        return (self._ours() + " || exit $?; " +
                "env=$(tr '\\0' ' ' < /proc/$pid/cmdline | grep -o 'envs/[0-9a-f]*' | head -n1); "
                "mem=$(tr '\\0' '\\n' < /proc/$pid/cmdline | grep -A1 -x -e --memory-limit "
                "| tail -n +2 | head -n1); "
                f"sup=$([ -e {self.supervise_file} ] && echo 1 || echo 0); "
                f"echo $pid env=${{env#envs/}} mem=$mem spec=$spec files=$files "
                f"files_now={self._files_digest()} sup=$sup")

    def _ulimits(self) -> str:
        """Shell: the file's limits, soft and hard alike. Set twice: as root before runuser (a
        user may not raise a hard limit), and again as the cluster's user, since runuser's
        pam_limits resets what limits.conf leaves unset to init's own (a soft 1024 open files)."""
        return "".join(f"ulimit {flag} {value} && " for flag, value in self.settings.limits)

    def _ensure_script(self) -> str:
        """Bash, as the cluster's user: start the process unless it runs; print `running PID`
        or `started PID`."""
        return (self._ours() + " && { echo \"running $pid\"; exit 0; }; "
                + self._ulimits() + self._start_script()
                + f" && echo \"started $(cut -d' ' -f1 {self.pid_file})\"\n")

    def _supervised_script(self) -> str:
        """Bash, as root: what the supervisor runs every few seconds and `start` runs once. It
        makes the cluster's pid folder (the tmpfs loses it at every reboot) and the process's
        log, then runs ``_ensure_script`` as the cluster's user."""
        u, log = self.settings.user, self.log_file
        return (f"{SUPERVISE_HEADER}\n"
                f"install -d -m 0755 {RUN_DIR} && {self._ulimits()}"
                f"install -d -o {u} -g {u} -m 0755 {self.settings.run_dir} && "
                f"{{ [ -e {log} ] || install -o {u} -g {u} -m 0644 /dev/null {log}; }} && "
                + shlex.join(["runuser", "-u", u, "--", "bash", "-c", self._ensure_script()])
                + "\n")

    def _locked(self, script: str) -> str:
        """Shell (as root): `script` run by bash as root, holding the process's lock."""
        return (f"install -d -m 0755 {RUN_DIR} && "
                # -o: the process started under the lock must not inherit (and hold) it
                f"flock -o -w {LOCK_WAIT_S} {self.lock_file} "
                + shlex.join(["bash", "-c", script]))

    def _write_supervised(self) -> str:
        """Shell (as root): this process's script into the supervisor's folder."""
        script = base64.b64encode(self._supervised_script().encode()).decode()
        sup = self.supervise_file
        return (f"mkdir -p {SUPERVISE_DIR} && echo {script} | base64 -d > {sup}.tmp && "
                f"mv {sup}.tmp {sup}")

    def supervise(self, ssh: SSHSettings) -> None:
        """Hand a process that runs already (started before its node had a supervisor) to the
        supervisor, without restarting it."""
        with connect(self.host, ssh) as c:
            r = c.run(privileged(self.host, self._write_supervised()))
        if r.failed:
            raise ClusterStartError(f"{self.host.name}: could not hand {self.name} to the "
                                    f"supervisor: {(r.stderr or r.stdout).strip()}")

    def start(self, ssh: SSHSettings) -> int:
        """Hand the process to the node's supervisor (its script in SUPERVISE_DIR) and start it
        unless it already runs; return the pid at once. Whether it stays up is the caller's
        readiness poll to find out (it checks liveness too, and reports the log if it died)."""
        with connect(self.host, ssh) as c:
            r = c.run(privileged(self.host, self._write_supervised() + " && "
                                 + self._locked(f"bash {shlex.quote(self.supervise_file)}")))
        words = r.stdout.split()
        pid = words[-1] if words else ""
        if r.failed or not pid.isdigit():
            raise ClusterStartError(f"{self.host.name}: could not start {self.name}: "
                                    + explain_start_failure((r.stderr or r.stdout).strip()))
        return int(pid)

    def restore(self, ssh: SSHSettings) -> int | None:
        """Start again the process as it was before a replacement that failed (the script
        `stop(previous="save")` kept aside); its pid, or None when nothing was kept."""
        with connect(self.host, ssh) as c:
            r = c.run(privileged(self.host, self._restore_command()))
        words = r.stdout.split()
        if words == ["none"]:
            return None
        if r.failed or not words or not words[-1].isdigit():
            raise ClusterStartError(f"{self.host.name}: could not start the previous {self.name} "
                                    "again: " + explain_start_failure((r.stderr or r.stdout).strip()))
        return int(words[-1])

    def forget_previous(self, ssh: SSHSettings) -> None:
        """The replacement is proven: the script kept aside goes."""
        with connect(self.host, ssh) as c:
            c.run(privileged(self.host, f"rm -f {self.supervise_file}.prev"))

    def status(self, ssh: SSHSettings) -> ProcStatus:
        try:
            with connect(self.host, ssh) as c:
                # as root: the node's TLS folder is the dask user's alone (0700)
                r = c.run(privileged(self.host, self._status_script()))
        except Exception as e:  # noqa: BLE001 - a host we cannot reach is reported as such
            # A host that answers with another key, or refuses our key, is not "down": it is
            # an error that must be seen, never a host quietly dropped from a degraded start.
            if is_trust_failure(e):
                raise HostError(describe_ssh_error(self.host, e), failures={self.host: e}) from e
            return ProcStatus("unreachable")
        fields = r.stdout.split()
        if r.ok and fields and fields[0].isdigit():
            info = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
            return ProcStatus("running", int(fields[0]), info.get("env") or None,
                              info.get("mem") or None, info.get("spec") or None,
                              info.get("files") or None, info.get("files_now") or None,
                              {"1": True, "0": False}.get(info.get("sup", "")))
        return ProcStatus("dead")

    def stop(self, ssh: SSHSettings, previous: str = "drop") -> bool:
        """Stop the process group: TERM, then KILL after a grace period. True if one was running.
        A pid file whose process has exited (or whose pid now belongs to another process) is
        removed and the process reported gone: a stale file never fails a stop.

        Its supervisor script goes first, so the supervisor never starts it again behind our
        back. ``previous``: what becomes of the script: "drop" (gone, with any earlier one
        saved), "save" (kept aside, before a replacement: `restore` starts it again if the
        replacement fails), "keep" (the one kept aside stays: a failed replacement stopped)."""
        with connect(self.host, ssh) as c:
            r = c.run(privileged(self.host, self._stop_command(previous)))
        if r.failed:
            raise ClusterStartError(f"{self.host.name}: could not stop {self.name}: "
                                    f"{(r.stderr or r.stdout).strip() or f'exit status {r.exited}'}")
        return r.stdout.strip() in ("stopped", "killed")

    def _stop_command(self, previous: str) -> str:
        """Shell (as root): `stop`'s whole work on the node."""
        sup, prev = self.supervise_file, f"{self.supervise_file}.prev"
        unsupervise = {"drop": f"rm -f {sup} {prev}",
                       "save": f"rm -f {prev} && {{ [ ! -e {sup} ] || mv -f {sup} {prev}; }}",
                       "keep": f"rm -f {sup}"}[previous]
        return f"{unsupervise} && " + self._locked(self._stop_script())

    def _restore_command(self) -> str:
        """Shell (as root): `restore`'s whole work on the node."""
        sup, prev = self.supervise_file, f"{self.supervise_file}.prev"
        return (f"[ -e {prev} ] || {{ echo none; exit 0; }}; mv -f {prev} {sup} && "
                + self._locked(f"bash {shlex.quote(sup)}"))

    def _stop_script(self) -> str:
        return (
            f"{self._ours()}; rc=$?; rm -f {self.pid_file} {self.legacy_pid_file}; "
            f"if [ $rc != 0 ]; then echo gone; exit 0; fi; "
            f"kill -TERM -- -$pid 2>/dev/null; "
            f"for i in $(seq 1 {int(STOP_GRACE_S * 10)}); do "
            f"if ! kill -0 -- -$pid 2>/dev/null; then echo stopped; exit 0; fi; sleep 0.1; done; "
            f"kill -KILL -- -$pid 2>/dev/null; echo killed"
        )

    def log_tail(self, ssh: SSHSettings, lines: int = 20, c=None) -> str:
        """The log's last lines, preceded by the errors it names (a traceback's last lines are
        rarely its cause: dask prints `Address already in use` before a page of frames)."""
        cmd = f"tail -n 400 {self.log_file} 2>/dev/null"
        if c is not None:
            text = c.run(cmd).stdout
        else:
            with connect(self.host, ssh) as conn:
                text = conn.run(cmd).stdout
        return error_excerpt(text, lines)


def error_excerpt(text: str, lines: int = 20) -> str:
    all_lines = text.rstrip().splitlines()
    errors = []
    for line in all_lines:
        if re.search(r"\b\w*(Error|Exception)\b:|\bERROR\b|\bCRITICAL\b", line):
            short = line.strip()[:300]
            if short not in errors:
                errors.append(short)
    head = ("errors in the log:\n" + "\n".join(f"  {e}" for e in errors[-5:]) + "\n") if errors else ""
    return head + "\n".join(all_lines[-lines:])
