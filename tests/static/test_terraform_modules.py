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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
import pytest

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
MODULES = TERRAFORM / "modules"
CLOUD = ["aws", "gcp", "azure"]
ALL_MODULES = ["hosts", *CLOUD]
WORLD = {"0.0.0.0/0", "::/0", "*", "internet", "any"}
HOSTS_KEYS = {"name", "role", "user", "port", "private_address", "public_address"}
# Dask's ports in daskfleet (runner/config.py): scheduler, dashboard, worker and nanny ranges.
DASK_PORTS = {
    "scheduler": 8786,
    "dashboard": 8787,
    "worker_from": 40000,
    "worker_to": 40099,
    "nanny_from": 40100,
    "nanny_to": 40199,
}
DASK_PORT_SET = {8786, 8787, *range(40000, 40200)}
DEFAULT_SSH_USER = {"aws": "admin", "gcp": "daskfleet", "azure": "daskfleet"}
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


REF = re.compile(r"\$\{((?:var|local)\.[A-Za-z0-9_.]+)\}")
TOSTRING_REF = re.compile(r"\$\{tostring\(((?:var|local)\.[A-Za-z0-9_.]+)\)\}")


@dataclass(frozen=True)
class Scope:
    """What `var.X.Y` and `local.X` stand for: variable defaults and local values as parsed."""

    variables: dict[str, Any]
    local_values: dict[str, Any]

    @classmethod
    def of(cls, parsed: dict[str, list[Any]]) -> Scope:
        local_values = {k: v for item in parsed.get("locals", []) for k, v in item.items()}
        return cls(blocks(parsed, "variable"), local_values)

    def lookup(self, ref: str) -> Any:
        kind, name, *path = ref.split(".")
        value = self.variables.get(name, {}).get("default") if kind == "var" else self.local_values.get(name)
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value


def _resolve(value: Any, scope: Scope, depth: int = 0) -> Any:
    """Replace `${var.X.Y}` with the variable's default and `${local.X}` with the local's value
    (recursively, in lists and inside strings); what cannot be resolved becomes None."""
    if depth > 10:
        return None
    if isinstance(value, list):
        return [_resolve(v, scope, depth + 1) for v in value]
    if isinstance(value, str):
        m = REF.fullmatch(value)
        if m:
            return _resolve(scope.lookup(m.group(1)), scope, depth + 1)
        m = TOSTRING_REF.fullmatch(value)
        if m:
            resolved = _resolve(scope.lookup(m.group(1)), scope, depth + 1)
            return None if resolved is None else str(resolved)
        if REF.search(value):
            return REF.sub(lambda m: str(_resolve(scope.lookup(m.group(1)), scope, depth + 1)), value)
    return value


def _is_world(sources: list[Any], scope: Scope) -> bool:
    flat: list[Any] = []
    for s in sources:
        flat.extend(_as_list(_resolve(s, scope)))
    return any(isinstance(s, str) and s.strip().lower() in WORLD for s in flat)


def _ports(spec: Any, scope: Scope) -> set[Any]:
    """Port set of "22", 22, "8000-9000", "*"; an expression that does not resolve to a
    number or range counts as unknown (all)."""
    ports: set[Any] = set()
    resolved = _resolve(spec, scope)
    for p in resolved if isinstance(resolved, list) else [resolved]:
        if isinstance(p, list):
            ports |= _ports(p, scope)
            continue
        p = str(p).strip()
        if p.isdigit():
            ports.add(int(p))
        elif re.fullmatch(r"\d+-\d+", p):
            lo, hi = map(int, p.split("-"))
            ports.update(range(lo, hi + 1)) if hi - lo < 70000 else ports.add(ALL_PORTS)
        else:
            ports.add(ALL_PORTS)
    return ports


def _aws_range(body: dict[str, Any], protocol_key: str, scope: Scope) -> set[Any]:
    if str(body.get(protocol_key, "tcp")).lower() in {"-1", "all"}:
        return {ALL_PORTS}
    lo, hi = _resolve(body.get("from_port"), scope), _resolve(body.get("to_port"), scope)
    if isinstance(lo, int) and isinstance(hi, int):
        return set(range(lo, hi + 1))
    return {ALL_PORTS}


# What "from the cluster's own members only" looks like in each module: the source is the
# module's own security group / network tag / application security group, and nothing else.
AWS_OWN_GROUP = "${aws_security_group.this.id}"
GCP_OWN_TAG = ["${local.tag}"]
AZURE_OWN_ASG = ["${azurerm_application_security_group.this.id}"]


@dataclass(frozen=True)
class Ingress:
    address: str
    world: bool  # open to 0.0.0.0/0, ::/0 or Azure's "*"/Internet
    ports: set[Any]  # port numbers, or ALL_PORTS when unknown
    group_only: bool  # reachable only from members of the cluster's own group


def _no_cidr(body: dict[str, Any], *keys: str) -> bool:
    return all(body.get(k) in (None, [], "") for k in keys)


def ingress_rules(module_dir: Path) -> list[Ingress]:
    """Every ingress (allow) rule in a module."""
    parsed = parse_dir(module_dir)
    scope = Scope.of(parsed)
    rules: list[Ingress] = []
    for rtype, rname, body in resources(parsed):
        addr = f"{rtype}.{rname}"
        if rtype == "aws_vpc_security_group_ingress_rule":
            world = _is_world([body.get("cidr_ipv4"), body.get("cidr_ipv6")], scope)
            group = body.get("referenced_security_group_id") == AWS_OWN_GROUP and _no_cidr(
                body, "cidr_ipv4", "cidr_ipv6", "prefix_list_id"
            )
            rules.append(Ingress(addr, world, _aws_range(body, "ip_protocol", scope), group))
        elif rtype == "aws_security_group_rule" and body.get("type") == "ingress":
            cidrs = _as_list(body.get("cidr_blocks")) + _as_list(body.get("ipv6_cidr_blocks"))
            own = body.get("self") is True or body.get("source_security_group_id") == AWS_OWN_GROUP
            group = own and not cidrs
            rules.append(Ingress(addr, _is_world(cidrs, scope), _aws_range(body, "protocol", scope), group))
        elif rtype == "aws_security_group":
            for i, rule in enumerate(_as_list(body.get("ingress"))):
                cidrs = _as_list(rule.get("cidr_blocks")) + _as_list(rule.get("ipv6_cidr_blocks"))
                group = rule.get("self") is True and not cidrs
                ports = _aws_range(rule, "protocol", scope)
                rules.append(Ingress(f"{addr}.ingress[{i}]", _is_world(cidrs, scope), ports, group))
        elif rtype == "google_compute_firewall":
            if str(body.get("direction", "INGRESS")).upper() != "INGRESS":
                continue
            world = _is_world(_as_list(body.get("source_ranges")), scope)
            group = body.get("source_tags") == GCP_OWN_TAG and _no_cidr(
                body, "source_ranges", "source_service_accounts"
            )
            for i, allow in enumerate(_as_list(body.get("allow"))):
                ports = _ports(allow["ports"], scope) if "ports" in allow else {ALL_PORTS}
                rules.append(Ingress(f"{addr}.allow[{i}]", world, ports, group))
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
                    + _as_list(rule.get("destination_port_ranges")),
                    scope,
                )
                group = rule.get("source_application_security_group_ids") == AZURE_OWN_ASG and not sources
                rules.append(Ingress(f"{addr}.rule[{i}]", _is_world(sources, scope), ports, group))
    return rules


def show_ports(ports: set[Any]) -> str:
    """{22, 8786, 8787, 40000, ..., 40199} -> "22, 8786-8787, 40000-40199"."""
    nums = sorted(p for p in ports if isinstance(p, int))
    spans: list[list[int]] = []
    for p in nums:
        if spans and p == spans[-1][1] + 1:
            spans[-1][1] = p
        else:
            spans.append([p, p])
    shown = [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in spans]
    return ", ".join(shown + ([ALL_PORTS] if ALL_PORTS in ports else []))


def world_open_non_ssh(module_dir: Path) -> list[str]:
    """Ingress rules that open anything other than port 22 to 0.0.0.0/0 or ::/0."""
    return [
        f"{r.address} opens {show_ports(r.ports)} to the world"
        for r in ingress_rules(module_dir)
        if r.world and r.ports != {22}
    ]


def dask_ports_beyond_group(module_dir: Path) -> list[str]:
    """Ingress rules that open a Dask port (or unknown ports) to anyone outside the group."""
    return [
        f"{r.address} opens {show_ports(r.ports)} beyond the cluster's own group"
        for r in ingress_rules(module_dir)
        if not r.group_only and (ALL_PORTS in r.ports or r.ports & DASK_PORT_SET)
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


def hosts_output_keys(module: str) -> set[str]:
    """The keys of the objects in a module's hosts output (the old `address` included)."""
    parsed = parse_dir(MODULES / module)
    outputs = blocks(parsed, "output")
    assert "hosts" in outputs, f"{module}: no `hosts` output"
    assert "cluster_name" in outputs, f"{module}: no `cluster_name` output"
    if module == "hosts":
        # Read back from terraform_data inputs: check the keys stored there.
        body = next(b for t, n, b in resources(parsed) if t == "terraform_data")
        return set(body["input"])
    value = str(outputs["hosts"]["value"])
    return set(re.findall(r"\b([a-z_]+)\s*[=:]\s", value)) & (HOSTS_KEYS | {"address", "host_key"})


def test_every_module_returns_the_same_hosts_shape():
    keys = {m: hosts_output_keys(m) for m in ALL_MODULES}
    assert keys == {m: HOSTS_KEYS for m in ALL_MODULES}, keys


@pytest.mark.parametrize("module", CLOUD)
def test_cloud_hosts_output_splits_private_and_public_address(module: str):
    value = str(blocks(parse_dir(MODULES / module), "output")["hosts"]["value"])
    private = re.search(r"private_address = ([^,}]+)", value)
    public = re.search(r"public_address = (.+?)\}\]\}$", value)
    assert private and public, f"{module}: private_address/public_address not found in {value}"
    # The interface address is never the NAT'd one; the public one is null without use_public_ip.
    assert re.search(r"private_ip|network_ip", private.group(1)), private.group(1)
    assert re.fullmatch(r"var\.use_public_ip \? .*(public_ip|nat_ip|ip_address).* : null", public.group(1))


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


@pytest.mark.parametrize("module", CLOUD)
def test_cloud_module_contract_inputs(module: str):
    variables = blocks(parse_dir(MODULES / module), "variable")
    assert "worker_port_range" not in variables, f"{module}: worker_port_range was replaced by dask_ports"
    assert variables["ssh_user"]["default"] == DEFAULT_SSH_USER[module]
    ssh_key = variables["ssh_public_key"]
    assert "default" not in ssh_key and ssh_key.get("validation"), f"{module}: ssh_public_key"

    host_keys = variables["host_keys"]
    assert host_keys.get("sensitive") is True, f"{module}: host_keys must be sensitive"
    assert host_keys.get("default") == {}
    key_type = re.sub(r"\s", "", str(host_keys["type"]))
    assert key_type == "${map(object({private_key=string,public_key=string}))}", key_type

    dask_ports = variables["dask_ports"]
    assert dask_ports["default"] == DASK_PORTS
    conditions = " ".join(str(v["condition"]) for v in _as_list(dask_ports.get("validation")))
    assert "1024" in conditions and "65535" in conditions and "worker_from <=" in conditions


def test_aws_monitoring_is_opt_in():
    parsed = parse_dir(MODULES / "aws")
    assert blocks(parsed, "variable")["monitoring"]["default"] is False
    (body,) = [b for t, _, b in resources(parsed) if t == "aws_instance"]
    assert body["monitoring"] == "${var.monitoring}"


@pytest.mark.parametrize(("module", "output"), [("aws", "ami_id"), ("gcp", "image"), ("azure", "image")])
def test_cloud_module_outputs_the_image_it_used(module: str, output: str):
    outputs = blocks(parse_dir(MODULES / module), "output")
    assert output in outputs, f"{module}: no `{output}` output to pin the image with"
    variables = blocks(parse_dir(MODULES / module), "variable")
    assert output in variables, f"{module}: the {output} output cannot be passed back as a variable"


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
    assert body["root_block_device"][0]["volume_type"] == "gp3"
    # The runner pins the image through ami_id; nothing may silently ignore an ami change.
    assert "ignore_changes" not in str(body.get("lifecycle"))


# --- the ingress walker, on the real modules and on broken copies ---------------------------


@pytest.mark.parametrize("module", CLOUD)
def test_no_port_but_ssh_is_open_to_the_world(module: str):
    rules = ingress_rules(MODULES / module)
    assert len(rules) >= 2, f"{module}: the walker found no ingress rules; is it reading them?"
    assert world_open_non_ssh(MODULES / module) == []


@pytest.mark.parametrize("module", CLOUD)
def test_dask_ports_are_open_exactly_and_only_inside_the_cluster(module: str):
    rules = ingress_rules(MODULES / module)
    assert dask_ports_beyond_group(MODULES / module) == []
    group_ports = set().union(*(r.ports for r in rules if r.group_only))
    assert ALL_PORTS not in group_ports, f"{module}: a group rule's ports did not resolve"
    assert group_ports == DASK_PORT_SET, (
        f"{module}: inside the cluster, {show_ports(group_ports - DASK_PORT_SET)} open too many, "
        f"{show_ports(DASK_PORT_SET - group_ports)} missing"
    )
    # SSH: port 22, from admin_cidr (not from the group, not from anywhere else).
    others = [r for r in rules if not r.group_only]
    assert [r.ports for r in others] == [{22}], [r.address for r in others]


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


# (module, file, old text, new text): each edit opens the Dask scheduler port to admin_cidr.
TO_ADMIN = {
    "aws": (
        "main.tf",
        BREAKAGES["aws"][1],
        r"\1cidr_ipv4 = var.admin_cidr",
    ),
    "gcp": ("main.tf", BREAKAGES["gcp"][1], "source_ranges = [var.admin_cidr]"),
    "azure": (
        "main.tf",
        BREAKAGES["azure"][1],
        r"\1source_address_prefix = var.admin_cidr",
    ),
}


@pytest.mark.parametrize("module", CLOUD)
def test_walker_detects_dask_port_opened_to_admin_cidr(module: str, tmp_path: Path):
    copy = tmp_path / module
    shutil.copytree(MODULES / module, copy)
    name, pattern, replacement = TO_ADMIN[module]
    broken, count = pattern.subn(replacement, (copy / name).read_text(), count=1)
    assert count == 1, f"{module}: the breakage no longer applies; update TO_ADMIN"
    (copy / name).write_text(broken)
    assert world_open_non_ssh(copy) == []  # admin_cidr is not the world...
    findings = dask_ports_beyond_group(copy)  # ...but it is not the cluster either
    assert findings and any("8786" in f for f in findings), findings


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
