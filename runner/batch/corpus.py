"""Control side: turn a job's data source into parquet shards in a local cache folder.

The shards have two string columns, ``text`` and ``label``. Documents are dealt to the shards
round-robin, so each shard is a uniform sample of the stream (an apt Packages index is sorted by
package name, and a shard made only of ``python3-*`` packages would spoil parameter mixing).
At most one shard's worth of rows is buffered, plus the de-duplication set.

The folder is named after a digest of the input bytes and the options that shape the shards, so
the same input gives the same folder and a second run reuses it without writing anything.

This module picks the source's reader (``corpus_readers``), counts and checks the corpus in a
first pass, then writes the shards (``corpus_shards``) in a second.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from runner.batch.corpus_readers import (
    _debian_documents,
    _file_documents,
    apt_lists_dir,
    apt_package_lists,
)
from runner.batch.corpus_shards import (
    FORMAT_VERSION,
    Dataset,
    _digest,
    _existing,
    _publish,
    _sha256_file,
    _shard_rows,
    _write_shards,
)
from runner.errors import BatchError

if TYPE_CHECKING:
    from runner.batch.job import JobSpec


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
