"""A small, dated price table for the instance types of the example cluster files: an ESTIMATE.

On-demand Linux prices in USD per hour, as AWS published them for the regions below on AS_OF;
prices change, differ by region, and exclude data transfer. Spot prices vary by the hour: the
estimate takes them as SPOT_FRACTION of on-demand. gp3 storage per GiB-month.
"""

from __future__ import annotations

AS_OF = "2025-09-01"
SPOT_FRACTION = 0.35
GP3_GIB_MONTH = {"us-east-1": 0.08, "eu-west-1": 0.088}
HOURS_PER_MONTH = 730
ON_DEMAND = {
    "us-east-1": {"t3.medium": 0.0416, "t3.large": 0.0832, "m6i.large": 0.096,
                  "m6i.xlarge": 0.192, "m7i.large": 0.1008, "m7g.large": 0.0816,
                  "c6i.large": 0.085, "r6i.large": 0.126},
    "eu-west-1": {"t3.medium": 0.0456, "t3.large": 0.0912, "m6i.large": 0.107,
                  "m6i.xlarge": 0.214, "m7i.large": 0.112, "m7g.large": 0.0904,
                  "c6i.large": 0.096, "r6i.large": 0.141},
}


def hourly(region: str, instance_type: str, spot: bool = False) -> float | None:
    """USD per hour for one instance (None: not in the table)."""
    price = ON_DEMAND.get(region, {}).get(instance_type)
    if price is None:
        return None
    return round(price * (SPOT_FRACTION if spot else 1.0), 5)


def storage_hourly(region: str, gib: int) -> float | None:
    per_month = GP3_GIB_MONTH.get(region)
    return None if per_month is None else round(per_month * gib / HOURS_PER_MONTH, 5)
