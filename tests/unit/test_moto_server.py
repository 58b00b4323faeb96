"""The lab's moto servers answer one request at a time (runner/lab/moto_server.py): moto's
backends lose updates under concurrent requests, where EC2 and S3 apply each atomically."""

from __future__ import annotations

import threading
import time

from runner.lab.moto_server import OneRequestAtATime, make


def test_requests_are_handled_one_at_a_time_with_their_whole_bodies():
    inside, most = [0], [0]
    guard = threading.Lock()

    def app(environ, start_response):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.02)
        start_response("200 OK", [])
        yield b"a"
        yield b"b"  # the body is produced inside the lock too
        with guard:
            inside[0] -= 1

    wrapped = OneRequestAtATime(app)
    bodies = []
    threads = [threading.Thread(target=lambda: bodies.append(b"".join(
        wrapped({}, lambda *_: None)))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and bodies == [b"ab"] * 8


def test_the_server_answers_through_the_lock():
    import urllib.request

    server = make("127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert isinstance(server.app, OneRequestAtATime)
        url = f"http://127.0.0.1:{server.server_address[1]}/moto-api/reset"
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10) as r:
            assert r.status == 200
    finally:
        server.shutdown()
