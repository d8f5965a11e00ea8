"""A failed DICOM TLS connection, named from the modality's side (the CT calling the
PACS), in words a PACS administrator understands (issue #13).

The words come from the exception (its class, OpenSSL's ``reason`` and, for a
certificate the CT rejected, the X.509 ``verify_code``), never from its text
alone, and from what only the simulator knows: whether it presented a
certificate (TLS 1.2 answers a missing one with a bare handshake_failure alert),
the CA file it trusts, and the first byte a plain association got back.

``TlsWords.reason`` is a short key, the same cause code the PACS puts in its
``tls-handshake-failed`` events (``dicomlab.tlswords`` on the tls-pacs branch):

    unknown-ca                        the PACS's certificate is not signed by a CA the CT trusts
    server-certificate-expired        ... has expired
    server-certificate-not-yet-valid  ... is not valid yet (or a clock is wrong)
    host-name-mismatch                ... does not name the host the CT called
    client-certificate-missing        the PACS wanted a client certificate and got none
    client-certificate-untrusted      the PACS does not trust the CT's certificate's CA
    client-certificate-expired        the PACS says the CT's certificate has expired
    client-certificate-rejected       the PACS refused the CT's certificate otherwise (identity)
    protocol-version                  no TLS version both sides accept
    cipher-mismatch                   no cipher suite both sides accept
    not-tls                           the port answered with something that is not TLS: a plain port
    peer-closed                       the port closed during the handshake without a word
    other                             anything else (OpenSSL's reason quoted)
    plain-to-tls-port                 (plain association) the port answered in TLS, or reset: a TLS port
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

# X.509 verification results (OpenSSL x509_vfy.h) for a server certificate we rejected.
_UNTRUSTED = {2, 7, 18, 19, 20, 21, 24, 27, 28, 30}
_EXPIRED, _NOT_YET_VALID = 10, 9
_HOST_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH

# OpenSSL reasons for an alert the server sent about our certificate, and what they mean.
_CERT_REQUIRED = {"TLSV13_ALERT_CERTIFICATE_REQUIRED", "PEER_DID_NOT_RETURN_A_CERTIFICATE"}
_CERT_REJECTED = {
    "TLSV1_ALERT_UNKNOWN_CA": "is not signed by a CA it trusts",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "has expired (or is not valid yet)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "is not acceptable to it",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "is not acceptable to it",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "is of a kind it does not accept",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "has been revoked",
    "TLSV1_ALERT_ACCESS_DENIED": "does not identify a node it lets in",
}
_VERSION = {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE",
            "TLSV1_ALERT_INSUFFICIENT_SECURITY", "VERSION_TOO_LOW", "VERSION_TOO_HIGH"}
_CIPHER = {"NO_CIPHERS_AVAILABLE", "NO_SHARED_CIPHER", "NO_SUITABLE_SIGNATURE_ALGORITHM",
           "SSLV3_ALERT_HANDSHAKE_FAILURE"}
_NOT_TLS = {"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL",
            "HTTP_REQUEST", "WRONG_SSL_VERSION", "RECORD_TOO_LARGE", "TLSV1_ALERT_DECODE_ERROR"}


@dataclass(frozen=True)
class TlsWords:
    reason: str
    sentence: str
    hint: str

    def text(self) -> str:
        return f"{self.sentence} {self.hint}".strip()


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", "") or "").upper()


def is_tls_error(exc: BaseException | None) -> bool:
    return isinstance(exc, ssl.SSLError) or (isinstance(exc, TimeoutError) and "handshake" in str(exc))


def client_failure(exc: BaseException | None, peer: str, *, me: str = "this CT", them: str = "the PACS",
                   ca_file: str | None = None, mutual: bool = False) -> TlsWords:
    """What a failed TLS connection from ``me`` to ``them`` at ``peer`` means.

    ``exc``: what the handshake (or the first read after it: TLS 1.3 sends the
    server's verdict on a client certificate after the client's handshake has
    completed) raised; None: the server closed without a word. ``ca_file``: the
    CA file ``me`` trusts (named in the hint). ``mutual``: ``me`` presented a
    certificate.
    """
    reason = _reason(exc) if exc is not None else ""
    code = getattr(exc, "verify_code", None)
    import_ca = (f"import the lab CA into {me}'s trusted certificates (the ca.pem whose path `make up` printed, "
                 f"or \"Download the lab CA certificate\" on the admin page)"
                 + (f"; {me} now trusts {ca_file}" if ca_file else ""))
    if isinstance(exc, ssl.SSLCertVerificationError) or reason == "CERTIFICATE_VERIFY_FAILED":
        detail = getattr(exc, "verify_message", "") or reason.lower()
        if code in _HOST_MISMATCH:
            return TlsWords("host-name-mismatch",
                            f"{them}'s certificate at {peer} does not name the host {me} called ({detail}).",
                            f"Call {them} by a host name or address in its certificate's subject alternative "
                            f"name, or reissue its certificate with this name. Skipping the host name check "
                            f"(--tls-no-host-check) is for a lab only.")
        if code == _EXPIRED:
            return TlsWords("server-certificate-expired", f"{them}'s certificate at {peer} has expired ({detail}).",
                            f"Renew {them}'s certificate (the lab renews its own 30 days ahead); if it looks "
                            f"valid, check {me}'s clock.")
        if code == _NOT_YET_VALID:
            return TlsWords("server-certificate-not-yet-valid", f"{them}'s certificate at {peer} is not valid yet ({detail}).",
                            f"The clock of {me} or of the CA that issued it is wrong: set both right (NTP).")
        return TlsWords("unknown-ca",
                        f"{them}'s certificate at {peer} is not signed by a CA {me} trusts ({detail}).",
                        f"Trust the CA that signed it: {import_ca}.")
    if reason in _CERT_REQUIRED or (reason == "SSLV3_ALERT_HANDSHAKE_FAILURE" and not mutual):
        return TlsWords("client-certificate-missing",
                        f"{them} at {peer} wants a client certificate and {me} presented none "
                        f"(TLS alert {reason.lower()}).",
                        f"Give {me} a certificate issued by the lab CA with its AE title as the subject CN "
                        f"(\"Issue a certificate for this node\" on the admin page), or set the node's "
                        f"client_certificate to none.")
    if reason in _CERT_REJECTED:
        cause = {"TLSV1_ALERT_UNKNOWN_CA": "client-certificate-untrusted",
                 "SSLV3_ALERT_CERTIFICATE_EXPIRED": "client-certificate-expired"}.get(reason, "client-certificate-rejected")
        return TlsWords(cause,
                        f"{them} at {peer} refused {me}'s certificate: it {_CERT_REJECTED[reason]} "
                        f"(TLS alert {reason.lower()}).",
                        f"Present a current certificate issued by {them}'s CA whose subject CN is {me}'s AE "
                        f"title (\"Issue a certificate for this node\"); read {them}'s log for its reason.")
    if reason in _VERSION:
        return TlsWords("protocol-version",
                        f"{me} and {them} at {peer} share no TLS version (TLS alert {reason.lower()}).",
                        "DICOM TLS (BCP 195) needs TLS 1.2 or later: update or reconfigure the side that "
                        "offers only TLS 1.0/1.1.")
    if reason in _CIPHER:
        return TlsWords("cipher-mismatch",
                        f"{me} and {them} at {peer} share no cipher suite (TLS alert {reason.lower()}).",
                        "Enable the BCP 195 cipher suites (ECDHE with AES-GCM) on the side that lacks them.")
    if reason in _NOT_TLS:
        return TlsWords("not-tls",
                        f"{peer} answered {me}'s TLS handshake with something that is not TLS "
                        f"({reason.lower()}): it is a plain DICOM port.",
                        f"Send TLS to {them}'s TLS port (DICOM TLS is registered as 2762), or turn TLS off "
                        f"on {me} for this port.")
    if exc is None or isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError,
                                       BrokenPipeError, ConnectionAbortedError)):
        return TlsWords("peer-closed",
                        f"{peer} closed the connection during {me}'s TLS handshake without a word.",
                        f"Most likely this is {them}'s plain DICOM port, which saw a TLS handshake and closed "
                        f"(the lab's PACS logs tls-on-plain-port): send TLS to the TLS port (2762) or turn TLS "
                        f"off on {me}. Otherwise {them} refused the handshake: read its log.")
    if isinstance(exc, TimeoutError):
        return TlsWords("other",
                        f"{peer} accepted the connection but did not complete the TLS handshake in time.",
                        "Is a DICOM TLS service listening there? A plain DICOM port waits for an "
                        "A-ASSOCIATE-RQ and never answers a TLS handshake.")
    what = reason.lower() or type(exc).__name__
    return TlsWords("other", f"the TLS handshake between {me} and {them} at {peer} failed ({what}).",
                    f"Read {them}'s log for this connection.")


def plain_on_tls_port(peer: str, first_byte: int | None, exc: BaseException | None, *, me: str = "this CT",
                      them: str = "the PACS") -> TlsWords | None:
    """A plain DICOM association that got a TLS record back (``first_byte``: the first byte read, where a
    PDU type belongs: 0x15 is a TLS alert, 0x16 a TLS handshake, neither a PDU type) or a reset before
    any answer: words when it looks like a TLS port, else None."""
    tls_record = first_byte in (0x15, 0x16)
    if not tls_record and not isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return None
    seen = (f"answered with a TLS {'alert' if first_byte == 0x15 else 'handshake'} record (first byte "
            f"0x{first_byte:02X}, not a PDU type)" if tls_record
            else "reset the connection before any DICOM answer")
    return TlsWords("plain-to-tls-port",
                    f"{peer} {seen} to {me}'s plain A-ASSOCIATE-RQ: it is most likely a DICOM TLS port.",
                    f"Turn TLS on in {me} for this port (with the lab CA), or send plain DICOM to {them}'s "
                    f"plain port.")
