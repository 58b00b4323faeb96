"""Bring-up through a laptop's uplink: the bytes this machine sends into the lab during a cold
`daskfleet up`, and how long it takes, at 3 and at 6 hosts, with the uplink shaped
(`lab up --uplink`).

    flock /work/lab.lock .venv/bin/python bench/uplink.py [--hosts 3 6] [--uplink 50mbit]
        [--without-fanout]

Needs root and no lab up (it makes one per size, so every `up` meets fresh hosts). The wheelhouse
is built (or found in the cache) first, so the timed `up` is the bring-up alone. Bytes are the
lab bridge's own transmit counter (runner.lab.uplink.bridge_tx_bytes): what this machine sent,
never what the hosts copy between themselves. Goals (issue 19): bytes at most 1.3x one wheelhouse
whatever the number of hosts; cold `up` at 6 hosts at most 1.3x that at 3.

Per Ansible task, the seconds it took and how busy this machine's cores were meanwhile (the lab
hosts are processes on this machine: they share its cores), so a longer `up` at 6 hosts can be
told apart: time in tasks that saturate the CPU (six installs on two cores) or time on the wire.
`--without-fanout` adds a run at the smallest size where every node gets the wheelhouse from
this machine (python_env_fanout: false), as before the fan-out. A benchmark: nothing asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from runner.lab import Lab
from runner.lab.uplink import bridge_tx_bytes

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_S = 0.5


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of every core, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class CPUSampler:
    """This machine's CPU use, sampled every SAMPLE_S seconds: [(monotonic, busy fraction)]."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        busy0, total0 = cpu_times()
        while not self._stop.wait(SAMPLE_S):
            busy, total = cpu_times()
            self.samples.append((time.monotonic(), (busy - busy0) / max(1, total - total0)))
            busy0, total0 = busy, total

    def __enter__(self) -> CPUSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def busy(self, start: float, end: float) -> float:
        inside = [b for t, b in self.samples if start < t <= end + SAMPLE_S / 2]
        return sum(inside) / len(inside) if inside else float("nan")


def wheelhouse_bytes() -> int:
    from runner.provision.lock import derive_lock
    from runner.provision.wheelhouse import build

    return build(derive_lock(platform.machine()), progress=lambda *_: None).archive.stat().st_size


def cold_up(n_hosts: int, uplink: str, workdir: Path, fanout: bool) -> dict:
    """A fresh lab of n_hosts with its uplink shaped, then `daskfleet up` on it, timed."""
    lab = Lab()
    lab.up(n_hosts, progress=lambda *_: None, uplink=uplink)
    try:
        cfile = workdir / f"uplink-{n_hosts}.yaml"
        cfile.write_text(yaml.safe_dump({"name": "uplink", "provider": "lab",
                                         "lab": {"hosts": n_hosts},
                                         "dask": {"threads_per_worker": 1}}))
        env = {**os.environ, "DASKFLEET_STATE_DIR": str(workdir / f"state-{n_hosts}-{fanout}"),
               "DASKFLEET_INVENTORY_DIR": str(workdir / f"inventory-{n_hosts}-{fanout}"),
               "PYTHONUNBUFFERED": "1"}
        if not fanout:  # an extra variables file beside the ones `up` writes (group_vars/all/)
            extra = Path(env["DASKFLEET_INVENTORY_DIR"]) / "uplink" / "group_vars" / "all"
            extra.mkdir(parents=True)
            (extra / "bench.yml").write_text("python_env_fanout: false\n")
        lines: list[tuple[float, str]] = []
        with CPUSampler() as cpu:
            sent0, t0 = bridge_tx_bytes(), time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "up", "-c", str(cfile)],
                                    cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            for line in proc.stdout:
                lines.append((time.monotonic(), line.rstrip()))
            rc = proc.wait()
            seconds, sent = time.monotonic() - t0, bridge_tx_bytes() - sent0
        if rc != 0:
            raise SystemExit(f"daskfleet up on {n_hosts} hosts failed (rc {rc}):\n"
                             + "\n".join(line for _, line in lines[-30:]))
        subprocess.run([sys.executable, "-m", "runner.cli", "down", "-c", str(cfile), "--destroy"],
                       cwd=ROOT, env=env, capture_output=True)
    finally:
        lab.down(progress=lambda *_: None)
    # each `ansible: TASK` progress line starts a task, which lasts until the next line
    tasks = []
    for i, (t, line) in enumerate(lines):
        m = re.search(r"\] ansible: (\w+ : .+)$", line)
        if m and i + 1 < len(lines):
            end = lines[i + 1][0]
            tasks.append({"task": m[1], "seconds": end - t, "cpu_busy": cpu.busy(t, end)})
    summary = next((line for _, line in lines if "] up: terraform=" in line), "")
    return {"hosts": n_hosts, "fanout": fanout, "up_s": seconds, "sent_bytes": sent,
            "cpu_busy": cpu.busy(t0, t0 + seconds), "summary": summary.split("] ", 1)[-1],
            "tasks": tasks}


def report(rows: list[dict], wheelhouse: int, uplink: str) -> dict:
    print(f"wheelhouse {wheelhouse / 1e6:.0f} MB; uplink {uplink}; "
          f"{os.cpu_count()} cores on this machine (the lab hosts share them)")
    for r in rows:
        mode = "fan-out" if r["fanout"] else "no fan-out (every node from this machine)"
        print(f"\n{r['hosts']} hosts, {mode}: cold up {r['up_s']:.1f}s, sent "
              f"{r['sent_bytes'] / 1e6:.0f} MB = {r['sent_bytes'] / wheelhouse:.2f}x the wheelhouse,"
              f" CPU {100 * r['cpu_busy']:.0f}% busy\n  {r['summary']}")
        for t in sorted(r["tasks"], key=lambda t: -t["seconds"])[:6]:
            print(f"  {t['seconds']:6.1f}s  CPU {100 * t['cpu_busy']:3.0f}%  {t['task']}")
    fan = {r["hosts"]: r for r in rows if r["fanout"]}
    out: dict = {"wheelhouse_bytes": wheelhouse, "uplink": uplink, "cores": os.cpu_count(),
                 "runs": rows}
    out["sent_over_wheelhouse"] = {n: r["sent_bytes"] / wheelhouse for n, r in fan.items()}
    if len(fan) >= 2:
        small, large = min(fan), max(fan)
        out["up_ratio"] = fan[large]["up_s"] / fan[small]["up_s"]
        print(f"\ncold up {large} hosts / {small} hosts = {out['up_ratio']:.2f} (goal <= 1.3); "
              "sent / wheelhouse: " + ", ".join(f"{n} hosts {v:.2f}" for n, v in
                                                out["sent_over_wheelhouse"].items())
              + " (goal <= 1.3)")
        # Where the extra time went: per task, the growth and how busy the cores were.
        by_task = {t["task"]: t for t in fan[small]["tasks"]}
        grew = []
        for t in fan[large]["tasks"]:
            before = by_task.get(t["task"])
            if before and t["seconds"] - before["seconds"] > 1.0:
                grew.append((t["seconds"] - before["seconds"], t, before))
        if grew:
            print(f"tasks that grew from {small} to {large} hosts:")
        for extra, t, before in sorted(grew, key=lambda g: -g[0]):
            print(f"  +{extra:5.1f}s ({before['seconds']:.1f}s -> {t['seconds']:.1f}s, CPU "
                  f"{100 * before['cpu_busy']:.0f}% -> {100 * t['cpu_busy']:.0f}%)  {t['task']}")
        out["grew"] = [{"task": t["task"], "extra_s": e, "cpu_busy": t["cpu_busy"]}
                       for e, t, _ in grew]
        extra = fan[large]["up_s"] - fan[small]["up_s"]
        saturated = sum(e for e, t, _ in grew if t["cpu_busy"] >= 0.9)
        print(f"of the {extra:.1f}s more at {large} hosts, {saturated:.1f}s are in tasks during "
              f"which this machine's {os.cpu_count()} cores were at least 90% busy")
        cores = os.cpu_count() or 1
        work = {n: r["cpu_busy"] * cores * r["up_s"] for n, r in fan.items()}
        print(f"CPU work of the whole up (this machine and every lab host): {work[small]:.0f} "
              f"core-seconds at {small} hosts, {work[large]:.0f} at {large} "
              f"({work[large] / work[small]:.2f}x), on the same {cores} cores")
        # On real nodes each brings its own cores: the saturated growth is this machine's.
        projected = fan[large]["up_s"] - saturated
        print(f"without the growth of the CPU-saturated tasks (nodes with cores of their own), "
              f"{large} hosts would take about {projected:.0f}s = "
              f"{projected / fan[small]['up_s']:.2f}x {small} hosts (an estimate, not a run)")
        per_host = ((fan[large]["sent_bytes"] - fan[small]["sent_bytes"]) / (large - small))
        fixed = fan[small]["sent_bytes"] - small * per_host
        limit = (1.3 * wheelhouse - fixed) / per_host if per_host > 0 else float("inf")
        print(f"sent = {fixed / 1e6:.0f} MB + {per_host / 1e6:.1f} MB per host (Ansible's own "
              f"modules and files): 1.3x the wheelhouse is reached at about {limit:.0f} hosts")
        out.update(cpu_core_seconds=work, projected_large_up_s=projected,
                   sent_per_host_bytes=per_host, hosts_at_1_3x=limit)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, nargs="+", default=[3, 6])
    ap.add_argument("--uplink", default="50mbit")
    ap.add_argument("--without-fanout", action="store_true",
                    help="also the smallest size with every node fed by this machine")
    args = ap.parse_args(argv)
    if Lab().hosts():
        raise SystemExit("bench/uplink.py times `up` on fresh hosts: run `daskfleet lab down` "
                         "first")
    wheelhouse = wheelhouse_bytes()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.hosts:
            rows.append(cold_up(n, args.uplink, Path(tmp), fanout=True))
            print(f"{n} hosts: {rows[-1]['up_s']:.1f}s, {rows[-1]['sent_bytes'] / 1e6:.0f} MB "
                  "sent", file=sys.stderr)
        if args.without_fanout:
            rows.append(cold_up(min(args.hosts), args.uplink, Path(tmp), fanout=False))
    out = report(rows, wheelhouse, args.uplink)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
