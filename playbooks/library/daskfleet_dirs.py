#!/usr/bin/python
"""Ensure several folders exist with their owner, group and mode, in one module run.

The roles' folder lists were one ``ansible.builtin.file`` run per folder, and every module run
costs the node a Python start and the compile of Ansible's module code (about 0.3 s of CPU on a
lab host): a dozen folders per node were a third of a converge that changes nothing. Each
folder here is what ``file: state=directory`` makes of it (missing parents made with mode 0755,
root's); check mode reports without changing anything.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: daskfleet_dirs
short_description: Ensure folders exist with their owner, group and mode, in one module run
description:
  - Like M(ansible.builtin.file) with C(state=directory) for each folder of I(dirs), in one run.
options:
  dirs:
    description: The folders, in order (a parent before its children).
    type: list
    elements: dict
    required: true
    suboptions:
      path: {description: Absolute path of the folder., type: path, required: true}
      mode: {description: Its mode, an octal string such as C("0750")., type: str, required: true}
      owner: {description: Its owner (user name)., type: str, default: root}
      group: {description: Its group; left as it is when not set (root's on a new folder)., type: str}
author: daskfleet
"""

EXAMPLES = r"""
- name: Ensure the node's folders exist
  daskfleet_dirs:
    dirs:
      - {path: /etc/daskfleet, mode: "0755"}
      - {path: /var/lib/daskfleet/clusters/lab, mode: "0700", owner: dask-lab}
"""

RETURN = r"""
changed_paths:
  description: The folders made or changed (or that would be, in check mode), with what changed.
  type: list
  elements: str
  returned: always
"""

import errno
import grp
import os
import pwd
import stat

from ansible.module_utils.basic import AnsibleModule


def _ids(item: dict) -> tuple[int, int]:
    """The folder's uid and gid; gid -1 (keep it) when no group is given, as file: does."""
    owner = item.get("owner") or "root"
    try:
        user = pwd.getpwnam(owner)
    except KeyError:
        raise ValueError(f"{item['path']}: owner {owner!r} is not a user on this node") from None
    if not item.get("group"):
        return user.pw_uid, -1
    try:
        return user.pw_uid, grp.getgrnam(item["group"]).gr_gid
    except KeyError:
        raise ValueError(f"{item['path']}: group {item['group']!r} is not a group on this node") \
            from None


def ensure(item: dict, check: bool) -> list[str]:
    """What had to change for ITEM's folder (made, owner, mode), changed unless CHECK.

    A symlink where a folder should be is refused, never followed: some of these folders sit in
    a folder the cluster's unprivileged user owns, who could otherwise point one at /etc and
    have the next converge hand it over. Owner and mode are set through the opened folder, so it
    cannot be swapped between the check and the change."""
    path, changes = item["path"], []
    try:
        mode = int(item["mode"], 8)
    except ValueError:
        raise ValueError(f"{path}: mode {item['mode']!r} is not an octal mode such as '0750'") \
            from None
    uid, gid = _ids(item)
    if not os.path.lexists(path):
        changes.append("made")
        if check:
            return changes
        os.makedirs(path, mode=0o755, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:  # a link (ELOOP) or another kind of file (ENOTDIR); others as they are
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        kind = "a symlink" if os.path.islink(path) else "not a folder"
        raise ValueError(f"{path} exists and is {kind}: remove it and run again") from None
    made = bool(changes)
    try:
        st = os.fstat(fd)
        if st.st_uid != uid or gid not in (-1, st.st_gid):
            if not check:
                os.fchown(fd, uid, gid)
            if not made:
                changes.append("owner")
        if made or stat.S_IMODE(st.st_mode) != mode:
            if not check:
                os.fchmod(fd, mode)  # after chown, which may clear setgid bits
            if not made:
                changes.append("mode")
    finally:
        os.close(fd)
    return changes


def main() -> None:
    module = AnsibleModule(
        argument_spec={"dirs": {"type": "list", "elements": "dict", "required": True, "options": {
            "path": {"type": "path", "required": True},
            "mode": {"type": "str", "required": True},
            "owner": {"type": "str", "default": "root"},
            "group": {"type": "str"}}}},
        supports_check_mode=True)
    changed_paths = []
    for item in module.params["dirs"]:
        try:
            changes = ensure(item, module.check_mode)
        except (ValueError, OSError) as e:
            module.fail_json(msg=str(e), changed_paths=changed_paths)
        if changes:
            changed_paths.append(f"{item['path']} ({', '.join(changes)})")
    module.exit_json(changed=bool(changed_paths), changed_paths=changed_paths)


if __name__ == "__main__":
    main()
