"""Client side: load a corpus where it lives (``data.path`` an ``s3://`` or ``file://`` URL).

The workers list the objects, read them (one task per object), and deal the rows into
partitions with dask.dataframe's shuffle (peer to peer, worker to worker), so each partition is
a uniform sample of the corpus whatever the order it is stored in. Only the listing's sizes,
the row counts and the task graph pass through the client; not one row of the corpus does.
"""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass, field

from distributed import Client, Future

from runner.batch import store
from runner.batch.corpus_shards import _shard_rows
from runner.errors import BatchError
from runner.log import Say

# The standard AWS variables of the submitting shell, handed to the tasks in memory (never
# written to the run folder) when the job file gives no key of its own.
ENV_OPTIONS = (("key", "AWS_ACCESS_KEY_ID"), ("secret", "AWS_SECRET_ACCESS_KEY"),
               ("token", "AWS_SESSION_TOKEN"), ("endpoint_url", "AWS_ENDPOINT_URL_S3"),
               ("endpoint_url", "AWS_ENDPOINT_URL"), ("region", "AWS_REGION"),
               ("region", "AWS_DEFAULT_REGION"))


@dataclass
class Loaded:
    """The corpus as partitions on the workers (futures of DataFrames text, label)."""

    partitions: list[Future]
    objects: int
    bytes: int
    rows: int
    skipped: list[str] = field(default_factory=list)

    def names(self, url: str) -> list[str]:
        return [f"{url} (partition {i})" for i in range(len(self.partitions))]


def options_for(data, environ=os.environ) -> dict:
    """``data.storage_options``, completed from the standard AWS variables where it is silent."""
    options = dict(data.storage_options or {})
    if data.path_url.startswith("s3://"):
        for key, var in ENV_OPTIONS:
            if key not in options and environ.get(var):
                if key in ("secret", "token") and "key" in (data.storage_options or {}):
                    continue  # never pair the file's key with the shell's secret
                options[key] = environ[var]
    return options


def load(client: Client, data, workers: list[str], seed: int, say: Say) -> Loaded:
    """The corpus of ``data`` (a DataSpec with ``path_url``) as shuffled partitions on the
    workers; raises BatchError naming data.path (unreachable, missing, empty, refused, mixed)."""
    url = data.path_url
    options = options_for(data)
    items = client.submit(store.list_inputs, url, data.format, options, pure=False,
                          workers=workers[:1], allow_other_workers=True).result()
    total = sum(i["size"] for i in items)
    say(f"data: {len(items)} object(s), {total / 2**20:,.1f} MiB at {url}, read by the workers")
    read = [client.submit(store.read_input, url, item, data.text_column, data.label_column,
                          options, data.on_error, pure=False,
                          workers=[workers[j % len(workers)]], allow_other_workers=True)
            for j, item in enumerate(items)]
    frames = [client.submit(operator.getitem, f, 0, pure=False) for f in read]
    summaries = client.gather([client.submit(operator.getitem, f, 1, pure=False) for f in read])
    del read
    rows = sum(s["rows"] for s in summaries)
    chars = sum(s["chars"] for s in summaries)
    skipped = [s["skipped"] for s in summaries if s["skipped"]]
    for reason in skipped:
        say.warning(f"warning: skipped (data.on_error: skip): {reason}")
    if rows == 0:
        raise BatchError(f"data.path {url}: the {len(items)} object(s) hold no rows"
                         + (f" ({len(skipped)} unreadable, skipped)" if skipped else "")
                         + "; point data.path at objects that hold documents")
    fraction = None
    if data.limit is not None and data.limit < rows:
        fraction = data.limit / rows
        chars = int(chars * fraction)
        rows = data.limit
    # at least one partition per worker: every worker reads, and every worker trains
    n_parts = max(len(workers), -(-rows // _shard_rows(data, rows, chars)))
    partitions = _deal(client, frames, n_parts, seed, fraction)
    return Loaded(partitions, len(items), total, rows, skipped)


def _deal(client: Client, frames: list[Future], n_parts: int, seed: int,
          fraction: float | None) -> list[Future]:
    """The rows of ``frames`` dealt into ``n_parts`` partitions by a hash of their text (a
    dask.dataframe shuffle on the workers); the futures in partition order."""
    import dask.dataframe as dd
    import pandas as pd

    meta = pd.DataFrame({"text": pd.Series([], dtype=object), "label": pd.Series([], dtype=object)})
    hashed_meta = meta.assign(_h=pd.Series([], dtype="int64"))
    ddf = dd.from_delayed(frames, meta=meta, verify_meta=False)
    ddf = ddf.map_partitions(store.with_row_hash, seed, meta=hashed_meta)
    if fraction is not None:
        ddf = ddf.map_partitions(store.sample, fraction, meta=hashed_meta)
    ddf = ddf.shuffle("_h", npartitions=n_parts).map_partitions(store.without_hash, meta=meta)
    return client.compute(ddf.to_delayed())
