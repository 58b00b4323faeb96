"""Two clusters on the same lab hosts, both through the real playbooks: `lab` (TLS) and a dense
`plain` one (tls: false, scheduler on lab1, 12 workers on lab2). Each has its own CA, config and
environment link on every node, so `plain`'s up, scale and down leave `lab` untouched; and 12
workers on one host stay within sshd's default MaxSessions (10) because the SSH pool caps the
channels it opens per host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from runner.cluster import Cluster
from runner.dask_workers import joined_workers
from runner.lab import Lab
from runner.lab.addresses import SUBNET_PREFIX

LAB_CLUSTER = Path(__file__).resolve().parents[2] / "clusters" / "lab.yaml"
pytestmark = pytest.mark.e2e


def _pids(cli, cfile: Path) -> dict[str, int]:
    st = json.loads(cli("status", "-c", str(cfile), "--json").stdout)
    assert st["healthy"], st
    return {h["process"]: h["pid"] for h in st["hosts"]}


def _follow_logs(cli, cfile: Path, host: str, want: int, timeout: float = 60) -> set[str]:
    """The processes `daskfleet logs HOST -f` shows lines of, until `want` of them or timeout."""
    import signal
    import subprocess
    import sys
    import threading
    import time

    proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "logs", host, "-f", "-n", "2",
                             "-c", str(cfile)], cwd=cli.workdir, env=cli.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen: set[str] = set()

    def read() -> None:
        for line in proc.stdout:
            if line.startswith(f"[{host} "):
                seen.add(line.split()[1].rstrip("]"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.wait(60)  # a bound, not a measure: a hang on Ctrl-C fails here
    return set(seen)


def test_a_plain_cluster_on_the_same_hosts_leaves_the_tls_cluster_untouched(lab_cluster, cli,
                                                                               workdir):
    from distributed import Client

    lab = Lab()
    lab1, lab2 = lab.hosts()[:2]
    plain = workdir / "plain.yaml"
    spec = {
        "name": "plain", "provider": "hosts", "tls": False,
        "ssh": {"user": "root", "private_key": str(lab.key), "known_hosts": str(lab.known_hosts)},
        "hosts": [{"name": "lab1", "address": lab1.address, "role": "scheduler"},
                  {"name": "lab2", "address": lab2.address, "role": "worker"}],
        "dask": {"scheduler_port": 8796, "dashboard_port": 8797,
                 "worker_port_range": "41000:41099", "nanny_port_range": "41100:41199",
                 "start_timeout": 240}}
    plain.write_text(yaml.safe_dump(spec))
    before = _pids(cli, LAB_CLUSTER)
    claims = Path(lab.host_dir("lab2")) / "fs/var/lib/daskfleet/memory"
    try:
        # memory_limit auto without a share claims all of lab2's memory, of which `lab` holds
        # half: refused before anything starts, naming the host, `lab`'s claim and the key
        refused = cli("up", "-c", str(plain), check=False, timeout=600)
        assert refused.returncode != 0, refused.stdout
        assert "lab2: this cluster would commit 100% of its memory" in refused.stderr, \
            refused.stderr
        assert "lab 50%" in refused.stderr and "dask.memory_share" in refused.stderr
        assert sorted(p.name for p in claims.iterdir() if not p.name.startswith(".")) == ["lab"]
        spec["dask"]["memory_share"] = 0.25
        plain.write_text(yaml.safe_dump(spec))
        up = cli("up", "-c", str(plain), timeout=600)
        assert "tls: false" in up.stdout  # the loud warning
        scaled = cli("scale", "12", "-c", str(plain), timeout=600)
        assert "scale: 12 worker(s)" in scaled.stdout, scaled.stdout
        st = json.loads(cli("status", "-c", str(plain), "--json", timeout=300).stdout)
        # 12 workers on lab2: every one seen over SSH (none reported "unreachable") and joined
        assert st["healthy"], st
        assert sum(w["host"] == "lab2" and w["joined"] for w in st["workers"]) == 12
        assert (claims / "plain").read_text() == "fraction 0.250000\n"
        # its 12 workers split its quarter of lab2; `lab`'s worker there keeps its half
        limits = {w["name"]: w["memory_limit"] for w in st["workers"]}
        lab_limit = {w["name"]: w["memory_limit"] for w in json.loads(cli(
            "status", "-c", str(LAB_CLUSTER), "--json").stdout)["workers"]}["lab2-w0"]
        assert all(abs(v * 12 / 0.25 - lab_limit / 0.5) < lab_limit * 0.01
                   for v in limits.values()), (limits, lab_limit)
        with Client(f"tcp://{lab1.address}:8796", timeout="10s") as c:  # plain, as asked
            assert c.submit(sum, [1, 2]).result() == 3
            # a task of `plain` runs as plain's own user: it cannot read lab's key or folders,
            # signal lab's worker on the same host, or get past lab's scheduler without a
            # certificate; lab's own task (below) can read lab's files: the probe can tell
            got = c.submit(_probe_task(), "lab", before["lab2-w0"], lab1.address,
                           pure=False).result()
            assert got == {"user": "dask-plain", "key": "denied", "work": "denied",
                           "cache": "denied", "data": "denied", "signal": "denied",
                           "connect": "refused"}, got
        # `logs -f` follows all 12 workers of lab2 at once (one tail per host, not one SSH
        # channel per log: sshd would hold the 7th and later back for as long as -f runs)
        seen = _follow_logs(cli, plain, "lab2", want=12)
        assert len(seen) == 12, seen
    finally:
        down = cli("down", "-c", str(plain), check=False, timeout=300)
    assert down.returncode == 0, down.stderr
    assert not (claims / "plain").exists()  # released: lab2's memory is `lab`'s and free again
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        ps = {h.name: out for h, out in cluster.run_on_hosts(["ps", "-eo", "args"]).items()}
    left = [line for out in ps.values() for line in out.splitlines() if "--port 8796" in line
            or f"tcp://{SUBNET_PREFIX}11:8796" in line]
    assert not left, (left, down.stdout)  # every process of `plain` is gone

    # The TLS cluster: same processes, its own config still demands encryption, and a plain
    # client is still refused.
    assert _pids(cli, LAB_CLUSTER) == before
    conf = Path(lab.host_dir("lab2")) / "fs/etc/daskfleet/lab/dask/daskfleet.yaml"
    assert "require-encryption: true" in conf.read_text()
    plain_conf = Path(lab.host_dir("lab2")) / "fs/etc/daskfleet/plain/dask/daskfleet.yaml"
    assert "require-encryption: false" in plain_conf.read_text()
    with pytest.raises((OSError, TimeoutError)):
        Client(f"tcp://{lab1.address}:8786", timeout="3s")
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        cluster.check_versions()
        assert cluster.client().submit(sum, [2, 3]).result() == 5
        own = cluster.client().submit(_probe_task(), "lab", None, None, pure=False).result()
        assert own == {"user": "dask-lab", "key": "read", "work": "read", "cache": "read",
                       "data": "read"}, own


def _probe_task():
    """The probe, as a function that tasks pickle by value (the workers cannot import this
    test module)."""

    def probe(cluster: str, pid: int | None, scheduler: str | None) -> dict:
        """Who the task runs as, and what it can do to ``cluster``'s files, its process
        ``pid`` and its scheduler (a TLS handshake without a certificate)."""
        import os
        import pwd
        import socket
        import ssl

        out = {"user": pwd.getpwuid(os.geteuid()).pw_name}
        for what, path in (("key", f"/etc/daskfleet/{cluster}/tls/node.key"),
                           ("work", f"/var/lib/daskfleet/clusters/{cluster}/work"),
                           ("cache", f"/var/lib/daskfleet/clusters/{cluster}/pycache"),
                           ("data", f"/var/lib/daskfleet/data/{cluster}")):
            try:
                if what == "key":
                    open(path, "rb").close()
                else:
                    os.listdir(path)
                out[what] = "read"
            except PermissionError:
                out[what] = "denied"
        if pid is not None:
            try:
                os.kill(pid, 0)
                out["signal"] = "sent"
            except PermissionError:
                out["signal"] = "denied"
        if scheduler is not None:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            try:
                with socket.create_connection((scheduler, 8786), timeout=5) as raw, \
                        ctx.wrap_socket(raw) as tls:
                    tls.sendall(b"\0" * 8)
                    out["connect"] = "refused" if tls.recv(1) == b"" else "accepted"
            except (ssl.SSLError, OSError):
                out["connect"] = "refused"
        return out

    return probe


def test_a_host_presenting_another_key_is_an_error_even_with_min_workers(lab_cluster, cli,
                                                                           workdir):
    from runner.provision import hostkeys

    lab = Lab()
    lab3 = lab.hosts()[2]
    known = workdir / "known_hosts_tampered"
    impostor = hostkeys.ensure(workdir / "impostor", ["lab3"])["lab3"]["public_key"]
    known.write_text(lab.known_hosts.read_text())
    hostkeys.write_known_hosts(known, {lab3.address: impostor})
    cfile = workdir / "lab-tampered.yaml"
    cfile.write_text(LAB_CLUSTER.read_text()
                     + f"ssh: {{known_hosts: {known}}}\nmin_workers: 1\n")
    out = cli("status", "-c", str(cfile), check=False, timeout=120)
    # Not "unreachable", not a degraded cluster: an error that names the host and both keys.
    assert out.returncode != 0 and "unreachable" not in out.stdout + out.stderr, out
    assert "lab3" in out.stderr and "host key mismatch" in out.stderr, out.stderr
    assert hostkeys.fingerprint(impostor) in out.stderr
    assert known.read_text().count(lab3.address) == 1  # nothing written into known_hosts


def test_up_closes_a_worker_the_file_no_longer_wants(lab_cluster, cli, workdir):
    with_extra = workdir / "lab-worker-on-scheduler.yaml"
    with_extra.write_text(LAB_CLUSTER.read_text().replace(
        "  hosts: 3", "  hosts: 3\n  worker_on_scheduler: true"))
    up = cli("up", "-c", str(with_extra), timeout=600)
    assert "started: lab1-w0@lab1" in up.stdout, up.stdout
    back = cli("up", "-c", str(LAB_CLUSTER), timeout=600)
    # Closed (retired, then stopped) rather than left registered: `up` does not time out
    # waiting for "3 of 2" workers, and status is healthy with exactly the wanted ones.
    assert "closing what is no longer wanted: lab1-w0@lab1" in back.stdout, back.stdout
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        names = {w["name"] for w in joined_workers(cluster.client()).values()}
    assert names == {"lab2-w0", "lab3-w0"}
    assert _pids(cli, LAB_CLUSTER)
