"""Ephemeral clusters on the emulated EC2 of `daskfleet lab up --cloud aws`: `daskfleet submit JOB -c
clusters/aws-ephemeral-lab.yaml` makes a network, a security group and instances with
dask-cloudprovider's EC2Cluster (user data run by the instance controller, `docker run` by the lab's
stand-in), runs the job over TLS on private addresses, and removes everything: after a success,
after a job that fails on purpose, and, when the control process is killed mid-job, through
`daskfleet gc`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from ec2api import ec2
from jobfiles import small_job

from runner.errors import LabError
from runner.lab import Lab
from runner.lab.machine import check_prerequisites

REPO = Path(__file__).resolve().parents[2]
EPHEMERAL_LAB = REPO / "clusters" / "aws-ephemeral-lab.yaml"
pytestmark = pytest.mark.e2e


def of_run(run_id: str) -> dict:
    """Every resource of the run that the EC2 API still reports (terminated instances aside)."""
    f = [{"Name": "tag:daskfleet:run", "Values": [run_id]}]
    c = ec2()
    live = [i["InstanceId"] for r in c.describe_instances(Filters=f)["Reservations"]
            for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    return {"instances": live,
            "groups": [g["GroupId"] for g in c.describe_security_groups(Filters=f)["SecurityGroups"]],
            "key_pairs": [k["KeyName"] for k in c.describe_key_pairs(Filters=f)["KeyPairs"]],
            "subnets": [s["SubnetId"] for s in c.describe_subnets(Filters=f)["Subnets"]],
            "vpcs": [v["VpcId"] for v in c.describe_vpcs(Filters=f)["Vpcs"]]}


def nothing_left(run_id: str) -> None:
    left = of_run(run_id)
    assert not any(left.values()), left
    running = [i["InstanceId"] for r in ec2().describe_instances()["Reservations"]
               for i in r["Instances"] if i["State"]["Name"] in ("pending", "running")]
    assert running == [], running
    assert ec2().describe_key_pairs()["KeyPairs"] == []


def run_id_of(output: str) -> str:
    marker = "daskfleet:run="
    return output.split(marker, 1)[1].split()[0]


@pytest.fixture(scope="module")
def emulated_ec2(cli):
    """The emulated EC2, on the session's lab when there is one, else on a lab of no plain hosts
    that this module removes again."""
    try:
        check_prerequisites()
    except LabError as e:
        pytest.skip(str(e))
    ours = not Lab().hosts() and Lab().cloud() is None
    cli("lab", "up", "--cloud", "aws", *(["--hosts", "0"] if ours else []), timeout=180)
    yield
    if ours:
        cli("lab", "down", check=False, timeout=120)


def test_submit_on_an_ephemeral_cluster_brings_metrics_back_and_leaves_nothing(emulated_ec2, cli,
                                                                              workdir):
    job = workdir / "eph-ok.yaml"
    job.write_text(small_job("eph-ok", seed=21))
    t = time.monotonic()
    out = cli("submit", str(job), "-c", str(EPHEMERAL_LAB), "--runs-dir", str(workdir / "runs"),
              timeout=600)
    text = out.stdout + out.stderr
    print(text, f"\nsubmit took {time.monotonic() - t:.1f}s")
    run_id = run_id_of(text)
    assert "versions match on client, scheduler and workers" in text
    assert "scheduler tls://198.19.0." in text  # TLS, on the instance's private address
    assert "ephemeral: timings create=" in text and "teardown=" in text
    metrics = json.loads((workdir / "runs" / run_id / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.8 and metrics["n_workers"] == 2
    assert json.loads((workdir / "runs" / run_id / "status.json").read_text())["status"] == "succeeded"
    assert (workdir / "runs" / run_id / "report.html").exists()
    nothing_left(run_id)
    # What the instances were given: tags with the run and its expiry, IMDSv2 required, spot
    # workers, private addresses only, the run's own group, no key pair.
    f = [{"Name": "tag:daskfleet:run", "Values": [run_id]}]
    insts = [i for r in ec2().describe_instances(Filters=f)["Reservations"] for i in r["Instances"]]
    assert len(insts) == 3, insts
    for i in insts:
        tags = {t["Key"]: t["Value"] for t in i["Tags"]}
        assert tags["daskfleet:cluster"] == "aws-ephemeral-lab" and tags["daskfleet:run"] == run_id
        created, expires = (datetime.strptime(tags[k], "%Y-%m-%dT%H:%M:%SZ")
                            for k in ("daskfleet:created", "daskfleet:expires"))
        assert expires - created == timedelta(hours=1)  # max_lifetime of the file
        assert i["MetadataOptions"]["HttpTokens"] == "required"
        assert "KeyName" not in i or not i["KeyName"]
    # the two workers are spot instances, the scheduler is not (moto reports InstanceLifecycle
    # from the RunInstances market options, as EC2 does)
    assert sorted(str(i.get("InstanceLifecycle")) for i in insts) == ["None", "spot", "spot"]


def test_a_job_failing_on_purpose_still_removes_the_cluster(emulated_ec2, cli, workdir):
    (workdir / "one.csv").write_text("text,label\n" + "".join(f"w{i} x,only\n" for i in range(40)))
    job = workdir / "eph-fail.yaml"
    job.write_text(f"name: eph-fail\ndata: {{source: files, path: {workdir / 'one.csv'}}}\n")
    out = cli("submit", str(job), "-c", str(EPHEMERAL_LAB), "--runs-dir", str(workdir / "runs"),
              check=False, timeout=600)
    text = out.stdout + out.stderr
    print(text)
    assert out.returncode != 0 and "one class only" in out.stderr, text
    run_id = run_id_of(text)
    status = json.loads((workdir / "runs" / run_id / "status.json").read_text())
    assert status["status"] == "failed" and "one class only" in status["error"]
    assert f"nothing of run {run_id} is left" in text
    nothing_left(run_id)


def test_a_killed_control_process_leaves_what_gc_then_removes(emulated_ec2, cli, workdir):
    job = workdir / "eph-killed.yaml"
    job.write_text(small_job("eph-killed", seed=22, epochs=20, n_docs=6000))
    proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "submit", str(job), "-c",
                             str(EPHEMERAL_LAB), "--runs-dir", str(workdir / "runs")],
                            cwd=workdir, env=cli.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 300
        for line in proc.stdout:  # until the job is running on the cluster
            lines.append(line)
            if "dataset shipped" in line or time.monotonic() > deadline:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    text = "".join(lines)
    print(text)
    assert "dataset shipped" in text, text
    run_id = run_id_of(text)
    left = of_run(run_id)
    assert len(left["instances"]) == 3 and left["groups"], left  # the safety net is needed
    # not expired yet (max_lifetime 1h): gc keeps it ...
    kept = cli("gc", "-c", str(EPHEMERAL_LAB), timeout=300)
    assert run_id in kept.stdout and of_run(run_id) == left, kept.stdout
    # ... unless it is older than --older-than
    t = time.monotonic()
    out = cli("gc", "--older-than", "0s", "-c", str(EPHEMERAL_LAB), timeout=300)
    print(out.stdout, f"\ngc took {time.monotonic() - t:.1f}s")
    for what in (*left["instances"], *left["groups"], *left["subnets"], *left["vpcs"]):
        assert "gc: removed" in out.stdout and what in out.stdout, (what, out.stdout)
    nothing_left(run_id)
