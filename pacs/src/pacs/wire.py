"""The data phase of an accepted association, read and answered on the socket by
one thread: PDUs -> C-ECHO / C-STORE -> responses, then A-RELEASE or A-ABORT.

pynetdicom negotiates the association (and everything in this module's fallback
cases: verbose mode, refusal modes, fault injection). Once the A-ASSOCIATE-AC has
gone out, the DUL thread (``fastpath.LabDUL``) hands the socket to
``serve_data_phase`` instead of running pynetdicom's state machine per PDU, its
DIMSE reassembly and its thread hand-offs for every message: the same work in
one thread, with one copy of each dataset. The command set is read by ``rawwalk``
into the Dataset ``pynetdicom.dsutils.decode`` makes (which it falls back to); the
two responses (C-ECHO-RSP, C-STORE-RSP) are encoded by ``dicomlab.pdu``, byte for
byte as pynetdicom encodes them (tested), as are the PDU framing, the caps (``check_pdu``) and the bounded reads.

Bounded against any peer: each PDU header is checked (``check_pdu``, the rule
``guard.PduGuard`` applies under pynetdicom's loops too) before its body is read,
and a read never allocates more than the cap; a dataset over the association's
``spool_threshold_bytes`` goes to a ``storage.Spool`` as it arrives, one over
``max_instance_bytes`` is aborted; whatever goes wrong -- a command set that
cannot be decoded or lacks a field, an exception anywhere -- ends in an A-ABORT
(source 2) and an association-aborted event with the reason in words
(``AssociationHandlers.on_aborted`` reads ``assoc.lab_abort_reason`` / ``lab_abort_code``).

PS3.8 §9.3: PDU header = type (1), reserved (1), length (4, big endian).
P-DATA-TF item = length (4), presentation context ID (1), message control
header (1: bit 0 command, bit 1 last fragment), fragment.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from io import BytesIO
from typing import Any

from pynetdicom import evt
from pynetdicom.dsutils import decode

from dicomlab import pdu as codec
from dicomlab.events import (
    REASON_DIMSE_INVALID,
    REASON_INSTANCE_TOO_LARGE,
    REASON_INTERNAL_ERROR,
    REASON_PDU_INVALID,
)
from dicomlab.pdu import (
    ABORT_INVALID_PARAMETER,
    ABORT_NOT_SPECIFIED,
    ABORT_UNEXPECTED_PDU,
    C_ECHO_RQ,
    C_STORE_RQ,
    NO_DATASET,
    abort_pdu,
    check_pdu,
)
from dicomlab.pdu import HEADER_LENGTH as PDU_HEADER
from dicomlab.pdu import Closed as PeerGone  # the connection closed under the data phase
from dicomlab.pdu import recv_up_to as recv_up_to  # transport.py's reads, bounded the same way

from . import rawwalk
from .instance import Pieces

LOG = logging.getLogger(__name__)

A_RELEASE_RP = codec.RELEASE_RP
A_ABORT_UNEXPECTED_PDU = abort_pdu(ABORT_UNEXPECTED_PDU)  # provider, unexpected PDU
A_ABORT_INVALID = abort_pdu(ABORT_INVALID_PARAMETER)  # provider, invalid PDU parameter
A_ABORT_USER = codec.abort(codec.SOURCE_USER, ABORT_NOT_SPECIFIED)
# Each PDU read is acknowledged at once (``codec.read_pdu``'s quickack), and so is what comes
# right after each answer sent: a modality that keeps Nagle's algorithm on is then not held by
# the delayed ACK (README, "How the PACS is built for speed"). PACS_QUICKACK=0 turns it off.
QUICKACK = True


def response_pdu(context_id: int, command_field: int, message_id: int, sop_class: str, status: int,
                 sop_instance: str | None = None) -> bytes:
    """A C-ECHO-RSP (0x8030) or C-STORE-RSP (0x8001) as one P-DATA-TF PDU.

    The same bytes pynetdicom's C_ECHO_RSP / C_STORE_RSP ``encode_msg`` and P_DATA_TF
    produce (a test compares them); built directly because going through pydicom
    Datasets cost ~15 % of the PACS's time per instance.
    """
    # echoes the request's UIDs; one with bytes beyond ASCII (a fuzzed request) goes back as
    # it came (pydicom decoded it as Latin-1) rather than failing the response
    command = codec.response(command_field, message_id, sop_class, status, sop_instance, "latin-1", "replace")
    return codec.p_data(context_id, codec.COMMAND | codec.LAST, command)


def abort_from_elsewhere(sock: socket.socket) -> None:
    """A-ABORT (service user) an association whose data phase runs in another thread (at
    shutdown): the A-ABORT goes out, and that thread's read fails, so it records the abort."""
    try:
        sock.sendall(A_ABORT_USER)
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def abort_and_close(sock: socket.socket, pdu: bytes, linger: float = 2.0) -> None:
    """Send an A-ABORT, then wait briefly for the peer to close (PS3.8 Sta13, as the
    ARTIM timer would), reading whatever it still sends into a small buffer, and
    close. Closing with unread data would reset the connection and could lose the
    A-ABORT on its way."""
    try:
        sock.sendall(pdu)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.2)
        deadline = time.monotonic() + linger
        scratch = bytearray(65536)
        while time.monotonic() < deadline and sock.recv_into(scratch):
            pass
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def who(assoc: Any) -> str:
    """The peer, in words: 'the modality 'CT01' at 10.1.2.3'."""
    s = getattr(assoc, "lab_session", None)
    if s is not None and s.calling:
        return f"the modality {s.calling!r} at {s.peer}"
    return f"the peer at {assoc.requestor.address}"


class Abort(Exception):
    """End the association with an A-ABORT: ``pdu``, the event ``reason`` and the words."""

    def __init__(self, pdu: bytes, words: str, reason: str = "") -> None:
        super().__init__(words)
        self.pdu, self.words, self.reason = pdu, words, reason


def mark_aborted(assoc: Any, words: str, reason: str = "") -> None:
    """What the association-aborted event says (AssociationHandlers.on_aborted reads it)."""
    assoc.lab_abort_reason = words
    if reason:
        assoc.lab_abort_code = reason


def decode_command(raw: bytes | bytearray) -> Any:
    """A command set (implicit VR little endian) as the Dataset ``pynetdicom.dsutils.decode``
    makes of it: read by ``rawwalk`` (the same elements; a few microseconds less than ``decode``,
    most of the command set's cost is pydicom converting the values read from it), or by
    ``decode`` itself when the walker declines (a malformed command set then fails there, as before)."""
    cs = rawwalk.read(raw, True)
    return cs if cs is not None else decode(BytesIO(bytes(raw)), True, True)


class _Message:
    """One DIMSE message being received: its command set, then its dataset, in
    memory up to the spool threshold and in a ``Spool`` beyond it."""

    def __init__(self) -> None:
        self.command = bytearray()
        self.context_id: int | None = None
        self.cs: Any = None  # the decoded command set, once complete
        self.wants_data = False
        self.data: list[memoryview] = []
        self.size = 0
        self.spool: Any = None
        self.done = False

    def discard(self) -> None:
        if self.spool is not None:
            self.spool.discard()
            self.spool = None
        self.data = []


class DataPhase:
    """One association's data phase. ``handlers`` are the PACS's own:
    ``echo(assoc) -> status``, ``store(assoc, raw, transfer_syntax, sop_class, sop_instance) -> status``
    (``raw``: the dataset's bytes, or the ``Spool`` it was written to) and
    ``spool(transfer_syntax, sop_class, sop_instance) -> Spool``."""

    def __init__(self, assoc: Any, sock: socket.socket, echo: Callable[..., int], store: Callable[..., int],
                 max_pdu_in: int, idle_timeout: float | None, spool: Callable[..., Any] | None = None,
                 spool_threshold: int = 16 * 1024 * 1024, max_instance_bytes: int | None = None) -> None:
        self.assoc = assoc
        self.sock = sock
        self.echo = echo
        self.store = store
        self.open_spool = spool
        self.spool_threshold = spool_threshold
        self.max_instance_bytes = max_instance_bytes
        self.max_pdu_in = max_pdu_in
        self.contexts = {cx.context_id: cx for cx in assoc.accepted_contexts}
        peer_max = assoc.requestor.maximum_length or 0
        self.max_pdu_out = peer_max if peer_max else 0
        self.msg = _Message()
        self.quickack = QUICKACK and codec.quickack_applies(sock)  # a modality that keeps Nagle on
        sock.settimeout(idle_timeout)

    def _who(self) -> str:
        return who(self.assoc)

    def run(self) -> None:
        try:
            self._serve()
        except Abort as a:
            self._abort(a.pdu, a.words, a.reason)
        except TimeoutError:
            self._abort(A_ABORT_USER, "Association aborted: no data from the modality within the network timeout"
                        + self._in_flight())
        except (PeerGone, OSError):
            # closed without A-RELEASE or A-ABORT (or torn down at shutdown): an abort
            self._ended("Association aborted: the connection closed without A-RELEASE or A-ABORT"
                        + self._in_flight())
        except Exception as exc:  # no silent end: whatever broke, the peer and the events hear of it
            LOG.exception("data phase")
            self._abort(abort_pdu(ABORT_NOT_SPECIFIED), f"Association aborted: internal error in the data phase "
                        f"({type(exc).__name__}: {exc}); the PACS goes on serving. Fix: report this with the "
                        "modality's log", REASON_INTERNAL_ERROR)
        finally:
            self.msg.discard()
            try:
                self.sock.close()
            except OSError:
                pass

    def _in_flight(self) -> str:
        m = self.msg
        if m.cs is None and not m.command:
            return ""
        uid = str(m.cs.get("AffectedSOPInstanceUID", "") or "") if m.cs is not None else ""
        return (f", in the middle of a message ({uid or 'command set'}; {m.size} dataset bytes received, "
                "discarded)")

    def _check(self, pdu_type: int, length: int) -> None:
        """The PDU rule (``check_pdu``), before the body is read: a PDU that breaks it is aborted."""
        bad = check_pdu(pdu_type, length, self.max_pdu_in)
        if bad is not None:
            raise Abort(abort_pdu(bad[0]), f"Association aborted: {self._who()} {bad[1]}", REASON_PDU_INVALID)

    def _serve(self) -> None:
        while True:
            pdu_type, body = codec.read_pdu(self.sock, self.max_pdu_in + PDU_HEADER, self._check, self.quickack)
            if pdu_type == 0x04:
                self._p_data(memoryview(body))
            elif pdu_type == 0x05:  # A-RELEASE-RQ
                self.sock.sendall(A_RELEASE_RP)
                self.assoc.is_released = True
                self.assoc.is_established = False
                evt.trigger(self.assoc, evt.EVT_RELEASED, {})
                self._drain_until_closed()
                return
            elif pdu_type == 0x07:  # A-ABORT
                self._ended(f"Association aborted by the modality (A-ABORT, source {body[2]}, reason "
                            f"{body[3]})" + self._in_flight())
                return
            else:  # A-RELEASE-RP: we never asked
                raise Abort(abort_pdu(ABORT_UNEXPECTED_PDU), f"Association aborted: {self._who()} sent an "
                            "A-RELEASE-RP without an A-RELEASE-RQ (unexpected PDU)", REASON_PDU_INVALID)

    def _p_data(self, body: memoryview) -> None:
        length, off = len(body), 0
        while off < length:
            item = codec.pdv_at(body, off)
            if item is None:
                raise Abort(A_ABORT_INVALID, f"Association aborted: {self._who()} sent a malformed P-DATA-TF item",
                            REASON_PDU_INVALID)
            cid, mch, fragment, off = item
            m = self.msg
            if cid not in self.contexts or (m.context_id is not None and cid != m.context_id):
                raise Abort(A_ABORT_INVALID, f"Association aborted: {self._who()} sent data on presentation "
                            f"context {cid}, which was not accepted (or mixed within one message)", REASON_PDU_INVALID)
            m.context_id = cid
            if mch & 0x01:
                if m.cs is not None:
                    raise Abort(A_ABORT_UNEXPECTED_PDU, f"Association aborted: {self._who()} sent command set "
                                "fragments after the command set was complete", REASON_DIMSE_INVALID)
                m.command += fragment
                if mch & 0x02:
                    self._command_complete(m)
            else:
                if m.cs is None or not m.wants_data:
                    raise Abort(A_ABORT_UNEXPECTED_PDU, f"Association aborted: {self._who()} sent dataset "
                                "fragments without a command set that announces a dataset", REASON_DIMSE_INVALID)
                self._add_data(m, fragment)
                m.done = bool(mch & 0x02)
            if m.done:
                self.msg = _Message()
                self._dispatch(m)

    def _command_complete(self, m: _Message) -> None:
        """Decode and check the command set; nothing in it is trusted."""
        try:
            cs = decode_command(m.command)
            field = cs.get("CommandField")
            message_id = cs.get("MessageID")
            data_type = cs.get("CommandDataSetType")
            field, message_id = (None if field is None else int(field)), (None if message_id is None
                                                                           else int(message_id))
            data_type = None if data_type is None else int(data_type)  # a list (VM > 1) fails here
            sop_instance = cs.get("AffectedSOPInstanceUID")
        except Exception as exc:
            raise Abort(abort_pdu(ABORT_NOT_SPECIFIED), f"Association aborted: {self._who()} sent a command set "
                        f"that cannot be decoded ({type(exc).__name__}: {exc})", REASON_DIMSE_INVALID) from None
        missing = [name for name, v in (("CommandField (0000,0100)", field), ("MessageID (0000,0110)", message_id),
                                        ("CommandDataSetType (0000,0800)", data_type)) if v is None]
        if field == C_STORE_RQ and not sop_instance:
            missing.append("AffectedSOPInstanceUID (0000,1000)")
        if missing:
            raise Abort(abort_pdu(ABORT_NOT_SPECIFIED), f"Association aborted: {self._who()} sent a command set "
                        f"without {', '.join(missing)}", REASON_DIMSE_INVALID)
        if field not in (C_STORE_RQ, C_ECHO_RQ):  # only Verification and storage contexts are ever accepted
            raise Abort(A_ABORT_UNEXPECTED_PDU, f"Association aborted: DIMSE command 0x{field:04X} is not "
                        "supported by this PACS (C-ECHO and C-STORE only)", REASON_DIMSE_INVALID)
        m.cs = cs
        m.wants_data = data_type != NO_DATASET
        if m.wants_data != (field == C_STORE_RQ):
            raise Abort(abort_pdu(ABORT_NOT_SPECIFIED), f"Association aborted: {self._who()} sent a "
                        f"{'C-STORE-RQ without' if field == C_STORE_RQ else 'C-ECHO-RQ with'} a dataset",
                        REASON_DIMSE_INVALID)
        m.done = not m.wants_data

    def _add_data(self, m: _Message, fragment: memoryview) -> None:
        m.size += len(fragment)
        if self.max_instance_bytes is not None and m.size > self.max_instance_bytes:
            raise Abort(abort_pdu(ABORT_NOT_SPECIFIED), f"Association aborted: {self._who()} sent more than "
                        f"{self.max_instance_bytes} bytes for one instance "
                        f"({m.cs.get('AffectedSOPInstanceUID', '')}); nothing of it is kept. Fix: raise "
                        "max_instance_bytes or send smaller instances", REASON_INSTANCE_TOO_LARGE)
        if m.spool is not None:
            m.spool.write(fragment)
            return
        m.data.append(fragment)
        if m.size > self.spool_threshold and self.open_spool is not None:
            cx = self.contexts[m.context_id]
            m.spool = self.open_spool(str(cx.transfer_syntax[0]), str(cx.abstract_syntax),
                                      str(m.cs.AffectedSOPInstanceUID))
            for piece in m.data:
                m.spool.write(piece)
            m.data = []

    def _dispatch(self, m: _Message) -> None:
        """Answer one complete request."""
        cs, context_id = m.cs, m.context_id
        assert context_id is not None
        cx = self.contexts[context_id]
        message_id = int(cs.MessageID)
        if int(cs.CommandField) == C_STORE_RQ:
            sop_instance = str(cs.AffectedSOPInstanceUID)
            # the fragments as they came (storage writes them with one writev): no joined copy
            raw, m.spool = (m.spool, None) if m.spool is not None else (Pieces(m.data), None)
            m.data = []
            status = self.store(self.assoc, raw, str(cx.transfer_syntax[0]), str(cx.abstract_syntax), sop_instance)
            pdu = response_pdu(context_id, 0x8001, message_id, str(cs.get("AffectedSOPClassUID", "")
                                                                     or cx.abstract_syntax), status, sop_instance)
        else:
            status = self.echo(self.assoc)
            pdu = response_pdu(context_id, 0x8030, message_id, str(cs.get("AffectedSOPClassUID", "")
                                                                     or cx.abstract_syntax), status)
        self.sock.sendall(pdu)
        if self.quickack:  # the next request's first segment acknowledged as it arrives (QUICKACK)
            codec.ack_now(self.sock)

    def _ended(self, words: str) -> None:
        """The peer ended it (A-ABORT, or the connection closed): record why."""
        mark_aborted(self.assoc, words)
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        evt.trigger(self.assoc, evt.EVT_ABORTED, {})

    def _abort(self, pdu: bytes, message: str, reason: str = "") -> None:
        LOG.debug(message)
        self.msg.discard()  # nothing of an aborted message stays on disk
        abort_and_close(self.sock, pdu)
        mark_aborted(self.assoc, message, reason)
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        evt.trigger(self.assoc, evt.EVT_ABORTED, {})

    def _drain_until_closed(self) -> None:
        """After A-RELEASE-RP the requestor closes the connection (Sta13); wait for it briefly."""
        try:
            self.sock.settimeout(5)
            scratch = bytearray(4096)
            while self.sock.recv_into(scratch):
                pass
        except OSError:
            pass
