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
