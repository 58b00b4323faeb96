"""Worker side: a corpus read where it lives, by the workers, never through the control machine.

``data.path`` may be an object-store URL (``s3://bucket/prefix/*.parquet``) or a ``file://`` URL
of a filesystem every node mounts at the same place (NFS, a shared disk). Both are read with
pyarrow's filesystems, which are part of the worker stack (no s3fs, no boto3 on the nodes).
``data.storage_options`` takes fsspec's names for the usual S3 options (``key``, ``secret``,
``token``, ``endpoint_url``, ``region``, ``anon``); without a key, each worker uses the standard
AWS chain of its own host (environment, ``~/.aws``, the instance profile).

Every function here runs on a worker and returns plain data. Errors are BatchErrors that name
the URL, the key to check and what to do: they cross back to the client as they are.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse

import numpy as np
import pandas as pd

from runner.batch.split import _hash_key
from runner.batch.store_urls import check_options
from runner.errors import BatchError

SUFFIX_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl",
                  ".ndjson": "jsonl"}
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 60.0
GLOB_CHARS = set("*?[")


def filesystem(url: str, options: dict | None):
    """The pyarrow filesystem of ``url``, and the path of ``url`` inside it."""
    import pyarrow.fs as pafs

    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return pafs.LocalFileSystem(), parts.path
    options = dict(options or {})
    check_options(options)
    kwargs: dict = {"connect_timeout": float(options.get("connect_timeout", CONNECT_TIMEOUT_S)),
                    "request_timeout": float(options.get("request_timeout", REQUEST_TIMEOUT_S)),
                    "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3)}
    if options.get("anon"):
        kwargs["anonymous"] = True
    if options.get("key"):
        kwargs.update(access_key=str(options["key"]), secret_key=str(options.get("secret") or ""))
        if options.get("token"):
            kwargs["session_token"] = str(options["token"])
    if options.get("region"):
        kwargs["region"] = str(options["region"])
    elif options.get("endpoint_url"):
        # an S3-compatible store: no region to look up (the SDK would ask the instance metadata)
        kwargs["region"] = "us-east-1"
    endpoint = options.get("endpoint_url")
    if endpoint:
        e = urllib.parse.urlsplit(str(endpoint))
        kwargs["endpoint_override"] = e.netloc or e.path
        kwargs["scheme"] = e.scheme or "https"
    return pafs.S3FileSystem(**kwargs), (parts.netloc + parts.path)


def _explain(url: str, options: dict | None, e: BaseException, key: str = "data",
             where: str = "this worker", verb: str = "read",
             names: tuple[str, str] | None = None) -> BatchError:
    """An object-store error as what to check: the endpoint, the bucket, the credentials
    (``key``: the job file's section, data or results; ``names``: what the path and the options
    are called where they are not a job file's, e.g. predict's arguments)."""
    # ``opts`` is followed by an option's name: "data.storage_options." + "endpoint_url"
    path_name, opts = names or (f"{key}.path", f"{key}.storage_options.")
    text = str(e)
    endpoint = (options or {}).get("endpoint_url") or "the default AWS endpoint"
    if "NETWORK_CONNECTION" in text or "curlCode" in text or "Could not connect" in text:
        what = (f"cannot reach the object store at {endpoint} from {where}; check "
                f"{opts}endpoint_url and that {where} reaches it")
    elif "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        bucket = urllib.parse.urlsplit(url).netloc
        what = f"bucket {bucket!r} does not exist (at {endpoint}); check {path_name}"
    elif any(s in text for s in ("INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH",
                                 "ACCESS_DENIED", "AccessDenied", "InvalidAccessKeyId",
                                 "EXPIRED_TOKEN", "403")):
        what = (f"the object store refused the credentials; check {opts}key "
                "and secret (or the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY the job was "
                f"submitted with) and that they may {verb} the bucket")
    else:
        what = f"cannot {verb} it: {text.strip()[:300]}"
    return BatchError(f"{path_name} {url}: {what}")


def _pattern_regex(pattern: str) -> re.Pattern:
    """A glob as object stores take it: ``*`` and ``?`` stay within one path segment, ``**``
    crosses them."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] in "*?":
            out.append("[^/]*" if pattern[i] == "*" else "[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _visible(path: str, root: str) -> bool:
    """Not a hidden file, nor a marker such as _SUCCESS that writers leave beside the data."""
    rel = path[len(root):].lstrip("/")
    return not any(p.startswith((".", "_")) for p in rel.split("/") if p)


def list_inputs(url: str, fmt: str | None, options: dict | None,
                names: tuple[str, str] | None = None) -> list[dict]:
    """The objects (files) ``url`` names: one, every one under a prefix (folder), or those a
    glob matches. [{"path", "size", "format"}], sorted. Runs on a worker: the control machine
    may not even reach the store. ``names``: as ``_explain``'s (data.path by default)."""
    what = names[0] if names else "data.path"
    import pyarrow.fs as pafs

    fs, path = filesystem(url, options)
    try:
        if urllib.parse.urlsplit(url).scheme == "s3":
            bucket = path.split("/", 1)[0]
            if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                endpoint = (options or {}).get("endpoint_url") or "the default AWS endpoint"
                raise BatchError(f"{what} {url}: bucket {bucket!r} does not exist (at "
                                 f"{endpoint}); check {what}")
        if GLOB_CHARS & set(path):
            static = re.split(r"[*?\[]", path, maxsplit=1)[0]
            base = static if static.endswith("/") else posixpath.dirname(static)
            regex = _pattern_regex(path)
            infos = [i for i in fs.get_file_info(pafs.FileSelector(base.rstrip("/"),
                                                                   recursive=True,
                                                                   allow_not_found=True))
                     if i.type == pafs.FileType.File and regex.match(i.path)]
            root = base
        else:
            info = fs.get_file_info(path.rstrip("/"))
            if info.type == pafs.FileType.File:
                infos, root = [info], posixpath.dirname(info.path)
            else:
                root = path.rstrip("/")
                infos = [i for i in fs.get_file_info(pafs.FileSelector(root, recursive=True,
                                                                       allow_not_found=True))
                         if i.type == pafs.FileType.File and _visible(i.path, root)
                         and (fmt is not None or posixpath.splitext(i.path)[1].lower()
                              in SUFFIX_FORMATS)]
    except OSError as e:
        raise _explain(url, options, e, names=names) from e
    if not infos:
        raise BatchError(f"{what} {url}: matches no object (an empty or missing prefix, or a "
                         "pattern that matches nothing); check the bucket and prefix, e.g. with "
                         "`aws s3 ls`")
    items = []
    for i in sorted(infos, key=lambda i: i.path):
        found = fmt or SUFFIX_FORMATS.get(posixpath.splitext(i.path)[1].lower())
        if found is None:
            raise BatchError(f"{what} {url}: {i.path} has no known suffix "
                             f"({', '.join(SUFFIX_FORMATS)}); set data.format or narrow the path")
        items.append({"path": i.path, "size": int(i.size or 0), "format": found})
    formats = sorted({i["format"] for i in items})
    if len(formats) > 1:
        examples = ", ".join(next(i["path"] for i in items if i["format"] == f) for f in formats)
        raise BatchError(f"{what} {url}: matches files of several formats "
                         f"({', '.join(formats)}: e.g. {examples}); narrow the pattern to one "
                         "format (e.g. *.parquet) or set data.format")
    return items


def _strings(values) -> np.ndarray:
    """Object array of str or None (numbers become their text; NaN and empty stay missing)."""
    out: list[str | None] = []
    for v in values:
        if v is None or (isinstance(v, float) and v != v):
            out.append(None)
        else:
            out.append(v if isinstance(v, str) else str(v))
    return np.asarray(out, dtype=object)


def read_input(url: str, item: dict, text_col: str, label_col: str, options: dict | None,
               on_error: str = "fail", label_optional: bool = False) -> tuple[pd.DataFrame, dict]:
    """One object as a DataFrame with object columns ``text`` and ``label``, and a summary
    (rows, chars, skipped). With ``on_error: skip`` an unreadable object gives no rows and its
    reason in the summary. ``label_optional`` (predict): an object without the label column
    gives labels of None."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, _ = filesystem(url, options)
    path, fmt = item["path"], item["format"]
    where = f"{urllib.parse.urlsplit(url).scheme}://{path}"
    try:
        if fmt == "parquet":
            with fs.open_input_file(path) as f:
                pf = pq.ParquetFile(f)
                names = pf.schema_arrow.names
                has_label = _check_columns(where, names, text_col, label_col, label_optional)
                table = pf.read(columns=[text_col, label_col] if has_label else [text_col])
            texts = _strings(table.column(text_col).to_pylist())
            labels = (_strings(table.column(label_col).to_pylist()) if has_label else
                      np.full(len(texts), None, dtype=object))
        else:
            with fs.open_input_stream(path) as f:
                if fmt == "csv":
                    raw = pd.read_csv(f, dtype=str, keep_default_na=False, na_values=[""],
                                      encoding="utf-8", encoding_errors="replace")
                else:
                    raw = pd.read_json(f, lines=True, dtype=False, encoding="utf-8",
                                       encoding_errors="replace")
            has_label = _check_columns(where, raw.columns, text_col, label_col, label_optional)
            texts = _strings(raw[text_col])
            labels = (_strings(raw[label_col]) if has_label else
                      np.full(len(texts), None, dtype=object))
        df = pd.DataFrame({"text": texts, "label": labels})
    except BatchError as e:
        if on_error == "skip":
            return _empty(), {"rows": 0, "chars": 0, "skipped": str(e)}
        raise
    except OSError as e:
        if any(s in str(e) for s in ("AWS Error", "curlCode")):
            raise _explain(url, options, e) from e
        return _unreadable(where, fmt, e, on_error)
    except (pa.ArrowException, ValueError, pd.errors.ParserError) as e:
        return _unreadable(where, fmt, e, on_error)
    chars = int(sum(len(t) for t in df["text"] if t))
    return df, {"rows": int(len(df)), "chars": chars, "skipped": None}


def _unreadable(where: str, fmt: str, e: BaseException, on_error: str):
    message = (f"{where}: cannot read as {fmt} (damaged, truncated or not {fmt}): "
               f"{str(e).strip()[:300]}; fix or remove the object, or set data.on_error: skip")
    if on_error == "skip":
        return _empty(), {"rows": 0, "chars": 0, "skipped": message}
    raise BatchError(message)


def _check_columns(where: str, names, text_col: str, label_col: str,
                   label_optional: bool = False) -> bool:
    """Refuse a file without the columns; returns whether it has the label column."""
    names = [str(n) for n in names]
    needed = (text_col,) if label_optional else (text_col, label_col)
    missing = [c for c in needed if c not in names]
    if missing:
        fix = ("Give predict's --text-column" if label_optional else
               "Set data.text_column and data.label_column in the job file")
        raise BatchError(f"{where}: column(s) {', '.join(map(repr, missing))} not found; the file "
                         f"has columns: {', '.join(names[:20]) or '(none)'}. {fix}.")
    return label_col in names


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"text": np.asarray([], dtype=object), "label": np.asarray([], dtype=object)})


def with_row_hash(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The rows with ``_h``, a stable hash of the text: the key the rows are dealt by across the
    partitions (a corpus stored label by label becomes partitions that each hold every label)."""
    h = pd.util.hash_pandas_object(pd.Series(df["text"].to_numpy(dtype=object), dtype=object),
                                   index=False, hash_key=_hash_key(seed))
    return df.assign(_h=h.to_numpy(dtype=np.uint64).view(np.int64))


def sample(df: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """The rows whose hash falls below ``fraction`` (data.limit on a corpus read in place: about
    limit rows, the same ones on every run)."""
    u = (df["_h"].to_numpy().view(np.uint64) >> np.uint64(11)).astype(np.float64) / float(2**53)
    return df[u < fraction]


def without_hash(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns="_h").reset_index(drop=True)

