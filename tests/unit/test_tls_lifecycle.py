"""Certificates with a lifecycle: a leaf never outlives its CA, a key that is not its
certificate's is caught, a CA made anew gets new leaves, and rotate issues new keys."""

from __future__ import annotations

import datetime as dt
import shutil

from cryptography import x509

from runner.provision import tls
from runner.provision.tls import CertificateAuthority

HOSTS = {"lab1": "198.18.0.11", "lab2": "198.18.0.12"}


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_a_leaf_never_outlives_its_ca(tmp_path, monkeypatch):
    ca = CertificateAuthority(tmp_path, "c1")
    monkeypatch.setattr(tls, "VALIDITY", dt.timedelta(days=40))  # an old CA, 40 days left
    ca.ensure({})
    monkeypatch.setattr(tls, "VALIDITY", dt.timedelta(days=825))
    ca.ensure(HOSTS)
    ends = ca.expiries(list(HOSTS))
    assert ends["lab1"] == ends["ca"] and ends["client"] == ends["ca"]
    assert ends["lab1"] - dt.datetime.now(dt.UTC) < dt.timedelta(days=41)


def test_a_key_that_is_not_its_certificates_is_issued_anew(tmp_path):
    ca = CertificateAuthority(tmp_path, "c1")
    ca.ensure(HOSTS)
    shutil.copy(ca.key("lab2"), ca.key("lab1"))  # lab1's certificate next to lab2's key
    assert not tls._pair_matches(ca.cert("lab1"), ca.key("lab1"))
    ca.ensure(HOSTS)
    assert tls._pair_matches(ca.cert("lab1"), ca.key("lab1"))
    assert not list(tmp_path.rglob("*.new"))  # no half-written pair left


def test_a_new_ca_gets_new_leaves(tmp_path):
    ca = CertificateAuthority(tmp_path, "c1")
    ca.ensure(HOSTS)
    old = ca.cert("lab1").read_bytes()
    ca.ca_cert.unlink()  # the CA made anew (its key lost, or replaced on purpose)
    ca.ensure(HOSTS)
    assert ca.cert("lab1").read_bytes() != old
    load(ca.cert("lab1")).verify_directly_issued_by(load(ca.ca_cert))
    load(ca.client_cert).verify_directly_issued_by(load(ca.ca_cert))


def test_rotate_issues_new_keys_from_the_same_ca(tmp_path):
    ca = CertificateAuthority(tmp_path, "c1")
    ca.ensure(HOSTS)
    before = {n: ca.key(n).read_bytes() for n in HOSTS}
    ca_before = ca.ca_cert.read_bytes()
    assert ca.rotate(HOSTS) == ["lab1", "lab2", "client"]
    assert ca.ca_cert.read_bytes() == ca_before
    for n in HOSTS:
        assert ca.key(n).read_bytes() != before[n]
        assert tls._pair_matches(ca.cert(n), ca.key(n))
        load(ca.cert(n)).verify_directly_issued_by(load(ca.ca_cert))


def test_status_warns_of_what_ends_within_30_days_and_names_the_command(tmp_path, monkeypatch):
    ca = CertificateAuthority(tmp_path, "c1")
    ca.ensure(HOSTS)
    ends = ca.expiries(list(HOSTS))
    assert ca.expiry_warnings(list(HOSTS), "lab.yaml") == []  # 825 days left: quiet
    # 20 days before the end (a leaf never outlives its CA: they end together)
    warnings = ca.expiry_warnings(list(HOSTS), "lab.yaml", now=ends["lab1"] - dt.timedelta(days=20))
    assert any(w.startswith("the certificate of lab1 expires on") and "(20 days)" in w
               and w.endswith("run `daskfleet rotate -c lab.yaml`") for w in warnings), warnings
    assert any(w.startswith("the CA expires on") and "rotate --new-ca -c lab.yaml" in w
               for w in warnings), warnings
    # 31 days before: not yet
    assert ca.expiry_warnings(list(HOSTS), "lab.yaml",
                              now=ends["ca"] - dt.timedelta(days=31)) == []
