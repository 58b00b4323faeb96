"""Pre-flight before starting Dask: SSH works from here to every host, and every worker can reach
the scheduler's port (refused is fine before the scheduler runs; a timeout means a firewall)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from runner.cluster.hosts import Host
from runner.cluster.ssh import SSHSettings, connect, describe_ssh_error, fan_out, is_trust_failure
from runner.errors import ClusterStartError, DaskfleetError, HostError, ProvisionError

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
        cmd = shlex.join(["python3", "-c", PROBE, scheduler.dask_address, str(port), str(timeout)])
        with connect(h, ssh) as c:
            return c.run(cmd).stdout.strip() or "error:no_output"

    results = fan_out(workers, probe, "port pre-flight")
    checks += [Check(w.name, f"{scheduler.name} ({scheduler.dask_address})", port, results[w])
               for w in workers]
    if not all(c.ok for c in checks):
        raise ClusterStartError(
            "pre-flight failed: a worker cannot reach the scheduler's port (a firewall or security "
            "group between them must allow it):\n" + table(checks))
    return checks


PYTHON_FACTS = ["python3", "-c", "import sys, platform; "
                "print('%d.%d' % sys.version_info[:2], platform.machine())"]


def node_platforms(hosts: list[Host], ssh: SSHSettings, python_minor: str,
                   tolerate: frozenset[str] = frozenset()) -> dict[Host, str]:
    """host -> architecture (uname -m), read over SSH before anything is built or installed.

    Refuses nodes whose Python minor version differs from this machine's, naming each host and
    both versions. Hosts named in `tolerate` may be unreachable (a degraded start)."""

    def probe(h: Host) -> tuple[str, str]:
        with connect(h, ssh) as c:
            r = c.run(shlex.join(PYTHON_FACTS))
        if r.failed or len(r.stdout.split()) != 2:
            raise ProvisionError(f"{h.name}: no usable /usr/bin/python3 ({r.stderr.strip()}); "
                                 f"install python{python_minor} on the node.")
        version, machine = r.stdout.split()
        return version, machine

    try:
        facts = fan_out(hosts, probe, "reading the nodes' Python version")
    except HostError as e:
        lost = {h.name for h in e.failures}
        # Only a host that is down may be tolerated: one with another host key, or that refuses
        # our key, fails the run even with min_workers.
        if not lost <= tolerate or any(isinstance(x, DaskfleetError) or is_trust_failure(x)
                                       for x in e.failures.values()):
            raise
        facts = e.results
    bad = [f"  {h.name} ({h.address}) runs Python {v}" for h, (v, _) in facts.items()
           if v != python_minor]
    if bad:
        raise ProvisionError(
            f"these nodes do not run this machine's Python {python_minor}:\n" + "\n".join(bad)
            + f"\nInstall python{python_minor} as /usr/bin/python3 on them (or submit from a "
            "machine that matches); nothing was installed.")
    return {h: m for h, (_, m) in facts.items()}
