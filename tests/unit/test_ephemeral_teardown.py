"""An ephemeral run's teardown against moto's in-process EC2, with EC2's failures injected
(throttling, DependencyViolation while an instance still holds a group, a resource not yet
visible after its creation): it retries with backoff until nothing of the run is left or its
deadline passes, and a teardown failure is reported beside the job's outcome, never instead."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runner.ephemeral import aws, teardown
from runner.ephemeral import tags as T
from runner.errors import BatchError, ProvisionError

moto = pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")
import test_ephemeral_gc  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

ec2 = test_ephemeral_gc.ec2  # the fixture: moto's in-process EC2

REPO = Path(__file__).resolve().parents[2]


class Flaky:
    """moto's client, with errors injected: `fail[call]` is a list of error codes the next calls
    of that name raise, one each ("*" at its end: that code for ever)."""

    def __init__(self, real, **fail: list[str]):
        self.real, self.fail, self.calls = real, {k: list(v) for k, v in fail.items()}, []

    def __getattr__(self, name):
        attr = getattr(self.real, name)
        if not callable(attr) or name == "get_paginator":
            return attr

        def call(*args, **kwargs):
            self.calls.append(name)
            queue = self.fail.get(name) or []
            if queue:
                code = queue[0]
                if not (len(queue) == 2 and queue[1] == "*"):
                    queue.pop(0)
                raise ClientError({"Error": {"Code": code, "Message": "injected"}}, name)
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """time.sleep in runner.ephemeral.aws and .teardown, recorded (and shortened: moto acts at
    once)."""
    import time

    real_sleep = time.sleep  # aws.time is the time module itself
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        real_sleep(min(s, 0.01))

    monkeypatch.setattr(aws.time, "sleep", sleep)
    return slept


def make_run(ec2, run_id: str = "20260102-r1") -> dict:
    made = aws.Made()
    tags = T.run_tags("c1", run_id, datetime.now(UTC), 3600)
    aws.make_network(ec2, "10.1.0.0/24", "10.1.0.0/24", tags, made, "us-east-1a")
    aws.make_group(ec2, made.vpc_id, f"df-{run_id}", "203.0.113.7/32", (8786, 8787), tags, made)
    return {"made": made, "tags": tags, "instance": launch(ec2, made, tags)}


def launch(ec2, made, tags) -> str:
    # any id: moto checks AMIs only when asked to (listing its images takes seconds)
    [inst] = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t3.micro",
                               SubnetId=made.subnet_id, SecurityGroupIds=[made.group_id],
                               TagSpecifications=[{"ResourceType": "instance",
                                                   "Tags": T.as_aws(tags)}])["Instances"]
    return inst["InstanceId"]


def left(ec2, run_id: str) -> list[str]:
    return teardown.describe_found(teardown.find_tagged(ec2, {T.RUN: run_id}))


def test_teardown_rides_out_throttling_and_dependency_violations_with_backoff(ec2, sleeps):
    run = make_run(ec2)
    flaky = Flaky(ec2, describe_instances=["RequestLimitExceeded"],
                  delete_security_group=["DependencyViolation"] * 4,
                  delete_subnet=["DependencyViolation"])
    removed = teardown.remove_run(flaky, "20260102-r1", lambda line: None, timeout=60)
    assert f"instance {run['instance']}" in removed and f"vpc {run['made'].vpc_id}" in removed
    # the public VPC's gateway: detached, deleted, before the VPC (which it would hold)
    gateway = run["made"].gateway_id
    assert gateway and f"internet gateway {gateway}" in removed
    assert removed.index(f"internet gateway {gateway}") < removed.index(f"vpc {run['made'].vpc_id}")
    assert ec2.describe_internet_gateways(
        Filters=[{"Name": "internet-gateway-id", "Values": [gateway]}])["InternetGateways"] == []
    assert left(ec2, "20260102-r1") == []
    assert flaky.calls.count("delete_security_group") == 5
    # the group's four refusals were waited out with a growing pause, not a fixed one
    waits = iter(sleeps)
    assert all(any(w == want for w in waits) for want in (0.5, 1.0, 2.0, 4.0)), sleeps


def test_teardown_gives_up_at_its_deadline_and_names_what_is_left(ec2, sleeps):
    run = make_run(ec2)
    flaky = Flaky(ec2, delete_subnet=["DependencyViolation", "*"])
    with pytest.raises(ProvisionError) as err:
        teardown.remove_run(flaky, "20260102-r1", lambda line: None, timeout=2)
    msg = str(err.value)
    assert "not fully removed after 2s" in msg and f"subnet {run['made'].subnet_id}" in msg, msg
    assert f"vpc {run['made'].vpc_id}" in msg and "DependencyViolation" in msg
    assert f"instance {run['instance']}" not in msg  # the instance did go
    assert flaky.calls.count("delete_subnet") > 2  # retried until the deadline, not once


def test_a_launch_still_in_flight_when_teardown_starts_is_found_and_removed(ec2, sleeps,
                                                                             monkeypatch):
    """A start cut short: the first look finds nothing of the run; the instance appears a
    moment later; the settle look finds it."""
    run_id = "20260102-late"
    made = aws.Made()
    tags = T.run_tags("c1", run_id, datetime.now(UTC), 3600)
    aws.make_network(ec2, "10.2.0.0/24", "10.2.0.0/24", tags, made, "us-east-1a")
    aws.make_group(ec2, made.vpc_id, "df-late", "203.0.113.7/32", (8786, 8787), tags, made)
    late: list[str] = []
    real_find = teardown.find_tagged
    looks = []

    def find(ec2_, filters=None, keep=lambda t: True):
        looks.append(1)
        if len(looks) == 3 and not late:  # after the network went, the launch lands
            late.append(launch(ec2, made_late, tags))
        return real_find(ec2_, filters, keep)

    # the late instance lands in a subnet of its own VPC (the run's first one is being removed)
    made_late = aws.Made()
    aws.make_network(ec2, "10.3.0.0/24", "10.3.0.0/24", {"x": "untagged"}, made_late,
                     "us-east-1a")
    made_late.group_id = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [made_late.vpc_id]}])["SecurityGroups"][0]["GroupId"]
    with monkeypatch.context() as m:  # only this patch: the fixtures' stay for the asserts
        m.setattr(teardown, "find_tagged", find)
        removed = teardown.remove_run(ec2, run_id, lambda line: None, timeout=60, settle=10)
    assert late and f"instance {late[0]}" in removed, (late, removed)
    assert 10 in sleeps  # the settle look
    assert left(ec2, run_id) == []


def test_a_resource_just_created_and_not_yet_visible_is_retried(ec2, sleeps):
    flaky = Flaky(ec2, create_subnet=["InvalidVpcID.NotFound"] * 2,
                  authorize_security_group_ingress=["InvalidGroup.NotFound"])
    made = aws.Made()
    tags = T.run_tags("c1", "r2", datetime.now(UTC), 3600)
    aws.make_network(flaky, "10.4.0.0/24", "10.4.0.0/24", tags, made, "us-east-1a")
    aws.make_group(flaky, made.vpc_id, "df-r2", "203.0.113.7/32", (8786, 8787), tags, made)
    assert made.subnet_id and made.group_id
    assert flaky.calls.count("create_subnet") == 3
    perms = ec2.describe_security_groups(GroupIds=[made.group_id])["SecurityGroups"][0]
    assert perms["IpPermissions"], perms
    # but an error that is no consistency lag is not retried
    with pytest.raises(ProvisionError, match="InvalidParameterValue"):
        aws.make_network(Flaky(ec2, create_subnet=["InvalidParameterValue"]), "10.5.0.0/24",
                         "10.5.0.0/24", tags, aws.Made(), "us-east-1a")


# -- the run's outcome and its teardown's -------------------------------------------------------
@pytest.fixture
def ephemeral_submit(ec2, sleeps, monkeypatch, tmp_path):
    """submit_ephemeral with the real EphemeralCluster teardown against moto (with a subnet that
    cannot be deleted), the cluster's creation replaced by a network, a group and an instance,
    and the job replaced by `job_outcome`."""
    from runner.config import load_cluster
    from runner.ephemeral import cluster as cluster_mod
    from runner.jobs import submit as submit_mod
    from runner.jobs.submit import SubmitResult

    spec = load_cluster(REPO / "clusters" / "aws-ephemeral-lab.yaml")
    flaky = Flaky(ec2, delete_subnet=["DependencyViolation", "*"])
    made = {}

    def create(self):
        self.ec2 = flaky
        r = make_run(ec2, self.run_id)
        made.update(r)

    monkeypatch.setattr(cluster_mod.EphemeralCluster, "create", create)
    monkeypatch.setattr(teardown, "TEARDOWN_TIMEOUT_S", 2.0)
    outcome = {}

    def fake_submit(cluster, job_path, runs_dir, progress, run_id):
        run_dir = runs_dir / run_id
        run_dir.mkdir(parents=True)
        ok = outcome["ok"]
        (run_dir / "status.json").write_text(json.dumps(
            {"run_id": run_id, "status": "succeeded" if ok else "failed"}))
        if not ok:
            raise BatchError("the job failed on purpose")
        return SubmitResult(run_id, run_dir, {"accuracy": 0.9})

    monkeypatch.setattr(submit_mod, "submit", fake_submit)
    job = tmp_path / "job.yaml"
    (tmp_path / "one.csv").write_text("text,label\na b,x\nc d,y\n")
    job.write_text(f"name: eph-td\ndata: {{source: files, path: {tmp_path / 'one.csv'}}}\n")
    lines: list[str] = []

    def go(ok: bool):
        from runner.ephemeral.run import submit_ephemeral

        outcome["ok"] = ok
        return submit_ephemeral(spec, job, tmp_path / "runs", progress=lines.append)

    return go, lines, made, flaky


def test_a_teardown_failure_never_replaces_a_job_that_succeeded(ephemeral_submit):
    go, lines, made, _ = ephemeral_submit
    result = go(ok=True)  # no exception: the job's outcome is the command's (exit code 0)
    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["status"] == "succeeded"
    assert status["teardown"]["status"] == "failed"
    assert made["made"].subnet_id in status["teardown"]["error"]
    text = "\n".join(lines)
    assert "TEARDOWN FAILED" in text and "the job's outcome above stands" in text
    assert "daskfleet gc -c " in text and "aws-ephemeral-lab.yaml" in text, text
    assert f"nothing of run {result.run_id} is left" not in text


def test_a_failing_job_keeps_its_own_error_when_the_teardown_fails_too(ephemeral_submit, tmp_path):
    go, lines, made, _ = ephemeral_submit
    with pytest.raises(BatchError, match="failed on purpose"):
        go(ok=False)
    [run_dir] = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and status["teardown"]["status"] == "failed"
    assert any("TEARDOWN FAILED" in line for line in lines)


def test_a_clean_teardown_is_recorded_as_done(ephemeral_submit):
    go, lines, made, flaky = ephemeral_submit
    flaky.fail.clear()
    result = go(ok=True)
    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["teardown"]["status"] == "done" and status["teardown"]["error"] is None, status
    assert status["workers_market"] == {"spot": 2, "on_demand": 0, "spot_refused": None}
    assert f"nothing of run {result.run_id} is left" in "\n".join(lines)
