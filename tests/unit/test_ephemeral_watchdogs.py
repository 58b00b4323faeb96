"""The watchdogs an ephemeral run's instances carry, so that a run never bills for ever: each
instance's own power-off at the run's expiry (run here with a local `sh`, as cloud-init would),
the scheduler's no-workers timeout and the workers' death timeout as the instances receive them.
The power-off itself is systemd's, on the emulated instances of tests/e2e/test_6_aws_ephemeral.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import test_ephemeral
import yaml

from runner.config import load_cluster
from runner.ephemeral import aws
from runner.ephemeral import tags as T

pytest.importorskip("dask_cloudprovider")

REPO = Path(__file__).resolve().parents[2]
LAB_FILE = REPO / "clusters" / "aws-ephemeral-lab.yaml"
restore_dask_config = test_ephemeral.restore_dask_config  # a fixture


def fake_shutdown(tmp_path: Path) -> dict:
    """A PATH whose `shutdown` records its arguments (the command under test runs for real)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "shutdown").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/shutdown.args\n')
    (bin_dir / "shutdown").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def run_first_command(command: str, env: dict, tmp_path: Path) -> str:
    subprocess.run(["sh", "-c", command], env=env, check=True, timeout=10)
    return (tmp_path / "shutdown.args").read_text().strip()


def test_the_hard_stop_powers_off_at_the_expiry_rounded_down_never_after(tmp_path):
    from runner.ephemeral.ec2cluster import hard_stop_command

    env = fake_shutdown(tmp_path)
    now = int(time.time())
    assert run_first_command(hard_stop_command(now + 605), env, tmp_path) == "-P +10"
    assert run_first_command(hard_stop_command(now + 119), env, tmp_path) == "-P +1"
    # booted after the expiry (a slow start): off at once, not never
    assert run_first_command(hard_stop_command(now - 300), env, tmp_path) == "-P +0"


def render_user_data(spec, hard_stop: str, folder: Path) -> tuple[str, str]:
    """The user data of a scheduler and of a worker, as EphemeralCluster would launch them."""
    from runner.ephemeral.ec2cluster import cluster_kwargs, ec2_cluster_class
    from runner.ephemeral.environment import env_vars
    from runner.provision.lock import derive_lock

    made = aws.Made(vpc_id="vpc-1", subnet_id="subnet-1", group_id="sg-1")
    tags = T.run_tags(spec.name, "r1", T.parse("2026-01-02T03:04:05Z"), 3600)
    kwargs = cluster_kwargs(spec, tags, made, "ami-1", "img:1", env_vars(derive_lock()))
    Cls = ec2_cluster_class()

    async def render():  # unstarted (no VM is made)
        c = Cls(root_device="/dev/xvda", started=[], hard_stop=hard_stop, spot_fallback="fail",
                spec_source=str(LAB_FILE), asynchronous=True,
                **test_ephemeral.join_kwargs(folder), **kwargs)
        sched = c.scheduler_class(**c.scheduler_options)
        worker = c.worker_class(scheduler="tls://198.19.0.9:8786", **c.worker_options)
        return c.render_process_cloud_init(sched), c.render_process_cloud_init(worker)

    return asyncio.run(render())


def test_every_instance_schedules_its_hard_stop_before_anything_else(restore_dask_config, tmp_path):
    from runner.ephemeral.ec2cluster import hard_stop_command

    spec = load_cluster(LAB_FILE)
    stop = hard_stop_command(int(time.time()) + 3600)
    for user_data in render_user_data(spec, stop, tmp_path / "join"):
        assert len(user_data.encode()) < 16384
        runcmd = yaml.safe_load(user_data)["runcmd"]
        # first: before a Docker install that may hang and the container, which blocks
        assert runcmd[0] == stop, runcmd[:2]
        docker = next(i for i, c in enumerate(runcmd) if c.startswith("docker run"))
        assert runcmd[docker + 1:] == ["shutdown -h now"]
        # then the join agent; the container waits for the TLS files it receives
        assert "join-agent.py" in runcmd[1] and "ready" in runcmd[docker - 1], runcmd
        assert run_first_command(runcmd[0], fake_shutdown(tmp_path), tmp_path) in ("-P +59",
                                                                                  "-P +60")
        (tmp_path / "bin" / "shutdown").unlink()
        (tmp_path / "bin").rmdir()


def test_the_scheduler_gets_a_no_workers_timeout_and_workers_a_death_timeout(restore_dask_config,
                                                                             tmp_path):
    import dask

    spec = load_cluster(LAB_FILE)
    sched, worker = render_user_data(spec, "true", tmp_path)
    sched_run = next(c for c in yaml.safe_load(sched)["runcmd"] if c.startswith("docker run"))
    worker_run = next(c for c in yaml.safe_load(worker)["runcmd"] if c.startswith("docker run"))
    env = '-e DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT="600s"'
    assert env in sched_run
    # the variable's name is the config key distributed's Scheduler reads (it has no argument)
    cfg = dask.config.collect(paths=[], env={"DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT": "600s"})
    assert dask.config.get("distributed.scheduler.no-workers-timeout", config=cfg) == "600s"
    assert sched_run.endswith("--idle-timeout 600s")  # idle_timeout 10m of the lab file
    spec_json = json.loads(worker_run.split("--spec '", 1)[1].rsplit("'", 1)[0])
    assert spec_json["opts"]["death_timeout"] == "300s"  # the default worker_death_timeout
    from distributed import Nanny

    assert "death_timeout" in Nanny.__init__.__code__.co_varnames


