"""Create, inspect and remove the lab's hosts.

A host is a network namespace on a bridge (198.18.N.0/24 in lab N) in which systemd-nspawn boots
systemd as the host's PID 1, as a real machine's init: it starts the host's enabled units at boot
(its sshd, and what the playbooks enable), restarts them as their units say, and killing every
process in the namespace is a machine crash. The host gets a private, persistent /etc (an overlay on the
machine's /etc), private disk-backed folders (/home, /var/log, /var/lib/daskfleet, ...), a fresh
/run and root overlay at every boot, and /root and the project checkout masked with empty tmpfs
mounts, so nothing from the control machine's environments leaks onto the host.

This module is the lab as a whole (`Lab`: its record, hosts, faults, teardown); a new lab's hosts
are made by runner.lab.lab_hosts, its object store started by runner.lab.lab_store. The
primitives of one host (`boot_host`, the one host-creation path, used by the emulated cloud's
instance hosts too) live in runner.lab.machine, below the rest of the lab.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from runner.errors import LabError
from runner.lab import lab_hosts, lab_store
from runner.lab.addresses import INDEX, NETNS_PREFIX, OWNS_CLOUD, VETH_PREFIX
from runner.lab.cut import CUT_TABLE, control_cut_ruleset, cut_ruleset, has_cut_table
from runner.lab.machine import (
    BRIDGE,
    DEFAULT_STATE_DIR,
    MAX_HOSTS,
    READY_TIMEOUT_S,
    LabHost,
    boot_again,
    check_prerequisites,
    check_user_name,
    kill_netns_processes,
    link_exists,
    links_with_prefix,
    netns_with_prefix,
    nft_apply,
    port_open,
    port_open_in,
    read_instance_hosts,
    remove_host_cgroups,
    run,
    stop_host,
)
from runner.lab.uplink import UPLINK_OFF, parse_uplink, read_uplink, shape_uplink
from runner.log import Progress, Say

logger = logging.getLogger(__name__)

CONTROL = "control"  # `lab cut control`: the control machine's own link


class Lab:
    """The lab recorded in `state_dir/lab.json`."""

    def __init__(self, state_dir: Path | str | None = None):
        self.state_dir = Path(state_dir or os.environ.get("DASKFLEET_LAB_DIR") or DEFAULT_STATE_DIR)
        # what `up` was asked for, read while it makes the lab
        self.region = "us-east-1"
        self.want_store = False
        self.spawned_store: dict | None = None  # a store `up` started with new hosts

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
    def read_record(self) -> dict | None:
        if not self.record.exists():
            return None
        return json.loads(self.record.read_text())

    def write_record(self, data: dict) -> None:
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.record)

    def hosts(self) -> list[LabHost]:
        """The plain lab hosts (never the cloud's instance hosts: see `instance_hosts`)."""
        data = self.read_record()
        return [LabHost(**h) for h in data["hosts"]] if data else []

    def instance_hosts(self) -> list[LabHost]:
        """The emulated cloud's running instances, as the instance controller booted them."""
        return read_instance_hosts(self.cloud_dir)

    def cloud(self) -> dict | None:
        data = self.read_record()
        return data.get("cloud") if data else None

    def host_alive(self, host: LabHost) -> bool:
        if not Path(f"/run/netns/{host.netns}").exists():
            return False
        return self._answers(host, timeout=1.0)

    @staticmethod
    def _answers(host: LabHost, timeout: float) -> bool:
        """Its sshd answers: from this machine for a plain host, from inside the host for an
        instance (this machine is outside the VPC: only public addresses reach it)."""
        if host.instance_id:
            return port_open_in(host.netns, host.address, host.port, timeout)
        return port_open(host.address, host.port, timeout=timeout)

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
            "object_store": lab_store.store_status(self),
            "uplink": read_uplink(),
        }

    # -- bring-up ---------------------------------------------------------------------------
    def up(self, n_hosts: int | None = 3, progress: Progress | None = None,
           user: str | None = None,
           cloud: str | None = None, region: str = "us-east-1",
           object_store: bool = False, uplink: str | None = None) -> list[LabHost]:
        """Make the lab (or reuse the running one). ``uplink`` (tc's words: 50mbit) shapes what
        this machine sends into the lab, as a laptop's uplink; ``off`` removes the shaping."""
        say = Say(progress, logger)
        if cloud and not OWNS_CLOUD:
            raise LabError(f"lab: the emulated EC2 runs in lab 0 only (one VPC range, internet and "
                           f"API port per machine), and this is lab {INDEX} "
                           "(DASKFLEET_LAB_INDEX); unset it for --cloud aws.")
        check_prerequisites()
        if uplink is not None and uplink.strip().lower() != UPLINK_OFF:
            parse_uplink(uplink)  # refused before anything is made
        self.region = region
        self.want_store = object_store
        explicit = n_hosts is not None
        n_hosts = 3 if n_hosts is None else n_hosts
        low = 0 if cloud else 1
        if not low <= n_hosts <= MAX_HOSTS:
            raise LabError(f"lab: --hosts must be between {low} and {MAX_HOSTS}, not {n_hosts}.")
        if user is not None:
            check_user_name(user)
        if cloud not in (None, "aws"):
            raise LabError(f"lab: --cloud {cloud!r} is not emulated; the lab emulates `aws` only.")
        data = self.read_record()
        if data is not None:
            # no --hosts: the running lab as it is, whatever its size (e.g. --object-store added)
            hosts = self._reuse(data, n_hosts if explicit else None, user, progress)
        else:
            hosts = lab_hosts.fresh_hosts(self, n_hosts, user or "root", progress)
        if uplink is not None:
            shaped = shape_uplink(uplink)
            say(f"lab: this machine's uplink to the lab shaped to "
                f"{shaped['rate_bits_per_s'] / 1e6:g} Mbit/s" if shaped
                else "lab: this machine's uplink to the lab is not shaped")
        lab_store.start_object_store(self, region, progress)
        if cloud:
            from runner.lab.ec2 import start_cloud

            running = self.cloud()
            if running:
                from runner.lab.ec2 import cloud_alive

                if not cloud_alive(running):
                    raise LabError(
                        f"lab: the emulated cloud recorded in {self.record} is not running (its "
                        "API server or instance controller died); run `daskfleet lab down` and "
                        "`daskfleet lab up --cloud aws` again.")
                say(f"lab: reusing the running emulated cloud at {running['endpoint']}")
            else:
                try:
                    start_cloud(self, region, progress)
                except BaseException:
                    if data is None:  # we made the lab: remove it all
                        say("lab: bring-up failed; removing what was created")
                        self.down(progress=lambda *_: None)
                    else:  # keep the running lab, drop the half-started cloud
                        from runner.lab.ec2 import stop_cloud

                        stop_cloud(self)
                        self.write_record({**(self.read_record() or data), "cloud": None})
                    raise
        return hosts

    def object_store(self) -> dict | None:
        data = self.read_record()
        return data.get("object_store") if data else None

    def _reuse(self, data: dict, n_hosts: int | None, user: str | None,
               progress: Progress | None) -> list[LabHost]:
        say = Say(progress, logger)
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
        say(f"lab: reusing the running lab ({len(existing)} hosts) in {self.state_dir}")
        return existing

    # -- faults -----------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """Crash a host: every process in it dies at once (its systemd, PID 1, included)."""
        host = self._get(name)
        kill_netns_processes(host.netns)

    def restart(self, name: str, progress: Progress | None = None) -> None:
        """Boot a host again (after `kill`, or to reboot it): same address, host key and disks;
        no process survives, as after a real reboot. Instance hosts reboot with their boot spec
        (their user_data does not run again)."""
        say = Say(progress, logger)
        check_prerequisites()
        host = self._get(name)
        if host.instance_id:
            boot_again(self.host_dir(host.name))
        else:
            stop_host(host.netns, host.veth)
            lab_hosts.create_host(self, host)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._answers(host, timeout=0.5):
            if time.monotonic() > deadline:
                raise LabError(f"lab: {name} did not come back within {READY_TIMEOUT_S:.0f}s; "
                               f"see {self.host_dir(name) / 'init.log'}.")
            time.sleep(0.1)
        say(f"lab: {name} restarted ({host.address})")

    def cut(self, name: str) -> None:
        """Cut the host's link: every packet in or out of it is dropped (loopback excepted), its
        processes keep running. Peers see silence, not a refusal: their connections time out.
        ``control``: this machine's own link to the lab (the hosts keep talking to each other)."""
        if name == CONTROL:
            run(["nft", "-f", "-"], input=control_cut_ruleset())
            return
        host = self._get(name)
        self._check_running(host, "cut")
        nft_apply(host.netns, cut_ruleset())

    def heal(self, name: str) -> bool:
        """Undo `cut`; returns whether the link was cut. Connections that outlived the cut go on
        (TCP retransmits); those that timed out meanwhile are gone."""
        if name == CONTROL:
            if not has_cut_table(run(["nft", "list", "tables"], check=False).stdout):
                return False
            run(["nft", "delete", "table", "inet", CUT_TABLE])
            return True
        host = self._get(name)
        self._check_running(host, "heal")
        if not self.is_cut(host):
            return False
        run(["ip", "netns", "exec", host.netns, "nft", "delete", "table", "inet", CUT_TABLE])
        return True

    def is_cut(self, host: LabHost) -> bool:
        if not Path(f"/run/netns/{host.netns}").exists():
            return False
        out = run(["ip", "netns", "exec", host.netns, "nft", "list", "tables"], check=False).stdout
        return has_cut_table(out)

    def _check_running(self, host: LabHost, verb: str) -> None:
        if not Path(f"/run/netns/{host.netns}").exists():
            raise LabError(f"lab: {host.name} is not running (no namespace {host.netns}); "
                           f"nothing to {verb}. Boot it with `daskfleet lab restart {host.name}`.")
        if shutil.which("nft") is None:
            raise LabError("lab: cut and heal need nftables; install it with "
                           "`apt-get install -y nftables`.")

    # -- teardown ---------------------------------------------------------------------------
    def down(self, progress: Progress | None = None) -> None:
        say = Say(progress, logger)
        check_prerequisites()
        from runner.lab.ec2 import stop_cloud

        # The cloud first: its controller must not boot instance hosts while we remove them.
        stopped_cloud = stop_cloud(self)
        hosts = self.hosts()
        # Also sweep namespaces by prefix: a crashed `lab up` (or controller) may not have
        # recorded them all. Deleting a namespace deletes the veth end inside it, and the pair.
        # (the emulated cloud's, dfec2-/dfe, only from lab 0, the one that runs it: another
        # lab's `down` must not take it from under lab 0)
        names = {h.netns for h in hosts} | set(netns_with_prefix(NETNS_PREFIX)) \
            | (set(netns_with_prefix("dfec2-")) if OWNS_CLOUD else set())
        for ns in sorted(names):
            kill_netns_processes(ns)
            run(["ip", "netns", "del", ns], check=False)
            remove_host_cgroups(ns)
        prefixes = (VETH_PREFIX, "dfe") if OWNS_CLOUD else (VETH_PREFIX,)
        for link in {h.veth for h in hosts} | set(links_with_prefix(prefixes)):
            run(["ip", "link", "del", link], check=False)
        if link_exists(BRIDGE):
            run(["ip", "link", "del", BRIDGE], check=False)
        if shutil.which("nft"):  # a `lab cut control` left in place
            run(["nft", "delete", "table", "inet", CUT_TABLE], check=False)
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        what = [f"{len(names)} hosts removed"] if names else []
        what += ["emulated cloud stopped"] if stopped_cloud else []
        say(f"lab: down ({', '.join(what)})" if what else "lab: nothing to remove")

    def _get(self, name: str) -> LabHost:
        every = self.hosts() + (self.instance_hosts() if self.cloud() else [])
        for h in every:
            if h.name == name:
                return h
        known = ", ".join(h.name for h in every) or "none: run `daskfleet lab up`"
        raise LabError(f"lab: no host named {name!r} (hosts: {known}).")
