"""`daskfleet demo`: lab up -> up -> submit -> down -> lab down, cleaning up on failure too.

The demo only ever removes what it made: it refuses to start next to a running lab or a cluster
of the same name, and at the end removes its lab, its cluster's state (CA, Terraform folder,
state.json, logs) and its inventory. The run folder (runs/<id>/) is what it leaves, on purpose."""

from __future__ import annotations

import logging
from pathlib import Path

from runner.errors import DaskfleetError
from runner.log import Progress, Say

logger = logging.getLogger(__name__)


def demo(hosts: int, job: Path, cluster_file: Path, progress: Progress | None = None,
         runs_dir: Path = Path("runs")):
    import shutil

    from runner import state
    from runner.cluster import Cluster
    from runner.config import load_cluster
    from runner.jobs.submit import submit
    from runner.lab import Lab

    lab = Lab()
    spec = load_cluster(cluster_file)
    if lab.hosts() or lab.cloud():
        raise DaskfleetError(
            f"demo: a lab is already running ({lab.state_dir}); the demo makes and removes a lab "
            "of its own and never touches one it did not make. Run `daskfleet lab down` first, "
            f"or use that lab with `daskfleet up` and `daskfleet submit`.")
    if state.read(spec.state_dir).get("hosts"):
        raise DaskfleetError(
            f"demo: cluster {spec.name} is recorded as up in {spec.state_dir}; the demo never "
            f"touches a cluster it did not make. Run `daskfleet down -c {cluster_file} --destroy` "
            "first, or use another cluster file.")
    made_state = not spec.state_dir.exists()
    made_inventory = not spec.inventory_path.parent.exists()
    step = "lab up"
    cluster = None
    say = Say(progress, logger)
    try:
        say(f"demo 1/5: lab up --hosts {hosts}")
        lab.up(hosts, progress=progress)
        step = "up"
        say(f"demo 2/5: up -c {cluster_file}")
        cluster = Cluster.from_file(cluster_file)
        summary = cluster.up(progress=progress)
        say(summary.line())
        step = "submit"
        say(f"demo 3/5: submit {job}")
        result = submit(cluster, job, runs_dir=runs_dir, progress=progress)
        m = result.metrics
        step = "down"
        say("demo 4/5: down --destroy")
        cluster.down(destroy=True, progress=progress)
        cluster = None
    except DaskfleetError as e:
        raise DaskfleetError(f"demo: step `{step}` failed: {e}") from e
    finally:
        if cluster is not None:
            try:
                cluster.down(destroy=True, progress=progress)
            except DaskfleetError as e:
                say(f"demo: cleanup `down` failed too: {e}")
        say("demo 5/5: lab down")
        lab.down(progress=progress)
        if made_state:
            shutil.rmtree(spec.state_dir, ignore_errors=True)
        if made_inventory:
            shutil.rmtree(spec.inventory_path.parent, ignore_errors=True)
    say(f"accuracy={m['accuracy']:.4f} macro_f1={m['macro_f1']:.4f} "
             f"(majority class {m.get('majority_rate', 0):.4f}) n_train={m['n_train']} "
             f"n_test={m['n_test']} classes={m['n_classes']} workers={m['n_workers']}")
    say(f"run folder: {result.run_dir}")
    return result
