"""The record of a cluster under .daskfleet/<cluster>/: what daskfleet created and started."""

from __future__ import annotations

import json
from pathlib import Path


def read(state_dir: Path) -> dict:
    path = state_dir / "state.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def update(state_dir: Path, **changes) -> dict:
    """Merge changes into state.json, written to a temp file and renamed (never half-written)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    data = {**read(state_dir), **changes}
    tmp = state_dir / "state.json.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(state_dir / "state.json")
    return data
