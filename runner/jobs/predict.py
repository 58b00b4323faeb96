"""`daskfleet predict`: batch inference with a saved model on the cluster.

The control machine cuts the input file into shards (label column optional), ships them to the
worker hosts like `submit` does, and the workers predict one shard each; the predictions come
back to the client (one short string per row) and are written to one parquet file, through a
temporary file renamed at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runner.errors import BatchError

if TYPE_CHECKING:
    from distributed import Client

    from runner.cluster import Cluster

Progress = Callable[[str], None]


def predict_on_cluster(cluster: Cluster, model_path: Path, data_path: Path, out_path: Path,
                       progress: Progress = print, *, text_column: str = "text",
                       label_column: str = "label") -> dict:
    """Predict every row of ``data_path`` on ``cluster``; write ``out_path`` (parquet)."""
    from runner.batch.corpus import prepare_prediction_input
    from runner.batch.model import load_model
    from runner.jobs.ship import remote_dir, ship
    from runner.jobs.submit import datasets_cache

    model = load_model(model_path)  # a bad model file fails before the cluster is touched
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
    return predict_shards(client, model, paths, out_path, progress)


def predict_shards(client: Client, model: dict, shard_paths: Sequence[str], out_path: Path,
                   progress: Progress = print) -> dict:
    """The core: map ``predict_shard`` over shards (paths as the workers see them), gather the
    predictions in input-row order and write them to ``out_path``."""
    import pandas as pd
    from distributed import wait

    from runner.batch.model import predict_shard

    out_path = Path(out_path)
    t = time.monotonic()
    model_f = client.scatter(model, broadcast=True)
    futures = client.map(predict_shard, list(shard_paths), model=model_f, pure=False)
    wait(futures)
    for path, f in zip(shard_paths, futures, strict=True):
        if f.status != "finished":
            exc = f.exception() if f.status == "error" else f.status
            raise BatchError(f"predict failed on shard {path}: {type(exc).__name__}: {exc}")
    frames = client.gather(futures)
    df = pd.concat(frames, ignore_index=True).sort_values("row", kind="stable", ignore_index=True)
    if df["label"].isna().all():
        df = df.drop(columns=["label"])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, out_path)
    except OSError as e:
        raise BatchError(f"{out_path}: cannot write the predictions: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    summary = {"rows": len(df), "out": str(out_path), "seconds": round(time.monotonic() - t, 3)}
    if "label" in df.columns:
        known = df["label"].notna()
        summary["accuracy"] = float((df.loc[known, "label"] == df.loc[known, "prediction"]).mean())
    progress(f"predict: {len(df):,} rows from {len(shard_paths)} shards -> {out_path} "
             f"({summary['seconds']:.1f}s)")
    return summary
