"""`daskfleet demo`: lab up -> up -> submit -> down -> lab down, cleaning up on failure too."""

from __future__ import annotations

from pathlib import Path

from runner.errors import DaskfleetError


def demo(hosts: int, job: Path, cluster_file: Path, progress=print, runs_dir: Path = Path("runs")):
    from runner.cluster import Cluster
    from runner.lab import Lab
    from runner.submit import submit

    lab = Lab()
    step = "lab up"
    cluster = None
    try:
        progress(f"demo 1/5: lab up --hosts {hosts}")
        lab.up(hosts, progress=progress)
        step = "up"
        progress(f"demo 2/5: up -c {cluster_file}")
        cluster = Cluster.from_file(cluster_file)
        summary = cluster.up(progress=progress)
        progress(summary.line())
        step = "submit"
        progress(f"demo 3/5: submit {job}")
        result = submit(cluster, job, runs_dir=runs_dir, progress=progress)
        m = result.metrics
        step = "down"
        progress("demo 4/5: down --destroy")
        cluster.down(destroy=True, progress=progress)
        cluster = None
    except DaskfleetError as e:
        raise DaskfleetError(f"demo: step `{step}` failed: {e}") from e
    finally:
        if cluster is not None:
            try:
                cluster.down(destroy=True, progress=progress)
            except DaskfleetError as e:
                progress(f"demo: cleanup `down` failed too: {e}")
        progress("demo 5/5: lab down")
        lab.down(progress=progress)
    progress(f"accuracy={m['accuracy']:.4f} macro_f1={m['macro_f1']:.4f} "
             f"(majority class {m.get('majority_rate', 0):.4f}) n_train={m['n_train']} "
             f"n_test={m['n_test']} classes={m['n_classes']} workers={m['n_workers']}")
    progress(f"run folder: {result.run_dir}")
    return result
