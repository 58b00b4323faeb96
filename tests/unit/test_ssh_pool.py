"""The SSH pool never runs more commands at once on one host than sshd's MaxSessions allows."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from runner.cluster.hosts import Host
from runner.cluster.ssh import MAX_CHANNELS_PER_HOST, ConnectionPool


def test_channels_per_host_are_capped_and_hosts_do_not_wait_for_each_other():
    pool = ConnectionPool()
    a, b = Host("a", "10.0.0.1", "worker"), Host("b", "10.0.0.2", "worker")
    busy = {a: 0, b: 0}
    peak = {a: 0, b: 0}
    lock = threading.Lock()

    def command(host: Host) -> None:
        with pool.channel(host):
            with pool.channel(host):  # nested use in one thread takes no second slot
                with lock:
                    busy[host] += 1
                    peak[host] = max(peak[host], busy[host])
                time.sleep(0.02)
                with lock:
                    busy[host] -= 1

    with ThreadPoolExecutor(max_workers=32) as ex:
        list(ex.map(command, [a] * 40 + [b] * 40))
    assert peak[a] == MAX_CHANNELS_PER_HOST and peak[b] == MAX_CHANNELS_PER_HOST
    assert MAX_CHANNELS_PER_HOST < 10  # Debian's sshd: MaxSessions 10
