"""The full tier (`make e2e`) as three pytest sessions at once, each on a lab of its own
(DASKFLEET_LAB_INDEX 0, 1 and 2: own bridge, /24, namespaces and state folder; see
runner/lab/addresses.py). The e2e tests wait on machines more than they compute (lab hosts
booting, SSH round trips, Dask timeouts, a shaped uplink), so sessions side by side fill the
cores that one leaves idle, until the two cores are the limit.

Lab 0 runs every full-tier module but those listed in MOVED; labs 1 and 2 run theirs. The
emulated EC2 runs in lab 0 only, so its modules stay there; a new module runs in lab 0 until it
is moved. MOVED is chosen so that the sessions take about as long (from each run's --durations
list).

Usage: python tests/run_full_tier.py PYTEST [OPTIONS...] (what `make e2e` passes: the pytest
command and its options, the full tier's marker among them; the paths are added here). Each
line is printed as it comes, prefixed with its lab and the time; the exit status is the worst of
the sessions'.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The modules moved out of lab 0, by lab: no emulated EC2 in any of them.
MOVED = {
    1: ("tests/e2e/test_4_day2.py",
        "tests/e2e/test_7_faults.py",
        "tests/e2e/test_12_uplink.py",
        "tests/e2e/test_13_shared_state.py",
        "tests/e2e/test_8_teardown.py"),
    2: ("tests/e2e/test_2_operations.py",
        "tests/e2e/test_3_shared_hosts.py",
        "tests/e2e/test_9_hosts_sudo_user.py",
        "tests/e2e/test_10_data_in_place.py",
        "tests/e2e/test_11_detached.py"),
}
LABS = (0, *MOVED)


def session_args(index: int, pytest_command: list[str]) -> list[str]:
    """The pytest command of lab INDEX (PYTEST_COMMAND: pytest and its options, no paths): lab N
    runs MOVED[N], lab 0 the rest of tests/."""
    # a line per test (the lines of the sessions interleave; -q's dots would show nothing
    # until a module ends), and each session's own temp root (pytest prunes the old numbered
    # folders of a shared one)
    own = [*(a for a in pytest_command if a not in ("-q", "--quiet")), "-v",
           f"--basetemp=/tmp/daskfleet-full-tier-lab{index}"]
    if index:
        return [*own, *MOVED[index]]
    return [*own, *(f"--ignore={m}" for moved in MOVED.values() for m in moved), "tests"]


def _pump(index: int, proc: subprocess.Popen, lock: threading.Lock, last: dict) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        with lock:
            # the time: to line a test's end up with the hosts' logs (and the other session)
            sys.stdout.write(f"[lab {index} {time.strftime('%H:%M:%S')}] {line}")
            sys.stdout.flush()
        if line.strip():
            last[index] = line.strip()  # pytest's own summary, in the end


def main(pytest_command: list[str]) -> int:
    missing = [m for moved in MOVED.values() for m in moved if not (REPO / m).is_file()]
    if missing:
        print(f"run_full_tier: {', '.join(missing)} in MOVED does not exist; "
              "edit tests/run_full_tier.py", file=sys.stderr)
        return 2
    lock = threading.Lock()
    procs, pumps, last, started = {}, [], {}, time.monotonic()
    for index in LABS:
        env = {**os.environ, "DASKFLEET_LAB_INDEX": str(index)}
        procs[index] = subprocess.Popen(session_args(index, pytest_command), cwd=REPO, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, bufsize=1)
        pumps.append(threading.Thread(target=_pump, args=(index, procs[index], lock, last)))
        pumps[-1].start()
    try:
        codes = {i: p.wait() for i, p in procs.items()}
    except KeyboardInterrupt:  # the sessions get it too (same process group); let them end
        codes = {i: p.wait() for i, p in procs.items()}
    for t in pumps:
        t.join()
    took = time.monotonic() - started
    for i in LABS:
        print(f"run_full_tier: lab {i} exited {codes[i]}: {last.get(i, '(no output)')}")
    print(f"run_full_tier: all {len(LABS)} in {took / 60:.1f} min")
    return max(codes.values())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
