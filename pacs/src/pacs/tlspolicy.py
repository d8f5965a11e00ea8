"""Row 4b of the association policy (DESIGN.md "DICOM TLS"): the node's TLS settings
against the port it came to. Checked after rows 1-4 (registry, called AE title,
calling node, address), so the whole table applies on the TLS port as on the plain
one, and before row 5 (association counts), so a refused node takes no slot.

- ``tls required`` on the plain port: rejected 1/1/3, reason ``tls-required``.
- ``tls off`` on the TLS port: rejected 1/1/3, reason ``tls-not-allowed``. ``off``
  means the node is to use the plain port only (the page says so); refusing it keeps
  the setting meaningful, and the sentence says how to allow it.
- ``client_certificate required`` on the TLS port: a certificate must have been
  presented (the handshake already checked that it chains to the lab CA and is valid
  now, tls.py); none: 1/1/3, ``tls-client-certificate-missing``. Its subject CN must
  equal the calling AE title (the lab's identity rule, dicomlab.tlsca); else 1/1/3,
  ``tls-client-identity-mismatch``, naming both. With ``client_certificate none`` a
  certificate presented is checked by the handshake only (chain, validity), not its CN.
"""

from __future__ import annotations

from typing import Any

from dicomlab import events as E
from dicomlab.dicom import RJ_CALLING_AET, Rejection
from dicomlab.settings import ListenerSettings, Node


def tls_problem(node: Node, settings: ListenerSettings, peer: str, tls: dict[str, Any] | None,
                tls_port: int | None) -> tuple[Rejection, str, str, dict[str, Any]] | None:
    """(rejection, reason, sentence, detail) when the node's TLS settings refuse this association."""
    title = node.ae_title
    if tls is None:
        if node.tls != "required":
            return None
        where = (f"the TLS port {tls_port}" if tls_port else
                 "the TLS port, which is off now (turn it on: tls_enabled in the listener settings)")
        return (RJ_CALLING_AET, E.REASON_TLS_REQUIRED,
                f"Node {title!r} requires DICOM TLS (tls required) but came to the plain port from {peer}. "
                f"Fix: send from the modality to {where} with TLS on, or set the node's tls to allowed.",
                {"tls": node.tls, "tls_port": tls_port})
    version = tls.get("version") or "TLS"
    if node.tls == "off":
        return (RJ_CALLING_AET, E.REASON_TLS_NOT_ALLOWED,
                f"Node {title!r} came over DICOM TLS ({version}) from {peer}, but its tls setting is off (plain port "
                f"only). Fix: set the node's tls to allowed or required, or send to the plain port {settings.port}.",
                {"tls": node.tls, "tls_version": version})
    if node.client_certificate != "required":
        return None
    if not tls.get("certificate"):
        return (RJ_CALLING_AET, E.REASON_TLS_CLIENT_CERTIFICATE_MISSING,
                f"Node {title!r} must present a client certificate from the lab CA (client_certificate required) "
                f"but its TLS connection from {peer} carried none. Fix: install a certificate issued for {title!r} "
                "(\"Issue a certificate\" on the page) on the modality, or set client_certificate to none.",
                {"client_certificate": "required", "tls_version": version})
    cn = tls.get("cn")
    if cn != title:
        return (RJ_CALLING_AET, E.REASON_TLS_CLIENT_IDENTITY,
                f"Node {title!r} presented a lab certificate issued to {cn!r}, not to {title!r}: the certificate's "
                "subject CN must be the calling AE title. Fix: install the certificate issued for "
                f"{title!r} on this modality (or correct its calling AE title).",
                {"certificate_cn": cn, "calling_aet": title, "tls_version": version})
    return None
