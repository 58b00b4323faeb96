"""What an object-store or shared-filesystem URL is, and which storage options a reader takes:
the light half of runner/batch/store.py, which the job and cluster files' validation needs (it
imports no pandas, so every CLI command does not pay for it)."""

from __future__ import annotations

import urllib.parse
from typing import TypeGuard

from runner.errors import BatchError

SCHEMES = ("s3", "file")
# fsspec's (s3fs's) names, as dask and pandas take them; anything else is refused by name
OPTION_KEYS = ("key", "secret", "token", "endpoint_url", "region", "anon", "connect_timeout",
               "request_timeout")


def is_store_url(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and urllib.parse.urlsplit(value).scheme in SCHEMES


def check_options(options: dict | None) -> None:
    """Refuse a storage option this reader does not know (a typo would otherwise be ignored)."""
    unknown = sorted(set(options or {}) - set(OPTION_KEYS))
    if unknown:
        raise BatchError(f"data.storage_options: unknown key(s) {', '.join(unknown)}; the keys "
                         f"are {', '.join(OPTION_KEYS)} (fsspec's names)")
