"""TLS handshake failures in words a PACS administrator understands, with the fix.

OpenSSL says ``TLSV1_ALERT_UNKNOWN_CA`` or ``certificate verify failed: certificate has
expired``; the lab says which side distrusted which certificate and what to change. One
function per side of the handshake, both returning ``(cause, sentence)``: ``cause`` is a
short code that goes into the event's ``detail.cause`` (the event reason stays
``tls-handshake-failed``, DESIGN.md "DICOM TLS"), ``sentence`` is what the event says.

Causes (both sides use the same codes for the same failure):

    unknown-ca                   the client does not trust the server's CA
    server-certificate-expired   the server's certificate has expired (or a clock is wrong)
    server-certificate-not-yet-valid
    host-name-mismatch           the server's certificate does not name the host the client dialled
    server-certificate-rejected  the client refused the server's certificate for another reason
    client-certificate-untrusted the client's certificate is not issued by the lab CA
    client-certificate-expired / client-certificate-not-yet-valid
    client-certificate-missing   the server requires one and none came
    protocol-version             no TLS version both sides accept (the PACS takes 1.2 and 1.3)
    cipher-mismatch              no cipher suite both sides accept (BCP 195 suites only)
    not-tls                      the bytes are not TLS at all (see also plain-on-tls-port); for a
                                 client: the server answered in plain (its port is not a TLS port)
    peer-closed                  the other side closed during the handshake without saying why
    other                        anything else (OpenSSL's words are kept)
"""

from __future__ import annotations

import ssl

# X509_V_ERR_* codes (OpenSSL x509_vfy.h)
_EXPIRED, _NOT_YET_VALID = 10, 9
_UNTRUSTED = {2, 18, 19, 20, 21, 27, 7}  # unable to get issuer, self-signed, ..., signature failure
_HOSTNAME_MISMATCH = {62, 64}
_INVALID_PURPOSE = 26  # the certificate's extended key usage does not allow this use
# OpenSSL's reasons when a client reads the answer of a plain (not TLS) server as a TLS record
_NOT_TLS = ("WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL",
            "WRONG_SSL_VERSION", "RECORD_TOO_LARGE")


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", "") or "").upper()


def _verify(exc: BaseException) -> tuple[int | None, str]:
    return getattr(exc, "verify_code", None), str(getattr(exc, "verify_message", "") or "")


def _fallback(exc: BaseException) -> str:
    text = str(getattr(exc, "reason", "") or "") or (str(exc) or type(exc).__name__)
    return " ".join(text.split())[:200]


def server_side(exc: BaseException, peer: str, port: int) -> tuple[str, str]:
    """The PACS's handshake with the modality at ``peer`` on TLS port ``port`` failed."""
    who = f"the TLS handshake with {peer} on port {port} failed"
    reason = _reason(exc)
    code, message = _verify(exc)
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in reason:
        if code == _EXPIRED:
            return "client-certificate-expired", (
                f"{who}: the modality's client certificate has expired ({message}). Fix: issue a new "
                "certificate for the node (\"Issue a certificate\" on the page) and install it on the modality, "
                "or correct the modality's clock")
        if code == _NOT_YET_VALID:
            return "client-certificate-not-yet-valid", (
                f"{who}: the modality's client certificate is not valid yet ({message}). Fix: correct the clock "
                "of the modality or of the PACS, or issue a certificate valid from now")
        return "client-certificate-untrusted", (
            f"{who}: the modality's client certificate is not issued by the lab CA ({message or 'not trusted'}). "
            "Fix: install a certificate issued by the lab CA on the modality (\"Issue a certificate\" on the page)")
    if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in reason or "CERTIFICATE_REQUIRED" in reason:
        return "client-certificate-missing", (
            f"{who}: the modality sent no client certificate. Fix: configure the modality's certificate and key")
    if "UNKNOWN_CA" in reason:
        return "unknown-ca", (
            f"{who}: the modality does not trust the PACS's certificate (alert 'unknown CA'): it does not have "
            "the lab CA. Fix: install the lab CA certificate (\"Download the lab CA\" on the page) as trusted on "
            "the modality")
    if "CERTIFICATE_EXPIRED" in reason:
        return "server-certificate-expired", (
            f"{who}: the modality says the PACS's certificate has expired (alert 'certificate expired'). Fix: "
            "renew the PACS certificate (remove server.pem in the TLS folder and restart, or replace it: the next "
            "handshake uses it), or correct the modality's clock")
    if "BAD_CERTIFICATE" in reason or "CERTIFICATE_UNKNOWN" in reason or "UNSUPPORTED_CERTIFICATE" in reason:
        return "server-certificate-rejected", (
            f"{who}: the modality rejected the PACS's certificate (alert '{reason.lower()}'): most often the "
            "modality dialled a host name or address the certificate does not name, or its clock is wrong. "
            "Fix: send to a name in the certificate's subject alternative names (PACS_TLS_HOSTS adds names), "
            "or check the modality's clock")
    if any(k in reason for k in ("UNSUPPORTED_PROTOCOL", "PROTOCOL_VERSION", "WRONG_VERSION_NUMBER",
                                 "VERSION_TOO_LOW", "VERSION_TOO_HIGH")):
        return "protocol-version", (
            f"{who}: no TLS version in common: the PACS accepts TLS 1.2 and 1.3 only (BCP 195), the modality "
            "offered an older one. Fix: enable TLS 1.2 or later on the modality (TLS 1.0 and 1.1 are obsolete)")
    if "NO_SHARED_CIPHER" in reason or "HANDSHAKE_FAILURE" in reason or "NO_CIPHERS" in reason:
        return "cipher-mismatch", (
            f"{who}: no cipher suite in common: the PACS accepts the BCP 195 suites only (ECDHE with AES-GCM or "
            "ChaCha20-Poly1305; TLS 1.3 suites). Fix: enable these suites on the modality (DCMTK: "
            "--profile-bcp195)")
    if "HTTP_REQUEST" in reason or "HTTPS_PROXY_REQUEST" in reason:
        return "not-tls", f"{who}: an HTTP request arrived, not DICOM over TLS. Fix: point the web client elsewhere"
    if isinstance(exc, (ssl.SSLEOFError, ConnectionError, EOFError)) or "EOF" in reason:
        return "peer-closed", (
            f"{who}: the modality closed the connection during the handshake without a TLS alert; it most often "
            "means it refused the PACS's certificate (untrusted CA, host name) or its protocol. Fix: see the "
            "modality's log; give it the lab CA certificate")
    return "other", f"{who}: {_fallback(exc)}. Fix: compare the modality's TLS settings with README \"DICOM TLS\""


def client_side(exc: BaseException, host: str, port: int) -> tuple[str, str]:
    """A handshake this side started, as the client of ``host:port``, failed."""
    who = f"the TLS handshake with {host}:{port} failed"
    reason = _reason(exc)
    code, message = _verify(exc)
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in reason:
        if code == _EXPIRED:
            return "server-certificate-expired", (
                f"{who}: the server's certificate has expired ({message}). Fix: renew the server's certificate, "
                "or correct the clock")
        if code == _NOT_YET_VALID:
            return "server-certificate-not-yet-valid", (
                f"{who}: the server's certificate is not valid yet ({message}). Fix: correct the clock")
        if code in _HOSTNAME_MISMATCH:
            return "host-name-mismatch", (
                f"{who}: the server's certificate does not name {host} ({message}). Fix: dial a name in its "
                "subject alternative names, or reissue the certificate with this name")
        if code == _INVALID_PURPOSE:
            return "server-certificate-rejected", (
                f"{who}: the server's certificate is not for a TLS server ({message}: its extended key usage "
                "lacks serverAuth). Fix: reissue it as a server certificate (the lab's \"Issue a certificate\" "
                "does)")
        return "unknown-ca", (
            f"{who}: the server's certificate is not issued by a CA this side trusts ({message or 'untrusted'}). "
            "Fix: trust the server's CA (the lab CA: \"Download the lab CA\" on the page)")
    if "UNKNOWN_CA" in reason:
        return "client-certificate-untrusted", (
            f"{who}: the server does not trust this side's client certificate (alert 'unknown CA'). Fix: use a "
            "certificate issued by the server's CA")
    if "CERTIFICATE_EXPIRED" in reason:
        return "client-certificate-expired", (
            f"{who}: the server says this side's client certificate has expired. Fix: issue a new one")
    if "CERTIFICATE_REQUIRED" in reason:
        return "client-certificate-missing", (
            f"{who}: the server requires a client certificate and none was sent. Fix: configure one")
    if "BAD_CERTIFICATE" in reason or "CERTIFICATE_UNKNOWN" in reason:
        return "client-certificate-untrusted", (
            f"{who}: the server rejected this side's client certificate (alert '{reason.lower()}'). Fix: use a "
            "certificate issued by the server's CA, valid now")
    if reason in _NOT_TLS:
        return "not-tls", (
            f"{who}: the server answered in plain, not TLS ({reason.lower()}): {host}:{port} is a plain DICOM "
            "port. Fix: register the node's DICOM TLS port, or set the node's tls to off if it has none")
    if any(k in reason for k in ("UNSUPPORTED_PROTOCOL", "PROTOCOL_VERSION", "VERSION_TOO_LOW",
                                 "VERSION_TOO_HIGH", "NO_PROTOCOLS_AVAILABLE")):
        return "protocol-version", (
            f"{who}: no TLS version in common ({_fallback(exc)}). Fix: use TLS 1.2 or later on both sides")
    if "HANDSHAKE_FAILURE" in reason or "NO_SHARED_CIPHER" in reason or "NO_CIPHERS" in reason:
        return "cipher-mismatch", (
            f"{who}: no cipher suite in common. Fix: enable the BCP 195 suites (ECDHE with AES-GCM) on both sides")
    if isinstance(exc, (ssl.SSLEOFError, ConnectionError, EOFError)) or "EOF" in reason:
        return "peer-closed", (
            f"{who}: the server closed the connection during the handshake without a TLS alert: most often "
            f"{port} is a plain DICOM port (a plain listener drops a TLS hello), or the server refused this "
            "side's certificate. Fix: register the node's DICOM TLS port (or set its tls to off), and see the "
            "node's log")
    return "other", f"{who}: {_fallback(exc)}"
