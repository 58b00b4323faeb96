"""Waiting for a condition in the e2e tests (imported by the tests of this folder)."""

from __future__ import annotations

import time

import pytest


def poll(check, timeout: float, what: str, interval: float = 1.0):
    """``check()``'s first true value, tried every ``interval`` s; the test fails, naming
    ``what``, if none comes within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)
