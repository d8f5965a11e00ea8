"""The lab's certificate authority for DICOM TLS (PS3.15 Annex B, BCP 195), with
the ``cryptography`` library.

Layout, in one folder (the lab keeps it in its data, next to the storage):

    ca.pem, ca.key          the lab CA (created on first use, then reused)
    server.pem, server.key  the PACS's certificate, issued by the lab CA

Identity rule (one rule, documented in README "DICOM TLS"): **a node's certificate
carries its AE title as the subject's common name (CN)**; the PACS checks that the
CN of a client certificate equals the calling AE title. Host names and addresses
go in the subject alternative name, so a client can check the server's host.

Keys are RSA 2048 (every DCMTK and Orthanc build reads them), private key files
are 0600, certificates SHA-256 signed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "DICOM Lab CA"
CA_DAYS = 3650
CERT_DAYS = 825  # the longest validity browsers and most TLS stacks still accept
KEY_BITS = 2048


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def bundle(self, ca_pem: bytes) -> bytes:
        """One PEM file for a modality: its certificate, its key, the lab CA."""
        return self.cert_pem + self.key_pem + ca_pem


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int) -> None:
    """Written whole under a temporary name, then renamed: a reader sees the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


class LabCA:
    """The CA in ``folder``; ``LabCA.ensure(folder)`` creates it on first use."""

    def __init__(self, folder: Path, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
        self.folder = folder
        self.cert = cert
        self.key = key

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def cert_path(self) -> Path:
        return self.folder / "ca.pem"

    @classmethod
    def ensure(cls, folder: str | Path) -> "LabCA":
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True, mode=0o750)
        cert_path, key_path = folder / "ca.pem", folder / "ca.key"
        if cert_path.exists() and key_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
            return cls(folder, x509.load_pem_x509_certificate(cert_path.read_bytes()), key)
        key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DICOM Lab")])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        _write(key_path, _key_pem(key), 0o600)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cls(folder, cert, key)

    def issue(self, common_name: str, hosts: list[str] | None = None, *, server: bool = False, client: bool = True,
              days: int = CERT_DAYS, not_before: dt.datetime | None = None) -> Issued:
        """A certificate for ``common_name`` (a node's AE title, or the PACS's), with ``hosts`` in the
        subject alternative name. ``not_before``/``days`` let tests and scenarios make expired or
        not-yet-valid certificates."""
        key = _key()
        start = not_before or (_now() - dt.timedelta(minutes=5))
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + \
                 ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                                            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DICOM Lab")]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                                content_commitment=False, data_encipherment=False,
                                                key_agreement=False, key_cert_sign=False, crl_sign=False,
                                                encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False))
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if hosts:
            builder = builder.add_extension(_san(hosts), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def ensure_server(self, ae_title: str, hosts: list[str], *, renew_days: int = 30) -> tuple[Path, Path]:
        """The PACS's certificate and key files, issued when missing or within ``renew_days`` of expiry."""
        cert_path, key_path = self.folder / "server.pem", self.folder / "server.key"
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if cert.not_valid_after_utc - _now() > dt.timedelta(days=renew_days):
                return cert_path, key_path
        issued = self.issue(ae_title, hosts, server=True, client=True)
        _write(key_path, issued.key_pem, 0o600)
        _write(cert_path, issued.cert_pem, 0o644)
        return cert_path, key_path


def common_name(cert: x509.Certificate) -> str | None:
    """The subject's CN: the node's AE title under the lab's identity rule."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else None
    return value if isinstance(value, str) else None


def server_hosts(extra: str | None = None) -> list[str]:
    """The names the PACS's certificate is valid for: loopback, this host, the Compose service
    name ``pacs``, and ``PACS_TLS_HOSTS`` (comma-separated) for the names modalities use."""
    import socket

    hosts = ["localhost", "127.0.0.1", "::1", "pacs", socket.gethostname()]
    raw = os.environ.get("PACS_TLS_HOSTS", "") if extra is None else extra
    return list(dict.fromkeys(hosts + [h.strip() for h in raw.split(",") if h.strip()]))


def ensure_lab(folder: str | Path, ae_title: str, hosts: list[str] | None = None) -> LabCA:
    """The lab CA and the PACS's certificate in ``folder``, created on first use and reused
    afterwards. A lock file keeps two services starting at once (the PACS and the admin API
    share the folder) from making two different CAs."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            ca = LabCA.ensure(folder)
            ca.ensure_server(ae_title, hosts if hosts is not None else server_hosts())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return ca
