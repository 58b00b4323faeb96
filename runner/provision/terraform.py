"""Run the cluster's Terraform module in its own working folder, .daskfleet/<cluster>/terraform.

The root configuration is generated as JSON (main.tf.json), so values need no HCL quoting.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from runner import signals
from runner.errors import ProvisionError
from runner.log import Progress, Say

logger = logging.getLogger(__name__)

MODULES = Path(__file__).resolve().parents[2] / "terraform" / "modules"


def _env(extra: dict | None = None) -> dict:
    # The cluster file's `environment:` (an endpoint, test credentials, a CLI config with a
    # provider mirror) is set for Terraform only, over the shell's values.
    return {**os.environ, **(extra or {}), "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0"}


def _binary() -> str:
    tf = shutil.which("terraform")
    if not tf:
        raise ProvisionError(
            "terraform: not found on PATH. Install Terraform >= 1.9 (>= 1.5 for the lab and "
            "provider: hosts) "
            "(https://developer.hashicorp.com/terraform/install) and run the command again.")
    return tf


# How long an interrupted Terraform may take to finish the cloud calls in flight and write its
# state (an instance being created is waited for, not abandoned untracked).
INTERRUPT_GRACE_S = 300.0


def _tf(workdir: Path, *args: str, what: str, env: dict | None = None,
        say: Progress | None = None) -> str:
    # A session of its own: the terminal's Ctrl-C reaches only us, and Terraform gets exactly
    # one interrupt from us (a second one makes it stop at once, state unsaved).
    logger.debug(f"terraform {' '.join(args)} (in {workdir})")
    proc = subprocess.Popen([_binary(), *args], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(env),
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate()
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM raised as Terminated
        # a warning: -q shows it too (what a second Ctrl-C would do)
        _, _, ended = signals.interrupt_gracefully(proc, INTERRUPT_GRACE_S,
                                                   Say(say, logger).warning)
        raise ProvisionError(_interrupted(workdir, what, ended, env)) from interrupt
    if proc.returncode != 0:
        out = stderr + stdout
        # Terraform writes its errors to stderr, from the first "Error:" on (warnings before it,
        # such as a missing ~/.terraformrc, are noise); stdout holds the long plan.
        err = stderr.strip()
        err = err[err.find("Error:"):] if "Error:" in err else err
        tail = "\n".join((err or stdout.strip()).splitlines()[-30:])
        hosts = sorted(set(re.findall(r'terraform_data\.this\["([^"]+)"\]', out)))
        addresses = _declared_addresses(workdir)
        which = (" for host(s) " + ", ".join(f"{h} ({addresses[h]})" if h in addresses else h
                                              for h in hosts)) if hosts else ""
        raise ProvisionError(f"terraform {what} failed{which} (working folder {workdir}):\n{tail}"
                             "\nFix the cause and run the command again; finished steps are kept.")
    return stdout


def _interrupted(workdir: Path, what: str, ended: str, env: dict | None) -> str:
    """What an interrupted Terraform left, and what to run."""
    how = {"finished": "it finished the calls in flight and saved its state",
           "stopped": "a second Ctrl-C stopped it at once: resources being created may be "
                      "missing from its state",
           "killed": f"it did not stop within {INTERRUPT_GRACE_S:.0f}s and was killed: resources "
                     "being created may be missing from its state"}[ended]
    try:
        listed = subprocess.run([_binary(), "state", "list"], cwd=workdir, capture_output=True,
                                text=True, env=_env(env), timeout=60).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        listed = []
    held = (f"; its state ({workdir}) holds {len(listed)} resource(s): "
            + ", ".join(listed[:8]) + (", ..." if len(listed) > 8 else "")) if listed else \
        f"; its state ({workdir}) holds no resource"
    return (f"terraform {what} interrupted: {how}{held}. Run the same command again to "
            "finish (Terraform picks up from its state), or `daskfleet down --destroy` to remove "
            "what was made.")


def _declared_addresses(workdir: Path) -> dict[str, str]:
    """name -> address of the existing machines the root configuration declares (hosts module),
    so a failure names the address that did not answer."""
    try:
        root = json.loads((workdir / "main.tf.json").read_text())
        return {h["name"]: h["address"] for h in root["module"]["cluster"].get("hosts", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def required_version(module: str) -> tuple[int, int]:
    """The lowest Terraform the module declares (``required_version = ">= X.Y"``)."""
    text = (MODULES / module / "versions.tf").read_text()
    m = re.search(r'required_version\s*=\s*">=\s*(\d+)\.(\d+)', text)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def installed_version() -> str:
    """The version of the `terraform` on the PATH (e.g. "1.11.2")."""
    proc = subprocess.run([_binary(), "version", "-json"], capture_output=True, text=True,
                          env=_env(), timeout=120)
    try:
        return json.loads(proc.stdout)["terraform_version"]
    except (ValueError, KeyError, TypeError):
        raise ProvisionError(f"terraform: `{_binary()} version -json` gave no version "
                             f"({(proc.stderr or proc.stdout).strip()[:200]})") from None


# The S3 backend's own lock file (use_lockfile) came with Terraform 1.10.
SHARED_STATE_NEEDS = (1, 10)


def check_version(module: str, shared: bool = False) -> None:
    """Refuse a Terraform older than the module needs (or than shared state's S3 lock file
    needs), before anything is planned or made (Terraform itself would fail with a message about
    the module's source)."""
    need = max(required_version(module), SHARED_STATE_NEEDS if shared else (0, 0))
    have = installed_version()
    parts = tuple(int(x) for x in re.findall(r"\d+", have)[:2])
    if parts < need:
        why = "state: (shared state's S3 lock file)" if need == SHARED_STATE_NEEDS and shared \
            else f"the {module} module"
        raise ProvisionError(
            f"terraform {have} is too old for {why}, which needs Terraform >= "
            f"{need[0]}.{need[1]} ({MODULES / module / 'versions.tf'}); install a newer one "
            "(https://developer.hashicorp.com/terraform/install) and run the command again. "
            "Nothing was created.")


def write_root(workdir: Path, module: str, variables: dict, outputs: tuple[str, ...] = (),
               backend: dict | None = None) -> None:
    """The root configuration: the provider's module with the cluster's variables, re-exporting
    its `hosts` output and the provider's extra outputs (e.g. the image the VMs booted), and
    with ``backend`` the S3 backend's settings (shared state). Refuses a Terraform older than
    the module needs."""
    check_version(module, shared=bool(backend))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)  # the state holds generated host keys
    root = {
        "module": {"cluster": {"source": str(MODULES / module), **variables}},
        "output": {name: {"value": f"${{module.cluster.{name}}}"} for name in ("hosts", *outputs)},
    }
    if backend:
        root["terraform"] = {"backend": {"s3": backend}}
    tmp = workdir / "main.tf.json.tmp"
    tmp.write_text(json.dumps(root, indent=2) + "\n")
    tmp.replace(workdir / "main.tf.json")


def _backend(workdir: Path) -> dict:
    """The backend the root configuration names ({} : Terraform's local file)."""
    try:
        return json.loads((workdir / "main.tf.json").read_text()).get("terraform", {})
    except (OSError, ValueError):
        return {}


def _backend_marker(workdir: Path) -> Path:
    return workdir / ".terraform" / "daskfleet-backend.json"


def backend_changes(workdir: Path, backend: dict | None) -> bool:
    """Whether the working folder was initialised with another backend than ``backend``."""
    if not (workdir / ".terraform" / "modules" / "modules.json").exists():
        return False
    marker = _backend_marker(workdir)
    had = json.loads(marker.read_text()) if marker.exists() else {}
    return had != ({"backend": {"s3": backend}} if backend else {})


def local_resources(workdir: Path) -> int:
    """How many resources the working folder's own state file holds."""
    try:
        return len(json.loads((workdir / "terraform.tfstate").read_text()).get("resources", []))
    except (OSError, ValueError):
        return 0


def _modules_moved(workdir: Path) -> bool:
    """Whether a module's source differs from where the last init installed it from: the
    project moved or was installed anew elsewhere (Terraform then refuses to plan, "Module
    source has changed", until `init` runs again)."""
    try:
        installed = {m["Key"]: m["Source"] for m in json.loads(
            (workdir / ".terraform" / "modules" / "modules.json").read_text())["Modules"]}
        declared = json.loads((workdir / "main.tf.json").read_text()).get("module", {})
    except (OSError, ValueError, KeyError):
        return True  # unreadable: let init make it right
    def where(source: str | None) -> str | None:  # Terraform records a path as file://PATH
        return source.removeprefix("file://") if source else source

    return any(where(installed.get(key)) != where(spec.get("source"))
               for key, spec in declared.items())


def _init(workdir: Path, env: dict | None) -> None:
    wanted = _backend(workdir)
    initialised = (workdir / ".terraform" / "modules" / "modules.json").exists()
    marker = _backend_marker(workdir)
    had = json.loads(marker.read_text()) if marker.exists() else {}
    if initialised and had == wanted and not _modules_moved(workdir):
        return
    # another backend than the last init's (state: added to or removed from the file): the
    # state moves with it, as `terraform init -migrate-state` moves it
    migrate = ("-migrate-state", "-force-copy") if initialised and had != wanted else ()
    _tf(workdir, "init", "-no-color", "-input=false", *migrate, what="init", env=env)
    marker.write_text(json.dumps(wanted) + "\n")


PLAN_FILE = "daskfleet.tfplan"
# resource types that are machines: destroying or replacing one loses what runs on it
MACHINE_TYPES = ("aws_instance", "aws_spot_instance_request", "google_compute_instance",
                 "azurerm_linux_virtual_machine", "azurerm_virtual_machine")


def machines_lost(actions: dict[str, list[str]]) -> list[str]:
    """The machines a plan (``plan``'s actions) would destroy or replace, by address."""
    cut_short = set(actions.get("tainted", ()))  # nothing ever ran there: see ``plan``
    return [a for a in actions["delete"] + actions["replace"]
            if a not in cut_short
            and any(f"{t}." in a.split("module.cluster.")[-1] for t in MACHINE_TYPES)]


def apply(workdir: Path, env: dict | None = None, confirm=None) -> dict:
    """Apply and return the root outputs (name -> value). With ``confirm``: plan into a saved
    plan file, show its actions to ``confirm(actions)`` (raising there applies nothing), then
    apply exactly that plan, never a fresh one made at apply time. Without (a module that makes
    no machines: existing hosts), one ``apply -auto-approve``."""
    if confirm is None:
        _init(workdir, env)
        _tf(workdir, "apply", "-no-color", "-input=false", "-auto-approve", what="apply",
            env=env)
        return outputs(workdir, env)
    actions = plan(workdir, env, keep=True)
    try:
        confirm(actions)
        _tf(workdir, "apply", "-no-color", "-input=false", PLAN_FILE, what="apply", env=env)
    finally:
        (workdir / PLAN_FILE).unlink(missing_ok=True)
    return outputs(workdir, env)


def outputs(workdir: Path, env: dict | None = None) -> dict:
    out = json.loads(_tf(workdir, "output", "-no-color", "-json", what="output", env=env))
    return {name: o["value"] for name, o in out.items()}


def destroy(workdir: Path, env: dict | None = None) -> None:
    if (workdir / "main.tf.json").exists():
        _init(workdir, env)
        _tf(workdir, "destroy", "-no-color", "-input=false", "-auto-approve", what="destroy",
            env=env)


def plan(workdir: Path, env: dict | None = None, keep: bool = False) -> dict[str, list[str]]:
    """Resource addresses by action (create, update, delete, replace), from a saved plan (kept
    as ``PLAN_FILE`` with ``keep``, for ``apply`` to apply as it is). ``tainted``: those of the
    replacements that Terraform makes because their creation was cut short (an interrupted or
    failed apply), so nothing daskfleet started ever ran there."""
    _init(workdir, env)
    _tf(workdir, "plan", "-no-color", "-input=false", "-lock=false", f"-out={PLAN_FILE}",
        what="plan", env=env)
    try:
        shown = json.loads(_tf(workdir, "show", "-no-color", "-json", PLAN_FILE,
                               what="show", env=env))
    finally:
        if not keep:
            (workdir / PLAN_FILE).unlink(missing_ok=True)
    actions: dict[str, list[str]] = {"create": [], "update": [], "delete": [], "replace": [],
                                     "tainted": []}
    for rc in shown.get("resource_changes", []):
        acts = rc["change"]["actions"]
        key = ("replace" if set(acts) == {"create", "delete"} else
               acts[0] if acts and acts[0] in ("create", "update", "delete") else None)
        if key:
            actions[key].append(rc["address"])
        if key == "replace" and rc.get("action_reason") == "replace_because_tainted":
            actions["tainted"].append(rc["address"])
    return actions
