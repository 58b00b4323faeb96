"""Ephemeral clusters without a cloud: tags and expiry, the user data EC2Cluster renders (pinned
versions, TLS), the RunInstances hardening, refusal on a version mismatch before the job runs,
the price table, cluster-file validation, the data hand-over and the lab's docker stand-in."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from runner.config import load_cluster
from runner.ephemeral import prices
from runner.ephemeral import tags as T
from runner.errors import ConfigError, EnvironmentMismatchError
from runner.provision.lock import derive_lock

REPO = Path(__file__).resolve().parents[2]
LAB_FILE = REPO / "clusters" / "aws-ephemeral-lab.yaml"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


# -- tags and expiry ---------------------------------------------------------------------------
def test_run_tags_name_cluster_run_and_an_iso_utc_expiry():
    tags = T.run_tags("c1", "20260102-run", NOW, 7200)
    assert tags[T.CLUSTER] == "c1" and tags[T.RUN] == "20260102-run"
    assert tags[T.EXPIRES] == "2026-01-02T05:04:05Z" and tags[T.CREATED] == "2026-01-02T03:04:05Z"
    assert tags["creator"] == "daskfleet" and tags["cluster"] == "c1"


def test_expiry_decides_what_gc_may_remove():
    tags = T.run_tags("c1", "r", NOW, 3600)
    assert T.expired(tags, NOW + timedelta(minutes=59)) is None
    assert "expired 2026-01-02T04:04:05Z" in T.expired(tags, NOW + timedelta(hours=1))
    # --older-than makes a young resource eligible by its age
    assert T.expired(tags, NOW + timedelta(minutes=30), older_than_s=1800) is not None
    assert T.expired(tags, NOW + timedelta(minutes=29), older_than_s=1800) is None
    # never anything without our run tag
    assert T.expired({"creator": "daskfleet", T.EXPIRES: "2000-01-01T00:00:00Z"}, NOW, 0) is None


# -- what EC2Cluster is given ------------------------------------------------------------------
@pytest.fixture
def restore_dask_config():
    import dask
    import dask_cloudprovider.aws  # noqa: F401 - their defaults join the config at import: keep them
    import distributed  # noqa: F401

    saved = copy.deepcopy(dask.config.config)
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)


def join_kwargs(folder: Path) -> dict:
    """What EphemeralCluster gives the cluster class for the join (runner/ephemeral/join.py);
    unused until an instance is launched."""
    from runner.ephemeral.join import JoinIdentity

    return {"join_identity": JoinIdentity.make(folder, 3600), "console": lambda iid: "",
            "join_timeout": 600.0, "say": print}


def _decode_inherited(command: str) -> dict:
    import dask

    encoded = command.split('DASK_INTERNAL_INHERIT_CONFIG="', 1)[1].split('"', 1)[0]
    return dask.config.deserialize(encoded)


def test_user_data_runs_the_matching_image_with_every_pin_and_tls_on(restore_dask_config,
                                                                     tmp_path):
    from runner.ephemeral.ec2cluster import ec2_cluster_class
    from runner.ephemeral.environment import default_image, env_vars

    lock = derive_lock()
    Cls = ec2_cluster_class()

    async def render():  # an unstarted cluster (no VM is made): its scheduler's user data
        cluster = Cls(root_device="/dev/xvda", started=[], hard_stop="shutdown -P +60",
                      spot_fallback="fail", spec_source="c.yaml", asynchronous=True, region="us-east-1",
                      ami="ami-1", instance_type="m6i.large", vpc="vpc-1", subnet_id="subnet-1",
                      security_groups=["sg-1"], docker_image=default_image(lock), security=True,
                      env_vars=env_vars(lock), use_private_ip=True, bootstrap=False, n_workers=1,
                      **join_kwargs(tmp_path))
        sched = cluster.scheduler_class(**cluster.scheduler_options)
        return cluster, cluster.render_process_cloud_init(sched)

    cluster, user_data = asyncio.run(render())
    doc = yaml.safe_load(user_data)
    run = next(c for c in doc["runcmd"] if c.startswith("docker run"))
    dask_version = lock.version_of("dask")
    assert f"ghcr.io/dask/dask:{dask_version}-py{lock.python}" in run
    for name in ("dask", "distributed", "scikit-learn", "dask-ml", "numpy", "pandas"):
        assert f"{name}=={lock.version_of(name)}" in run, name
    assert "shutdown -h now" in doc["runcmd"]  # the instance goes when Dask exits
    config = _decode_inherited(run)
    comm = config["distributed"]["comm"]
    assert comm["require-encryption"] is True and comm["default-scheme"] == "tls"
    # the TLS files' paths on the node (the join hands them over): no key in the user data
    assert comm["tls"]["ca-file"] == "/run/daskfleet/tls/ca.pem"
    assert comm["tls"]["worker"]["key"] == "/run/daskfleet/tls/key.pem"
    assert "PRIVATE KEY" not in user_data and "PRIVATE KEY" not in str(config)
    assert cluster.security.require_encryption and cluster.protocol == "tls"


def test_run_instances_hook_encrypts_the_images_root_volume_and_requires_imdsv2():
    from runner.ephemeral.ec2cluster import harden_run_instances

    params = {"BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "VirtualName": "sda1",
                                       "Ebs": {"VolumeSize": 20, "Encrypted": False}}]}
    harden_run_instances("/dev/xvda")(params=params)
    [m] = params["BlockDeviceMappings"]
    assert m["DeviceName"] == "/dev/xvda" and m["Ebs"]["Encrypted"] is True and "VirtualName" not in m
    assert params["MetadataOptions"]["HttpTokens"] == "required"
    assert params["MetadataOptions"]["HttpPutResponseHopLimit"] == 1


# -- the environment check ---------------------------------------------------------------------
class FakeClient:
    def __init__(self, worker_pkgs: dict | None = None, origin: str = "/w/daskfleet-abc.zip/runner/"):
        from runner.provision.lock import WORKER_ROOTS, closure

        lock = derive_lock()
        mine = {n: lock.version_of(n) for n in sorted(closure(WORKER_ROOTS))}
        mine.update(daskfleet="0.1.0", python="3.11.7")
        self.versions = {"client": {"packages": mine}, "scheduler": {"packages": dict(mine)},
                         "workers": {"tls://w1:1": {"packages": {**mine, **(worker_pkgs or {})}}}}
        self.origin = origin

    def get_versions(self, packages):
        return self.versions

    def run_on_scheduler(self, fn):
        return self.origin

    def run(self, fn):
        return {"tls://w1:1": self.origin}


def test_a_package_version_differing_on_a_worker_is_refused_naming_it():
    from runner.ephemeral.environment import check_environment

    check_environment(FakeClient(), "daskfleet-abc.zip")  # the same: accepted
    with pytest.raises(EnvironmentMismatchError, match=r"worker tls://w1:1: scikit-learn 0\.0\.1"):
        check_environment(FakeClient({"scikit-learn": "0.0.1"}), "daskfleet-abc.zip")


def test_nodes_running_other_project_code_are_refused():
    from runner.ephemeral.environment import check_environment

    with pytest.raises(EnvironmentMismatchError, match="site-packages/runner"):
        check_environment(FakeClient(origin="/opt/conda/site-packages/runner/__init__.py"),
                          "daskfleet-abc.zip")


def test_a_mismatch_refuses_before_the_job_runs_and_the_run_is_recorded_failed(tmp_path, monkeypatch):
    from runner.jobs import submit as submit_mod

    ran = []
    monkeypatch.setattr("runner.batch.run_job", lambda *a, **k: ran.append(1))

    class Mismatched:
        spec = type("S", (), {"name": "eph"})()

        def client(self):
            return object()

        def check_versions(self):
            raise EnvironmentMismatchError("versions differ: worker w1: numpy 1.0 (client has 2.0)")

        def status_record(self):
            return {"lock_hash": "x"}

    job = tmp_path / "job.yaml"
    job.write_text("name: refused\ndata: {source: synthetic, synthetic: {n_docs: 100, n_classes: 2}}\n")
    with pytest.raises(EnvironmentMismatchError):
        submit_mod.submit(Mismatched(), job, tmp_path / "runs", progress=lambda line: None,
                          run_id="r1")
    assert ran == []
    status = json.loads((tmp_path / "runs" / "r1" / "status.json").read_text())
    assert status["status"] == "failed" and "numpy 1.0" in status["error"]
    assert not (tmp_path / "runs" / "r1" / "metrics.json").exists()


# -- plan and prices ---------------------------------------------------------------------------
def test_price_table_is_dated_and_spot_is_cheaper():
    assert prices.AS_OF.count("-") == 2
    for region in prices.ON_DEMAND:
        for itype in ("m6i.large", "m6i.xlarge"):  # the example files' types
            assert prices.hourly(region, itype) > prices.hourly(region, itype, spot=True) > 0
    assert prices.hourly("us-east-1", "x9.nothing") is None


def test_plan_lists_what_a_run_makes_and_an_hourly_estimate():
    from runner.ephemeral.plan import plan_text

    text = plan_text(load_cluster(LAB_FILE), derive_lock())
    assert "+ security group" in text and "198.18.128.1/32" in text and "encrypted" in text
    assert "internet gateway, route 0.0.0.0/0 to it (removed after)" in text
    assert "a public address (the scheduler's Dask ports answer admin_cidr only)" in text
    assert "IMDSv2 required" in text and "2 worker instance(s) m6i.large (spot; " in text
    assert "if EC2 refuses spot the run stops (spot_fallback: fail)" in text
    assert "by itself at the run's expiry (max_lifetime 1h)" in text
    assert f"ESTIMATE (prices as of {prices.AS_OF}" in text
    sched, work = prices.hourly("us-east-1", "m6i.large"), prices.hourly("us-east-1", "m6i.large", True)
    total = sched + 2 * work + 3 * prices.storage_hourly("us-east-1", 20)
    assert f"total ${total:.4f}/hour" in text


# -- cluster files -----------------------------------------------------------------------------
def _variant(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(LAB_FILE.read_text())
    edit(data)
    path = tmp_path / "eph.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["ephemeral"].pop("admin_cidr"), "ephemeral.admin_cidr: required key is missing"),
    (lambda d: d["ephemeral"].update(admin_cidr="0.0.0.0/0"), "whole internet"),
    (lambda d: d.update(provider="lab"), "mode: ephemeral is for provider aws only"),
    (lambda d: d.pop("mode"), "only read with `mode: ephemeral`"),
    (lambda d: d.pop("ephemeral"), "needs an `ephemeral:` block"),
    (lambda d: d.update(terraform={"admin_cidr": "1.2.3.4/32"}), "terraform: is not used"),
    (lambda d: d["ephemeral"]["network"].update(subnet_id="subnet-1"), "either subnet_id"),
    (lambda d: d["ephemeral"].update(max_lifetime="2 hours"), "ephemeral.max_lifetime"),
    (lambda d: d["ephemeral"].update(max_lifetime="90s"), "give at least 2m"),
    (lambda d: d["ephemeral"].update(no_workers_timeout="soon"), "ephemeral.no_workers_timeout"),
    (lambda d: d["ephemeral"].update(spot_fallback="ondemand"), "ephemeral.spot_fallback"),
    (lambda d: d["ephemeral"].update(image={"owner": "1"}), "ephemeral.image"),
    (lambda d: d["ephemeral"].update(workerz=3), "ephemeral.workerz: unknown key"),
])
def test_bad_ephemeral_files_name_the_file_and_key(tmp_path, edit, message):
    path = _variant(tmp_path, edit)
    with pytest.raises(ConfigError) as err:
        load_cluster(path)
    assert str(path) in str(err.value) and message in str(err.value), str(err.value)


def test_the_example_files_load():
    for name in ("aws-ephemeral-lab.yaml", "aws-ephemeral.example.yaml"):
        spec = load_cluster(REPO / "clusters" / name)
        assert spec.mode == "ephemeral" and spec.ephemeral.admin_cidr != "0.0.0.0/0"


# -- data hand-over and the docker stand-in ----------------------------------------------------
def test_docker_stand_in_pulls_then_runs_the_command_with_the_containers_env(tmp_path):
    from distributed.utils import open_port

    from runner.lab import standin

    registry = f"127.0.0.1:{open_port()}"
    server = standin.serve_registry(tmp_path / "registry.log", registry)
    standin.install(tmp_path, Path(sys.prefix), registry=registry)
    docker = tmp_path / "fs" / "usr" / "local" / "bin" / "docker"
    pin = f"pyyaml=={yaml.__version__}"
    out = subprocess.run(
        [sys.executable, str(docker), "run", "--net=host", "-e", "A=1", "-e", "B=x y",
         "-e", f"EXTRA_PIP_PACKAGES={pin} nosuchpkg==1.0", "ghcr.io/dask/dask:1-py3.11",
         "sh", "-c", 'echo "A=$A B=$B PATH=$PATH"'], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"A=1 B=x y PATH={sys.prefix}/bin:" in out.stdout
    assert "cannot install offline: nosuchpkg==1.0 (image has None)" in out.stderr
    assert "pyyaml" not in out.stderr.split("cannot install offline")[1]
    # no shutdown stand-in: the host's systemd shuts it down (tests/e2e/test_6_aws_ephemeral.py)
    assert not (tmp_path / "fs" / "usr" / "local" / "sbin" / "shutdown").exists()
    server.shutdown()
    assert standin.registry_pulls(tmp_path / "registry.log") == [
        ("127.0.0.1", "ghcr.io/dask/dask:1-py3.11")]


def test_docker_stand_in_that_cannot_reach_the_registry_fails_as_dockers_pull_does(tmp_path):
    """An instance with no way out (no public address, no NAT gateway) cannot pull its image:
    `docker run` fails after the dial timeout, and runs nothing."""
    from distributed.utils import open_port

    from runner.lab import standin

    registry = f"127.0.0.1:{open_port()}"  # nothing listens there
    standin.install(tmp_path, Path(sys.prefix), registry=registry, pull_timeout_s=2)
    docker = tmp_path / "fs" / "usr" / "local" / "bin" / "docker"
    out = subprocess.run([sys.executable, str(docker), "run", "ghcr.io/dask/dask:1-py3.11",
                          "sh", "-c", "echo ran"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 125 and "ran" not in out.stdout, out
    assert "Unable to find image 'ghcr.io/dask/dask:1-py3.11' locally" in out.stderr
    assert f"dial tcp {registry}: i/o timeout" in out.stderr, out.stderr


def test_sigterm_becomes_an_exception_so_the_teardown_runs():
    import signal

    from runner.signals import Terminated, sigterm_raises

    closed = []
    with pytest.raises(Terminated), sigterm_raises():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time_left = 50
            while time_left:  # the handler raises at the next bytecode
                time_left -= 1
        finally:
            closed.append(True)
    assert closed == [True] and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
