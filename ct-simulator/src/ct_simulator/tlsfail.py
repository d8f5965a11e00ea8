"""A failed DICOM TLS connection, named from the modality's side (the CT calling the
PACS), in words a PACS administrator understands (issue #13).

The words come from the exception (its class, OpenSSL's ``reason`` and, for a
certificate the CT rejected, the X.509 ``verify_code``), never from its text
alone, and from what only the simulator knows: whether it presented a
certificate (TLS 1.2 answers a missing one with a bare handshake_failure alert),
the CA file it trusts, and the first byte a plain association got back.

The classification is the lab's shared one (``dicomlab.tlswords.client_side``, the client
side of the PACS's own words); this module refines it where only the modality knows better (below) and says it
from the modality's side. ``TlsWords.reason`` is that cause code, the same the PACS puts
in its ``tls-handshake-failed`` events:

    unknown-ca                        the PACS's certificate is not signed by a CA the CT trusts
    server-certificate-expired        ... has expired
    server-certificate-not-yet-valid  ... is not valid yet (or a clock is wrong)
    host-name-mismatch                ... does not name the host the CT called
    client-certificate-missing        the PACS wanted a client certificate and got none
    client-certificate-untrusted      the PACS does not trust (or accept) the CT's certificate
    client-certificate-expired        the PACS says the CT's certificate has expired
    protocol-version                  no TLS version both sides accept
    cipher-mismatch                   no cipher suite both sides accept
    not-tls                           the port answered with something that is not TLS: a plain port
    peer-closed                       the port closed during the handshake without a word
    handshake-timeout                 the port took the connection but never completed the handshake
    other                             anything else (OpenSSL's reason quoted)
    plain-to-tls-port                 (plain association) the port answered in TLS, or reset: a TLS port
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from dicomlab.tlswords import client_side

# Two things the simulator knows that the shared classifier cannot: OpenSSL's reasons for an answer
# that is not TLS at all (a client reads a plain port's bytes as a record with a wrong version), and
# whether it presented a certificate (TLS 1.2 answers a missing one with a bare handshake_failure).
_NOT_TLS = {"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL",
            "HTTP_REQUEST", "WRONG_SSL_VERSION", "RECORD_TOO_LARGE"}


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


def cause_of(exc: BaseException | None, host: str, port: int, mutual: bool) -> str:
    """The cause code: ``dicomlab.tlswords.client_side``'s, refined by what only the modality knows."""
    if exc is None:
        return "peer-closed"
    reason = _reason(exc)
    if reason in _NOT_TLS:
        return "not-tls"
    if reason == "SSLV3_ALERT_HANDSHAKE_FAILURE" and not mutual:
        return "client-certificate-missing"
    if isinstance(exc, TimeoutError) and not isinstance(exc, ssl.SSLError):
        return "handshake-timeout"
    return client_side(exc, host, port)[0]


def client_failure(exc: BaseException | None, host: str, port: int, *, me: str = "this CT",
                   them: str = "the PACS", ca_file: str | None = None, mutual: bool = False) -> TlsWords:
    """What a failed TLS connection from ``me`` to ``them`` at ``host:port`` means.

    ``exc``: what the handshake (or the first read after it: TLS 1.3 sends the
    server's verdict on a client certificate after the client's handshake has
    completed) raised; None: the server closed without a word. ``ca_file``: the
    CA file ``me`` trusts (named in the hint). ``mutual``: ``me`` presented a
    certificate.
    """
    peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cause = cause_of(exc, host, port, mutual)
    reason = _reason(exc) if exc is not None else ""
    alert = f"TLS alert {reason.lower()}" if reason else (type(exc).__name__ if exc is not None else "no alert")
    detail = getattr(exc, "verify_message", "") or alert
    words = _sentences(me, them, peer, detail, alert, ca_file)
    sentence, hint = words.get(cause, (f"the TLS handshake between {me} and {them} at {peer} failed ({alert}).",
                                       f"Read {them}'s log for this connection."))
    return TlsWords(cause, sentence, hint)


def _sentences(me: str, them: str, peer: str, detail: str, alert: str,
               ca_file: str | None) -> dict[str, tuple[str, str]]:
    """``client_failure``'s words: per cause, the sentence and the hint (a table of text)."""
    import_ca = (f"import the lab CA into {me}'s trusted certificates (the ca.pem whose path `make up` printed, "
                 f"or \"Download the lab CA certificate\" on the admin page)"
                 + (f"; {me} now trusts {ca_file}" if ca_file else ""))
    issue = ("\"Issue a certificate for this node\" on the admin page (its subject CN is the node's AE title), "
             f"installed on {me} with its key")
    return {
        "unknown-ca": (f"{them}'s certificate at {peer} is not signed by a CA {me} trusts ({detail}).",
                       f"Trust the CA that signed it: {import_ca}."),
        "server-certificate-expired": (f"{them}'s certificate at {peer} has expired ({detail}).",
                                       f"Renew {them}'s certificate (the lab renews its own 30 days ahead); if it "
                                       f"looks valid, check {me}'s clock."),
        "server-certificate-not-yet-valid": (f"{them}'s certificate at {peer} is not valid yet ({detail}).",
                                             f"The clock of {me} or of the CA that issued it is wrong: set both "
                                             "right (NTP)."),
        "host-name-mismatch": (f"{them}'s certificate at {peer} does not name the host {me} called ({detail}).",
                               f"Call {them} by a host name or address in its certificate's subject alternative "
                               "name, or reissue its certificate with this name. Skipping the host name check "
                               "(--tls-no-host-check) is for a lab only."),
        "client-certificate-missing": (f"{them} at {peer} wants a client certificate and {me} presented none "
                                       f"({alert}).",
                                       f"Give {me} the certificate issued for its node ({issue}), or set the "
                                       "node's client_certificate to none."),
        "client-certificate-expired": (f"{them} at {peer} refused {me}'s certificate: it has expired (or is not "
                                       f"valid yet) ({alert}).",
                                       f"Issue a new one: {issue}; if it looks valid, check {me}'s clock."),
        "client-certificate-not-yet-valid": (f"{them} at {peer} refused {me}'s certificate: it is not valid yet "
                                             f"({alert}).", f"Check the clocks of {me} and {them} (NTP)."),
        "client-certificate-untrusted": (f"{them} at {peer} refused {me}'s certificate: it is not signed by a CA "
                                         f"{them} trusts, or not acceptable to it ({alert}).",
                                         f"Present the certificate of {them}'s CA: {issue}."),
        "protocol-version": (f"{me} and {them} at {peer} share no TLS version ({alert}).",
                             "DICOM TLS (BCP 195) needs TLS 1.2 or later: update or reconfigure the side that "
                             "offers only TLS 1.0/1.1."),
        "cipher-mismatch": (f"{me} and {them} at {peer} share no cipher suite ({alert}).",
                            "Enable the BCP 195 cipher suites (ECDHE with AES-GCM) on the side that lacks them."),
        "not-tls": (f"{peer} answered {me}'s TLS handshake with something that is not TLS ({alert}): it is a "
                    "plain DICOM port.",
                    f"Send TLS to {them}'s TLS port (DICOM TLS is registered as 2762), or turn TLS off on {me} "
                    "for this port."),
        "peer-closed": (f"{peer} closed the connection during {me}'s TLS handshake without a word.",
                        f"Most likely this is {them}'s plain DICOM port, which saw a TLS handshake and closed (the "
                        f"lab's PACS logs tls-on-plain-port): send TLS to the TLS port (2762) or turn TLS off on "
                        f"{me}. Otherwise {them} refused the handshake: read its log."),
        "handshake-timeout": (f"{peer} accepted the connection but did not complete the TLS handshake in time.",
                              "Is a DICOM TLS service listening there? A plain DICOM port waits for an "
                              "A-ASSOCIATE-RQ and never answers a TLS handshake."),
    }


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
