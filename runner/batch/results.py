"""A copy of each run folder where the team's results live (the job file's ``results``): an
object store (``s3://``) or a filesystem every node mounts (``file://``), under
``<results.path>/<run-id>/``. Done by the job's driver (the control machine, or the scheduler's
host for a detached run), with pyarrow's filesystems, as the workers read data in place.

The location is tried before any training (the run's status.json written there as "running"),
so a typo in a bucket name costs seconds, not a training run. The final ``status.json`` goes
last: its status other than "running" says the copy is whole."""

from __future__ import annotations

import os
from pathlib import Path

from runner.batch import store
from runner.batch.artifacts import STATUS_FILE
from runner.errors import BatchError
from runner.log import Progress

WHERE = "the machine running the job's driver"


def options_for(spec, environ=os.environ) -> dict:
    """``results.storage_options``, completed from the submitting shell's AWS variables."""
    from runner.batch.store_load import options_for as data_options

    return data_options(spec, environ)


def run_url(spec, run_id: str) -> str:
    return f"{spec.path_url}/{run_id}"


def _fs(spec):
    options = options_for(spec)
    fs, root = store.filesystem(spec.path_url, options)
    return fs, root.rstrip("/"), options


def check(spec, status: dict) -> None:
    """Write this run's ``status.json`` ({"status": "running"}) where its copy will go: the
    location is tried before any training (a clear error naming results.path, the endpoint, the
    bucket, the credentials, when it fails), and the store shows the run while it runs (the
    final status.json replaces it; nothing is deleted, so no directory marker is left)."""
    import json

    fs, root, options = _fs(spec)
    run_id = status["run_id"]
    try:
        if spec.path_url.startswith("file://"):
            fs.create_dir(f"{root}/{run_id}", recursive=True)
        with fs.open_output_stream(f"{root}/{run_id}/{STATUS_FILE}") as f:
            f.write(json.dumps({**status, "status": "running"}, indent=2).encode())
    except OSError as e:
        raise store._explain(spec.path_url, options, e, key="results", where=WHERE,
                             verb="write") from e


def upload(run_dir: Path, spec, run_id: str) -> str:
    """Copy every file of ``run_dir`` to ``<results.path>/<run-id>/``, status.json last.
    Returns that URL."""
    fs, root, options = _fs(spec)
    files = sorted((p for p in run_dir.rglob("*") if p.is_file()),
                   key=lambda p: p.name == STATUS_FILE)
    try:
        for path in files:
            target = f"{root}/{run_id}/{path.relative_to(run_dir).as_posix()}"
            if spec.path_url.startswith("file://"):
                fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with fs.open_output_stream(target) as out, open(path, "rb") as src:
                while block := src.read(1 << 20):
                    out.write(block)
    except OSError as e:
        raise store._explain(spec.path_url, options, e, key="results", where=WHERE,
                             verb="write") from e
    return run_url(spec, run_id)


def publish(run_dir: Path, status: dict, spec, say: Progress) -> None:
    """After the run folder is final: its copy in the store, and ``results_url`` in its
    status.json (then copied again, last). A failure is said and raised (the run folder stays
    as it is, recorded)."""
    from runner.batch.artifacts import write_json_atomic

    run_id = status["run_id"]
    status["results_url"] = run_url(spec, run_id)
    write_json_atomic(run_dir / STATUS_FILE, status)
    try:
        url = upload(run_dir, spec, run_id)
    except BatchError as e:
        status.pop("results_url")
        status["results_error"] = str(e)
        write_json_atomic(run_dir / STATUS_FILE, status)
        say(f"results: the copy to {run_url(spec, run_id)} failed: {e}; the run is in {run_dir}")
        raise
    say(f"results: run folder copied to {url}/")
