"""The ephemeral cluster's form of the workers' preload (runner/cluster/worker_imports.py says
why it exists): a worker plugin that imports the tasks' modules in one thread when it is set up,
on every worker present when it is registered and on every worker that joins later (a worker
replaced mid-run, a spot worker that came back), before that worker takes a task. A long-lived
cluster passes `--preload` instead; an ephemeral one starts its workers from a public image
whose command line daskfleet does not own.

Registered once the environment check has passed (runner/ephemeral/cluster.py), after the
project's upload: a worker that joins later gets the plugins in the order they were registered,
so the upload is on its path before this imports from it. Pickled by value: a new worker
unpickles its plugins before the upload is set up."""

from __future__ import annotations

import sys

import cloudpickle
from distributed.diagnostics.plugin import WorkerPlugin

MODULE = "runner.cluster.worker_imports"


class WarmImports(WorkerPlugin):
    name = "daskfleet-warm-imports"

    def setup(self, worker) -> None:
        import importlib

        importlib.import_module(MODULE)


cloudpickle.register_pickle_by_value(sys.modules[__name__])
