"""The data section of a job file (`data:`, with its `synthetic:`): where the documents come
from, and the checks that its keys fit the source, its paths exist and its URLs and storage
options can be used.

Apart from runner.batch.job (which imports it) since these checks are half of a job file's
validation; `_Model`, the strict base of every section, is here so both modules can use it.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from runner.batch.remote import is_url
from runner.batch.sources import FILE_FORMATS, is_glob
from runner.batch.store_urls import check_options, is_store_url
from runner.errors import BatchError
from runner.spec_errors import KeyProblem


class _Model(BaseModel):
    # strict: YAML already gives real types, so "yes" is not silently a bool and "5" not an int
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SyntheticSpec(_Model):
    """A seeded generator of labelled documents (runner.batch.synthetic)."""

    n_docs: Annotated[int, Field(ge=1, le=100_000_000)] = 10_000
    n_classes: Annotated[int, Field(ge=2, le=10_000)] = 5
    vocab_size: Annotated[int, Field(ge=10, le=10_000_000)] = 5_000
    doc_len: Annotated[int, Field(ge=1, le=100_000)] = 40
    noise: Annotated[float, Field(ge=0, le=1)] = 0.05
    seed: int = 0


class DataSpec(_Model):
    """Where the documents come from.

    ``debian-packages``: this machine's apt Packages indexes, text = the Description's first
    line, label = the Section. ``files``: ``path`` (relative to the job file's folder) is a file,
    a glob or a folder; ``format`` (parquet, csv, jsonl, text-dirs) is inferred from the file
    names when omitted, text-dirs being one sub-folder per label and one document per file.
    Instead of ``path``, ``url`` (http or https) names one file to download first.
    ``path`` may instead be an ``s3://`` URL (an object store) or a ``file://`` URL (a filesystem
    every node mounts at that path): the workers then read it themselves (runner.batch.store),
    with ``storage_options`` (fsspec's names: key, secret, token, endpoint_url, region, anon);
    ``url: s3://...`` means the same. ``synthetic``: generated documents (``synthetic``
    section). ``limit`` keeps the first N rows of the files, or a stable pseudo-random sample of
    N packages (read in place: about N rows, a stable sample by text hash). ``on_error``: a corrupt file
    fails the job (``fail``) or is skipped and counted in the metrics' ``skipped_files``.
    Partitions hold ``shard_rows`` rows when it is set, otherwise at most ``partition_mb`` MB of
    text (the raw text; the hashed features in memory are a few times larger) and at most
    20,000 rows each. ``copies``: for a corpus prepared here (not read in place), how many worker
    hosts get each shard (2 by default: a job outlives the loss of any one host; 1 sends the
    corpus once in all). A shard is read, and without the features cache rebuilt in every
    pass, on its hosts only.
    """

    source: Literal["debian-packages", "files", "synthetic"]
    path: Annotated[Path | None, Field(strict=False)] = None
    url: str | None = None
    format: Literal["parquet", "csv", "jsonl", "text-dirs"] | None = None
    text_column: str = "text"
    label_column: str = "label"
    limit: Annotated[int | None, Field(gt=0)] = None
    on_error: Literal["fail", "skip"] = "fail"
    synthetic: SyntheticSpec | None = None
    shard_rows: Annotated[int | None, Field(gt=0)] = None
    partition_mb: Annotated[float, Field(gt=0, le=4096, strict=False)] = 64.0
    copies: Annotated[int, Field(ge=1, le=64)] = 2
    # set from ``path`` (or an s3 ``url``) when it is a URL the workers read in place
    path_url: str | None = None
    storage_options: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _where_it_lives(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("path", "url"):
                value = data.get(key)
                if is_store_url(value) and (key == "path" or value.startswith("s3://")):
                    if data.get("path_url") is not None or (key == "url" and "path" in data):
                        raise KeyProblem(key, "give one of path and url, not both")
                    data = {**{k: v for k, v in data.items() if k != key}, "path_url": value}
        return data

    @field_validator("path", mode="after")
    @classmethod
    def _resolve(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        base = Path((info.context or {}).get("base_dir", "."))
        path = base / value.expanduser()
        if not (info.context or {}).get("check_paths", True):
            return path  # a detached run's driver: the data was prepared where the job was sent
        if is_glob(path):
            path = Path(os.path.abspath(path))
            if not any(Path(p).is_file() for p in glob.glob(str(path), recursive=True)):
                raise ValueError(f"the pattern matches no file: {path}")
            return path
        path = path.resolve()
        if not path.exists():
            raise ValueError(f"file not found: {path} (a relative data.path is read from the job "
                             "file's folder; fix the path)")
        return path

    @model_validator(mode="after")
    def _keys_match_source(self) -> DataSpec:
        if self.url is not None:
            if not is_url(self.url):
                raise KeyProblem("url", f"must start with http://, https:// or s3://, got "
                                f"{self.url!r}")
            if self.source != "files":
                raise KeyProblem("url", f"only allowed when source is 'files' (source is {self.source!r})")
            if self.path is not None:
                raise KeyProblem("url", "give either path or url, not both")
            if self.format is None and Path(urlsplit(self.url).path).suffix.lower() not in FILE_FORMATS:
                raise KeyProblem("format", f"cannot be inferred from the URL {self.url!r}; set "
                                "data.format (parquet, csv or jsonl)")
            if self.format == "text-dirs":
                raise KeyProblem("format", "text-dirs needs a local folder, not a URL")
        elif self.path_url is not None:
            if self.source != "files":
                raise KeyProblem("path", f"a URL is only allowed when source is 'files' (source is "
                                f"{self.source!r})")
            if self.format == "text-dirs":
                raise KeyProblem("format", "text-dirs needs a local folder, not a URL")
            if not urlsplit(self.path_url).netloc and self.path_url.startswith("s3://"):
                raise KeyProblem("path", f"an s3 URL names a bucket: s3://bucket/prefix/*.parquet, "
                                f"got {self.path_url!r}")
            try:
                check_options(self.storage_options)
            except BatchError as e:
                raise KeyProblem("storage_options", str(e).split(": ", 1)[1]) from None
        elif self.source == "files" and self.path is None:
            raise KeyProblem("path", "required when source is 'files' (or give data.url)")
        if "copies" in self.model_fields_set and self.path_url is not None:
            raise KeyProblem("copies", "only used for a corpus prepared on this machine and "
                            "shipped to the workers; a corpus read in place is read once, by the "
                            "workers: remove data.copies")
        if self.storage_options is not None and self.path_url is None:
            raise KeyProblem("storage_options", "only used when data.path is an s3:// or file:// "
                            "URL")
        if self.source != "files" and self.path is not None:
            raise KeyProblem("path", f"only allowed when source is 'files' (source is {self.source!r})")
        if self.source != "files" and self.format is not None:
            raise KeyProblem("format", f"only allowed when source is 'files' (source is {self.source!r})")
        if self.source == "synthetic" and self.synthetic is None:
            raise KeyProblem("synthetic", "required when source is 'synthetic', e.g. "
                            "{n_docs: 10000, n_classes: 5}")
        if self.source != "synthetic" and self.synthetic is not None:
            raise KeyProblem("synthetic", f"only allowed when source is 'synthetic' "
                            f"(source is {self.source!r})")
        if self.path is not None and self.path.is_file() and self.format is None \
                and self.path.suffix.lower() not in FILE_FORMATS:
            raise KeyProblem("path", f"unsupported file type {self.path.suffix or '(none)'!r} "
                            f"(use one of: {', '.join(FILE_FORMATS)}, or set data.format)")
        if self.path is not None and self.path.is_file() and self.format == "text-dirs":
            raise KeyProblem("format", "text-dirs needs data.path to be a folder with one "
                            "sub-folder per label")
        inferred = FILE_FORMATS.get(self.path.suffix.lower()) if self.path is not None else None
        if self.path is not None and self.path.is_file() and inferred and self.format \
                and self.format != inferred:
            raise KeyProblem("format", f"{self.format} does not match {self.path.name} (a "
                            f"{inferred} file name); remove data.format to read it as {inferred}, "
                            "or point data.path at a file of that format")
        if self.source == "files" and self.format == "text-dirs" and (
                self.text_column != "text" or self.label_column != "label"):
            raise KeyProblem("format", "text-dirs takes the label from the folder names; remove "
                            "text_column and label_column")
        return self
