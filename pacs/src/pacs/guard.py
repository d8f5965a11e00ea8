"""The PDU caps under pynetdicom's own loops (verbose mode, refusal modes, fault
injection, ``PACS_FASTPATH=0``), applied where those loops read: ``FastSocket.recv``.

pynetdicom 3.0.4's ``DULServiceProvider._read_pdu_data`` reads a PDU as
``socket.recv(6)`` (type, reserved, length) and then ``socket.recv(length)``,
trusting the length. Here each header is checked first with the same rule as
the socket data phase (``dicomlab.pdu.check_pdu``); the body is read only if it passes,
so nothing is allocated on the peer's word. P-DATA-TF bodies are walked to count
each message's dataset bytes against ``max_instance_bytes``.

Over a cap: an A-ABORT (source 2, PS3.8 reason) goes to the peer, the reason is
recorded on the association (the association-aborted event says it), the socket
is closed and the read fails, which pynetdicom's state machine takes as a
closed transport (Evt17 -> AA-4: A-P-ABORT to the association, which ends).
The A-ASSOCIATE-RQ itself (before negotiation) is left to the connection gate.

Each PDU read is acknowledged at once (TCP_QUICKACK), as in the socket data phase
(``dicomlab.pdu.read_pdu``): a modality that keeps Nagle's algorithm on is not held
by the delayed ACK in these modes either. So is each PDU sent (``transport.FastSocket.send``):
a C-GET SCU that keeps Nagle on (getscu as Debian builds it) writes each C-STORE-RSP of
the sub-operations in small segments, each held until the one before is acknowledged
(measured: 40 instances in 2.0 s, 52 delayed ACKs; 0.2 s with getscu's TCP_NODELAY=1).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from dicomlab import pdu as codec
from dicomlab.events import REASON_INSTANCE_TOO_LARGE, REASON_PDU_INVALID
from dicomlab.pdu import ABORT_NOT_SPECIFIED, abort_pdu, check_pdu
from dicomlab.pdu import HEADER_LENGTH as PDU_HEADER

from . import wire
from .wire import abort_and_close, mark_aborted, who

BEFORE_NEGOTIATION = ("Sta1", "Sta2")  # no A-ASSOCIATE-RQ read yet


class PduGuard:
    """One association's reads, PDU by PDU."""

    def __init__(self, assoc: Any) -> None:
        self.assoc = assoc
        self._next_body: tuple[int, int] | None = None  # (type, length) of the PDU whose header was read
        self._data_bytes = 0  # dataset bytes of the DIMSE message being received
        self._quickack: bool | None = None  # each PDU acknowledged at once (wire.QUICKACK), once known

    def _active(self) -> bool:
        dul = getattr(self.assoc, "dul", None)
        return dul is not None and dul.state_machine.current_state not in BEFORE_NEGOTIATION

    def recv(self, sock: socket.socket, nr_bytes: int, read: Callable[[int], bytearray]) -> bytearray:
        if not self._active():
            return read(nr_bytes)
        if self._next_body is None:
            if nr_bytes != PDU_HEADER:
                self._refuse(sock, abort_pdu(ABORT_NOT_SPECIFIED), "was read out of step (internal error)",
                             REASON_PDU_INVALID)
            header = read(PDU_HEADER)
            if len(header) == PDU_HEADER:
                pdu_type, length = codec.parse_header(header)
                bad = check_pdu(pdu_type, length, self.assoc.acceptor.maximum_length or 0)
                if bad is not None:
                    self._refuse(sock, abort_pdu(bad[0]), bad[1], REASON_PDU_INVALID)
                self._next_body = (pdu_type, length)
                self.ack_now(sock)  # as early as this: a C-GET SCU's answer to a large C-STORE (codec.read_pdu)
            return header
        pdu_type, length = self._next_body
        self._next_body = None
        if nr_bytes != length:
            self._refuse(sock, abort_pdu(ABORT_NOT_SPECIFIED), "was read out of step (internal error)",
                         REASON_PDU_INVALID)
        body = read(length)
        self.ack_now(sock)  # as the socket data phase does: a modality that keeps Nagle on
        if pdu_type == 0x04:
            self._count(sock, body)
        return body

    def ack_now(self, sock: socket.socket) -> None:
        """An immediate ACK of what arrived (TCP_QUICKACK), unless ``wire.QUICKACK`` is off: after
        each PDU read, and after each PDU sent (``transport.FastSocket.send``)."""
        if self._quickack is None:
            self._quickack = wire.QUICKACK and codec.quickack_applies(sock)
        if self._quickack:
            codec.ack_now(sock)

    def _count(self, sock: socket.socket, body: bytearray) -> None:
        limit = self._max_instance_bytes()
        for item_len, _, mch, _ in codec.pdvs(body):  # a malformed item is pynetdicom's to reject
            if not mch & 0x01:
                self._data_bytes += max(item_len - 2, 0)
                if limit is not None and self._data_bytes > limit:
                    self._refuse(sock, abort_pdu(ABORT_NOT_SPECIFIED),
                                 f"sent more than {limit} bytes for one instance; nothing of it is kept. "
                                 "Fix: raise max_instance_bytes or send smaller instances", REASON_INSTANCE_TOO_LARGE)
                if mch & 0x02:
                    self._data_bytes = 0

    def _max_instance_bytes(self) -> int | None:
        s = getattr(self.assoc, "lab_session", None)
        d = s.decision if s is not None else None
        return d.settings.max_instance_bytes if d is not None and d.settings is not None else None

    def _refuse(self, sock: socket.socket, pdu: bytes, what: str, reason: str) -> None:
        mark_aborted(self.assoc, f"Association aborted: {who(self.assoc)} {what}", reason)
        abort_and_close(sock, pdu)
        raise OSError(f"A-ABORT: {what}")
