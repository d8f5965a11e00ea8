"""C-STORE on the wire: pre-encoded datasets as P-DATA-TF PDUs over the association's own socket.

Why not ``Association.send_c_store``
------------------------------------
pynetdicom 3.0.4 runs two threads per association: the DUL reactor (reads
and writes the socket, polling every millisecond) and the association
reactor (takes complete DIMSE messages off ``dimse.msg_queue`` and serves
them). ``send_c_store`` keeps the association reactor away from the C-STORE
response by pausing it::

    self._reactor_checkpoint.clear()
    while not self._is_paused: time.sleep(0.0001)
    ... send, then self.dimse.get_msg(block=True) ...
    self._reactor_checkpoint.set()

and the reactor loop is ``_is_paused = True; checkpoint.wait();
_is_paused = False; dimse.get_msg(block=False)``. After ``set()`` at the end
of one C-STORE the reactor is woken, but until it runs again ``_is_paused``
is still True: when the next ``send_c_store`` clears the checkpoint in that
window it takes the stale True for "paused" and goes on, and the reactor
then wakes up and takes the next C-STORE response off the queue itself. It
drops it ("Received unexpected C-STORE service message") and the SCU waits
for an answer that has already come: a DIMSE timeout for an instance the
peer stored. The faster the instances follow each other, the likelier.

So the simulator moves the data phase off those queues. Once the
association is established (pynetdicom does the negotiation, the diagnosis
and, at the end, the release or the abort), ``StoreChannel`` parks both
pynetdicom threads at known points and owns the socket: each C-STORE-RQ is
the command set and the dataset, already encoded in the accepted transfer
syntax, framed into P-DATA-TF PDUs no longer than the peer's maximum and
written with one ``sendall``; the answer is read from the socket and
checked against the request. No queue, no polling, no thread hand-offs on
the hot path, and nothing else reads the socket while it is parked.

An immediate ACK while the answer comes (``QUICKACK``)
------------------------------------------------------
A PACS that keeps Nagle's algorithm on (DCMTK's storescp does, as Debian
builds it, unless ``TCP_NODELAY=1`` is set) writes its C-STORE-RSP in more
than one small segment and holds each until the one before is acknowledged;
Linux delays that ACK up to 40 ms once a connection answers each message. So
each instance waited ~40 ms: 22 images/s to such a storescp, ~270 with its
ACKs at once (README, "How the PACS is built for speed"). The channel asks the kernel
for an immediate ACK (``TCP_QUICKACK``) once a C-STORE is written, and once each
PDU's header and body are read (``dicomlab.pdu.read_pdu``'s ``early_ack``: the
segments of a large write sent after ``sendall`` returned undo the first).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any

from pynetdicom.association import Association

from dicomlab import pdu
from dicomlab.pdu import A_ABORT as A_ABORT_RQ
from dicomlab.pdu import A_RELEASE_RQ, C_STORE_RSP, P_DATA_TF, c_store_rq, frame

PARK_TIMEOUT = 10.0  # seconds for pynetdicom's threads to reach their parking points
QUICKACK = True  # acknowledge the peer's segments at once while an answer comes (module docstring)


class PeerAborted(Exception):
    """The peer sent an A-ABORT (``source``/``reason`` set) or closed the connection (both None)."""

    def __init__(self, source: int | None = None, reason: int | None = None, detail: str = "") -> None:
        self.source, self.reason, self.detail = source, reason, detail
        super().__init__(self.words())

    def words(self) -> str:
        if self.source is None:
            return self.detail or "the peer closed the connection"
        who = {0: "service-user", 1: "reserved", 2: "service-provider"}.get(self.source, f"source {self.source}")
        return f"A-ABORT from the {who} (source {self.source}, reason {self.reason})"


class NoAnswer(Exception):
    """No C-STORE response within the DIMSE timeout."""


class ProtocolError(Exception):
    """The peer sent something a C-STORE SCU cannot take (an A-RELEASE-RQ, a wrong response)."""


@dataclass
class StoreAnswer:
    status: int
    error_comment: str = ""


def parse_command(data: bytes) -> dict[int, bytes]:
    """Command set elements by (0000,eeee) element number; values raw."""
    try:
        return pdu.command_fields(data, strict=True)
    except pdu.Malformed as exc:
        raise ProtocolError(str(exc)) from None


class StoreChannel:
    """The data phase of one established association, on its socket, pynetdicom parked.

    Use as a context manager; on exit pynetdicom gets the socket back (with
    its idle timer restarted) to release or abort the association.
    """

    def __init__(self, assoc: Association, context_id: int, dimse_timeout: float) -> None:
        self.assoc = assoc
        self.cx_id = context_id
        self.dimse_timeout = dimse_timeout
        self.max_pdu = int(assoc.acceptor.maximum_length or 0)  # what the peer receives
        self.sock: socket.socket | None = assoc.dul.socket.socket if assoc.dul.socket else None
        self.message_id = 0
        self._buf = bytearray()
        self._parked = threading.Event()
        self._resume = threading.Event()
        self._timeout: float | None = None
        self._owned = False
        self._quickack = QUICKACK and self.sock is not None and pdu.quickack_applies(self.sock)

    # -- parking pynetdicom -------------------------------------------------------------
    def __enter__(self) -> StoreChannel:
        if self.sock is None:
            raise PeerAborted(detail="the connection was closed before the first C-STORE")
        dul = self.assoc.dul
        resume, parked = self._resume, self._parked

        def park() -> bool:  # replaces DUL._is_transport_event: the DUL thread waits here, off the socket
            parked.set()
            resume.wait()
            return False

        # the association reactor has nothing to take while the DUL is parked; stop its polling too
        self.assoc._reactor_checkpoint.clear()
        dul._is_transport_event = park  # type: ignore[method-assign]
        if not parked.wait(PARK_TIMEOUT) or not dul.is_alive():
            self._unpark()
            raise PeerAborted(detail="the association ended before the first C-STORE")
        self._timeout = self.sock.gettimeout()
        self._owned = True
        return self

    def _unpark(self) -> None:
        dul = self.assoc.dul
        dul.__dict__.pop("_is_transport_event", None)
        dul._idle_timer.restart()  # the data phase was traffic; do not let pynetdicom's idle timer fire
        self._resume.set()
        self.assoc._reactor_checkpoint.set()

    def __exit__(self, *exc: Any) -> None:
        if self._owned:
            self._owned = False
            try:
                self.sock.settimeout(self._timeout)
            except OSError:
                pass
            self._unpark()

    # -- one C-STORE ----------------------------------------------------------------------
    def store(self, sop_class: str, sop_instance: str, dataset: bytes | memoryview) -> StoreAnswer:
        """Send one C-STORE-RQ with its encoded dataset; the peer's answer.

        Raises PeerAborted, NoAnswer (DIMSE timeout) or ProtocolError.
        """
        self.message_id = self.message_id % 0xFFFF + 1
        buf = self._buf
        buf.clear()
        frame(self.cx_id, c_store_rq(self.message_id, sop_class, sop_instance), True, self.max_pdu, buf)
        frame(self.cx_id, dataset, False, self.max_pdu, buf)
        self.sock.settimeout(self.dimse_timeout)
        try:
            self.sock.sendall(buf)
        except TimeoutError as exc:
            raise NoAnswer(f"the peer took no data for {self.dimse_timeout:g} s") from exc
        except OSError as exc:  # reset or broken pipe: the peer may have said why before closing
            raise self._why_closed(exc) from exc
        if self._quickack:  # the answer's first segment is acknowledged as it arrives
            pdu.ack_now(self.sock)
        return self._answer()

    def _answer(self) -> StoreAnswer:
        command = bytearray()
        while True:
            kind, body = self._read_pdu()
            if kind == A_ABORT_RQ:
                raise PeerAborted(*pdu.abort_fields(body))
            if kind == A_RELEASE_RQ:
                raise ProtocolError("the peer asked to release the association while a C-STORE was outstanding")
            if kind != P_DATA_TF:
                raise ProtocolError(f"unexpected PDU type 0x{kind:02X} during the data phase")
            for _, _, control, data in pdu.pdvs(body):
                if not control & 0x01:
                    continue  # a dataset with a C-STORE-RSP is not expected; ignore it
                command += data
                if control & 0x02:
                    return self._check(parse_command(bytes(command)))

    def _check(self, cmd: dict[int, bytes]) -> StoreAnswer:
        field, answered, status = (pdu.us_value(cmd.get(pdu.COMMAND_FIELD)),
                                   pdu.us_value(cmd.get(pdu.MESSAGE_ID_BEING_RESPONDED_TO)),
                                   pdu.us_value(cmd.get(pdu.STATUS)))
        if field != C_STORE_RSP or status is None:
            raise ProtocolError(f"expected a C-STORE-RSP, got command field {field!r}")
        if answered != self.message_id:
            raise ProtocolError(f"the C-STORE-RSP answers message {answered}, not {self.message_id}")
        comment = cmd.get(pdu.ERROR_COMMENT, b"").rstrip(b"\0 ").decode("ascii", "replace")
        return StoreAnswer(status, comment)

    def _read_pdu(self) -> tuple[int, bytes]:
        try:
            kind, body = pdu.read_pdu(self.sock, quickack=self._quickack, early_ack=self._quickack)
        except TimeoutError as exc:
            raise NoAnswer() from exc
        except pdu.Closed as exc:
            raise PeerAborted(detail="the peer closed the connection") from exc
        except OSError as exc:
            raise PeerAborted(detail=f"the connection was reset ({exc})") from exc
        return kind, bytes(body)

    def _why_closed(self, exc: OSError) -> PeerAborted:
        """After a failed write: an A-ABORT the peer sent before closing, if it is still readable."""
        try:
            self.sock.settimeout(0.5)
            kind, body = self._read_pdu()
            if kind == A_ABORT_RQ:
                return PeerAborted(*pdu.abort_fields(body))
        except (PeerAborted, NoAnswer, OSError):
            pass
        return PeerAborted(detail=f"the connection was closed while sending ({exc.strerror or exc})")
