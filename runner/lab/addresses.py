"""The lab's address plan (all inside 198.18.0.0/15, the benchmarking range no real network
routes): plain lab hosts and the object store on 198.18.0.0/24; the emulated EC2's VPCs in
198.19.0.0/16; its internet, where instances get public addresses and this machine has one, on
198.18.128.0/24. Shared by the hosts' primitives (runner.lab.machine), the emulated EC2
(runner.lab.ec2) and the object store (runner.lab.objectstore)."""

from __future__ import annotations

OBJECT_STORE = "198.18.0.5"
OBJECT_STORE_NETNS = "dflab-s3"  # the dflab- prefix: `lab down` sweeps it with the hosts
VPC_RANGE = "198.19.0.0/16"  # every lab VPC's private addresses (clusters/*-lab.yaml vpc_cidr)
# The lab's internet: instances' public addresses come from here (never moto's made-up ones,
# which this machine must never contact), and the control machine is INTERNET_ADDRESS on it.
PUBLIC_RANGE = "198.18.128.0/24"
INTERNET_ADDRESS = "198.18.128.1"
