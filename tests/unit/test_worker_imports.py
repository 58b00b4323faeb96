"""The workers' preload (runner/cluster/worker_imports.py): a worker of several threads must not
import the tasks' modules from its threads at once. Imported from eight threads at once in a
fresh interpreter, the tasks' modules (scikit-learn's and SciPy's under them) raise CPython's
``_DeadlockError`` in one of the threads; after the preload, never."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from test_node_code_covers_tasks import _module_name

from runner.cluster import nanny_wait
from runner.cluster.hosts import Host
from runner.cluster.process_settings import DaskSettings
from runner.cluster.processes import RemoteProcess
from runner.provision.lock import node_modules

RACE = textwrap.dedent("""
    import importlib, sys, threading
    preload = sys.argv[1]
    modules = sys.argv[2:]
    if preload:
        importlib.import_module(preload)
    errors, barrier = [], threading.Barrier(len(modules))
    def load(name):
        barrier.wait()
        try:
            importlib.import_module(name)
        except Exception as e:
            errors.append(f"{name}: {type(e).__name__}: {e}")
    threads = [threading.Thread(target=load, args=(m,)) for m in modules]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print("\\n".join(errors) or "ok")
""")


def _race(preload: str, modules: list[str]) -> str:
    return subprocess.run([sys.executable, "-c", RACE, preload, *modules], capture_output=True,
                          text=True, timeout=120, check=True).stdout.strip()


def _task_modules() -> list[str]:
    tasks = sorted({_module_name(p) for p in node_modules()} - {"runner", "runner.cluster",
                                                               "runner.batch"})
    tasks += ["sklearn.linear_model", "scipy.sparse"]  # what their first tasks unpickle
    assert "runner.batch.train" in tasks and len(tasks) >= 8, tasks
    return tasks


def test_without_the_preload_the_same_race_fails():
    """The race below is real with today's lock (if an upgrade ends it, the preload may go)."""
    seen = []
    for _ in range(4):  # 12 times in 12 when written, on this machine
        seen.append(_race("", _task_modules()[:8]))
        if "_DeadlockError" in seen[-1]:
            return
    raise AssertionError(f"no deadlock in {len(seen)} races: {seen}")


def test_after_the_preload_the_task_modules_import_from_many_threads_at_once():
    tasks = _task_modules()
    for _ in range(2):
        assert _race("runner.cluster.worker_imports", tasks[:8]) == "ok"
        assert _race("runner.cluster.worker_imports", tasks[-8:]) == "ok"


def test_every_worker_imports_them_itself_and_its_fork_server_does_not():
    scheduler = Host("lab1", "198.18.0.11", "scheduler")
    worker = RemoteProcess(Host("lab2", "198.18.0.12", "worker"), "worker", scheduler,
                           DaskSettings(cluster="lab"))
    argv = worker.command()
    assert argv[argv.index("--preload") + 1] == "runner.cluster.worker_imports"
    # the fork server lives as long as its worker: it holds distributed only (57 MB, not 207)
    assert nanny_wait.FORKSERVER_PRELOAD == ["distributed"]
