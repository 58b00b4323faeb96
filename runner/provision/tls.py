"""A per-cluster certificate authority and the certificates it signs (mutual TLS for Dask).

Files live in .daskfleet/<cluster>/tls/: ca.pem (+ ca.key, never leaves the control machine),
client.pem/client.key for the control machine and hosts/<host>.pem/.key for every node (a folder
of their own, so no host name can collide with `ca` or `client`).
Keys are written 0600 and never logged.

ca.pem is what every process trusts: one CA, or two while the CA changes. A change runs in three
phases, each rolled out to every process before the next begins, so no process ever meets a
certificate it does not trust (``begin_ca_change``, ``sign_with_new_ca``, ``drop_old_ca``):
1. trust: a new CA (ca-next.pem/.key) joins ca.pem; certificates still come from the old one;
2. issue: the new CA signs (ca.key is its key; the old certificate waits in ca-old.pem), so every
   certificate is issued anew from it; ca.pem still trusts both;
3. done: ca.pem trusts the new CA alone.
The phase is read from the files (``ca_change_phase``), so a change interrupted at any step goes
on from where it stopped.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runner.errors import StateError

VALIDITY = dt.timedelta(days=825)
RENEW_BEFORE = dt.timedelta(days=30)  # a certificate this close to expiry is issued anew


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _usages(server: bool) -> list:
    # Nodes are servers and, dialling each other (worker -> scheduler, nanny -> worker), clients
    # too; the control machine's certificate is for a client only, so it cannot pose as a node.
    return ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + [ExtendedKeyUsageOID.CLIENT_AUTH]


def _pair_matches(cert_path: Path, key_path: Path) -> bool:
    """Whether the key is the certificate's own (a cert written without its key, or a key
    copied over another host's, is not)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except (OSError, ValueError):
        return False
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    return (cert.public_key().public_bytes(serialization.Encoding.DER, pub)
            == key.public_key().public_bytes(serialization.Encoding.DER, pub))


def _stale(cert_path: Path, address: str | None, server: bool = True,
           ca_cert: x509.Certificate | None = None) -> bool:
    """A certificate no longer fits: its host has another address (a replaced VM), it expires
    within RENEW_BEFORE, its uses are not those it is for (an older client certificate), or it
    is not signed by the CA (``ca_cert``: a CA made anew) or outlives it."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE:
        return True
    if ca_cert is not None:
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            return True
        if cert.not_valid_after_utc > ca_cert.not_valid_after_utc:
            return True
    try:
        if list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) \
                != _usages(server):
            return True
    except x509.ExtensionNotFound:
        return True
    if address is None:
        return False
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return True
    try:
        return ipaddress.ip_address(address) not in sans.get_values_for_type(x509.IPAddress)
    except ValueError:
        return address not in sans.get_values_for_type(x509.DNSName)


def _name(cn: str, cluster: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"daskfleet {cluster}"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def _certs(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem) if pem.strip() else []


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _same_key(cert: x509.Certificate, key) -> bool:
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    return (cert.public_key().public_bytes(serialization.Encoding.DER, pub)
            == key.public_key().public_bytes(serialization.Encoding.DER, pub))


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


class CertificateAuthority:
    def __init__(self, directory: Path, cluster: str):
        self.dir = Path(directory)
        self.cluster = cluster

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.pem"

    def cert(self, host: str) -> Path:
        return self.dir / "hosts" / f"{host}.pem"

    def key(self, host: str) -> Path:
        return self.dir / "hosts" / f"{host}.key"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def next_cert(self) -> Path:
        return self.dir / "ca-next.pem"

    @property
    def next_key(self) -> Path:
        return self.dir / "ca-next.key"

    @property
    def old_cert(self) -> Path:
        return self.dir / "ca-old.pem"

    @property
    def client_cert(self) -> Path:
        return self.dir / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.dir / "client.key"

    def ensure(self, hosts: dict[str, str]) -> None:
        """Create the CA once, and a certificate for every host (name -> address) and the client
        that does not have one yet. Existing files are kept so running processes stay valid."""
        (self.dir / "hosts").mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if not (self.ca_cert.exists() and self.ca_key.exists()):
            self._create_ca()
        ca_key, ca_cert = self._signing()
        wanted: list[tuple[str, str | None, bool, Path, Path]] = [
            (name, address, True, self.cert(name), self.key(name))
            for name, address in hosts.items()]
        wanted.append(("client", None, False, self.client_cert, self.client_key))
        for name, address, server, cert, key in wanted:
            if (not (cert.exists() and key.exists()) or not _pair_matches(cert, key)
                    or _stale(cert, address, server, ca_cert)):
                self._issue(name, address, server, ca_key, ca_cert, cert, key)

    def reissued(self, hosts: dict[str, str]) -> list[str]:
        """The hosts whose certificate `ensure` would issue anew (a new address, near expiry)."""
        return [n for n, a in hosts.items() if self.cert(n).exists() and _stale(self.cert(n), a)]

    def rotate(self, hosts: dict[str, str]) -> list[str]:
        """Issue every host's and the client's certificate anew (new keys), from the same CA;
        returns what was issued. Running processes keep theirs, still valid, until replaced."""
        self.ensure(hosts)
        ca_key, ca_cert = self._signing()
        for name, address in hosts.items():
            self._issue(name, address, True, ca_key, ca_cert, self.cert(name), self.key(name))
        self._issue("client", None, False, ca_key, ca_cert, self.client_cert, self.client_key)
        return [*hosts, "client"]

    def expiries(self, hosts: list[str]) -> dict[str, dt.datetime]:
        """When the CA that signs and each host's certificate (and the client's) stop being
        valid; during a CA change, also the CA that is leaving or arriving (``ca-old``,
        ``ca-next``)."""
        out = {}
        if self.ca_cert.exists() and self.ca_key.exists():
            out["ca"] = self._signing()[1].not_valid_after_utc
        for name, path in [("ca-next", self.next_cert), ("ca-old", self.old_cert),
                           ("client", self.client_cert), *((h, self.cert(h)) for h in hosts)]:
            if path.exists():
                out[name] = x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
        return out

    def expiry_warnings(self, hosts: list[str], cluster_file: object,
                        now: dt.datetime | None = None) -> list[str]:
        """A warning for the CA and each certificate that ends within RENEW_BEFORE, naming the
        command that renews it (a leaf: `rotate`; the CA: `rotate --new-ca`). The CAs of a
        change under way (``ca-old``, ``ca-next``) are the change's business, not warned of."""
        now = now or dt.datetime.now(dt.UTC)
        return [
            f"the {'CA' if name == 'ca' else f'certificate of {name}'} expires on "
            f"{end:%Y-%m-%d} ({(end - now).days} days): "
            + (f"run `daskfleet rotate --new-ca -c {cluster_file}`" if name == "ca"
               else f"run `daskfleet rotate -c {cluster_file}`")
            for name, end in self.expiries(hosts).items()
            if end - now < RENEW_BEFORE and name not in ("ca-old", "ca-next")]

    def _signing(self):
        """(key, certificate) of the CA that signs: the certificate of ca.pem whose public key is
        ca.key's, wherever it stands in the bundle."""
        key = serialization.load_pem_private_key(self.ca_key.read_bytes(), None)
        for cert in _certs(self.ca_cert.read_bytes()):
            if _same_key(cert, key):
                return key, cert
        raise StateError(f"{self.ca_cert}: no certificate in it belongs to {self.ca_key}; the "
                         "CA files were edited by hand: restore them from a copy (or, to start "
                         "a new CA, `daskfleet down --destroy --purge` and `up`).",
                         path=self.ca_cert)

    # -- a CA change, in three phases (see the module's docstring) --------------------------

    def ca_change_phase(self) -> str | None:
        """``"trust"`` (a new CA trusted beside the old), ``"issue"`` (the new CA signs, both
        trusted), or None (no change under way)."""
        if self.next_key.exists():
            return "trust"
        if self.old_cert.exists():
            old = x509.load_pem_x509_certificate(self.old_cert.read_bytes())
            if old in _certs(self.ca_cert.read_bytes()):
                return "issue"
        return None

    def begin_ca_change(self) -> None:
        """Phase 1: a new CA, trusted beside the old one (which still signs). Called again in
        this phase, it completes what an interruption left."""
        phase = self.ca_change_phase()
        if phase == "issue":
            raise StateError(f"{self.dir}: the new CA signs already (phase 2 of a CA change)",
                             path=self.dir)
        if phase is None:
            self.old_cert.unlink(missing_ok=True)  # left by an interrupted change's last step
            self._create_ca(self.next_cert, self.next_key)
        _, signing = self._signing()
        _write_public(self.ca_cert, _pem(signing, *_certs(self.next_cert.read_bytes())))

    def sign_with_new_ca(self) -> None:
        """Phase 2: the new CA signs from now on (every certificate is then issued anew by
        ``ensure``); both stay trusted. The old CA's key is deleted: nothing signs with it."""
        if self.ca_change_phase() != "trust":
            raise StateError(f"{self.dir}: no new CA is waiting to sign", path=self.dir)
        _, old = self._signing()
        new = x509.load_pem_x509_certificate(self.next_cert.read_bytes())
        _write_public(self.ca_cert, _pem(old, new))  # both, whatever an interruption left
        _write_public(self.old_cert, _pem(old))
        self.next_key.replace(self.ca_key)  # the switch itself: one rename
        self.next_cert.unlink(missing_ok=True)

    def drop_old_ca(self) -> None:
        """Phase 3: the old CA is no longer trusted."""
        if self.ca_change_phase() != "issue":
            raise StateError(f"{self.dir}: the new CA does not sign yet", path=self.dir)
        _, new = self._signing()
        _write_public(self.ca_cert, _pem(new))
        self.old_cert.unlink()
        self.next_cert.unlink(missing_ok=True)  # if phase 2 was interrupted after its switch

    def _create_ca(self, cert_path: Path | None = None, key_path: Path | None = None) -> None:
        cert_path, key_path = cert_path or self.ca_cert, key_path or self.ca_key
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        # a new CA of a change has a name of its own: two CAs of one subject in one trust file
        # would make the issuer of a certificate ambiguous
        serial = "" if cert_path == self.ca_cert else f" {now:%Y%m%d%H%M%S}"
        name = _name(f"daskfleet CA {self.cluster}{serial}", self.cluster)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256())
        )
        # the certificate first: a key on disk means its certificate is there (a new CA's
        # phase is read from its key)
        _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        _write_private(key_path, _key_pem(key))

    def _issue(self, name: str, address: str | None, server: bool, ca_key, ca_cert,
               cert_path: Path, key_path: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(name)]
        if address:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(address)))
            except ValueError:
                sans.append(x509.DNSName(address))
        cert = (
            x509.CertificateBuilder().subject_name(_name(name, self.cluster))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            # never beyond its CA: a leaf that outlived it would be refused anyway
            .not_valid_after(min(now + VALIDITY, ca_cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(_usages(server)), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        # key and certificate side by side under temp names, then renamed, certificate last:
        # a reader never finds a certificate next to another one's key for long, and ensure()
        # issues a mismatched pair anew
        _write_private(key_path.with_name(key_path.name + ".new"), _key_pem(key))
        cert_tmp = cert_path.with_name(cert_path.name + ".new")
        cert_tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.with_name(key_path.name + ".new").replace(key_path)
        cert_tmp.replace(cert_path)

    def client_security(self):
        from distributed.security import Security

        return Security(tls_ca_file=str(self.ca_cert), tls_client_cert=str(self.client_cert),
                        tls_client_key=str(self.client_key), require_encryption=True)
