"""A cluster a team shares: two clones of the project, each with its own .daskfleet/, drive one
cluster whose state (Terraform's, the record, the CA, the lock) lives in the lab's object store.
Two `up`s at once make one cluster (the second waits, saying who holds the lock); the other
clone submits, scales and sees what the first did; `down --destroy` from either removes it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jobfiles import small_job
from objectstore import object_store

from runner.cluster import Cluster
from runner.lab import Lab

LAB_CLUSTER = Path(__file__).resolve().parents[2] / "clusters" / "lab.yaml"

pytestmark = pytest.mark.e2e
PASSPHRASE = "e2e team passphrase"


def _clone(workdir: Path, name: str, cluster: dict, env: dict) -> tuple[Path, dict]:
    """A clone of the project as a teammate has it: its own clusters/ file and state folders."""
    root = workdir / name
    (root / "clusters").mkdir(parents=True, exist_ok=True)
    cfile = root / "clusters" / "team.yaml"
    cfile.write_text(yaml.safe_dump(cluster))
    return cfile, {**env, "DASKFLEET_STATE_DIR": str(root / ".daskfleet"),
                   "DASKFLEET_INVENTORY_DIR": str(root / "inventory")}


def _run(env: dict, cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_two_clones_share_one_cluster_through_the_object_store(lab_cluster, cli, workdir):
    lab = Lab()
    lab1, lab2, lab3 = lab.hosts()[:3]
    store = object_store(cli)
    s3 = store.client()
    s3.create_bucket(Bucket="team-state")
    cluster = {
        "name": "team", "provider": "hosts",
        "ssh": {"user": "root", "private_key": str(lab.key), "known_hosts": str(lab.known_hosts)},
        "hosts": [{"name": "lab1", "address": lab1.address, "role": "scheduler"},
                  {"name": "lab2", "address": lab2.address, "role": "worker"},
                  {"name": "lab3", "address": lab3.address, "role": "worker"}],
        "dask": {"scheduler_port": 8806, "dashboard_port": 8807, "memory_share": 0.25,
                 "worker_port_range": "42000:42099", "nanny_port_range": "42100:42199"},
        # the endpoint and region in the file; the credentials from each teammate's environment
        "state": {"url": "s3://team-state/clusters",
                  "storage_options": {"endpoint_url": store.endpoint, "region": store.region}}}
    env = {**cli.env, "AWS_ACCESS_KEY_ID": store.key, "AWS_SECRET_ACCESS_KEY": store.secret,
           "DASKFLEET_STATE_PASSPHRASE": PASSPHRASE}
    file_a, env_a = _clone(workdir, "clone-a", cluster, env)
    file_b, env_b = _clone(workdir, "clone-b", cluster, env)
    a = lambda *args, **kw: _run(env_a, file_a.parents[1], *args, "-c", str(file_a), **kw)  # noqa: E731
    b = lambda *args, **kw: _run(env_b, file_b.parents[1], *args, "-c", str(file_b), **kw)  # noqa: E731
    try:
        # two `up`s at once, one from each clone: one cluster, one CA
        ups = [subprocess.Popen([sys.executable, "-m", "runner.cli", "up", "-c", str(f)],
                                cwd=f.parents[1], env=e, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
               for f, e in ((file_a, env_a), (file_b, env_b))]
        outs = [p.communicate(timeout=600)[0] for p in ups]
        assert [p.returncode for p in ups] == [0, 0], outs
        waited = [o for o in outs if "holds the cluster's lock" in o]
        assert len(waited) == 1, outs  # the second waited for the first, and said who held it
        assert "started: nothing (all running)" in waited[0], waited[0]
        ca = [(workdir / c / ".daskfleet" / "team" / "tls" / "ca.pem").read_bytes()
              for c in ("clone-a", "clone-b")]
        assert ca[0] == ca[1]
        objects = {o["Key"] for o in s3.list_objects_v2(Bucket="team-state")["Contents"]}
        assert {"clusters/team/terraform.tfstate", "clusters/team/state.json",
                "clusters/team/secrets.enc"} <= objects, objects
        assert "clusters/team/lock" not in objects  # let go
        for c in ("clone-a", "clone-b"):  # Terraform's state is the store's, not a clone's
            assert not (workdir / c / ".daskfleet/team/terraform/terraform.tfstate").exists()
        sealed = s3.get_object(Bucket="team-state", Key="clusters/team/secrets.enc")["Body"].read()
        assert b"PRIVATE KEY" not in sealed

        def pids(run) -> dict[str, int]:
            proc = run("status", "--json", timeout=300)
            _ok(proc)
            return {h["process"]: h["pid"] for h in json.loads(proc.stdout)["hosts"]}

        started = pids(a)
        assert started == pids(b) and len(started) == 3, started

        # clone B submits to the cluster clone A started, with the shared CA's client certificate
        job = workdir / "clone-b" / "team-job.yaml"
        job.write_text(small_job("team-job", seed=5))
        out = _ok(b("submit", str(job), "--runs-dir", str(workdir / "clone-b" / "runs"),
                    timeout=600))
        run_dir = next((workdir / "clone-b" / "runs").glob("*-team-job-*"))
        assert json.loads((run_dir / "metrics.json").read_text())["accuracy"] > 0.8, out

        # clone B scales; clone A sees B's workers, the same processes
        _ok(b("scale", "4", timeout=600))
        after = pids(a)
        assert sum("-w" in p for p in after) == 4, after
        assert after == pids(b)
        # the scheduler A started runs on (the workers that now share a host were replaced, one
        # at a time, with their new share of its memory)
        assert after["scheduler"] == started["scheduler"]
    finally:
        down = a("down", "--destroy", timeout=600)
    _ok(down)
    # clone B's copy is refreshed from the store: nothing runs, nothing is provisioned
    gone = b("status", "--json", timeout=300)
    assert gone.returncode != 0 and "not provisioned" in gone.stderr, gone.stderr
    tfstate = json.loads(s3.get_object(Bucket="team-state",
                                       Key="clusters/team/terraform.tfstate")["Body"].read())
    assert tfstate["resources"] == [], tfstate["resources"]
    with Cluster.from_file(LAB_CLUSTER) as lab_cl:
        procs = [line for out in lab_cl.run_on_hosts(["ps", "-eo", "args"]).values()
                 for line in out.splitlines()]
    assert not [p for p in procs if ":8806" in p or "--port 8806" in p], procs
