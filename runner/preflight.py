"""Pre-flight before starting Dask: SSH works from here to every host, and every worker can reach
the scheduler's port (refused is fine before the scheduler runs; a timeout means a firewall)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from runner.errors import ClusterStartError, HostError
from runner.hosts import Host
from runner.ssh import SSHSettings, connect, describe_ssh_error, fan_out

# Runs on the worker with the system Python: prints one word.
PROBE = (
    "import socket, sys\n"
    "s = socket.socket(); s.settimeout(float(sys.argv[3]))\n"
    "try:\n"
    "    s.connect((sys.argv[1], int(sys.argv[2]))); print('open')\n"
    "except ConnectionRefusedError: print('refused')\n"
    "except TimeoutError: print('timeout')\n"
    "except OSError as e: print('error:' + (e.strerror or str(e)).replace(' ', '_'))\n"
)
OK_RESULTS = ("open", "refused")


@dataclass(frozen=True)
class Check:
    source: str
    target: str
    port: int
    result: str

    @property
    def ok(self) -> bool:
        return self.result in OK_RESULTS or self.result == "ssh ok"


def table(checks: list[Check]) -> str:
    rows = [f"  {'FROM':12} {'TO':22} {'PORT':>5}  RESULT"]
    rows += [f"  {c.source:12} {c.target:22} {c.port:>5}  {c.result}" for c in checks]
    return "\n".join(rows)


def run(hosts: list[Host], workers: list[Host], scheduler: Host, port: int,
        ssh: SSHSettings, timeout: float = 3.0) -> list[Check]:
    """Raise ClusterStartError with a table of host, port and result when any check fails."""
    checks: list[Check] = []

    def ssh_check(h: Host) -> str:
        with connect(h, ssh) as c:
            c.run("true", warn=False)
        return "ssh ok"

    try:
        fan_out(hosts, ssh_check, "SSH pre-flight")
        checks += [Check("control", f"{h.name} ({h.address})", h.port, "ssh ok") for h in hosts]
    except HostError as e:
        checks += [Check("control", f"{h.name} ({h.address})", h.port,
                         "ssh ok" if h in e.results else
                         describe_ssh_error(h, e.failures[h]).split(": ", 1)[-1])
                   for h in hosts]
        raise ClusterStartError("pre-flight failed:\n" + table(checks)) from e

    def probe(h: Host) -> str:
        cmd = shlex.join(["python3", "-c", PROBE, scheduler.address, str(port), str(timeout)])
        with connect(h, ssh) as c:
            return c.run(cmd).stdout.strip() or "error:no_output"

    results = fan_out(workers, probe, "port pre-flight")
    checks += [Check(w.name, f"{scheduler.name} ({scheduler.address})", port, results[w])
               for w in workers]
    if not all(c.ok for c in checks):
        raise ClusterStartError(
            "pre-flight failed: a worker cannot reach the scheduler's port (a firewall or security "
            "group between them must allow it):\n" + table(checks))
    return checks
