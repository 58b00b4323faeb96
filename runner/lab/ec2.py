"""The emulated EC2 next to the lab: moto's server on 127.0.0.1:4566 with Debian's AMIs, a
Terraform CLI config for the local provider mirror, and the instance controller
(runner.lab.instances) that turns running instances into lab hosts.

`python -m runner.lab.ec2 --lab-dir DIR` is the API server process: moto's server, with the
lab's image list (MOTO_AMIS_PATH) and a `--lab-dir` in its command line so `lab down` can always
find it, even after a crash that lost the record.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runner.errors import LabError
from runner.lab.addresses import BRIDGE, INTERNET_ADDRESS, PUBLIC_RANGE, VPC_RANGE
from runner.log import Progress, Say

logger = logging.getLogger("runner.lab.ec2")  # not __main__ under python -m

PORT = 4566
ENDPOINT = f"http://127.0.0.1:{PORT}"
# The VPC's router (where AWS puts it: the subnet's .1). The control machine holds the address,
# so the instances have a gateway to the lab's internet, but it is OUTSIDE the VPC as a laptop
# is: no route to the VPC's private addresses, and nothing it serves answers at the router's
# address (`outside_vpc_ruleset`). It reaches instances at their public addresses only.
VPC_ROUTER = "198.19.0.1"
VPC_TABLE = "daskfleet_vpc"  # the nftables table that keeps the control machine out of the VPC
DEBIAN_OWNER = "136693071363"
TF_PROVIDER = "registry.terraform.io/hashicorp/aws"
TF_MIRROR_CANDIDATES = ("/opt/tf-plugins", "~/.terraform.d/plugins", "/usr/local/share/terraform/plugins",
                        "/usr/share/terraform/plugins")
START_TIMEOUT_S = 30.0
# Every AWS client of the lab: dummy credentials, and never the instance metadata service.
CLIENT_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
              "AWS_EC2_METADATA_DISABLED": "true"}


def debian_amis() -> list[dict]:
    """Debian 12 as Debian publishes it (owner 136693071363), in moto's MOTO_AMIS_PATH format
    (the keyword arguments of moto.ec2.models.amis.Ami). moto has no ena_support field: its
    DescribeImages never reports EnaSupport."""
    def ami(ami_id: str, arch_name: str, arch: str) -> dict:
        return {
            "ami_id": ami_id, "name": f"debian-12-{arch_name}-20260101-1234",
            "description": f"Debian 12 (20260101-1234) {arch_name}",
            "owner_id": DEBIAN_OWNER, "public": True, "state": "available",
            "architecture": arch, "virtualization_type": "hvm", "hypervisor": "xen",
            "root_device_type": "ebs", "root_device_name": "/dev/xvda", "image_type": "machine",
            "sriov": "simple", "boot_mode": "uefi-preferred",
            "creation_date": "2026-01-01T12:34:00.000Z",
        }
    return [ami("ami-0deb12a0d64000001", "amd64", "x86_64"),
            ami("ami-0deb12a0a64000002", "arm64", "arm64")]


def find_tf_mirror() -> Path | None:
    """The folder holding registry.terraform.io/hashicorp/aws/<version>/<os_arch>/, if any."""
    env = os.environ.get("DASKFLEET_TF_MIRROR")
    for cand in ([env] if env else []) + list(TF_MIRROR_CANDIDATES):
        path = Path(cand).expanduser()
        if (path / TF_PROVIDER).is_dir():
            return path
    return None


def terraform_rc(mirror: Path) -> str:
    return (
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f"    path    = \"{mirror}\"\n"
        f"    include = [\"{TF_PROVIDER}\"]\n"
        "  }\n"
        "  direct {\n"
        f"    exclude = [\"{TF_PROVIDER}\"]\n"
        "  }\n"
        "}\n"
    )


def client(region: str):
    """A boto3 EC2 client for the emulator (only ever 127.0.0.1)."""
    os.environ.update(CLIENT_ENV)
    import boto3

    return boto3.client("ec2", endpoint_url=ENDPOINT, region_name=region,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _pid_is(pid: int | None, marker: str) -> bool:
    """Is `pid` alive and one of ours (its command line holds `marker`)? Guards against a
    recycled pid after a crash."""
    if not pid:
        return False
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False


def _our_pids(module: str, lab_dir: Path) -> list[int]:
    """Every process running `python -m MODULE --lab-dir LAB_DIR` (found in /proc)."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                argv = p.joinpath("cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = [a.decode(errors="replace") for a in argv]
            if module in words and str(lab_dir) in words:
                found.append(int(p.name))
    return found


def cloud_alive(cloud: dict) -> bool:
    return _pid_is(cloud.get("api_pid"), "runner.lab.ec2") and \
        _pid_is(cloud.get("controller_pid"), "runner.lab.instances")


def _spawn(module: str, lab, log_name: str, extra: list[str]) -> int:
    log = open(lab.cloud_dir / log_name, "ab")
    env = {**os.environ, **CLIENT_ENV, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--lab-dir", str(lab.state_dir), *extra],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        cwd=str(Path(__file__).resolve().parents[2]), env=env)
    log.close()
    return proc.pid


def start_cloud(lab, region: str, progress: Progress | None = None) -> None:
    """Start the API server and the instance controller; record them in lab.json."""
    say = Say(progress, logger)
    from runner.lab.machine import port_open, run

    if port_open("127.0.0.1", PORT, timeout=0.5):
        raise LabError(
            f"lab: port {PORT} on 127.0.0.1 is taken (LocalStack, another moto?), and the emulated "
            f"EC2 needs it; stop what listens there (`ss -ltnp 'sport = :{PORT}'`) and run "
            "`daskfleet lab up --cloud aws` again.")
    t0 = time.monotonic()
    cdir = lab.cloud_dir
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / "amis.json").write_text(json.dumps(debian_amis(), indent=2))
    mirror = find_tf_mirror()
    lab.cloud_terraform_rc.write_text(terraform_rc(mirror) if mirror else "")
    cloud: dict[str, Any] = {"provider": "aws", "endpoint": ENDPOINT, "region": region,
                             "api_pid": None, "controller_pid": None,
                             "terraform_rc": str(lab.cloud_terraform_rc), "port": PORT}
    data = lab.read_record()
    data["cloud"] = cloud
    lab.write_record(data)  # record first: `lab down` must find whatever starts next
    cloud["api_pid"] = _spawn("runner.lab.ec2", lab, "api.log", [])
    lab.write_record(data)
    deadline = time.monotonic() + START_TIMEOUT_S
    ec2 = client(region)
    while True:
        if not _pid_is(cloud["api_pid"], "runner.lab.ec2"):
            raise LabError(f"lab: the EC2 API server (moto) exited at start; see {cdir / 'api.log'}:"
                           f"\n{(cdir / 'api.log').read_text()[-1500:]}")
        try:
            images = ec2.describe_images(Owners=[DEBIAN_OWNER])["Images"]
            break
        except Exception:  # noqa: BLE001 - not answering yet
            if time.monotonic() > deadline:
                raise LabError(f"lab: the EC2 API server did not answer on {ENDPOINT} within "
                               f"{START_TIMEOUT_S:.0f}s; see {cdir / 'api.log'}.") from None
            time.sleep(0.2)
    if len(images) != 2:
        raise LabError(f"lab: the EC2 API server lists {len(images)} Debian images, not 2; "
                       f"see {cdir / 'amis.json'} and {cdir / 'api.log'}.")
    # the filter first: without the router's prefix route, packets to private addresses would
    # take this machine's default route, as they do on a laptop, and must stop here
    run(["nft", "-f", "-"], input=outside_vpc_ruleset())
    run(["ip", "addr", "replace", f"{VPC_ROUTER}/24", "dev", BRIDGE, "noprefixroute"])
    run(["ip", "addr", "replace", f"{INTERNET_ADDRESS}/24", "dev", BRIDGE])
    cloud["controller_pid"] = _spawn("runner.lab.instances", lab, "controller.log", [])
    lab.write_record(data)
    time.sleep(0.5)
    if not _pid_is(cloud["controller_pid"], "runner.lab.instances"):
        raise LabError(f"lab: the instance controller exited at start; see "
                       f"{cdir / 'controller.log'}:\n{(cdir / 'controller.log').read_text()[-1500:]}")
    say(f"lab: emulated EC2 at {ENDPOINT} (region {region}) in {time.monotonic() - t0:.1f}s; "
        f"VPCs in {VPC_RANGE} via {VPC_ROUTER} (this machine is outside them: it reaches "
        f"instances at public addresses, {PUBLIC_RANGE}); images "
        + ", ".join(f"{i['ImageId']} {i['Name']}" for i in images))
    if mirror:
        say(f"lab: Terraform CLI config {lab.cloud_terraform_rc} (hashicorp/aws from {mirror})")
    else:
        say(f"lab: no local mirror of {TF_PROVIDER} found (DASKFLEET_TF_MIRROR, "
            f"{', '.join(TF_MIRROR_CANDIDATES)}): `terraform init` will need network access; "
            f"{lab.cloud_terraform_rc} is empty")


def stop_cloud(lab) -> bool:
    """Stop the controller, then the API server (by record and by a sweep of /proc); remove the
    VPC router address. True if anything was running. Outside lab 0, which alone runs the
    emulated EC2, nothing: the VPC's nftables table is this machine's, and lab 0's cloud may be
    running beside it (`lab down` in lab 1 must not open lab 0's VPC to this machine)."""
    from runner.lab.addresses import OWNS_CLOUD
    from runner.lab.machine import run

    if not OWNS_CLOUD:
        return False
    cloud = (lab.read_record() or {}).get("cloud") or {}
    pids: list[int] = []
    for module, key in (("runner.lab.instances", "controller_pid"), ("runner.lab.ec2", "api_pid")):
        mine = set(_our_pids(module, lab.state_dir))
        if _pid_is(cloud.get(key), module):
            mine.add(cloud[key])
        for pid in mine:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pids += mine
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{p}").exists() and not _zombie(p) for p in pids) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    drop_vpn_address(cloud)
    run(["ip", "addr", "del", f"{VPC_ROUTER}/24", "dev", BRIDGE], check=False)
    run(["ip", "addr", "del", f"{INTERNET_ADDRESS}/24", "dev", BRIDGE], check=False)
    run(["nft", "delete", "table", "inet", VPC_TABLE], check=False)  # after the address went
    return bool(pids)


def outside_vpc_ruleset(vpn: tuple[str, str] | None = None) -> str:
    """The control machine outside the VPC, as a laptop is: what it sends to a private address
    is dropped (a connection waits out its timeout, as one to an unrouted address does), and
    nothing on it answers at the VPC router's address. With ``vpn`` (its address in a subnet,
    the VPC's range: runner.lab.vpn), what it sends from that address into that range goes
    through, as over a client VPN. Replaces the table in one transaction."""
    from runner.lab.machine import BRIDGE_MAC

    through = [f"    ip saddr {vpn[0]} ip daddr {vpn[1]} accept"] if vpn else []
    return "\n".join([
        f"table inet {VPC_TABLE}",
        f"delete table inet {VPC_TABLE}",
        f"table inet {VPC_TABLE} {{",
        "  chain output {",
        "    type filter hook output priority 0; policy accept;",
        *through,
        f"    ip daddr {VPC_RANGE} drop",
        "  }",
        "  chain input {",
        "    type filter hook input priority 0; policy accept;",
        f"    ip daddr {VPC_ROUTER} drop",
        "  }",
        # and never the VPC's router, on a machine that forwards (ip_forward=1, as Docker
        # sets it): a VPC's way out is an internet gateway or a NAT gateway only. Routed
        # packets only, those sent to the bridge's own MAC (the gateway's): with br_netfilter,
        # packets bridged from host to host pass this hook too, in and out of the bridge.
        "  chain forward {",
        "    type filter hook forward priority 0; policy accept;",
        f"    ether daddr {BRIDGE_MAC} ip saddr {VPC_RANGE} drop",
        f"    ether daddr {BRIDGE_MAC} ip daddr {VPC_RANGE} drop",
        "  }",
        "}",
        "",
    ])


def drop_vpn_address(cloud: dict) -> None:
    """The route and address of `lab vpn` (runner.lab.vpn) on the bridge: its `--off`, and
    `lab down`."""
    from runner.lab.machine import run

    vpn = cloud.get("vpn")
    if vpn:
        run(["ip", "route", "del", vpn["vpc_cidr"], "dev", BRIDGE], check=False)
        run(["ip", "addr", "del", f"{vpn['address']}/32", "dev", BRIDGE], check=False)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="the lab's EC2 API server (moto)")
    p.add_argument("--lab-dir", required=True)
    args = p.parse_args(argv)
    # Read by moto.ec2.models.amis at import: the only images are the lab's (Debian's).
    os.environ["MOTO_AMIS_PATH"] = str(Path(args.lab_dir) / "cloud" / "amis.json")
    from runner.lab import moto_server
    from runner.lab.ec2_strict import as_ec2_does

    as_ec2_does(Path(args.lab_dir))
    # Not one log line per request (the controller polls once a second); errors still show.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    os.environ.setdefault("MOTO_PORT", str(PORT))  # as moto's own main sets it
    server = moto_server.make("127.0.0.1", PORT)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `lab down` stops it so
    server.serve_forever()


if __name__ == "__main__":
    main()
