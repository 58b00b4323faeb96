"""The emulated EC2's metadata service answers as EC2's does where a process on the node would
notice: IMDSv2 sessions (a PUT for a token with a TTL, then the token on every GET), a GET without
a valid token refused (401) when the instance requires tokens, and served without one when it
does not (IMDSv1); the user data and instance id as RunInstances set them."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from runner.lab import imds


@pytest.fixture
def serve(tmp_path):
    servers = []

    def start(tokens: str) -> str:
        root = tmp_path / tokens
        root.mkdir()
        (root / "user-data").write_text("#cloud-config\nssh_keys: {}\n")
        (root / "instance-id").write_text("i-0123456789abcdef0")
        (root / "options.json").write_text(f'{{"http_tokens": "{tokens}"}}')
        server = imds.Server(("127.0.0.1", 0), imds.handler_for(root))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {imds.TOKEN_HEADER: token} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def _token(base: str, ttl: str = "60") -> tuple[int, str]:
    req = urllib.request.Request(f"{base}/latest/api/token", method="PUT",
                                 headers={imds.TTL_HEADER: ttl})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_tokens_required_as_imdsv2_requires_them(serve):
    base = serve("required")
    assert _get(f"{base}/latest/user-data")[0] == 401  # no token
    assert _get(f"{base}/latest/user-data", "made-up")[0] == 401
    assert _token(base, "0")[0] == 400 and _token(base, "21601")[0] == 400
    status, token = _token(base)
    assert status == 200 and token
    assert _get(f"{base}/latest/user-data", token) == (200, "#cloud-config\nssh_keys: {}\n")
    assert _get(f"{base}/latest/meta-data/instance-id", token) == (200, "i-0123456789abcdef0")
    assert _get(f"{base}/latest/meta-data/nothing-here", token)[0] == 404


def test_tokens_optional_serves_imdsv1_too(serve):
    base = serve("optional")
    assert _get(f"{base}/latest/user-data")[0] == 200
    assert _get(f"{base}/latest/user-data", "made-up")[0] == 401  # a bad token is still refused
