"""A CA change in three phases: at every step, a process still running with the files of the
phase before and one started with the files of the phase after trust each other (real mutual TLS
handshakes, both ways, as a scheduler and a worker do); at the end the old CA is refused. An
interrupted step goes on from where it stopped."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from runner.errors import StateError
from runner.provision.tls import CertificateAuthority

HOSTS = {"lab1": "127.0.0.1", "lab2": "127.0.0.1"}


def snapshot(ca: CertificateAuthority, host: str, into: Path) -> tuple[Path, Path, Path]:
    """The files a process loads at its start (trust file, certificate, key), as they are now."""
    into.mkdir(parents=True)
    out = (into / "ca.pem", into / "host.pem", into / "host.key")
    for src, dst in zip((ca.ca_cert, ca.cert(host), ca.key(host)), out, strict=True):
        shutil.copy(src, dst)
    return out


def mutual_tls(server: tuple[Path, Path, Path], client: tuple[Path, Path, Path]) -> str:
    """'ok' when a server and a client, each with its own files, complete a handshake in which
    each checks the other's certificate (as Dask's TLS does), else the failure."""
    def ctx(files, side):
        c = ssl.SSLContext(side)
        c.load_cert_chain(files[1], files[2])
        c.load_verify_locations(cafile=str(files[0]))
        c.verify_mode = ssl.CERT_REQUIRED
        c.check_hostname = False
        return c

    server_ctx, client_ctx = ctx(server, ssl.PROTOCOL_TLS_SERVER), ctx(client, ssl.PROTOCOL_TLS_CLIENT)
    errors: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve():
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as s:
                    s.recv(1)
            except (ssl.SSLError, OSError) as e:
                errors.append(f"server: {e}")

        t = threading.Thread(target=serve)
        t.start()
        try:
            with socket.create_connection(listener.getsockname()) as raw, \
                    client_ctx.wrap_socket(raw) as s:
                s.sendall(b"x")
                s.recv(1)  # the server's verdict on the client's certificate arrives here
        except (ssl.SSLError, OSError) as e:
            errors.append(f"client: {e}")
        t.join(10)
    return "; ".join(errors) or "ok"


def both_ways(a, b) -> str:
    return f"{mutual_tls(a, b)} / {mutual_tls(b, a)}"


def issuer(path: Path) -> x509.Name:
    return x509.load_pem_x509_certificate(path.read_bytes()).issuer


def test_every_phase_keeps_old_and_new_processes_talking_and_the_end_refuses_the_old_ca(tmp_path):
    ca = CertificateAuthority(tmp_path / "tls", "c1")
    ca.ensure(HOSTS)
    assert ca.ca_change_phase() is None
    old_ca = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    before = snapshot(ca, "lab1", tmp_path / "p0")

    ca.begin_ca_change()  # phase 1: trust both
    assert ca.ca_change_phase() == "trust"
    ca.ensure(HOSTS)  # as `up` runs it: nothing is issued anew yet
    assert issuer(ca.cert("lab2")) == old_ca.subject
    trusting = snapshot(ca, "lab2", tmp_path / "p1")
    assert both_ways(before, trusting) == "ok / ok"

    ca.sign_with_new_ca()  # phase 2: the new CA signs; ensure issues every certificate anew
    assert ca.ca_change_phase() == "issue"
    ca.ensure(HOSTS)
    new_ca = next(c for c in x509.load_pem_x509_certificates(ca.ca_cert.read_bytes())
                  if c != old_ca)
    assert new_ca.subject != old_ca.subject
    for name in (*HOSTS, "client"):
        path = ca.client_cert if name == "client" else ca.cert(name)
        assert issuer(path) == new_ca.subject, name
    issued = snapshot(ca, "lab1", tmp_path / "p2")
    assert both_ways(trusting, issued) == "ok / ok"
    # a process of before the change meets a new certificate it does not trust: this is why
    # phase 2 waits until every process runs with phase 1's files
    assert both_ways(before, issued) != "ok / ok"

    ca.drop_old_ca()  # phase 3: the new CA alone
    assert ca.ca_change_phase() is None
    ca.ensure(HOSTS)
    after = snapshot(ca, "lab2", tmp_path / "p3")
    assert both_ways(issued, after) == "ok / ok"
    assert "certificate verify failed" in mutual_tls(after, trusting)  # an old-CA certificate
    assert len(x509.load_pem_x509_certificates(ca.ca_cert.read_bytes())) == 1
    assert not ca.old_cert.exists() and not ca.next_key.exists()
    assert set(ca.expiries(list(HOSTS))) == {"ca", "client", *HOSTS}


def test_an_interrupted_change_goes_on_from_where_it_stopped(tmp_path):
    ca = CertificateAuthority(tmp_path / "tls", "c1")
    ca.ensure(HOSTS)
    ca.begin_ca_change()
    # interrupted before the trust file was written: calling it again completes it
    first = ca.ca_cert.read_bytes()
    ca.ca_cert.write_bytes(first.split(b"-----END CERTIFICATE-----")[0]
                           + b"-----END CERTIFICATE-----\n")
    ca.begin_ca_change()
    assert ca.ca_cert.read_bytes() == first
    # interrupted in phase 2 after the switch (the key renamed, ca-next.pem still there)
    ca.sign_with_new_ca()
    ca.next_cert.write_text("left over\n")
    assert ca.ca_change_phase() == "issue"
    with pytest.raises(StateError, match="signs already"):
        ca.begin_ca_change()
    ca.drop_old_ca()
    assert not ca.next_cert.exists() and ca.ca_change_phase() is None
    with pytest.raises(StateError, match="does not sign yet"):
        ca.drop_old_ca()


def test_a_trust_file_without_the_ca_keys_certificate_is_an_error_naming_it(tmp_path):
    ca = CertificateAuthority(tmp_path / "tls", "c1")
    ca.ensure(HOSTS)
    other = CertificateAuthority(tmp_path / "other", "c2")
    other.ensure({})
    shutil.copy(other.ca_cert, ca.ca_cert)
    with pytest.raises(StateError, match=r"ca\.pem: no certificate in it belongs to .*ca\.key"):
        ca.ensure(HOSTS)
