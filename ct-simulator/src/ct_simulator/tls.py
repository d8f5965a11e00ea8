"""DICOM TLS on the CT simulator's side (PS3.15 Annex B, BCP 195), and its
misbehaviour on demand.

``TlsSpec`` is what was asked for (files, a certificate to request from the
admin API, a misbehaviour); ``TlsSpec.context()`` turns it into the
``ssl.SSLContext`` pynetdicom's requestor wraps its socket with, making on the
way whatever the misbehaviour needs (a throwaway CA, an expired certificate)
in a private temporary folder.

Right by default: TLS 1.2 or later, the PACS's certificate verified against
the CA given, and its host name checked against the certificate's subject
alternative name (``check_hostname=False`` skips only that check, and is named
so). Misbehaviour:

    trust_other_ca   trust a fresh CA of our own instead of the lab's: the PACS's
                     certificate is then "not signed by a CA this CT trusts"
    no_cert          present no client certificate
    expired_cert     present a certificate of the lab CA that expired yesterday
                     (needs the lab CA's folder: its key signs it)
    cert_of          present another node's certificate (the AE title named), from
                     the admin API or signed with the lab CA's folder
    outdated         offer TLS 1.0 and 1.1 only, at OpenSSL security level 0
                     (``outdated_unavailable()`` says whether this OpenSSL can)

Talking TLS to the plain port and plain to the TLS port are a matter of ports
(``cli --wrong-port``), not of the context.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from dicomlab.tlsca import LabCA
from dicomlab.tlsclient import OutboundContext

OUTDATED_CIPHERS = "DEFAULT:@SECLEVEL=0"


class TlsSetupError(ValueError):
    """The TLS material asked for cannot be had (a missing file, an admin API that refuses)."""


@dataclass
class TlsSpec:
    ca_file: str | None = None  # the CA the CT trusts (the lab CA)
    cert_file: str | None = None  # the CT's certificate (a bundle with the key in it will do)
    key_file: str | None = None
    bundle: str | None = None  # one PEM file: certificate, key, CA (what the admin API issues)
    check_hostname: bool = True
    server_name: str | None = None  # the name checked against the PACS's certificate (default: the host called)
    request_from: tuple[str, str] | None = None  # (admin API URL, token): request the CT's certificate
    lab_ca_dir: str | None = None  # the lab CA's folder (ca.pem, ca.key), to sign misbehaving certificates
    # misbehaviour
    trust_other_ca: bool = False
    no_cert: bool = False
    expired_cert: bool = False
    cert_of: str | None = None
    outdated: bool = False
    _materials_made: tuple[str | None, str | None, str | None] | None = field(default=None, repr=False,
                                                                               compare=False)
    _tmp: Any = field(default=None, repr=False, compare=False)
    ca_in_use: str | None = field(default=None, repr=False, compare=False)  # the CA file the context trusts
    notes: list[str] = field(default_factory=list, compare=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TlsSpec:
        """From the scenario runner's JSON (the same names; ``request_from`` as a two-item list)."""
        known = {k for k in cls.__dataclass_fields__ if not k.startswith("_") and k not in ("notes", "ca_in_use")}
        unknown = set(d) - known
        if unknown:
            raise TlsSetupError(f"unknown TLS option(s): {', '.join(sorted(unknown))}")
        kw = dict(d)
        if kw.get("request_from"):
            kw["request_from"] = tuple(kw["request_from"])
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__
                if not k.startswith("_") and k not in ("notes", "ca_in_use") and getattr(self, k) not in (None, False)
                or k == "check_hostname" and not self.check_hostname}

    @property
    def presents_cert(self) -> bool:
        return not self.no_cert and bool(self.cert_file or self.bundle or self.request_from or self.expired_cert
                                         or self.cert_of)

    def describe(self) -> str:
        bits = ["TLS 1.0/1.1 only (SECLEVEL=0)" if self.outdated else "TLS 1.2+"]
        if not self.check_hostname:
            bits.append("host name not checked")
        if self.trust_other_ca:
            bits.append("trusting another CA")
        if self.no_cert:
            bits.append("no client certificate")
        if self.expired_cert:
            bits.append("an expired client certificate")
        if self.cert_of:
            bits.append(f"the certificate of {self.cert_of}")
        return ", ".join(bits)

    # -- the material ------------------------------------------------------------------
    def _folder(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ct-tls-")
        return Path(self._tmp.name)

    def _lab_ca(self, why: str) -> LabCA:
        if not self.lab_ca_dir:
            raise TlsSetupError(f"{why} needs the lab CA's folder (its ca.pem and ca.key sign it): give "
                                "--tls-lab-ca DIR")
        folder = Path(self.lab_ca_dir)
        if not ((folder / "ca.pem").is_file() and (folder / "ca.key").is_file()):
            raise TlsSetupError(f"{folder} has no ca.pem and ca.key (the lab CA's folder)")
        return LabCA.ensure(folder)

    def _write(self, name: str, data: bytes) -> str:
        path = self._folder() / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return str(path)

    def _materials(self, calling_aet: str) -> tuple[str | None, str | None, str | None]:
        """(CA file to trust, certificate file, key file) after requests and misbehaviour."""
        ca, cert, key = self.ca_file, self.cert_file, self.key_file
        if self.bundle:
            ca = ca or self.bundle
            cert, key = cert or self.bundle, key or self.bundle
        if self.request_from:  # also for no_cert / expired_cert: the bundle brings the lab CA to trust
            who = self.cert_of or calling_aet
            pem = request_certificate(*self.request_from, who)
            path = self._write(f"{who}.pem".replace("/", "_"), pem)
            self.notes.append(f"certificate for {who} issued by the admin API")
            ca = ca or path
            cert = key = path
        if self.expired_cert or (self.cert_of and not self.request_from):
            lab = self._lab_ca("an expired certificate" if self.expired_cert else "another node's certificate")
            who = self.cert_of or calling_aet
            start = dt.datetime.now(dt.UTC) - dt.timedelta(days=31)
            issued = lab.issue(who, client=True, days=30, not_before=start) if self.expired_cert \
                else lab.issue(who, client=True)
            cert, key = self._write("client.pem", issued.cert_pem), self._write("client.key", issued.key_pem)
            ca = ca or str(lab.cert_path)
        if self.trust_other_ca:
            other = LabCA.ensure(self._folder() / "other-ca")
            ca = str(other.cert_path)
        if self.no_cert:
            cert = key = None
        return ca, cert, key

    def context(self, calling_aet: str) -> ssl.SSLContext:
        """A client context for one association (the files behind it are made once). An
        ``OutboundContext`` (``dicomlab.tlsclient``): its socket records why a connect, a handshake or
        a read after it failed -- pynetdicom only logs that -- for ``network`` to name."""
        if self._materials_made is None:
            self._materials_made = self._materials(calling_aet)
        ca, cert, key = self._materials_made
        ctx = OutboundContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.outdated:
            why = outdated_unavailable()
            if why:
                raise TlsSetupError(f"cannot offer TLS 1.0/1.1 only: {why}")
            ctx.set_ciphers(OUTDATED_CIPHERS)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version, ctx.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
        else:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # BCP 195
        ctx.check_hostname = self.check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            if ca:
                ctx.load_verify_locations(cafile=ca)
            else:
                ctx.load_default_certs()
            if cert:
                ctx.load_cert_chain(certfile=cert, keyfile=key or cert)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(f"cannot load the TLS files ({ca or 'system CAs'}, {cert or 'no certificate'}): "
                                f"{getattr(exc, 'strerror', None) or exc}") from exc
        self.ca_in_use = ca
        return ctx

    def tls_args(self, calling_aet: str, host: str) -> tuple[ssl.SSLContext, str]:
        return self.context(calling_aet), self.server_name or host


@cache
def outdated_unavailable() -> str | None:
    """None when this OpenSSL completes a TLS 1.1 handshake at SECLEVEL=0 (tried in memory); else why not."""
    if not (ssl.HAS_TLSv1 or ssl.HAS_TLSv1_1):
        return f"{ssl.OPENSSL_VERSION} was built without TLS 1.0 and 1.1"
    with tempfile.TemporaryDirectory(prefix="ct-tls-probe-") as tmp:
        ca = LabCA.ensure(tmp)
        issued = ca.issue("probe", ["localhost"], server=True)
        cert, key = Path(tmp) / "s.pem", Path(tmp) / "s.key"
        cert.write_bytes(issued.cert_pem)
        key.write_bytes(issued.key_pem)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                server.set_ciphers(OUTDATED_CIPHERS)
                server.minimum_version = ssl.TLSVersion.TLSv1
                server.load_cert_chain(cert, key)
                client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                client.set_ciphers(OUTDATED_CIPHERS)
                client.minimum_version, client.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
                client.load_verify_locations(ca.cert_path)
            except (ssl.SSLError, ValueError) as exc:
                return f"{ssl.OPENSSL_VERSION} refuses the settings: {exc}"
            a, b, c, d = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
            s = server.wrap_bio(a, b, server_side=True)
            cl = client.wrap_bio(c, d, server_hostname="localhost")
            for _ in range(10):
                done = 0
                for obj, out, into in ((cl, d, a), (s, b, c)):
                    try:
                        obj.do_handshake()
                        done += 1
                    except ssl.SSLWantReadError:
                        pass
                    except ssl.SSLError as exc:
                        return f"{ssl.OPENSSL_VERSION} cannot complete a TLS 1.0/1.1 handshake: {exc.reason}"
                    into.write(out.read())
                if done == 2:
                    return None if cl.version() in ("TLSv1", "TLSv1.1") else \
                        f"{ssl.OPENSSL_VERSION} negotiated {cl.version()}"
    return f"{ssl.OPENSSL_VERSION}: the TLS 1.0/1.1 handshake did not complete"


def request_certificate(api_url: str, token: str, ae_title: str, timeout: float = 30.0) -> bytes:
    """A PEM bundle (certificate, key, lab CA) for the node ``ae_title``, issued by the admin API."""
    url = f"{api_url.rstrip('/')}{CERT_ROUTE.format(ae=urllib.parse.quote(ae_title, safe=''))}"
    req = urllib.request.Request(url, data=b"{}", method="POST")
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:600].decode(errors="replace")
        try:
            body = json.loads(detail)
            detail = body.get("error") or body.get("detail") or detail
        except (ValueError, AttributeError):
            pass
        raise TlsSetupError(f"the admin API would not issue a certificate for {ae_title}: HTTP {exc.code} "
                            f"{detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise TlsSetupError(f"cannot reach the admin API at {api_url} for a certificate: {exc}") from exc
    if b"-----BEGIN CERTIFICATE-----" not in body or b"PRIVATE KEY-----" not in body:
        raise TlsSetupError(f"the admin API's answer for {ae_title} is not a PEM bundle with a key")
    return body


# The admin API's route that issues a node's PEM bundle (the tls-pacs branch's; see README "DICOM TLS").
CERT_ROUTE = "/api/nodes/{ae}/certificate"
