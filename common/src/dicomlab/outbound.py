"""Associations the lab opens *to* a node (the admin API's echo, the PACS's
Storage Commitment reports and C-MOVE sub-operations), with the failure in the
words of DESIGN.md: refused, timed out, unreachable, rejected with result /
source / reason, aborted, TLS failure.

DICOM TLS: ``associate(..., tls="required", tls_folder=...)`` calls the node over TLS with
the lab's client context (``dicomlab.tlsclient``: TLS 1.2+, the node's certificate checked
against the lab CA and its host, the PACS's certificate presented); ``tls`` ``allowed`` and
``off`` call in plain. A failed handshake is kind ``tls-handshake-failed`` with ``cause``
(``dicomlab.tlswords`` codes, e.g. ``unknown-ca``, ``host-name-mismatch``, ``not-tls``) and
its sentence; no usable certificate is kind ``tls-unavailable`` (the node is not called).

The words come from the socket and from pynetdicom's primitives, never from log
text. ``associate`` returns an ``Outbound``: either an established association,
or ``error`` (one sentence) and ``kind`` (a short reason key for events).

Overrides of pynetdicom 3.0.4 (guarded by tests/pacs/test_pynetdicom_drift.py):
``AssociationSocket._create_socket`` (TCP_NODELAY, a recorded connect error) and
``ApplicationEntity._create_socket`` (to keep the socket).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import AddressInformation, AssociationSocket

from . import pdu, tlswords
from .dicom import RJ_REASON, RJ_RESULT, RJ_SOURCE
from .tlsclient import OutboundContext, TlsUnavailable
from .tlsclient import tls_args as lab_tls_args

TLS_HANDSHAKE_FAILED = "tls-handshake-failed"
TLS_UNAVAILABLE = "tls-unavailable"


class _RecordingSocket(socket.socket):
    """A TCP socket that remembers why ``connect`` failed (pynetdicom only logs it)."""

    connect_error: OSError | None = None

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except OSError as exc:
            self.connect_error = exc
            raise


VALID_PDU_TYPES = range(0x01, 0x08)


QUICKACK = True  # an immediate ACK after each PDU sent and read (_OutboundSocket; PACS_QUICKACK=0 turns it off)


class _OutboundSocket(AssociationSocket):
    """pynetdicom's requestor socket, with TCP_NODELAY, a recorded connect error (on
    ``raw_socket``), and what its reads met: ``read_error`` (the first OSError: a reset, a TLS
    alert after the handshake) and ``unknown_pdu`` (the first byte of a PDU of unknown type,
    e.g. 0x15/0x16, a TLS record on a plain association). pynetdicom only logs these.

    Each PDU sent and each read is followed by a request for an immediate ACK (TCP_QUICKACK,
    ``dicomlab.pdu.ack_now``): a peer that keeps Nagle's algorithm on (storescp as Debian builds
    it, a C-MOVE destination) writes each response in small segments and holds each until the
    one before is acknowledged, and Linux delays that ACK up to 40 ms. Measured: a C-MOVE of 40
    instances to such a storescp took 2.0 s (52 delayed ACKs), 0.3 s to one with TCP_NODELAY=1."""

    read_error: OSError | None = None
    unknown_pdu: int | None = None

    def _ack_now(self) -> None:
        sock = self.socket
        if QUICKACK and sock is not None and pdu.quickack_applies(sock):
            pdu.ack_now(sock)

    def send(self, bytestream: bytes) -> None:
        super().send(bytestream)  # pynetdicom's: a failure is its Evt17, not an exception
        self._ack_now()

    def recv(self, nr_bytes: int) -> bytearray:
        try:
            data = super().recv(nr_bytes)
        except OSError as exc:
            if self.read_error is None:
                self.read_error = exc
            raise
        self._ack_now()
        # pynetdicom reads each PDU's type and length first (6 bytes), then its body
        if nr_bytes == 6 and len(data) == 6 and data[0] not in VALID_PDU_TYPES and self.unknown_pdu is None:
            self.unknown_pdu = data[0]
        return data

    def _create_socket(self, address: AddressInformation) -> socket.socket:
        family = socket.AF_INET if address.is_ipv4 else socket.AF_INET6
        sock = _RecordingSocket(family, socket.SOCK_STREAM)
        # Small PDUs (A-ASSOCIATE-RQ, C-ECHO-RQ) go out at once instead of
        # waiting for Nagle's algorithm to coalesce them.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.assoc.network_timeout is not None:
            sock.settimeout(self.assoc.network_timeout)
        sock.bind(address.as_tuple)
        self._is_connected = False
        self.raw_socket = sock  # pynetdicom drops .socket after a failed connect; keep ours
        return sock


class OutboundAE(AE):
    """An AE whose requestor sockets record their connect error."""

    def _create_socket(self, assoc, address, tls_args):  # type: ignore[no-untyped-def]
        sock = _OutboundSocket(assoc, address=address)
        sock.tls_args = tls_args
        self.last_socket = sock
        return sock


def connect_words(exc: BaseException | None, host: str, port: int, timeout: float) -> tuple[str, str]:
    """(kind, sentence) for a TCP connect that failed."""
    where = f"{host}:{port}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection-refused", (f"connection refused: nothing listens on {where} (is the node on, and is its "
                                      f"DICOM port {port}?)")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout", (f"timed out: {where} did not answer within {timeout:g} s (wrong address, host down, or a "
                           "firewall drops the packets)")
    if isinstance(exc, ssl.SSLError):
        return TLS_HANDSHAKE_FAILED, tlswords.client_side(exc, host, port)[1]
    if exc is not None and getattr(exc, "errno", None) in (101, 113):  # ENETUNREACH, EHOSTUNREACH
        return "unreachable", f"no route to {where}: the address is not reachable from the PACS"
    if isinstance(exc, OSError):
        return "connect-failed", f"could not connect to {where}: {exc.strerror or exc}"
    return "connect-failed", f"could not connect to {where}"


@dataclass
class Outbound:
    """The outcome of ``associate``: ``assoc`` established, or ``kind``/``error`` say why not."""

    ae: AE
    assoc: Association
    kind: str | None
    error: str | None
    rejection: tuple[int, int, int] | None = None  # result, source, reason of an A-ASSOCIATE-RJ
    cause: str | None = None  # a TLS failure's cause (dicomlab.tlswords codes)
    tls: str = ""  # the TLS version of an established association ("" plain)

    @property
    def ok(self) -> bool:
        return self.error is None


def resolve(host: str, port: int) -> tuple[str, int]:
    """(address, family) for ``host``; raises OSError with the reason."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _t, _p, _c, sockaddr = infos[0]
    return str(sockaddr[0]), int(family)


@dataclass
class Recorded:
    """What an association's sockets met, which pynetdicom only logs: the TCP connect's error
    (plain, or the ``SSLSocket``'s), the TLS handshake's error or the alert read right after it
    (TLS 1.3 says "client certificate refused" then), a failed read on the association socket,
    and the first byte of a PDU of unknown type."""

    connect_error: BaseException | None = None
    tls_error: BaseException | None = None
    read_error: OSError | None = None
    unknown_pdu: int | None = None


def recorded(ae: AE) -> Recorded:
    """What the sockets of ``ae``'s last association recorded (an ``OutboundAE``; with TLS, an
    ``OutboundContext`` made for that association)."""
    sock = getattr(ae, "last_socket", None)
    raw = getattr(sock, "raw_socket", None)
    out = Recorded(connect_error=raw.connect_error if isinstance(raw, _RecordingSocket) else None,
                   read_error=getattr(sock, "read_error", None), unknown_pdu=getattr(sock, "unknown_pdu", None))
    tls = getattr(sock, "tls_args", None)
    ctx = tls[0] if tls else None
    if isinstance(ctx, OutboundContext):
        out.connect_error = out.connect_error or ctx.connect_error  # with TLS, the connect is the SSLSocket's
        out.tls_error = ctx.handshake_error or ctx.read_error
    return out


def diagnose(ae: AE, assoc: Association, host: str, port: int, timeout: float,
             started: float) -> tuple[str, str, tuple[int, int, int] | None, str | None]:
    """(kind, sentence, rejection, TLS cause) for an association that was not established."""
    if assoc.is_rejected:
        prim = assoc.acceptor.primitive
        rj_result = getattr(prim, "result", None)
        if prim is not None and rj_result in (1, 2) and prim.result_source is not None \
                and prim.diagnostic is not None:
            src, reason = int(prim.result_source), int(prim.diagnostic)
            words = (f"{RJ_RESULT.get(rj_result, rj_result)} / {RJ_SOURCE.get(src, src)} / "
                     f"{RJ_REASON.get((src, reason), reason)}")
            return "rejected", f"association rejected: {words} (codes {rj_result}/{src}/{reason})", \
                (int(rj_result), int(src), int(reason)), None
        return "rejected", "association rejected: the node accepts none of the proposed presentation contexts", \
            None, None
    seen = recorded(ae)
    if seen.tls_error is not None:
        cause, words = tlswords.client_side(seen.tls_error, host, port)
        return TLS_HANDSHAKE_FAILED, words, None, cause
    if seen.connect_error is not None:
        kind, words = connect_words(seen.connect_error, host, port, timeout)
        return kind, words, None, None
    if assoc.is_aborted:
        if time.perf_counter() - started >= timeout * 0.9:
            return "timeout", (f"timed out: {host}:{port} accepted the connection but gave no association answer "
                               f"within {timeout:g} s"), None, None
        return "aborted", "association aborted by the node", None, None
    return "failed", "the association failed", None, None


def associate(calling_aet: str, called_aet: str, host: str, port: int, contexts: list[Any], *,
              timeout: float = 10.0, ext_neg: list[Any] | None = None, evt_handlers: list[Any] | None = None,
              tls_args: tuple[ssl.SSLContext, str] | None = None, tls: str = "off",
              tls_folder: str | Path | None = None) -> Outbound:
    """Request an association; ``contexts`` are pynetdicom presentation contexts (``build_context``).
    ``tls`` is the node's setting: ``required`` calls it with DICOM TLS, the lab's certificate
    and CA taken from ``tls_folder`` (``dicomlab.tlsclient``); ``tls_args`` overrides that."""
    started = time.perf_counter()
    ae = OutboundAE(ae_title=calling_aet)
    for t in ("connection_timeout", "acse_timeout", "dimse_timeout", "network_timeout"):
        setattr(ae, t, timeout)
    ae.requested_contexts = contexts
    if tls_args is None:
        try:
            tls_args = lab_tls_args(tls, called_aet, host, tls_folder)
        except TlsUnavailable as exc:
            return Outbound(ae, Association(ae, "requestor"), TLS_UNAVAILABLE, exc.words)
    try:
        address, family = resolve(host, port)
    except OSError:
        assoc = Association(ae, "requestor")
        return Outbound(ae, assoc, "unresolved", f"the host name {host!r} does not resolve to an address")
    bind = ("::", 0) if family == socket.AF_INET6 else ("", 0)
    assoc = ae.associate(address, port, ae_title=called_aet, bind_address=bind, ext_neg=ext_neg,
                         evt_handlers=evt_handlers, tls_args=tls_args)
    if assoc.is_established:
        return Outbound(ae, assoc, None, None, tls=_tls_version(assoc))
    kind, words, rejection, cause = diagnose(ae, assoc, host, port, timeout, started)
    ae.shutdown()
    return Outbound(ae, assoc, kind, words, rejection, cause)


def _tls_version(assoc: Association) -> str:
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    return (sock.version() or "TLS") if isinstance(sock, ssl.SSLSocket) else ""


@contextmanager
def association(*args: Any, **kwargs: Any) -> Iterator[Outbound]:
    """``associate`` as a context manager: released (or aborted) and shut down on the way out."""
    out = associate(*args, **kwargs)
    try:
        yield out
    finally:
        if out.assoc.is_established:
            try:
                out.assoc.release()
            except Exception:  # noqa: BLE001 - a peer gone mid-release: abort below
                out.assoc.abort()
        out.ae.shutdown()
