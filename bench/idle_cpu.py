"""What an idle cluster costs: the CPU a scheduler and two workers (each with its nanny) use
while nothing is submitted, with distributed's own defaults against the node config that
`daskfleet up` writes (playbooks/roles/dask_node: the tick, system-monitor and profile
intervals, read from the role's defaults so the two cannot drift).

    .venv/bin/python bench/idle_cpu.py [--seconds 30] [--rounds 2]

The two configs take turns (defaults, node, defaults, node...) in this one run, on loopback,
and the figure is their ratio: the machine is shared and its speed drifts.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml
from distributed.utils import open_port

ROOT = Path(__file__).resolve().parents[1]
ROLE_DEFAULTS = ROOT / "playbooks" / "roles" / "dask_node" / "defaults" / "main.yml"
DASK = Path(sys.executable).with_name("dask")
WORKERS = 2


def node_env() -> dict[str, str]:
    """The idle-cost keys of the node's dask.yaml, as dask environment variables."""
    d = yaml.safe_load(ROLE_DEFAULTS.read_text())
    return {"DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": d["dask_node_tick_interval"],
            "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL":
                d["dask_node_system_monitor_interval"],
            "DASK_DISTRIBUTED__WORKER__PROFILE__INTERVAL": d["dask_node_profile_interval"]}


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and their children (the nanny's worker)."""
    total = 0.0
    for pid in pids:
        parent = psutil.Process(pid)
        for p in [parent, *parent.children(recursive=True)]:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
    return total


def idle_cpu(extra_env: dict[str, str], seconds: float, settle: float = 10) -> float:
    """CPU seconds per minute of a scheduler and WORKERS nanny-workers left idle SECONDS."""
    env = {**os.environ, "DASK_CONFIG": "/nonexistent", **extra_env}
    port = open_port("127.0.0.1")
    addr = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port",
                               str(port), "--no-dashboard"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(2)
        procs += [subprocess.Popen([str(DASK), "worker", addr, "--host", "127.0.0.1",
                                    "--nthreads", "1", "--no-dashboard"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for _ in range(WORKERS)]
        time.sleep(settle)  # imports and start-up are not idle
        pids = [p.pid for p in procs]
        before = _cpu_s(pids)
        time.sleep(seconds)
        used = _cpu_s(pids) - before
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a dask process exited during the measure")
        return used * 60 / seconds
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def measure(seconds: float = 30, rounds: int = 2, log=print) -> dict:
    defaults, node = [], []
    for r in range(rounds):
        defaults.append(idle_cpu({}, seconds))
        node.append(idle_cpu(node_env(), seconds))
        log(f"idle round {r + 1}: distributed's defaults {defaults[-1]:.2f} cpu-s/min, "
            f"the node config {node[-1]:.2f} cpu-s/min")
    d, n = sum(defaults) / rounds, sum(node) / rounds
    return {"processes": f"scheduler + {WORKERS} workers with nannies", "seconds": seconds,
            "defaults_cpu_s_per_min": d, "node_cpu_s_per_min": n, "node_over_defaults": n / d,
            "node_config": node_env()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    r = measure(args.seconds, args.rounds)
    print(f"idle {r['processes']}: {r['node_cpu_s_per_min']:.2f} / "
          f"{r['defaults_cpu_s_per_min']:.2f} cpu-s/min = {r['node_over_defaults']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
