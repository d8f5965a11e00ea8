"""DICOM TLS routes of the admin API (README "DICOM TLS"): the PACS's certificate (subject,
expiry, a warning 30 days ahead), the lab CA certificate to download, and a certificate
issued for a node.

The lab CA lives in the TLS folder the PACS uses (``PACS_TLS_DIR``, default ``tls`` beside
the storage folder; in Compose the ``tls`` volume both services mount). The admin API
creates it if the PACS has not yet (same lock, dicomlab.tlsca.ensure_lab).

"Issue a certificate for this node" generates the node's key here, on the server, and
returns it in the bundle: convenient for a lab, where the simulator and test modalities
take a PEM file. A real deployment would not move private keys: the modality makes its
key and a certificate signing request (CSR), and the CA signs the CSR.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from apiflask import Schema, fields
from cryptography.hazmat.primitives import hashes
from flask import Response, current_app

from dicomlab.events import SETTINGS_CHANGED
from dicomlab.tlsca import LabCA, common_name, ensure_lab

from .api import bp, path_title, protected
from .resources import resources

WARN_DAYS = 30
PEM = "application/x-pem-file"


class CertificateInfo(Schema):
    subject = fields.String(metadata={"description": "the certificate's subject, e.g. CN=PACS,O=DICOM Lab"})
    common_name = fields.String(allow_none=True, metadata={"description": "the CN: an AE title (identity rule)"})
    issuer = fields.String()
    serial = fields.String()
    not_before = fields.Float(metadata={"description": "valid from (Unix time)"})
    not_after = fields.Float(metadata={"description": "valid until (Unix time)"})
    days_left = fields.Integer()
    sha256 = fields.String(metadata={"description": "SHA-256 fingerprint (hex, colon-separated)"})
    hosts = fields.List(fields.String(), metadata={"description": "subject alternative names"})
    warning = fields.String(allow_none=True, metadata={"description": "set when it expires within 30 days"})


class TlsOut(Schema):
    folder = fields.String(metadata={"description": "where the lab CA and the PACS's certificate are kept"})
    tls_enabled = fields.Boolean()
    tls_port = fields.Integer(metadata={"description": "the stored setting"})
    live_tls_port = fields.Integer(allow_none=True, metadata={"description": "the TLS port the PACS listens on "
                                                                             "now (its heartbeat); null: off"})
    server = fields.Nested(CertificateInfo, allow_none=True)
    ca = fields.Nested(CertificateInfo)


def folder() -> Path:
    return Path(current_app.config["TLS_DIR"])


def lab_ca() -> LabCA:
    """The lab CA: read when it exists (no Redis needed), else made with the PACS's certificate."""
    if (folder() / "ca.pem").exists() and (folder() / "ca.key").exists():
        return LabCA.ensure(folder())
    return ensure_lab(folder(), resources().registry.get_listener().ae_title)


def describe(cert: Any, now: float | None = None) -> dict[str, Any]:
    from cryptography import x509

    now = now or time.time()
    after = cert.not_valid_after_utc.timestamp()
    days = int((after - now) // 86400)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = [str(v) for v in san.get_values_for_type(x509.DNSName)] + \
                [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        hosts = []
    warning = None
    if after < now:
        warning = "expired: modalities refuse it. Renew it now."
    elif days < WARN_DAYS:
        warning = f"expires in {days} day(s): renew it before then."
    return {"subject": cert.subject.rfc4514_string(), "common_name": common_name(cert),
            "issuer": cert.issuer.rfc4514_string(), "serial": format(cert.serial_number, "x"),
            "not_before": cert.not_valid_before_utc.timestamp(), "not_after": after, "days_left": days,
            "sha256": cert.fingerprint(hashes.SHA256()).hex(":").upper(), "hosts": hosts, "warning": warning}


@bp.get("/tls")
@protected()
@bp.output(TlsOut)
def get_tls():
    """DICOM TLS: the PACS's certificate and the lab CA

    The server certificate's subject, validity and SHA-256 fingerprint, with a warning from 30 days
    before it expires; the TLS port stored and the one the PACS listens on now.
    """
    from cryptography import x509

    reg = resources().registry
    ca = lab_ca()
    settings = reg.get_listener()
    heartbeat = reg.get_heartbeat() or {}
    server_pem = folder() / "server.pem"
    server = describe(x509.load_pem_x509_certificate(server_pem.read_bytes())) if server_pem.exists() else None
    return {"folder": str(folder()), "tls_enabled": settings.tls_enabled, "tls_port": settings.tls_port,
            "live_tls_port": heartbeat.get("tls_port"), "server": server, "ca": describe(ca.cert)}


@bp.get("/tls/ca.pem")
@protected()
@bp.output({}, content_type=PEM, description="the lab CA certificate (PEM): install it as trusted on a modality")
def get_ca_pem():
    """Download the lab CA certificate

    PEM. Install it as trusted on a modality so that it accepts the PACS's certificate.
    """
    return Response(lab_ca().cert_pem, mimetype=PEM,
                    headers={"Content-Disposition": 'attachment; filename="dicomlab-ca.pem"'})


@bp.post("/nodes/<path:ae_title>/certificate")
@protected()
@bp.output({}, content_type=PEM, description="the node's certificate, its private key and the lab CA, PEM")
def issue_node_certificate(ae_title: str):
    """Issue a certificate for this node

    A PEM bundle for the modality: its certificate (subject CN = the node's AE title, the lab's identity
    rule; subject alternative name = its host), its private key and the lab CA certificate. The key is
    generated on the server, which suits a lab only: a real deployment keeps the key on the modality and
    has the CA sign its certificate signing request (CSR).
    """
    reg = resources().registry
    node = reg.get_node(path_title(ae_title))
    ca = lab_ca()
    issued = ca.issue(node.ae_title, [node.host], server=True, client=True)  # it calls the PACS and listens
    cert = issued.cert
    resources().events.emit(
        SETTINGS_CHANGED,
        f"A lab certificate was issued for node {node.ae_title} (CN={node.ae_title}, host {node.host}, serial "
        f"{cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d}); its key left the lab in the "
        "bundle: keep the file private.",
        calling_aet=node.ae_title, outcome="issued", reason="tls-certificate-issued",
        detail={"serial": format(cert.serial_number, "x"), "not_after": cert.not_valid_after_utc.timestamp()},
    )
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in node.ae_title)
    return Response(issued.bundle(ca.cert_pem), mimetype=PEM,
                    headers={"Content-Disposition": f'attachment; filename="{safe}.pem"', "Cache-Control": "no-store"})

