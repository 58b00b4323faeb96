"""The nanny preload waits for the scheduler to listen, then lets the nanny register at once."""

from __future__ import annotations

import asyncio

from distributed.comm import listen

from runner.cluster import nanny_wait


class _Nanny:  # what the preload reads of a distributed Nanny
    def __init__(self, address: str):
        self.scheduler = type("rpc", (), {"addr": address})()
        self.connection_args = {}


def test_the_preload_returns_once_the_scheduler_listens_and_not_before():
    async def scenario() -> tuple[bool, int]:
        import socket

        with socket.socket() as s:  # a free port nobody listens on yet
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        address = f"tcp://127.0.0.1:{port}"
        connected = []

        async def handler(comm):
            connected.append(comm.peer_address)
            await comm.close()

        waiting = asyncio.ensure_future(nanny_wait.dask_setup(_Nanny(address)))
        await asyncio.sleep(0.6)  # several polls, all refused
        early = waiting.done()
        listener = listen(address, handler)
        await listener.start()
        try:
            await asyncio.wait_for(waiting, timeout=10)
            await asyncio.sleep(0.1)
        finally:
            listener.stop()
        return early, len(connected)

    early, connections = asyncio.run(scenario())
    assert not early, "returned while nothing listened"
    assert connections == 1  # one successful probe, closed cleanly


# Run in a child interpreter: a fork server outlives the call that starts it.
FORKSERVER_SCRIPT = """
import json, multiprocessing.forkserver as fs, os, sys, time
import dask
dask.config.set({"distributed.worker.multiprocessing-method": sys.argv[1]})
from runner.cluster.nanny_wait import start_forkserver
started = start_forkserver()
from distributed.utils import get_mp_context
ctx = get_mp_context()  # what the nanny calls before it starts its worker
out = {"started": started, "pandas_imported": "pandas" in sys.modules,
       "server": fs._forkserver._forkserver_pid, "self": os.getpid()}
if started:
    # the server is forked, then execs: its command line reads empty until the exec is done
    deadline = time.monotonic() + 10
    while True:
        out["server_cmdline"] = open(f"/proc/{out['server']}/cmdline").read().replace("\\0", " ")
        if "forkserver" in out["server_cmdline"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
child = ctx.Process(target=time.sleep, args=(5,))
child.start()
out["child_parent"] = int([line.split()[1] for line in open(f"/proc/{child.pid}/status")
                           if line.startswith("PPid:")][0])
child.terminate()
child.join()
print(json.dumps(out))
"""


def _forkserver_run(method: str) -> dict:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", FORKSERVER_SCRIPT, method], cwd=root,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_with_forkserver_the_worker_is_forked_from_a_server_started_before_the_wait():
    out = _forkserver_run("forkserver")
    assert out["started"] is True
    # the server imports distributed only; neither it nor the nanny imports pandas up front
    assert "['distributed']" in out["server_cmdline"], out
    assert out["pandas_imported"] is False, out
    assert out["child_parent"] == out["server"], out  # the worker process is the server's child


def test_with_spawn_no_server_is_started():
    out = _forkserver_run("spawn")
    assert out["started"] is False and out["server"] is None, out
    assert out["child_parent"] == out["self"], out  # spawned by the nanny itself
