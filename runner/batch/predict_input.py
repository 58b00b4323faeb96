"""Control side: the input file of `daskfleet predict` as parquet shards of contiguous rows
(with each row's number), in the same digest-named cache folders as a training corpus.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from runner.batch.corpus_readers import _as_str, _iter_file_chunks
from runner.batch.corpus_shards import (
    FORMAT_VERSION,
    Dataset,
    _digest,
    _existing,
    _publish,
    _sha256_file,
)
from runner.errors import BatchError

PREDICT_SCHEMA = pa.schema([("row", pa.int64()), ("text", pa.string()), ("label", pa.string())])


def prepare_prediction_input(path: str | Path, cache_dir: str | Path, *, text_column: str = "text",
                             label_column: str = "label", shard_rows: int = 20000) -> Dataset:
    """Shards for batch inference: columns row (the input row number), text, label (None when the
    file has no label column). Contiguous rows per shard; same caching as prepare_dataset."""
    from runner.batch.sources import infer_format

    path = Path(path).resolve()
    if not path.is_file():
        raise BatchError(f"{path}: data file not found")
    fmt = infer_format(path)
    if fmt == "text-dirs":
        raise BatchError(f"{path}: predict reads parquet, csv or jsonl files")
    meta = {"version": FORMAT_VERSION + "-predict", "format": fmt,
            "inputs": [[str(path), _sha256_file(path)]], "text_column": text_column,
            "label_column": label_column, "shard_rows": shard_rows}
    digest = _digest(meta)
    meta["digest"] = digest
    cache_dir = Path(cache_dir).resolve()
    folder = cache_dir / digest
    found = _existing(folder)
    if found is not None:
        return found
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{digest}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        names: list[str] = []
        counts: list[int] = []
        buffer: list[tuple[int, str | None, str | None]] = []
        row = 0

        def flush():
            name = f"part-{len(names):05d}.parquet"
            pq.write_table(pa.table({"row": [r[0] for r in buffer], "text": [r[1] for r in buffer],
                                     "label": [r[2] for r in buffer]}, schema=PREDICT_SCHEMA),
                           tmp / name)
            names.append(name)
            counts.append(len(buffer))
            buffer.clear()

        hint = ("Name the columns with `daskfleet predict --text-column NAME` (and "
                "--label-column, optional).")
        for chunk in _iter_file_chunks(path, fmt, text_column, label_column, label_optional=True,
                                       columns_hint=hint):
            for text, label in zip(chunk["text"].tolist(), chunk["label"].tolist(), strict=True):
                buffer.append((row, _as_str(text), _as_str(label)))
                row += 1
                if len(buffer) >= shard_rows:
                    flush()
        if buffer or not names:
            flush()
        if row == 0:
            raise BatchError(f"{path}: no rows to predict")
        manifest = {**meta, "rows": row, "files": [
            {"name": n, "rows": c, "sha256": _sha256_file(tmp / n)}
            for n, c in zip(names, counts, strict=True)]}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        theirs = _publish(tmp, folder)
        if theirs is not None:
            return theirs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Dataset(folder, tuple(names), row, digest)
