"""Worker preload (imported on the nodes): the modules the batch's tasks run, imported in one
thread before the worker takes a task.

A worker of several threads imports them on its first tasks, from each thread that unpickles
one, all at once. On packages that import each other in circles (scipy.sparse and its _csr
module, under scikit-learn) CPython's import locks then raise ``_DeadlockError`` in one of the
threads: seen in the e2e test that rolls the workers to two threads under a running job, where
the new worker's first tasks failed. Imported here first, each later import is a lookup.

On a long-lived cluster each worker imports it at its start (``--preload``, cluster/processes.py),
before it joins the scheduler: about 1.1 s of CPU that its first task paid before. (Not in the
nanny's fork server, which lives as long as its worker: it would hold 150 MB more per worker.)
On an ephemeral cluster a worker plugin imports it on every worker, present or joining later,
once the environment check has passed (ephemeral/warm_imports.py). These imports are also the
nodes' entry modules (``runner.provision.lock.node_modules``), which puts their files in the
nodes' project wheel.
"""

from __future__ import annotations

import runner.batch.evaluate  # noqa: F401
import runner.batch.features  # noqa: F401
import runner.batch.model  # noqa: F401
import runner.batch.naive_bayes  # noqa: F401
import runner.batch.parts  # noqa: F401
import runner.batch.predict_store  # noqa: F401
import runner.batch.store  # noqa: F401
import runner.batch.train  # noqa: F401
