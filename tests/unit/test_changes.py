"""What `up` does to the processes, decided as data: start what is missing, replace what
differs (and say why), leave the rest alone."""

from __future__ import annotations

from dataclasses import replace

from runner.cluster import changes
from runner.cluster.hosts import Host
from runner.cluster.process_settings import DaskSettings, ProcStatus
from runner.cluster.processes import RemoteProcess

SCHED = Host("lab1", "198.18.0.11", "scheduler")
W2, W3 = Host("lab2", "198.18.0.12", "worker"), Host("lab3", "198.18.0.13", "worker")
SETTINGS = DaskSettings(cluster="lab")
ENV = {"lab1": "e1", "lab2": "e1", "lab3": "e1"}


def procs(settings: DaskSettings = SETTINGS, per_host: int = 1) -> list[RemoteProcess]:
    return [RemoteProcess(SCHED, "scheduler", SCHED, settings),
            RemoteProcess(W2, "worker", SCHED, settings, per_host=per_host),
            RemoteProcess(W3, "worker", SCHED, settings, per_host=per_host)]


def running(p: RemoteProcess, **kw) -> ProcStatus:
    """What a process started as ``p`` reports: its spec digest and unchanged node files."""
    base = ProcStatus("running", 100, "e1", p.memory_limit if p.kind == "worker" else None,
                      p.spec_digest, "f1", "f1")
    return replace(base, **kw)


def test_an_unchanged_cluster_needs_nothing():
    ps = procs()
    assert changes.plan(ps, {p: running(p) for p in ps}, ENV) == []


def test_a_dead_process_is_started_and_an_unreachable_one_left_to_the_caller():
    ps = procs()
    observed = {ps[0]: running(ps[0]), ps[1]: ProcStatus("dead"),
                ps[2]: ProcStatus("unreachable")}
    assert [(c.where, c.action) for c in changes.plan(ps, observed, ENV)] == [
        ("lab2-w0@lab2", "start")]


def test_a_thread_count_change_replaces_the_workers_only():
    old, new = procs(), procs(replace(SETTINGS, threads_per_worker=2))
    observed = {n: running(o) for o, n in zip(old, new, strict=True)}
    todo = changes.plan(new, observed, ENV)
    assert [(c.where, c.action) for c in todo] == [("lab2-w0@lab2", "restart"),
                                                   ("lab3-w0@lab3", "restart")]
    assert all("settings changed" in c.reasons[0] for c in todo)


def test_a_scheduler_port_change_replaces_the_scheduler_and_every_worker():
    old, new = procs(), procs(replace(SETTINGS, scheduler_port=8796))
    observed = {n: running(o) for o, n in zip(old, new, strict=True)}
    assert [c.where for c in changes.plan(new, observed, ENV)] == [
        "scheduler@lab1", "lab2-w0@lab2", "lab3-w0@lab3"]


def test_new_node_files_or_environment_are_reasons_to_restart():
    ps = procs()
    observed = {ps[0]: running(ps[0], files_now="f2"),  # a new certificate or dask config
                ps[1]: running(ps[1], env="e0"),  # another environment
                ps[2]: running(ps[2], spec=None)}  # started by an older daskfleet
    todo = {c.where: c.reasons for c in changes.plan(ps, observed, ENV)}
    assert todo["scheduler@lab1"] == ("node config or certificates changed since it started",)
    assert todo["lab2-w0@lab2"] == ("environment e0 -> e1",)
    assert "started without a recorded spec" in todo["lab3-w0@lab3"][0]


def test_memory_shares_restart_a_worker_whose_share_of_its_host_changed():
    two_per_host = procs(per_host=2)
    # one worker per host ran with the whole host ("auto"); now two share it: too much
    observed = {p: running(p, memory_limit="auto") for p in two_per_host}
    todo = changes.plan(two_per_host, observed, ENV)
    assert [c.where for c in todo] == ["lab2-w0@lab2", "lab3-w0@lab3"]
    assert todo[0].reasons == ("memory limit auto -> 0.4750",)
    # back to one per host: each gets its host again (rolled: its data moves to the other)
    one = procs()
    todo = changes.plan(one, {p: running(p, memory_limit="0.4750") for p in one}, ENV)
    assert [(c.where, c.reasons) for c in todo] == [
        ("lab2-w0@lab2", ("memory limit 0.4750 -> auto",)),
        ("lab3-w0@lab3", ("memory limit 0.4750 -> auto",))]
    # but the cluster's only worker keeps its smaller share: nowhere to move its data
    single = [p for p in one if p.name != "lab3-w0"]
    assert changes.plan(single, {p: running(p, memory_limit="0.4750") for p in single}, ENV) == []
    # a limit in bytes the file changed
    fixed = procs(replace(SETTINGS, memory_limit="2GiB"))
    assert [c.reasons for c in changes.plan(fixed, {p: running(p, memory_limit="1GiB")
                                                    for p in fixed}, ENV)][0] == \
        ("memory limit 1GiB -> 2GiB",)


def test_the_table_says_what_where_and_why():
    ps = procs()
    text = changes.table(changes.plan(ps, {ps[0]: running(ps[0]), ps[1]: ProcStatus("dead"),
                                           ps[2]: running(ps[2], env="e0")}, ENV))
    assert "start    lab2-w0@lab2" in text and "restart  lab3-w0@lab3" in text
    assert "environment e0 -> e1" in text
