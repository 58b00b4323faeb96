"""`daskfleet dashboard`: an SSH tunnel from a local port to the scheduler's dashboard, which
listens only on the scheduler's private address."""

from __future__ import annotations

import threading

from runner.hosts import Host
from runner.ssh import SSHSettings, connect


def open_dashboard(scheduler: Host, remote_port: int, ssh: SSHSettings, local_port: int,
                   progress=print, stop: threading.Event | None = None) -> None:
    """Forward 127.0.0.1:local_port to scheduler:remote_port until Ctrl-C (or `stop` is set)."""
    from invoke.exceptions import ThreadException

    stop = stop or threading.Event()
    with connect(scheduler, ssh) as c:
        try:
            with c.forward_local(local_port=local_port, remote_port=remote_port,
                                 remote_host=scheduler.address, local_host="127.0.0.1"):
                progress(f"dashboard: http://127.0.0.1:{local_port}/status (tunnel to "
                         f"{scheduler.name} {scheduler.address}:{remote_port}); Ctrl-C closes it")
                try:
                    while not stop.wait(0.5):
                        pass
                except KeyboardInterrupt:
                    pass
        except ThreadException as e:
            # A browser that dropped a connection is normal; anything else is not.
            other = [x for x in e.exceptions
                     if not isinstance(x.value, ConnectionResetError | BrokenPipeError)]
            if other:
                raise
    progress("dashboard: tunnel closed")
