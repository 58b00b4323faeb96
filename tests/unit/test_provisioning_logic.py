"""Pure logic of provisioning: inventory rendering, lock derivation, version comparison,
Ansible's recap, known_hosts lookups."""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

import pytest
import yaml

from runner.cluster.hosts import Host, known_host_key
from runner.cluster.ssh import SSHSettings
from runner.cluster.versions import compare_versions
from runner.errors import EnvironmentMismatchError, ProvisionError
from runner.provision import terraform
from runner.provision.ansible import parse_recap
from runner.provision.inventory import render
from runner.provision.lock import Lock, closure, derive_lock

HOSTS = [Host("lab1", "198.18.0.11", "scheduler"), Host("lab2", "198.18.0.12", "worker"),
         Host("lab3", "198.18.0.13", "worker", user="ops", port=2222)]


def test_inventory_groups_hosts_by_role_and_pins_host_key_checking():
    ssh = SSHSettings(Path("/k/id"), Path("/k/known_hosts"), connect_timeout=7)
    inv = yaml.safe_load(render(HOSTS, ssh))["all"]
    assert list(inv["children"]["dask_scheduler"]["hosts"]) == ["lab1"]
    assert list(inv["children"]["dask_workers"]["hosts"]) == ["lab2", "lab3"]
    # A non-root login reaches root through sudo; root's does not ask for it.
    assert inv["children"]["dask_workers"]["hosts"]["lab3"] == {
        "ansible_host": "198.18.0.13", "ansible_user": "ops", "ansible_port": 2222,
        "ansible_become": True}
    assert "ansible_become" not in inv["children"]["dask_workers"]["hosts"]["lab2"]
    args = inv["vars"]["ansible_ssh_common_args"]
    assert "UserKnownHostsFile=/k/known_hosts" in args and "StrictHostKeyChecking=yes" in args
    assert "ConnectTimeout=7" in args


def test_an_inventory_folder_carries_the_clusters_and_the_shared_variables(tmp_path):
    """What `up` writes is what a run by hand (`ansible-playbook -i inventory/<c>/hosts.yml`)
    reads: hosts.yml, the cluster's variables and a link to the committed shared ones."""
    from runner.provision import inventory

    path = inventory.write(tmp_path / "inv" / "c1" / "hosts.yml", HOSTS,
                           SSHSettings(Path("/k/id"), Path("/k/kh")))
    inventory.write_vars(path, {"python_env_cluster": "c1", "dask_node_tls": True})
    group_vars = path.parent / "group_vars" / "all"
    shared = yaml.safe_load((group_vars / "shared.yml").read_text())
    assert shared["ansible_python_interpreter"] == "/usr/bin/python3"
    assert (group_vars / "shared.yml").resolve() == inventory.SHARED_VARS
    assert yaml.safe_load((group_vars / "cluster.yml").read_text()) == {
        "python_env_cluster": "c1", "dask_node_tls": True}
    inventory.write(path, HOSTS, SSHSettings(Path("/k/id"), Path("/k/kh")))  # again: unchanged
    assert sorted(p.name for p in group_vars.iterdir()) == ["cluster.yml", "shared.yml"]


def test_skipping_host_key_checks_is_only_explicit():
    ssh = SSHSettings(Path("/k/id"), Path("/k/kh"), insecure_skip_host_key_check=True)
    assert "StrictHostKeyChecking=no" in render(HOSTS, ssh)
    # ...and the unverified keys are never written into the trusted known_hosts file
    assert "UserKnownHostsFile=/dev/null" in render(HOSTS, ssh) and "/k/kh" not in render(HOSTS, ssh)


def test_lock_is_the_installed_closure_of_the_worker_stack():
    lock = derive_lock()
    pins = dict(lock.pins)
    for name in ("dask", "distributed", "scikit-learn", "dask-ml", "pandas", "numpy", "pyarrow",
                 "snowballstemmer"):
        assert pins[name] == md.version(name), name
    # dependencies of dependencies are in, with this environment's versions
    assert pins["toolz"] == md.version("toolz") and pins["cloudpickle"] == md.version("cloudpickle")
    # the control machine's tools are not shipped to workers
    assert "fabric" not in pins and "ansible-core" not in pins and "paramiko" not in pins
    # a detached run's driver reads its job file on the scheduler's host
    assert pins["pydantic"] == md.version("pydantic")
    assert lock.hash == derive_lock().hash and len(lock.hash) == 16


def test_lock_hash_changes_with_any_pin_or_the_project_source():
    base = Lock("3.11", "x86_64", (("dask", "1.0"), ("numpy", "2.0")), "abc")
    assert base.hash != Lock("3.11", "x86_64", (("dask", "1.1"), ("numpy", "2.0")), "abc").hash
    assert base.hash != Lock("3.11", "x86_64", base.pins, "abd").hash
    assert base.hash != Lock("3.12", "x86_64", base.pins, "abc").hash
    assert base.hash != Lock("3.11", "aarch64", base.pins, "abc").hash
    assert "dask==1.0\nnumpy==2.0\n" in base.text()


def test_closure_reports_a_missing_package_with_what_to_do():
    with pytest.raises(ProvisionError, match="no-such-pkg.*make venv"):
        closure(("no-such-pkg",))


def _versions(**worker_pkgs):
    client = {"python": "3.11.7.final.0", "dask": "1.0", "numpy": "2.0"}
    return {"client": {"packages": client}, "scheduler": {"packages": dict(client)},
            "workers": {"tls://w1:1": {"packages": {**client, **worker_pkgs}}}}


def test_versions_match_when_only_the_python_patch_level_differs():
    compare_versions(_versions(python="3.11.2.final.0"), ["dask", "numpy"])


def test_any_package_difference_is_refused_naming_node_and_package():
    with pytest.raises(EnvironmentMismatchError) as e:
        compare_versions(_versions(numpy="1.26"), ["dask", "numpy"])
    assert "worker tls://w1:1: numpy 1.26 (client has 2.0)" in str(e.value)
    with pytest.raises(EnvironmentMismatchError, match="python 3.12"):
        compare_versions(_versions(python="3.12.1.final.0"), ["dask"])


def test_ansible_recap_is_parsed_per_host():
    out = """PLAY RECAP *********************************************************************
lab1                       : ok=12   changed=3    unreachable=0    failed=0    skipped=1
lab2                       : ok=10   changed=0    unreachable=1    failed=0    skipped=1
"""
    recap = parse_recap(out)
    assert recap["lab1"]["changed"] == 3 and recap["lab2"]["unreachable"] == 1


def test_known_host_key_reads_hashed_entries_as_ssh_keygen_writes_them(tmp_path):
    import subprocess

    plain = tmp_path / "known_hosts"
    plain.write_text("198.18.0.11 ssh-ed25519 AAAA1\n[198.18.0.12]:2222 ssh-ed25519 AAAA2\n"
                     "@revoked 198.18.0.13 ssh-ed25519 AAAA3\n")
    # ssh-keygen -H hashes every name, as `HashKnownHosts yes` (Debian's default) does
    subprocess.run(["ssh-keygen", "-H", "-f", str(plain)], check=True, capture_output=True)
    hashed = plain.read_text()
    assert "198.18.0.11" not in hashed and hashed.startswith("|1|"), hashed
    assert known_host_key(hashed, "198.18.0.11") == "ssh-ed25519 AAAA1"
    assert known_host_key(hashed, "198.18.0.12", 2222) == "ssh-ed25519 AAAA2"
    assert known_host_key(hashed, "198.18.0.12") is None
    assert known_host_key(hashed, "198.18.0.13") is None  # a revoked key is no host key
    assert known_host_key("|1|not base64|x ssh-ed25519 AAAA9\n", "198.18.0.11") is None


def test_known_host_key_lookup_by_address_and_port():
    text = "# c\n198.18.0.11 ssh-ed25519 AAAA1\n[198.18.0.12]:2222 ssh-ed25519 AAAA2\n"
    assert known_host_key(text, "198.18.0.11") == "ssh-ed25519 AAAA1"
    assert known_host_key(text, "198.18.0.12", 2222) == "ssh-ed25519 AAAA2"
    assert known_host_key(text, "198.18.0.12") is None


def test_a_failed_start_log_excerpt_leads_with_the_cause():
    from runner.cluster.processes import error_excerpt

    log = "\n".join(["INFO - State start", "OSError: [Errno 98] Address already in use",
                     "Traceback (most recent call last):", *[f'  File "f{i}.py"' for i in range(40)],
                     "RuntimeError: Scheduler failed to start."])
    out = error_excerpt(log, lines=5)
    assert out.splitlines()[1] == "  OSError: [Errno 98] Address already in use"
    assert out.endswith("RuntimeError: Scheduler failed to start.")
    assert 'File "f10.py"' not in out
    assert error_excerpt("all fine\n", 5) == "all fine"


def test_terraform_missing_is_one_message_with_what_to_do(monkeypatch, tmp_path):
    from runner.provision import terraform

    monkeypatch.setattr(terraform.shutil, "which", lambda name: None)
    # the first thing needing it (writing the root checks its version) says what to do
    with pytest.raises(ProvisionError, match="terraform: not found on PATH. Install Terraform"):
        terraform.write_root(tmp_path, "hosts", {"cluster_name": "x"})


def test_plan_lists_the_tasks_that_would_change_per_host():
    from runner.provision.plan import would_change

    out = ("TASK [python_env : Ensure the wheelhouse archive is on the node] ***\n"
           "changed: [lab2]\nok: [lab1]\nchanged: [lab3]\n"
           "TASK [dask_node : Ensure the Dask configuration is written] ***\nok: [lab1]\n")
    assert would_change(out) == {
        "python_env : Ensure the wheelhouse archive is on the node": ["lab2", "lab3"]}


def test_only_the_code_the_nodes_import_names_their_environment(tmp_path):
    import shutil

    from runner.provision.lock import node_modules, project_digest

    root = tmp_path / "runner"
    shutil.copytree(Path(__file__).resolve().parents[2] / "runner", root,
                    ignore=shutil.ignore_patterns("__pycache__"))
    names = {str(p.relative_to(root)) for p in node_modules(root)}
    assert {"batch/train.py", "batch/parts.py", "cluster/nanny_wait.py", "errors.py"} <= names
    # control-side code: the CLI, the lab, provisioning, the job file (pydantic), the pipeline
    assert not names & {"cli.py", "lab/lab.py", "provision/lock.py", "batch/job.py", "batch/job_data.py",
                        "batch/pipeline.py", "batch/pipeline_phases.py", "batch/pipeline_fit.py",
                        "batch/pipeline_tasks.py", "batch/corpus.py", "cluster/cluster.py"}, names
    base = project_digest(root)
    for control in ("cli.py", "lab/lab.py", "cluster/reconcile.py"):
        with (root / control).open("a") as f:
            f.write("# an edit the nodes never run\n")
        assert project_digest(root) == base, control
    with (root / "batch" / "train.py").open("a") as f:
        f.write("# an edit the workers run\n")
    changed = project_digest(root)
    assert changed != base
    # a helper that node code starts to import (even inside a function) counts from then on
    (root / "batch" / "helper.py").write_text("X = 1\n")
    with (root / "batch" / "features.py").open("a") as f:
        f.write("\n\ndef _uses_helper():\n    from runner.batch.helper import X\n    return X\n")
    assert "batch/helper.py" in {str(p.relative_to(root)) for p in node_modules(root)}
    before_helper_edit = project_digest(root)
    (root / "batch" / "helper.py").write_text("X = 2\n")
    assert project_digest(root) != before_helper_edit


def test_the_nodes_wheels_are_pinned_to_the_hashes_of_requirements_lock(tmp_path):
    from runner.provision.lock import Lock
    from runner.provision.wheelhouse import hashed_requirements, locked_hashes

    text = ("# header\nnumpy==2.4.6 \\\n    --hash=sha256:aa11 \\\n    --hash=sha256:bb22\n"
            "    # via pandas\nZope.Interface==7.0 \\\n    --hash=sha256:cc33\n")
    assert locked_hashes(text) == {("numpy", "2.4.6"): ["sha256:aa11", "sha256:bb22"],
                                   ("zope-interface", "7.0"): ["sha256:cc33"]}
    lock_file = tmp_path / "requirements.lock"
    lock_file.write_text(text)
    lock = Lock("3.11", "x86_64", (("numpy", "2.4.6"),), "d")
    assert hashed_requirements(lock, lock_file) == \
        "numpy==2.4.6 --hash=sha256:aa11 --hash=sha256:bb22\n"
    # a version installed here that the lock does not hold is refused, naming both
    other = Lock("3.11", "x86_64", (("numpy", "2.5.0"),), "d")
    with pytest.raises(ProvisionError, match=r"numpy==2\.5\.0 installed here but not in .*"
                                             r"requirements\.lock"):
        hashed_requirements(other, lock_file)
    with pytest.raises(ProvisionError, match="cannot read"):
        hashed_requirements(lock, tmp_path / "missing.lock")


def test_only_machines_destroyed_or_replaced_need_a_yes():
    actions = {"create": ['module.cluster.aws_instance.this["worker-3"]'],
               "update": ['module.cluster.aws_instance.this["scheduler"]'],
               "delete": ['module.cluster.aws_instance.this["worker-2"]',
                          "module.cluster.aws_key_pair.this"],
               "replace": ['module.cluster.aws_instance.this["worker-1"]',
                           "module.cluster.aws_security_group.nodes"]}
    assert terraform.machines_lost(actions) == ['module.cluster.aws_instance.this["worker-2"]',
                                                'module.cluster.aws_instance.this["worker-1"]']
    assert terraform.machines_lost({"create": ["x"], "update": [], "delete": [],
                                    "replace": []}) == []
    # a VM whose creation was cut short (tainted) holds nothing: replacing it needs no --yes
    tainted = {**actions, "tainted": ['module.cluster.aws_instance.this["worker-1"]']}
    assert terraform.machines_lost(tainted) == ['module.cluster.aws_instance.this["worker-2"]']
