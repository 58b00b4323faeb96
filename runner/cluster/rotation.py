"""`daskfleet rotate`: new certificates from the cluster's CA, or a new CA in three phases, each
rolled out by `up`'s reconcile (workers one at a time, the scheduler when no job runs); and what
`status` says of the certificates' ends."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from runner import state
from runner.cluster import changes
from runner.errors import ConfigError
from runner.log import Progress, Say

if TYPE_CHECKING:
    from runner.cluster.cluster import Cluster
    from runner.cluster.up_steps import UpSummary

logger = logging.getLogger(__name__)

# a CA change's phase (CertificateAuthority.ca_change_phase) as the user counts it
CA_PHASES = {"trust": "1 of 3", "issue": "2 of 3", None: "3 of 3"}


def certificates(cluster: Cluster, hosts: list[str]) -> tuple[dict[str, str], list[str]]:
    """When the CA's and each certificate's validity ends, and a warning for each that ends
    within 30 days (`daskfleet rotate` issues new ones; a CA's end needs a new CA)."""
    if not cluster.spec.tls:
        return {}, []
    ca = cluster.ca
    ends = ca.expiries(hosts)
    warnings = ca.expiry_warnings(hosts, cluster.spec.source)
    phase = ca.ca_change_phase()
    if phase is not None:
        warnings.append(
            f"a CA change is under way (phase {CA_PHASES[phase]}): run `daskfleet rotate "
            f"--new-ca -c {cluster.spec.source}` to go on with it")
    return {name: end.isoformat(timespec="seconds") for name, end in ends.items()}, warnings


def rotate(cluster: Cluster, progress: Progress | None = None, restart: bool = False,
           new_ca: bool = False) -> UpSummary:
    """New certificates (new keys, same CA) for every host and the client, installed by the
    playbook and rolled out by the reconcile: workers one at a time, the scheduler when no
    job runs (its files stay valid meanwhile). ``new_ca``: a new CA instead, in the three
    phases of ``CertificateAuthority`` (trust both, issue from the new, drop the old), each
    rolled out to every process before the next; a phase that cannot reach the scheduler
    (a job runs on it) stops there, and the same command goes on with it later."""
    say = Say(progress, logger)
    with cluster.locked("daskfleet rotate", progress=progress):
        if not cluster.spec.tls:
            raise ConfigError(f"{cluster.spec.source}: tls: false: there is no certificate to "
                              "rotate.")
        if new_ca:
            return _change_ca(cluster, progress, restart)
        hosts = cluster.hosts()
        issued = cluster.ca.rotate({h.name: h.dask_address for h in hosts})
        end = cluster.ca.expiries([])["ca"]
        say(f"rotate: new certificates for {', '.join(issued)} from the cluster's CA "
            f"(valid until {end:%Y-%m-%d} at most: the CA's own end)")
        cluster.close_client()  # the next client presents the new client certificate
        return cluster.apply(progress, restart=restart)


def _change_ca(cluster: Cluster, progress: Progress | None, restart: bool) -> UpSummary:
    say = Say(progress, logger)
    steps = {None: ("begin_ca_change", "a new CA, trusted by every process beside the old "
                    "one (which still signs)"),
             "trust": ("sign_with_new_ca", "the new CA signs: every certificate is issued "
                       "anew from it (both CAs still trusted)"),
             "issue": ("drop_old_ca", "the old CA is no longer trusted")}
    phase = cluster.ca.ca_change_phase()
    if phase is not None and behind(cluster):
        # the phase under way first reaches every process (a scheduler it waited for)
        say(f"CA change: phase {CA_PHASES[phase]} goes on")
        summary = cluster.apply(progress, restart=restart)
        if behind(cluster):
            return _waits(cluster, phase, say, summary)
    while True:
        method, what = steps[phase]
        getattr(cluster.ca, method)()
        phase = cluster.ca.ca_change_phase()
        say(f"CA change: phase {CA_PHASES[phase]}: {what}")
        cluster.close_client()  # the next client loads the new files
        summary = cluster.apply(progress, restart=restart)
        if behind(cluster):
            return _waits(cluster, phase, say, summary)
        if phase is None:
            end = cluster.ca.expiries([])["ca"]
            say(f"CA change: done; every process runs with certificates of the new CA "
                f"(valid until {end:%Y-%m-%d})")
            return summary


def behind(cluster: Cluster) -> list[str]:
    """The processes that run with other files or settings than `up` would give them."""
    procs = cluster.process_states()
    env_hashes = state.read(cluster.state_dir).get("env_hashes") or {}
    return [f"{c.proc.name}@{c.proc.host.name}"
            for c in changes.plan(list(procs), procs, env_hashes)]


def _waits(cluster: Cluster, phase: str | None, say: Say, summary: UpSummary) -> UpSummary:
    say.warning(f"CA change: phase {CA_PHASES[phase]} is not yet everywhere (still on the "
                f"files before it: {', '.join(behind(cluster))}); the next phase waits for it, "
                f"so nothing stops trusting anything. Run `daskfleet rotate --new-ca -c "
                f"{cluster.spec.source}` again once the job ends (`daskfleet runs`), or add "
                "--restart to restart the scheduler under it")
    return summary
