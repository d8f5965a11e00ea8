"""DICOM TLS for the associations the lab opens *to* a node: the PACS's Storage Commitment
reports, its C-MOVE sub-operations and the admin API's echo (README "DICOM TLS", "The lab's
own associations").

One rule, in one place (``tls_args_for``): a node whose ``tls`` is ``required`` is called with
DICOM TLS; ``allowed`` and ``off`` are called in plain. A node registers one port, and a port
is either TLS or plain; ``allowed`` is a policy for the associations the node opens to the
PACS (either PACS port), not a promise that its own port speaks TLS.

The client context (``client_context``), built fresh for each association so a renewed
certificate is used at once:

- TLS 1.2 or later; for TLS 1.2 the BCP 195 suites only (ECDHE with AES-GCM or
  ChaCha20-Poly1305), as the PACS's TLS port; no compression, no renegotiation;
- the node's certificate must chain to the lab CA (``ca.pem``; what "Issue a certificate"
  gives a node) and name the host the lab dials (the node's registered host, in the
  certificate's subject alternative names);
- the PACS's own certificate (``server.pem``/``server.key``, CN = the PACS's AE title) is
  presented as the client certificate, so a node that requires one knows who calls.

No usable files (no TLS folder, a missing or broken certificate) is ``TlsUnavailable``: the
lab then does not call the node at all rather than fall back to plain (fail closed).

``OutboundContext`` records what went wrong on its socket (the TCP connect, the handshake, or
the first read: with TLS 1.3 a server's verdict on the client certificate arrives after the
client finished its handshake), because pynetdicom only logs it; ``dicomlab.outbound`` names
it in ``dicomlab.tlswords`` words. One context serves one association.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

BCP195_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!SHA1"
CLIENT_FILES = ("ca.pem", "server.pem", "server.key")
REQUIRED = "required"


class TlsUnavailable(Exception):
    """The node requires TLS and the lab has no usable certificate to call it with (``words``)."""

    def __init__(self, words: str) -> None:
        super().__init__(words)
        self.words = words


class _RecordingSSLSocket(ssl.SSLSocket):
    """An ``SSLSocket`` that tells its ``OutboundContext`` why it failed."""

    def _record(self, slot: str, exc: BaseException) -> None:
        ctx = self.context
        if isinstance(ctx, OutboundContext) and getattr(ctx, slot) is None:
            setattr(ctx, slot, exc)

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except OSError as exc:
            self._record("handshake_error", exc)
            raise

    def connect(self, addr: Any) -> None:
        try:
            super().connect(addr)
        except OSError as exc:
            if self.context is not None and getattr(self.context, "handshake_error", None) is None:
                self._record("connect_error", exc)  # the TCP connect itself
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as exc:  # an alert after the handshake (TLS 1.3: the client certificate refused)
            self._record("read_error", exc)
            raise


class OutboundContext(ssl.SSLContext):
    """A client ``SSLContext`` whose sockets record their failure (for one association)."""

    sslsocket_class = _RecordingSSLSocket
    connect_error: BaseException | None = None
    handshake_error: BaseException | None = None
    read_error: BaseException | None = None
    folder: Path | None = None


def client_context(folder: str | Path) -> OutboundContext:
    """The client context of the lab (see the module text); raises OSError / ssl.SSLError /
    ValueError when the files in ``folder`` do not load."""
    folder = Path(folder)
    ctx = OutboundContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(BCP195_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.load_verify_locations(cafile=str(folder / "ca.pem"))
    ctx.load_cert_chain(folder / "server.pem", folder / "server.key")
    ctx.folder = folder
    return ctx


def uses_tls(node: Any) -> bool:
    """Whether the lab calls ``node`` with DICOM TLS (its ``tls`` is ``required``)."""
    return str(getattr(node, "tls", "off") or "off") == REQUIRED


def tls_args_for(node: Any, folder: str | Path | None) -> tuple[OutboundContext, str] | None:
    """pynetdicom's ``tls_args`` (context, server host name) for an association to ``node``;
    None: plain. Raises ``TlsUnavailable`` when the node requires TLS and the lab cannot do it."""
    return tls_args(str(getattr(node, "tls", "off") or "off"), str(node.ae_title), str(node.host), folder)


def tls_args(mode: str, ae_title: str, host: str, folder: str | Path | None) -> tuple[OutboundContext, str] | None:
    """``tls_args_for`` with the node's ``tls`` setting, AE title and host given one by one."""
    if mode != REQUIRED:
        return None
    who = f"{ae_title} requires DICOM TLS (tls required)"
    if folder is None:
        raise TlsUnavailable(f"{who} and the lab has no TLS folder, so it was not called (never in plain). "
                             "Fix: set PACS_TLS_DIR to the lab CA's folder")
    missing = [name for name in CLIENT_FILES if not (Path(folder) / name).is_file()]
    if missing:
        raise TlsUnavailable(f"{who} and the lab's TLS folder {folder} lacks {', '.join(missing)}, so it was not "
                             "called (never in plain). Fix: start the PACS once (it creates the lab CA and its "
                             "certificate there), or restore the files")
    try:
        ctx = client_context(folder)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TlsUnavailable(f"{who} and the PACS's certificate in {folder} does not load ({type(exc).__name__}: "
                             f"{exc}), so it was not called (never in plain). Fix: remove server.pem and "
                             "server.key and restart the PACS to have new ones issued by the lab CA") from None
    return ctx, host
