"""`terraform validate` every module (and its examples) whose providers a local mirror holds.

No network: Terraform gets a throwaway CLI config whose only provider source is a filesystem
mirror found on this machine, and each module is validated in a temp copy (no .terraform/ in
the checkout). Modules with a provider that no mirror holds are skipped with a printed reason
(on these machines: gcp and azure, as hashicorp/google and hashicorp/azurerm are never there).

    python tests/static/terraform_validate.py [MODULE ...]     # default: every module

Exit status 0 when every module that could be validated is valid (also when none could be),
1 otherwise. Set DASKFLEET_TF_MIRROR to a mirror folder to use it instead of the usual places.
Used by `make lint` and tests/static/test_terraform_validate.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULES = REPO / "terraform" / "modules"
REGISTRY = "registry.terraform.io"
# Where Terraform's documented implicit mirrors live, plus this project's machines' /opt/tf-plugins.
MIRROR_CANDIDATES = [
    Path("/opt/tf-plugins"),
    Path.home() / ".terraform.d" / "plugins",
    Path.home() / ".local" / "share" / "terraform" / "plugins",
    Path("/usr/local/share/terraform/plugins"),
    Path("/usr/share/terraform/plugins"),
]
TF_TIMEOUT = 300  # seconds for one terraform command


@dataclass(frozen=True)
class Outcome:
    module: str
    status: str  # "valid", "invalid" or "skipped"
    detail: str = ""


def required_providers(module_dir: Path) -> set[str]:
    """Provider addresses ("hashicorp/aws") that the module's .tf files require."""
    found: set[str] = set()
    for tf in module_dir.glob("*.tf"):
        for block in re.findall(r"required_providers\s*\{(.*?)\n\s*\}", tf.read_text(), re.S):
            found.update(re.findall(r'source\s*=\s*"([^"]+)"', block))
    return {s.lower() if "/" in s else f"hashicorp/{s.lower()}" for s in found}


def mirror_providers(mirror: Path) -> set[str]:
    """Providers ("hashicorp/aws") with at least one version for this platform in a mirror."""
    platform = f"linux_{'arm64' if os.uname().machine in ('aarch64', 'arm64') else 'amd64'}"
    held = set()
    for version_dir in mirror.glob(f"{REGISTRY}/*/*/*"):
        has_binary = (version_dir / platform).is_dir() or any(version_dir.glob(f"*_{platform}.zip"))
        if has_binary:
            held.add(f"{version_dir.parent.parent.name}/{version_dir.parent.name}")
    return held


def find_mirror() -> tuple[Path | None, set[str]]:
    """The first mirror that holds any provider, and the providers it holds."""
    env = os.environ.get("DASKFLEET_TF_MIRROR")
    for candidate in [Path(env)] if env else MIRROR_CANDIDATES:
        if candidate.is_dir() and (held := mirror_providers(candidate)):
            return candidate, held
    return None, set()


def cli_config(mirror: Path, providers: set[str]) -> str:
    """A CLI config that installs these providers from the mirror and nothing from anywhere."""
    include = ", ".join(f'"{REGISTRY}/{p}"' for p in sorted(providers))
    return (
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{mirror}"\n    include = [{include}]\n  }}\n'
        f"  direct {{\n    exclude = [{include}]\n  }}\n"
        "}\n"
    )


def _terraform(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["terraform", *args, "-no-color"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TF_TIMEOUT,
    )


def validate_module(name: str, mirror: Path | None, held: set[str], workdir: Path) -> Outcome:
    """Validate one module and each of its examples in a temp copy."""
    source = MODULES / name
    needed = required_providers(source)
    missing = sorted(needed - held)
    if missing:
        where = f"the mirror at {mirror}" if mirror else "no local provider mirror was found"
        return Outcome(name, "skipped", f"{', '.join(missing)} not available offline ({where})")
    copy = workdir / name
    ignore = shutil.ignore_patterns(".terraform", "*.tfstate*", ".terraform.lock.hcl")
    shutil.copytree(source, copy, ignore=ignore)
    config = workdir / f"{name}.tfrc"
    # A module without providers downloads nothing; an empty direct {} keeps the config valid.
    no_providers = "provider_installation {\n  direct {}\n}\n"
    config.write_text(cli_config(mirror, needed) if needed and mirror else no_providers)
    env = dict(os.environ, CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1", TF_INPUT="0",
               TF_CLI_CONFIG_FILE=str(config))  # fmt: skip
    env.pop("TF_PLUGIN_CACHE_DIR", None)
    checked = []
    for d in [copy, *sorted(p.parent for p in copy.glob("examples/*/main.tf"))]:
        label = str(d.relative_to(workdir))
        for step in (["init", "-backend=false", "-input=false"], ["validate"]):
            result = _terraform(d, env, *step)
            if result.returncode != 0:
                return Outcome(
                    name, "invalid", f"{label}: terraform {step[0]} failed:\n{result.stdout}{result.stderr}"
                )
        checked.append(label)
    return Outcome(name, "valid", ", ".join(checked))


def validate(modules: list[str]) -> list[Outcome]:
    mirror, held = find_mirror()
    with tempfile.TemporaryDirectory(prefix="daskfleet-tf-validate-") as tmp:
        return [validate_module(m, mirror, held, Path(tmp)) for m in modules]


def main(argv: list[str]) -> int:
    if shutil.which("terraform") is None:
        print("terraform validate: SKIPPED, terraform is not on PATH")
        return 0
    modules = argv or sorted(p.name for p in MODULES.iterdir() if (p / "versions.tf").is_file())
    mirror, held = find_mirror()
    print(f"terraform validate: provider mirror {mirror or 'none found'}"
          + (f" (holds {', '.join(sorted(held))})" if held else ""))  # fmt: skip
    outcomes = validate(modules)
    for o in outcomes:
        print(f"  {o.module}: {o.status.upper()}" + (f", {o.detail}" if o.detail else ""))
    if any(o.status == "skipped" for o in outcomes):
        print("  (skipped modules are checked statically only: fmt, tests/static, checkov)")
    return 1 if any(o.status == "invalid" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
