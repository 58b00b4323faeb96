"""user_data -> what the emulated cloud's first boot does (pure: no host is booted)."""

from __future__ import annotations

import base64
import gzip
import subprocess

import pytest

from runner.lab.cloudinit import File, UserDataError, plan_user_data, render_plan

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeypair user@laptop"
HOST_PRIV = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
HOST_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHost host"
BLOB = base64.b64encode(bytes([0, 1])).decode()
INDENTED_PRIV = "".join("    " + line + "\n" for line in HOST_PRIV.splitlines())


def test_no_user_data_gives_the_default_user_with_the_key_pair_and_generated_host_keys():
    plan = plan_user_data(None, "admin", [KEY])
    assert [(u.name, u.keys, u.sudo) for u in plan.users] == [
        ("admin", (KEY,), ("ALL=(ALL) NOPASSWD:ALL",))]
    assert plan.host_keys == {} and plan.delete_host_keys
    assert "ed25519" in plan.genkeytypes and not plan.files and not plan.commands


def test_cloud_config_host_keys_files_and_commands():
    text = f"""#cloud-config
ssh_keys:
  ed25519_private: |
{INDENTED_PRIV}  ed25519_public: {HOST_PUB}
write_files:
  - path: /etc/app/conf
    content: hello
    permissions: '0640'
    owner: admin:admin
  - path: /etc/app/blob
    encoding: b64
    content: {BLOB}
    defer: true
runcmd:
  - echo hi > /tmp/x
  - [touch, /tmp/a b]
packages: [htop]
"""
    plan = plan_user_data(text, "admin", [KEY])
    assert plan.host_keys["ed25519"] == (HOST_PRIV, HOST_PUB)
    assert plan.files == [
        File("/etc/app/conf", b"hello", 0o640, "admin:admin"),
        File("/etc/app/blob", b"\x00\x01", 0o644, "root:root", defer=True),
    ]
    assert plan.commands == ["echo hi > /tmp/x", ["touch", "/tmp/a b"]]
    assert plan.ignored == ["key 'packages'"]
    assert [u.name for u in plan.users] == ["admin"]  # no `users`: the default user only


def test_users_default_and_extra_user():
    plan = plan_user_data("""#cloud-config
ssh_authorized_keys: [ssh-ed25519 AAAAextra extra]
users:
  - default
  - name: ops
    sudo: ALL=(ALL) NOPASSWD:ALL
    groups: adm, sudo
    shell: /bin/sh
    ssh_authorized_keys: [ssh-ed25519 AAAAops ops]
""", "admin", [KEY])
    admin, ops = plan.users
    assert admin.keys == (KEY, "ssh-ed25519 AAAAextra extra")
    assert (ops.name, ops.groups, ops.shell, ops.sudo, ops.keys) == (
        "ops", ("adm", "sudo"), "/bin/sh", ("ALL=(ALL) NOPASSWD:ALL",), ("ssh-ed25519 AAAAops ops",))


def test_users_without_default_leave_the_image_user_out():
    plan = plan_user_data("#cloud-config\nusers:\n  - name: ops\n", "admin", [KEY])
    assert [u.name for u in plan.users] == ["ops"] and plan.users[0].sudo == ()


def test_shell_script_user_data_runs_as_is_and_gzip_is_undone():
    script = b"#!/bin/sh\necho hi\n"
    plan = plan_user_data(gzip.compress(script), "admin", [KEY])
    assert plan.script == script and [u.name for u in plan.users] == ["admin"]
    assert "part-001" in render_plan(plan)


def test_bad_cloud_config_is_an_error():
    with pytest.raises(UserDataError):
        plan_user_data("#cloud-config\n[unclosed", "admin", [])
    with pytest.raises(UserDataError):
        plan_user_data("#cloud-config\nwrite_files: [{content: x}]\n", "admin", [])


def test_rendered_script_is_valid_sh_and_writes_keys_with_their_modes():
    plan = plan_user_data(f"#cloud-config\nssh_deletekeys: false\nssh_keys:\n  ed25519_private: |\n"
                          f"    x\n  ed25519_public: {HOST_PUB}\n", "admin", [KEY])
    script = render_plan(plan)
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    assert "rm -f /etc/ssh/ssh_host_" not in script  # ssh_deletekeys: false
    assert "chmod 0600 /etc/ssh/ssh_host_ed25519_key\n" in script
    assert "chmod 0644 /etc/ssh/ssh_host_ed25519_key.pub\n" in script
    assert "ssh-keygen -q" not in script  # keys given: none generated
    assert "/etc/sudoers.d/90-cloud-init-admin" in script and "chmod 0440" in script
