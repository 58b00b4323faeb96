"""How an ephemeral run's TLS files reach its instances without passing through the EC2 API.

EC2 hands an instance's user data to any principal with `ec2:DescribeInstanceAttribute`, so no
secret goes there. Instead each instance joins at boot:

1. Its user data starts `AGENT` (stdlib Python and the image's `openssl`): the agent makes a key
   and a self-signed certificate of its own, in a root-only folder under /run (tmpfs: never on
   the disk), prints the certificate's SHA-256 on the instance's console, and listens on
   JOIN_PORT for TLS connections that present the run's join certificate. That certificate is
   public (it is in the user data); its key never leaves the control machine.
2. The control machine reads the fingerprint with GetConsoleOutput (what the instance wrote; EC2
   lets no one else write there), connects, checks that the instance's certificate is the one
   its console named before sending anything, and sends the run's TLS files.
3. The agent writes them (0600, root) and exits; the next user-data command, which waited for
   them, starts the Dask container with the folder mounted read-only.

So each end has pinned the other: the instance trusts only the holder of the join key, and the
control machine trusts only the key the instance printed. The security group opens JOIN_PORT to
admin_cidr only, as it does the scheduler's port.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import json
import logging
import posixpath
import re
import shlex
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from runner.errors import ProvisionError

logger = logging.getLogger(__name__)

JOIN_PORT = 8785  # below the scheduler's default 8786; the agent has exited before Dask starts
# Where the TLS files land on the instance (tmpfs, root-only), mounted into the container.
NODE_TLS_DIR = "/run/daskfleet/tls"
NAMES = ("ca.pem", "cert.pem", "key.pem")
CONSOLE_LINE = re.compile(r"daskfleet-join (sha256=[0-9a-f]{64}|error: .*)")
# The agent prints its key only once it listens: from then on, a port that stays unreachable
# this long is closed to this machine (the group's admin_cidr, a firewall), not still booting.
REACH_GRACE_S = 45.0
CONNECT_TIMEOUT_S = 10.0

AGENT = r'''"""daskfleet's join agent (runner/ephemeral/join.py): receives this instance's TLS files."""
import hashlib, json, os, socket, ssl, subprocess, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

folder, port, trusted, console_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
NAMES = ("ca.pem", "cert.pem", "key.pem")
socket.setdefaulttimeout(30)  # a connection that stalls cannot hold the agent


def console(line):
    print(line, flush=True)
    try:
        with open(console_path, "w") as c:
            c.write(line + "\n")
    except OSError:
        pass


own = os.path.join(os.path.dirname(folder), "join")  # the agent's key: not in the mounted folder
os.makedirs(own, mode=0o700, exist_ok=True)
os.chmod(folder, 0o700)
key, cert = (os.path.join(own, n) for n in ("key.pem", "cert.pem"))
try:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days",
                    "2", "-subj", "/CN=daskfleet-join"], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(trusted)
except (OSError, subprocess.CalledProcessError, ssl.SSLError) as e:
    console(f"daskfleet-join error: {type(e).__name__}: {e}")
    sys.exit(1)


class Handler(BaseHTTPRequestHandler):
    def do_PUT(self):
        try:
            files = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert sorted(files) == sorted(NAMES)
        except Exception:
            self.send_error(400)
            return
        for name in NAMES:
            tmp = os.path.join(folder, name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(files[name])
            os.replace(tmp, os.path.join(folder, name))
        open(os.path.join(folder, "ready"), "w").close()
        self.send_response(204)
        self.end_headers()
        self.server.done = True

    def log_message(self, *args):
        pass


server = HTTPServer(("", port), Handler)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.done = False
with open(cert) as f:
    der = ssl.PEM_cert_to_DER_cert(f.read())
console(f"daskfleet-join sha256={hashlib.sha256(der).hexdigest()}")
while not server.done:
    server.handle_request()  # a refused handshake (no join certificate) is dropped; next
'''


@dataclass(frozen=True)
class JoinIdentity:
    """The run's join certificate and key (EC P-256, self-signed, valid for the run's
    lifetime), as files in a folder of the run's (ssl loads them from files)."""
    cert_pem: str
    cert_path: Path
    key_path: Path

    @classmethod
    def make(cls, folder: Path, lifetime_s: float) -> JoinIdentity:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "daskfleet-join-client")])
        now = datetime.now(UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(now + timedelta(seconds=lifetime_s + 3600))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        key_path = folder / "join-key.pem"
        key_path.touch(mode=0o600)
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        cert_path = folder / "join-cert.pem"
        cert_path.write_text(cert_pem)
        return cls(cert_pem, cert_path, key_path)


def agent_command(identity_cert_pem: str, port: int = JOIN_PORT, folder: str = NODE_TLS_DIR,
                  console: str = "/dev/console") -> str:
    """The user-data command that starts the agent in the background (the instance goes on with
    its boot meanwhile): the script and the join certificate, both public, unpacked beside
    `folder` (its log there too). Compressed: user data is limited to 16 KB."""
    packed = base64.b64encode(gzip.compress(AGENT.encode(), mtime=0)).decode()
    q = shlex.quote
    home = posixpath.dirname(folder)
    trusted, script, log = (f"{home}/join-{n}" for n in ("client.pem", "agent.py", "agent.log"))
    return (f"umask 077; mkdir -p {q(folder)} && printf %s {q(identity_cert_pem)} > {q(trusted)}"
            f" && echo {packed} | base64 -d | gunzip > {q(script)}"
            f" && (python3 {q(script)} {q(folder)} {int(port)} {q(trusted)} {q(console)}"
            f" > {q(log)} 2>&1 &)")


def wait_command(folder: str = NODE_TLS_DIR) -> str:
    """The user-data command before the container's: wait for the TLS files (the instance's
    hard stop ends the wait if they never come)."""
    return f"until [ -e {shlex.quote(folder)}/ready ]; do sleep 1; done"


def fingerprint(console_text: str) -> str | None:
    """The agent's last word on the console: its certificate's "sha256=<hex>", or raises with
    the error it printed; None while it has said nothing."""
    found = CONSOLE_LINE.findall(console_text or "")
    if not found:
        return None
    if found[-1].startswith("error: "):
        raise ProvisionError(f"the instance's join agent failed: {found[-1][7:]}")
    return found[-1]


def der_fingerprint(der: bytes) -> str:
    return "sha256=" + hashlib.sha256(der).hexdigest()


def deliver(address: str, port: int, pinned: str, identity: JoinIdentity,
            files: dict[str, str], timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Send `files` to the agent at address:port, after checking that its certificate is the
    one `pinned` names (nothing is sent otherwise)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # self-signed by the instance: pinned below instead
    ctx.load_cert_chain(str(identity.cert_path), str(identity.key_path))
    conn = http.client.HTTPSConnection(address, port, timeout=timeout, context=ctx)
    try:
        conn.connect()
        assert conn.sock is not None
        seen = der_fingerprint(conn.sock.getpeercert(binary_form=True) or b"")
        if seen != pinned:
            raise ProvisionError(
                f"{address}:{port} presented a certificate ({seen[:19]}...) other than the one "
                f"the instance printed on its console ({pinned[:19]}...): not its join agent; "
                "nothing was sent")
        conn.request("PUT", "/tls", body=json.dumps(files).encode(),
                      headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 204:
            raise ProvisionError(f"{address}:{port}: the join agent answered {response.status}")
    finally:
        conn.close()


def join(instance_id: str, address: str, console: Callable[[], str], identity: JoinIdentity,
         files: dict[str, str], timeout: float, say: Callable[[str], None],
         port: int = JOIN_PORT, poll_s: float = 1.0, max_poll_s: float = 8.0,
         reach_grace_s: float = REACH_GRACE_S) -> float:
    """Wait for the instance's fingerprint on its console, then deliver `files` to it; the
    seconds it took. Raises ProvisionError naming the instance and what to check: within
    `timeout` for the console, and `reach_grace_s` after it for the port (the agent listens
    before it prints). The console is read every poll_s, backing off to max_poll_s (many
    workers must not throttle the API)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    pinned = None
    last_error: Exception | None = None
    told = False
    while time.monotonic() < deadline:
        if not told and time.monotonic() - t0 > 60:
            say(f"ephemeral: still waiting for {instance_id}'s join key on its console "
                f"({time.monotonic() - t0:.0f}s; up to {timeout:.0f}s)")
            told = True
        if pinned is None:
            pinned = fingerprint(console())
            if pinned is not None:
                deadline = min(deadline, time.monotonic() + reach_grace_s)
        if pinned is not None:
            try:
                deliver(address, port, pinned, identity, files)
                return time.monotonic() - t0
            except ProvisionError:
                raise
            except (OSError, http.client.HTTPException) as err:  # not listening yet, or a drop
                last_error = err
        time.sleep(poll_s)
        poll_s = min(max_poll_s, poll_s * 1.5)
    if pinned is None:
        raise ProvisionError(
            f"ephemeral: {instance_id} printed no join key on its console within {timeout:.0f}s "
            "(GetConsoleOutput; on instance types outside the Nitro system the console output "
            "can lag by minutes: raise ephemeral.ready_timeout or choose a Nitro type)")
    raise ProvisionError(
        f"ephemeral: {instance_id}'s join agent listens (its key is on its console), but this "
        f"machine could not reach {address}:{port} for {reach_grace_s:.0f}s "
        f"({type(last_error).__name__}: {last_error}): the run's security group lets only "
        f"ephemeral.admin_cidr reach tcp {port}; is this machine's address in it? (a firewall "
        "on this side can block it too)")
