"""The gate's pending connections (gate.py): each one read, checked and either closed
or handed over to pynetdicom, without a thread of its own.

After the pending caps (gate.py ``Gate._admit``), what the gate checks, in order (each
check before anything is allocated):

- on the TLS port (a server carrying ``lab_tls``, tlslistener.py): the first byte must
  be 0x16 (a TLS handshake record), else the connection is closed, reason
  ``plain-on-tls-port``; then the TLS handshake, non-blocking, in the gate's selector
  loop (tls.Handshake), counted in ``assoc_request_timeout``; a failed one is named
  with reason ``tls-handshake-failed`` and its cause in words (dicomlab.tlswords),
  counted apart per cause, and drained before it is closed (``_drain_after_alert``:
  the client reads OpenSSL's alert, not a reset). The request is then read through TLS, and the TLS socket
  is handed over: both data-phase engines read and write through it.
- the 6-byte PDU header, then the body as it arrives (the buffer grows with what
  arrived; the length field only bounds it):
  - ``0x16 0x03`` first (a TLS record): closed, reason ``tls-on-plain-port``.
  - an unknown PDU type: A-ABORT source 2, reason 1 (unrecognized PDU);
  - a known type other than A-ASSOCIATE-RQ: A-ABORT 2/2 (unexpected PDU);
  - an A-ASSOCIATE-RQ longer than 64 KiB, or shorter than its 68 bytes of fixed
    fields: A-ABORT 2/6 (invalid PDU parameter value); all three reason ``pdu-invalid``.
- the complete request, decoded with pynetdicom's own decoder plus the checks its
  negotiation would raise on (rqcheck.py): malformed, A-ABORT 2/6, ``pdu-invalid``.
  After an A-ABORT the gate shuts its side and discards what still arrives (at
  most 2 s), so the peer reads the A-ABORT rather than a connection reset.
- a deadline: the request must be complete within ``assoc_request_timeout``
  seconds of the accept (DCMTK's ARTIM), else the connection is closed, reason
  ``request-timeout``.

A complete request is handed over (``_hand_over``) to ``LabServer.process_request``
(transport.py) with the bytes already read, which ``FastSocket`` serves first.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import socket
import ssl
import time
from typing import Any

from dicomlab import events as E
from dicomlab import pdu as codec
from dicomlab.pdu import ABORT_INVALID_PARAMETER as ABORT_INVALID_VALUE
from dicomlab.pdu import ABORT_UNEXPECTED_PDU as ABORT_UNEXPECTED
from dicomlab.pdu import ABORT_UNRECOGNIZED_PDU as ABORT_UNRECOGNIZED
from dicomlab.pdu import ABORT_WORDS, PDU_NAMES
from dicomlab.pdu import abort_pdu as a_abort  # an A-ABORT from the service provider (source 2)

from .counters import Counts
from .notes import Notes
from .rqcheck import rq_check
from .tls import Failed, Handshake

LOG = logging.getLogger(__name__)

MAX_RQ = codec.MAX_ASSOCIATE_RQ  # largest A-ASSOCIATE-RQ body accepted (PS3.8 sets no limit; real ones < 4 KiB)
MIN_RQ = codec.ASSOCIATE_FIXED_LENGTH  # protocol version, reserved, called and calling AE titles, reserved
LINGER = 2.0  # seconds an aborted connection may keep sending before it is closed
REASON_TLS = "tls-on-plain-port"

HINT = "is this peer speaking DICOM?"


class Pending:
    """A connection the gate holds: reading its request, or closing after an A-ABORT."""

    __slots__ = ("sock", "address", "peer", "server", "deadline", "buf", "need", "closing", "discarded", "since",
                 "tls")

    def __init__(self, sock: socket.socket, address: Any, server: Any, deadline: float) -> None:
        self.sock = sock
        self.address = address
        self.peer = str(address[0]) if isinstance(address, tuple) else str(address)
        self.server = server
        self.deadline = deadline
        self.buf = bytearray()
        self.need = 6  # bytes of the PDU (header first, then header + body)
        self.closing = False
        self.discarded = 0
        self.since = time.time()  # the TCP connect, for the association ladder (dicomlab.ladder)
        self.tls: Handshake | None = None  # on the TLS port: the handshake, done before the request is read


class PendingRequests:
    """The part of ``Gate`` that serves its pending connections (a mixin: the state is the Gate's)."""

    pacs: Any  # gives ``limits``, ``events``, ``tls_port``
    counts: Counts
    notes: Notes
    handed: dict[socket.socket, bytearray]
    decoded: dict[socket.socket, tuple[bytes, Any]]
    primitives: dict[socket.socket, Any]
    since: dict[socket.socket, tuple[float, float]]
    _sel: selectors.BaseSelector
    _pending: dict[socket.socket, Pending]
    _timers: list[tuple[float, int, Pending]]
    _seq: itertools.count[int]

    def _serve(self, p: Pending) -> None:
        hs = p.tls
        if hs is not None and not hs.done and not p.closing:
            if not self._handshake(p, hs):
                return
        self._read(p)
        # TLS: a record may hold more than was asked for; what OpenSSL already decrypted
        # does not make the socket readable again
        while (hs is not None and not p.closing and self._pending.get(p.sock) is p
               and isinstance(p.sock, ssl.SSLSocket) and p.sock.pending()):
            self._read(p)

    def _handshake(self, p: Pending, hs: Handshake) -> bool:
        """One step of the TLS handshake (tls.py); True once it is done and the request can be read."""
        port = p.server.server_address[1]
        try:
            return hs.step(p.sock, self._sel, p, p.peer, port) is not None
        except Failed as f:
            # the step that wrapped the socket can fail too (the client's certificate often arrives
            # before the first step returns): the gate holds the TLS socket before it closes it
            self._rekey(p, hs)
            if f.reason:
                self._note_closed(p, f.reason, f.words, {"port": port, "cause": f.cause, "tls": True},
                                  kind=f.cause)
            if hs.sock is None:
                self._close(p)  # nothing of TLS was said (not TLS at all, or no certificate to answer with)
            else:
                self._drain_after_alert(p)
            return False
        finally:
            self._rekey(p, hs)

    def _rekey(self, p: Pending, hs: Handshake) -> None:
        if hs.sock is not None and p.sock is not hs.sock and not p.closing:  # wrapped: the TLS socket now
            if self._pending.pop(p.sock, None) is p:
                self._pending[hs.sock] = p
            p.sock = hs.sock

    def _drain_after_alert(self, p: Pending) -> None:
        """A failed handshake: OpenSSL has written its alert (TLS 1.3: the verdict on the client's
        certificate, which the client reads after its side of the handshake is done, often after it
        has sent its A-ASSOCIATE-RQ). OpenSSL stops reading at the record it refused, so the client's
        last handshake records (and its request) are still unread: closing now sends a TCP reset, the
        client's next write fails (EPIPE/ECONNRESET; Python: SSLEOFError) before it reads the alert,
        and it names the failure "peer closed" (measured: 3 to 73 of 100 runs, with load). So the TLS
        layer is dropped (its state is dead), the write side is shut (FIN after the alert) and what
        still arrives is read and discarded until the client closes, for at most LINGER seconds, as
        after an A-ABORT."""
        tls_sock = p.sock
        try:
            self._sel.unregister(tls_sock)
        except (KeyError, ValueError, OSError):
            pass
        try:
            raw = socket.socket(fileno=tls_sock.detach())  # the same descriptor, without OpenSSL
        except OSError:
            self._close(p)
            return
        if self._pending.pop(tls_sock, None) is p:
            self._pending[raw] = p
        p.sock = raw
        try:
            raw.setblocking(False)
            raw.shutdown(socket.SHUT_WR)
            self._sel.register(raw, selectors.EVENT_READ, p)
        except (OSError, ValueError):
            self._close(p)
            return
        self._linger(p)

    def _read(self, p: Pending) -> None:
        try:
            data = p.sock.recv(65536 if p.closing else min(p.need - len(p.buf), 65536))
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            data = b""
        if p.closing:
            p.discarded += len(data)
            if not data or p.discarded > 1 << 20:
                self._close(p)
            return
        if not data:
            if p.buf:  # gone in the middle of its request
                self._note_closed(p, "peer-closed", f"the peer closed the connection after {len(p.buf)} byte(s) "
                                  "of an incomplete request. Fix: none needed unless this repeats; then check "
                                  f"the modality's network path ({HINT})", {"bytes": len(p.buf)})
            self._close(p)  # nothing sent at all: a port check, not worth an event
            return
        p.buf += data
        if p.tls is None and len(p.buf) >= 2 and p.buf[0] == 0x16 and p.buf[1] == 0x03:
            port = p.server.server_address[1]
            tls_port = getattr(self.pacs, "tls_port", None)
            where = f"the TLS port {tls_port}" if tls_port else "the TLS port (the TLS listener is off: tls_enabled)"
            self._note_closed(p, REASON_TLS, f"a TLS handshake arrived on the plain DICOM port {port} from "
                              f"{p.peer}: the modality uses TLS; send it to {where} or turn TLS off on the "
                              "modality", {"port": port, "tls_port": tls_port})
            self._close(p)
            return
        if len(p.buf) < p.need:
            return
        if p.need == 6:
            self._check_header(p)
            if p.closing or len(p.buf) < p.need:
                return
        raw = bytes(p.buf)
        checked = rq_check(raw)  # what pynetdicom would raise on rather than answer
        problem, decoded = checked.problem, checked.decoded
        if problem is not None:
            self._abort(p, ABORT_INVALID_VALUE, f"its A-ASSOCIATE-RQ is malformed: {problem}; {HINT}",
                        {"pdu_type": 1, "length": len(p.buf) - 6})
            return
        self._hand_over(p, None if decoded is None else (raw, decoded),
                        None if checked.primitive is None else (checked.primitive, checked.key))

    def _check_header(self, p: Pending) -> None:
        pdu_type, length = codec.parse_header(p.buf)
        head = p.buf[:6].hex(" ")
        if pdu_type not in PDU_NAMES:
            self._abort(p, ABORT_UNRECOGNIZED, f"the first bytes ({head}) are not a DICOM PDU (unknown PDU type "
                        f"0x{pdu_type:02X}); {HINT}", {"pdu_type": pdu_type, "first_bytes": head})
        elif pdu_type != 1:
            self._abort(p, ABORT_UNEXPECTED, f"the first PDU was a {PDU_NAMES[pdu_type]} (type 0x{pdu_type:02X}), "
                        f"not an A-ASSOCIATE-RQ; {HINT}", {"pdu_type": pdu_type, "length": length})
        elif length > MAX_RQ:
            self._abort(p, ABORT_INVALID_VALUE, f"its A-ASSOCIATE-RQ claims {length} bytes, more than the "
                        f"{MAX_RQ} accepted (nothing was allocated for it); {HINT}", {"pdu_type": 1, "length": length})
        elif length < MIN_RQ:
            self._abort(p, ABORT_INVALID_VALUE, f"its A-ASSOCIATE-RQ claims {length} bytes, fewer than its "
                        f"{MIN_RQ} bytes of fixed fields; {HINT}", {"pdu_type": 1, "length": length})
        else:
            p.need = 6 + length

    def _abort(self, p: Pending, reason: int, what: str, detail: dict[str, Any]) -> None:
        port = p.server.server_address[1]
        self._note_closed(p, E.REASON_PDU_INVALID, f"A-ABORT (source 2, reason {reason}: {ABORT_WORDS[reason]}) "
                          f"sent to {p.peer} on port {port}: {what}", {**detail, "abort_source": 2,
                                                                      "abort_reason": reason, "port": port})
        try:
            p.sock.send(a_abort(reason))
            p.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(p)
            return
        self._linger(p)

    def _linger(self, p: Pending) -> None:
        """Read and discard what still comes (at most LINGER s, 1 MiB), so the peer reads what was sent
        last (an A-ABORT, a TLS alert), not a reset."""
        p.closing = True
        p.deadline = time.monotonic() + LINGER
        heapq.heappush(self._timers, (p.deadline, next(self._seq), p))

    def _note_closed(self, p: Pending, reason: str, what: str, detail: dict[str, Any], kind: str = "") -> None:
        first = what if what.startswith("A-ABORT") else f"closed the connection from {p.peer}: {what}"
        self.notes.add(reason, p.peer, first, what, detail, time.monotonic(), kind)

    def _expire(self, now: float) -> None:
        if len(self._timers) > 4 * len(self._pending) + 256:  # drop the entries of handed-over connections
            self._timers = [t for t in self._timers if self._pending.get(t[2].sock) is t[2] and t[2].deadline == t[0]]
            heapq.heapify(self._timers)
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, p = heapq.heappop(timers)
            if p.sock not in self._pending or self._pending[p.sock] is not p or p.deadline != deadline:
                continue  # handed over, closed, or given a new deadline
            if not p.closing and p.tls is not None and not p.tls.done:
                limit = self.pacs.limits.assoc_request_timeout
                self._note_closed(
                    p, E.REASON_REQUEST_TIMEOUT,
                    f"no TLS handshake completed within {limit} s (assoc_request_timeout) on the TLS port "
                    f"{p.server.server_address[1]}. Fix: if this is a modality, check that it speaks TLS to this "
                    "port, or raise assoc_request_timeout; otherwise it is a port scan or a stuck peer",
                    {"bytes": 0, "assoc_request_timeout": limit, "tls": True})
            elif not p.closing:
                limit = self.pacs.limits.assoc_request_timeout
                self._note_closed(
                    p, E.REASON_REQUEST_TIMEOUT,
                    f"no complete A-ASSOCIATE-RQ within {limit} s (assoc_request_timeout; {len(p.buf)} byte(s) "
                    f"arrived). Fix: if this is a modality, check its network path or raise "
                    f"assoc_request_timeout; otherwise it is a port scan or a stuck peer",
                    {"bytes": len(p.buf), "assoc_request_timeout": limit})
            self._close(p)

    def _forget(self, p: Pending) -> None:
        if self._pending.pop(p.sock, None) is not None:
            self.counts.give_back(p.peer)
        try:
            self._sel.unregister(p.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _close(self, p: Pending) -> None:
        self._forget(p)
        try:
            p.sock.close()
        except OSError:
            pass

    def _hand_over(self, p: Pending, decoded: tuple[bytes, Any] | None = None, primitive: Any = None) -> None:
        """The request is complete: to pynetdicom, on the association thread pool (``decoded``: its
        bytes and the request rqcheck decoded from them, or None; ``primitive``: rqcheck's read-only
        primitive of the request and its digest, for the direct accept)."""
        self._forget(p)
        try:
            p.sock.setblocking(True)
            self.handed[p.sock] = p.buf
            if decoded is not None:
                self.decoded[p.sock] = decoded
            if primitive is not None:
                self.primitives[p.sock] = primitive
            self.since[p.sock] = (p.since, time.time())
            p.server.process_request(p.sock, p.address)
        except Exception:
            LOG.exception("hand-over to the association thread")
            self.handed.pop(p.sock, None)
            self.decoded.pop(p.sock, None)
            self.primitives.pop(p.sock, None)
            self.since.pop(p.sock, None)
            p.sock.close()
