"""The lab's object store: an S3 API (moto's server) on a lab host of its own: lab hosts, and
emulated-EC2 instances with a public address (as S3 is reached through an internet gateway),
reach it over the lab's network, never through the control machine's processes.

As strict as S3 where that changes what a user sees: every request must be signed by the one
access key the store creates at start (IAM enforced from the first request), so a wrong key or
secret is refused as AWS refuses it (InvalidAccessKeyId, SignatureDoesNotMatch), and a missing
bucket is NoSuchBucket. The objects live in the server's memory: a stopped store is an empty
one.

`python -m runner.lab.objectstore --host ADDR --port N --state DIR` is the server process; it
writes DIR/credentials.json (0600: endpoint, region, key, secret) once it answers.
`start(lab, ...)` boots the namespace and the process (runner.lab.lab_store calls it in `lab up`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TypeGuard

from runner.errors import LabError
from runner.lab.addresses import OBJECT_STORE, OBJECT_STORE_NETNS, PUBLIC_RANGE, VETH_PREFIX
from runner.log import Progress, Say

logger = logging.getLogger("runner.lab.objectstore")  # not __main__ under python -m

NETNS = OBJECT_STORE_NETNS
LINK = VETH_PREFIX + "s3"
ADDRESS = OBJECT_STORE
PORT = 9000
USER = "daskfleet-lab"
START_TIMEOUT_S = 60.0
S3_ONLY = ('{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", '
           '"Resource": "*"}]}')


def credentials_path(state: Path) -> Path:
    return Path(state) / "credentials.json"


def start(state: Path, region: str, progress: Progress | None = None) -> dict:
    """Boot the store's host and its server (`spawn`), and return its record once it answers
    (`ready`)."""
    return ready(spawn(state, region), progress)


def spawn(state: Path, region: str) -> dict:
    """Boot the store's host (a namespace on the lab bridge) and start its server, without
    waiting for it (moto takes seconds to import: the lab creates its hosts meanwhile)."""
    from runner.lab.machine import BRIDGE, BRIDGE_ADDRESS, run, stop_host

    state = Path(state)
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o700)
    credentials_path(state).unlink(missing_ok=True)
    try:
        run(["ip", "netns", "add", NETNS])
        run(["ip", "link", "add", LINK, "type", "veth", "peer", "name", "eth0", "netns", NETNS])
        run(["ip", "link", "set", LINK, "master", BRIDGE, "up"])
        run(["ip", "-n", NETNS, "addr", "add", f"{ADDRESS}/24", "dev", "eth0"])
        run(["ip", "-n", NETNS, "link", "set", "eth0", "up"])
        run(["ip", "-n", NETNS, "link", "set", "lo", "up"])
        run(["ip", "-n", NETNS, "route", "add", "default", "via", BRIDGE_ADDRESS])
        # emulated instances reach it from their public addresses, on the lab's internet (the
        # same bridge): its replies go straight back (runner.lab.machine.internet_routes)
        run(["ip", "-n", NETNS, "route", "add", PUBLIC_RANGE, "dev", "eth0"])
        log = open(state / "server.log", "ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", NETNS, sys.executable, "-m", "runner.lab.objectstore",
             "--host", ADDRESS, "--port", str(PORT), "--state", str(state), "--region", region],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            cwd=str(Path(__file__).resolve().parents[2]),
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
    except BaseException:
        stop_host(NETNS, LINK)
        raise
    return {"endpoint": f"http://{ADDRESS}:{PORT}", "region": region,
            "credentials": str(credentials_path(state)), "pid": proc.pid,
            "started": time.monotonic()}


def ready(record: dict, progress: Progress | None = None) -> dict:
    """Wait until the spawned store answers; its record (for lab.json)."""
    say = Say(progress, logger)
    from runner.lab.machine import port_open, stop_host

    state = Path(record["credentials"]).parent
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (credentials_path(state).exists() and port_open(ADDRESS, PORT, timeout=0.5)):
        if not Path(f"/proc/{record['pid']}").exists() or time.monotonic() > deadline:
            stop_host(NETNS, LINK)
            tail = (state / "server.log").read_text(errors="replace")[-1500:]
            raise LabError(f"lab: the object store did not start on {ADDRESS}:{PORT}; see "
                           f"{state / 'server.log'}:\n{tail}")
        time.sleep(0.2)
    took = time.monotonic() - record.pop("started", time.monotonic())
    say(f"lab: object store (S3 API) at {record['endpoint']} on a host of its own "
        f"({took:.1f}s); credentials in {record['credentials']}")
    return record


def alive(record: dict | None) -> TypeGuard[dict]:
    from runner.lab.machine import port_open

    if not record:
        return False
    address = record["endpoint"].split("//", 1)[1]
    host, port = address.rsplit(":", 1)
    return port_open(host, int(port), timeout=1.0)


def credentials(record: dict) -> dict:
    """{endpoint, region, key, secret} of the running store."""
    return json.loads(Path(record["credentials"]).read_text())


# -- the server process -----------------------------------------------------------------------
def _create_user(region: str) -> tuple[str, str]:
    """The store's one IAM user with an S3-only policy and its access key, made in the backend
    directly (with IAM enforced from the first request, no API call could make it)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends

    iam = iam_backends[DEFAULT_ACCOUNT_ID]["global"]
    iam.create_user(region_name=region, user_name=USER)
    policy = iam.create_policy(description="the lab object store's user", path="/",
                               policy_document=S3_ONLY, policy_name="daskfleet-lab-s3", tags=[])
    iam.attach_user_policy(policy.arn, USER)
    key = iam.create_access_key(USER)
    return key.access_key_id, key.secret_access_key


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="the lab's object store (moto's S3, IAM enforced)")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--region", default="us-east-1")
    args = p.parse_args(argv)
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"  # read by moto.settings at import
    from runner.lab import moto_server

    key, secret = _create_user(args.region)
    server = moto_server.make(args.host, args.port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    path = credentials_path(args.state)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"endpoint": f"http://{args.host}:{args.port}",
                               "region": args.region, "key": key, "secret": secret}, indent=2))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.shutdown()


if __name__ == "__main__":
    main()
