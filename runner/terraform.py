"""Run the cluster's Terraform module in its own working folder, .daskfleet/<cluster>/terraform.

The root configuration is generated as JSON (main.tf.json), so values need no HCL quoting.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from runner.errors import ProvisionError
from runner.hosts import Host

MODULES = Path(__file__).resolve().parent.parent / "terraform" / "modules"
# The lab is a set of existing machines: it uses the bare-metal module.
MODULE_FOR_PROVIDER = {"lab": "hosts", "hosts": "hosts", "aws": "aws", "gcp": "gcp",
                       "azure": "azure"}


def _env() -> dict:
    return {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0"}


def _binary() -> str:
    tf = shutil.which("terraform")
    if not tf:
        raise ProvisionError(
            "terraform: not found on PATH. Install Terraform >= 1.5 "
            "(https://developer.hashicorp.com/terraform/install) and run the command again.")
    return tf


def _tf(workdir: Path, *args: str, what: str) -> str:
    proc = subprocess.run([_binary(), *args], cwd=workdir, capture_output=True, text=True,
                          env=_env())
    if proc.returncode != 0:
        out = proc.stderr + proc.stdout
        tail = "\n".join(out.strip().splitlines()[-25:])
        hosts = sorted(set(re.findall(r'terraform_data\.this\["([^"]+)"\]', out)))
        which = f" for host(s) {', '.join(hosts)}" if hosts else ""
        raise ProvisionError(f"terraform {what} failed{which} (working folder {workdir}):\n{tail}"
                             "\nFix the cause and run the command again; finished steps are kept.")
    return proc.stdout


def write_root(workdir: Path, provider: str, variables: dict) -> None:
    module = MODULES / MODULE_FOR_PROVIDER[provider]
    workdir.mkdir(parents=True, exist_ok=True)
    root = {
        "module": {"cluster": {"source": str(module), **variables}},
        "output": {"hosts": {"value": "${module.cluster.hosts}"}},
    }
    tmp = workdir / "main.tf.json.tmp"
    tmp.write_text(json.dumps(root, indent=2) + "\n")
    tmp.replace(workdir / "main.tf.json")


def apply(workdir: Path) -> list[Host]:
    if not (workdir / ".terraform" / "modules" / "modules.json").exists():
        _tf(workdir, "init", "-no-color", "-input=false", what="init")
    _tf(workdir, "apply", "-no-color", "-input=false", "-auto-approve", what="apply")
    return outputs(workdir)


def outputs(workdir: Path) -> list[Host]:
    out = _tf(workdir, "output", "-no-color", "-json", "hosts", what="output")
    return [Host.from_dict(h) for h in json.loads(out)]


def destroy(workdir: Path) -> None:
    if (workdir / "main.tf.json").exists():
        if not (workdir / ".terraform").exists():
            _tf(workdir, "init", "-no-color", "-input=false", what="init")
        _tf(workdir, "destroy", "-no-color", "-input=false", "-auto-approve", what="destroy")


def plan(workdir: Path) -> dict[str, list[str]]:
    """Resource addresses by action (create, update, delete, replace), from a saved plan."""
    if not (workdir / ".terraform" / "modules" / "modules.json").exists():
        _tf(workdir, "init", "-no-color", "-input=false", what="init")
    _tf(workdir, "plan", "-no-color", "-input=false", "-lock=false", "-out=daskfleet.tfplan",
        what="plan")
    try:
        shown = json.loads(_tf(workdir, "show", "-no-color", "-json", "daskfleet.tfplan",
                               what="show"))
    finally:
        (workdir / "daskfleet.tfplan").unlink(missing_ok=True)
    actions: dict[str, list[str]] = {"create": [], "update": [], "delete": [], "replace": []}
    for rc in shown.get("resource_changes", []):
        acts = rc["change"]["actions"]
        key = ("replace" if set(acts) == {"create", "delete"} else
               acts[0] if acts and acts[0] in actions else None)
        if key:
            actions[key].append(rc["address"])
    return actions
