"""A node that systemd does not run is refused by the playbook's preflight, before anything is
installed: nothing would start the supervisor at boot, so its Dask processes would not come back
after a crash or a reboot. Run for real, in --check mode, against this machine (whose init is not
systemd) over Ansible's local connection; the lab's hosts, which systemd runs, pass the same
check in every e2e test."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


def test_a_node_without_systemd_is_refused_before_anything_is_installed():
    if Path("/run/systemd/system").exists():
        pytest.skip("not applicable here: systemd runs this machine")
    minor = "{}.{}".format(*sys.version_info[:2])
    extra = {"python_env_python_minor": minor,
             "python_env_targets": {platform.machine(): {"hash": "0" * 16, "archive": "/none"}},
             "dask_node_cluster": "refused"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "--check", "-e", json.dumps(extra), "-e", f"ansible_python_interpreter={sys.executable}",
         "site.yml"],
        cwd=PLAYBOOKS, capture_output=True, text=True, timeout=300,
        env={**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg")})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "systemd is not this machine's init" in out and "nothing was installed" in out, out
    # refused in the preflight play: no task of the environment's or the node's role ran
    assert "python_env :" not in out and "dask_node :" not in out, out
