"""A lab host, the primitives: a network namespace on the lab's bridge in which systemd-nspawn
boots systemd as the host's PID 1 (killing every process in the namespace is a machine crash),
its private folders and its firewall (nftables); the units and sshd_config it boots with are
written by runner.lab.boot_scripts. The plain lab hosts (runner.lab.lab_hosts)
and the emulated cloud's instance hosts (runner.lab.instances) both boot through `boot_host`;
this module imports nothing else of the lab but its addresses and boot scripts, so everything
there can import it.
"""

from __future__ import annotations

import ipaddress
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
from runner.lab.addresses import (
    BRIDGE,
    INDEX,
    OBJECT_STORE,
    OBJECT_STORE_NETNS,
    STATE_DIR,
    SUBNET_PREFIX,
    VETH_PREFIX,
    VPC_RANGE,
)
from runner.lab.boot_scripts import (
    INIT_UNIT,
    PERSISTENT_OVERLAYS,
    POWER_UNIT,
    PRIVATE_DIRS,
    SSHD,
    SSHD_UNIT,
    _sshd_config,
    lab_init_script,
    lab_units,
    nspawn_args,
)

DEFAULT_STATE_DIR = Path(STATE_DIR)
# The bridge's own MAC, set once: a bridge without one takes its lowest port's, so removing the
# host that held it would change the gateway's MAC under every other host, whose cached entry
# then blackholes what they send this machine until it expires (tens of seconds: long enough
# for Dask's 30 s TCP timeout to drop a connection). A router's MAC does not move.
BRIDGE_MAC = f"02:df:{INDEX:02x}:00:00:01"
BRIDGE_ADDRESS = SUBNET_PREFIX + "1"
FIRST_HOST_OCTET = 11
MAX_HOSTS = 32
READY_TIMEOUT_S = 20.0
# Where a host's boot binds this machine's / for systemd-nspawn (in the boot's own mount
# namespace; here it stays an empty folder)
CONTAINER_ROOT = Path("/run/daskfleet-lab-root")


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str
    netns: str
    user: str = "root"
    port: int = 22
    instance_id: str | None = None  # instance hosts of the emulated cloud only
    link: str | None = None  # the veth's name on the bridge (default VETH_PREFIX + NAME)

    @property
    def veth(self) -> str:
        return self.link or f"{VETH_PREFIX}{self.name}"


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
    # An instance's VPC range, on its link: the VPC router's local route (every subnet of the
    # VPC reached directly; the gateway may sit in another subnet)
    local_route: str | None = None
    user: str | None = None  # a login user the lab creates (None: only first_boot creates users)
    authorized_keys: str = ""  # installed as LAB_KEYS_DIR/<user> at every boot
    first_boot: Path | None = None  # run once, as root, inside the host, before sshd (user_data)
    nft_ruleset: str | None = None  # applied in the netns before anything in it starts
    port: int = 22
    extra_private_dirs: tuple[str, ...] = field(default=())
    # A public address (an emulated instance's, through the lab's internet gateway): the host
    # answers at it as well; its replies leave through the gateway as everything else does.
    public_address: str | None = None
    # sshd on every address of the host, as a real machine's: an instance's public address can
    # come after its boot (its subnet's route to the internet gateway is made later)
    listen_any: bool = False
    # An instance's metadata (runner/lab/imds.py serves it at 169.254.169.254 in the netns,
    # outside the host's own processes, as the hypervisor does); None: no metadata service
    metadata_dir: Path | None = None
    # An emulated instance: its power-offs and reboots are recorded for the controller
    power_unit: bool = False
    # Folders of this machine the host sees, read-only, at the same path (the emulated image's
    # environment: runner.lab.standin); the rest of the lab's folder is masked
    shared_ro: tuple[str, ...] = field(default=())


def run(args: list[str], check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        raise LabError(
            f"lab: `{shlex.join(args)}` failed (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()}"
        )
    return proc


def check_prerequisites() -> None:
    """One line that says what is missing: the lab needs Linux, root, ip, unshare,
    systemd-nspawn and sshd."""
    if not sys.platform.startswith("linux"):
        raise LabError("lab: needs Linux (network namespaces); this is " + sys.platform + ".")
    if os.geteuid() != 0:
        raise LabError("lab: needs root (it creates network namespaces and mounts); run as root.")
    missing = [t for t in ("ip", "unshare", "ssh-keygen", "systemd-nspawn")
               if shutil.which(t) is None]
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    if missing:
        raise LabError(
            "lab: missing " + ", ".join(missing) + "; install them with `apt-get install -y "
            "iproute2 util-linux openssh-server systemd-container` (or `make system-deps`)."
        )




def read_instance_hosts(cloud_dir: Path) -> list[LabHost]:
    """The emulated cloud's running instances, as the instance controller recorded them."""
    path = cloud_dir / "instances.json"
    if not path.exists():
        return []
    return [LabHost(**h) for h in json.loads(path.read_text())["hosts"]]


# -- one host ---------------------------------------------------------------------------------
def boot_host(spec: BootSpec) -> subprocess.Popen:
    """Create the host's namespace and link and boot its systemd (which starts its sshd).

    Never leaves half a host: on any failure the namespace and link are removed again."""
    hdir = spec.hdir
    CONTAINER_ROOT.mkdir(exist_ok=True)
    for d in (*PRIVATE_DIRS, *spec.extra_private_dirs):
        (hdir / "fs" / d).mkdir(parents=True, exist_ok=True)
    os.chmod(hdir / "fs" / "tmp", 0o1777)
    for upper in PERSISTENT_OVERLAYS.values():
        (hdir / upper).mkdir(exist_ok=True)
    if spec.user:
        (hdir / "authorized_keys").write_text(spec.authorized_keys)
    config = hdir / "sshd_config"
    config.write_text(_sshd_config(spec))
    _write_units(spec, config)
    (hdir / "boot.json").write_text(json.dumps(
        {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(spec).items()}, indent=2))
    ns = spec.netns
    try:
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", spec.veth, "type", "veth", "peer", "name", "eth0",
              "address", spec.mac, "netns", ns])
        run(["ip", "link", "set", spec.veth, "master", BRIDGE, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{spec.address}/{spec.prefixlen}", "dev", "eth0"])
        if spec.public_address:
            run(["ip", "-n", ns, "addr", "add", f"{spec.public_address}/32", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        if spec.local_route:
            run(["ip", "-n", ns, "route", "add", spec.local_route, "dev", "eth0"])
        if spec.gateway:
            # onlink: an instance's gateway (the VPC router) may sit outside its own subnet
            run(["ip", "-n", ns, "route", "add", "default", "via", spec.gateway, "dev", "eth0",
                 "onlink"])
        if spec.public_address:
            internet_routes(ns, spec.public_address)
        if spec.nft_ruleset is not None:
            nft_apply(ns, spec.nft_ruleset)
        if spec.metadata_dir is not None:
            start_metadata_service(ns, spec.metadata_dir)
        log = open(hdir / "init.log", "ab")
        # In cgroups of the host's own (nspawn keeps the one it starts in): hosts sharing one
        # would share every unit's cgroup, and a host's systemd would wait, when it stops a
        # unit, for the other hosts' processes of the same unit to leave it.
        groups = host_cgroups(ns)
        for g in groups:
            g.mkdir(parents=True, exist_ok=True)
        # nspawn refuses / itself as a container's root: a bind of it, made in a mount
        # namespace of its own (never in this machine's, where removing the lab's folders
        # would follow it into /)
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'for g in $DFLAB_CGROUPS; do echo $$ > "$g/cgroup.procs" || exit 1; done; '
             'mount --bind / "$0" && exec "$@"', str(CONTAINER_ROOT),
             *nspawn_args(spec, str(CONTAINER_ROOT))],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd="/",
            env={**os.environ, "DFLAB_CGROUPS": " ".join(str(g) for g in groups)},
        )
        log.close()
    except BaseException:
        stop_host(ns, spec.veth)
        raise
    (hdir / "nspawn.pid").write_text(str(proc.pid))
    return proc


def _write_units(spec: BootSpec, sshd_config: Path) -> None:
    """The lab's units, enabled, in the host's persistent /etc (its overlay's upper folder, as
    it is between boots); and this machine's own enabled units masked there: a host boots as a
    fresh machine, not as a second copy of this one (its database server, its sshd)."""
    (spec.hdir / "etc-upper" / "hostname").write_text(spec.hostname + "\n")
    init = spec.hdir / "init.sh"
    init.write_text(lab_init_script(spec))
    system = spec.hdir / "etc-upper" / "systemd" / "system"
    wants = system / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for name, text in lab_units(spec, init, sshd_config).items():
        (system / name).write_text(text)
        link = wants / name
        if not link.is_symlink():
            link.symlink_to(f"/etc/systemd/system/{name}")
    ours = {INIT_UNIT, SSHD_UNIT, POWER_UNIT}
    enabled = {p.name for p in Path("/etc/systemd/system").glob("*.wants/*")} - ours
    for name in sorted(enabled | {"ssh.service", "ssh.socket", "console-getty.service"}):
        mask = system / name
        if not mask.is_symlink() and not mask.exists():
            mask.symlink_to("/dev/null")


def load_boot_spec(hdir: Path) -> BootSpec:
    d = json.loads((hdir / "boot.json").read_text())
    d["hdir"] = Path(d["hdir"])
    d["first_boot"] = Path(d["first_boot"]) if d.get("first_boot") else None
    d["metadata_dir"] = Path(d["metadata_dir"]) if d.get("metadata_dir") else None
    d["host_keys"] = tuple(d["host_keys"])
    d["extra_private_dirs"] = tuple(d.get("extra_private_dirs") or ())
    d["shared_ro"] = tuple(d.get("shared_ro") or ())
    return BootSpec(**d)


def boot_again(hdir: Path) -> subprocess.Popen:
    """Boot an instance host again from its disk (its boot spec, with the controller's latest
    security group rules): a reboot, or `lab restart`. Its user_data does not run again."""
    spec = load_boot_spec(hdir)
    rules = hdir / "sg.nft"
    if rules.exists():
        spec = replace(spec, nft_ruleset=rules.read_text())
    stop_host(spec.netns, spec.veth)
    return boot_host(spec)


def start_metadata_service(netns: str, metadata_dir: Path) -> None:
    """runner/lab/imds.py at 169.254.169.254:80 in the host's namespace (not in its PID
    namespace: the host's root cannot see it; `kill_netns_processes` ends it with the host)."""
    from runner.lab import imds

    run(["ip", "-n", netns, "addr", "replace", f"{imds.ADDRESS}/32", "dev", "lo"])
    log = open(metadata_dir / "imds.log", "ab")
    subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, imds.__file__,
                      "--dir", str(metadata_dir)], stdin=subprocess.DEVNULL, stdout=log,
                     stderr=log, start_new_session=True, cwd="/")
    log.close()
    deadline = time.monotonic() + 10
    while not port_open_in(netns, imds.ADDRESS, imds.PORT, timeout=1.0):
        if time.monotonic() > deadline:
            raise LabError(f"lab: the metadata service of {netns} did not start; see "
                           f"{metadata_dir / 'imds.log'}")
        time.sleep(0.05)


IGW_TABLE = "daskfleet_igw"


def internet_routes(netns: str, public: str) -> None:
    """An instance with a public address on the lab's internet, as an internet gateway makes
    it: what it sends out of its VPC leaves from its public address (the gateway's one-to-one
    NAT), so this machine and the lab's object store (as S3 is reached through an internet
    gateway; on the same bridge, reached directly) answer it. A NAT gateway's host
    (runner.lab.nat) is made the same way, and its SNAT covers what it forwards. An instance
    with neither reaches nothing outside its VPC."""
    _forget_neighbors(public)
    run(["ip", "-n", netns, "route", "replace", f"{OBJECT_STORE}/32", "dev", "eth0",
         "src", public])
    nft_apply(netns, "\n".join([
        f"table ip {IGW_TABLE}",
        f"delete table ip {IGW_TABLE}",
        f"table ip {IGW_TABLE} {{",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f'    oifname "eth0" ip daddr != {VPC_RANGE} snat to {public}',
        "  }",
        "}",
        "",
    ]))


def _forget_neighbors(address: str) -> None:
    """A public address goes to another instance after its last holder ended (a restarted
    emulator issues them again): this machine and the object store, on the same link, must not
    send to the MAC they cached for it, which another host may now hold (blackholed until the
    entry expires). AWS's fabric knows where an address lives."""
    run(["ip", "neigh", "flush", "to", address, "dev", BRIDGE], check=False)
    if Path(f"/run/netns/{OBJECT_STORE_NETNS}").exists():
        run(["ip", "-n", OBJECT_STORE_NETNS, "neigh", "flush", "to", address], check=False)


def add_public_address(hdir: Path, netns: str, address: str) -> None:
    """A public address that came after the host booted, kept for its next boot (boot.json)."""
    run(["ip", "-n", netns, "addr", "replace", f"{address}/32", "dev", "eth0"])
    internet_routes(netns, address)
    _keep_in_boot_spec(hdir, public_address=address)


def set_gateway(hdir: Path, netns: str, gateway: str) -> None:
    """The instance's subnet now routes 0.0.0.0/0 elsewhere (a NAT gateway, or back to the VPC
    router): its default route follows, now and at its next boot."""
    run(["ip", "-n", netns, "route", "replace", "default", "via", gateway, "dev", "eth0", "onlink"])
    _keep_in_boot_spec(hdir, gateway=gateway)


def _keep_in_boot_spec(hdir: Path, **changes) -> None:
    path = hdir / "boot.json"
    spec = {**json.loads(path.read_text()), **changes}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(spec, indent=2))
    tmp.replace(path)


def stop_host(netns: str, veth: str) -> None:
    """Crash the host (every process at once) and remove its namespace, link and cgroups."""
    kill_netns_processes(netns)
    run(["ip", "netns", "del", netns], check=False)
    run(["ip", "link", "del", veth], check=False)
    remove_host_cgroups(netns)


CGROUP_PARENT = "daskfleet-lab"


def host_cgroups(netns: str) -> list[Path]:
    """The host's own cgroup in each hierarchy systemd uses: cgroup2 (unified, or hybrid's
    /sys/fs/cgroup/unified) and a v1 `name=systemd` one where mounted."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, opts = left.split(), right.split()
        fstype, mount = opts[0], fields[4]
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in opts[-1].split(",")):
            found.append(Path(mount) / CGROUP_PARENT / netns)
    return found


def remove_host_cgroups(netns: str) -> None:
    """The host's cgroups, deepest first (a cgroup is removed with rmdir, once empty)."""
    for top in host_cgroups(netns):
        if not top.is_dir():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass


def nft_apply(netns: str, ruleset: str) -> None:
    run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=ruleset)


def host_state(up: bool, cut: bool) -> str:
    """What `lab status` says of a host."""
    return "CUT" if cut else "up" if up else "DOWN"


def check_user_name(user: str) -> None:
    import re

    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,30}", user):
        raise LabError(f"lab: --user {user!r} is not a valid user name (lower-case letters, digits, "
                       "_ and -, starting with a letter).")


def port_open(address: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_open_in(netns: str, address: str, port: int, timeout: float) -> bool:
    """port_open from inside the host's own namespace: for an emulated instance, whose private
    address this machine (outside the VPC) cannot reach."""
    target = f"{ipaddress.ip_address(address)}/{int(port)}"
    return run(["ip", "netns", "exec", netns, "timeout", f"{timeout:g}", "bash", "-c",
                f"exec 3<>/dev/tcp/{target}"], check=False).returncode == 0


def link_exists(name: str) -> bool:
    return run(["ip", "link", "show", name], check=False).returncode == 0


def netns_with_prefix(prefix: str) -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def links_with_prefix(prefixes: tuple[str, ...]) -> list[str]:
    out = run(["ip", "-o", "link", "show"], check=False).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
    return [n for n in names if n.startswith(prefixes)]


def kill_netns_processes(ns: str) -> None:
    """Every process in the namespace SIGKILLed at once: for a lab host, its systemd (PID 1 of
    its PID namespace, which takes every other process of the host with it) included. Then its
    systemd-nspawn, outside the namespace, is waited for: it exits once its PID 1 is gone (and
    killing it instead would leave the host running, orphaned)."""
    pids = [int(p) for p in run(["ip", "netns", "pids", ns], check=False).stdout.split()]
    parents = {q for p in pids if (q := _parent(p)) is not None and q not in pids}
    nspawns = [p for p in parents if _comm(p) == "systemd-nspawn"]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while run(["ip", "netns", "pids", ns], check=False).stdout.split() or any(
            _comm(p) == "systemd-nspawn" for p in nspawns):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)


def host_booted(hdir: Path) -> bool:
    """Whether the host's systemd-nspawn (the pid its boot recorded) still runs."""
    try:
        pid = int((hdir / "nspawn.pid").read_text())
    except (OSError, ValueError):
        return False
    return _comm(pid) == "systemd-nspawn"


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
