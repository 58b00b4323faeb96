"""Facts a dask process reports about the node it runs on (imported on the nodes: stdlib only)."""

from __future__ import annotations

import os
import platform
import socket
import sys


def describe() -> dict:
    """Which host, which interpreter, which daskfleet environment (envs/<lock-hash>)."""
    prefix = os.path.realpath(sys.prefix)
    return {
        "hostname": socket.gethostname(),
        "executable": sys.executable,
        "prefix": prefix,
        "env_hash": os.path.basename(prefix) if "/envs/" in prefix else None,
        "pid": os.getpid(),
        "machine": platform.machine(),
    }
