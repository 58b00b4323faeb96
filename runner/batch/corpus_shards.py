"""Control side: the shard cache. A corpus's rows dealt into parquet shards in a seeded random
order, the folder's manifest, and its publication under the digest that names it (or the reuse
of a folder already there); also the rule for the rows per shard.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from runner.errors import BatchError

FORMAT_VERSION = "daskfleet-shards-4"  # bump when the shard layout, the parsing or the sampling changes
SCHEMA = pa.schema([("text", pa.string()), ("label", pa.string())])
MAX_SHARD_ROWS = 20_000  # rows per shard when the job sets partition_mb and not shard_rows


@dataclass(frozen=True)
class Dataset:
    """Shards of one corpus on the control machine: ``dir / name`` for each name in ``files``."""

    dir: Path
    files: tuple[str, ...]
    rows: int
    digest: str
    skipped: tuple[str, ...] = ()  # input files left out (data.on_error: skip)
    notes: tuple[str, ...] = ()  # what the reading changed or doubts, for the run's log

    @property
    def paths(self) -> list[Path]:
        return [self.dir / f for f in self.files]


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _digest(parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _shard_rows(data, n_docs: int, n_chars: int) -> int:
    """Rows per shard: ``shard_rows`` when the job sets it; else at most ``partition_mb`` of text
    and at most MAX_SHARD_ROWS rows (so a small corpus of short documents is still cut into
    several partitions that the workers can share)."""
    if data.shard_rows is not None:
        return data.shard_rows
    n_shards = max(1, -(-n_chars // max(1, int(data.partition_mb * 2**20))),
                   -(-n_docs // MAX_SHARD_ROWS))
    return max(1, -(-n_docs // n_shards))


BUCKET_SCHEMA = pa.schema([("shard", pa.int32()), ("text", pa.string()), ("label", pa.string())])


class _ShardWriter:
    """Deals rows to parquet shards in a seeded random order over the whole input, so every
    shard mixes rows from all of it: an input sorted by label, or with labels repeating in a
    period (a round-robin deal of rows labelled ``i % 4`` over 12 shards gave each shard one
    label), still gives shards of every class, in their shares of the whole.

    Rows go out in blocks: each block gives every shard the same number of rows
    (``block_rows``), in a random order of the block's slots, so every shard takes rows from
    every stretch of the input and the shards fill evenly (sizes as a round-robin deal gives).
    At most ``max_open`` files are written at once: with more shards than that, rows first go to
    ``max_open`` bucket files of several shards each (tagged with their shard), and each bucket
    is then split into its shards, one bucket in memory at a time (the corpus is written twice;
    a corpus of any size stays far below the open-file limit)."""

    max_open = 128
    block_rows = 64  # rows per shard in one block of the deal

    def __init__(self, folder: Path, n_shards: int, shard_rows: int, n_docs: int,
                 seed: int = 0):
        self.folder = folder
        self.names = [f"part-{i:05d}.parquet" for i in range(n_shards)]
        self.rows = [0] * n_shards
        self.i = 0
        self.rng = np.random.default_rng([seed, 20261202])
        q, r = divmod(n_docs, n_shards)  # every shard's rows: an even split
        self.left = np.full(n_shards, q, dtype=np.int64)
        self.left[:r] += 1
        self.slots: list[int] = []  # the current block's shards, in dealing order (popped)
        self.per_file = -(-n_shards // self.max_open)  # shards per file written at once
        n_files = -(-n_shards // self.per_file)
        self.files = [folder / (self.names[k] if self.per_file == 1 else f".bucket-{k:05d}.parquet")
                      for k in range(n_files)]
        self.flush_rows = max(256, shard_rows // min(n_shards, self.max_open))
        self.buffers: list[list[tuple]] = [[] for _ in range(n_files)]
        self.writers: list[pq.ParquetWriter | None] = [None] * n_files

    def _next_block(self) -> None:
        if not self.left.any():
            raise BatchError(f"the input changed while it was read (more than {sum(self.rows)} "
                             "rows)")
        take = np.minimum(self.left, self.block_rows)
        self.left -= take
        slots = np.repeat(np.arange(len(self.names)), take)
        self.slots = self.rng.permutation(slots)[::-1].tolist()

    def add(self, text: str | None, label: str | None) -> None:
        if not self.slots:
            self._next_block()
        k = self.slots.pop()
        self.i += 1
        self.rows[k] += 1
        f = k // self.per_file
        self.buffers[f].append((k, text, label))
        if len(self.buffers[f]) >= self.flush_rows:
            self._flush(f)

    def open_files(self) -> int:
        return sum(w is not None for w in self.writers)

    def _flush(self, f: int) -> None:
        rows = self.buffers[f]
        bucket = self.per_file > 1
        writer = self.writers[f]
        if writer is None:
            writer = self.writers[f] = pq.ParquetWriter(self.files[f],
                                                        BUCKET_SCHEMA if bucket else SCHEMA)
        columns = {"text": [r[1] for r in rows], "label": [r[2] for r in rows]}
        if bucket:
            columns = {"shard": [r[0] for r in rows], **columns}
        writer.write_table(pa.table(columns, schema=BUCKET_SCHEMA if bucket else SCHEMA))
        self.buffers[f] = []

    def close(self) -> None:
        for f in range(len(self.files)):
            # the last rows; or, for a shard that got none, its (empty) file: every shard exists
            if self.buffers[f] or (self.writers[f] is None and self.per_file == 1):
                self._flush(f)
            writer = self.writers[f]
            if writer is not None:
                writer.close()
                self.writers[f] = None
        if self.per_file > 1:
            for f, path in enumerate(self.files):
                self._split_bucket(f, path)

    def _split_bucket(self, f: int, path: Path) -> None:
        """The bucket's rows written to its shards (one bucket in memory), then removed."""
        import pyarrow.compute as pc

        table = pq.read_table(path) if path.exists() else BUCKET_SCHEMA.empty_table()
        first = f * self.per_file
        for k in range(first, min(first + self.per_file, len(self.names))):
            rows = table.filter(pc.equal(table["shard"], k)).select(["text", "label"])
            pq.write_table(rows.cast(SCHEMA), self.folder / self.names[k])
        path.unlink(missing_ok=True)


def _write_shards(documents, n_docs: int, shard_rows: int, folder: Path, meta: dict) -> Dataset:
    n_shards = max(1, -(-n_docs // shard_rows))
    writer = _ShardWriter(folder, n_shards, shard_rows, n_docs,
                          meta.get("deal_seed", int(meta["digest"][:8], 16)))
    try:
        for text, label in documents:
            writer.add(text, label)
    finally:
        writer.close()
    if writer.i != n_docs:  # the input changed between the counting pass and this one
        raise BatchError(f"the input changed while it was read ({n_docs} then {writer.i} rows)")
    manifest = {
        **meta,
        "rows": writer.i,
        "files": [
            {"name": n, "rows": r, "sha256": _sha256_file(folder / n)}
            for n, r in zip(writer.names, writer.rows, strict=True)
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return Dataset(folder, tuple(writer.names), writer.i, meta["digest"],
                   tuple(meta.get("skipped", ())), tuple(meta.get("notes", ())))


def _publish(tmp: Path, folder: Path) -> Dataset | None:
    """Rename the finished temp folder into place. None when it landed; the other copy when
    someone else finished the same digest first (then theirs is used)."""
    try:
        tmp.rename(folder)
        return None
    except OSError:
        found = _existing(folder)
        if found is None:
            raise
        return found


def _existing(folder: Path) -> Dataset | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        files = tuple(f["name"] for f in manifest["files"])
        if not all((folder / f).is_file() for f in files):
            return None
        return Dataset(folder, files, int(manifest["rows"]), manifest["digest"],
                       tuple(manifest.get("skipped", ())), tuple(manifest.get("notes", ())))
    except (OSError, ValueError, KeyError, TypeError):
        return None
