"""Which jobs run on a cluster, as `up` asks before it restarts a scheduler: a registered run
while its client is connected, and any other client that holds tasks."""

from __future__ import annotations

import time

import distributed

from runner.cluster import activity


def wait_for(check, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.05)
    return result


def test_a_running_job_is_seen_by_another_client_and_gone_with_it(client):
    address = client.scheduler.address
    assert activity.running(client) == []
    with distributed.Client(address) as submitter:
        activity.register(submitter, "20261202-010203-demo-ab12")
        assert wait_for(lambda: activity.running(client)) == ["run 20261202-010203-demo-ab12"]
        activity.register(submitter, None)  # the job ended
        assert wait_for(lambda: activity.running(client) == []) is True
        activity.register(submitter, "20261202-010203-demo-cd34")
    # its client gone (a killed submit): the registration is not a running job
    assert wait_for(lambda: activity.running(client) == []) is True


def test_another_client_holding_tasks_counts_as_busy(client):
    with distributed.Client(client.scheduler.address) as other:
        held = other.submit(sum, [1, 2], pure=False)
        held.result()
        busy = wait_for(lambda: activity.running(client))
        assert busy == [f"client {other.id} holding 1 task(s)"]
        held.release()
        assert wait_for(lambda: activity.running(client) == []) is True
