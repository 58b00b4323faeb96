"""Control side: fetch a ``files`` source given as a URL into the local cache, then read it as
a file. ``http(s)://`` with the standard library; ``s3://bucket/key`` with boto3, an optional
extra (``pip install 'daskfleet[s3]'``) imported only when an s3 URL is used.

A download lands under a temporary name beside its target and is renamed when complete, so a
broken transfer never looks like a file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from runner.errors import BatchError

SCHEMES = ("http", "https", "s3")
TIMEOUT_S = 60
S3_HINT = "reading s3:// URLs needs boto3: pip install 'daskfleet[s3]' (or pip install boto3)"


def is_url(value: str) -> bool:
    return urllib.parse.urlsplit(str(value)).scheme in SCHEMES


def url_file_name(url: str) -> str:
    """The name of the downloaded file: a digest of the URL plus the URL's own suffix, so the
    format can still be inferred from it."""
    suffix = Path(urllib.parse.urlsplit(url).path).suffix.lower()
    return hashlib.sha256(url.encode()).hexdigest()[:16] + suffix


def fetch(url: str, folder: Path) -> Path:
    """Download ``url`` into ``folder`` (again on every call: the content digest decides
    whether the shards can be reused) and return the local path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / url_file_name(url)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        if urllib.parse.urlsplit(url).scheme == "s3":
            _fetch_s3(url, tmp)
        else:
            _fetch_http(url, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _fetch_http(url: str, tmp: Path) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "daskfleet"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f, length=1 << 20)
    except urllib.error.HTTPError as e:
        raise BatchError(f"{url}: download failed: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise BatchError(f"{url}: download failed: {reason}") from e


def _fetch_s3(url: str, tmp: Path) -> None:
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise BatchError(f"{url}: {S3_HINT}") from None
    parts = urllib.parse.urlsplit(url)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket or not key:
        raise BatchError(f"{url}: an s3 URL names a bucket and a key: s3://bucket/path/file.csv")
    try:
        boto3.client("s3").download_file(bucket, key, str(tmp))
    except (BotoCoreError, ClientError) as e:
        raise BatchError(f"{url}: download failed: {e}") from e
