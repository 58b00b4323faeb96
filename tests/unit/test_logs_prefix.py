"""`daskfleet logs` reads all of a host's logs through one `tail -v`: its lines must come out
prefixed by the process whose log they are, however tail's output is split into writes."""

from __future__ import annotations

import io
import threading

from runner.cluster.logs import _Prefixed

TAIL = ("==> /var/log/daskfleet/c-scheduler.log <==\nstarted\nlistening\n\n"
        "==> /var/log/daskfleet/c-h1-w0.log <==\njoined\n\n"
        "==> /var/log/daskfleet/c-scheduler.log <==\nnew worker\n")


def _run(chunks: list[str]) -> list[str]:
    out = io.StringIO()
    s = _Prefixed({"/var/log/daskfleet/c-scheduler.log": "[h1 scheduler]",
                   "/var/log/daskfleet/c-h1-w0.log": "[h1 h1-w0]"}, out, threading.Lock())
    for chunk in chunks:
        s.write(chunk)
    return out.getvalue().splitlines()


def test_each_line_carries_the_process_of_the_log_it_came_from():
    expected = ["[h1 scheduler] started", "[h1 scheduler] listening", "[h1 h1-w0] joined",
                "[h1 scheduler] new worker"]
    assert _run([TAIL]) == expected
    # the same output cut at arbitrary places, as SSH delivers it
    assert _run([TAIL[i:i + 7] for i in range(0, len(TAIL), 7)]) == expected
