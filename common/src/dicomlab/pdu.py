"""The DICOM upper layer (PS3.8 §9.3) and DIMSE command sets (PS3.7 §9.3, §E), as bytes:
the one hand-written codec of the lab. Standard library only.

Used where a pynetdicom object per PDU costs too much or hides what came on the wire:
the PACS's socket data phase and its PDU caps (pacs/wire.py, pacs/guard.py, pacs/gate.py),
the simulator's C-STORE channel (ct_simulator/wire.py), the bench client
(bench/echo_client.py), the fuzzer (fuzz/wire.py, which bends every length) and the
tests. Everything it encodes is what pynetdicom and pydicom encode, byte for byte
(tests/common/test_pdu.py compares them).

PDU = type (1), reserved (1), length (4, big endian), body. A-ASSOCIATE items =
type (1), reserved (1), length (2, big endian), value. P-DATA-TF PDV item = length
(4), presentation context ID (1), message control header (1: bit 0 command, bit 1
last fragment), fragment. Command set = group 0000 elements in implicit VR little
endian: group, element (2 + 2), value length (4), value; (0000,0000) first, the
length of the rest.

Decoders come in two kinds: the lenient walks (``pdvs``, ``elements``, ``items``)
take what is there and stop where the bytes end, as a client reading a trusted
peer does; the strict ones (``pdv_at``, ``command_fields(strict=True)``) say what
is malformed (``Malformed``) for a receiver that must not trust its peer.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence

# -- PDU types (PS3.8 §9.3) and their names -------------------------------------------------------
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07
PDU_NAMES = {A_ASSOCIATE_RQ: "A-ASSOCIATE-RQ", A_ASSOCIATE_AC: "A-ASSOCIATE-AC", A_ASSOCIATE_RJ: "A-ASSOCIATE-RJ",
             P_DATA_TF: "P-DATA-TF", A_RELEASE_RQ: "A-RELEASE-RQ", A_RELEASE_RP: "A-RELEASE-RP",
             A_ABORT: "A-ABORT"}

# -- A-ASSOCIATE items (PS3.8 §9.3.2, PS3.7 annex D) ------------------------------------------------
APPLICATION_CONTEXT_ITEM, PRESENTATION_CONTEXT_RQ_ITEM, PRESENTATION_CONTEXT_AC_ITEM = 0x10, 0x20, 0x21
ABSTRACT_SYNTAX_ITEM, TRANSFER_SYNTAX_ITEM, USER_INFORMATION_ITEM = 0x30, 0x40, 0x50
MAXIMUM_LENGTH_ITEM, IMPLEMENTATION_CLASS_UID_ITEM, IMPLEMENTATION_VERSION_NAME_ITEM = 0x51, 0x52, 0x55
ROLE_SELECTION_ITEM, USER_IDENTITY_RQ_ITEM = 0x54, 0x58

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"

# -- fixed lengths --------------------------------------------------------------------------------
HEADER_LENGTH = 6  # a PDU header: type, reserved, length
PDV_HEADER_LENGTH = 6  # a PDV item's length (4), context ID (1), message control header (1)
FIXED_BODY_LENGTH = 4  # the body of A-RELEASE-RQ/RP, A-ABORT and A-ASSOCIATE-RJ
ASSOCIATE_FIXED_LENGTH = 68  # protocol version, reserved, called and calling AE titles, reserved: 2+2+16+16+32
MAX_ASSOCIATE_RQ = 64 * 1024  # largest A-ASSOCIATE-RQ body the PACS reads (PS3.8 sets no limit; real ones < 4 KiB)
UNLIMITED_PDU = 1 << 22  # a peer that accepts any PDU length (maximum 0) still gets 4 MiB PDUs from ``frame``

# -- A-ABORT sources and reasons (PS3.8 §9.3.8) ---------------------------------------------------
SOURCE_USER, SOURCE_PROVIDER = 0, 2
ABORT_NOT_SPECIFIED, ABORT_UNRECOGNIZED_PDU, ABORT_UNEXPECTED_PDU = 0, 1, 2
ABORT_UNRECOGNIZED_PARAMETER, ABORT_UNEXPECTED_PARAMETER, ABORT_INVALID_PARAMETER = 4, 5, 6
ABORT_WORDS = {ABORT_UNRECOGNIZED_PDU: "unrecognized PDU", ABORT_UNEXPECTED_PDU: "unexpected PDU",
               ABORT_INVALID_PARAMETER: "invalid PDU parameter value"}

# -- message control header bits (PS3.8 annex E.2) ------------------------------------------------
COMMAND, LAST = 0x01, 0x02

# -- DIMSE command fields and group 0000 elements (PS3.7 §E) --------------------------------------
C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP = 0x0001, 0x8001, 0x0030, 0x8030
NO_DATASET, DATASET_PRESENT = 0x0101, 0x0001  # CommandDataSetType: any value but 0x0101 announces a dataset
GROUP_LENGTH, AFFECTED_SOP_CLASS_UID, COMMAND_FIELD = 0x0000, 0x0002, 0x0100
MESSAGE_ID, MESSAGE_ID_BEING_RESPONDED_TO, PRIORITY = 0x0110, 0x0120, 0x0700
COMMAND_DATASET_TYPE, STATUS, ERROR_COMMENT, AFFECTED_SOP_INSTANCE_UID = 0x0800, 0x0900, 0x0902, 0x1000

HEADER = struct.Struct(">BBI")  # PDU: type, reserved, length
ITEM_HEADER = struct.Struct(">BBH")  # A-ASSOCIATE item: type, reserved, length
PDV_HEADER = struct.Struct(">IBB")  # PDV item: length, presentation context ID, message control header
ELEMENT_HEADER = struct.Struct("<HHI")  # implicit VR little endian: group, element, value length
_US, _UL, _UL_BE = struct.Struct("<H"), struct.Struct("<I"), struct.Struct(">I")


class Malformed(ValueError):
    """Bytes that break the encoding (a strict decoder's verdict)."""


class Closed(ConnectionError):
    """The peer closed the connection before all the bytes that were read for came."""


# -- framing --------------------------------------------------------------------------------------
def header(pdu_type: int, length: int, reserved: int = 0) -> bytes:
    """A PDU header; ``length`` as given (a fuzzer may lie)."""
    return HEADER.pack(pdu_type, reserved, length)


def parse_header(head: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(PDU type, length) of a 6-byte header; the reserved byte is not looked at."""
    pdu_type, _, length = HEADER.unpack_from(head)
    return pdu_type, length


def pdu(pdu_type: int, body: bytes) -> bytes:
    return HEADER.pack(pdu_type, 0, len(body)) + body


def split(data: bytes | bytearray) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete PDUs (type, body) at the start of ``data``, and the incomplete rest."""
    out: list[tuple[int, bytes]] = []
    off = 0
    while len(data) - off >= HEADER_LENGTH:
        pdu_type, _, length = HEADER.unpack_from(data, off)
        if len(data) - off - HEADER_LENGTH < length:
            break
        out.append((pdu_type, bytes(data[off + HEADER_LENGTH: off + HEADER_LENGTH + length])))
        off += HEADER_LENGTH + length
    return out, bytes(data[off:])


# -- bounded reads --------------------------------------------------------------------------------
def check_pdu(pdu_type: int, length: int, max_pdu: int) -> tuple[int, str] | None:
    """The rule for a PDU header once the association is negotiated: None if it may be
    read, else (A-ABORT reason, what is wrong, in words). Checked before anything of
    its length is allocated.

    P-DATA-TF: at most ``max_pdu`` (the Maximum Length we advertised) plus the 6 header
    bytes, which some implementations count in, and at least one PDV item header;
    A-RELEASE-RQ/RP and A-ABORT: exactly 4; A-ASSOCIATE-RQ/AC/RJ: unexpected here."""
    name = PDU_NAMES.get(pdu_type)
    if name is None:
        return ABORT_UNRECOGNIZED_PDU, f"sent an unrecognized PDU type 0x{pdu_type:02X}"
    if pdu_type in (A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ):
        return ABORT_UNEXPECTED_PDU, f"sent an {name} during the data phase (unexpected PDU)"
    if pdu_type == P_DATA_TF:
        if length > max_pdu + HEADER_LENGTH:
            return ABORT_INVALID_PARAMETER, (f"sent a P-DATA-TF of {length} bytes, over the negotiated maximum "
                                             f"of {max_pdu}")
        if length < PDV_HEADER_LENGTH:
            return ABORT_INVALID_PARAMETER, f"sent a P-DATA-TF of {length} bytes (too short for a PDV item)"
        return None
    if length != FIXED_BODY_LENGTH:
        return ABORT_INVALID_PARAMETER, f"sent an {name} with length {length} (it is always 4)"
    return None


def recv_up_to(sock: socket.socket, n: int, cap: int | None = None) -> bytearray:
    """``n`` bytes with ``recv_into``, in as few system calls as the kernel allows;
    fewer only if the peer closed the connection first. Never more than ``cap``
    bytes are allocated (a ValueError if ``n`` is over it)."""
    if cap is not None and n > cap:
        raise ValueError(f"refused to read {n} bytes (cap {cap})")
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


def recv_exact(sock: socket.socket, n: int, cap: int | None = None) -> bytearray:
    """``n`` bytes, or ``Closed`` if the peer closed the connection first (``recv_up_to``)."""
    buf = recv_up_to(sock, n, cap)
    if len(buf) < n:
        raise Closed("the peer closed the connection")
    return buf


# Linux's TCP_QUICKACK (12): acknowledge what arrived at once rather than up to 40 ms later.
TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def quickack_applies(sock: socket.socket) -> bool:
    """Whether ``read_pdu(quickack=True)`` can do anything on this socket: TCP, on Linux."""
    return (TCP_QUICKACK is not None and sock.family in (socket.AF_INET, socket.AF_INET6)
            and sock.type == socket.SOCK_STREAM)


def read_pdu(sock: socket.socket, cap: int | None = None,
             check: Callable[[int, int], None] | None = None, quickack: bool = False,
             early_ack: bool = False) -> tuple[int, bytearray]:
    """One PDU: (type, body). ``check(type, length)`` may raise before the body is read;
    a body over ``cap`` bytes is a ValueError, nothing allocated for it.

    ``quickack`` (a TCP socket, ``quickack_applies``): once the PDU is read, the kernel is told
    to acknowledge at once. A sender that keeps Nagle's algorithm on (Debian's DCMTK does unless
    ``TCP_NODELAY=1`` is set) holds the last small segment of each message until everything
    before it is acknowledged, and a receiver that delays its ACK (Linux does, up to 40 ms, once
    it answers each message) makes C-STOREs wait for that timer (measured: README, "How the PACS
    is built for speed"). The kernel clears the flag by itself, hence once per PDU (one call).

    ``early_ack``: also once the header is read, for a reader that waits for an answer after a
    large write (a C-STORE SCU). The segments of its write that the kernel sends after the write
    call returned put the connection back in delayed-ACK mode; storescp then writes its answer as
    12 bytes and 140, and the 140 waited 40 ms in half of the C-STOREs (captured on loopback).
    Asked once those first bytes are read, the kernel acknowledges them when the body's read
    has taken the rest of them."""
    pdu_type, length = parse_header(recv_exact(sock, HEADER_LENGTH))
    if early_ack:
        ack_now(sock)
    if check is not None:
        check(pdu_type, length)
    body = recv_exact(sock, length, cap)
    if quickack:
        ack_now(sock)
    return pdu_type, body


def ack_now(sock: socket.socket) -> None:
    """Ask the kernel to acknowledge what arrived at once (TCP_QUICKACK; ``quickack_applies``)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)  # type: ignore[arg-type]
    except OSError:  # closed under us: the next read says so
        pass


# -- A-ASSOCIATE-RQ/AC/RJ -------------------------------------------------------------------------
def item(item_type: int, value: bytes) -> bytes:
    return ITEM_HEADER.pack(item_type, 0, len(value)) + value


def items(body: bytes | bytearray | memoryview, start: int = ASSOCIATE_FIXED_LENGTH) -> Iterator[tuple[int, bytes]]:
    """The items (type, value) of an A-ASSOCIATE body (or of a user information item's
    value, ``start=0``), up to where the bytes end (lenient)."""
    pos = start
    while pos + 4 <= len(body):
        item_type, _, length = ITEM_HEADER.unpack_from(body, pos)
        yield item_type, bytes(body[pos + 4:pos + 4 + length])
        pos += 4 + length


def ae_title(title: str | bytes, encoding: str = "ascii") -> bytes:
    """An AE title field: 16 bytes, space padded (longer titles are cut)."""
    raw = title.encode(encoding) if isinstance(title, str) else title
    return raw[:16].ljust(16, b" ")


def uid(value: str | bytes, encoding: str = "ascii", errors: str = "strict") -> bytes:
    """A UID value, padded with a NUL to an even length."""
    raw = value.encode(encoding, errors) if isinstance(value, str) else value
    return raw + b"\0" if len(raw) % 2 else raw


def item_uid(value: str, pad: bool = False) -> bytes:
    """A UID as an A-ASSOCIATE item value: not padded (PS3.8 annex F; what pynetdicom and
    DCMTK send), or NUL padded to an even length as some clients do (``pad``)."""
    return uid(value) if pad else value.encode("ascii")


def presentation_context(context_id: int, abstract_syntax: str, transfer_syntaxes: Sequence[str],
                         pad: bool = False) -> bytes:
    """A presentation context item of an A-ASSOCIATE-RQ."""
    sub = item(ABSTRACT_SYNTAX_ITEM, item_uid(abstract_syntax, pad))
    sub += b"".join(item(TRANSFER_SYNTAX_ITEM, item_uid(ts, pad)) for ts in transfer_syntaxes)
    return item(PRESENTATION_CONTEXT_RQ_ITEM, bytes([context_id, 0, 0, 0]) + sub)


def user_information(max_pdu: int, implementation_uid: str, version_name: str | None = None,
                     pad: bool = False) -> bytes:
    sub = (item(MAXIMUM_LENGTH_ITEM, _UL_BE.pack(max_pdu))
           + item(IMPLEMENTATION_CLASS_UID_ITEM, item_uid(implementation_uid, pad)))
    if version_name is not None:
        sub += item(IMPLEMENTATION_VERSION_NAME_ITEM, version_name.encode("ascii"))
    return item(USER_INFORMATION_ITEM, sub)



def associate_rq(called: str | bytes, calling: str | bytes, contexts: Iterable[tuple[int, str, Sequence[str]]],
                 max_pdu: int, implementation_uid: str, version_name: str | None = None,
                 encoding: str = "ascii", pad: bool = False) -> bytes:
    """An A-ASSOCIATE-RQ: protocol version 1, ``contexts`` as (ID, abstract syntax,
    transfer syntaxes), the user information (maximum length, implementation UID and
    version name). ``pad``: UIDs NUL padded to even lengths (``item_uid``)."""
    body = (struct.pack(">HH", 1, 0) + ae_title(called, encoding) + ae_title(calling, encoding) + b"\0" * 32
            + item(APPLICATION_CONTEXT_ITEM, item_uid(APPLICATION_CONTEXT, pad))
            + b"".join(presentation_context(cid, abstract, ts, pad) for cid, abstract, ts in contexts)
            + user_information(max_pdu, implementation_uid, version_name, pad))
    return pdu(A_ASSOCIATE_RQ, body)


def context_results(ac_body: bytes | bytearray | memoryview) -> dict[int, int]:
    """Presentation context ID -> result (0: acceptance) in an A-ASSOCIATE-AC body."""
    return {value[0]: value[2] for item_type, value in items(ac_body)
            if item_type == PRESENTATION_CONTEXT_AC_ITEM and len(value) >= 3}


def associate_rj(result: int, source: int, reason: int) -> bytes:
    return pdu(A_ASSOCIATE_RJ, bytes([0, result, source, reason]))


def reject_fields(body: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(result, source, reason) of an A-ASSOCIATE-RJ body."""
    return body[1], body[2], body[3]


# -- A-RELEASE, A-ABORT ---------------------------------------------------------------------------
RELEASE_RQ = pdu(A_RELEASE_RQ, b"\0\0\0\0")
RELEASE_RP = pdu(A_RELEASE_RP, b"\0\0\0\0")


def abort(source: int, reason: int) -> bytes:
    """An A-ABORT PDU (PS3.8 §9.3.8)."""
    return pdu(A_ABORT, bytes([0, 0, source, reason]))


def abort_pdu(reason: int) -> bytes:
    """A-ABORT, source 2 (service provider), with a PS3.8 §9.3.8 reason."""
    return abort(SOURCE_PROVIDER, reason)


def abort_fields(body: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(source, reason) of an A-ABORT body; 0 for what is missing."""
    return (body[2] if len(body) > 2 else 0), (body[3] if len(body) > 3 else 0)


# -- P-DATA-TF ------------------------------------------------------------------------------------
def pdv(context_id: int, control: int, fragment: bytes) -> bytes:
    """One PDV item."""
    return PDV_HEADER.pack(len(fragment) + 2, context_id, control) + fragment


def p_data(context_id: int, control: int, fragment: bytes) -> bytes:
    """A P-DATA-TF PDU of one PDV item."""
    item_ = pdv(context_id, control, fragment)
    return HEADER.pack(P_DATA_TF, 0, len(item_)) + item_


def frame(context_id: int, payload: bytes | bytearray | memoryview, command: bool, max_pdu: int,
          out: bytearray) -> None:
    """Append ``payload`` to ``out`` as P-DATA-TF PDUs of one PDV each, none longer than
    ``max_pdu`` (0: ``UNLIMITED_PDU``); the last one carries the last-fragment bit."""
    room = max(1, (max_pdu or UNLIMITED_PDU) - PDV_HEADER_LENGTH)  # PDU length = 4 + 2 + data
    view = memoryview(payload)
    n = len(view)
    base = COMMAND if command else 0x00
    pos = 0
    while True:
        chunk = view[pos:pos + room]
        last = pos + room >= n
        out += HEADER.pack(P_DATA_TF, 0, len(chunk) + PDV_HEADER_LENGTH)
        out += PDV_HEADER.pack(len(chunk) + 2, context_id, base | (LAST if last else 0x00))
        out += chunk
        pos += room
        if last:
            return


def pdvs(body: bytes | bytearray | memoryview) -> Iterator[tuple[int, int, int, memoryview]]:
    """The PDV items of a P-DATA-TF body, lenient: (item length as claimed, context ID,
    message control header, fragment cut to what is there: a view, no copy), while a
    whole item header is left."""
    view = memoryview(body)
    off, length = 0, len(view)
    while off + PDV_HEADER_LENGTH <= length:
        item_len, cid, mch = PDV_HEADER.unpack_from(view, off)
        yield item_len, cid, mch, view[off + PDV_HEADER_LENGTH: off + 4 + item_len]
        off += 4 + item_len


def pdv_at(body: memoryview, off: int) -> tuple[int, int, memoryview, int] | None:
    """The PDV item at ``off``, strict: (context ID, message control header, fragment,
    offset of the next item), or None if it is malformed (no whole item header, a
    length under 2 or past the end of the PDU)."""
    length = len(body)
    if off + PDV_HEADER_LENGTH > length:
        return None
    item_len, cid, mch = PDV_HEADER.unpack_from(body, off)
    if item_len < 2 or off + 4 + item_len > length:
        return None
    return cid, mch, body[off + PDV_HEADER_LENGTH: off + 4 + item_len], off + 4 + item_len


# -- command sets (implicit VR little endian, group 0000) ------------------------------------------
def element(elem: int, value: bytes, group: int = 0x0000) -> bytes:
    """One element, implicit VR little endian."""
    return ELEMENT_HEADER.pack(group, elem, len(value)) + value


def us(value: int) -> bytes:
    return _US.pack(value)


def command_set(elements: Iterable[bytes]) -> bytes:
    """The elements, after (0000,0000) CommandGroupLength: the length of the rest."""
    body = b"".join(elements)
    return element(GROUP_LENGTH, _UL.pack(len(body))) + body


def c_echo_rq(message_id: int, sop_class: str = VERIFICATION) -> bytes:
    """A C-ECHO-RQ command set, as pynetdicom encodes it (same elements, same order)."""
    return command_set((element(AFFECTED_SOP_CLASS_UID, uid(sop_class)), element(COMMAND_FIELD, us(C_ECHO_RQ)),
                        element(MESSAGE_ID, us(message_id)), element(COMMAND_DATASET_TYPE, us(NO_DATASET))))


def c_store_rq(message_id: int, sop_class: str, sop_instance: str, priority: int = 0) -> bytes:
    """A C-STORE-RQ command set, as pynetdicom encodes it (same elements, same order)."""
    return command_set((
        element(AFFECTED_SOP_CLASS_UID, uid(sop_class)),
        element(COMMAND_FIELD, us(C_STORE_RQ)),
        element(MESSAGE_ID, us(message_id)),
        element(PRIORITY, us(priority)),
        element(COMMAND_DATASET_TYPE, us(DATASET_PRESENT)),
        element(AFFECTED_SOP_INSTANCE_UID, uid(sop_instance)),
    ))


def response(command_field: int, message_id: int, sop_class: str, status: int, sop_instance: str | None = None,
             encoding: str = "ascii", errors: str = "strict") -> bytes:
    """A C-ECHO-RSP (0x8030) or C-STORE-RSP (0x8001) command set without a dataset, as
    pynetdicom encodes it; ``encoding``/``errors`` for the UIDs (a receiver echoing a
    fuzzed UID passes latin-1/replace)."""
    return command_set((
        element(AFFECTED_SOP_CLASS_UID, uid(sop_class, encoding, errors)), element(COMMAND_FIELD, us(command_field)),
        element(MESSAGE_ID_BEING_RESPONDED_TO, us(message_id)), element(COMMAND_DATASET_TYPE, us(NO_DATASET)),
        element(STATUS, us(status)),
        *((element(AFFECTED_SOP_INSTANCE_UID, uid(sop_instance, encoding, errors)),)
          if sop_instance is not None else ()),
    ))


def elements(data: bytes | bytearray | memoryview) -> Iterator[tuple[int, int, int, bytes]]:
    """The elements of an implicit VR little endian byte string, lenient: (group, element,
    value length as claimed, value cut to what is there), while a whole element header is left."""
    pos, end = 0, len(data)
    while pos + 8 <= end:
        group, elem, length = ELEMENT_HEADER.unpack_from(data, pos)
        yield group, elem, length, bytes(data[pos + 8:pos + 8 + length])
        pos += 8 + length


def command_fields(data: bytes | bytearray | memoryview, strict: bool = False) -> dict[int, bytes]:
    """Command set element number (0000,eeee) -> raw value (the last one, if repeated).
    Strict: an element outside group 0000 or running past the end is ``Malformed``."""
    out: dict[int, bytes] = {}
    pos = 0
    for group, elem, length, value in elements(data):
        if strict and (group != 0x0000 or pos + 8 + length > len(data)):
            raise Malformed(f"malformed command set at byte {pos}")
        out[elem] = value
        pos += 8 + length
    return out


def us_value(raw: bytes | None) -> int | None:
    """An US value (the first two bytes), or None if there are fewer."""
    return int(_US.unpack_from(raw)[0]) if raw and len(raw) >= 2 else None
