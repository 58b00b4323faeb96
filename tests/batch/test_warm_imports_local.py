"""The ephemeral cluster's warm imports (runner/ephemeral/warm_imports.py), on a LocalCluster of
worker processes: registered once, the plugin imports the tasks' modules on every worker there,
and on a worker that joins afterwards, before it runs a task. (A worker that joins later on a
real ephemeral cluster is one replaced mid-run; without the plugin, it would import them from
its threads on its first tasks, the race that tests/unit/test_worker_imports.py runs.)"""

from __future__ import annotations

import subprocess
import sys

import cloudpickle
from distributed import Client, LocalCluster

from runner.ephemeral.warm_imports import MODULE, WarmImports


def _imported() -> bool:
    return MODULE in sys.modules


def test_every_worker_imports_the_task_modules_also_one_that_joins_later():
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                      worker_dashboard_address=None) as cluster, Client(cluster) as client:
        first = set(client.run(_imported))
        assert client.run(_imported) == dict.fromkeys(first, False)  # nothing imported yet
        client.register_plugin(WarmImports())
        assert client.run(_imported) == dict.fromkeys(first, True)
        cluster.scale(2)
        client.wait_for_workers(2, timeout=60)
        seen = client.run(_imported)
        assert len(seen) == 2 and all(seen.values()), seen


UNPICKLE_WITHOUT_RUNNER = """
import pickle, sys
class NoRunner:
    def find_spec(self, name, path=None, target=None):
        if name == "runner" or name.startswith("runner."):
            raise ImportError(f"{name}: not on this worker")
sys.meta_path.insert(0, NoRunner())
plugin = pickle.loads(sys.stdin.buffer.read())
print(type(plugin).__name__, plugin.name)
"""


def test_the_plugin_travels_by_value_for_workers_without_the_projects_code():
    """A new worker unpickles its plugins before the project's upload is on its path: the
    plugin must unpickle where `runner` cannot be imported."""
    out = subprocess.run([sys.executable, "-c", UNPICKLE_WITHOUT_RUNNER],
                         input=cloudpickle.dumps(WarmImports()), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()[-1500:]
    assert out.stdout.decode().split() == ["WarmImports", "daskfleet-warm-imports"]
