"""The wheelhouse's fan-out: the archive's digest beside it in the cache (what every node checks a
fetched archive against), and the short-lived server the sharing node runs
(playbooks/roles/python_env/files/share_wheelhouse.py), run here as a node runs it."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from runner.provision import wheelhouse

SCRIPT = (Path(__file__).resolve().parents[2] / "playbooks" / "roles" / "python_env" / "files"
          / "share_wheelhouse.py")


def test_the_archive_digest_is_kept_beside_it_and_repaired_when_wrong(tmp_path):
    archive = tmp_path / "abc.tar"
    archive.write_bytes(os.urandom(300_000))
    want = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert wheelhouse.archive_sha256(archive) == want  # a cache from before: written now
    assert (tmp_path / "abc.tar.sha256").read_text().strip() == want
    (tmp_path / "abc.tar.sha256").write_text("truncated\n")
    assert wheelhouse.archive_sha256(archive) == want


def test_pruned_archives_take_their_digest_with_them(tmp_path):
    for i in range(6):
        a = tmp_path / f"h{i}.tar"
        a.write_bytes(b"x")
        os.utime(a, (i, i))
        wheelhouse.archive_sha256(a)
    wheelhouse._prune(tmp_path, keep=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        n for i in range(2, 6) for n in (f"h{i}.tar", f"h{i}.tar.sha256"))


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def _share(archive: Path, ports: str, downloads: int, lifetime: float, log: Path) -> dict:
    # as the role runs it: the command returns once the server listens, detached
    done = subprocess.run([sys.executable, str(SCRIPT), str(archive), "127.0.0.1", ports,
                           str(downloads), str(lifetime), str(log)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_serves_the_archive_to_each_fetcher_then_exits(tmp_path):
    archive = tmp_path / "0123abcd.tar"
    archive.write_bytes(os.urandom(3_000_000))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))  # Dask holds a port of the range on a running node
    busy.listen()
    first = busy.getsockname()[1]
    try:
        at = _share(archive, f"{first}:{first + 20}", downloads=2, lifetime=60,
                    log=tmp_path / "share.log")
    finally:
        busy.close()
    assert at["address"] == "127.0.0.1" and first < at["port"] <= first + 20
    base = f"http://127.0.0.1:{at['port']}"
    with pytest.raises(urllib.error.HTTPError) as e:  # nothing else of the node is served
        urllib.request.urlopen(f"{base}/../../etc/passwd", timeout=10)
    assert e.value.code == 404
    for _ in range(2):
        with urllib.request.urlopen(f"{base}/0123abcd.tar", timeout=10) as r:
            assert r.read() == archive.read_bytes()
    assert _wait_gone(at["pid"]), "the server outlived its last expected download"
    assert "GET /0123abcd.tar" in (tmp_path / "share.log").read_text()


def test_a_server_nobody_fetches_from_exits_at_its_lifetime(tmp_path):
    archive = tmp_path / "x.tar"
    archive.write_bytes(b"y" * 1000)
    at = _share(archive, "41900:41999", downloads=3, lifetime=1, log=tmp_path / "share.log")
    assert _wait_gone(at["pid"], timeout=15)


def test_no_free_port_is_an_error_naming_the_range(tmp_path):
    archive = tmp_path / "x.tar"
    archive.write_bytes(b"y")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        done = subprocess.run([sys.executable, str(SCRIPT), str(archive), "127.0.0.1",
                               f"{port}:{port}", "1", "5", str(tmp_path / "log")],
                              capture_output=True, text=True, timeout=30)
    finally:
        busy.close()
    assert done.returncode != 0
    assert f"no free port in {port}:{port} on 127.0.0.1" in done.stderr
