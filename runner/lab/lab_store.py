"""The lab's object store as part of the lab, with `lab up --object-store`: waited for when it
was spawned with new hosts (runner.lab.lab_hosts), added to a running lab, or started again when
a reused lab's store is down; and its line in `lab status`. The store itself (its namespace and
server) is runner.lab.objectstore.

Apart from runner.lab.lab, whose `up` and `status` call it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from runner.lab.machine import stop_host
from runner.log import Progress, Say

if TYPE_CHECKING:
    from runner.lab.lab import Lab

logger = logging.getLogger(__name__)


def store_status(lab: Lab) -> dict | None:
    """What `lab status` says of the object store (None: the lab has none)."""
    from runner.lab import objectstore

    record = lab.object_store()
    if not record:
        return None
    return {"endpoint": record["endpoint"], "region": record["region"],
            "credentials": record["credentials"], "up": objectstore.alive(record)}


def start_object_store(lab: Lab, region: str, progress: Progress | None) -> None:
    """The lab's object store (runner.lab.objectstore), when asked for (`--object-store`):
    started with the lab, or added to a running lab; started again when a reused lab's store
    is down (its objects are gone then: they live in memory)."""
    say = Say(progress, logger)
    from runner.lab import objectstore

    data = lab.read_record()
    assert data is not None, "called once the lab's hosts are recorded"
    if not lab.want_store and not data.get("object_store"):
        return  # not asked for (`lab up --object-store`), and none to keep running
    spawned = lab.spawned_store
    if spawned is not None:  # this `up` made the lab, and started the store with it
        lab.spawned_store = None
        data["object_store"] = objectstore.ready(spawned, progress)
        lab.write_record(data)
        return
    record = data.get("object_store")
    if objectstore.alive(record):
        say(f"lab: reusing the running object store at {record['endpoint']}")
        return
    if record:
        say("lab: the object store was down; starting it again (empty)")
        stop_host(objectstore.NETNS, objectstore.LINK)
    data["object_store"] = objectstore.start(lab.state_dir / "objectstore", region, progress)
    lab.write_record(data)
