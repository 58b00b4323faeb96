"""What a lab host boots with, as text: systemd-nspawn's arguments (systemd as the host's PID 1,
a private /etc and folders, the control machine's environments masked), the lab's two units in
the host's /etc (a boot step: hosts file, login user and key, user_data at first boot; then its
sshd) and its sshd_config; ``user_setup_script`` is the emulated cloud-init's too.

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
# This machine's folders a host sees with its own writes over them, kept across its reboots
# (folder -> the upper folder in the host's folder): its /etc, and /usr/local, where the playbook
# installs the node's scripts; elsewhere a reboot drops what the host wrote, which a real disk keeps
PERSISTENT_OVERLAYS = {"/etc": "etc-upper", "/usr/local": "usr-local-upper"}
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
# The lab's own units on every host (written into its /etc before boot).
INIT_UNIT = "daskfleet-lab-init.service"
SSHD_UNIT = "daskfleet-lab-sshd.service"
POWER_UNIT = "daskfleet-lab-power.service"  # an emulated instance's only
# Written by the power unit as the host's systemd shuts it down (what the hypervisor sees of a
# shutdown from inside; a crash writes neither): runner.lab.instances acts on them.
SHUTDOWN_MARKER = "/var/lib/cloud/instance/shutdown-requested"
REBOOT_MARKER = "/var/lib/cloud/instance/reboot-requested"


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
        "PidFile /run/sshd.pid",
        f"PermitRootLogin {'prohibit-password' if root else 'no'}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "UsePAM no",
        # MaxSessions and MaxStartups stay at Debian's defaults (10; 10:30:100): a real machine's.
        "Subsystem sftp internal-sftp",
        "",
    ])


def lab_init_script(spec: BootSpec) -> str:
    """The host's boot step before its sshd (a oneshot unit, as cloud-init's are): /etc/hosts,
    the lab's login user and key, and user_data once, at first boot."""
    q = shlex.quote
    hdir = spec.hdir
    lines = [
        "set -e",
        f"printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\t%s\\n::1\\tlocalhost ip6-localhost "
        f"ip6-loopback\\n' {q(spec.hostname)} > /etc/hosts",
        f"mkdir -p {LAB_KEYS_DIR} && chmod 0755 {LAB_KEYS_DIR}",
    ]
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
    return "\n".join(lines) + "\n"


def lab_units(spec: BootSpec, init: Path, sshd_config: Path) -> dict[str, str]:
    """The host's own units, enabled in its /etc: the boot step, then its sshd. Both keep what
    they started when they end (KillMode=process, as cloud-init's and Debian's ssh.service do):
    user_data's background processes, and whatever an SSH session left running."""
    units = {POWER_UNIT: power_unit()} if spec.power_unit else {}
    return units | {
        INIT_UNIT: "\n".join([
            "[Unit]",
            "Description=daskfleet lab: hosts file, login user and key, first-boot user_data",
            "After=local-fs.target",
            "Before=" + SSHD_UNIT,
            # user_data may schedule a shutdown (`shutdown -P +MINUTES`), which logind does
            "After=dbus.socket systemd-logind.service",
            "[Service]",
            "Type=oneshot",
            "RemainAfterExit=yes",
            "KillMode=process",
            "TimeoutStartSec=infinity",
            f"ExecStart=/bin/sh {init}",
            "StandardOutput=append:/var/log/daskfleet-lab-init.log",
            "StandardError=append:/var/log/daskfleet-lab-init.log",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]),
        SSHD_UNIT: "\n".join([
            "[Unit]",
            "Description=daskfleet lab: the host's OpenSSH server",
            "After=network.target " + INIT_UNIT,
            "Wants=" + INIT_UNIT,
            "[Service]",
            f"ExecStartPre={SSHD} -t -f {sshd_config}",
            f"ExecStart={SSHD} -D -e -f {sshd_config}",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "KillMode=process",
            "Restart=on-failure",
            "RuntimeDirectory=sshd",
            "RuntimeDirectoryMode=0755",
            "StandardError=append:/var/log/sshd.log",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]),
    }


def power_unit() -> str:
    """Stopped as the host goes down (after every unit ordered after it, before its disk is
    unmounted): records whether systemd is powering it off or rebooting it."""
    return "\n".join([
        "[Unit]",
        "Description=daskfleet lab: tells the instance controller of a power-off or a reboot",
        f"RequiresMountsFor={os.path.dirname(os.path.dirname(SHUTDOWN_MARKER))}",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        "ExecStart=/bin/true",
        # ($$: a literal $ in a unit file)
        "ExecStop=/bin/sh -c 'if systemctl list-jobs --no-legend | grep -q -e reboot.target "
        f"-e kexec.target; then m={REBOOT_MARKER}; else m={SHUTDOWN_MARKER}; fi; "
        "mkdir -p \"$${m%/*}\" && date -u +%%FT%%TZ > \"$$m\"'",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def nspawn_args(spec: BootSpec, root: str) -> list[str]:
    """systemd-nspawn booting systemd as the host's PID 1, over ROOT (a bind of this machine's
    /, read-only under a tmpfs overlay: what the host writes outside its own folders is gone at
    its next boot and never reaches this machine). /etc and /usr/local are persistent
    overlays of this machine's; its disk-backed folders are bound in; /root and the checkout are masked."""
    hdir = spec.hdir
    args = [
        "systemd-nspawn", "-D", root, "--volatile=overlay", "--boot", "--quiet",
        "--keep-unit", "--register=no", "--console=read-only",
        "--setenv=SYSTEMD_COLORS=0",  # its boot messages go to init.log: plain text
        # a VM's root manages its own firewall (the metadata guard's nftables) and locks memory;
        # nspawn's default set lacks both. Not all: the clock and modules are this machine's.
        "--capability=CAP_NET_ADMIN,CAP_IPC_LOCK",
        f"--machine={spec.netns}", f"--hostname={spec.hostname}",
        f"--network-namespace-path=/run/netns/{spec.netns}",
        *(f"--overlay={d}:{hdir / upper}:{d}" for d, upper in PERSISTENT_OVERLAYS.items()),
        # the lab's folder masked (its key, the other hosts' disks: a real machine sees neither)
        # but for the host's own boot files (init, sshd_config, keys, user_data), read-only
        f"--tmpfs={hdir.parent.parent}:mode=0700",
        f"--bind-ro={hdir}",
        *(f"--bind-ro={d}" for d in spec.shared_ro),
    ]
    args += [f"--bind={hdir / 'fs' / d}:/{d}" for d in (*PRIVATE_DIRS, *spec.extra_private_dirs)]
    args += [f"--tmpfs={d}:mode=0700" for d in (*MASKED_DIRS, str(project_root()))]
    return args


def shutdown_requested(hdir: Path) -> str | None:
    """What the instance's own shutdown asked for, as its power unit recorded it while the
    host went down: "poweroff" (poweroff, halt, `shutdown` now or when its time came),
    "reboot", or None (no shutdown: running, or crashed)."""
    for what, marker in (("poweroff", SHUTDOWN_MARKER), ("reboot", REBOOT_MARKER)):
        if (hdir / "fs" / marker.lstrip("/")).exists():
            return what
    return None


def clear_shutdown(hdir: Path) -> None:
    for marker in (SHUTDOWN_MARKER, REBOOT_MARKER):
        (hdir / "fs" / marker.lstrip("/")).unlink(missing_ok=True)
