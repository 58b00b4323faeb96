"""The `daskfleet` command. The only place that turns errors into exit codes and messages."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from runner.errors import DaskfleetError
from runner.log import PREFIX, cli_output
from runner.signals import sigterm_raises

DEFAULT_CLUSTER = "clusters/lab.yaml"

# Output (runner/log.py says more): the progress of the work is logged, to this module's logger
# and to each module's own, and printed by the one handler that main() sets up (-v, -q); what a
# command answers is data, printed to stdout here with print() whatever the level.
logger = logging.getLogger("runner.cli")  # not __main__ under python -m


def _answer(msg: str) -> None:
    """Data with the log lines' prefix: a run's metrics and folder, as `submit` always printed
    them (shown with -q too)."""
    print(f"{PREFIX}{msg}", flush=True)


def _ephemeral_spec(args):
    """The cluster file's spec when it is `mode: ephemeral`, else None."""
    from runner.config import load_cluster

    spec = load_cluster(args.cluster)
    return spec if spec.mode == "ephemeral" else None


def _cluster(args):
    from runner.cluster import Cluster
    from runner.errors import ConfigError

    if _ephemeral_spec(args) is not None:
        raise ConfigError(f"{args.cluster}: mode: ephemeral: the cluster exists only during "
                          f"`daskfleet submit JOB -c {args.cluster}`; `{args.cmd}` is not for it "
                          "(use submit, plan or gc).")
    return Cluster.from_file(args.cluster)


def cmd_up(args) -> int:
    with _cluster(args) as cluster:
        summary = cluster.up(force=args.force, restart=args.restart,
                             yes=args.yes, new_image=args.new_image)
        status = cluster.status()
    logger.info(summary.line())
    logger.info(f"scheduler {status['scheduler']['address']}; {len(status['workers'])} workers "
                f"ready; environment {summary.lock_hash}")
    return 0


def cmd_rotate(args) -> int:
    with _cluster(args) as cluster:
        summary = cluster.rotate(restart=args.restart, new_ca=args.new_ca)
    logger.info(summary.line())
    return 0


def _gib(n) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def cmd_status(args) -> int:
    with _cluster(args) as cluster:
        st = cluster.status()
    if args.json:
        print(json.dumps(st, indent=2, default=str))
    else:
        scheduler_up = any(h["role"] == "scheduler" and h["state"] == "running"
                           for h in st["hosts"])
        health = "healthy" if st["healthy"] else "DEGRADED" if scheduler_up else \
            f"DOWN (its scheduler is not running; `daskfleet up -c {args.cluster}` starts it again)"
        print(f"cluster {st['cluster']}: {health}; "
              f"scheduler {st['scheduler']['address']}; dashboard {st['scheduler']['dashboard']} "
              f"(reach it with an SSH tunnel); environment {st['lock_hash']}")
        print(f"{'HOST':10} {'ADDRESS':15} {'PROCESS':12} {'PID':>7} {'RESTARTS':>8} STATE")
        for h in st["hosts"]:
            todo = h.get("up_would")
            pending = (f"  (`up` would {todo['action']} it: {'; '.join(todo['reasons'])})"
                       if todo and h["state"] == "running" else "")
            # how often systemd started it again since `up` did (its unit's NRestarts)
            restarts = h.get("restarts")
            print(f"{h['host']:10} {h['address']:15} {h['process']:12} {h['pid'] or '-':>7} "
                  f"{'-' if restarts is None else restarts:>8} {h['state']}{pending}")
        ends = st.get("certificates") or {}
        if ends:
            hosts_end = min((v for k, v in ends.items() if k != "ca"), default="-")
            print(f"certificates: CA until {ends.get('ca', '-')[:10]}; host and client "
                  f"certificates until {hosts_end[:10]} at the earliest")
        for warning in st.get("warnings") or ():
            print(f"WARNING: {warning}")
        for w in st["workers"]:
            joined = "joined" if w["joined"] else "NOT JOINED"
            print(f"worker {w['name']} on {w['host']}: {joined}, threads={w['threads']}, "
                  f"memory {_gib(w['memory_used'])}/{_gib(w['memory_limit'])} GiB")
    return 0 if st["healthy"] else 1


def cmd_down(args) -> int:
    with _cluster(args) as cluster:
        cluster.down(destroy=args.destroy, purge=args.purge)
    return 0


def cmd_unlock(args) -> int:
    from runner.config import load_cluster
    from runner.errors import ConfigError
    from runner.shared_state import SharedState

    spec = load_cluster(args.cluster)
    shared = SharedState.for_spec(spec)
    if shared is None:
        raise ConfigError(f"{args.cluster}: no `state:` in the file: the cluster's lock is this "
                          f"machine's ({spec.state_dir / 'lock'}), released when its command "
                          "ends.")
    held = shared.unlock()
    logger.info(f"removed the lock of {shared.where} held by " + (
        f"{held.get('user', '?')}@{held.get('host', '?')} (pid {held.get('pid', '?')}, "
        f"`{held.get('command', '?')}`, since {held.get('since', '?')})" if held else
        "nobody (it was free)"))
    return 0


def cmd_submit(args) -> int:
    from runner.jobs.submit import submit

    spec = _ephemeral_spec(args)
    if args.detach:
        if spec is not None:
            from runner.errors import ConfigError

            raise ConfigError(f"{args.cluster}: --detach needs a long-lived cluster; an "
                              "ephemeral one lives as long as its submit")
        from runner.jobs.detached import submit_detached

        with _cluster(args) as cluster:
            run_id = submit_detached(cluster, Path(args.job), Path(args.runs_dir))
        logger.info(f"run {run_id} queued on the cluster; `daskfleet runs` lists it, `daskfleet "
                    f"runs logs {run_id} -f` follows it, `daskfleet runs wait {run_id}` waits for "
                    "it")
        print(run_id)
        return 0
    if spec is not None:
        from runner.ephemeral.run import submit_ephemeral

        result = submit_ephemeral(spec, Path(args.job), runs_dir=Path(args.runs_dir))
    else:
        with _cluster(args) as cluster:
            result = submit(cluster, Path(args.job), runs_dir=Path(args.runs_dir))
    m = result.metrics
    _answer(f"run {result.run_id}: accuracy={m['accuracy']:.4f} macro_f1={m['macro_f1']:.4f} "
            f"n_train={m['n_train']} n_test={m['n_test']} n_classes={m['n_classes']} "
            f"workers={m['n_workers']} (majority class rate {m.get('majority_rate', 0):.4f})")
    _answer(f"artifacts in {result.run_dir}")
    return 0


def cmd_scale(args) -> int:
    with _cluster(args) as cluster:
        result = cluster.scale(args.n)
    logger.info(f"scale: {result['workers']} worker(s); retired: "
                f"{', '.join(result['retired']) or 'none'}; "
                f"started: {', '.join(result['started']) or 'none'}")
    return 0


def cmd_logs(args) -> int:
    from runner.cluster import logs

    with _cluster(args) as cluster:
        procs = logs.select(cluster.wanted(), args.host)
        logs.show(procs, cluster.ssh(), lines=args.lines, follow=args.follow)
    return 0


def cmd_dashboard(args) -> int:
    from runner.cluster.tunnel import open_dashboard

    with _cluster(args) as cluster:
        sched = cluster.wanted()[0].host
        open_dashboard(sched, cluster.spec.dask.dashboard_port, cluster.ssh(), args.port)
    return 0


def cmd_plan(args) -> int:
    from runner.provision.plan import plan

    spec = _ephemeral_spec(args)
    if spec is not None:
        from runner.ephemeral.plan import plan_text
        from runner.provision.lock import derive_lock

        print(plan_text(spec, derive_lock()))
        return 0
    with _cluster(args) as cluster:
        report = plan(cluster)
    print(report.text())
    return 0


def cmd_gc(args) -> int:
    from datetime import UTC, datetime

    from runner.config_base import parse_duration
    from runner.ephemeral import aws, teardown
    from runner.errors import ConfigError

    spec = _ephemeral_spec(args)
    if spec is None:
        raise ConfigError(f"{args.cluster}: gc needs an ephemeral cluster file (mode: ephemeral) for "
                          "its region and environment (endpoint, credentials).")
    try:
        older = None if args.older_than is None else parse_duration(args.older_than)
    except ValueError as e:
        raise ConfigError(f"--older-than: {e}") from None
    with aws.file_environment(spec.environment):
        removed, kept = teardown.gc(aws.ec2_client(spec.ephemeral_spec.region), datetime.now(UTC),
                                    older)
    for what in removed:
        logger.info(f"gc: removed {what}")
    logger.info(f"gc: {len(removed)} resource(s) removed in {spec.ephemeral_spec.region}"
                + (f"; kept runs not yet expired: {', '.join(kept)}" if kept else ""))
    return 0


def cmd_demo(args) -> int:
    from runner.demo import demo

    t0 = time.monotonic()
    demo(hosts=args.hosts, job=Path(args.job), cluster_file=Path(args.cluster))
    logger.info(f"demo finished in {time.monotonic() - t0:.0f}s")
    return 0


class _Parser(argparse.ArgumentParser):
    """The command's parser and, through add_subparsers, every sub-command's: each takes the
    global options (-v, -q, --debug), so they work before or after the sub-command's name. The
    sub-commands' copies have no default: one given before the name is kept."""

    def __init__(self, *args, top: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        unset = argparse.SUPPRESS
        levels = self.add_mutually_exclusive_group()
        levels.add_argument("-v", "--verbose", dest="log_level", action="store_const",
                            const=logging.DEBUG, default=logging.INFO if top else unset,
                            help="also show the detail of the work (debug lines)")
        levels.add_argument("-q", "--quiet", dest="log_level", action="store_const",
                            const=logging.WARNING, default=unset,
                            help="show only warnings and errors besides the command's answer")
        self.add_argument("--debug", action="store_true", default=False if top else unset,
                          help="show tracebacks")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="daskfleet", description=__doc__, top=True)
    sub = p.add_subparsers(dest="cmd", required=True)

    from runner.cli_lab import add_commands as add_lab_commands
    add_lab_commands(sub)

    def with_cluster(sp):
        sp.add_argument("-c", "--cluster", default=DEFAULT_CLUSTER, help="cluster file")
        return sp

    u = with_cluster(sub.add_parser("up", help="provision, install and start the cluster"))
    u.add_argument("--new-image", action="store_true",
                   help="cloud: look up the newest image again (replaces VMs on an older one)")
    u.add_argument("--force", action="store_true",
                   help="run the playbook on every host, also those recorded as up to date")
    u.add_argument("--restart", action="store_true",
                   help="restart the scheduler when a change needs it even while a job runs "
                        "(the job fails); without it `up` refuses")
    u.add_argument("--yes", action="store_true",
                   help="cloud: apply a plan that destroys or replaces machines (shown first); "
                        "without it `up` refuses and changes nothing")
    u.set_defaults(func=cmd_up)
    r = with_cluster(sub.add_parser("rotate", help="new TLS certificates for every host and the "
                                    "client (same CA), rolled out: workers one at a time, the "
                                    "scheduler once no job runs"))
    r.add_argument("--restart", action="store_true",
                   help="restart the scheduler now even while a job runs (the job fails)")
    r.add_argument("--new-ca", action="store_true",
                   help="a new CA too, in three phases rolled out one after another (trust "
                        "both, issue from the new, drop the old); run it again to go on with a "
                        "change that waited for a running job")
    r.set_defaults(func=cmd_rotate)
    s = with_cluster(sub.add_parser("status", help="hosts, processes and workers"))
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    d = with_cluster(sub.add_parser("down", help="stop dask; --destroy also removes infrastructure"))
    d.add_argument("--destroy", action="store_true")
    d.add_argument("--purge", action="store_true",
                   help="with --destroy: also remove the cluster's CA and generated host keys")
    d.set_defaults(func=cmd_down)
    ul = with_cluster(sub.add_parser(
        "unlock", help="shared state: remove the cluster's lock left by a command whose machine "
        "crashed (the lock names who holds it)"))
    ul.set_defaults(func=cmd_unlock)
    sm = with_cluster(sub.add_parser("submit", help="run a batch job on the cluster"))
    sm.add_argument("job", help="job file (jobs/*.yaml)")
    sm.add_argument("--runs-dir", default="runs")
    sm.add_argument("--detach", action="store_true",
                    help="run the job's driver on the scheduler's host and return at once "
                         "(prints the run id)")
    sm.set_defaults(func=cmd_submit)
    sc = with_cluster(sub.add_parser("scale", help="run N workers across the hosts"))
    sc.add_argument("n", type=int)
    sc.set_defaults(func=cmd_scale)
    lg = with_cluster(sub.add_parser("logs", help="scheduler and worker logs"))
    lg.add_argument("host", nargs="?", help="a host or process name (default: all)")
    lg.add_argument("-n", "--lines", type=int, default=50)
    lg.add_argument("-f", "--follow", action="store_true")
    lg.set_defaults(func=cmd_logs)
    db = with_cluster(sub.add_parser("dashboard", help="SSH tunnel to the scheduler's dashboard"))
    db.add_argument("--port", type=int, default=8787, help="local port (default 8787)")
    db.set_defaults(func=cmd_dashboard)
    pl = with_cluster(sub.add_parser("plan", help="what `up` would do; changes nothing"))
    pl.set_defaults(func=cmd_plan)
    gc = with_cluster(sub.add_parser(
        "gc", help="remove EC2 resources of ephemeral runs whose tagged expiry has passed"))
    gc.add_argument("--older-than", default=None,
                    help="also remove what was created at least this long ago (e.g. 2h, 30m, 0s)")
    gc.set_defaults(func=cmd_gc)
    demo = with_cluster(sub.add_parser("demo", help="lab up, up, submit, down, lab down"))
    demo.add_argument("--hosts", type=int, default=3)
    demo.add_argument("--job", default="jobs/demo.yaml")
    demo.set_defaults(func=cmd_demo)
    from runner.cli_batch import add_commands
    add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        # SIGTERM ends a command as Ctrl-C does: clean-up runs
        with cli_output(args.log_level), sigterm_raises():
            return args.func(args)
    except DaskfleetError as e:
        if args.debug:
            raise
        print(f"daskfleet: error: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - a bug or an unforeseen failure: one line, then --debug
        if args.debug:
            raise
        print(f"daskfleet: unexpected error: {type(e).__name__}: {e}\n"
              "Run the command again with --debug for the traceback.", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM where a command raises it ("SIGTERM")
        print(f"daskfleet: interrupted ({str(e) or 'SIGINT'})", file=sys.stderr)
        return 143 if str(e) == "SIGTERM" else 130


if __name__ == "__main__":
    sys.exit(main())
