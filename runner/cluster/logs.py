"""`daskfleet logs`: the scheduler's and workers' logs, read over SSH (optionally followed)."""

from __future__ import annotations

import shlex
import sys
import threading

from runner.cluster.processes import RemoteProcess
from runner.cluster.ssh import SSHSettings, connect
from runner.errors import ConfigError


class _Prefixed:
    """A write()-able stream for one host's `tail -v` of several logs: each line is prefixed by
    the process whose log it came from (tail's `==> FILE <==` headers say which)."""

    def __init__(self, prefixes: dict[str, str], out, lock: threading.Lock):
        self.prefixes, self.out, self.lock, self.buf = prefixes, out, lock, ""
        self.prefix = next(iter(prefixes.values()))

    def write(self, data: str) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split("\n")
        with self.lock:
            for line in lines:
                if line.startswith("==> ") and line.endswith(" <==") \
                        and line[4:-4] in self.prefixes:
                    self.prefix = self.prefixes[line[4:-4]]
                elif line:  # tail separates files with an empty line
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

    # One tail per host, whatever its number of processes: `-f` holds its SSH channel open, and
    # sshd allows a host only so many (the pool caps them), so one per log would wait forever.
    by_host: dict = {}
    for p in procs:
        by_host.setdefault(p.host, []).append(p)

    def one(host, mine: list[RemoteProcess]) -> None:
        stream = _Prefixed({p.log_file: f"[{host.name} {p.name}]" for p in mine}, out, lock)
        cmd = ["tail", "-v", "-n", str(lines), *(["-F"] if follow else []),
               *(p.log_file for p in mine)]
        with connect(host, ssh) as c:
            c.run(shlex.join(cmd), hide=False, warn=True, out_stream=stream, err_stream=stream)
        stream.write("\n") if stream.buf else None

    threads = [threading.Thread(target=one, args=item, daemon=True) for item in by_host.items()]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)  # a short join keeps Ctrl-C responsive
