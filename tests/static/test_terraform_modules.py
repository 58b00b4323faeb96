"""Static checks of terraform/modules: parsed with python-hcl2, no provider, no network.

The ingress walker and the variable checks are tested against broken temp copies too, so a
regression in a module (or in the walker) makes these tests fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
MODULES = TERRAFORM / "modules"
CLOUD = ["aws", "gcp", "azure"]
ALL_MODULES = ["hosts", *CLOUD]
CHECKOV = REPO / ".venv-lint" / "bin" / "checkov"
WORLD = {"0.0.0.0/0", "::/0", "*", "internet", "any"}
HOSTS_KEYS = {"name", "address", "role", "user", "port"}
PROVIDER_PINS = {
    "aws": ("hashicorp/aws", "~> 5.0"),
    "gcp": ("hashicorp/google", "~> 6.0"),
    "azure": ("hashicorp/azurerm", "~> 4.0"),
}
# Variables each cloud module needs to plan (used by the variables-only plan test).
REQUIRED_VARS = {
    "aws": {"cluster_name": "t", "region": "eu-west-1"},
    "gcp": {"cluster_name": "t", "project_id": "my-project-123"},
    "azure": {"cluster_name": "t"},
}
TEST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKey test"

needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")


# --- parsing ------------------------------------------------------------------------------


def _norm(x: Any) -> Any:
    """python-hcl2 >= 7 keeps the quotes of keys and strings and marks blocks; drop both."""
    if isinstance(x, dict):
        return {_norm(k): _norm(v) for k, v in x.items() if k != "__is_block__"}
    if isinstance(x, list):
        return [_norm(v) for v in x]
    if isinstance(x, str) and len(x) >= 2 and x[0] == x[-1] == '"':
        try:
            return json.loads(x)
        except ValueError:
            return x[1:-1]
    return x


def parse_dir(path: Path) -> dict[str, list[Any]]:
    """All top-level blocks of the .tf files in one directory, by block type."""
    merged: dict[str, list[Any]] = {}
    for tf in sorted(path.glob("*.tf")):
        with tf.open() as f:
            for kind, items in _norm(hcl2.load(f)).items():
                merged.setdefault(kind, []).extend(items)
    return merged


def blocks(parsed: dict[str, list[Any]], kind: str) -> dict[str, Any]:
    """{name: body} for variable/output blocks."""
    return {name: body for item in parsed.get(kind, []) for name, body in item.items()}


def resources(parsed: dict[str, list[Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """[(type, name, body)] for every resource block."""
    return [
        (rtype, rname, body)
        for item in parsed.get("resource", [])
        for rtype, named in item.items()
        for rname, body in named.items()
    ]


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return x if isinstance(x, list) else [x]


# --- the ingress walker -------------------------------------------------------------------

ALL_PORTS = "all"


def _resolve(value: Any, variables: dict[str, Any]) -> Any:
    """Replace a bare `${var.X}` with X's default (None when it has none)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\$\{var\.([A-Za-z0-9_]+)\}", value)
        if m:
            return variables.get(m.group(1), {}).get("default")
    return value


def _is_world(sources: list[Any], variables: dict[str, Any]) -> bool:
    flat: list[Any] = []
    for s in sources:
        flat.extend(_as_list(_resolve(s, variables)))
    return any(isinstance(s, str) and s.strip().lower() in WORLD for s in flat)


def _ports(spec: Any) -> set[Any]:
    """Port set of "22", 22, "8000-9000", "*"; an expression counts as unknown (all)."""
    ports: set[Any] = set()
    for p in _as_list(spec):
        p = str(p).strip()
        if p.isdigit():
            ports.add(int(p))
        elif re.fullmatch(r"\d+-\d+", p):
            lo, hi = map(int, p.split("-"))
            ports.update(range(lo, hi + 1)) if hi - lo < 70000 else ports.add(ALL_PORTS)
        else:
            ports.add(ALL_PORTS)
    return ports


def _aws_range(body: dict[str, Any], protocol_key: str) -> set[Any]:
    if str(body.get(protocol_key, "tcp")).lower() in {"-1", "all"}:
        return {ALL_PORTS}
    lo, hi = body.get("from_port"), body.get("to_port")
    if isinstance(lo, int) and isinstance(hi, int):
        return set(range(lo, hi + 1))
    return {ALL_PORTS}


def ingress_rules(module_dir: Path) -> list[tuple[str, bool, set[Any]]]:
    """Every ingress rule in a module as (address, open to the world?, ports)."""
    parsed = parse_dir(module_dir)
    variables = blocks(parsed, "variable")
    rules: list[tuple[str, bool, set[Any]]] = []
    for rtype, rname, body in resources(parsed):
        addr = f"{rtype}.{rname}"
        if rtype == "aws_vpc_security_group_ingress_rule":
            world = _is_world([body.get("cidr_ipv4"), body.get("cidr_ipv6")], variables)
            rules.append((addr, world, _aws_range(body, "ip_protocol")))
        elif rtype == "aws_security_group_rule" and body.get("type") == "ingress":
            world = _is_world(
                _as_list(body.get("cidr_blocks")) + _as_list(body.get("ipv6_cidr_blocks")),
                variables,
            )
            rules.append((addr, world, _aws_range(body, "protocol")))
        elif rtype == "aws_security_group":
            for i, rule in enumerate(_as_list(body.get("ingress"))):
                world = _is_world(
                    _as_list(rule.get("cidr_blocks")) + _as_list(rule.get("ipv6_cidr_blocks")),
                    variables,
                )
                rules.append((f"{addr}.ingress[{i}]", world, _aws_range(rule, "protocol")))
        elif rtype == "google_compute_firewall":
            if str(body.get("direction", "INGRESS")).upper() != "INGRESS":
                continue
            world = _is_world(_as_list(body.get("source_ranges")), variables)
            for i, allow in enumerate(_as_list(body.get("allow"))):
                ports = _ports(allow["ports"]) if "ports" in allow else {ALL_PORTS}
                rules.append((f"{addr}.allow[{i}]", world, ports))
        elif rtype in {"azurerm_network_security_group", "azurerm_network_security_rule"}:
            azure_rules = _as_list(body.get("security_rule")) if rtype.endswith("group") else [body]
            for i, rule in enumerate(azure_rules):
                if str(rule.get("direction")).lower() != "inbound":
                    continue
                if str(rule.get("access")).lower() != "allow":
                    continue
                sources = _as_list(rule.get("source_address_prefix")) + _as_list(
                    rule.get("source_address_prefixes")
                )
                ports = _ports(
                    _as_list(rule.get("destination_port_range"))
                    + _as_list(rule.get("destination_port_ranges"))
                )
                rules.append((f"{addr}.rule[{i}]", _is_world(sources, variables), ports))
    return rules


def world_open_non_ssh(module_dir: Path) -> list[str]:
    """Ingress rules that open anything other than port 22 to 0.0.0.0/0 or ::/0."""
    return [
        f"{addr} opens {sorted(map(str, ports))[:5]} to the world"
        for addr, world, ports in ingress_rules(module_dir)
        if world and ports != {22}
    ]


# --- module contracts ---------------------------------------------------------------------


def _module_dirs() -> list[Path]:
    dirs = []
    for m in ALL_MODULES:
        dirs.append(MODULES / m)
        dirs.extend(p.parent for p in sorted((MODULES / m / "examples").glob("*/main.tf")))
    return dirs


@pytest.mark.parametrize("module", ALL_MODULES)
def test_module_has_the_standard_files(module: str):
    d = MODULES / module
    for name in ["main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"]:
        assert (d / name).is_file(), f"{module}: {name} is missing"
    assert (d / "examples" / "basic" / "main.tf").is_file(), f"{module}: examples/basic missing"


@pytest.mark.parametrize("path", _module_dirs(), ids=lambda p: str(p.relative_to(MODULES)))
def test_every_variable_has_description_and_type(path: Path):
    variables = blocks(parse_dir(path), "variable")
    for name, body in variables.items():
        assert str(body.get("description", "")).strip(), f"{path}: variable {name} has no description"
        assert "type" in body, f"{path}: variable {name} has no type"


@pytest.mark.parametrize("module", ALL_MODULES)
def test_hosts_output_has_the_shared_shape(module: str):
    outputs = blocks(parse_dir(MODULES / module), "output")
    assert "hosts" in outputs, f"{module}: no `hosts` output"
    assert "cluster_name" in outputs, f"{module}: no `cluster_name` output"
    if module == "hosts":
        # Read back from terraform_data inputs: check the keys stored there.
        body = next(b for t, n, b in resources(parse_dir(MODULES / module)) if t == "terraform_data")
        keys = set(body["input"])
    else:
        value = str(outputs["hosts"]["value"])
        keys = set(re.findall(r"\b([a-z_]+)\s*[=:]\s", value)) & (HOSTS_KEYS | {"host_key"})
    assert keys == HOSTS_KEYS, f"{module}: hosts output keys {sorted(keys)}"


@pytest.mark.parametrize("module", ALL_MODULES)
def test_versions(module: str):
    terraform_block = parse_dir(MODULES / module)["terraform"][0]
    assert "required_version" in terraform_block
    providers = {}
    for item in _as_list(terraform_block.get("required_providers")):
        providers.update(item)
    if module == "hosts":
        assert providers == {}, "the hosts module must work offline: no required_providers"
    else:
        source, version = PROVIDER_PINS[module]
        (pin,) = providers.values()
        assert (pin["source"], pin["version"]) == (source, version)


@pytest.mark.parametrize("module", CLOUD)
def test_admin_cidr_is_required_and_validated(module: str):
    variables = blocks(parse_dir(MODULES / module), "variable")
    admin = variables["admin_cidr"]
    assert "default" not in admin, f"{module}: admin_cidr must have no default"
    conditions = " ".join(str(v["condition"]) for v in _as_list(admin.get("validation")))
    assert "cidrhost(" in conditions, f"{module}: admin_cidr is not checked to be a CIDR"
    assert "allow_world_ssh" in conditions, f"{module}: world SSH is not gated"
    assert variables["allow_world_ssh"].get("default") is False
    assert variables["use_public_ip"].get("default") is False
    assert variables["worker_port_range"]["default"] == {"from": 40000, "to": 40100}


@pytest.mark.parametrize("module", CLOUD)
def test_every_taggable_resource_is_tagged(module: str):
    parsed = parse_dir(MODULES / module)
    local_values = {k: v for item in parsed.get("locals", []) for k, v in item.items()}
    tag_local = "labels" if module == "gcp" else "tags"
    assert local_values[tag_local] == {"creator": "daskfleet", "cluster": "${var.cluster_name}"}
    # Resources whose type has no tags/labels argument.
    untaggable = re.compile(
        r"(_association$|^azurerm_subnet$|^aws_route_table_association$|"
        r"^google_compute_(network|subnetwork|firewall)$|^google_service_account$)"
    )
    tag_key = "labels" if module == "gcp" else "tags"
    checked = 0
    for rtype, rname, body in resources(parsed):
        if untaggable.search(rtype):
            continue
        checked += 1
        assert f"local.{tag_local}" in str(body.get(tag_key)), f"{rtype}.{rname} is not tagged"
    assert checked >= 1, f"{module}: no taggable resource found"


def test_aws_instances_require_imdsv2_and_encrypt_disks():
    (body,) = [b for t, _, b in resources(parse_dir(MODULES / "aws")) if t == "aws_instance"]
    assert body["metadata_options"][0]["http_tokens"] == "required"
    assert body["root_block_device"][0]["encrypted"] is True


# --- the ingress walker, on the real modules and on broken copies ---------------------------


@pytest.mark.parametrize("module", CLOUD)
def test_no_port_but_ssh_is_open_to_the_world(module: str):
    rules = ingress_rules(MODULES / module)
    assert len(rules) >= 2, f"{module}: the walker found no ingress rules; is it reading them?"
    assert world_open_non_ssh(MODULES / module) == []


# (module, file, old text, new text): each edit opens port 8786 (or more) to the world.
BREAKAGES = {
    "aws": (
        "main.tf",
        re.compile(
            r'(resource "aws_vpc_security_group_ingress_rule" "dask_scheduler_from_cluster" \{.*?)'
            r"referenced_security_group_id\s*=\s*aws_security_group\.this\.id",
            re.S,
        ),
        r'\1cidr_ipv4 = "0.0.0.0/0"',
    ),
    "gcp": (
        "main.tf",
        re.compile(r"source_tags\s*=\s*\[local\.tag\]"),
        'source_ranges = ["0.0.0.0/0"]',
    ),
    "azure": (
        "main.tf",
        re.compile(
            r'(name\s*=\s*"dask-within-cluster".*?)'
            r"source_application_security_group_ids\s*=\s*\[[^\]]*\]",
            re.S,
        ),
        r'\1source_address_prefix = "*"',
    ),
}


@pytest.mark.parametrize("module", CLOUD)
def test_walker_detects_dask_port_opened_to_the_world(module: str, tmp_path: Path):
    copy = tmp_path / module
    shutil.copytree(MODULES / module, copy)
    name, pattern, replacement = BREAKAGES[module]
    text = (copy / name).read_text()
    broken, count = pattern.subn(replacement, text, count=1)
    assert count == 1, f"{module}: the breakage no longer applies; update BREAKAGES"
    (copy / name).write_text(broken)
    findings = world_open_non_ssh(copy)
    assert findings, f"{module}: a world-open Dask port went unnoticed"
    assert any("8786" in f or "all" in f for f in findings), findings


def test_walker_resolves_variable_defaults_and_allows_world_ssh(tmp_path: Path):
    (tmp_path / "main.tf").write_text(
        """
variable "open" {
  description = "x"
  type        = string
  default     = "::/0"
}

resource "aws_security_group" "this" {
  ingress {
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  ingress {
    from_port        = 8787
    to_port          = 8787
    protocol         = "tcp"
    ipv6_cidr_blocks = [var.open]
  }
}
"""
    )
    findings = world_open_non_ssh(tmp_path)
    assert len(findings) == 1 and "ingress[1]" in findings[0], findings


# --- terraform itself (no providers needed) -------------------------------------------------


def _terraform(cwd: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1", TF_INPUT="0")
    return subprocess.run(
        ["terraform", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@needs_terraform
def test_terraform_fmt_is_clean():
    result = _terraform(REPO, "fmt", "-check", "-recursive", "-no-color", "terraform/")
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}{result.stderr}"


@needs_terraform
@pytest.mark.parametrize("module", CLOUD)
def test_admin_cidr_validation_refuses_the_world(module: str, tmp_path: Path):
    """Plan the module's variables.tf alone (it needs no provider) with good and bad CIDRs."""
    shutil.copy(MODULES / module / "variables.tf", tmp_path / "variables.tf")
    assert _terraform(tmp_path, "init", "-input=false", "-no-color").returncode == 0

    def plan(**extra: Any) -> subprocess.CompletedProcess[str]:
        values = {**REQUIRED_VARS[module], "ssh_public_key": TEST_KEY, **extra}
        (tmp_path / "terraform.tfvars.json").write_text(json.dumps(values))
        return _terraform(tmp_path, "plan", "-input=false", "-no-color")

    ok = plan(admin_cidr="203.0.113.7/32")
    assert ok.returncode == 0, ok.stderr
    for bad in ["0.0.0.0/0", "::/0", "not-a-cidr"]:
        refused = plan(admin_cidr=bad)
        assert refused.returncode != 0, f"{module}: admin_cidr={bad} was accepted"
        assert "admin_cidr" in refused.stderr
    assert plan(admin_cidr="0.0.0.0/0", allow_world_ssh=True).returncode == 0
    missing = plan()
    assert missing.returncode != 0 and "admin_cidr" in missing.stderr


# --- checkov ------------------------------------------------------------------------------


@pytest.mark.skipif(
    not CHECKOV.exists(),
    reason="checkov is not installed in .venv-lint (python3 -m venv .venv-lint && "
    ".venv-lint/bin/pip install checkov)",
)
def test_checkov_finds_no_failed_check():
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE")  # with --skip-download: no network
    result = subprocess.run(
        [str(CHECKOV), "-d", str(TERRAFORM), "--framework", "terraform", "--skip-download",
         "--quiet", "--compact", "-o", "json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    summary = {k: sum(r["summary"][k] for r in reports) for k in ["passed", "failed"]}
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})"
        for r in reports
        for c in r.get("results", {}).get("failed_checks", [])
    ]
    assert summary["failed"] == 0, "checkov failed checks:\n" + "\n".join(failed)
    assert summary["passed"] > 0, "checkov checked nothing"
    assert sum(r["summary"]["parsing_errors"] for r in reports) == 0
