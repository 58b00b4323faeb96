"""Create, inspect and remove the lab's hosts.

A host is a network namespace on a bridge (198.18.0.0/24), entered by
`unshare --mount --uts --pid --fork` whose init is the host's sshd: killing it is a machine crash.
The host's mount namespace masks /root, /home and the project checkout with empty tmpfs mounts,
so nothing from the control machine's environments leaks onto the host.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from runner.errors import LabError

DEFAULT_STATE_DIR = Path("/var/lib/daskfleet-lab")
BRIDGE = "dflab0"
SUBNET_PREFIX = "198.18.0."
BRIDGE_ADDRESS = SUBNET_PREFIX + "1"
FIRST_HOST_OCTET = 11
MAX_HOSTS = 32
# Folders every host gets privately, backed by a per-host folder under the state dir.
PRIVATE_DIRS = ("etc/daskfleet", "opt/daskfleet", "var/lib/daskfleet", "var/log/daskfleet", "tmp")
# Paths masked with empty tmpfs mounts: the control machine's environments must not be visible.
MASKED_DIRS = ("/root", "/home")
SSHD = "/usr/sbin/sshd"
READY_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str
    netns: str
    user: str = "root"
    port: int = 22

    @property
    def veth(self) -> str:
        return f"dfv-{self.name}"


def _run(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabError(
            f"lab: `{shlex.join(args)}` failed (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()}"
        )
    return proc


def _project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def check_prerequisites() -> None:
    """One line that says what is missing: the lab needs Linux, root, ip, unshare and sshd."""
    if not sys.platform.startswith("linux"):
        raise LabError("lab: needs Linux (network namespaces); this is " + sys.platform + ".")
    if os.geteuid() != 0:
        raise LabError("lab: needs root (it creates network namespaces and mounts); run as root.")
    missing = [t for t in ("ip", "unshare", "ssh-keygen") if shutil.which(t) is None]
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    if missing:
        raise LabError(
            "lab: missing " + ", ".join(missing)
            + "; install them with `apt-get install -y iproute2 util-linux openssh-server`."
        )


class Lab:
    """The lab recorded in `state_dir/lab.json`."""

    def __init__(self, state_dir: Path | str | None = None):
        self.state_dir = Path(state_dir or os.environ.get("DASKFLEET_LAB_DIR") or DEFAULT_STATE_DIR)

    # -- paths ------------------------------------------------------------------------------
    @property
    def record(self) -> Path:
        return self.state_dir / "lab.json"

    @property
    def key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    def host_dir(self, name: str) -> Path:
        return self.state_dir / "hosts" / name

    # -- inspection -------------------------------------------------------------------------
    def hosts(self) -> list[LabHost]:
        if not self.record.exists():
            return []
        data = json.loads(self.record.read_text())
        return [LabHost(**h) for h in data["hosts"]]

    def host_alive(self, host: LabHost) -> bool:
        if not Path(f"/run/netns/{host.netns}").exists():
            return False
        return _port_open(host.address, host.port, timeout=1.0)

    def status(self) -> dict:
        hosts = self.hosts()
        return {
            "state_dir": str(self.state_dir),
            "hosts": [
                {
                    "name": h.name,
                    "address": h.address,
                    "user": h.user,
                    "port": h.port,
                    "key": str(self.key),
                    "known_hosts": str(self.known_hosts),
                    "up": self.host_alive(h),
                }
                for h in hosts
            ],
        }

    # -- bring-up ---------------------------------------------------------------------------
    def up(self, n_hosts: int = 3, progress=print) -> list[LabHost]:
        check_prerequisites()
        if not 1 <= n_hosts <= MAX_HOSTS:
            raise LabError(f"lab: --hosts must be between 1 and {MAX_HOSTS}, not {n_hosts}.")
        existing = self.hosts()
        if existing:
            dead = [h.name for h in existing if not self.host_alive(h)]
            if dead:
                raise LabError(
                    f"lab: a lab already exists in {self.state_dir} but host(s) {', '.join(dead)} "
                    "are down; run `daskfleet lab down` and then `daskfleet lab up` again."
                )
            if len(existing) != n_hosts:
                raise LabError(
                    f"lab: a lab with {len(existing)} hosts is already up; use it "
                    f"(`--hosts {len(existing)}`) or run `daskfleet lab down` first."
                )
            progress(f"lab: reusing the running lab ({n_hosts} hosts) in {self.state_dir}")
            return existing
        if _link_exists(BRIDGE):
            raise LabError(
                f"lab: bridge {BRIDGE} exists but no lab is recorded in {self.state_dir} "
                "(another lab state dir?); run `daskfleet lab down` with that DASKFLEET_LAB_DIR."
            )
        hosts = [
            LabHost(name=f"lab{i}", address=f"{SUBNET_PREFIX}{FIRST_HOST_OCTET + i - 1}",
                    netns=f"dflab-lab{i}")
            for i in range(1, n_hosts + 1)
        ]
        try:
            self._create(hosts, progress)
        except BaseException:
            progress("lab: bring-up failed; removing what was created")
            self.down(progress=lambda *_: None)
            raise
        return hosts

    def _create(self, hosts: list[LabHost], progress) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        # Record first, so `lab down` can always clean up a half-made lab.
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"hosts": [asdict(h) for h in hosts]}, indent=2))
        tmp.replace(self.record)
        if not self.key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "daskfleet-lab",
                  "-f", str(self.key)])
        (self.state_dir / "authorized_keys").write_text(Path(str(self.key) + ".pub").read_text())
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        _run(["ip", "addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])
        known = []
        for host in hosts:
            progress(f"lab: creating {host.name} ({host.address})")
            known.append(self._create_host(host))
        self.known_hosts.write_text("".join(known))
        deadline = time.monotonic() + READY_TIMEOUT_S
        for host in hosts:
            while not _port_open(host.address, host.port, timeout=0.5):
                if time.monotonic() > deadline:
                    log = (self.host_dir(host.name) / "init.log").read_text()[-2000:]
                    raise LabError(
                        f"lab: sshd on {host.name} ({host.address}) did not come up within "
                        f"{READY_TIMEOUT_S:.0f}s. Its log:\n{log}"
                    )
                time.sleep(0.1)
        progress(f"lab: {len(hosts)} hosts up; key {self.key}, known_hosts {self.known_hosts}")

    def _create_host(self, host: LabHost) -> str:
        hdir = self.host_dir(host.name)
        for d in PRIVATE_DIRS:
            (hdir / "fs" / d).mkdir(parents=True, exist_ok=True)
        os.chmod(hdir / "fs" / "tmp", 0o1777)
        hostkey = hdir / "ssh_host_ed25519_key"
        if not hostkey.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name,
                  "-f", str(hostkey)])
        config = hdir / "sshd_config"
        config.write_text(_sshd_config(host, hostkey, self.state_dir / "authorized_keys", hdir))
        ns = host.netns
        _run(["ip", "netns", "add", ns])
        # A fixed MAC per address: a restarted host is reachable at once, with no stale ARP
        # entry on the other machines pointing at its previous interface.
        mac = f"02:df:00:00:00:{int(host.address.rsplit('.', 1)[1]):02x}"
        _run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0",
              "address", mac, "netns", ns])
        _run(["ip", "link", "set", host.veth, "master", BRIDGE, "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{host.address}/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation dir
        script = _init_script(host, hdir, config)
        log = open(hdir / "init.log", "ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--uts", "--pid", "--fork",
             "--mount-proc", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        (hdir / "unshare.pid").write_text(str(proc.pid))
        pub = Path(str(hostkey) + ".pub").read_text().split()
        return f"{host.address} {pub[0]} {pub[1]}\n"

    # -- faults -----------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """Crash a host: every process in it dies at once (its sshd is the PID namespace's init)."""
        host = self._get(name)
        _kill_netns_processes(host.netns)

    def restart(self, name: str, progress=print) -> None:
        """Boot a host again (after `kill`, or to reboot it): same address, host key and disks;
        no process survives, as after a real reboot."""
        check_prerequisites()
        host = self._get(name)
        _kill_netns_processes(host.netns)
        _run(["ip", "netns", "del", host.netns], check=False)
        _run(["ip", "link", "del", host.veth], check=False)
        self._create_host(host)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _port_open(host.address, host.port, timeout=0.5):
            if time.monotonic() > deadline:
                raise LabError(f"lab: {name} did not come back within {READY_TIMEOUT_S:.0f}s; "
                               f"see {self.host_dir(name) / 'init.log'}.")
            time.sleep(0.1)
        progress(f"lab: {name} restarted ({host.address})")

    # -- teardown ---------------------------------------------------------------------------
    def down(self, progress=print) -> None:
        check_prerequisites()
        hosts = self.hosts()
        # Also sweep namespaces by prefix: a crashed `lab up` may not have recorded them all.
        names = {h.netns for h in hosts} | set(_netns_with_prefix("dflab-"))
        for ns in sorted(names):
            _kill_netns_processes(ns)
            _run(["ip", "netns", "del", ns], check=False)
        for h in hosts:
            _run(["ip", "link", "del", h.veth], check=False)
        if _link_exists(BRIDGE):
            _run(["ip", "link", "del", BRIDGE], check=False)
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        progress(f"lab: down ({len(names)} hosts removed)" if names else "lab: nothing to remove")

    def _get(self, name: str) -> LabHost:
        for h in self.hosts():
            if h.name == name:
                return h
        known = ", ".join(h.name for h in self.hosts()) or "none: run `daskfleet lab up`"
        raise LabError(f"lab: no host named {name!r} (hosts: {known}).")


def _sshd_config(host: LabHost, hostkey: Path, authorized: Path, hdir: Path) -> str:
    return "\n".join([
        f"ListenAddress {host.address}",
        f"Port {host.port}",
        f"HostKey {hostkey}",
        f"AuthorizedKeysFile {authorized}",
        f"PidFile {hdir / 'sshd.pid'}",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "UsePAM no",
        # The lab's key files live under a root-owned 0700 folder, not in a home directory.
        "StrictModes no",
        "MaxStartups 100:30:200",
        "MaxSessions 100",
        "Subsystem sftp internal-sftp",
        "",
    ])


def _init_script(host: LabHost, hdir: Path, config: Path) -> str:
    lines = ["set -e", f"hostname {shlex.quote(host.name)}"]
    for d in PRIVATE_DIRS:
        src = hdir / "fs" / d
        lines.append(f"mkdir -p /{d} && mount --bind {shlex.quote(str(src))} /{d}")
    masked = [*MASKED_DIRS, str(_project_root())]
    for d in masked:
        lines.append(f"if [ -d {shlex.quote(d)} ]; then mount -t tmpfs -o mode=0700 tmpfs "
                     f"{shlex.quote(d)}; fi")
    lines.append(f"exec {SSHD} -D -e -f {shlex.quote(str(config))}")
    return "\n".join(lines)


def _port_open(address: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _link_exists(name: str) -> bool:
    return _run(["ip", "link", "show", name], check=False).returncode == 0


def _netns_with_prefix(prefix: str) -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def _kill_netns_processes(ns: str) -> None:
    pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    deadline = time.monotonic() + 5
    while _run(["ip", "netns", "pids", ns], check=False).stdout.split():
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
