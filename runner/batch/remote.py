"""Control side: fetch a ``files`` source given as an http(s) URL into the local cache, then
read it as a file (standard library only). An ``s3://`` URL is never fetched here: the workers
read it where it lives (runner.batch.store).

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

SCHEMES = ("http", "https")
TIMEOUT_S = 60


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

