"""The local lab: hosts made of Linux namespaces, each with its own address, hostname, processes,
private folders and sshd, so everything daskfleet does over SSH can be run for real on one machine."""

from runner.lab.lab import Lab
from runner.lab.machine import LabHost

__all__ = ["Lab", "LabHost"]
