"""The emulated EC2's instance metadata service: one per instance host, at 169.254.169.254:80 in
its network namespace, as the hypervisor serves it (the instance controller starts it at every
boot, outside the host's own processes, and a crash of the host ends it).

As EC2's where that changes what a process on the node sees: IMDSv2 sessions (a token from
`PUT /latest/api/token` with a TTL header, then the `X-aws-ec2-metadata-token` header on every
GET); with `HttpTokens: required`, a GET without a valid token is 401; the user data and the
instance id are served, so whatever the user data holds (a VM's SSH host keys) can be read by
any process that reaches the address. The node's guard (playbooks/roles/dask_node,
files/daskfleet-metadata-guard) is what keeps the cluster's users from it.

Stdlib only: `python3 imds.py --dir DIR [--address A --port P]` serves DIR/user-data,
DIR/instance-id and DIR/options.json ({"http_tokens": "required"|"optional"}).
"""

from __future__ import annotations

import argparse
import json
import secrets
import socketserver
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ADDRESS = "169.254.169.254"
PORT = 80
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TTL_S = 21600


def handler_for(root: Path):
    tokens: dict[str, float] = {}  # token -> expiry (monotonic)
    options = json.loads((root / "options.json").read_text()) \
        if (root / "options.json").exists() else {}
    required = options.get("http_tokens", "required") == "required"

    class Handler(BaseHTTPRequestHandler):
        server_version = "EC2ws"
        sys_version = ""

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass

        def _send(self, code: int, body: bytes = b"", kind: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self):  # noqa: N802 - http.server's name
            if self.path != "/latest/api/token":
                return self._send(404)
            try:
                ttl = int(self.headers.get(TTL_HEADER, ""))
            except ValueError:
                return self._send(400)
            if not 1 <= ttl <= MAX_TTL_S:
                return self._send(400)
            token = secrets.token_urlsafe(32)
            tokens[token] = time.monotonic() + ttl
            self._send(200, token.encode())

        def do_GET(self):  # noqa: N802 - http.server's name
            token = self.headers.get(TOKEN_HEADER)
            valid = token is not None and tokens.get(token, 0.0) > time.monotonic()
            if token is not None and not valid or required and not valid:
                return self._send(401)
            files = {"/latest/user-data": "user-data",
                     "/latest/meta-data/instance-id": "instance-id"}
            if self.path == "/latest/meta-data/":
                return self._send(200, b"instance-id")
            name = files.get(self.path)
            if name is None or not (root / name).exists():
                return self._send(404)
            self._send(200, (root / name).read_bytes())

    return Handler


class Server(ThreadingHTTPServer):
    def server_bind(self) -> None:
        # HTTPServer's own looks its address up in DNS (socket.getfqdn): inside an instance,
        # whose resolver is nowhere, that waits out the resolver's timeouts
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--address", default=ADDRESS)
    parser.add_argument("--port", type=int, default=PORT)
    args = parser.parse_args()
    Server((args.address, args.port), handler_for(args.dir)).serve_forever()


if __name__ == "__main__":
    main()
