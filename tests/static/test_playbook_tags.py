"""`--tags tls` (what `up` runs when only a node's TLS files changed, e.g. after `rotate`) runs
exactly the tasks that install those files, and what they need: nothing of the environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


def test_the_tls_tag_runs_the_tls_files_tasks_only():
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
         "--list-tasks", "--tags", "tls", "site.yml"],
        cwd=PLAYBOOKS, capture_output=True, text=True, timeout=120,
        env={**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tasks = re.findall(r"^\s+dask_node : (.+?)\tTAGS", proc.stdout, re.M)
    assert tasks == ["Ensure the cluster name was given", "Choose the owner of Dask's files",
                     "Ensure the cluster's CA certificate is installed",
                     "Ensure the node's certificate and key are installed"], proc.stdout
    assert "python_env" not in proc.stdout and "preflight" not in proc.stdout, proc.stdout
