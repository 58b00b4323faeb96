"""`daskfleet predict`: batch inference with a saved model on the cluster.

A local input file is cut into shards by the control machine (label column optional) and
shipped to the worker hosts like `submit` does; an input URL (``s3://``, or ``file://`` of a
filesystem the nodes share) is listed and read by the workers themselves, one task per object.
The workers predict one shard or object each. A local output is one parquet file: the
predictions come back one shard at a time, in input order, appended (a row group per shard)
through a temporary file renamed at the end, so the client holds one shard's predictions at a
time whatever the size of the input. An output URL is written by the workers
(``runner.batch.predict_store``): with both sides URLs, nothing of the data passes through the
control machine.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runner.errors import BatchError, ConfigError
from runner.log import Progress, Say

if TYPE_CHECKING:
    from distributed import Client

    from runner.cluster import Cluster
logger = logging.getLogger(__name__)


def predict_on_cluster(cluster: Cluster, model_path: Path, data: str | Path, out: str | Path,
                       progress: Progress | None = None, *, text_column: str = "text",
                       label_column: str = "label", top_k: int = 0, proba: bool = False,
                       storage_options: dict | None = None) -> dict:
    """Predict every row of ``data`` on ``cluster``; write ``out``. ``data`` and ``out`` are
    local paths or URLs (``s3://``, ``file://`` of a filesystem the nodes share): the workers
    read a URL input and write to a URL output themselves (``runner.batch.predict_store``)."""
    from runner.batch.model import load_model
    from runner.batch.store_urls import is_store_url

    model = load_model(model_path)  # a bad model file fails before the cluster is touched
    check_top_k(model, top_k)  # so does a top-k the model cannot give
    client = cluster.client()
    cluster.check_versions()
    if is_store_url(str(data)) or is_store_url(str(out)):
        return predict_in_place(client, model, str(data), str(out), progress,
                                 text_column, label_column, storage_options, cluster,
                                 top_k=top_k, proba=proba)
    if storage_options:
        raise ConfigError("predict: --storage-option is for an s3:// or file:// input or --out; "
                          "both are local paths here")
    paths, holders = _ship_input(cluster, Path(data), progress, text_column, label_column)
    return predict_shards(client, model, paths, Path(out), progress, top_k=top_k, proba=proba,
                          shard_hosts=holders)


# Each shard of a local input goes to this many of the worker hosts (all, when fewer): the
# control machine sends about twice the input whatever the number of hosts, and a prediction
# survives the loss of one host, as a job with the default data.copies does.
INPUT_COPIES = 2


def _ship_input(cluster: Cluster, data_path: Path, progress: Progress | None, text_column: str,
                label_column: str) -> tuple[list[str], list[list[str]] | None]:
    """A local input cut into shards and shipped to INPUT_COPIES of the worker hosts each; the
    shards' paths as the workers see them, and per shard the hosts (Dask addresses) that hold it
    (None: every host holds every shard)."""
    say = Say(progress, logger)
    from runner.batch.predict_input import prepare_prediction_input
    from runner.jobs.ship import remote_dir, ship
    from runner.jobs.submit import datasets_cache

    t = time.monotonic()
    dataset = prepare_prediction_input(data_path, datasets_cache(), text_column=text_column,
                                       label_column=label_column)
    say(f"input {dataset.digest[:12]}: {dataset.rows} rows in {len(dataset.files)} shards "
        f"({time.monotonic() - t:.1f}s)")
    t = time.monotonic()
    hosts = cluster.live_worker_hosts(progress)
    shipped = ship(dataset.dir, dataset.digest, dataset.files, hosts, cluster.ssh(),
                   cluster.spec.name, INPUT_COPIES)
    say(f"input shipped: {shipped.summary()} ({time.monotonic() - t:.1f}s)")
    return ([f"{remote_dir(dataset.digest, cluster.spec.name)}/{f}" for f in dataset.files],
            shipped.dask_holders())


def store_options(url: str, given: dict | None, environ=os.environ) -> dict:
    """``--storage-option`` values for ``url``, completed from the shell's AWS variables as a
    job's ``data.storage_options`` are (they reach the workers as task arguments, in memory)."""
    from types import SimpleNamespace

    from runner.batch.store_load import options_for

    return options_for(SimpleNamespace(path_url=url, storage_options=given or {}), environ)


def predict_in_place(client: Client, model: dict, data: str, out: str,
                     progress: Progress | None,
                     text_column: str = "text", label_column: str = "label",
                     storage_options: dict | None = None, cluster: Cluster | None = None, *,
                     top_k: int = 0, proba: bool = False) -> dict:
    """Predict a URL input on the workers, or write to a URL output from the workers, or both;
    a local side is shipped (input: needs ``cluster``) or streamed back (output) as for local
    files."""
    say = Say(progress, logger)
    from runner.batch import predict_store, store
    from runner.batch.pipeline_tasks import on_holders
    from runner.batch.store_urls import is_store_url
    from runner.dask_workers import joined_workers

    t = time.monotonic()
    workers = sorted(joined_workers(client))
    if not workers:
        raise BatchError("predict: the cluster has no worker; run `daskfleet up`")
    out_url = out if is_store_url(out) else None
    out_opts = store_options(out, storage_options) if out_url else None
    if out_url:  # refused before any prediction: a prefix that holds objects already
        _on_one(client, workers, predict_store.check_output, out_url, out_opts)
    [model_f] = client.scatter([model], broadcast=True, hash=False)
    futures: list = []
    try:
        if is_store_url(data):
            in_opts = store_options(data, storage_options)
            items = _on_one(client, workers, store.list_inputs, data, None, in_opts,
                            predict_store.INPUT)
            say(f"input: {len(items)} object(s), "
                f"{sum(i['size'] for i in items) / 2**20:,.1f} MiB at {data}, read by the "
                "workers")
            futures = [client.submit(predict_store.predict_object, data, item, model_f,
                                     text_column, label_column, in_opts, top_k, proba, out_url,
                                     out_opts, i, pure=False, workers=[workers[i % len(workers)]],
                                     allow_other_workers=True)
                       for i, item in enumerate(items)]
            sources = [f"{data} ({item['path']})" for item in items]
        else:
            shards, holders = _ship_input(cluster, Path(data), progress, text_column,
                                          label_column)
            futures = [client.submit(predict_store.predict_shard_to, path, model_f, top_k, proba,
                                     out_url, out_opts, i, pure=False, **on_holders(holders, i))
                       for i, path in enumerate(shards)]
            sources = shards
        if out_url is None:
            rows, labelled, correct = _collect_into(futures, sources, Path(out),
                                                    output_schema(model, top_k, proba),
                                                    renumber=is_store_url(data))
        else:
            from distributed import wait

            wait(futures)
            _raise_failed(futures, sources)
            counts = client.gather(futures)
            rows = sum(c["rows"] for c in counts)
            labelled = sum(c["labelled"] for c in counts)
            correct = sum(c["correct"] for c in counts)
    finally:
        # a failed or refused run leaves nothing held on the workers either
        client.cancel([model_f, *futures])
    summary = {"rows": rows, "out": out_url or str(out), "seconds": round(time.monotonic() - t, 3)}
    if labelled:
        summary["accuracy"] = correct / labelled
    if top_k or proba:
        from runner.batch.model import score_kind

        summary["scores"] = score_kind(model)
    if out_url:
        manifest = {**summary, "parts": len(futures), "input": str(data),
                    "model": {k: model.get(k) for k in ("job", "daskfleet", "scikit-learn")}}
        _on_one(client, workers, predict_store.write_manifest, out_url, out_opts, manifest)
    say(f"predict: {rows:,} rows from {len(futures)} "
        f"{'objects' if is_store_url(data) else 'shards'} -> {summary['out']} "
        f"({summary['seconds']:.1f}s)")
    return summary


def _on_one(client: Client, workers: list[str], fn, *args):
    """``fn(*args)`` as a task on one worker (the first, or any other), its result; the task's
    result is released at once, whatever happens (a traceback would keep the future alive)."""
    f = client.submit(fn, *args, pure=False, workers=workers[:1], allow_other_workers=True)
    try:
        return f.result()
    finally:
        f.release()


def output_schema(model: dict, top_k: int = 0, proba: bool = False):
    """The output's columns: row, label, prediction, then top_1..top_k with score_1..score_k,
    then a score column per class (``score:<label>``) with ``proba``."""
    import pyarrow as pa

    fields = [("row", pa.int64()), ("label", pa.string()), ("prediction", pa.string())]
    for k in range(1, top_k + 1):
        fields += [(f"top_{k}", pa.string()), (f"score_{k}", pa.float64())]
    if proba:
        fields += [(f"score:{c}", pa.float64()) for c in model["classifier"].classes_]
    return pa.schema(fields)


def check_top_k(model: dict, top_k: int) -> None:
    n = len(model["classifier"].classes_)
    if not 0 <= top_k <= n:
        raise ConfigError(f"predict: --top-k {top_k}: the model has {n} classes; give 1 to {n}.")


def predict_shards(client: Client, model: dict, shard_paths: Sequence[str], out_path: Path,
                   progress: Progress | None = None, *, top_k: int = 0, proba: bool = False,
                   shard_hosts: Sequence[Sequence[str]] | None = None) -> dict:
    """The core: map ``predict_shard`` over shards (paths as the workers see them, in input
    order) and stream the predictions, shard by shard, into ``out_path``; with ``top_k`` and
    ``proba``, the best classes and every class's score too (probabilities when the model has
    them, else decision scores: ``summary["scores"]`` says which)."""
    say = Say(progress, logger)
    from runner.batch.model import score_kind

    check_top_k(model, top_k)
    out_path = Path(out_path)
    t = time.monotonic()
    # one future for the whole model, under a key of its own: scattering the dict itself would
    # put each entry under its name ('job', 'idf', ...), shared by every predict on the cluster
    [model_f] = client.scatter([model], broadcast=True, hash=False)
    try:
        rows, labelled, correct = _predict_into(client, model_f, shard_paths, out_path,
                                                output_schema(model, top_k, proba),
                                                {"top_k": top_k, "proba": proba}, shard_hosts)
    finally:
        # every prediction is in, or the run failed: the workers drop the model either way
        # (the cancel reaches the scheduler asynchronously, a moment after this returns)
        client.cancel([model_f])
    summary = {"rows": rows, "out": str(out_path), "seconds": round(time.monotonic() - t, 3)}
    if labelled:
        summary["accuracy"] = correct / labelled
    if top_k or proba:
        summary["scores"] = score_kind(model)
    say(f"predict: {rows:,} rows from {len(shard_paths)} shards -> {out_path} "
        f"({summary['seconds']:.1f}s)")
    return summary


def _predict_into(client: Client, model_f, shard_paths: Sequence[str], out_path: Path,
                  schema, options: dict,
                  shard_hosts: Sequence[Sequence[str]] | None = None) -> tuple[int, int, int]:
    """Predict every shard with the scattered model; append the predictions, in input order, to
    ``out_path`` through a temporary file. Returns (rows, labelled rows, correct)."""
    from runner.batch.model import predict_shard
    from runner.batch.pipeline_tasks import on_holders

    futures = [client.submit(predict_shard, path, model=model_f, pure=False, **options,
                             **on_holders(shard_hosts, i))
               for i, path in enumerate(shard_paths)]
    return _collect_into(futures, shard_paths, out_path, schema)


def _raise_failed(futures, sources: Sequence[str]) -> None:
    for source, f in zip(sources, futures, strict=True):
        if f.status != "finished":
            exc = f.exception() if f.status == "error" else f.status
            if isinstance(exc, BatchError):
                raise BatchError(f"predict failed on {source}: {exc}")
            raise BatchError(f"predict failed on {source}: {type(exc).__name__}: {exc}")


def _collect_into(futures, sources: Sequence[str], out_path: Path, schema,
                  renumber: bool = False) -> tuple[int, int, int]:
    """The futures' predictions appended, in their order, to ``out_path`` through a temporary
    file. ``row`` numbers the input's rows: a shard's are already; with ``renumber`` (input
    objects, each numbered from 0) they go on from the objects before. Returns (rows, labelled
    rows, correct)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from distributed import wait

    wait(futures)
    _raise_failed(futures, sources)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    rows = labelled = correct = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for f in futures:
                df = f.result().sort_values("row", kind="stable")
                f.release()  # the worker drops it; the client keeps one shard at a time
                if renumber:
                    df["row"] = df["row"] + rows
                known = df["label"].notna()
                rows += len(df)
                labelled += int(known.sum())
                correct += int((df.loc[known, "label"] == df.loc[known, "prediction"]).sum())
                writer.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False))
        if labelled == 0:  # an input without labels: no label column in the output either
            _drop_column(tmp, "label")
        os.replace(tmp, out_path)
    except OSError as e:
        raise BatchError(f"{out_path}: cannot write the predictions: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return rows, labelled, correct


def _drop_column(path: Path, column: str) -> None:
    """Rewrite a parquet file without ``column``, a row group at a time."""
    import pyarrow.parquet as pq

    src = pq.ParquetFile(path)
    keep = [n for n in src.schema_arrow.names if n != column]
    out = path.with_name(path.name + ".drop")
    try:
        with pq.ParquetWriter(out, src.schema_arrow.remove(
                src.schema_arrow.get_field_index(column))) as writer:
            for i in range(src.num_row_groups):
                writer.write_table(src.read_row_group(i, columns=keep))
        os.replace(out, path)
    finally:
        out.unlink(missing_ok=True)
