"""The scripts a lab host boots with, as text: its init (a private /etc and folders, the control
machine's environments masked, its login user, user_data at first boot, the services enabled on
it, then sshd) and its sshd_config; ``user_setup_script`` is the emulated cloud-init's too.

Apart from runner.lab.machine, which writes them when it boots a host (and imports this), since
they are shell and config text rather than the namespaces, links and processes of a host.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.lab.machine import BootSpec

# Folders every host gets privately, backed by a per-host folder under the state dir (parents
# before children). /home is one of them: it masks the control machine's /home and keeps users'
# homes across reboots, as a real disk does.
PRIVATE_DIRS = ("etc/daskfleet", "opt/daskfleet", "var/lib/daskfleet", "var/lib/cloud", "var/log",
                "var/log/daskfleet", "home", "tmp")
# Paths masked with empty tmpfs mounts: the control machine's environments must not be visible.
MASKED_DIRS = ("/root",)
SSHD = "/usr/sbin/sshd"
# Where sshd looks for keys besides ~/.ssh/authorized_keys: outside any home directory, in the
# host's private /etc, so the lab's key for a user never depends on its home.
LAB_KEYS_DIR = "/etc/ssh/daskfleet_authorized_keys"
# uid 1000 is taken on these machines; lab and cloud users start here.
FIRST_UID = 1500
# Written on the host's disk once user_data has run: a reboot does not run it again.
FIRST_BOOT_MARKER = "/var/lib/cloud/instance/boot-finished"
# A lab host's init starts what is here at every boot (a real machine's systemd starts its
# enabled units): playbooks/roles/dask_node puts the supervisor here on machines without systemd.
BOOT_DIR = "/etc/daskfleet/boot.d"


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


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
        f"ListenAddress {'0.0.0.0' if spec.listen_any else spec.address}",
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
    for d in (*MASKED_DIRS, str(project_root())):
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
    # The services enabled on this machine, as systemd starts enabled units at boot and starts
    # them again when they die (Restart=always): what the playbooks put in BOOT_DIR.
    lines.append(f"for s in {BOOT_DIR}/*; do [ -x \"$s\" ] || continue; "
                 "setsid sh -c 'while :; do \"$0\"; sleep 2; done' \"$s\" >/dev/null 2>&1 "
                 "< /dev/null & "
                 "done")
    lines.append(f"exec {SSHD} -D -e -f {q(str(config))}")
    return "\n".join(lines)
