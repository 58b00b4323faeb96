"""What every section of a cluster file shares: strict models and durations ('30m', '2h')."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")


def parse_duration(text: str) -> float:
    """'90s', '30m', '2h', '1d' -> seconds; ValueError names the accepted form."""
    m = DURATION.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration: use a number and s, m, h or d (e.g. 30m, 2h)")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


class Strict(BaseModel):
    """A section of a cluster file: unknown keys refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
