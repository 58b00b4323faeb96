"""CLI commands of the local lab: `daskfleet lab up|down|status|kill|restart|cut|heal|vpn`.

runner.cli calls ``add_commands(sub)``; output as in runner.cli: the lab's status is data
(print), the work's progress is logged."""

from __future__ import annotations

import json
import logging

logger = logging.getLogger("runner.cli")


def cmd_lab(args) -> int:
    from runner.lab import Lab
    from runner.lab.machine import host_state

    lab = Lab()
    if args.lab_cmd == "up":
        lab.up(args.hosts, user=args.user, cloud=args.cloud, region=args.region,
               object_store=args.object_store, uplink=args.uplink)
        return 0
    if args.lab_cmd == "down":
        lab.down()
        return 0
    if args.lab_cmd == "restart":
        lab.restart(args.host)
        return 0
    if args.lab_cmd == "kill":
        lab.kill(args.host)
        logger.info(f"lab: {args.host} crashed (every process on it killed)")
        return 0
    if args.lab_cmd == "cut":
        lab.cut(args.host)
        logger.info(f"lab: {args.host}'s link is cut (every packet in or out dropped; its "
                    f"processes keep running); `daskfleet lab heal {args.host}` restores it")
        return 0
    if args.lab_cmd == "vpn":
        from runner.lab import vpn

        if args.off:
            if not vpn.disconnect(lab):
                logger.info("lab: no VPN was connected")
        elif not args.subnet:
            from runner.errors import LabError

            raise LabError("lab: `daskfleet lab vpn` needs a SUBNET_ID (or --off).")
        else:
            vpn.connect(lab, args.subnet)
        return 0
    if args.lab_cmd == "heal":
        was_cut = lab.heal(args.host)
        logger.info(f"lab: {args.host}'s link is up again" if was_cut
                    else f"lab: {args.host}'s link was not cut; nothing to heal")
        return 0
    st = lab.status()
    if args.json:
        print(json.dumps({"hosts": st["hosts"], "cloud": st["cloud"],
                          "object_store": st["object_store"], "uplink": st["uplink"]}, indent=2))
    elif not st["hosts"] and not st["cloud"]:
        print("lab: no lab (run `daskfleet lab up`)")
    else:
        for h in st["hosts"]:
            extra = f"  instance {h['instance_id']}" if h.get("instance_id") else ""
            print(f"{h['name']:19} {h['address']:15} {h['user']:8} {host_state(h['up'], h['cut'])}{extra}")
        if st["hosts"] and st["hosts"][0]["key"]:
            print(f"key {st['hosts'][0]['key']}  known_hosts {st['hosts'][0]['known_hosts']}")
        if st["cloud"]:
            c = st["cloud"]
            print(f"cloud {c['provider']}: endpoint {c['endpoint']} region {c['region']} "
                  f"(api pid {c['api_pid']}, controller pid {c['controller_pid']}"
                  f"{'' if c['alive'] else ': NOT RUNNING'}); "
                  f"TF_CLI_CONFIG_FILE={c['terraform_rc']}")
            if c.get("vpn"):
                v = c["vpn"]
                print(f"vpn: this machine reaches {v['vpc_cidr']} from {v['address']} "
                      f"(in {v['subnet']}); `daskfleet lab vpn --off` disconnects")
        if st["object_store"]:
            o = st["object_store"]
            print(f"object store (S3): endpoint {o['endpoint']} region {o['region']}"
                  f"{'' if o['up'] else ': NOT RUNNING'}; credentials {o['credentials']}")
        if st["uplink"]:
            print(f"uplink shaped to {st['uplink']['rate_bits_per_s'] / 1e6:g} Mbit/s "
                  "(this machine -> the lab)")
    cloud_ok = st["cloud"] is None or st["cloud"]["alive"]
    store_ok = st["object_store"] is None or st["object_store"]["up"]
    return 0 if all(h["up"] for h in st["hosts"]) and cloud_ok and store_ok else 1


def add_commands(sub) -> None:
    """Add `lab` and its sub-commands to the `daskfleet` sub-command parser."""
    lab = sub.add_parser("lab", help="the local multi-host lab (network namespaces + sshd)")
    labsub = lab.add_subparsers(dest="lab_cmd", required=True)
    up = labsub.add_parser("up", help="create the lab's hosts (or reuse the running lab)")
    up.add_argument("--hosts", type=int, default=None, help="plain lab hosts (default 3)")
    up.add_argument("--user", default=None,
                    help="login user of the plain hosts (default root; non-root: passwordless sudo, "
                         "root login refused)")
    up.add_argument("--cloud", choices=["aws"], default=None,
                    help="also run an emulated EC2 (API on 127.0.0.1:4566 + instance controller)")
    up.add_argument("--region", default="us-east-1", help="the emulated cloud's region")
    up.add_argument("--object-store", action="store_true",
                    help="also run an S3 API (moto, credentials enforced) on a lab host of its "
                         "own, 198.18.0.5:9000 (198.18.N.5 in lab N: DASKFLEET_LAB_INDEX)")
    up.add_argument("--uplink", default=None, metavar="RATE",
                    help="shape what this machine sends into the lab, as a laptop's uplink "
                         "(tc's words: 50mbit, 800kbit; `off` removes it)")
    labsub.add_parser("down", help="remove every namespace, link, mount and process of the lab")
    st = labsub.add_parser("status", help="the lab's hosts")
    st.add_argument("--json", action="store_true")
    kill = labsub.add_parser("kill", help="crash a lab host (kills every process on it)")
    kill.add_argument("host")
    restart = labsub.add_parser("restart", help="boot a lab host again (same address, keys, disks)")
    restart.add_argument("host")
    cut = labsub.add_parser("cut", help="cut a lab host's link (packets dropped both ways; its "
                                        "processes keep running)")
    cut.add_argument("host", help="a lab host, or `control`: this machine's own link to the lab")
    heal = labsub.add_parser("heal", help="restore a lab host's link after `lab cut`")
    heal.add_argument("host")
    vpn = labsub.add_parser("vpn", help="reach an emulated VPC's private addresses from this "
                                        "machine, as over a client VPN (from an address in SUBNET)")
    vpn.add_argument("subnet", nargs="?", help="the subnet id (subnet-...) the VPN endpoint sits in")
    vpn.add_argument("--off", action="store_true", help="disconnect: outside every VPC again")
    lab.set_defaults(func=cmd_lab)
