"""Ephemeral clusters on the emulated EC2 of `daskfleet lab up --cloud aws`: `daskfleet submit JOB -c
clusters/aws-ephemeral-lab.yaml` makes a network, a security group and instances with
dask-cloudprovider's EC2Cluster (user data run by the instance controller, `docker run` by the lab's
stand-in), runs the job over TLS (this machine, outside the VPC, dials the scheduler's public
address; the workers dial its private one), and removes everything: after a success,
after a job that fails on purpose, and, when the control process is killed mid-job, through
`daskfleet gc`. With spot refused (as EC2 refuses it), the run goes on-demand when the file allows
it (its workers reading their corpus from the lab's object store) and fails naming the key when
it does not; with the submit killed and no `gc`, every instance
powers itself off by the run's expiry.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dask.config
import pytest
import yaml
from ec2api import ec2
from jobfiles import small_job
from objectstore import object_store

from runner.errors import LabError
from runner.lab import Lab
from runner.lab.ec2_strict import refuse_spot
from runner.lab.machine import check_prerequisites
from runner.lab.standin import registry_pulls

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
            "gateways": [g["InternetGatewayId"]
                         for g in c.describe_internet_gateways(Filters=f)["InternetGateways"]],
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


def refused_submit(cli, workdir: Path, name: str, seed: int, **ephemeral) -> str:
    """A small job submitted with the lab file's `ephemeral:` keys changed as given; the run
    must fail: its output."""
    data = yaml.safe_load(EPHEMERAL_LAB.read_text())
    data["ephemeral"].update(ephemeral)
    cluster = workdir / "clusters" / f"{name}.yaml"
    cluster.parent.mkdir(exist_ok=True)
    cluster.write_text(yaml.safe_dump(data))
    job = workdir / f"{name}-job.yaml"
    job.write_text(small_job(name, seed=seed))
    out = cli("submit", str(job), "-c", str(cluster), "--runs-dir", str(workdir / "runs"),
              check=False, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    return text


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
    registry_log = Lab().cloud_dir / "registry.log"
    pulls_before = len(registry_pulls(registry_log))
    t = time.monotonic()
    out = cli("submit", str(job), "-c", str(EPHEMERAL_LAB), "--runs-dir", str(workdir / "runs"),
              timeout=600)
    text = out.stdout + out.stderr
    print(text, f"\nsubmit took {time.monotonic() - t:.1f}s")
    run_id = run_id_of(text)
    assert "versions match on client, scheduler and workers" in text
    # TLS, at the scheduler's public address: this machine is outside the VPC (its private
    # addresses are not routed here), and the workers joined at the private one
    assert "scheduler tls://198.18.128." in text, text
    assert "internet gateway igw-" in text and "route 0.0.0.0/0 -> igw-" in text, text
    assert "ephemeral: timings create=" in text and "teardown=" in text
    metrics = json.loads((workdir / "runs" / run_id / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.8 and metrics["n_workers"] == 2
    assert json.loads((workdir / "runs" / run_id / "status.json").read_text())["status"] == "succeeded"
    assert (workdir / "runs" / run_id / "report.html").exists()
    nothing_left(run_id)
    # What the instances were given: tags with the run and its expiry, IMDSv2 required, spot
    # workers, the run's own group, no key pair.
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
    # each pulled its image from the registry on the lab's internet, from its public address
    # (through the internet gateway)
    # (the instances are terminated now, their public addresses released: each of the three
    # pulls came from an address of its own on the lab's internet, not this machine's)
    pulls = registry_pulls(registry_log)[pulls_before:]
    assert len({a for a, _ in pulls}) == len(pulls) == 3, pulls
    assert all(a.startswith("198.18.128.") and a != "198.18.128.1" for a, _ in pulls), pulls
    # in the first zone that offers m6i.large, checked before anything was made: left to the
    # emulator's pick (as to AWS's), the subnet would be in us-east-1e, which lacks it
    assert {i["Placement"]["AvailabilityZone"] for i in insts} == {"us-east-1a"}, insts
    assert "subnet subnet-" in text and "(198.19.0.0/24, us-east-1a)" in text, text
    # the TLS key went to each instance through its join, after its console named its agent's
    # key: what the EC2 API serves of the user data holds the join certificate, no private key
    assert text.count(" joined: its TLS files handed over at ") == 3, text
    for i in insts:
        user_data = base64.b64decode(ec2().describe_instance_attribute(
            InstanceId=i["InstanceId"], Attribute="userData")["UserData"]["Value"]).decode()
        inherited = re.search(r'DASK_INTERNAL_INHERIT_CONFIG=\\?"([A-Za-z0-9+/=]+)', user_data)
        assert inherited is not None, user_data
        config = dask.config.deserialize(inherited[1])
        assert config["distributed"]["comm"]["tls"]["ca-file"] == "/run/daskfleet/tls/ca.pem"
        assert "BEGIN CERTIFICATE" in user_data and "PRIVATE KEY" not in user_data + str(config)


def test_private_addresses_from_outside_the_vpc_are_refused_with_nothing_made(emulated_ec2, cli,
                                                                              workdir):
    """The private mode (an existing subnet, behind a NAT) from this machine, which is outside
    the VPC as a laptop is: refused before anything is launched, naming the key."""
    c = ec2()
    vpc = c.create_vpc(CidrBlock="198.19.0.0/16")["Vpc"]["VpcId"]
    subnet = c.create_subnet(VpcId=vpc, CidrBlock="198.19.0.0/24",
                             AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    try:
        text = refused_submit(cli, workdir, "eph-private", 22, network={"subnet_id": subnet})
        assert "ephemeral.network.subnet_id: the instances get private addresses only" in text
        assert "Nothing was created" in text, text
        running = [i for r in c.describe_instances()["Reservations"] for i in r["Instances"]
                   if i["State"]["Name"] in ("pending", "running")]
        assert running == [] and c.describe_key_pairs()["KeyPairs"] == []
        groups = c.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])
        assert [g["GroupName"] for g in groups["SecurityGroups"]] == ["default"]
    finally:
        c.delete_subnet(SubnetId=subnet)
        c.delete_vpc(VpcId=vpc)


@pytest.fixture
def private_subnet_behind_a_nat(emulated_ec2, cli):
    """A VPC as a private deployment has it: a public subnet with an internet gateway route and a
    NAT gateway (its Elastic IP), and a private subnet whose 0.0.0.0/0 goes to the NAT; this
    machine reaches the VPC over the lab's client VPN. Yields (private subnet, Elastic IP,
    this machine's VPN address, a subnet of the VPC with no way out)."""
    c = ec2()
    vpc = c.create_vpc(CidrBlock="198.19.0.0/16")["Vpc"]["VpcId"]
    # public (to the internet gateway), private (to the NAT), and one left on the main table
    subnets = [c.create_subnet(VpcId=vpc, CidrBlock=f"198.19.{n}.0/24",
                               AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
               for n in (1, 2, 3)]
    igw = c.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    c.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    eip = c.allocate_address(Domain="vpc")
    nat = c.create_nat_gateway(SubnetId=subnets[0], AllocationId=eip["AllocationId"])[
        "NatGateway"]["NatGatewayId"]
    for subnet, target in zip(subnets[:2], ({"GatewayId": igw}, {"NatGatewayId": nat}),
                              strict=True):
        table = c.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        c.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", **target)
        c.associate_route_table(RouteTableId=table, SubnetId=subnet)
    cli("lab", "vpn", subnets[1])
    vpn = Lab().cloud()["vpn"]
    try:
        yield subnets[1], eip["PublicIp"], vpn["address"], subnets[2]
    finally:
        cli("lab", "vpn", "--off", check=False)
        c.delete_nat_gateway(NatGatewayId=nat)
        assert not Lab().cloud().get("vpn")
        # the NAT gateway's host goes with it (the controller reads NAT gateways every 2 s)
        deadline = time.monotonic() + 10
        while any(n.startswith("dfec2-nat-") for n in os.listdir("/run/netns")):
            assert time.monotonic() < deadline, os.listdir("/run/netns")
            time.sleep(0.2)


def test_a_private_subnet_behind_a_nat_gateway_runs_from_inside_the_vpc(
        private_subnet_behind_a_nat, cli, workdir):
    """The private mode, as a deployment with a NAT gateway and a control machine inside the VPC
    (here: over the lab's client VPN) runs it: instances on private addresses only, the client
    dialing the scheduler's private address, and everything the instances fetch from outside
    (their image, the corpus in the object store) going out from the NAT gateway's address."""
    subnet, nat_address, vpn_address, no_way_out = private_subnet_behind_a_nat
    # inside the VPC, a subnet with no NAT is still refused, before anything is made: its
    # instances could not pull their image
    text = refused_submit(cli, workdir, "eph-no-nat", 27, network={"subnet_id": no_way_out},
                          admin_cidr=f"{vpn_address}/32")
    assert f"subnet_id {no_way_out}: its route table sends 0.0.0.0/0 nowhere" in text, text
    assert "Nothing was created" in text and "daskfleet:run=" not in text, text
    cluster = variant(workdir, "eph-nat", network={"subnet_id": subnet}, workers=1,
                      spot_workers=False, admin_cidr=f"{vpn_address}/32")
    job = workdir / "eph-nat.yaml"
    job.write_text(_store_job(cli, "eph-nat", 26))
    registry_log = Lab().cloud_dir / "registry.log"
    pulls_before = len(registry_pulls(registry_log))
    out = cli("submit", str(job), "-c", str(cluster), "--runs-dir", str(workdir / "runs"),
              timeout=600)
    text = out.stdout + out.stderr
    print(text)
    run_id = run_id_of(text)
    metrics = json.loads((workdir / "runs" / run_id / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.8 and metrics["n_workers"] == 1, metrics
    insts = instances_of(run_id)
    assert len(insts) == 2 and all(not i.get("PublicIpAddress") for i in insts), insts
    assert all(i["PrivateIpAddress"].startswith("198.19.2.") for i in insts), insts
    assert "scheduler tls://198.19.2." in text, text
    # each instance pulled its image once, and the registry saw the NAT gateway's address
    pulls = registry_pulls(registry_log)[pulls_before:]
    assert [address for address, _ in pulls] == [nat_address] * 2, pulls
    assert len({image for _, image in pulls}) == 1 and "dask" in pulls[0][1], pulls
    nothing_left(run_id)


def test_an_admin_cidr_without_this_machine_fails_at_the_join_naming_it(emulated_ec2, cli,
                                                                        workdir):
    """A wrong admin_cidr (another address than this machine's): the scheduler boots and its
    join agent prints its key, but the run's group keeps this machine out. The run fails at the
    join, a grace after the key was printed (not ready_timeout later), naming the key, and
    removes everything."""
    # an address on the lab's internet, not this machine's
    text = refused_submit(cli, workdir, "eph-wrong-cidr", 23, admin_cidr="198.18.128.2/32")
    print(text)
    assert "join agent listens (its key is on its console), but this machine could not reach " \
           "198.18.128." in text and ":8785 for 45s" in text, text
    assert "only ephemeral.admin_cidr reach tcp 8785" in text, text
    assert " joined: " not in text, text
    nothing_left(run_id_of(text))


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


def submit_then_kill(cli, workdir: Path, job: Path, cluster: Path, until: str) -> str:
    """`daskfleet submit`, SIGKILLed once a line of its output holds `until` (or after 300 s);
    returns its output so far."""
    proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "submit", str(job), "-c",
                             str(cluster), "--runs-dir", str(workdir / "runs")],
                            cwd=workdir, env=cli.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 300
        for line in proc.stdout:
            lines.append(line)
            if until in line or time.monotonic() > deadline:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    return "".join(lines)


def test_a_killed_control_process_leaves_what_gc_then_removes(emulated_ec2, cli, workdir):
    job = workdir / "eph-killed.yaml"
    job.write_text(small_job("eph-killed", seed=22, epochs=20, n_docs=6000))
    text = submit_then_kill(cli, workdir, job, EPHEMERAL_LAB, "dataset shipped")
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


# -- watchdogs: spot refused, and the instances' own hard stop ---------------------------------
def variant(workdir: Path, name: str, **ephemeral) -> Path:
    """The lab's ephemeral cluster file with some `ephemeral:` keys changed."""
    data = yaml.safe_load(EPHEMERAL_LAB.read_text())
    data["ephemeral"].update(ephemeral)
    path = workdir / "clusters" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def _store_job(cli, name: str, seed: int) -> str:
    """A small job whose corpus (3,000 synthetic documents) is in the lab's object store, which
    this adds to the running lab; its key and endpoint in the job's storage_options."""
    import pandas as pd

    from runner.batch.synthetic import generate

    store = object_store(cli)  # added to the running lab, as it is
    s3 = store.client()
    s3.create_bucket(Bucket=name)
    docs = pd.DataFrame(list(generate(3000, 3, 1500, 25, 0.02, seed)), columns=["text", "label"])
    s3.put_object(Bucket=name, Key="corpus/docs.parquet", Body=docs.to_parquet(index=False))
    options = store.storage_options()
    return yaml.safe_dump({"name": name, "data": {"source": "files",
                                                  "path": f"s3://{name}/corpus/*.parquet",
                                                  "storage_options": options},
                           "features": {"n_features": 16384},
                           "model": {"kind": "sgd", "epochs": 2}})


def instances_of(run_id: str) -> list[dict]:
    f = [{"Name": "tag:daskfleet:run", "Values": [run_id]}]
    return [i for r in ec2().describe_instances(Filters=f)["Reservations"] for i in r["Instances"]]


@pytest.fixture
def spot_refused(emulated_ec2):
    """The emulated EC2 refuses spot launches as EC2 does without spot capacity."""
    lab = Lab()
    refuse_spot(lab, "InsufficientInstanceCapacity")
    yield
    refuse_spot(lab, None)


def test_spot_refused_runs_on_on_demand_workers_when_the_file_allows_it(spot_refused, cli,
                                                                       workdir):
    cluster = variant(workdir, "eph-fallback", spot_fallback="on_demand")
    job = workdir / "eph-fallback.yaml"
    # its corpus is in the lab's object store: the instances (public addresses, as S3 is
    # reached through an internet gateway) read it where it lives; nothing goes through here
    job.write_text(_store_job(cli, "eph-fallback", seed=23))
    out = cli("submit", str(job), "-c", str(cluster), "--runs-dir", str(workdir / "runs"),
              timeout=600)
    text = out.stdout + out.stderr
    print(text)
    run_id = run_id_of(text)
    assert "read by the workers" in text and "shipped" not in text, text
    metrics = json.loads((workdir / "runs" / run_id / "metrics.json").read_text())
    assert metrics["rows"] == 3000 and metrics["accuracy"] > 0.8, metrics
    assert ("EC2 refused spot capacity (InsufficientInstanceCapacity: " in text
            and "2 of 2 worker(s) run on-demand (spot_fallback: on_demand)" in text), text
    status = json.loads((workdir / "runs" / run_id / "status.json").read_text())
    assert status["status"] == "succeeded" and status["teardown"]["status"] == "done"
    assert status["workers_market"]["on_demand"] == 2 and status["workers_market"]["spot"] == 0
    assert status["workers_market"]["spot_refused"].startswith("InsufficientInstanceCapacity")
    # every instance of the run is on-demand (moto reports InstanceLifecycle spot otherwise)
    insts = instances_of(run_id)
    assert len(insts) == 3 and all(i.get("InstanceLifecycle") is None for i in insts), insts
    nothing_left(run_id)


def test_spot_refused_fails_naming_the_key_when_the_file_does_not_allow_it(spot_refused, cli,
                                                                          workdir):
    job = workdir / "eph-nospot.yaml"
    job.write_text(small_job("eph-nospot", seed=24))
    out = cli("submit", str(job), "-c", str(EPHEMERAL_LAB), "--runs-dir", str(workdir / "runs"),
              check=False, timeout=600)
    text = out.stdout + out.stderr
    print(text)
    assert out.returncode != 0, text
    assert "EC2 refused spot capacity for a worker (InsufficientInstanceCapacity" in out.stderr
    assert f"{EPHEMERAL_LAB}: ephemeral.spot_fallback is `fail`" in out.stderr
    assert "set `spot_fallback: on_demand`" in out.stderr
    run_id = run_id_of(text)
    status = json.loads((workdir / "runs" / run_id / "status.json").read_text())
    assert status["status"] == "failed" and "spot_fallback" in status["error"]
    # the job never ran, and nothing of the run (the on-demand scheduler included) is left
    assert not (workdir / "runs" / run_id / "metrics.json").exists()
    nothing_left(run_id)


def test_a_killed_submit_leaves_instances_that_power_themselves_off_at_max_lifetime(
        emulated_ec2, cli, workdir):
    """No control machine, no `gc`: each instance's own `shutdown -P +MINUTES` (the first thing
    its user data runs) ends it, terminated through EC2's shutdown behaviour, by the run's
    expiry. The scheduler's idle timeout is set far beyond it, so that it is not what ends it."""
    # 2m, the shortest allowed: each instance powers off a whole minute after its boot
    cluster = variant(workdir, "eph-hardstop", max_lifetime="2m", idle_timeout="30m")
    job = workdir / "eph-hardstop.yaml"
    job.write_text(small_job("eph-hardstop", seed=25, epochs=20, n_docs=6000))
    text = submit_then_kill(cli, workdir, job, cluster, "worker(s) joined")
    print(text)
    assert "worker(s) joined" in text and "powers itself off at" in text, text
    run_id = run_id_of(text)
    insts = instances_of(run_id)
    assert len(insts) == 3 and all(i["State"]["Name"] == "running" for i in insts), insts
    tags = {t["Key"]: t["Value"] for t in insts[0]["Tags"]}
    expires = datetime.strptime(tags["daskfleet:expires"], "%Y-%m-%dT%H:%M:%SZ") \
        .replace(tzinfo=UTC)
    give_up = expires + timedelta(minutes=1)  # max_lifetime + 1 min
    states = {}
    while datetime.now(UTC) < give_up:
        states = {i["InstanceId"]: i["State"]["Name"] for i in instances_of(run_id)}
        if all(s == "terminated" for s in states.values()):
            break
        time.sleep(5)
    ended = datetime.now(UTC)
    print(f"states {states} at {ended:%H:%M:%S}; expiry {expires:%H:%M:%S}")
    assert all(s == "terminated" for s in states.values()), (states, f"expiry {expires}")
    # ... and each ended itself (its `shutdown`, acted on as EC2 would), not through the API
    controller_log = (Lab().cloud_dir / "controller.log").read_text()
    for iid in states:
        assert f"{iid}: shut down from inside: terminate" in controller_log, iid
    # what costs nothing (group, subnet, VPC) waits for gc, as documented
    out = cli("gc", "--older-than", "0s", "-c", str(cluster), timeout=300)
    assert run_id in out.stdout or "removed" in out.stdout, out.stdout
    nothing_left(run_id)
