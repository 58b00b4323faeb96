"""Control side: the documents, (text, label) pairs, of a corpus prepared here: the apt package
lists (``data.source: debian-packages``) and files (csv, jsonl, parquet, a folder of text
files per label; ``data.source: files``), streamed file by file (with ``data.on_error: skip``
a file is read whole before any of its documents is used, so a bad one gives none).

What they give shapes the shards: a change to it bumps ``corpus_shards.FORMAT_VERSION``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import heapq
import io
import lzma
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from runner.errors import BatchError

APT_LISTS_DIR = Path("/var/lib/apt/lists")
APT_HELPER = "/usr/lib/apt/apt-helper"
CSV_CHUNK_ROWS = 50_000
# Section prefixes of the non-main archive areas ("non-free/libs" -> "libs")
AREA_PREFIXES = ("contrib/", "non-free/", "non-free-firmware/", "restricted/", "universe/",
                 "multiverse/")


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
