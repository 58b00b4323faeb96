"""Control side: turn a job's data source into parquet shards in a local cache folder.

The shards have two string columns, ``text`` and ``label``. Documents are dealt to the shards
round-robin, so each shard is a uniform sample of the stream (an apt Packages index is sorted by
package name, and a shard made only of ``python3-*`` packages would spoil parameter mixing).
At most one shard's worth of rows is buffered, plus the de-duplication set.

The folder is named after a digest of the input bytes and the options that shape the shards, so
the same input gives the same folder and a second run reuses it without writing anything.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import heapq
import io
import itertools
import json
import lzma
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from runner.errors import BatchError

if TYPE_CHECKING:
    from runner.batch.job import JobSpec

APT_LISTS_DIR = Path("/var/lib/apt/lists")
APT_HELPER = "/usr/lib/apt/apt-helper"
FORMAT_VERSION = "daskfleet-shards-4"  # bump when the shard layout, the parsing or the sampling changes
SCHEMA = pa.schema([("text", pa.string()), ("label", pa.string())])
CSV_CHUNK_ROWS = 50_000
MAX_SHARD_ROWS = 20_000  # rows per shard when the job sets partition_mb and not shard_rows
# Section prefixes of the non-main archive areas ("non-free/libs" -> "libs")
AREA_PREFIXES = ("contrib/", "non-free/", "non-free-firmware/", "restricted/", "universe/",
                 "multiverse/")


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


# --------------------------------------------------------------------------- debian packages


def apt_lists_dir() -> Path:
    """Where `data.source: debian-packages` reads the package lists: the machine's apt lists, or
    the folder DASKFLEET_APT_LISTS names (an offline mirror's lists, a fixed copy)."""
    return Path(os.environ.get("DASKFLEET_APT_LISTS") or APT_LISTS_DIR)


def apt_package_lists(lists_dir: Path | None = None) -> list[Path]:
    return sorted(p for p in Path(lists_dir or apt_lists_dir()).glob("*_Packages*")
                  if p.is_file())


@contextlib.contextmanager
def _open_text(path: Path) -> Iterator[Iterator[str]]:
    """Lines of a (possibly compressed) index file, streamed."""
    suffix = path.suffix
    if suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            yield f
    elif suffix == ".xz":
        with lzma.open(path, "rt", encoding="utf-8", errors="replace") as f:
            yield f
    elif path.name.endswith("_Packages"):
        with open(path, encoding="utf-8", errors="replace") as f:
            yield f
    else:  # .lz4, .zst, .bz2, ...: let apt decompress its own files
        if not os.access(APT_HELPER, os.X_OK):
            raise BatchError(f"cannot read {path}: {APT_HELPER} is not available to decompress it")
        proc = subprocess.Popen(
            [APT_HELPER, "cat-file", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None, "both are PIPEs"
        stream = io.TextIOWrapper(proc.stdout, encoding="utf-8", errors="replace")
        try:
            yield stream
            stream.read()  # drain, so the exit status means "whole file read"
        finally:
            stream.close()
            err = proc.stderr.read().decode(errors="replace").strip()
            proc.stderr.close()
            code = proc.wait()
        if code != 0:
            raise BatchError(
                f"cannot read {path}: `{APT_HELPER} cat-file` exited with {code}: {err[-300:]}"
            )


def iter_stanzas(path: Path) -> Iterator[tuple[str, str | None, str | None]]:
    """(package, first line of Description, Section without area prefix) per stanza."""
    package = description = section = None
    with _open_text(path) as lines:
        for line in lines:
            if not line.strip():
                if package is not None:
                    yield package, description, section
                package = description = section = None
                continue
            if line[0] in " \t":
                continue  # continuation line (long Description, Tag, ...)
            key, _, value = line.partition(":")
            if key == "Package":
                package = value.strip()
            elif key == "Description":
                description = value.strip() or None
            elif key == "Section":
                section = value.strip()
                for prefix in AREA_PREFIXES:
                    if section.startswith(prefix):
                        section = section[len(prefix):]
                        break
                section = section or None
        if package is not None:
            yield package, description, section


def _debian_documents(files: list[Path], limit: int | None) -> Iterator[tuple]:
    """De-duplicated (by package name, first seen wins) documents of the apt indexes.

    With ``limit``, a stable pseudo-random sample of that many packages (the smallest hashes of
    the package names), so a small job still sees every section instead of the a-to-c packages.
    """
    keep: set[str] | None = None
    if limit is not None:
        names = {pkg for f in files for pkg, _, _ in iter_stanzas(f)}
        keep = set(heapq.nsmallest(limit, names, key=_name_hash))
    seen: set[str] = set()
    for f in files:
        for pkg, description, section in iter_stanzas(f):
            if pkg in seen or (keep is not None and pkg not in keep):
                continue
            seen.add(pkg)
            yield description, section


def _name_hash(name: str) -> bytes:
    return hashlib.sha1(name.encode()).digest()


# --------------------------------------------------------------------------- files


MAX_HEADER_BYTES = 1 << 20  # a csv header line longer than this is no header
BINARY_MAGIC = {b"PAR1": "a parquet file", b"\x1f\x8b": "a gzip file", b"PK\x03\x04": "a zip file",
                b"\xfd7zXZ": "an xz file", b"BZh": "a bzip2 file", b"\x89PNG": "a PNG image",
                b"%PDF": "a PDF document"}
UNREADABLE_HINT = ("fix or remove the file, or set data.on_error: skip to leave it out")
COLUMNS_HINT = "Set data.text_column and data.label_column in the job file."


def _sniff_text_file(path: Path, fmt: str) -> None:
    """Refuse, before pandas parses it, a csv/jsonl file that is empty, binary, or (csv) has no
    line break in its first MB: each would otherwise give a parser error or a giant header."""
    try:
        with open(path, "rb") as f:
            head = f.read(MAX_HEADER_BYTES + 1)
    except OSError as e:
        raise BatchError(f"{path}: cannot read: {e.strerror or e}; {UNREADABLE_HINT}") from e
    if not head.strip():
        raise BatchError(f"{path}: the file is empty; {UNREADABLE_HINT}")
    kind = next((what for magic, what in BINARY_MAGIC.items() if head.startswith(magic)), None)
    if kind is not None or b"\x00" in head[:8192]:
        raise BatchError(f"{path}: not a {fmt} text file: it is {kind or 'binary (NUL bytes)'}; "
                         f"give data.path a {fmt} file (or set data.format), or "
                         f"{UNREADABLE_HINT.removeprefix('fix or remove the file, or ')}")
    if fmt == "csv" and len(head) > MAX_HEADER_BYTES and b"\n" not in head and b"\r" not in head:
        raise BatchError(f"{path}: no line break in the first {MAX_HEADER_BYTES >> 20} MB: a csv "
                         "file needs a header line (e.g. text,label) and one row per line; "
                         f"{UNREADABLE_HINT}")


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else name[:width] + f"... ({len(name):,} characters)"


def _iter_file_chunks(path: Path, fmt: str, text_col: str, label_col: str,
                      label_optional: bool = False, columns_hint: str = COLUMNS_HINT):
    """pandas DataFrames with columns text, label (strings or None), in file order.

    With ``label_optional`` a file without the label column gives label None on every row.
    ``columns_hint`` says how to name other columns (job keys; predict's flags).
    """
    import pandas as pd

    def columns_of(df_columns) -> list[str]:
        names = list(map(str, df_columns))
        missing = [c for c in (text_col, label_col) if c not in names
                   and not (label_optional and c == label_col)]
        if missing:
            shown = ", ".join(_short(n) for n in names[:20]) + (", ..." if len(names) > 20 else "")
            raise BatchError(
                f"{path}: column(s) {', '.join(map(repr, missing))} not found; the file has "
                f"columns: {shown or '(none)'}. {columns_hint}"
            )
        return [c for c in (text_col, label_col) if c in names]

    def normal(df):
        df = df.rename(columns={text_col: "text", label_col: "label"})
        if "label" not in df.columns:
            df = df.assign(label=None)
        return df[["text", "label"]]

    if fmt == "parquet":
        try:
            pf = pq.ParquetFile(path)
            wanted = columns_of(pf.schema_arrow.names)
            # one row group at a time: a reader over the whole file keeps buffers that grow
            # with it (Arrow's pool peaked at 103 MB for a 58 MB file of 29 groups, 15 MB this
            # way), so memory is bounded by the file's largest row group, not its length
            for group in range(pf.num_row_groups):
                for batch in pf.iter_batches(batch_size=CSV_CHUNK_ROWS, columns=wanted,
                                             row_groups=[group]):
                    yield normal(batch.to_pandas())
        except (pa.ArrowException, OSError) as e:
            raise BatchError(f"{path}: cannot read as parquet (damaged, truncated or not "
                             f"parquet): {str(e).strip().rstrip('.')}; {UNREADABLE_HINT}") from e
        return
    _sniff_text_file(path, fmt)
    try:
        if fmt == "csv":
            reader = pd.read_csv(path, chunksize=CSV_CHUNK_ROWS, dtype=str,
                                 keep_default_na=False, na_values=[""],
                                 encoding="utf-8", encoding_errors="replace")
        else:
            reader = pd.read_json(path, lines=True, chunksize=CSV_CHUNK_ROWS, dtype=False,
                                  encoding="utf-8", encoding_errors="replace")
        with reader:
            for chunk in reader:
                yield normal(chunk[columns_of(chunk.columns)])
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise BatchError(f"{path}: cannot read as {fmt}: {str(e).strip().rstrip('.')}; "
                         f"{UNREADABLE_HINT}") from e


def _as_str(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        if value != value:  # NaN: a missing value
            return None
        if value.is_integer():  # 3.0 (an int column with gaps, as pandas reads it) -> "3"
            return str(int(value))
    try:
        import pandas as pd

        if value is pd.NA:
            return None
    except ImportError:  # pragma: no cover
        pass
    return str(value)


def _text_dir_document(path: Path, root: Path) -> tuple[str | None, str | None]:
    """One document per file; the label is the name of its top folder under ``root``."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise BatchError(f"{path}: cannot read: {e}") from e
    parts = path.relative_to(root).parts
    return text, (parts[0] if len(parts) > 1 else None)


def _one_file_documents(path: Path, fmt: str, text_col: str, label_col: str, root: Path):
    if fmt == "text-dirs":
        yield _text_dir_document(path, root)
        return
    for chunk in _iter_file_chunks(path, fmt, text_col, label_col):
        for text, label in zip(chunk["text"].tolist(), chunk["label"].tolist(), strict=True):
            yield _as_str(text), _as_str(label)


def _file_documents(files: list[Path], fmt: str, text_col: str, label_col: str,
                    limit: int | None, root: Path, skip: frozenset[Path] = frozenset(),
                    skipped: list[Path] | None = None):
    """Documents of every file in order. With ``skipped`` (a list), a file that cannot be read
    is appended to it and contributes no document (``on_error: skip``); without, it raises.
    Files in ``skip`` (found bad by an earlier pass) are left out.

    With ``limit``, a stable pseudo-random sample of that many documents (the smallest hashes
    of their file and position, in file order), never the first ones: a corpus read label by
    label (text-dirs, files sorted by label) still gives every label. It reads the files twice
    and holds ``limit`` positions, never the documents."""
    if limit is None:
        yield from _every_file_document(files, fmt, text_col, label_col, root, skip, skipped)
        return

    def positions():
        for path, i, _ in _every_file_document(files, fmt, text_col, label_col, root, skip,
                                               skipped, numbered=True):
            yield _name_hash(f"{path.relative_to(root) if path.is_relative_to(root) else path}"
                             f"\0{i}"), str(path), i

    keep = {(p, i) for _, p, i in heapq.nsmallest(limit, positions())}
    again = skip | frozenset(skipped or ())  # files found bad in the first pass stay out
    for path, i, doc in _every_file_document(files, fmt, text_col, label_col, root, again,
                                             None, numbered=True):
        if (str(path), i) in keep:
            yield doc


def _every_file_document(files: list[Path], fmt: str, text_col: str, label_col: str,
                         root: Path, skip: frozenset[Path], skipped: list[Path] | None,
                         numbered: bool = False):
    for path in files:
        if path in skip:
            continue
        if skipped is not None:  # read the whole file first: a bad one contributes nothing
            try:
                docs = list(_one_file_documents(path, fmt, text_col, label_col, root))
            except BatchError:
                skipped.append(path)
                continue
        else:
            docs = _one_file_documents(path, fmt, text_col, label_col, root)
        for i, doc in enumerate(docs):
            yield (path, i, doc) if numbered else doc


# --------------------------------------------------------------------------- shards


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digest(parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


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


class _Count:
    """What the counting pass learns about a corpus without keeping its rows."""

    def __init__(self) -> None:
        self.docs = self.chars = self.labelled = self.replaced = 0
        self.labels: list[str] = []  # the first two distinct labels of rows with a text

    def add(self, text: str | None, label: str | None) -> None:
        self.docs += 1
        self.chars += len(text) if text else 0
        if _present(text) and _present(label):
            self.labelled += 1
            if len(self.labels) < 2 and label.strip() not in self.labels:
                self.labels.append(label.strip())
        if "\ufffd" in (text or "") or "\ufffd" in (label or ""):
            self.replaced += 1

    def check(self, data, job_name: str, n_skipped: int, text_dirs: bool) -> list[str]:
        """Refuse a corpus no classifier can learn from, naming where it came from and the
        key to check; return notes (warnings) for the run's log."""
        where = (f"{data.url or data.path} (data.path)" if data.source == "files"
                 else f"the {data.source} source of job {job_name!r}")
        label_key = "label folders" if text_dirs else f"data.label_column ({data.label_column!r})"
        if self.docs == 0:
            if n_skipped:
                raise BatchError(f"{where}: has no documents ({n_skipped} unreadable file(s) "
                                 "skipped); fix those files or point data.path at readable ones")
            raise BatchError(f"{where}: has no documents (no rows under the header); point "
                             "data.path at files that hold rows")
        if self.labelled == 0:
            raise BatchError(
                f"{where}: none of its {self.docs:,} rows has both a text and a label (all "
                f"empty or NaN); check data.text_column ({data.text_column!r}) and {label_key}")
        if len(self.labels) < 2:
            raise BatchError(
                f"{where}: one class only ({self.labels[0]!r} on all {self.labelled:,} labelled "
                f"rows of {label_key}); a classifier needs at least two labels: check "
                f"{label_key.split(' (')[0]} or add rows of other classes")
        notes = []
        if self.replaced:
            notes.append(f"{where}: {self.replaced:,} document(s) held bytes that are not UTF-8, "
                         "read as U+FFFD; convert the file(s) to UTF-8 (e.g. iconv -f latin1 -t "
                         "utf-8) to keep those characters")
        return notes


def _present(value: object) -> TypeGuard[str]:
    """A text or label the workers keep (runner.batch.parts drops the others)."""
    return isinstance(value, str) and value.strip() != ""


def _shard_rows(data, n_docs: int, n_chars: int) -> int:
    """Rows per shard: ``shard_rows`` when the job sets it; else at most ``partition_mb`` of text
    and at most MAX_SHARD_ROWS rows (so a small corpus of short documents is still cut into
    several partitions that the workers can share)."""
    if data.shard_rows is not None:
        return data.shard_rows
    n_shards = max(1, -(-n_chars // max(1, int(data.partition_mb * 2**20))),
                   -(-n_docs // MAX_SHARD_ROWS))
    return max(1, -(-n_docs // n_shards))


def prepare_dataset(job: JobSpec, cache_dir: str | Path, *,
                    apt_lists: str | Path | None = None) -> Dataset:
    """Write (or reuse) the job's corpus as parquet shards in ``cache_dir/<digest>/``."""
    data = job.data
    cache_dir = Path(cache_dir).resolve()
    shape = {"version": FORMAT_VERSION, "limit": data.limit, "shard_rows": data.shard_rows,
             "partition_mb": None if data.shard_rows else data.partition_mb}
    meta: dict[str, Any]
    skip: frozenset[Path] = frozenset()
    if data.source == "debian-packages":
        lists_dir = Path(apt_lists or apt_lists_dir())
        files = apt_package_lists(lists_dir)
        if not files:
            raise BatchError(
                f"no apt package lists (*_Packages*) in {lists_dir}; run `apt-get update` "
                "on the control machine (or point DASKFLEET_APT_LISTS at a folder of lists), or "
                "use a job with data.source: files"
            )
        inputs = [[f.name, _sha256_file(f)] for f in files]
        meta = {"source": "debian-packages", "inputs": inputs, **shape}

        def documents(skipped=None):
            return _debian_documents(files, data.limit)
    elif data.source == "synthetic":
        from runner.batch.synthetic import GENERATOR_VERSION, generate

        assert data.synthetic is not None, "source synthetic: the job's validator requires it"
        params = data.synthetic.model_dump(mode="python")
        meta = {"source": "synthetic", "generator": GENERATOR_VERSION, "params": params, **shape}

        def documents(skipped=None):
            docs = generate(**params)
            return docs if data.limit is None else itertools.islice(docs, data.limit)
    else:
        from runner.batch.sources import resolve_files

        if data.url is not None:
            from runner.batch.remote import fetch

            local = fetch(data.url, cache_dir / "downloads")
            fmt, files = resolve_files(local, data.format)
            root = local.parent
        else:
            # a URL path (path_url) is read by the workers where it lives, never prepared here
            assert data.path is not None, "source files without url: the validator requires path"
            fmt, files = resolve_files(data.path, data.format)
            root = data.path if data.path.is_dir() else data.path.parent
        inputs = [[data.url or str(f), _sha256_file(f)] for f in files]
        meta = {"source": "files", "format": fmt, "inputs": inputs, "on_error": data.on_error,
                "text_column": data.text_column, "label_column": data.label_column, **shape}

        def documents(skipped=None):
            return _file_documents(files, fmt, data.text_column, data.label_column, data.limit,
                                   root, skip, skipped)

    digest = _digest(meta)
    meta["digest"] = digest
    # the deal of rows over shards is seeded by the content only (not where the files are), so
    # the same corpus gives the same shards, and the same model, from any folder
    meta["deal_seed"] = int(_digest({**meta, "digest": None, "inputs": [
        sha for _, sha in meta.get("inputs", [])]})[:8], 16)
    folder = cache_dir / digest
    found = _existing(folder)
    if found is not None:
        return found

    # counting pass: no rows kept; with on_error: skip it also finds the bad files
    skipped: list[Path] | None = [] if data.source == "files" and data.on_error == "skip" else None
    count = _Count()
    for text, label in documents(skipped):
        count.add(text, label)
    skip = frozenset(skipped or ())
    meta["skipped"] = [str(p) for p in skipped or ()]
    meta["notes"] = count.check(data, job.name, len(skip), meta.get("format") == "text-dirs")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{digest}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        dataset = _write_shards(documents(), count.docs,
                                _shard_rows(data, count.docs, count.chars), tmp, meta)
        theirs = _publish(tmp, folder)
        if theirs is not None:
            return theirs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Dataset(folder, dataset.files, dataset.rows, digest, dataset.skipped, dataset.notes)


# --------------------------------------------------------------------------- prediction input

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
