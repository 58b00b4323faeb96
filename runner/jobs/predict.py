"""`daskfleet predict`: batch inference with a saved model on the cluster.

The control machine cuts the input file into shards (label column optional), ships them to the
worker hosts like `submit` does, and the workers predict one shard each; the predictions come
back one shard at a time, in input order, and are appended to one parquet file (a row group per
shard) through a temporary file renamed at the end: the client holds one shard's predictions at
a time, whatever the size of the input.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runner.errors import BatchError, ConfigError

if TYPE_CHECKING:
    from distributed import Client

    from runner.cluster import Cluster

Progress = Callable[[str], None]


def predict_on_cluster(cluster: Cluster, model_path: Path, data_path: Path, out_path: Path,
                       progress: Progress = print, *, text_column: str = "text",
                       label_column: str = "label", top_k: int = 0, proba: bool = False) -> dict:
    """Predict every row of ``data_path`` on ``cluster``; write ``out_path`` (parquet)."""
    from runner.batch.corpus import prepare_prediction_input
    from runner.batch.model import load_model
    from runner.jobs.ship import remote_dir, ship
    from runner.jobs.submit import datasets_cache

    model = load_model(model_path)  # a bad model file fails before the cluster is touched
    check_top_k(model, top_k)  # so does a top-k the model cannot give
    client = cluster.client()
    cluster.check_versions()
    t = time.monotonic()
    dataset = prepare_prediction_input(data_path, datasets_cache(), text_column=text_column,
                                       label_column=label_column)
    progress(f"input {dataset.digest[:12]}: {dataset.rows} rows in {len(dataset.files)} shards "
             f"({time.monotonic() - t:.1f}s)")
    t = time.monotonic()
    sent = ship(dataset.dir, dataset.digest, cluster.live_worker_hosts(progress), cluster.ssh())
    progress(f"input shipped to {sum(sent.values())} host(s), already on "
             f"{len(sent) - sum(sent.values())} ({time.monotonic() - t:.1f}s)")
    paths = [f"{remote_dir(dataset.digest)}/{f}" for f in dataset.files]
    return predict_shards(client, model, paths, out_path, progress, top_k=top_k, proba=proba)


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
                   progress: Progress = print, *, top_k: int = 0, proba: bool = False) -> dict:
    """The core: map ``predict_shard`` over shards (paths as the workers see them, in input
    order) and stream the predictions, shard by shard, into ``out_path``; with ``top_k`` and
    ``proba``, the best classes and every class's score too (probabilities when the model has
    them, else decision scores: ``summary["scores"]`` says which)."""
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
                                                {"top_k": top_k, "proba": proba})
    finally:
        # every prediction is in, or the run failed: the workers drop the model either way
        # (the cancel reaches the scheduler asynchronously, a moment after this returns)
        client.cancel([model_f])
    summary = {"rows": rows, "out": str(out_path), "seconds": round(time.monotonic() - t, 3)}
    if labelled:
        summary["accuracy"] = correct / labelled
    if top_k or proba:
        summary["scores"] = score_kind(model)
    progress(f"predict: {rows:,} rows from {len(shard_paths)} shards -> {out_path} "
             f"({summary['seconds']:.1f}s)")
    return summary


def _predict_into(client: Client, model_f, shard_paths: Sequence[str], out_path: Path,
                  schema, options: dict) -> tuple[int, int, int]:
    """Predict every shard with the scattered model; append the predictions, in input order, to
    ``out_path`` through a temporary file. Returns (rows, labelled rows, correct)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from distributed import wait

    from runner.batch.model import predict_shard

    futures = client.map(predict_shard, list(shard_paths), model=model_f, pure=False, **options)
    wait(futures)
    for path, f in zip(shard_paths, futures, strict=True):
        if f.status != "finished":
            exc = f.exception() if f.status == "error" else f.status
            raise BatchError(f"predict failed on shard {path}: {type(exc).__name__}: {exc}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    rows = labelled = correct = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for f in futures:
                df = f.result().sort_values("row", kind="stable")
                f.release()  # the worker drops it; the client keeps one shard at a time
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
