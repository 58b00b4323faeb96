"""Run playbooks/site.yml against a generated inventory and summarise Ansible's recap."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import ProvisionError
from runner.log import Progress

logger = logging.getLogger(__name__)

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass(frozen=True)
class PlaybookResult:
    changed: int
    per_host: dict[str, dict[str, int]]
    output: str
    unreachable: list[str] = field(default_factory=list)


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    return {m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]),
                   "failed": int(m[5])} for m in RECAP.finditer(output)}


def _binary() -> str:
    exe = Path(sys.executable).parent / "ansible-playbook"
    return str(exe) if exe.exists() else "ansible-playbook"


def run_playbook(inventory: Path, extra_vars: dict, log: Path, check: bool = False,
                 playbook: str = "site.yml", tolerate_unreachable: frozenset[str] = frozenset(),
                 progress: Progress | None = None, limit: list[str] | None = None,
                 tags: list[str] | None = None) -> PlaybookResult:
    """Run the playbook; raise ProvisionError naming the hosts that failed. Hosts named in
    tolerate_unreachable may be unreachable (a degraded cluster) without failing the run. Each
    task's name goes to ``progress`` as it starts; without it, to the debug log only. ``tags``:
    only the tasks tagged so (`tls`: a node's TLS files alone)."""
    said = progress if progress is not None else logger.debug
    log.parent.mkdir(parents=True, exist_ok=True)
    vars_file = log.with_suffix(".vars.json")
    vars_file.write_text(json.dumps(extra_vars))
    args = [_binary(), "-i", str(inventory), "-e", f"@{vars_file}", str(PLAYBOOKS / playbook)]
    if check:
        args.append("--check")
    if limit is not None:
        args += ["--limit", ",".join(limit)]
    if tags:
        args += ["--tags", ",".join(tags)]
    logger.debug(f"running {' '.join(args)}")
    env = {**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "PYTHONUNBUFFERED": "1"}
    # Streamed, so a long install shows which task it is on (the full output goes to the log).
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=PLAYBOOKS)
    assert proc.stdout is not None, "stdout=PIPE"
    lines = []
    for line in proc.stdout:
        lines.append(line)
        task = re.match(r"^TASK \[(.+?)\]", line)
        if task:
            said(f"ansible: {task[1]}")
    proc.wait()
    output = "".join(lines)
    log.write_text(output)
    per_host = parse_recap(output)
    unreachable = sorted(h for h, c in per_host.items() if c["unreachable"])
    only_tolerated = (per_host and not any(c["failed"] for c in per_host.values())
                      and set(unreachable) <= tolerate_unreachable)
    if proc.returncode != 0 and not only_tolerated:
        raise ProvisionError(_failure_message(output, per_host, log))
    return PlaybookResult(sum(h["changed"] for h in per_host.values()), per_host, output,
                          unreachable)


def _failure_message(output: str, per_host: dict, log: Path) -> str:
    bad = [h for h, c in per_host.items() if c["failed"] or c["unreachable"]]
    msgs = []
    for m in re.finditer(r"^(fatal|failed): \[([^\]]+)\].*?=> (\{.*?\})\s*$", output, re.M):
        try:
            msg = json.loads(m[3]).get("msg", m[3])
        except json.JSONDecodeError:
            msg = m[3]
        msgs.append(f"  {m[2]}: {str(msg).strip()[:600]}")
    detail = "\n".join(msgs) or "\n".join(output.strip().splitlines()[-15:])
    hosts = ", ".join(bad) or "(see log)"
    return (f"ansible: playbook failed on {hosts}:\n{detail}\nFull output: {log}. Fix the cause "
            "and run `daskfleet up` again: finished steps are not redone.")
