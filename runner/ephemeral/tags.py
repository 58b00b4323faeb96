"""The tags every resource of an ephemeral run carries, and when a tagged resource has expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

CLUSTER = "daskfleet:cluster"
RUN = "daskfleet:run"
EXPIRES = "daskfleet:expires"
CREATED = "daskfleet:created"


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_tags(cluster: str, run_id: str, now: datetime, lifetime_s: float) -> dict[str, str]:
    """Tags naming the cluster, the run and its expiry (ISO UTC), plus the project's usual
    creator/cluster pair (the Terraform modules' tags)."""
    return {CLUSTER: cluster, RUN: run_id, CREATED: iso(now),
            EXPIRES: iso(now + timedelta(seconds=lifetime_s)),
            "creator": "daskfleet", "cluster": cluster}


def as_dict(aws_tags: list[dict] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in aws_tags or []}


def as_aws(tags: dict[str, str]) -> list[dict]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def expired(tags: dict[str, str], now: datetime, older_than_s: float | None = None) -> str | None:
    """Why a daskfleet resource may be removed now (None: keep it). Eligible when its expiry has
    passed, or, with `older_than_s`, when it was created at least that long ago. A resource
    without our tags is never eligible; one with an unreadable expiry only by age."""
    if RUN not in tags:
        return None
    expires = parse(tags.get(EXPIRES))
    if expires is not None and expires <= now:
        return f"expired {iso(expires)}"
    created = parse(tags.get(CREATED))
    if older_than_s is not None and created is not None \
            and now - created >= timedelta(seconds=older_than_s):
        return f"created {iso(created)}, older than {older_than_s:.0f}s"
    return None
