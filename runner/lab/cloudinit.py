"""An instance's user_data, as cloud-init would run it at first boot (the subset the modules use).

`plan_user_data` (pure) turns user_data into a `Plan`; `render_plan` (pure) turns the plan into
the /bin/sh script the instance host runs once, as root, inside the host, before its sshd starts.
Supported: a `#!` script (run as is), or a `#cloud-config` document with ssh_keys, ssh_deletekeys,
ssh_genkeytypes, ssh_authorized_keys, users, write_files and runcmd. Other keys are logged and
ignored. The image's default user gets the key pair's key, as on EC2.
"""

from __future__ import annotations

import base64
import gzip
import shlex
from dataclasses import dataclass, field

import yaml

from runner.lab.boot_scripts import user_setup_script

KEY_TYPES = ("rsa", "ecdsa", "ed25519")
# cloud-init's default when no ssh_keys are given.
DEFAULT_GENKEYTYPES = ("rsa", "ecdsa", "ed25519")
SUPPORTED = {"ssh_keys", "ssh_deletekeys", "ssh_genkeytypes", "ssh_authorized_keys", "users",
             "write_files", "runcmd"}


@dataclass(frozen=True)
class File:
    path: str
    content: bytes
    mode: int = 0o644
    owner: str = "root:root"
    append: bool = False
    defer: bool = False  # written after the users exist (cloud-init's write_files `defer`)


@dataclass(frozen=True)
class User:
    name: str
    sudo: tuple[str, ...] = ()  # sudoers rules, e.g. "ALL=(ALL) NOPASSWD:ALL"
    groups: tuple[str, ...] = ()
    shell: str = "/bin/bash"
    keys: tuple[str, ...] = ()


@dataclass
class Plan:
    script: bytes | None = None  # a `#!` user_data, run as is after users and keys
    users: list[User] = field(default_factory=list)
    files: list[File] = field(default_factory=list)
    commands: list[str | list[str]] = field(default_factory=list)
    host_keys: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # type: (priv, pub)
    delete_host_keys: bool = True
    genkeytypes: tuple[str, ...] = DEFAULT_GENKEYTYPES
    ignored: list[str] = field(default_factory=list)  # what was not understood, for the log


class UserDataError(ValueError):
    """user_data that cloud-init would refuse too (not YAML, wrong types)."""


def decode_user_data(raw: bytes) -> bytes:
    """user_data bytes as the instance sees them (gzip is undone, as cloud-init does)."""
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def default_user(name: str, keys: list[str]) -> User:
    return User(name=name, sudo=("ALL=(ALL) NOPASSWD:ALL",), keys=tuple(keys))


def plan_user_data(raw: bytes | str | None, default_user_name: str = "admin",
                   default_keys: list[str] | None = None) -> Plan:
    data = decode_user_data(raw.encode() if isinstance(raw, str) else (raw or b""))
    keys = list(default_keys or [])
    plan = Plan()
    if data.startswith(b"#!"):
        plan.script = data
        plan.users = [default_user(default_user_name, keys)]
        return plan
    if not data.strip():
        plan.users = [default_user(default_user_name, keys)]
        return plan
    if not data.startswith(b"#cloud-config"):
        plan.ignored.append(f"user_data of an unsupported kind (first line {data.splitlines()[0][:40]!r})")
        plan.users = [default_user(default_user_name, keys)]
        return plan
    try:
        doc = yaml.safe_load(data.decode()) or {}
    except yaml.YAMLError as e:
        raise UserDataError(f"#cloud-config is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise UserDataError("#cloud-config must be a mapping")
    plan.ignored += [f"key {k!r}" for k in doc if k not in SUPPORTED]

    keys += [str(k) for k in _list(doc.get("ssh_authorized_keys"))]
    plan.users = _users(doc.get("users", ["default"]), default_user_name, keys, plan)

    for name, value in (doc.get("ssh_keys") or {}).items():
        kind, _, part = str(name).rpartition("_")
        if kind not in KEY_TYPES or part not in ("private", "public"):
            plan.ignored.append(f"ssh_keys entry {name!r}")
            continue
        priv, pub = plan.host_keys.get(kind, ("", None))
        plan.host_keys[kind] = (str(value), pub) if part == "private" else (priv, str(value))
    for kind, (priv, _pub) in list(plan.host_keys.items()):
        if not priv:
            plan.ignored.append(f"ssh_keys {kind}_public without {kind}_private")
            del plan.host_keys[kind]
    plan.delete_host_keys = bool(doc.get("ssh_deletekeys", True))
    plan.genkeytypes = tuple(str(t) for t in _list(doc.get("ssh_genkeytypes", DEFAULT_GENKEYTYPES)))

    for f in _list(doc.get("write_files")):
        if not isinstance(f, dict) or "path" not in f:
            raise UserDataError(f"write_files entry without a path: {f!r}")
        content = f.get("content", "")
        content = content.encode() if isinstance(content, str) else bytes(content)
        enc = str(f.get("encoding", "text")).lower()
        if enc in ("b64", "base64"):
            content = base64.b64decode(content)
        elif enc in ("gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
            content = gzip.decompress(base64.b64decode(content))
        elif enc in ("gz", "gzip"):
            content = gzip.decompress(content)
        perms = f.get("permissions", "0644")
        plan.files.append(File(
            path=str(f["path"]), content=content,
            mode=int(perms, 8) if isinstance(perms, str) else int(perms),
            owner=str(f.get("owner", "root:root")), append=bool(f.get("append", False)),
            defer=bool(f.get("defer", False))))

    for c in _list(doc.get("runcmd")):
        plan.commands.append([str(a) for a in c] if isinstance(c, list) else str(c))
    return plan


def _list(v) -> list:
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _users(entries, default_name: str, default_keys: list[str], plan: Plan) -> list[User]:
    users = []
    for u in _list(entries):
        if u == "default":
            users.append(default_user(default_name, default_keys))
            continue
        if isinstance(u, str):  # "name" or "a, b": users with no extras
            users += [User(name=n.strip()) for n in u.split(",") if n.strip()]
            continue
        if not isinstance(u, dict) or "name" not in u:
            raise UserDataError(f"users entry without a name: {u!r}")
        sudo = u.get("sudo")
        rules = () if sudo in (None, False) else tuple(str(r) for r in _list(sudo))
        groups = u.get("groups") or ()
        groups = tuple(g.strip() for g in groups.split(",")) if isinstance(groups, str) \
            else tuple(str(g) for g in groups)
        plan.ignored += [f"users[{u['name']}].{k}" for k in u
                         if k not in ("name", "sudo", "groups", "shell", "ssh_authorized_keys",
                                      "lock_passwd", "gecos", "primary_group")]
        users.append(User(name=str(u["name"]), sudo=rules, groups=groups,
                          shell=str(u.get("shell", "/bin/bash")),
                          keys=tuple(str(k) for k in _list(u.get("ssh_authorized_keys")))))
    return users


def _write(path: str, content: bytes, mode: int, owner: str = "root:root",
           append: bool = False) -> list[str]:
    q = shlex.quote
    b64 = base64.b64encode(content).decode()
    return [
        f"mkdir -p {q(path.rsplit('/', 1)[0] or '/')}",
        f"printf %s {b64} | base64 -d {'>>' if append else '>'} {q(path)}",
        f"chown {q(owner)} {q(path)}",
        f"chmod {mode:04o} {q(path)}",
    ]


def render_plan(plan: Plan) -> str:
    """The first-boot script for `plan`: a /bin/sh script that logs each step to stdout."""
    q = shlex.quote
    out = ["#!/bin/sh", "# user_data, as cloud-init would run it at first boot (daskfleet lab)",
           "set -u",
           # cloud-init's own PATH on Debian (not the controller's): /usr/local first, where the
           # lab's image keeps its docker stand-in (runner.lab.standin)
           "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    for what in plan.ignored:
        out.append(f"echo {q(f'cloud-init: ignored (unsupported) {what}')}")
    if plan.delete_host_keys:
        out.append("echo 'cloud-init: ssh_deletekeys' && rm -f /etc/ssh/ssh_host_*key*")
    for f in (f for f in plan.files if not f.defer):
        out.append(f"echo {q(f'cloud-init: write_files {f.path}')}")
        out += _write(f.path, f.content, f.mode, f.owner, f.append)
    for u in plan.users:
        out.append(f"echo {q(f'cloud-init: user {u.name}')}")
        out.append(user_setup_script(u.name, sudo=False, groups=u.groups, shell=u.shell))
        if u.sudo:
            rules = "".join(f"{u.name} {r}\n" for r in u.sudo).encode()
            out += _write(f"/etc/sudoers.d/90-cloud-init-{u.name}", rules, 0o440)
        if u.keys:
            home = f"$(getent passwd {q(u.name)} | cut -d: -f6)"
            keys = "".join(k.strip() + "\n" for k in u.keys).encode()
            out += [f"install -d -m 0700 -o {q(u.name)} -g {q(u.name)} \"{home}/.ssh\"",
                    f"printf %s {base64.b64encode(keys).decode()} | base64 -d "
                    f"> \"{home}/.ssh/authorized_keys\"",
                    f"chown {q(u.name)}: \"{home}/.ssh/authorized_keys\"",
                    f"chmod 0600 \"{home}/.ssh/authorized_keys\""]
    if plan.host_keys:
        for kind, (priv, pub) in plan.host_keys.items():
            path = f"/etc/ssh/ssh_host_{kind}_key"
            out.append(f"echo {q(f'cloud-init: ssh_keys {kind}')}")
            out += _write(path, priv.strip().encode() + b"\n", 0o600)
            if pub:
                out += _write(path + ".pub", pub.strip().encode() + b"\n", 0o644)
            else:
                out.append(f"ssh-keygen -y -f {path} > {path}.pub && chmod 0644 {path}.pub")
    else:
        for kind in plan.genkeytypes:
            path = f"/etc/ssh/ssh_host_{kind}_key"
            out.append(f"[ -e {path} ] || {{ echo 'cloud-init: generating {kind} host key'; "
                       f"ssh-keygen -q -t {q(kind)} -N '' -f {path}; }}")
    for f in (f for f in plan.files if f.defer):
        out.append(f"echo {q(f'cloud-init: write_files (deferred) {f.path}')}")
        out += _write(f.path, f.content, f.mode, f.owner, f.append)
    if plan.commands or plan.script:
        out.append("rc=0")
    for c in plan.commands:
        line = c if isinstance(c, str) else shlex.join(c)
        out.append(f"echo {q(f'cloud-init: runcmd {line}')}")
        # As cloud-init's runcmd script: a failing command does not stop the next ones.
        out.append(f"sh -c {q(c)} || rc=$?" if isinstance(c, str) else f"{line} || rc=$?")
    if plan.script is not None:
        part = "/var/lib/cloud/instance/scripts/part-001"
        out.append("echo 'cloud-init: running the user_data script'")
        out += _write(part, plan.script, 0o700)
        out.append(f"{part} || rc=$?")
    if plan.commands or plan.script:
        out.append("exit $rc")
    return "\n".join(out) + "\n"
