"""Dask processes on remote hosts, each a systemd unit of its cluster
(daskfleet-<cluster>-<name>.service, written by `start` over SSH): systemd starts it at boot and
again whenever it exits, until `stop` disables it and removes the unit.

A scheduler and a worker differ only in the command they build. Each runs as its cluster's own
system user (runner.cluster.process_settings, with its folders on the node), whatever the login
user is: its TLS files, working folder and bytecode cache are that user's alone, so clusters
sharing a host cannot read each other's keys or signal each other's processes. The unit carries
the spec digest of what it runs (``spec_digest``), which `status` reads back.

Processes an older daskfleet started (detached, tracked by pid files, kept by a supervisor
script; before that, as `dask`) are still recognised by `status`, which says so, so `up`
replaces them by their units, and `stop` stops them.
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
UNIT_DIR = "/etc/systemd/system"
# Run before every start of a process (playbooks/roles/dask_node/files): only root may reach the
# instance metadata service, so no task of a job ever reads the VM's user data
METADATA_GUARD = "/usr/local/lib/daskfleet-metadata-guard"
# A replaced process's unit, kept until its replacement is proven (`restore` puts it back)
KEPT_DIR = "/var/lib/daskfleet/units-kept"
# bash's ulimit flags (config.ProcessLimits.ulimits) as the unit's settings
SYSTEMD_LIMITS = {"-n": "LimitNOFILE", "-u": "LimitNPROC", "-c": "LimitCORE"}
# An older daskfleet's: whom its processes ran as before per-cluster users, where its
# supervisor kept a script per process (removed on stop, so it never starts it again), and the
# lock that script took
LEGACY_USER = "dask"
SUPERVISE_DIR = "/var/lib/daskfleet/supervise"
LOCK_WAIT_S = 60

# Shell: the start time of $pid in clock ticks since boot (field 22 of /proc/<pid>/stat, read
# after the command name, which may hold spaces).
START_TIME = "sed 's/.*) //' /proc/$pid/stat | cut -d' ' -f20"


def explain_start_failure(output: str) -> str:
    """The start's output (the unit's journal), and what to do when it is a limit the host
    would not raise."""
    if any(m in output for m in ("step LIMITS", "Failed to adjust resource limit",
                                 "dask.limits: ulimit")):
        return (f"{output}\n(dask.limits asks for more than the host's hard limit, which its "
                "systemd may not raise there: a container without CAP_SYS_RESOURCE does not; "
                "lower the value in the cluster file, or raise the host's own limit)")
    return output


def systemd_quote(word: str, command: bool = True) -> str:
    """One word of a unit's command line (or, ``command`` False, of Environment=) as systemd
    reads it back: quoted with C escapes, its % (specifiers) doubled, and on a command line
    its $ (variables) too."""
    if re.fullmatch(r"[A-Za-z0-9_./:=,@+-]+", word):
        return word
    quoted = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return '"' + (quoted.replace("$", "$$") if command else quoted) + '"'


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
        """Where an older daskfleet recorded the process it started (still read, to stop it):
        in the cluster's folder, so two clusters sharing a host never mix up their processes."""
        return f"{self.settings.run_dir}/{self.name}.pid"

    @property
    def legacy_pid_file(self) -> str:
        """Where a daskfleet before per-cluster users kept it (still read, to stop it)."""
        return f"{RUN_DIR}/{self.settings.cluster}-{self.name}.pid"

    @property
    def supervise_file(self) -> str:
        """An older daskfleet's supervisor script for it (removed on stop)."""
        return f"{SUPERVISE_DIR}/{self.settings.cluster}-{self.name}.sh"

    @property
    def lock_file(self) -> str:
        # an older daskfleet's: its start and stop, by `up` or by its supervisor, one at a time
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
                "--preload-nanny", "runner.cluster.nanny_wait",
                # the tasks' modules, imported in one thread before the first task
                "--preload", "runner.cluster.worker_imports"]

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

    def _files_digest_command(self) -> str:
        """Shell: print a digest of the node's files that shape the process (its cluster's
        Dask config, the CA and node certificates; not the key), as they are now."""
        etc = f"/etc/daskfleet/{self.settings.cluster}"
        return f"cat -- {etc}/dask/* {etc}/tls/*.pem 2>/dev/null | sha256sum | cut -c1-16"

    def _files_digest(self) -> str:
        return f"$({self._files_digest_command()})"

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

    # --- the process as a systemd unit of its cluster ------------------------------------

    @property
    def unit(self) -> str:
        return f"daskfleet-{self.settings.cluster}-{self.name}.service"

    @property
    def unit_path(self) -> str:
        return f"{UNIT_DIR}/{self.unit}"

    @property
    def kept_path(self) -> str:
        """Where `stop(previous="save")` keeps the unit of a process being replaced."""
        return f"{KEPT_DIR}/{self.unit}"

    @property
    def files_record(self) -> str:
        """Where each start of the unit records the digest of the node files it started with
        (a start by systemd after a crash reads the files as they are then)."""
        return f"{self.settings.run_dir}/{self.name}.files"

    def unit_text(self) -> str:
        """The unit: run as the cluster's user, with the file's limits, its output appended to
        its log; started at boot and whenever it exits, until `stop` disables it.

        Restart=always, not on-failure: a worker whose scheduler is gone ends with status 0,
        and must come back to join the scheduler when it returns. RestartSec leaves `stop` time
        to disable a worker that retirement has just closed. StartLimitIntervalSec=0: systemd
        never gives up on it, so a cluster heals by itself once the cause is gone."""
        s = self.settings
        pre = (f"install -d -m 0755 {RUN_DIR} {s.run_dir} && "
               f"{self._files_digest_command()} > {self.files_record} && "
               f"date -u '+--- %FT%TZ start {self.name}'")
        env = " ".join(systemd_quote(f"{k}={v}", command=False) for k, v in self.environment().items())
        limits = "".join(f"{SYSTEMD_LIMITS[flag]}={'infinity' if v == 'unlimited' else v}\n"
                         for flag, v in s.limits)
        # systemd lowers a limit above what the host allows it, silently: checked, as the
        # process will have them, and refused in its log
        check = "".join(
            f"[ \"$(ulimit -H {flag})\" = {v} ] && [ \"$(ulimit -S {flag})\" = {v} ] || "
            f"{{ echo \"dask.limits: ulimit {flag} is $(ulimit -H {flag}) here, not {v}: the "
            f"host's hard limit is lower than the cluster file asks\" >&2; exit 1; }}; "
            for flag, v in s.limits)
        return (
            "# Written by `daskfleet up` (runner/cluster/processes.py); `daskfleet down` removes "
            "it.\n[Unit]\n"
            f"Description=daskfleet {s.cluster}: {self.kind} {self.name}\n"
            "After=network-online.target\nWants=network-online.target\n"
            "StartLimitIntervalSec=0\n"
            # what `status` and `down` read: whose it is, and the spec digest it runs with
            f"X-Daskfleet-Cluster={s.cluster}\nX-Daskfleet-Process={self.name}\n"
            f"X-Daskfleet-Spec={self.spec_digest}\n\n"
            "[Service]\n"
            f"User={s.user}\nGroup={s.user}\nWorkingDirectory={s.work_dir}\n"
            f"Environment={env}\n"
            # as root (+): the node files are the cluster user's, the run folder root's
            f"ExecStartPre=+{METADATA_GUARD}\nExecStartPre=+/bin/sh -c {systemd_quote(pre)}\n"
            + (f"ExecStartPre=/bin/bash -c {systemd_quote(check)}\n" if check else "") +
            f"ExecStart={' '.join(systemd_quote(w) for w in self.command())}\n"
            "Restart=always\nRestartSec=5\n"
            # a worker's nanny and its worker process go together, KILLed after 10 s
            "KillMode=control-group\nTimeoutStopSec=10\n"
            f"StandardOutput=append:{self.log_file}\nStandardError=inherit\n"
            + limits +
            "\n[Install]\nWantedBy=multi-user.target\n")

    def _start_command(self) -> str:
        """Shell (as root): write the unit, enable it, start it unless it runs; print its pid.
        A unit that fails to start prints its journal (what systemd says went wrong)."""
        text = base64.b64encode(self.unit_text().encode()).decode()
        u, f = self.unit, self.unit_path
        return (f"echo {text} | base64 -d > {f}.tmp && mv -f {f}.tmp {f} && "
                f"systemctl daemon-reload && systemctl enable --quiet {u} && "
                f"{{ systemctl start {u} || {{ journalctl -u {u} -n 20 --no-pager -o cat; "
                f"tail -n 5 {self.log_file}; exit 1; }}; }} && "
                f"systemctl show -p MainPID --value {u}")

    def start(self, ssh: SSHSettings) -> int:
        """Write the process's unit, enable it (it starts at boot) and start it unless it
        already runs; return its pid at once. Whether it stays up is the caller's readiness
        poll to find out (it checks liveness too, and reports the log if it died)."""
        with connect(self.host, ssh) as c:
            r = c.run(privileged(self.host, self._start_command()))
        words = r.stdout.split()
        pid = words[-1] if words else ""
        if r.failed or not pid.isdigit():
            # systemctl's word on stderr, the unit's journal and log on stdout
            raise ClusterStartError(f"{self.host.name}: could not start {self.name}: "
                                    + explain_start_failure(f"{r.stderr}{r.stdout}".strip()))
        return int(pid)

    def _restore_command(self) -> str:
        """Shell (as root): `restore`'s whole work on the node."""
        u, f, k = self.unit, self.unit_path, self.kept_path
        return (f"[ -e {k} ] || {{ echo none; exit 0; }}; mv -f {k} {f} && "
                f"systemctl daemon-reload && systemctl enable --quiet --now {u} && "
                f"systemctl show -p MainPID --value {u}")

    def restore(self, ssh: SSHSettings) -> int | None:
        """Start again the process as it was before a replacement that failed (the unit
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
        """The replacement is proven: the unit kept aside goes."""
        with connect(self.host, ssh) as c:
            c.run(privileged(self.host, f"rm -f {self.kept_path}"))

    @property
    def hold_dir(self) -> str:
        """Its runtime drop-ins (gone at reboot): `hold`'s, which keeps systemd from starting
        it again."""
        return f"/run/systemd/system/{self.unit}.d"

    def hold(self, ssh: SSHSettings) -> None:
        """Before a retirement closes the process (its data moves first): systemd must not
        start it again (Restart=always) before `stop` comes. `stop` removes the hold."""
        d = self.hold_dir
        with connect(self.host, ssh) as c:
            r = c.run(privileged(self.host, f"[ ! -e {self.unit_path} ] || {{ mkdir -p {d} && "
                                 f"printf '[Service]\\nRestart=no\\n' > {d}/daskfleet-hold.conf && "
                                 "systemctl daemon-reload; }"), warn=True)
        if r.failed:
            raise ClusterStartError(f"{self.host.name}: could not hold {self.name} before its "
                                    f"retirement: {(r.stderr or r.stdout).strip()}")

    def _status_script(self) -> str:
        """Shell (as root): `PID env=... mem=... spec=... files=... files_now=... unit=1|0
        restarts=N` when it runs, else exit non-zero. Running = its unit is active with a main
        process, or (unit=0) a process an older daskfleet started, by its pid file. The command
        line names the environment it runs from (/opt/daskfleet/envs/<hash>/bin/python) and,
        for a worker, its memory limit."""
        u, f = self.unit, self.unit_path
        return (
            f"if [ -e {f} ]; then "
            f"st=$(systemctl show -p MainPID -p ActiveState -p NRestarts {u}); "
            "pid=$(echo \"$st\" | sed -n 's/^MainPID=//p'); "
            "restarts=$(echo \"$st\" | sed -n 's/^NRestarts=//p'); "
            "echo \"$st\" | grep -qx ActiveState=active && [ \"${pid:-0}\" != 0 ] || exit 4; "
            f"spec=$(sed -n 's/^X-Daskfleet-Spec=//p' {f}); "
            f"files=$(cat {self.files_record} 2>/dev/null); unit=1; "
            "else " + self._ours() + " || exit $?; unit=0; restarts=; fi; "
            "env=$(tr '\\0' ' ' < /proc/$pid/cmdline | grep -o 'envs/[0-9a-f]*' | head -n1); "
            "mem=$(tr '\\0' '\\n' < /proc/$pid/cmdline | grep -A1 -x -e --memory-limit "
            "| tail -n +2 | head -n1); "
            f"echo $pid env=${{env#envs/}} mem=$mem spec=$spec files=$files "
            f"files_now={self._files_digest()} unit=$unit restarts=$restarts")

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
            restarts = info.get("restarts", "")
            return ProcStatus("running", int(fields[0]), info.get("env") or None,
                              info.get("mem") or None, info.get("spec") or None,
                              info.get("files") or None, info.get("files_now") or None,
                              {"1": True, "0": False}.get(info.get("unit", "")),
                              int(restarts) if restarts.isdigit() else None)
        return ProcStatus("dead")

    def stop(self, ssh: SSHSettings, previous: str = "drop") -> bool:
        """Stop the process: its unit disabled and stopped (TERM to all its processes, KILL
        after 10 s), so neither systemd nor a reboot starts it again. True if it was running.
        A unit whose process has exited, or none at all, is not an error: a stale record never
        fails a stop. A process an older daskfleet started (pid file, supervisor script) is
        stopped too.

        ``previous``: what becomes of the unit: "drop" (gone, with any kept aside), "save"
        (kept aside, before a replacement: `restore` starts it again if the replacement fails),
        "keep" (the one kept aside stays: a failed replacement stopped)."""
        with connect(self.host, ssh) as c:
            r = c.run(privileged(self.host, self._stop_command(previous)))
        if r.failed:
            raise ClusterStartError(f"{self.host.name}: could not stop {self.name}: "
                                    f"{(r.stderr or r.stdout).strip() or f'exit status {r.exited}'}")
        return "stopped" in r.stdout.split() or "killed" in r.stdout.split()

    def _stop_command(self, previous: str) -> str:
        """Shell (as root): `stop`'s whole work on the node; prints `stopped` if it ran."""
        u, f, k = self.unit, self.unit_path, self.kept_path
        sup = self.supervise_file
        aside = {"drop": f"rm -f {f} {k}",
                 "save": f"install -d -m 0700 {KEPT_DIR} && mv -f {f} {k}",
                 "keep": f"rm -f {f}"}[previous]
        unit = (f"if [ -e {f} ]; then "
                f"[ \"$(systemctl show -p ActiveState --value {u})\" = active ] && echo stopped; "
                f"systemctl disable --now --quiet {u} && {aside} && "
                f"rm -rf {self.hold_dir} && systemctl daemon-reload && "
                f"{{ systemctl reset-failed {u} 2>/dev/null; true; }}; "
                f"elif [ {previous} = drop ]; then rm -f {k}; fi")
        # an older daskfleet's process: its supervisor script first, then the process
        legacy = f"rm -f {sup} {sup}.prev && " + self._locked(self._legacy_stop_script())
        return f"{unit} && {legacy}"

    def _locked(self, script: str) -> str:
        """Shell (as root): `script` run by bash as root, holding the process's lock (an older
        daskfleet's supervisor took it to start the process)."""
        return (f"install -d -m 0755 {RUN_DIR} && flock -w {LOCK_WAIT_S} {self.lock_file} "
                + shlex.join(["bash", "-c", script]))

    def _legacy_stop_script(self) -> str:
        """Bash: stop the process an older daskfleet's pid file records, if it is still ours;
        the pid file goes either way. Prints gone, stopped or killed."""
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
