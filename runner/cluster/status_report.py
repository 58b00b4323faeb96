"""`daskfleet status`: every process the hosts run for the cluster, what it runs with and whether
`up` would replace it (and why), each worker as the scheduler sees it, and the certificates'
ends. Read-only: it asks the hosts and the scheduler, and changes nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner import state
from runner.cluster import changes
from runner.cluster.rotation import certificates
from runner.dask_workers import joined_workers

if TYPE_CHECKING:
    from runner.cluster.cluster import Cluster


def status(cluster: Cluster) -> dict:
    record = state.read(cluster.state_dir)
    procs_state = cluster.process_states()
    joined: dict[str | None, dict] = {}
    if any(p.kind == "scheduler" and s.state == "running" for p, s in procs_state.items()):
        try:
            joined = {w.get("name"): {"address": a, **w}
                      for a, w in joined_workers(cluster.client()).items()}
        except Exception:  # noqa: BLE001 - a scheduler that does not answer is degraded
            joined = {}
    hosts = []
    workers = []
    env_hashes = record.get("env_hashes") or {}
    pending = {c.proc: c for c in changes.plan(list(procs_state), procs_state, env_hashes)}
    for p, ps in procs_state.items():
        st, pid = ps.state, ps.pid
        # what it runs with, and whether `up` would replace it (and why)
        replace = pending.get(p)
        hosts.append({"host": p.host.name, "address": p.host.address, "user": p.host.user,
                      "private_address": p.host.dask_address, "role": p.kind,
                      "process": p.name, "unit": p.unit if ps.unit else None,
                      "restarts": ps.restarts, "pid": pid, "state": st, "env": ps.env,
                      "spec_digest": ps.spec, "files_digest": ps.files,
                      "wanted_spec_digest": p.spec_digest,
                      "up_would": None if replace is None else
                      {"action": replace.action, "reasons": list(replace.reasons)}})
        if p.kind == "worker":
            w = joined.get(p.name, {})
            workers.append({"name": p.name, "host": p.host.name, "pid": pid, "state": st,
                            "joined": bool(w), "threads": w.get("nthreads"),
                            "memory_limit": w.get("memory_limit"),
                            "memory_used": (w.get("metrics") or {}).get("memory")})
    healthy = all(h["state"] == "running" for h in hosts) and all(w["joined"] for w in workers)
    ends, warnings = certificates(cluster, sorted({p.host.name for p in procs_state}))
    return {"cluster": cluster.spec.name, "healthy": healthy,
            "certificates": ends, "warnings": warnings,
            "scheduler": {"address": record.get("scheduler"),
                          "dashboard": record.get("dashboard")},
            "lock_hash": record.get("lock_hash"), "workers": workers, "hosts": hosts}
