"""`terraform validate` of the modules whose providers a local mirror holds (no network).

The aws module needs hashicorp/aws, which these machines keep in a filesystem mirror
(/opt/tf-plugins); the hosts module needs no provider at all. gcp and azure need providers that
are never available offline, so they are checked statically only (test_terraform_modules.py).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("terraform_validate", HERE / "terraform_validate.py")
assert _spec and _spec.loader
tfv = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = tfv  # dataclasses look the module up by name
_spec.loader.exec_module(tfv)

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH"),
]


def test_aws_module_and_example_validate_against_the_mirror():
    mirror, held = tfv.find_mirror()
    if "hashicorp/aws" not in held:
        pytest.skip(f"no local provider mirror holds hashicorp/aws (looked in {tfv.MIRROR_CANDIDATES})")
    (outcome,) = tfv.validate(["aws"])
    assert outcome.status == "valid", outcome.detail
    assert outcome.detail == "aws, aws/examples/basic"  # the example was validated too


def test_hosts_module_validates_without_any_provider():
    (outcome,) = tfv.validate(["hosts"])
    assert outcome.status == "valid", outcome.detail


def test_modules_without_their_provider_are_skipped_with_the_reason(tmp_path: Path):
    outcome = tfv.validate_module("gcp", None, set(), tmp_path)
    assert outcome.status == "skipped"
    assert "hashicorp/google" in outcome.detail and "no local provider mirror" in outcome.detail


def test_cli_config_installs_only_from_the_mirror():
    config = tfv.cli_config(Path("/opt/tf-plugins"), {"hashicorp/aws"})
    assert 'path    = "/opt/tf-plugins"' in config
    assert config.count('"registry.terraform.io/hashicorp/aws"') == 2  # include, and excluded from direct
