"""Shared test settings: e2e tests print the lab hosts' logs when they fail, and a test that
skips where it must run fails instead."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner.lab.machine import DEFAULT_STATE_DIR

LOG_TAIL_LINES = 60


def lab_host_logs(state_dir: Path = DEFAULT_STATE_DIR) -> str:
    """The tail of every log a lab host wrote (dask logs, the host's boot console, its boot
    step's and its sshd's logs), read through the host's disk-backed folders under the lab's
    state dir."""
    chunks = []
    for host_dir in sorted((state_dir / "hosts").glob("*")):
        logs = [host_dir / "init.log", host_dir / "fs/var/log/daskfleet-lab-init.log",
                host_dir / "fs/var/log/sshd.log", host_dir / "fs/var/log/cloud-init-output.log",
                *sorted((host_dir / "fs/var/log/daskfleet").glob("*.log"))]
        for log in logs:
            if log.is_file():
                lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                chunks.append(f"===== {host_dir.name}: {log.name} =====\n" + "\n".join(lines))
    # The emulated EC2: its API server's and instance controller's logs.
    for log in sorted([*(state_dir / "cloud").glob("*.log"),
                       *(state_dir / "cloud" / "terminated").glob("*.log")]):
        lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        chunks.append(f"===== emulated EC2: {log.name} =====\n" + "\n".join(lines))
    return "\n".join(chunks) or f"(no lab host logs under {state_dir})"


# A test that cannot apply to this machine at all (a cross build from another architecture) says
# so with this in its skip reason; any other skip is a missing prerequisite.
NOT_APPLICABLE = "not applicable here:"


def full_tier(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(m) is not None for m in ("e2e", "integration"))


def skip_becomes_failure(item: pytest.Item, reason: str) -> str | None:
    """Why a skip of ``item`` must fail: the full tier never skips (a skipped tier is no proof),
    and in CI (``CI`` set) no tier does; None where a skip is allowed."""
    if NOT_APPLICABLE in reason:
        return None
    if full_tier(item):
        return ("the full tier (`make test`) cannot run here, and it fails rather than skips: "
                f"{reason}. `make check` runs the tier that needs no lab, root or network.")
    if os.environ.get("CI"):
        return f"CI must run this test, but it skipped: {reason}"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        why = skip_becomes_failure(item, reason)
        if why:
            report.outcome, report.longrepr = "failed", why
    if report.failed and item.get_closest_marker("e2e") is not None:
        report.sections.append(("lab host logs", lab_host_logs()))
