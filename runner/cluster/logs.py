"""`daskfleet logs`: the scheduler's and workers' logs, read over SSH (optionally followed)."""

from __future__ import annotations

import shlex
import sys
import threading

from runner.cluster.processes import RemoteProcess
from runner.cluster.ssh import SSHSettings, connect
from runner.errors import ConfigError


class _Prefixed:
    """A write()-able stream that prefixes every line with the process it came from."""

    def __init__(self, prefix: str, out, lock: threading.Lock):
        self.prefix, self.out, self.lock, self.buf = prefix, out, lock, ""

    def write(self, data: str) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split("\n")
        with self.lock:
            for line in lines:
                self.out.write(f"{self.prefix} {line}\n")
            self.out.flush()

    def flush(self) -> None:
        pass


def select(procs: list[RemoteProcess], host: str | None) -> list[RemoteProcess]:
    if host is None:
        return procs
    chosen = [p for p in procs if host in (p.host.name, p.name)]
    if not chosen:
        names = ", ".join(sorted({p.host.name for p in procs}))
        raise ConfigError(f"logs: no host or process named {host!r} (hosts: {names}).")
    return chosen


def show(procs: list[RemoteProcess], ssh: SSHSettings, lines: int = 50, follow: bool = False,
         out=None) -> None:
    out = out or sys.stdout
    lock = threading.Lock()

    def one(p: RemoteProcess) -> None:
        stream = _Prefixed(f"[{p.host.name} {p.name}]", out, lock)
        cmd = ["tail", "-n", str(lines), *(["-F"] if follow else []), p.log_file]
        with connect(p.host, ssh) as c:
            c.run(shlex.join(cmd), hide=False, out_stream=stream, err_stream=stream)
        stream.write("\n") if stream.buf else None

    threads = [threading.Thread(target=one, args=(p,), daemon=True) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)  # a short join keeps Ctrl-C responsive
