"""Create, inspect and remove the lab's hosts.

A host is a network namespace on a bridge (198.18.0.0/24), entered by
`unshare --mount --uts --pid --fork` whose init is the host's sshd: killing it is a machine crash.
The host's mount namespace gives it a private, persistent /etc (an overlay on the machine's /etc),
private disk-backed folders (/home, /var/log, /var/lib/daskfleet, ...), a fresh tmpfs
/run/daskfleet at every boot, and masks /root and the project checkout with empty tmpfs mounts,
so nothing from the control machine's environments leaks onto the host.

`boot_host` is the one host-creation path: the plain lab hosts and the emulated cloud's instance
hosts (runner.lab.instances) both boot through it.
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from runner.errors import LabError

DEFAULT_STATE_DIR = Path("/var/lib/daskfleet-lab")
BRIDGE = "dflab0"
SUBNET_PREFIX = "198.18.0."
BRIDGE_ADDRESS = SUBNET_PREFIX + "1"
FIRST_HOST_OCTET = 11
MAX_HOSTS = 32
# Folders every host gets privately, backed by a per-host folder under the state dir (parents
# before children). /home is one of them: it masks the control machine's /home and keeps users'
# homes across reboots, as a real disk does.
PRIVATE_DIRS = ("etc/daskfleet", "opt/daskfleet", "var/lib/daskfleet", "var/lib/cloud", "var/log",
                "var/log/daskfleet", "home", "tmp")
# Paths masked with empty tmpfs mounts: the control machine's environments must not be visible.
MASKED_DIRS = ("/root",)
SSHD = "/usr/sbin/sshd"
READY_TIMEOUT_S = 20.0
# Where sshd looks for keys besides ~/.ssh/authorized_keys: outside any home directory, in the
# host's private /etc, so the lab's key for a user never depends on its home.
LAB_KEYS_DIR = "/etc/ssh/daskfleet_authorized_keys"
# uid 1000 is taken on these machines; lab and cloud users start here.
FIRST_UID = 1500
# Written on the host's disk once user_data has run: a reboot does not run it again.
FIRST_BOOT_MARKER = "/var/lib/cloud/instance/boot-finished"
# `lab cut`: an nftables table of its own inside the host's namespace. Never the emulated EC2's
# security-group table (runner.lab.instances.SG_TABLE): healing must not open what a group closes.
CUT_TABLE = "daskfleet_cut"


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str
    netns: str
    user: str = "root"
    port: int = 22
    instance_id: str | None = None  # instance hosts of the emulated cloud only
    link: str | None = None  # the veth's name on the bridge (default dfv-NAME)

    @property
    def veth(self) -> str:
        return self.link or f"dfv-{self.name}"


@dataclass(frozen=True)
class BootSpec:
    """Everything `boot_host` needs to boot one host (a plain lab host or an instance host)."""

    hostname: str
    address: str
    netns: str
    veth: str
    mac: str
    hdir: Path
    host_keys: tuple[str, ...]  # sshd HostKey paths (as seen inside the host)
    prefixlen: int = 24
    gateway: str | None = None
    user: str | None = None  # a login user the lab creates (None: only first_boot creates users)
    authorized_keys: str = ""  # installed as LAB_KEYS_DIR/<user> at every boot
    first_boot: Path | None = None  # run once, as root, inside the host, before sshd (user_data)
    nft_ruleset: str | None = None  # applied in the netns before anything in it starts
    port: int = 22
    extra_private_dirs: tuple[str, ...] = field(default=())


def _run(args: list[str], check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, input=input)
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

    @property
    def cloud_dir(self) -> Path:
        return self.state_dir / "cloud"

    @property
    def cloud_terraform_rc(self) -> Path:
        return self.cloud_dir / "terraform.rc"

    def host_dir(self, name: str) -> Path:
        return self.state_dir / "hosts" / name

    # -- inspection -------------------------------------------------------------------------
    def _data(self) -> dict | None:
        if not self.record.exists():
            return None
        return json.loads(self.record.read_text())

    def _write(self, data: dict) -> None:
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.record)

    def hosts(self) -> list[LabHost]:
        """The plain lab hosts (never the cloud's instance hosts: see `instance_hosts`)."""
        data = self._data()
        return [LabHost(**h) for h in data["hosts"]] if data else []

    def instance_hosts(self) -> list[LabHost]:
        """The emulated cloud's running instances, as the instance controller booted them."""
        from runner.lab.instances import read_instance_hosts

        return read_instance_hosts(self.cloud_dir)

    def cloud(self) -> dict | None:
        data = self._data()
        return data.get("cloud") if data else None

    def host_alive(self, host: LabHost) -> bool:
        if not Path(f"/run/netns/{host.netns}").exists():
            return False
        return _port_open(host.address, host.port, timeout=1.0)

    def status(self) -> dict:
        def row(h: LabHost) -> dict:
            cut = self.is_cut(h)
            r = {"name": h.name, "address": h.address, "user": h.user, "port": h.port,
                 "key": str(self.key), "known_hosts": str(self.known_hosts),
                 "up": not cut and self.host_alive(h), "cut": cut}
            if h.instance_id:
                r.update(instance_id=h.instance_id, key=None,
                         known_hosts=None)  # the key pair's key and host keys are the user's own
            return r

        cloud = self.cloud()
        if cloud:
            from runner.lab.ec2 import cloud_alive

            cloud = {**cloud, "alive": cloud_alive(cloud)}  # API server and controller running
        return {
            "state_dir": str(self.state_dir),
            "hosts": [row(h) for h in self.hosts()]
                     + [row(h) for h in (self.instance_hosts() if cloud else [])],
            "cloud": cloud,
        }

    # -- bring-up ---------------------------------------------------------------------------
    def up(self, n_hosts: int | None = 3, progress=print, user: str | None = None,
           cloud: str | None = None, region: str = "us-east-1") -> list[LabHost]:
        check_prerequisites()
        explicit = n_hosts is not None
        n_hosts = 3 if n_hosts is None else n_hosts
        low = 0 if cloud else 1
        if not low <= n_hosts <= MAX_HOSTS:
            raise LabError(f"lab: --hosts must be between {low} and {MAX_HOSTS}, not {n_hosts}.")
        if user is not None:
            _check_user_name(user)
        if cloud not in (None, "aws"):
            raise LabError(f"lab: --cloud {cloud!r} is not emulated; the lab emulates `aws` only.")
        data = self._data()
        if data is not None:
            hosts = self._reuse(data, n_hosts if (explicit or not cloud) else None, user, progress)
        else:
            hosts = self._fresh(n_hosts, user or "root", progress)
        if cloud:
            from runner.lab.ec2 import start_cloud

            if self.cloud():
                from runner.lab.ec2 import cloud_alive

                if not cloud_alive(self.cloud()):
                    raise LabError(
                        f"lab: the emulated cloud recorded in {self.record} is not running (its "
                        "API server or instance controller died); run `daskfleet lab down` and "
                        "`daskfleet lab up --cloud aws` again.")
                progress(f"lab: reusing the running emulated cloud at {self.cloud()['endpoint']}")
            else:
                try:
                    start_cloud(self, region, progress)
                except BaseException:
                    if data is None:  # we made the lab: remove it all
                        progress("lab: bring-up failed; removing what was created")
                        self.down(progress=lambda *_: None)
                    else:  # keep the running lab, drop the half-started cloud
                        from runner.lab.ec2 import stop_cloud

                        stop_cloud(self)
                        self._write({**self._data(), "cloud": None})
                    raise
        return hosts

    def _reuse(self, data: dict, n_hosts: int | None, user: str | None, progress) -> list[LabHost]:
        existing = [LabHost(**h) for h in data["hosts"]]
        dead = [h.name for h in existing if not self.host_alive(h)]
        if dead:
            raise LabError(
                f"lab: a lab already exists in {self.state_dir} but host(s) {', '.join(dead)} "
                "are down; run `daskfleet lab down` and then `daskfleet lab up` again."
            )
        if n_hosts is not None and len(existing) != n_hosts:
            raise LabError(
                f"lab: a lab with {len(existing)} hosts is already up; use it "
                f"(`--hosts {len(existing)}`) or run `daskfleet lab down` first."
            )
        have = data.get("user", "root")
        if existing and user is not None and have != user:
            raise LabError(f"lab: the running lab logs in as {have!r}, not {user!r}; use "
                           f"`--user {have}` or run `daskfleet lab down` first.")
        progress(f"lab: reusing the running lab ({len(existing)} hosts) in {self.state_dir}")
        return existing

    def _fresh(self, n_hosts: int, user: str, progress) -> list[LabHost]:
        if _link_exists(BRIDGE):
            raise LabError(
                f"lab: bridge {BRIDGE} exists but no lab is recorded in {self.state_dir} "
                "(another lab state dir?); run `daskfleet lab down` with that DASKFLEET_LAB_DIR."
            )
        hosts = [
            LabHost(name=f"lab{i}", address=f"{SUBNET_PREFIX}{FIRST_HOST_OCTET + i - 1}",
                    netns=f"dflab-lab{i}", user=user)
            for i in range(1, n_hosts + 1)
        ]
        try:
            self._create(hosts, user, progress)
        except BaseException:
            progress("lab: bring-up failed; removing what was created")
            self.down(progress=lambda *_: None)
            raise
        return hosts

    def _create(self, hosts: list[LabHost], user: str, progress) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        # Record first, so `lab down` can always clean up a half-made lab.
        self._write({"hosts": [asdict(h) for h in hosts], "user": user, "cloud": None})
        if not self.key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "daskfleet-lab",
                  "-f", str(self.key)])
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
        who = "" if user == "root" else f", user {user}"
        progress(f"lab: {len(hosts)} hosts up{who}; key {self.key}, known_hosts {self.known_hosts}")

    def _create_host(self, host: LabHost) -> str:
        """Boot a plain lab host; returns its known_hosts line."""
        hdir = self.host_dir(host.name)
        hdir.mkdir(parents=True, exist_ok=True)
        hostkey = hdir / "ssh_host_ed25519_key"
        if not hostkey.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name,
                  "-f", str(hostkey)])
        # A fixed MAC per address: a restarted host is reachable at once, with no stale ARP
        # entry on the other machines pointing at its previous interface.
        mac = f"02:df:00:00:00:{int(host.address.rsplit('.', 1)[1]):02x}"
        boot_host(BootSpec(
            hostname=host.name, address=host.address, netns=host.netns, veth=host.veth, mac=mac,
            hdir=hdir, host_keys=(str(hostkey),), user=host.user, port=host.port,
            authorized_keys=Path(str(self.key) + ".pub").read_text(),
        ))
        pub = Path(str(hostkey) + ".pub").read_text().split()
        return f"{host.address} {pub[0]} {pub[1]}\n"

    # -- faults -----------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """Crash a host: every process in it dies at once (its sshd is the PID namespace's init)."""
        host = self._get(name)
        _kill_netns_processes(host.netns)

    def restart(self, name: str, progress=print) -> None:
        """Boot a host again (after `kill`, or to reboot it): same address, host key and disks;
        no process survives, as after a real reboot. Instance hosts reboot with their boot spec
        (their user_data does not run again)."""
        check_prerequisites()
        host = self._get(name)
        stop_host(host.netns, host.veth)
        if host.instance_id:
            spec = load_boot_spec(self.host_dir(host.name))
            rules = self.host_dir(host.name) / "sg.nft"  # the controller's latest ruleset
            if rules.exists():
                spec = replace(spec, nft_ruleset=rules.read_text())
            boot_host(spec)
        else:
            self._create_host(host)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _port_open(host.address, host.port, timeout=0.5):
            if time.monotonic() > deadline:
                raise LabError(f"lab: {name} did not come back within {READY_TIMEOUT_S:.0f}s; "
                               f"see {self.host_dir(name) / 'init.log'}.")
            time.sleep(0.1)
        progress(f"lab: {name} restarted ({host.address})")

    def cut(self, name: str) -> None:
        """Cut the host's link: every packet in or out of it is dropped (loopback excepted), its
        processes keep running. Peers see silence, not a refusal: their connections time out."""
        host = self._get(name)
        self._check_running(host, "cut")
        nft_apply(host.netns, cut_ruleset())

    def heal(self, name: str) -> bool:
        """Undo `cut`; returns whether the link was cut. Connections that outlived the cut go on
        (TCP retransmits); those that timed out meanwhile are gone."""
        host = self._get(name)
        self._check_running(host, "heal")
        if not self.is_cut(host):
            return False
        _run(["ip", "netns", "exec", host.netns, "nft", "delete", "table", "inet", CUT_TABLE])
        return True

    def is_cut(self, host: LabHost) -> bool:
        if not Path(f"/run/netns/{host.netns}").exists():
            return False
        out = _run(["ip", "netns", "exec", host.netns, "nft", "list", "tables"], check=False).stdout
        return has_cut_table(out)

    def _check_running(self, host: LabHost, verb: str) -> None:
        if not Path(f"/run/netns/{host.netns}").exists():
            raise LabError(f"lab: {host.name} is not running (no namespace {host.netns}); "
                           f"nothing to {verb}. Boot it with `daskfleet lab restart {host.name}`.")
        if shutil.which("nft") is None:
            raise LabError("lab: cut and heal need nftables; install it with "
                           "`apt-get install -y nftables`.")

    # -- teardown ---------------------------------------------------------------------------
    def down(self, progress=print) -> None:
        check_prerequisites()
        from runner.lab.ec2 import stop_cloud

        # The cloud first: its controller must not boot instance hosts while we remove them.
        stopped_cloud = stop_cloud(self)
        hosts = self.hosts()
        # Also sweep namespaces by prefix: a crashed `lab up` (or controller) may not have
        # recorded them all. Deleting a namespace deletes the veth end inside it, and the pair.
        names = {h.netns for h in hosts} | set(_netns_with_prefix("dflab-")) \
            | set(_netns_with_prefix("dfec2-"))
        for ns in sorted(names):
            _kill_netns_processes(ns)
            _run(["ip", "netns", "del", ns], check=False)
        for link in {h.veth for h in hosts} | set(_links_with_prefix(("dfv-", "dfe"))):
            _run(["ip", "link", "del", link], check=False)
        if _link_exists(BRIDGE):
            _run(["ip", "link", "del", BRIDGE], check=False)
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        what = [f"{len(names)} hosts removed"] if names else []
        what += ["emulated cloud stopped"] if stopped_cloud else []
        progress(f"lab: down ({', '.join(what)})" if what else "lab: nothing to remove")

    def _get(self, name: str) -> LabHost:
        every = self.hosts() + (self.instance_hosts() if self.cloud() else [])
        for h in every:
            if h.name == name:
                return h
        known = ", ".join(h.name for h in every) or "none: run `daskfleet lab up`"
        raise LabError(f"lab: no host named {name!r} (hosts: {known}).")


# -- one host ---------------------------------------------------------------------------------
def boot_host(spec: BootSpec) -> subprocess.Popen:
    """Create the host's namespace and link and start its init (which ends in sshd).

    Never leaves half a host: on any failure the namespace and link are removed again."""
    hdir = spec.hdir
    for d in (*PRIVATE_DIRS, *spec.extra_private_dirs):
        (hdir / "fs" / d).mkdir(parents=True, exist_ok=True)
    os.chmod(hdir / "fs" / "tmp", 0o1777)
    for d in ("etc-upper", "etc-work"):
        (hdir / d).mkdir(exist_ok=True)
    if spec.user:
        (hdir / "authorized_keys").write_text(spec.authorized_keys)
    config = hdir / "sshd_config"
    config.write_text(_sshd_config(spec))
    (hdir / "boot.json").write_text(json.dumps(
        {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(spec).items()}, indent=2))
    ns = spec.netns
    try:
        _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", spec.veth, "type", "veth", "peer", "name", "eth0",
              "address", spec.mac, "netns", ns])
        _run(["ip", "link", "set", spec.veth, "master", BRIDGE, "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{spec.address}/{spec.prefixlen}", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        if spec.gateway:
            _run(["ip", "-n", ns, "route", "add", "default", "via", spec.gateway])
        if spec.nft_ruleset is not None:
            nft_apply(ns, spec.nft_ruleset)
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation dir
        log = open(hdir / "init.log", "ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--uts", "--pid", "--fork",
             "--mount-proc", "--propagation", "private", "sh", "-c", _init_script(spec, config)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd="/",
        )
        log.close()
    except BaseException:
        stop_host(ns, spec.veth)
        raise
    (hdir / "unshare.pid").write_text(str(proc.pid))
    return proc


def load_boot_spec(hdir: Path) -> BootSpec:
    d = json.loads((hdir / "boot.json").read_text())
    d["hdir"] = Path(d["hdir"])
    d["first_boot"] = Path(d["first_boot"]) if d.get("first_boot") else None
    d["host_keys"] = tuple(d["host_keys"])
    d["extra_private_dirs"] = tuple(d.get("extra_private_dirs") or ())
    return BootSpec(**d)


def stop_host(netns: str, veth: str) -> None:
    """Crash the host (every process at once) and remove its namespace and link."""
    _kill_netns_processes(netns)
    _run(["ip", "netns", "del", netns], check=False)
    _run(["ip", "link", "del", veth], check=False)


def nft_apply(netns: str, ruleset: str) -> None:
    _run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=ruleset)


def cut_ruleset() -> str:
    """The `lab cut` table: input and output dropped but for loopback, ahead of every other
    table's chains (a drop anywhere is final in nftables). Declared, deleted and defined in one
    `nft -f` transaction, so cutting a cut host is a no-op."""
    return "\n".join([
        f"table inet {CUT_TABLE}",
        f"delete table inet {CUT_TABLE}",
        f"table inet {CUT_TABLE} {{",
        "  chain input {",
        "    type filter hook input priority -400; policy drop;",
        '    iif "lo" accept',
        "  }",
        "  chain output {",
        "    type filter hook output priority -400; policy drop;",
        '    oif "lo" accept',
        "  }",
        "}",
        "",
    ])


def has_cut_table(nft_list_tables: str) -> bool:
    """Whether `nft list tables` output names the cut table."""
    return f"table inet {CUT_TABLE}" in {line.strip() for line in nft_list_tables.splitlines()}


def host_state(up: bool, cut: bool) -> str:
    """What `lab status` says of a host."""
    return "CUT" if cut else "up" if up else "DOWN"


def _check_user_name(user: str) -> None:
    import re

    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,30}", user):
        raise LabError(f"lab: --user {user!r} is not a valid user name (lower-case letters, digits, "
                       "_ and -, starting with a letter).")


def user_setup_script(user: str, sudo: bool = True, groups: tuple[str, ...] = (),
                      shell: str = "/bin/bash") -> str:
    """Shell lines (run as root inside a host) that create USER once: uid FIRST_UID or above,
    home under /home, no password (key login only), optional passwordless sudo."""
    q = shlex.quote(user)
    lines = [
        f"if ! id -u {q} >/dev/null 2>&1; then useradd --create-home --user-group "
        f"-K UID_MIN={FIRST_UID} -K GID_MIN={FIRST_UID} --shell {shlex.quote(shell)} {q}; fi",
        # '*' rather than useradd's locked '!': sshd without PAM refuses locked accounts even for
        # key logins, while a cloud image's default user (PAM) logs in with a key.
        f"usermod -p '*' {q}",
    ]
    if groups:
        lines.append(f"usermod -a -G {shlex.quote(','.join(groups))} {q}")
    if sudo:
        f = f"/etc/sudoers.d/daskfleet-{user}"
        lines.append(f"printf '%s\\n' {shlex.quote(f'{user} ALL=(ALL) NOPASSWD:ALL')} > {f} "
                     f"&& chmod 0440 {f}")
    return "\n".join(lines)


def _sshd_config(spec: BootSpec) -> str:
    root = spec.user == "root"
    return "\n".join([
        f"ListenAddress {spec.address}",
        f"Port {spec.port}",
        *[f"HostKey {k}" for k in spec.host_keys],
        f"AuthorizedKeysFile .ssh/authorized_keys {LAB_KEYS_DIR}/%u",
        f"PidFile {spec.hdir / 'sshd.pid'}",
        f"PermitRootLogin {'prohibit-password' if root else 'no'}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "UsePAM no",
        # MaxSessions and MaxStartups stay at Debian's defaults (10; 10:30:100): a real machine's.
        "Subsystem sftp internal-sftp",
        "",
    ])


def _init_script(spec: BootSpec, config: Path) -> str:
    q = shlex.quote
    hdir = spec.hdir
    name = q(spec.hostname)
    lines = [
        "set -e",
        # A private, persistent /etc first: users, sudoers and host keys made on this host stay
        # on it (and survive a restart); everything else mounts on top of it.
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={q(str(hdir / 'etc-upper'))},"
        f"workdir={q(str(hdir / 'etc-work'))} /etc",
        f"hostname {name}",
        f"echo {name} > /etc/hostname",
        f"printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\t%s\\n::1\\tlocalhost ip6-localhost "
        f"ip6-loopback\\n' {name} > /etc/hosts",
    ]
    for d in (*PRIVATE_DIRS, *spec.extra_private_dirs):
        src = hdir / "fs" / d
        lines.append(f"mkdir -p /{d} && mount --bind {q(str(src))} /{d}")
    for d in (*MASKED_DIRS, str(_project_root())):
        lines.append(f"if [ -d {q(d)} ]; then mount -t tmpfs -o mode=0700 tmpfs {q(d)}; fi")
    # A machine's init starts in /, never in the control machine's folder (a process that
    # re-enters its start folder, as multiprocessing's spawn does, would fail only on a lab
    # started from a folder the host does not have, such as one under its private /tmp).
    lines.append("cd /")
    # Pid files and the like must not survive a reboot.
    lines.append("mkdir -p /run/daskfleet && mount -t tmpfs -o mode=0755 tmpfs /run/daskfleet")
    lines.append(f"mkdir -p {LAB_KEYS_DIR} && chmod 0755 {LAB_KEYS_DIR}")
    if spec.user:
        if spec.user != "root":
            lines.append(user_setup_script(spec.user))
        lines.append(f"install -m 0644 {q(str(hdir / 'authorized_keys'))} "
                     f"{LAB_KEYS_DIR}/{q(spec.user)}")
    if spec.first_boot:
        log = "/var/log/cloud-init-output.log"
        lines += [
            f"if [ ! -e {FIRST_BOOT_MARKER} ]; then",
            f"  mkdir -p {os.path.dirname(FIRST_BOOT_MARKER)}",
            f"  echo \"first boot $(date -u +%FT%TZ): running user_data\" >> {log}",
            # As cloud-init: a failing user_data is logged, and the machine still comes up.
            f"  {q(str(spec.first_boot))} >> {log} 2>&1 "
            f"&& echo 'user_data: ok' >> {log} || echo \"user_data: FAILED (exit $?)\" >> {log}",
            f"  date -u +%FT%TZ > {FIRST_BOOT_MARKER}",
            "fi",
        ]
    lines.append(f"exec {SSHD} -D -e -f {q(str(config))}")
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


def _links_with_prefix(prefixes: tuple[str, ...]) -> list[str]:
    out = _run(["ip", "-o", "link", "show"], check=False).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
    return [n for n in names if n.startswith(prefixes)]


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
