"""`make lint`'s checkov step: checkov over terraform/, offline, failing on a failed check, on a
check that crashed on a resource (neither passed nor failed: it silently checks nothing), on a
parsing error, or when nothing was checked at all. Usage: checkov_check.py PATH/TO/checkov"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(checkov: str) -> int:
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE")  # with --skip-download: no network
    result = subprocess.run(
        [checkov, "-d", str(REPO / "terraform"), "--framework", "terraform", "--skip-download",
         "--quiet", "--compact", "-o", "json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    try:
        reports = json.loads(result.stdout)
    except ValueError:
        print(f"checkov gave no report (exit {result.returncode}):\n{result.stderr[-3000:]}")
        return 1
    reports = reports if isinstance(reports, list) else [reports]
    summary = {k: sum(r["summary"][k] for r in reports)
               for k in ("passed", "failed", "parsing_errors")}
    problems = [f"failed: {c['check_id']} {c['resource']} ({c['file_path']})"
                for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    problems += [f"crashed: {line}" for line in result.stderr.splitlines()
                 if "Failed to run check" in line]
    if summary["parsing_errors"]:
        problems.append(f"{summary['parsing_errors']} parsing error(s)")
    if summary["passed"] == 0:
        problems.append("checkov checked nothing")
    print(f"checkov: {summary['passed']} passed, {summary['failed']} failed")
    for p in problems:
        print(f"  {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
