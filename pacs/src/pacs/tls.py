"""DICOM TLS on the PACS (PS3.15 Annex B, BCP 195): the server's TLS context, reloaded
when its files change, and the handshake the gate does without a thread.

The context: TLS 1.2 or later; for TLS 1.2 only ECDHE key exchange with AES-GCM or
ChaCha20-Poly1305 (RFC 9325, BCP 195), TLS 1.3 with its own (all AEAD) suites; no
compression, no renegotiation, no session tickets. The certificate and key are the
lab CA's ``server.pem``/``server.key`` in the TLS folder (``PACS_TLS_DIR``, default
``tls`` beside the storage), the CA is ``ca.pem`` (dicomlab.tlsca).

Client certificates: ``CERT_OPTIONAL``. A modality that presents one must present one
that chains to the lab CA and is valid now, or the handshake fails (named: client
certificate untrusted / expired / not yet valid). A modality that presents none
completes the handshake, and the association policy decides from the node's
``client_certificate`` setting: a node that requires one is rejected 1/1/3 with
``tls-client-certificate-missing``, in DICOM words the modality logs, rather than
with a TLS alert that most toolkits report as "connection reset".

Rotation: before each handshake the files' identity (inode, size, modification time)
is compared with the loaded one; when they changed, a new context is built, so the
next handshake uses the new certificate. Files replaced by rename (as tlsca writes
them) are never seen half-written; if the new files do not load, the old context
stays in use and an error event says why.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from dicomlab import events as E
from dicomlab import tlswords
from dicomlab.tlsca import common_name
from dicomlab.tlsclient import BCP195_TLS12_CIPHERS

LOG = logging.getLogger(__name__)

__all__ = ["BCP195_TLS12_CIPHERS", "ServerTls", "Handshake", "Failed", "outbound_folder"]
FILES = ("ca.pem", "server.pem", "server.key")


def server_context(folder: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(BCP195_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    ctx.num_tickets = 0
    ctx.load_cert_chain(folder / "server.pem", folder / "server.key")
    ctx.load_verify_locations(cafile=str(folder / "ca.pem"))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class ServerTls:
    """The PACS's TLS context, rebuilt when the files in ``folder`` change."""

    def __init__(self, folder: str | Path, emit: Callable[..., Any] | None = None) -> None:
        self.folder = Path(folder)
        self.emit = emit
        self._lock = threading.Lock()
        self._ctx: ssl.SSLContext | None = None
        self._stamp: tuple[Any, ...] | None = None
        self._failed_stamp: tuple[Any, ...] | None = None
        self.error = ""  # why there is no usable context (for the close event)
        self.subject = ""
        self.not_after = 0.0

    def _files_stamp(self) -> tuple[Any, ...]:
        out: list[tuple[int, int, int] | None] = []
        for name in FILES:
            try:
                st = os.stat(self.folder / name)
                out.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def context(self) -> ssl.SSLContext | None:
        """The context for the next handshake (reloaded if the files changed); None: no usable
        certificate (``error`` says why)."""
        stamp = self._files_stamp()
        if stamp == self._stamp or stamp == self._failed_stamp:
            return self._ctx
        with self._lock:
            if stamp in (self._stamp, self._failed_stamp):
                return self._ctx
            try:
                ctx = server_context(self.folder)
                cert = x509.load_pem_x509_certificate((self.folder / "server.pem").read_bytes())
            except (OSError, ssl.SSLError, ValueError) as exc:
                self._failed_stamp = stamp
                self.error = (f"the PACS's TLS certificate in {self.folder} could not be loaded "
                              f"({type(exc).__name__}: {exc})")
                if self._ctx is not None:
                    self.error += "; the previous certificate stays in use"
                self._say(f"DICOM TLS: {self.error}. Fix: restore server.pem, server.key and ca.pem (remove them "
                          "and restart the PACS to have new ones issued by the lab CA).", "error")
                return self._ctx
            rotated = self._ctx is not None
            self._ctx, self._stamp, self._failed_stamp, self.error = ctx, stamp, None, ""
            self.subject = f"CN={common_name(cert) or '?'}"
            self.not_after = cert.not_valid_after_utc.timestamp()
            if rotated:
                self._say(f"DICOM TLS: new server certificate loaded ({self.subject}, valid until "
                          f"{cert.not_valid_after_utc:%Y-%m-%d}); the next handshakes use it.", "info")
            return ctx

    def _say(self, text: str, level: str) -> None:
        LOG.log(logging.ERROR if level == "error" else logging.INFO, "%s", text)
        if self.emit is not None:
            try:
                self.emit(E.SETTINGS_CHANGED, text, level=level, reason="tls-certificate",
                          detail={"folder": str(self.folder)})
            except Exception:
                LOG.exception("tls event")


class Failed(Exception):
    """The connection on the TLS port is to be closed: ``reason`` (event reason), ``cause``, ``words``."""

    def __init__(self, reason: str, cause: str, words: str) -> None:
        super().__init__(words)
        self.reason, self.cause, self.words = reason, cause, words


class Handshake:
    """One connection's way through the TLS port, driven by the gate's selector thread:
    look at the first byte (``0x16``: a TLS handshake record; anything else is named and
    closed), then the non-blocking handshake. ``step`` returns the socket the gate reads
    the A-ASSOCIATE-RQ from once the handshake is done, else None (wait for the socket)."""

    __slots__ = ("tls", "sock", "done")

    def __init__(self, tls: ServerTls) -> None:
        self.tls = tls
        self.sock: ssl.SSLSocket | None = None
        self.done = False

    def step(self, raw: socket.socket, sel: selectors.BaseSelector, data: Any, peer: str,
             port: int) -> ssl.SSLSocket | None:
        if self.sock is None:
            try:
                first = raw.recv(8, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as exc:
                raise Failed(E.REASON_TLS_HANDSHAKE_FAILED, "peer-closed", f"the connection from {peer} to the TLS "
                             f"port {port} failed before the handshake ({exc.strerror or exc})") from None
            if not first:
                raise Failed("", "", "")  # connected and closed at once: a port check, no event
            if first[0] != 0x16:
                raise Failed(E.REASON_PLAIN_ON_TLS_PORT, "not-tls", plain_words(first, peer, port))
            ctx = self.tls.context()
            if ctx is None:
                raise Failed(E.REASON_TLS_UNAVAILABLE, "no-certificate", f"a TLS handshake from {peer} on port "
                             f"{port} could not be answered: {self.tls.error}")
            sel.unregister(raw)  # wrap_socket detaches the descriptor from ``raw``
            self.sock = ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            sel.register(self.sock, selectors.EVENT_READ, data)
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            sel.modify(self.sock, selectors.EVENT_READ, data)
            return None
        except ssl.SSLWantWriteError:
            sel.modify(self.sock, selectors.EVENT_WRITE, data)
            return None
        except (ssl.SSLError, OSError) as exc:
            cause, words = tlswords.server_side(exc, peer, port)
            raise Failed(E.REASON_TLS_HANDSHAKE_FAILED, cause, words) from None
        sel.modify(self.sock, selectors.EVENT_READ, data)
        self.done = True
        return self.sock


def plain_words(first: bytes, peer: str, port: int) -> str:
    if first[0] == 0x01:
        what = "a plain DICOM A-ASSOCIATE-RQ (PDU type 0x01) arrived"
    elif 1 <= first[0] <= 7:
        what = f"a plain DICOM PDU (type 0x{first[0]:02X}) arrived"
    else:
        what = f"bytes that are not TLS ({first[:6].hex(' ')}) arrived"
    return (f"{what} on the DICOM TLS port {port} from {peer}: the modality does not use TLS; send it to the "
            "plain port, or turn TLS on at the modality (with the lab CA certificate)")


def transport(sock: Any) -> dict[str, Any] | None:
    """What the policy needs of an association's TLS connection (None: plain)."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    try:
        der = sock.getpeercert(binary_form=True)  # verified against the lab CA by the handshake, if present
    except (ValueError, OSError):
        der = None
    cn = common_name(x509.load_der_x509_certificate(der)) if der else None
    cipher = sock.cipher()
    return {"version": sock.version() or "", "cipher": cipher[0] if cipher else "", "certificate": bool(der),
            "cn": cn}


def expiry_warning(not_after: float, now: float | None = None, days: int = 30) -> str:
    """A warning sentence when the certificate expires within ``days`` (empty otherwise)."""
    left = (not_after - (now or time.time())) / 86400
    if left < 0:
        return "the PACS's TLS certificate has expired: modalities refuse it. Renew it now."
    if left < days:
        return f"the PACS's TLS certificate expires in {int(left)} day(s): renew it before then."
    return ""


def outbound_folder(pacs: Any) -> Path | None:
    """The TLS folder the PACS calls nodes with (``dicomlab.tlsclient``: its certificate as the client
    certificate, the lab CA to check the node's): the one its TLS listener serves from; None: no TLS."""
    server_tls = getattr(getattr(pacs, "tls", None), "tls", None)
    return server_tls.folder if isinstance(server_tls, ServerTls) else None
