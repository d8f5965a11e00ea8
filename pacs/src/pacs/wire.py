"""The data phase of an accepted association, read and answered on the socket by
one thread: PDUs -> C-ECHO / C-STORE -> responses, then A-RELEASE or A-ABORT.

pynetdicom negotiates the association (and everything in this module's fallback
cases: verbose mode, refusal modes, fault injection). Once the A-ASSOCIATE-AC has
gone out, the DUL thread (``fastpath.LabDUL``) hands the socket to
``serve_data_phase`` instead of running pynetdicom's state machine per PDU, its
DIMSE reassembly and its thread hand-offs for every message: the same work in
one thread, with one copy of each dataset. The command set is decoded with
``pynetdicom.dsutils.decode``; the two responses (C-ECHO-RSP, C-STORE-RSP) are
encoded here, byte for byte as pynetdicom encodes them (tested).

PS3.8 §9.3: PDU header = type (1), reserved (1), length (4, big endian).
P-DATA-TF item = length (4), presentation context ID (1), message control
header (1: bit 0 command, bit 1 last fragment), fragment.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable
from io import BytesIO
from typing import Any

from pynetdicom import evt
from pynetdicom.dsutils import decode

LOG = logging.getLogger(__name__)

A_RELEASE_RP = struct.pack(">BBIL", 0x06, 0, 4, 0)
A_ABORT_UNEXPECTED_PDU = struct.pack(">BBIBBBB", 0x07, 0, 4, 0, 0, 0x02, 0x02)  # provider, unexpected PDU
A_ABORT_INVALID = struct.pack(">BBIBBBB", 0x07, 0, 4, 0, 0, 0x02, 0x06)  # provider, invalid PDU parameter
A_ABORT_USER = struct.pack(">BBIBBBB", 0x07, 0, 4, 0, 0, 0x00, 0x00)
C_ECHO_RQ, C_STORE_RQ = 0x0030, 0x0001
NO_DATASET = 0x0101


def _el(elem: int, value: bytes) -> bytes:
    """One command element, implicit VR little endian (group 0000)."""
    return struct.pack("<HHI", 0x0000, elem, len(value)) + value


def _ui(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def response_pdu(context_id: int, command_field: int, message_id: int, sop_class: str, status: int,
                 sop_instance: str | None = None) -> bytes:
    """A C-ECHO-RSP (0x8030) or C-STORE-RSP (0x8001) as one P-DATA-TF PDU.

    The same bytes pynetdicom's C_ECHO_RSP / C_STORE_RSP ``encode_msg`` and P_DATA_TF
    produce (a test compares them); built directly because going through pydicom
    Datasets cost ~15 % of the PACS's time per instance.
    """
    elements = (_el(0x0002, _ui(sop_class)) + _el(0x0100, struct.pack("<H", command_field))
                + _el(0x0120, struct.pack("<H", message_id)) + _el(0x0800, struct.pack("<H", NO_DATASET))
                + _el(0x0900, struct.pack("<H", status))
                + (_el(0x1000, _ui(sop_instance)) if sop_instance is not None else b""))
    command = _el(0x0000, struct.pack("<I", len(elements))) + elements
    pdv = struct.pack(">IBB", len(command) + 2, context_id, 0x03) + command
    return struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv


class PeerGone(Exception):
    """The connection closed or failed under the data phase."""


def recv_up_to(sock: socket.socket, n: int) -> bytearray:
    """``n`` bytes with ``recv_into``, in as few system calls as the kernel allows;
    fewer only if the peer closed the connection first."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if not k:
            del view
            return buf[:got]
        got += k
    return buf


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = recv_up_to(sock, n)
    if len(buf) < n:
        raise PeerGone("the peer closed the connection")
    return buf


class DataPhase:
    """One association's data phase. ``handlers`` are the PACS's own:
    ``echo(assoc) -> status`` and ``store(assoc, raw, transfer_syntax, sop_class, sop_instance) -> status``."""

    def __init__(self, assoc: Any, sock: socket.socket, echo: Callable[..., int], store: Callable[..., int],
                 max_pdu_in: int, idle_timeout: float | None) -> None:
        self.assoc = assoc
        self.sock = sock
        self.echo = echo
        self.store = store
        self.max_pdu_in = max_pdu_in
        self.contexts = {cx.context_id: cx for cx in assoc.accepted_contexts}
        peer_max = assoc.requestor.maximum_length or 0
        self.max_pdu_out = peer_max if peer_max else 0
        sock.settimeout(idle_timeout)

    def run(self) -> None:
        command = bytearray()
        data: list[memoryview] = []
        command_done = data_done = False
        context_id = None
        try:
            while True:
                try:
                    header = _recv_exact(self.sock, 6)
                except TimeoutError:
                    self._abort(A_ABORT_USER, "Association aborted: no data from the modality within the "
                                "network timeout.")
                    return
                pdu_type, _, length = struct.unpack(">BBI", header)
                if pdu_type == 0x04:
                    if length > self.max_pdu_in + 6 or length < 6:
                        self._abort(A_ABORT_INVALID, f"Association aborted: P-DATA-TF of {length} bytes exceeds "
                                    f"the negotiated maximum ({self.max_pdu_in}).")
                        return
                    body = memoryview(_recv_exact(self.sock, length))
                    off = 0
                    while off < length:
                        (item_len,) = struct.unpack_from(">I", body, off)
                        if item_len < 2 or off + 4 + item_len > length:
                            self._abort(A_ABORT_INVALID, "Association aborted: malformed P-DATA-TF item.")
                            return
                        cid, mch = body[off + 4], body[off + 5]
                        fragment = body[off + 6: off + 4 + item_len]
                        off += 4 + item_len
                        if cid not in self.contexts or (context_id is not None and cid != context_id):
                            self._abort(A_ABORT_INVALID, f"Association aborted: data on presentation context {cid}, "
                                        "which was not accepted (or mixed within one message).")
                            return
                        context_id = cid
                        if mch & 0x01:
                            command += fragment
                            command_done = bool(mch & 0x02)
                        else:
                            data.append(fragment)
                            data_done = bool(mch & 0x02)
                    if command_done:
                        cs = decode(BytesIO(bytes(command)), True, True)
                        wants_data = cs.get("CommandDataSetType", NO_DATASET) != NO_DATASET
                        if not wants_data or data_done:
                            assert context_id is not None
                            if not self._dispatch(cs, context_id, b"".join(data) if wants_data else b""):
                                return
                            command = bytearray()
                            data = []
                            command_done = data_done = False
                            context_id = None
                elif pdu_type == 0x05:  # A-RELEASE-RQ
                    _recv_exact(self.sock, length)
                    self.sock.sendall(A_RELEASE_RP)
                    self.assoc.is_released = True
                    self.assoc.is_established = False
                    evt.trigger(self.assoc, evt.EVT_RELEASED, {})
                    self._drain_until_closed()
                    return
                elif pdu_type == 0x07:  # A-ABORT
                    self.assoc.is_aborted = True
                    self.assoc.is_established = False
                    evt.trigger(self.assoc, evt.EVT_ABORTED, {})
                    return
                else:
                    self._abort(A_ABORT_UNEXPECTED_PDU, f"Association aborted: unexpected PDU type 0x{pdu_type:02X} "
                                "during the data phase.")
                    return
        except (PeerGone, OSError):
            # closed without A-RELEASE or A-ABORT (or torn down at shutdown): an abort
            self.assoc.is_aborted = True
            self.assoc.is_established = False
            evt.trigger(self.assoc, evt.EVT_ABORTED, {})
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def _dispatch(self, cs: Any, context_id: int, raw: bytes) -> bool:
        """Answer one request; False when the association was aborted instead."""
        field = int(cs.CommandField)
        cx = self.contexts[context_id]
        if field == C_STORE_RQ:
            status = self.store(self.assoc, raw, str(cx.transfer_syntax[0]), str(cx.abstract_syntax),
                                str(cs.AffectedSOPInstanceUID))
            pdu = response_pdu(context_id, 0x8001, int(cs.MessageID), str(cs.AffectedSOPClassUID), status,
                               str(cs.AffectedSOPInstanceUID))
        elif field == C_ECHO_RQ:
            status = self.echo(self.assoc)
            pdu = response_pdu(context_id, 0x8030, int(cs.MessageID), str(cs.AffectedSOPClassUID), status)
        else:  # only Verification and storage contexts are ever accepted
            self._abort(A_ABORT_UNEXPECTED_PDU, f"Association aborted: DIMSE command 0x{field:04X} is not "
                        "supported by this PACS (C-ECHO and C-STORE only).")
            return False
        self.sock.sendall(pdu)
        return True

    def _abort(self, pdu: bytes, message: str) -> None:
        LOG.debug(message)
        try:
            self.sock.sendall(pdu)
        except OSError:
            pass
        self.assoc.lab_abort_reason = message
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        evt.trigger(self.assoc, evt.EVT_ABORTED, {})

    def _drain_until_closed(self) -> None:
        """After A-RELEASE-RP the requestor closes the connection (Sta13); wait for it briefly."""
        try:
            self.sock.settimeout(5)
            while self.sock.recv(4096):
                pass
        except OSError:
            pass
