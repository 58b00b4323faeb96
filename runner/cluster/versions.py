"""Refuse a cluster whose nodes do not run this machine's environment.

distributed's own check only warns; here any difference is an error. Python is compared by
major.minor (the nodes use their system Python of the same minor version)."""

from __future__ import annotations

from runner.errors import EnvironmentMismatchError


def compare_versions(versions: dict, names: list[str]) -> dict:
    """Raise EnvironmentMismatchError listing every package that differs from the client's."""
    client = versions["client"]["packages"]
    nodes = {"scheduler": versions["scheduler"]["packages"], **{
        f"worker {addr}": v["packages"] for addr, v in versions["workers"].items()}}
    rows = []

    def norm(name: str, v: str | None) -> str | None:
        return ".".join(v.split(".")[:2]) if (name == "python" and v) else v

    for node, pkgs in nodes.items():
        for name in ["python", *names]:
            if norm(name, pkgs.get(name)) != norm(name, client.get(name)):
                rows.append(f"  {node}: {name} {pkgs.get(name)} (client has {client.get(name)})")
    if rows:
        raise EnvironmentMismatchError(
            "versions differ between this machine and the cluster:\n" + "\n".join(rows)
            + "\nRun `daskfleet up` to install this machine's environment on every node.")
    return versions


def check_versions(client) -> dict:
    """Same packages at the same versions, and the same code: every node must run the
    environment named by this machine's lock hash."""
    import cloudpickle

    from runner.cluster import nodeinfo
    from runner.provision.lock import WORKER_ROOTS, closure, derive_lock

    names = sorted(closure(WORKER_ROOTS)) + ["daskfleet"]
    versions = compare_versions(client.get_versions(packages=names), names)
    # Sent by value: a node running an older environment may not have this module at all.
    cloudpickle.register_pickle_by_value(nodeinfo)
    nodes = {"scheduler": client.run_on_scheduler(nodeinfo.describe),
             **{f"worker {a}": d for a, d in client.run(nodeinfo.describe).items()}}
    # the lock for each node's architecture (the same pins; its hash names the architecture too)
    wanted = {m: derive_lock(m).hash for m in {d.get("machine") for d in nodes.values()}}
    stale = [f"  {n} ({d['hostname']}): environment {d['env_hash']}, expected "
             f"{wanted[d.get('machine')]}" for n, d in nodes.items()
             if d["env_hash"] != wanted[d.get("machine")]]
    if stale:
        raise EnvironmentMismatchError(
            "these nodes do not run the environment of this machine's lock:\n"
            + "\n".join(stale) + "\nRun `daskfleet up` to install and restart them.")
    return versions
