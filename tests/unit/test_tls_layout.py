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
