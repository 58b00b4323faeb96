"""The two test tiers: a skip in the full tier, or anywhere in CI, is a failure (run for real, in
a pytest of its own, with the project's conftest)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]

SAMPLE = '''
import pytest

@pytest.mark.e2e
def test_full_tier_without_its_lab():
    pytest.skip("the lab needs root")

def test_fast_tier_without_terraform():
    pytest.skip("terraform is not on PATH")

@pytest.mark.e2e
def test_another_architecture():
    pytest.skip("not applicable here: checks a cross build from x86_64")
'''


def run_sample(tmp_path: Path, ci: bool) -> str:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    e2e: full tier\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(TESTS.parent)}
    if ci:
        env["CI"] = "true"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider",
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    return proc.stdout


@pytest.mark.parametrize("ci", [False, True])
def test_a_skip_in_the_full_tier_fails_and_in_ci_every_skip_does(tmp_path, ci):
    out = run_sample(tmp_path, ci)
    assert "FAILED test_sample.py::test_full_tier_without_its_lab" in out, out
    assert "the full tier (`make test`) cannot run here" in out and "the lab needs root" in out
    # the fast tier skips with its reason outside CI, fails in CI
    fast_failed = "FAILED test_sample.py::test_fast_tier_without_terraform" in out
    assert fast_failed == ci, out
    if ci:
        assert "CI must run this test, but it skipped: terraform is not on PATH" in out
    # a test that cannot apply to this machine stays a skip, even in CI
    assert "FAILED test_sample.py::test_another_architecture" not in out, out
    assert ("2 failed, 1 skipped" if ci else "1 failed, 2 skipped") in out, out
