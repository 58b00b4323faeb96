"""What `up` must do to a cluster's processes, decided from data alone (no SSH): the wanted
processes, each with the spec digest of what the cluster file and this machine's lock make of
it, against what runs (its status and the digests it was started with). `reconcile` carries the
changes out; `plan` shows them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from runner.cluster.process_settings import ProcStatus
from runner.cluster.processes import RemoteProcess


@dataclass(frozen=True)
class Change:
    proc: RemoteProcess
    action: Literal["start", "restart"]
    reasons: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.proc.name}@{self.proc.host.name}"

    @property
    def files_only(self) -> bool:
        """Only its node files changed (new certificates from the same CA, new config): what it
        runs with stays valid, so its restart can wait."""
        return self.action == "restart" and set(self.reasons) == {FILES_CHANGED}


FILES_CHANGED = "node config or certificates changed since it started"


def _share(limit: str | None) -> float | None:
    """A worker's memory limit as a fraction of its host ("auto" alone on a host is all of it);
    None for a limit in bytes, set in the cluster file."""
    if limit == "auto":
        return 1.0
    if limit is None:
        return None
    try:
        return float(limit)
    except (TypeError, ValueError):
        return None


def memory_reason(p: RemoteProcess, now: ProcStatus, alone: bool = False) -> str | None:
    """A running worker whose memory limit is not its share of its host now: larger (more
    workers share the host: together they would commit more than it has), smaller (fewer do:
    after `scale 8` then `scale 2` the two left would use a quarter of their hosts each, and a
    later `scale 4` would start workers with twice their limit), or another limit than the
    cluster file now sets. A smaller share is restored only when another worker can take its
    data (``alone``: the cluster's only worker would lose it: it keeps its smaller share)."""
    if p.kind != "worker" or now.memory_limit is None:
        return None
    running, wanted = _share(now.memory_limit), _share(p.memory_limit)
    if running is None or wanted is None:
        changed = now.memory_limit != p.memory_limit
    elif running > wanted + 1e-4:
        changed = True
    else:
        changed = running < wanted - 1e-4 and not alone
    return f"memory limit {now.memory_limit} -> {p.memory_limit}" if changed else None


def restart_reasons(p: RemoteProcess, now: ProcStatus, env_hash: str | None,
                    alone: bool = False) -> list[str]:
    """Why a running process no longer is what is wanted (empty: leave it alone); ``alone``:
    it is the cluster's only worker (``memory_reason``)."""
    reasons = []
    if env_hash and now.env != env_hash:
        reasons.append(f"environment {now.env} -> {env_hash}")
    if now.spec is None:
        reasons.append("started without a recorded spec (an older daskfleet)")
    elif now.spec != p.spec_digest:
        reasons.append("settings changed (command line or environment: "
                       f"{now.spec} -> {p.spec_digest})")
    if now.unit is False:
        reasons.append(f"runs outside systemd (an older daskfleet started it): replaced by "
                       f"its unit {p.unit}")
    if now.files and now.files_now and now.files != now.files_now:
        reasons.append(FILES_CHANGED)
    memory = memory_reason(p, now, alone)
    if memory:
        reasons.append(memory)
    return reasons


def plan(procs: list[RemoteProcess], observed: dict[RemoteProcess, ProcStatus],
         env_hashes: dict[str, str]) -> list[Change]:
    """Start what is wanted and not running; restart what runs but differs, with the reasons.
    Unreachable processes are neither (the caller decides whether the cluster may run without
    them)."""
    changes = []
    alone = sum(p.kind == "worker" for p in procs) == 1
    for p in procs:
        now = observed.get(p, ProcStatus("dead"))
        if now.state == "dead":
            changes.append(Change(p, "start", ("not running",)))
        elif now.state == "running":
            reasons = restart_reasons(p, now, env_hashes.get(p.host.name), alone)
            if reasons:
                changes.append(Change(p, "restart", tuple(reasons)))
    return changes


def table(changes: list[Change]) -> str:
    """The changes as lines a user reads: what, where, why."""
    return "\n".join(f"  {c.action:<8} {c.where:<24} {'; '.join(c.reasons)}" for c in changes)
