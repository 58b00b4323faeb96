"""AWS for real, on the emulated EC2 of `daskfleet lab up --cloud aws`: the aws module and the
hashicorp/aws provider create VPC, security group, key pair and instances through the EC2 API on
loopback; each instance becomes a lab host with the image's `admin` user (sudo, no root login).

up -> status -> submit (through the SSH tunnel) -> a worker instance terminated through the API ->
status degraded -> up replaces and heals it -> down --destroy -> nothing left in the API or the lab.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ec2api import ec2
from jobfiles import MID_TRAINING, small_job, training_job
from polling import poll
from submission import Submission

from runner.cluster import Cluster
from runner.lab import Lab
from runner.lab.addresses import INTERNET_ADDRESS
from runner.lab.ec2_strict import set_vcpu_quota
from runner.lab.machine import port_open

REPO = Path(__file__).resolve().parents[2]
AWS_LAB = REPO / "clusters" / "aws-lab.yaml"
pytestmark = pytest.mark.e2e


def cluster_instances(state: tuple[str, ...] = ("pending", "running", "stopping", "stopped")):
    out = ec2().describe_instances(Filters=[{"Name": "tag:cluster", "Values": ["aws-lab"]},
                                            {"Name": "instance-state-name", "Values": list(state)}])
    return [i for r in out["Reservations"] for i in r["Instances"]]


def name_of(instance: dict) -> str:
    return next(t["Value"] for t in instance.get("Tags", []) if t["Key"] == "Name")


@pytest.fixture(scope="module")
def aws_cluster(lab_cluster, cli):
    cli("lab", "up", "--cloud", "aws", "--hosts", "3", timeout=180)
    t = time.monotonic()
    up = cli("up", "-c", str(AWS_LAB), timeout=900)
    yield {"up_output": up.stdout + up.stderr, "up_s": time.monotonic() - t}
    cli("down", "-c", str(AWS_LAB), "--destroy", check=False, timeout=600)


def test_ssh_open_to_the_world_or_private_addresses_from_outside_are_refused(lab_cluster, cli,
                                                                            workdir):
    cli("lab", "up", "--cloud", "aws", "--hosts", "3", timeout=180)
    world = workdir / "aws-world.yaml"
    world.write_text(AWS_LAB.read_text().replace("name: aws-lab", "name: aws-world")
                     .replace("admin_cidr: 198.18.128.1/32", "admin_cidr: 0.0.0.0/0"))
    out = cli("up", "-c", str(world), check=False, timeout=300)
    assert out.returncode != 0 and "admin_cidr" in out.stderr, out.stderr
    assert "whole internet" in out.stderr, out.stderr
    vpcs = ec2().describe_vpcs(Filters=[{"Name": "tag:cluster", "Values": ["aws-world"]}])
    assert vpcs["Vpcs"] == [] and ec2().describe_key_pairs()["KeyPairs"] == []
    # private addresses from a machine outside the VPC (the lab's control machine, as a
    # laptop): refused by the route it has, before anything is made
    private = workdir / "aws-private.yaml"
    private.write_text(AWS_LAB.read_text().replace("name: aws-lab", "name: aws-private")
                       .replace("use_public_ip: true", "use_public_ip: false"))
    out = cli("up", "-c", str(private), check=False, timeout=300)
    assert out.returncode != 0, out.stdout + out.stderr
    # (a machine with no default route at all is told it has no route)
    assert re.search(r"use_public_ip is false, so SSH dials the VMs' private addresses in "
                     r"198\.19\.0\.0/24, and this machine (reaches 198\.19\.0\.0/24 only through "
                     r"its default route|has no route to 198\.19\.0\.0/24)", out.stderr), out.stderr
    vpcs = ec2().describe_vpcs(Filters=[{"Name": "tag:cluster", "Values": ["aws-private"]}])
    assert vpcs["Vpcs"] == [] and ec2().describe_key_pairs()["KeyPairs"] == []


def test_a_zone_without_the_type_or_a_quota_too_small_is_refused_with_nothing_created(
        lab_cluster, cli, workdir):
    """EC2 refuses both only at RunInstances, once the VPC and subnet exist: `up` asks first."""
    cli("lab", "up", "--cloud", "aws", "--hosts", "3", timeout=180)
    base = AWS_LAB.read_text().replace("name: aws-lab", "name: aws-tight")
    zone = workdir / "aws-zone.yaml"
    zone.write_text(base.replace("  instance_type: m6i.large\n",
                                 "  instance_type: m6i.large\n  availability_zone: us-east-1e\n"))
    out = cli("up", "-c", str(zone), check=False, timeout=300)
    assert out.returncode != 0, out.stdout + out.stderr
    assert "terraform.availability_zone: us-east-1e does not offer m6i.large" in out.stderr
    assert "zones of us-east-1 that offer m6i.large: us-east-1a, us-east-1b" in out.stderr
    tight = workdir / "aws-tight.yaml"
    tight.write_text(base)
    set_vcpu_quota(Lab(), {"on-demand": 4})  # a new account's kind of quota
    try:
        out = cli("up", "-c", str(tight), check=False, timeout=300)
    finally:
        set_vcpu_quota(Lab(), None)
    assert out.returncode != 0, out.stdout + out.stderr
    assert ("3 x m6i.large (2 vCPUs) need 6 vCPUs, and the account's on-demand standard vCPU "
            "quota (L-1216C47A) is 4, 0 of them in use: 2 short") in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    vpcs = ec2().describe_vpcs(Filters=[{"Name": "tag:cluster", "Values": ["aws-tight"]}])
    assert vpcs["Vpcs"] == [] and ec2().describe_key_pairs()["KeyPairs"] == []


def test_up_on_emulated_ec2_gives_a_tls_cluster_run_by_an_unprivileged_user(aws_cluster, cli):
    out = aws_cluster["up_output"]
    print(out)
    # Every phase timed apart: boot is the wait for the new VMs' SSH, with their host keys.
    assert re.search(r"up: terraform=\d+\.\ds boot=\d+\.\ds ansible=\d+\.\ds start=\d+\.\ds", out), out
    assert "open FAILED" not in out  # the tunnel's polling stays quiet
    # the subnet's zone, chosen before anything was made (left to the emulator's pick, as to
    # AWS's, it would be us-east-1e, which has no m6i.large)
    assert "aws: availability zone us-east-1a (the first of us-east-1 that offers m6i.large" \
        in out, out
    subnets = ec2().describe_subnets(Filters=[{"Name": "tag:cluster", "Values": ["aws-lab"]}])
    assert [s["AvailabilityZone"] for s in subnets["Subnets"]] == ["us-east-1a"], subnets
    status = cli("status", "-c", str(AWS_LAB), "--json")
    st = json.loads(status.stdout)
    assert st["healthy"] is True, st
    assert {h["user"] for h in st["hosts"]} == {"admin"}  # the image's login user, not root
    # SSH, Ansible and the tunnel use the public addresses (the example's network mode); Dask
    # binds to and dials the private ones, inside the VPC
    assert all(h["address"].startswith("198.18.128.") for h in st["hosts"]), st["hosts"]
    assert st["scheduler"]["address"].startswith("tls://198.19.0.")
    running = cluster_instances(("running",))
    public = {i["PublicIpAddress"] for i in running}
    assert {h["address"] for h in st["hosts"]} == public, (public, st["hosts"])
    # this machine is outside the VPC, as a laptop is: a VM's private address does not answer
    # it (the connection waits out its timeout), its public one does
    one = running[0]
    assert port_open(one["PublicIpAddress"], 22, timeout=3)
    assert not port_open(one["PrivateIpAddress"], 22, timeout=3)
    with Cluster.from_file(AWS_LAB) as cluster:
        client = cluster.client()  # through the SSH tunnel
        assert client.scheduler.address.startswith("tls://127.0.0.1:")
        users = client.run(lambda: __import__("getpass").getuser())
        assert set(users.values()) == {"dask-aws-lab"} and len(users) == 2
        sched = next(h for h in cluster.hosts() if h.role == "scheduler")
        known = cluster.ssh().known_hosts
        # known_hosts was written by daskfleet from the keys it generated, before any connection
        assert known.parent == cluster.state_dir and sched.address in known.read_text()
        out = cluster.run_on_hosts(["sudo", "-n", "stat", "-c", "%U %a",
                                    "/etc/daskfleet/aws-lab/tls/node.key"])
        assert set(out.values()) == {"dask-aws-lab 600\n"}, out
        # The VMs' metadata service serves their user data, SSH host keys included, to root
        # (IMDSv2: with a token); a job's tasks, run as the cluster's user, are refused it.
        tasks = client.run(lambda code=READ_USER_DATA: (lambda g: (exec(code, g), g["result"]))
                           ({})[1])
        assert all(v.startswith("refused") for v in tasks.values()), tasks
        as_root = cluster.run_on_hosts(["sudo", "-n", "python3", "-c",
                                        READ_USER_DATA + "print(result)"])
        assert all("BEGIN OPENSSH PRIVATE KEY" in v for v in as_root.values()), as_root
        # Out to the internet (this machine's address there), as the group's egress rules
        # allow: HTTPS goes out, through the internet gateway (from the VM's public address),
        # another port does not (the module's group lets out 80 and 443 only)
        listeners = {port: _listen(INTERNET_ADDRESS, port) for port in (443, 8443)}
        try:
            out = {port: cluster.run_on_hosts(["python3", "-c", DIAL.format(INTERNET_ADDRESS, port)])
                   for port in listeners}
            assert set(out[443].values()) == {"connected\n"}, out
            assert {v.split(":")[0] for v in out[8443].values()} == {"failed"}, out
            peers = {listeners[443].accept()[1][0] for _ in running}
            assert peers == public, (peers, public)
        finally:
            for sock in listeners.values():
                sock.close()
    # The scheduler's port is open only inside the cluster's security group: not from here.
    with pytest.raises(OSError):
        socket.create_connection((sched.address, 8786), timeout=3).close()


DIAL = """
import socket
try:
    socket.create_connection(("{}", {}), timeout=5).close()
    print("connected")
except OSError as e:
    print("failed:", e)
"""


def _listen(address: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(16)
    sock.settimeout(10)
    return sock


# The instance's user data through its metadata service (IMDSv2), as any process reads it
READ_USER_DATA = """
import urllib.request as u
try:
    t = u.urlopen(u.Request("http://169.254.169.254/latest/api/token", method="PUT",
                            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}),
                  timeout=5).read().decode()
    result = u.urlopen(u.Request("http://169.254.169.254/latest/user-data",
                                 headers={"X-aws-ec2-metadata-token": t}),
                       timeout=5).read().decode()
except OSError as e:
    result = f"refused: {e}"
"""


def test_a_second_up_replaces_no_instance_and_changes_nothing(aws_cluster, cli):
    before = {name_of(i): i["InstanceId"] for i in cluster_instances(("running",))}
    t = time.monotonic()
    warm = cli("up", "-c", str(AWS_LAB), timeout=600)
    print(f"cold up {aws_cluster['up_s']:.1f}s, warm up {time.monotonic() - t:.1f}s")
    print(warm.stdout)
    assert "changed=0; started: nothing (all running)" in warm.stdout, warm.stdout
    assert {name_of(i): i["InstanceId"] for i in cluster_instances(("running",))} == before


def test_a_host_presenting_another_key_is_named_with_both_fingerprints(aws_cluster, tmp_path):
    from runner.cluster.ssh import SSHSettings, wait_for_ssh
    from runner.errors import HostError
    from runner.provision import hostkeys

    with Cluster.from_file(AWS_LAB) as cluster:
        worker = next(h for h in cluster.hosts() if h.name == "worker-2")
        other = hostkeys.ensure(tmp_path / "k", ["impostor"])["impostor"]["public_key"]
        hostkeys.write_known_hosts(tmp_path / "known_hosts", {worker.address: other})
        ssh = SSHSettings(cluster.ssh().private_key, tmp_path / "known_hosts", connect_timeout=3)
        with pytest.raises(HostError) as e:
            wait_for_ssh([worker], ssh, timeout=5, poll=1)
    msg = str(e.value)
    assert "worker-2" in msg and "host key mismatch" in msg and msg.count("SHA256:") == 2, msg
    assert hostkeys.fingerprint(other) in msg


def test_root_login_is_refused_on_the_instances(aws_cluster):
    import paramiko

    from runner.cluster.hosts import Host
    from runner.cluster.ssh import connect

    with Cluster.from_file(AWS_LAB) as cluster:
        host = cluster.hosts()[0]
        as_root = Host(host.name, host.address, host.role, "root", host.port)
        with pytest.raises(paramiko.AuthenticationException), connect(as_root, cluster.ssh()) as c:
            c.run("true")


def test_an_instance_rebooted_from_inside_boots_again_and_its_worker_rejoins(aws_cluster, cli):
    """systemd's own reboot inside an instance (no stand-in): the instance stays running in the
    API, its host boots again with a fresh /run, and the supervisor's unit starts its worker."""
    from runner.cluster.ssh import connect

    victim = next(i for i in cluster_instances(("running",)) if name_of(i) == "aws-lab-worker-2")
    with Cluster.from_file(AWS_LAB) as cluster:
        host = next(h for h in cluster.hosts() if h.name == "worker-2")
        with connect(host, cluster.ssh()) as c:
            c.run("sudo touch /run/e2e-mark && sudo systemctl reboot --no-block")
    log = Lab().cloud_dir / "controller.log"
    poll(lambda: f"{victim['InstanceId']}: rebooted from inside" in log.read_text(), 90,
         "the controller to boot the rebooted instance again")
    poll(lambda: cli("status", "-c", str(AWS_LAB), check=False, timeout=120).returncode == 0,
         90, "status healthy again, with no `up`")
    with Cluster.from_file(AWS_LAB) as cluster:
        host = next(h for h in cluster.hosts() if h.name == "worker-2")
        with connect(host, cluster.ssh()) as c:
            assert c.run("ls /run/e2e-mark", warn=True).failed  # a new boot
    after = next(i for i in cluster_instances() if i["InstanceId"] == victim["InstanceId"])
    assert after["State"]["Name"] == "running"


def test_submit_runs_the_job_through_the_tunnel(aws_cluster, cli, workdir):
    job = workdir / "aws-small.yaml"
    job.write_text(small_job("aws-small", seed=1, epochs=3))
    out = cli("submit", str(job), "-c", str(AWS_LAB), "--runs-dir", str(workdir / "runs"),
              timeout=600)
    assert "versions match" in out.stdout, out.stdout
    run_dir = Path(out.stdout.split("artifacts in ")[-1].split()[0])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.8 and metrics["n_workers"] == 2, metrics


def test_an_attached_submit_rides_out_the_scheduler_vm_cut_for_10s_through_the_tunnel(
        aws_cluster, cli, workdir):
    """A blip on a cloud cluster, where the client reaches the scheduler only through the SSH
    tunnel: the scheduler VM's link (the tunnel's SSH connection, the workers' links to it) cut
    for 10 s mid-training; the attached submit rides it out."""
    st = json.loads(cli("status", "-c", str(AWS_LAB), "--json").stdout)
    address = next(h["address"] for h in st["hosts"] if h["process"] == "scheduler")
    vm = next(i["InstanceId"] for i in cluster_instances(("running",))
              if i["PublicIpAddress"] == address)
    job = workdir / "aws-train.yaml"
    job.write_text(training_job("aws-train", epochs=20))
    runs = workdir / "aws-cut-runs"
    s = Submission(cli, job, runs, AWS_LAB)
    try:
        s.wait_for(MID_TRAINING)
        cli("lab", "cut", vm)
        time.sleep(10)
        cli("lab", "heal", vm)
        t_heal = time.monotonic()
        assert s.finish(900) == 0, s.out + s.err
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
        cli("lab", "heal", vm, check=False)
    assert s.ended > t_heal  # the cut landed mid-run: the job could not end while it lasted
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "succeeded" and status["accuracy"] > 0.5, status
    assert status["cluster_events"]["lost_workers"] == [], status["cluster_events"]


def test_a_terminated_worker_instance_is_replaced_and_healed_by_up(aws_cluster, cli):
    victim = next(i for i in cluster_instances(("running",)) if name_of(i) == "aws-lab-worker-1")
    ec2().terminate_instances(InstanceIds=[victim["InstanceId"]])
    poll(lambda: cli("status", "-c", str(AWS_LAB), check=False, timeout=120).returncode == 1,
         90, "status to report the terminated worker")
    # Ctrl-C while Terraform creates the replacement: it finishes that call, saves its state,
    # and the command says so; the VM is in the state, so the next `up` leaves no VM untracked
    # (one cut short, which Terraform marks tainted, it replaces, without asking for --yes)
    up = subprocess.Popen([sys.executable, "-m", "runner.cli", "up", "-c", str(AWS_LAB)],
                          cwd=cli.workdir, env=cli.env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, start_new_session=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        made = poll(lambda: [i for i in cluster_instances(("pending", "running"))
                             if name_of(i) == "aws-lab-worker-1"], 300,
                    "Terraform to launch the replacement of worker-1")[0]
        os.killpg(up.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
        out, err = up.communicate(timeout=400)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode != 0, out + err
    assert "terraform apply interrupted: it finished the calls in flight and saved its state" \
        in err and 'aws_instance.this["worker-1"]' in err, out + err
    assert "Run the same command again to finish" in err, err
    healed = cli("up", "-c", str(AWS_LAB), timeout=600)
    assert "started: worker-1-w0@worker-1" in healed.stdout, healed.stdout
    st = json.loads(cli("status", "-c", str(AWS_LAB), "--json").stdout)
    assert st["healthy"] is True
    running = {name_of(i): i["InstanceId"] for i in cluster_instances(("running",))}
    assert sorted(running) == ["aws-lab-scheduler", "aws-lab-worker-1", "aws-lab-worker-2"]
    assert running["aws-lab-worker-1"] != victim["InstanceId"]  # a new VM, same host key
    # one worker-1 VM, tracked: the one made under the interrupted apply, or its replacement
    # when Terraform had marked it tainted (then terminated, and said so)
    assert len([i for i in cluster_instances() if name_of(i) == "aws-lab-worker-1"]) == 1
    if running["aws-lab-worker-1"] != made["InstanceId"]:
        assert "its creation was cut short" in healed.stdout, healed.stdout


def test_fewer_workers_is_refused_until_yes_then_retires_them_before_their_vm_goes(
        aws_cluster, cli, workdir):
    one = workdir / "aws-lab-1-worker.yaml"  # the same cluster (name, state), one worker VM
    one.write_text(AWS_LAB.read_text().replace("worker_count: 2", "worker_count: 1"))
    before = {name_of(i): i["InstanceId"] for i in cluster_instances(("running",))}
    refused = cli("up", "-c", str(one), check=False, timeout=600)
    out = refused.stdout + refused.stderr
    assert refused.returncode == 1, out
    # the plan it would apply is shown, the machine named, and nothing changed
    assert "the plan destroys or replaces 1 machine(s)" in out and 'this["worker-2"]' in out, out
    assert "daskfleet up --yes" in out and "Nothing was changed" in out, out
    assert {name_of(i): i["InstanceId"] for i in cluster_instances(("running",))} == before
    done = cli("up", "-c", str(one), "--yes", timeout=600)
    out = done.stdout + done.stderr
    # once accepted, its workers were retired through the scheduler, then Terraform applied
    assert out.index("the plan destroys") < out.index("retiring the workers of the machines "
                                                      "that go (worker-2)"), out
    running = {name_of(i) for i in cluster_instances(("running",))}
    assert running == {"aws-lab-scheduler", "aws-lab-worker-1"}, running
    st = json.loads(cli("status", "-c", str(one), "--json").stdout)
    assert st["healthy"] is True and len(st["workers"]) == 1


def test_down_destroy_leaves_no_instance_key_vpc_or_group(aws_cluster, cli):
    # a damaged record (a crash mid-write on an older version, a bad edit): `down` reads the
    # hosts from Terraform's own state, says so, and still stops and destroys everything
    record = Path(cli.env["DASKFLEET_STATE_DIR"]) / "aws-lab" / "state.json"
    assert record.is_file()
    record.write_text('{"hosts": [')
    out = cli("down", "-c", str(AWS_LAB), "--destroy", timeout=600)
    said = out.stdout + out.stderr
    assert said.count(f"{record} is damaged; the hosts come from Terraform's state") == 1, said
    assert "kept the cluster's CA" in out.stdout, out.stdout  # what it keeps, it says
    api = ec2()
    assert cluster_instances() == []
    assert [k["KeyName"] for k in api.describe_key_pairs()["KeyPairs"]
            if k["KeyName"].startswith("aws-lab")] == []
    assert [v["VpcId"] for v in api.describe_vpcs()["Vpcs"] if not v["IsDefault"]] == []
    groups = api.describe_security_groups(Filters=[{"Name": "tag:cluster",
                                                    "Values": ["aws-lab"]}])["SecurityGroups"]
    assert groups == []
    poll(lambda: not Lab().instance_hosts(), 30, "the lab to remove the instance hosts")
