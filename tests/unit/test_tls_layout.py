"""Certificates: host certificates live in a folder of their own, so a host named `ca` or
`client` gets a certificate of its own, never the CA's key or the control machine's."""

from __future__ import annotations

import stat

from cryptography import x509

from runner.provision.tls import CertificateAuthority


def test_hosts_named_ca_and_client_get_their_own_certificates(tmp_path):
    ca = CertificateAuthority(tmp_path / "tls", "c1")
    ca.ensure({"ca": "10.0.0.1", "client": "10.0.0.2", "w1": "10.0.0.3"})
    assert ca.key("ca") != ca.ca_key and ca.key("ca").read_bytes() != ca.ca_key.read_bytes()
    assert ca.cert("client").read_bytes() != ca.client_cert.read_bytes()
    host_ca = x509.load_pem_x509_certificate(ca.cert("ca").read_bytes())
    assert not host_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    issuer = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes()).subject
    assert host_ca.issuer == issuer
    for key in (ca.key("ca"), ca.key("client"), ca.key("w1"), ca.client_key, ca.ca_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    # A second ensure keeps every file (running processes stay valid).
    before = {p: p.read_bytes() for p in (tmp_path / "tls").rglob("*") if p.is_file()}
    ca.ensure({"ca": "10.0.0.1", "client": "10.0.0.2", "w1": "10.0.0.3"})
    assert before == {p: p.read_bytes() for p in (tmp_path / "tls").rglob("*") if p.is_file()}


def test_a_certificate_is_issued_anew_for_a_new_address_or_near_expiry(tmp_path, monkeypatch):
    import datetime as dt

    from runner.provision import tls

    ca = CertificateAuthority(tmp_path / "tls", "c1")
    ca.ensure({"w1": "10.0.0.3", "w2": "10.0.0.4"})
    w2 = ca.cert("w2").read_bytes()
    assert ca.reissued({"w1": "10.0.0.9", "w2": "10.0.0.4"}) == ["w1"]
    ca.ensure({"w1": "10.0.0.9", "w2": "10.0.0.4"})  # w1's VM came back on another address
    sans = x509.load_pem_x509_certificate(ca.cert("w1").read_bytes()).extensions \
        .get_extension_for_class(x509.SubjectAlternativeName).value
    import ipaddress

    assert ipaddress.ip_address("10.0.0.9") in sans.get_values_for_type(x509.IPAddress)
    assert ca.cert("w2").read_bytes() == w2  # unchanged host, unchanged certificate
    # Within RENEW_BEFORE of expiry, every certificate is renewed.
    monkeypatch.setattr(tls, "RENEW_BEFORE", tls.VALIDITY + dt.timedelta(days=1))
    assert sorted(ca.reissued({"w1": "10.0.0.9", "w2": "10.0.0.4"})) == ["w1", "w2"]


def _handshake(ca: CertificateAuthority, cert, key) -> str:
    """A TLS server on loopback presenting cert/key, and a client that trusts the cluster's CA:
    'ok' if the client accepts the server, else the verification error."""
    import socket
    import ssl
    import threading

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(ca.ca_cert))
    client_ctx.check_hostname = False  # the purpose (extended key usage) is what is tested
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve():
            conn, _ = listener.accept()
            try:
                server_ctx.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    client_ctx.wrap_socket(raw):
                return "ok"
        except ssl.SSLCertVerificationError as e:
            return e.verify_message
        finally:
            t.join(5)


def test_the_client_certificate_cannot_pose_as_a_node(tmp_path):
    ca = CertificateAuthority(tmp_path / "tls", "c1")
    ca.ensure({"w1": "127.0.0.1"})
    assert _handshake(ca, ca.cert("w1"), ca.key("w1")) == "ok"
    assert _handshake(ca, ca.client_cert, ca.client_key) == "unsuitable certificate purpose"


def test_an_older_client_certificate_with_server_use_is_issued_anew(tmp_path):
    from runner.provision import tls

    ca = CertificateAuthority(tmp_path / "tls", "c1")
    ca.ensure({"w1": "10.0.0.3"})
    ca_key = tls.serialization.load_pem_private_key(ca.ca_key.read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    # what earlier versions issued: a client certificate good for servers too
    ca._issue("client", None, True, ca_key, ca_cert, ca.client_cert, ca.client_key)
    w1 = ca.cert("w1").read_bytes()
    ca.ensure({"w1": "10.0.0.3"})
    usage = x509.load_pem_x509_certificate(ca.client_cert.read_bytes()).extensions \
        .get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ca.cert("w1").read_bytes() == w1
