"""Cloud VMs that Terraform creates (aws, gcp, azure).

daskfleet generates each VM's SSH host key and hands it over through user data, writes
known_hosts before the first connection, then waits for SSH. The login user is the image's
(non-root, sudo); the client reaches the scheduler through an SSH tunnel, since Dask's ports are
open only inside the cluster's own security group."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from runner.cluster.hosts import Host
from runner.errors import ConfigError, ProvisionError
from runner.log import Progress, Say
from runner.provision import hostkeys
from runner.provision.providers.base import Provider

logger = logging.getLogger(__name__)

# Set by daskfleet from ssh: and dask:, never by the cluster file's terraform: section.
RESERVED = ("cluster_name", "ssh_user", "ssh_public_key", "host_keys", "dask_ports",
            "key_pair_suffix")


def port_range(text: str) -> tuple[int, int]:
    low, high = (int(x) for x in text.split(":"))
    return low, high


class Cloud(Provider):
    tunnel = True
    image_var = ""  # the module variable that pins the image
    # The Python minor version of the module's default image (Debian 12: 3.11), so a control
    # machine on another version is refused before any VM is billed.
    default_image_python = "3.11"

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.image_var,)

    @property
    def state_dir(self) -> Path:
        return self.spec.state_dir

    def ssh_paths(self) -> tuple[Path, Path]:
        from runner.config import resolve_path

        assert self.spec.ssh.private_key is not None, "the file's validator requires it on clouds"
        key = resolve_path(self.spec, self.spec.ssh.private_key)
        known = (resolve_path(self.spec, self.spec.ssh.known_hosts) if self.spec.ssh.known_hosts
                 else self.state_dir / "known_hosts")
        return key, known

    def node_names(self) -> list[str]:
        n = int(self.spec.terraform.get("worker_count", 2))
        return ["scheduler"] + [f"worker-{i}" for i in range(1, n + 1)]

    def planned_names(self) -> list[str] | None:
        return self.node_names()

    def public_key(self) -> str:
        key, _ = self.ssh_paths()
        pub = Path(str(key) + ".pub")
        if not pub.is_file():
            raise ConfigError(
                f"{self.spec.source}: ssh.private_key: {pub} is missing; the VMs' login user gets "
                f"this public key. Create it with `ssh-keygen -y -f {key} > {pub}`.")
        return pub.read_text().strip()

    def terraform_variables(self, recorded: dict) -> dict:
        clash = sorted(set(RESERVED) & set(self.spec.terraform))
        if clash:
            raise ConfigError(f"{self.spec.source}: terraform.{clash[0]} is set by daskfleet "
                              "(from ssh: and dask:); remove it from the terraform: section.")
        d = self.spec.dask
        (wf, wt), (nf, nt) = port_range(d.worker_port_range), port_range(d.nanny_port_range)
        variables = {
            "cluster_name": self.spec.name, **self.spec.terraform,
            "ssh_user": self.user, "ssh_public_key": self.public_key(),
            "host_keys": hostkeys.ensure(self.state_dir / "host_keys", self.node_names()),
            "dask_ports": {"scheduler": d.scheduler_port, "dashboard": d.dashboard_port,
                           "worker_from": wf, "worker_to": wt, "nanny_from": nf, "nanny_to": nt},
        }
        # The image is resolved once and then pinned: a newly published image never replaces
        # running VMs on its own (`daskfleet up --new-image` asks for one).
        if self.image_var not in self.spec.terraform and recorded.get("image"):
            variables[self.image_var] = recorded["image"]
        return variables

    def image_python(self) -> str | None:
        """The Python minor version of the image, where it is known."""
        return None if self.image_var in self.spec.terraform else self.default_image_python

    def before_apply(self, progress: Progress | None) -> None:
        self.public_key()
        minor = f"{sys.version_info.major}.{sys.version_info.minor}"
        image = self.image_python()
        if image and image != minor:
            raise ProvisionError(
                f"{self.spec.source}: the default image (Debian 12) runs Python {image}, this "
                f"machine runs Python {minor}: the nodes could not run this machine's environment. "
                f"Submit from a Python {image} machine, or set terraform.{self.image_var} to an "
                f"image with Python {minor}. Nothing was created.")

    @property
    def use_public(self) -> bool:
        return bool(self.spec.terraform.get("use_public_ip", False))

    def hosts_from_output(self, outputs: dict) -> list[Host]:
        return [Host.from_output(row, use_public=self.use_public) for row in outputs["hosts"]]

    def after_apply(self, hosts: list[Host], ssh, progress: Progress | None) -> None:
        from runner.cluster.ssh import wait_for_ssh

        keys = hostkeys.ensure(self.state_dir / "host_keys", [h.name for h in hosts])
        _, known = self.ssh_paths()
        hostkeys.write_known_hosts(known, {hostkeys.entry_host(h.address, h.port):
                                           keys[h.name]["public_key"] for h in hosts})
        Say(progress, logger)(f"ssh: waiting for {len(hosts)} host(s) to answer with the host "
                              f"keys daskfleet gave them (at most "
                              f"{self.spec.ssh.boot_timeout:.0f}s)")
        wait_for_ssh(hosts, ssh, self.spec.ssh.boot_timeout)


# The key types EC2's ImportKeyPair takes (ecdsa and security-key types are refused, and only
# after Terraform has made the VPC): checked before anything is created.
AWS_KEY_TYPES = ("ssh-ed25519", "ssh-rsa")
DEFAULT_INSTANCE_TYPE = "m6i.large"  # terraform/modules/aws/variables.tf's defaults
DEFAULT_VPC_CIDR = "10.42.0.0/16"
# What AWS answers a principal that may not make a call: the checks before `up` say so and go on.
DENIED = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})


class AWS(Cloud):
    name = module = "aws"
    default_user = "admin"  # Debian's AMIs
    image_var = "ami_id"

    def public_key(self) -> str:
        line = super().public_key()
        kind = line.split()[0] if line.split() else "(empty)"
        if kind not in AWS_KEY_TYPES:
            key, _ = self.ssh_paths()
            raise ConfigError(
                f"{self.spec.source}: ssh.private_key: {key}.pub is a {kind} key, which EC2 does "
                f"not import (it takes {' and '.join(AWS_KEY_TYPES)}); make one with `ssh-keygen "
                "-t ed25519 -f KEY` and point ssh.private_key at it. Nothing was created.")
        return line

    def terraform_variables(self, recorded: dict) -> dict:
        variables = {**super().terraform_variables(recorded),
                     "key_pair_suffix": self.key_pair_suffix()}
        # the zone chosen (or checked) before the first apply, kept: another would replace the
        # subnet and every VM in it
        if "subnet_id" not in self.spec.terraform and recorded.get("availability_zone"):
            variables["availability_zone"] = recorded["availability_zone"]
        return variables

    def key_pair_suffix(self) -> str:
        """A token that makes this state's EC2 key pair name its own (two users of one account
        naming their clusters alike would otherwise replace each other's key pair); chosen once
        and kept. A cluster made before the token keeps its key pair's name (a new name would
        replace its VMs)."""
        import json
        import secrets

        path = self.state_dir / "key_pair_suffix"
        if path.exists():
            return path.read_text().strip()
        suffix = "-" + secrets.token_hex(4)
        tfstate = self.state_dir / "terraform" / "terraform.tfstate"
        try:
            resources = json.loads(tfstate.read_text()).get("resources") or []
            if any(r.get("type") == "aws_key_pair" for r in resources):
                suffix = ""
        except (OSError, ValueError):
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(suffix + "\n")
        return suffix

    def before_apply(self, progress: Progress | None) -> None:
        super().before_apply(progress)
        self._check_endpoint()
        self._check_before_creating(progress)

    def _check_before_creating(self, progress: Progress | None) -> None:
        """A route from here to the VMs' private addresses (when SSH uses them), an availability
        zone that offers the instance type (chosen, or the file's checked), and room in the
        account's vCPU quota for the VMs: refused here, before anything is created, rather than
        by RunInstances once the VPC exists, or by SSH's boot timeout."""
        from runner import aws_capacity as cap
        from runner import state
        from runner.ephemeral.aws import file_environment

        tf = self.spec.terraform
        say = Say(progress, logger)
        itype = str(tf.get("instance_type", DEFAULT_INSTANCE_TYPE))
        region = str(tf.get("region", ""))
        where = f"{self.spec.source}: terraform."
        recorded = state.read(self.state_dir)
        try:
            import boto3

            with file_environment(self.spec.environment):
                session = boto3.session.Session(region_name=region or None)
                ec2, quotas = session.client("ec2"), session.client("service-quotas")
                self._check_route(ec2, where)
                if tf.get("subnet_id"):
                    zone = cap.subnet_zone(ec2, str(tf["subnet_id"]))
                    cap.choose_zone(cap.offered_zones(ec2, [itype]), zone,
                                    f"{where}subnet_id ({tf['subnet_id']}, in {zone})", region)
                else:
                    wanted = tf.get("availability_zone") or recorded.get("availability_zone") \
                        or self._zone_in_terraform_state()
                    zone = cap.choose_zone(cap.offered_zones(ec2, [itype]), wanted,
                                           f"{where}availability_zone", region)
                    if zone != recorded.get("availability_zone"):
                        say(f"aws: availability zone {zone}"
                            + ("" if wanted else f" (the first of {region} that offers {itype}; "
                               "set terraform.availability_zone to choose)"))
                        state.update(self.state_dir, availability_zone=zone)
                unchecked = cap.check_quota(
                    ec2, quotas, {"on-demand": {itype: len(self.node_names())}},
                    f"{where}instance_type/worker_count",
                    exclude={"creator": "daskfleet", "cluster": self.spec.name})
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - botocore's: name the call, as Terraform would fail
            from runner.ephemeral.aws import error_code

            if error_code(e) not in DENIED:
                raise ProvisionError(f"{self.spec.source}: checking the zone and quota for "
                                     f"{itype} in {region}: {type(e).__name__}: {e}. Nothing was "
                                     "created.") from e
            # a role that may not describe offerings or instances: Terraform may still work
            unchecked = [f"the zone and vCPU quota for {itype} ({error_code(e)}: {e})"]
        for what in unchecked:
            say.warning(f"WARNING: not checked before creating anything: {what}")

    def _check_route(self, ec2, where: str) -> None:
        """With use_public_ip false, SSH and Ansible dial the VMs' private addresses: this
        machine must route to the subnet other than through its default route."""
        import ipaddress

        from runner import aws_network as net

        tf = self.spec.terraform
        if self.use_public or not self.spec.ssh.require_private_route:
            return
        if tf.get("subnet_id"):
            cidr = net.subnet_cidr(ec2, str(tf["subnet_id"]))
        else:  # the module's subnet: the first /24 of vpc_cidr
            vpc = ipaddress.ip_network(str(tf.get("vpc_cidr", DEFAULT_VPC_CIDR)), strict=False)
            cidr = str(next(vpc.subnets(new_prefix=24)) if vpc.prefixlen <= 24 else vpc)
        problem = net.check_private_route(cidr)
        if problem:
            raise ConfigError(
                f"{where}use_public_ip is false, so SSH dials the VMs' private addresses in "
                f"{cidr}, and {problem}. Set terraform.use_public_ip: true (SSH from admin_cidr "
                "to public addresses), or run from inside the VPC (a bastion, a CI runner there) "
                "or over a VPN or peering that routes it (or set ssh.require_private_route: "
                "false if your default gateway routes the VPC). Nothing was created.")

    def _zone_in_terraform_state(self) -> str | None:
        """The zone of a subnet the module already made (a cluster from before zones were
        chosen keeps its own)."""
        import json

        tfstate = self.state_dir / "terraform" / "terraform.tfstate"
        try:
            for r in json.loads(tfstate.read_text()).get("resources") or []:
                if r.get("type") == "aws_subnet" and r.get("mode") == "managed":
                    return r["instances"][0]["attributes"]["availability_zone"]
        except (OSError, ValueError, KeyError, IndexError):
            pass
        return None

    def _check_endpoint(self) -> None:
        """An endpoint override that does not answer fails here, at once, rather than after the
        AWS provider's minutes of retries."""
        import os
        import socket
        from urllib.parse import urlsplit

        key = "AWS_ENDPOINT_URL"
        url = self.spec.environment.get(key) or os.environ.get(key)
        if not url:
            return
        where = f"environment.{key} in {self.spec.source}" if key in self.spec.environment \
            else f"{key} in your shell"
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=5).close()
        except OSError as e:
            hint = (" (the emulated EC2: run `daskfleet lab up --cloud aws` first)"
                    if parts.hostname in ("127.0.0.1", "localhost") else "")
            raise ProvisionError(f"the EC2 API endpoint {url} ({where}) does not answer: {e}"
                                 f"{hint}. Nothing was created.") from e


class GCP(Cloud):
    name = module = "gcp"
    default_user = "daskfleet"
    image_var = "image"


class Azure(Cloud):
    name = module = "azure"
    default_user = "daskfleet"  # Azure refuses root and admin
    image_var = "image"
