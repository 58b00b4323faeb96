"""moto's server as the lab runs it (the emulated EC2's API, the object store's S3): moto's own
WSGI application, answering one request at a time.

moto's backends are not thread-safe, and its server is threaded. For example, its
RevokeSecurityGroupIngress rebuilds the group's rule list and writes it back, so an
AuthorizeSecurityGroupIngress on the same group in between can be lost; Terraform changes a
group's rules in parallel. (Seen once with two e2e sessions loading the machine: `down
--destroy` failed with InvalidPermission.NotFound on a rule Terraform had made; not reproduced
on purpose.) EC2 and S3 apply each request atomically; so does the lab, by serialising them
(moto answers in milliseconds).
"""

from __future__ import annotations

import threading


class OneRequestAtATime:
    """A WSGI middleware: each request handled, its response body included, under one lock."""

    def __init__(self, app) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            return list(self.app(environ, start_response))


def make(host: str, port: int):
    """moto's server (werkzeug, a thread per connection), its requests serialised; the caller
    runs its serve_forever."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = OneRequestAtATime(DomainDispatcherApplication(create_backend_app))
    return make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
