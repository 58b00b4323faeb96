"""Shared test settings: e2e tests print the lab hosts' logs when they fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.lab.lab import DEFAULT_STATE_DIR

LOG_TAIL_LINES = 60


def lab_host_logs(state_dir: Path = DEFAULT_STATE_DIR) -> str:
    """The tail of every log a lab host wrote (dask logs and the host's init/sshd log), read
    through the host's disk-backed folders under the lab's state dir."""
    chunks = []
    for host_dir in sorted((state_dir / "hosts").glob("*")):
        logs = [host_dir / "init.log", host_dir / "fs/var/log/cloud-init-output.log",
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and item.get_closest_marker("e2e") is not None:
        report.sections.append(("lab host logs", lab_host_logs()))
