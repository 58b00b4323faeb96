"""The lab's object store for the e2e tests (imported by the tests of this folder): added to
the running lab, its endpoint, region and one key, and a boto3 client on it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Store:
    endpoint: str
    region: str
    key: str
    secret: str
    up: bool

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.key, aws_secret_access_key=self.secret)

    def aws_variables(self) -> dict[str, str]:
        """What a shell that reaches this store with the standard AWS chain holds."""
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": self.region}

    def storage_options(self) -> dict[str, str]:
        """fsspec's names, as a job or cluster file gives them."""
        return {"endpoint_url": self.endpoint, "key": self.key, "secret": self.secret,
                "region": self.region}


def object_store(cli) -> Store:
    """`lab up --object-store` on the running lab, then its record. `lab status --json` is
    read whatever its exit code: it exits 1 while any emulated instance is down (one of an
    earlier test may still be powering off), which says nothing of the store."""
    cli("lab", "up", "--object-store", timeout=120)
    st = json.loads(cli("lab", "status", "--json", check=False).stdout)["object_store"]
    creds = json.loads(Path(st["credentials"]).read_text())
    return Store(st["endpoint"], st["region"], creds["key"], creds["secret"], st["up"])
