"""The emulated cloud's instance controller: `python -m runner.lab.instances --lab-dir DIR`.

It polls the EC2 API (moto, 127.0.0.1 only) once a second and makes the lab match it:
a `running` instance becomes a lab host (netns dfec2-<id>, its private address, hostname
ip-a-b-c-d, the image's login user `admin` with the key pair's key, user_data run once at first
boot); a stopped one is crashed and its disk kept; a terminated or vanished one is crashed and its
disk deleted. Each host's security-group ingress rules are enforced with nftables in its netns
(the ruleset: runner.lab.security_groups).
The image has a `docker` stand-in, which pulls from the lab's registry (served here), and a
`shutdown` that powers the instance off through the API (runner.lab.standin). NAT gateways
become hosts of their own (runner.lab.nat); an instance's default route follows its subnet's
route table.
What it booted is listed in cloud/instances.json (read by `Lab().instance_hosts()`).
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

from runner import aws_network
from runner.lab import cloudinit, nat, standin
from runner.lab.addresses import VPC_RANGE
from runner.lab.boot_scripts import REBOOT_MARKER, SHUTDOWN_MARKER, clear_shutdown, shutdown_requested
from runner.lab.ec2 import VPC_ROUTER, client
from runner.lab.lab import Lab
from runner.lab.machine import (
    BootSpec,
    LabHost,
    add_public_address,
    boot_again,
    boot_host,
    host_booted,
    netns_with_prefix,
    nft_apply,
    read_instance_hosts,
    set_gateway,
    stop_host,
)
from runner.lab.security_groups import instance_groups, render_sg_ruleset

logger = logging.getLogger("runner.lab.instances")  # not __main__ under python -m

# Once a second (EC2 itself takes seconds to start an instance): each poll costs the API server
# two requests, for as long as the lab runs
POLL_S = 1.0
NETWORK_POLLS = 2  # route tables and NAT gateways are read every other poll (2 s)
SHUTDOWN_WAIT_S = 30.0  # how long an instance's own shutdown may take before it is cut short
IMAGE_USER = "admin"  # Debian's cloud images' default user
HOST_KEY_PATHS = tuple(f"/etc/ssh/ssh_host_{t}_key" for t in cloudinit.KEY_TYPES)


def _keep_logs(hdir, dest, iid: str) -> None:
    """A terminated instance's boot logs, kept beside the controller's (its disk goes): a test
    that fails after an instance ended itself can still show why."""
    for name in ("init.log", "fs/var/log/cloud-init-output.log"):
        src = hdir / name
        try:
            if src.is_file():
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest / f"{iid}-{src.name}")
        except OSError:
            pass  # best effort: the host is going either way


def host_for(instance_id: str, address: str) -> LabHost:
    short = instance_id.removeprefix("i-")
    # Link names must fit IFNAMSIZ (15 characters): "dfe" + the id's last 12 hex digits.
    return LabHost(name=instance_id, address=address, netns=f"dfec2-{short}", user=IMAGE_USER,
                   instance_id=instance_id, link=f"dfe{short[-12:]}")


def refuse_reason(inst: dict, arch: str | None, subnet_cidr: str | None) -> str | None:
    """Why the controller will not boot this instance (None: it will)."""
    ip = inst.get("PrivateIpAddress")
    if arch != "x86_64":
        return f"architecture {arch}: this machine is x86_64 and cannot boot it"
    if not ip:
        return "no private IP address"
    if not subnet_cidr:
        return "no subnet (the lab boots instances of a VPC only)"
    net = ipaddress.ip_network(subnet_cidr)
    addr = ipaddress.ip_address(ip)
    if not net.subnet_of(ipaddress.ip_network(VPC_RANGE)):  # type: ignore[arg-type]
        return (f"subnet {subnet_cidr} is outside the lab's VPC range {VPC_RANGE} "
                "(launch it in a VPC of 198.19.0.0/16)")
    # AWS reserves the network address, .1 (VPC router), .2 (DNS), .3 (future use) and the
    # broadcast address. moto skips .1-.3 when it picks an address, but an explicitly requested
    # PrivateIpAddress is taken as given: an emulator bug, refused here.
    if int(addr) - int(net.network_address) <= 3 or addr == net.broadcast_address:
        return f"private address {ip} is one AWS reserves in {subnet_cidr} (emulator bug)"
    return None


def write_metadata(hdir: Path, inst: dict, user_data: bytes) -> Path | None:
    """What the instance's metadata service serves (runner/lab/imds.py), as RunInstances set it:
    none with `HttpEndpoint: disabled`; tokens required or optional (IMDSv2 / v1)."""
    options = inst.get("MetadataOptions") or {}
    if options.get("HttpEndpoint") == "disabled":
        return None
    mdir = hdir / "imds"
    mdir.mkdir(mode=0o700, exist_ok=True)
    (mdir / "user-data").write_bytes(user_data)
    (mdir / "instance-id").write_text(inst["InstanceId"])
    (mdir / "options.json").write_text(json.dumps(
        {"http_tokens": options.get("HttpTokens") or "optional"}))
    return mdir


def working_nats(nats: list[dict], tables: list[dict]) -> dict[str, tuple[str, str]]:
    """NAT gateway id -> (private, public address) of each one that works on AWS: available,
    with an Elastic IP, in a subnet that routes 0.0.0.0/0 to an internet gateway (DescribeNat-
    Gateways' and DescribeRouteTables' answers)."""
    wanted = {}
    for n in nats:
        address = (n.get("NatGatewayAddresses") or [{}])[0]
        if n.get("State") == "available" and address.get("PublicIp") and \
                address.get("PrivateIp") and aws_network.egress(
                    aws_network.routes_of(n["SubnetId"], n["VpcId"], tables)) == "igw":
            wanted[n["NatGatewayId"]] = (address["PrivateIp"], address["PublicIp"])
    return wanted


def instance_gateway(inst: dict, nats: list[dict], tables: list[dict]) -> str:
    """Where the instance sends what leaves its VPC: the NAT gateway its subnet routes
    0.0.0.0/0 to (at the NAT's private address, which answers only while the NAT works: else
    the route is a black hole, as on AWS), else the VPC router."""
    target = aws_network.default_target(aws_network.routes_of(
        inst.get("SubnetId", ""), inst.get("VpcId", ""), tables))
    for n in nats:
        if n["NatGatewayId"] == target and n.get("NatGatewayAddresses"):
            return n["NatGatewayAddresses"][0].get("PrivateIp") or VPC_ROUTER
    return VPC_ROUTER


class Controller:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.region = (lab.cloud() or {}).get("region", "us-east-1")
        self.ec2 = client(self.region)
        self.hosts: dict[str, LabHost] = {}  # instance id -> its booted host
        self.rulesets: dict[str, str] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.refused: set[str] = set()
        self.boot_errors: set[str] = set()
        self.powered_off: set[str] = set()  # instances whose `shutdown` was acted on
        self.arch: dict[str, str | None] = {}
        self.public: dict[str, str] = {}  # instance id -> the public address its host answers at
        self.waiting_route: set[str] = set()  # instances whose public address waits for a route
        self.gateways: dict[str, str] = {}  # instance id -> its default gateway
        self.nats: dict[str, tuple[str, str]] = {}  # NAT gateway id -> its (private, public)
        self.tables: list[dict] = []  # the route tables, as of the last network poll
        self.nat_gateways: list[dict] = []  # DescribeNatGateways', as of the last network poll
        self.polls = -1
        self.subnets: dict[str, dict] = {}  # subnet id -> DescribeSubnets' entry (cached)
        # Adopt what a previous controller booted (it may have been restarted).
        for h in read_instance_hosts(lab.cloud_dir):
            if Path(f"/run/netns/{h.netns}").exists():
                self.hosts[h.name] = h
                boot = json.loads((lab.host_dir(h.name) / "boot.json").read_text())
                self.gateways[h.name] = boot.get("gateway") or VPC_ROUTER
        # NAT gateways' hosts are made again from the API's answer (a blip for their traffic)
        for ns in netns_with_prefix("dfec2-nat-"):
            nat.stop_nat("nat-" + ns.removeprefix("dfec2-nat-"))

    def image_arch(self, image_id: str) -> str | None:
        if image_id not in self.arch:
            imgs = self.ec2.describe_images(ImageIds=[image_id])["Images"]
            self.arch[image_id] = imgs[0].get("Architecture") if imgs else None
        return self.arch[image_id]

    def reconcile(self) -> None:
        pages = self.ec2.get_paginator("describe_instances").paginate()
        instances = {i["InstanceId"]: i for page in pages for r in page["Reservations"]
                     for i in r["Instances"]}
        running = {k: i for k, i in instances.items() if i["State"]["Name"] == "running"}
        # Route tables and NAT gateways every NETWORK_POLLS polls (AWS applies a route change in
        # seconds too), and whenever an instance is to boot
        self.polls += 1
        if self.polls % NETWORK_POLLS == 0 or set(running) - set(self.hosts) - self.refused:
            self.nat_gateways = self.ec2.describe_nat_gateways()["NatGateways"]
            self.tables = self.ec2.describe_route_tables()["RouteTables"] \
                if running or self.nat_gateways else []
            self.reconcile_nats(self.nat_gateways)
        nats = self.nat_gateways
        for iid in list(self.hosts):
            state = instances.get(iid, {}).get("State", {}).get("Name", "gone")
            if state == "running":
                continue
            host = self.hosts.pop(iid)
            self.rulesets.pop(iid, None)
            self.public.pop(iid, None)
            self.gateways.pop(iid, None)
            self.waiting_route.discard(iid)
            stop_host(host.netns, host.veth)
            if (p := self.procs.pop(iid, None)) is not None:
                p.wait()
            if state in ("stopped", "stopping"):
                logger.info(f"{iid}: {state}: host {host.address} powered off (disk kept)")
            else:
                _keep_logs(self.lab.host_dir(iid), self.lab.cloud_dir / "terminated", iid)
                shutil.rmtree(self.lab.host_dir(iid), ignore_errors=True)
                logger.info(f"{iid}: {state}: host {host.address} destroyed (disk deleted)")
            self.write()
        self.refused &= set(running)
        members: dict[str, list[str]] = {}
        for i in running.values():
            for g in instance_groups(i):
                if i.get("PrivateIpAddress"):
                    members.setdefault(g, []).append(i["PrivateIpAddress"])
        groups = {}
        if running:
            groups = {g["GroupId"]: g for g in
                      self.ec2.describe_security_groups()["SecurityGroups"]}
        for iid in set(self.hosts) & set(running) - self.powered_off:
            self.act_on_shutdown(iid)
        for iid, inst in running.items():
            mine = [groups[g] for g in instance_groups(inst) if g in groups]
            ruleset = render_sg_ruleset([p for g in mine for p in g.get("IpPermissions", [])],
                                        members,
                                        [p for g in mine for p in g.get("IpPermissionsEgress", [])])
            if iid in self.hosts:
                if inst.get("PublicIpAddress") and iid not in self.public:
                    self.attach_public_address(iid, inst)
                gateway = self.gateway(inst, nats)
                if self.gateways.get(iid) != gateway:
                    set_gateway(self.lab.host_dir(iid), self.hosts[iid].netns, gateway)
                    self.gateways[iid] = gateway
                    logger.info(f"{iid}: default gateway now {gateway} (its subnet's route "
                                "table changed)")
                if self.rulesets.get(iid) != ruleset:
                    nft_apply(self.hosts[iid].netns, ruleset)
                    self.rulesets[iid] = ruleset
                    (self.lab.host_dir(iid) / "sg.nft").write_text(ruleset)  # for `lab restart`
                    logger.info(f"{iid}: security group rules re-applied")
            elif iid not in self.refused:
                try:
                    self.boot(inst, ruleset, self.gateway(inst, nats))
                    self.boot_errors.discard(iid)
                except Exception as e:  # noqa: BLE001 - one bad instance must not stop the rest
                    if iid not in self.boot_errors:
                        logger.info(f"{iid}: boot failed ({type(e).__name__}: {e}); retrying")
                    self.boot_errors.add(iid)
        for p in list(self.procs.values()):
            p.poll()  # reap the init of a host that was killed (`lab kill`)

    def act_on_shutdown(self, iid: str) -> None:
        """The instance shut itself down (systemd's poweroff, halt or reboot; `shutdown` when
        its time came): once the host is down (or 30 s after it began), stop or terminate it,
        or boot it again, as EC2 does."""
        hdir = self.lab.host_dir(iid)
        what = shutdown_requested(hdir)
        if what is None:
            return
        host = self.hosts[iid]
        marker = hdir / "fs" / (REBOOT_MARKER if what == "reboot" else SHUTDOWN_MARKER).lstrip("/")
        # its systemd-nspawn exits once the host's systemd has finished (the namespace's own
        # processes are no sign: the metadata service runs there, outside the host)
        if host_booted(hdir) and time.time() - marker.stat().st_mtime < SHUTDOWN_WAIT_S:
            return
        if what == "reboot":
            clear_shutdown(hdir)
            boot_again(hdir)
            logger.info(f"{iid}: rebooted from inside: host {host.address} booted again")
        else:
            self.power_off(iid)

    def power_off(self, iid: str) -> None:
        """The instance ran `shutdown`: stop or terminate it, as EC2 does."""
        attr = self.ec2.describe_instance_attribute(InstanceId=iid,
                                                    Attribute="instanceInitiatedShutdownBehavior")
        behaviour = attr.get("InstanceInitiatedShutdownBehavior", {}).get("Value", "stop")
        self.powered_off.add(iid)
        try:
            if behaviour == "terminate":
                self.ec2.terminate_instances(InstanceIds=[iid])
            else:
                self.ec2.stop_instances(InstanceIds=[iid])
        except Exception as e:  # noqa: BLE001 - e.g. terminated through the API meanwhile
            logger.info(f"{iid}: shut down from inside, but {behaviour} failed ({e}); the API "
                        "decides")
            return
        logger.info(f"{iid}: shut down from inside: {behaviour}")

    def subnet(self, subnet_id: str | None) -> dict | None:
        if subnet_id and subnet_id not in self.subnets:
            found = self.ec2.describe_subnets(
                Filters=[{"Name": "subnet-id", "Values": [subnet_id]}])["Subnets"]
            if not found:
                return None
            self.subnets[subnet_id] = found[0]
        return self.subnets.get(subnet_id) if subnet_id else None

    def routes(self, subnet_id: str, vpc_id: str) -> list[dict]:
        return aws_network.routes_of(subnet_id, vpc_id, self.tables)

    def gateway(self, inst: dict, nats: list[dict]) -> str:
        return instance_gateway(inst, nats, self.tables)

    def reconcile_nats(self, nats: list[dict]) -> None:
        """A host for each NAT gateway that works on AWS: available, with an Elastic IP, in a
        subnet that routes 0.0.0.0/0 to an internet gateway."""
        wanted = working_nats(nats, self.tables)
        for nid in [n for n in self.nats if self.nats[n] != wanted.get(n)]:
            nat.stop_nat(nid)
            del self.nats[nid]
            logger.info(f"{nid}: NAT gateway's host removed")
        for nid, (private, public) in wanted.items():
            if nid in self.nats:
                continue
            subnet = self.subnet(next(n["SubnetId"] for n in nats if n["NatGatewayId"] == nid))
            prefixlen = ipaddress.ip_network(subnet["CidrBlock"]).prefixlen if subnet else 24
            nat.boot_nat(nid, private, prefixlen, public, VPC_ROUTER)
            self.nats[nid] = (private, public)
            logger.info(f"{nid}: NAT gateway at {private}, out from {public}")

    def boot(self, inst: dict, ruleset: str, gateway: str) -> None:
        iid = inst["InstanceId"]
        subnet = self.subnet(inst.get("SubnetId"))
        reason = refuse_reason(inst, self.image_arch(inst["ImageId"]),
                               subnet["CidrBlock"] if subnet else None)
        if reason:
            self.refused.add(iid)
            logger.warning(f"{iid}: BOOT FAILED: {reason}")
            return
        assert subnet is not None  # refuse_reason refuses an instance without one
        t0 = time.monotonic()
        host = host_for(iid, inst["PrivateIpAddress"])
        hdir = self.lab.host_dir(iid)
        first = not hdir.exists()
        hdir.mkdir(parents=True, exist_ok=True)
        try:
            keys = []
            if inst.get("KeyName"):
                kp = self.ec2.describe_key_pairs(KeyNames=[inst["KeyName"]], IncludePublicKey=True)
                keys = [kp["KeyPairs"][0]["PublicKey"]]
            attr = self.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
            raw = base64.b64decode(attr.get("UserData", {}).get("Value") or "")
            try:
                plan = cloudinit.plan_user_data(raw, IMAGE_USER, keys)
            except cloudinit.UserDataError as e:
                logger.info(f"{iid}: user_data not understood ({e}); booting with the default "
                            "user only")
                plan = cloudinit.plan_user_data(b"", IMAGE_USER, keys)
            for what in plan.ignored:
                logger.info(f"{iid}: user_data: ignored {what}")
            images = self.lab.cloud_dir / "images"
            images.mkdir(parents=True, exist_ok=True)
            if b"docker" in cloudinit.decode_user_data(raw):  # only a container needs the image
                standin.build_image_env(images)
            standin.install(hdir, standin.image_env_path(images))
            script = hdir / "first-boot.sh"
            script.write_text(cloudinit.render_plan(plan))
            script.chmod(0o700)
            metadata = write_metadata(hdir, inst, raw)
            octets = [int(o) for o in host.address.split(".")]
            public = self.public_address(inst)
            boot_host(BootSpec(
                hostname="ip-" + host.address.replace(".", "-"), address=host.address,
                netns=host.netns, veth=host.veth, mac="02:df:ec:{:02x}:{:02x}:{:02x}".format(*octets[1:]),
                hdir=hdir, host_keys=HOST_KEY_PATHS, gateway=gateway,
                local_route=self.vpc_cidr(inst.get("VpcId")),
                prefixlen=ipaddress.ip_network(subnet["CidrBlock"]).prefixlen, user=None,
                first_boot=script, nft_ruleset=ruleset, extra_private_dirs=standin.BIN_DIRS,
                public_address=public, listen_any=True, metadata_dir=metadata,
                power_unit=True, shared_ro=(str(images),)))
        except Exception:
            if first:  # never leave half a host: boot_host removed the netns, we remove its disk
                shutil.rmtree(hdir, ignore_errors=True)
            raise
        self.hosts[iid] = host
        self.gateways[iid] = gateway
        if public:
            self.public[iid] = public
        self.rulesets[iid] = ruleset
        (hdir / "sg.nft").write_text(ruleset)
        self.write()
        logger.info(f"{iid}: booted {host.address} ({'first boot' if first else 'boot'}) in "
                    f"{time.monotonic() - t0:.2f}s; log {hdir / 'init.log'}")

    def vpc_cidr(self, vpc_id: str | None) -> str:
        """The instance's VPC's range (its local route); the lab's whole range if unknown."""
        vpcs = self.ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Vpcs"] \
            if vpc_id else []
        return vpcs[0]["CidrBlock"] if vpcs else VPC_RANGE

    def public_address(self, inst: dict) -> str | None:
        """The instance's public address, if the internet can reach it: as on AWS, only when its
        subnet routes 0.0.0.0/0 to an internet gateway (else the address answers nothing)."""
        address = inst.get("PublicIpAddress")
        if not address or not inst.get("SubnetId"):
            return None
        if aws_network.egress(self.routes(inst["SubnetId"], inst.get("VpcId", ""))) != "igw":
            if inst["InstanceId"] not in self.waiting_route:
                logger.info(f"{inst['InstanceId']}: public address {address} unreachable until "
                            f"subnet {inst['SubnetId']} routes 0.0.0.0/0 to an internet gateway")
                self.waiting_route.add(inst["InstanceId"])
            return None
        return address

    def attach_public_address(self, iid: str, inst: dict) -> None:
        """A route to the internet gateway made after the instance booted: from now on its
        public address answers, as on AWS."""
        public = self.public_address(inst)
        if public:
            add_public_address(self.lab.host_dir(iid), self.hosts[iid].netns, public)
            self.public[iid] = public
            logger.info(f"{iid}: public address {public} answers (its subnet routes to an "
                        "internet gateway now)")

    def write(self) -> None:
        path = self.lab.cloud_dir / "instances.json"
        tmp = path.with_suffix(".tmp")
        from dataclasses import asdict

        tmp.write_text(json.dumps({"hosts": [asdict(h) for h in self.hosts.values()]}, indent=2))
        tmp.replace(path)

    def run(self) -> None:
        logger.info(f"instance controller up: {self.lab.state_dir}, region {self.region}")
        self.write()
        failing = False
        while True:
            try:
                self.reconcile()
                if failing:
                    logger.info("EC2 API answering again")
                failing = False
            except Exception as e:  # noqa: BLE001 - log and retry: the controller must not die
                if not failing:
                    logger.info(f"reconcile failed ({type(e).__name__}: {e}); retrying\n"
                                + traceback.format_exc())
                failing = True
            time.sleep(POLL_S)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="the lab's emulated EC2 instance controller")
    p.add_argument("--lab-dir", required=True)
    args = p.parse_args(argv)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    # its stdout is the lab's controller.log: a line per event, with the time
    output = logging.StreamHandler(sys.stdout)
    output.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    runner_logger = logging.getLogger("runner")
    runner_logger.addHandler(output)
    runner_logger.setLevel(logging.INFO)
    lab = Lab(args.lab_dir)
    standin.serve_registry(lab.cloud_dir / "registry.log")  # the instances' image pulls
    Controller(lab).run()


if __name__ == "__main__":
    main()
