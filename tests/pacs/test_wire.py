"""The data phase on the socket (pacs/wire.py): what a broken or hostile modality
gets once its association is accepted, seen from a raw socket. After each case
the PACS still serves the next association."""

from __future__ import annotations

import socket
import struct

import pytest

from lab import add_node, echoscu, events_of, wait_for

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT = "1.2.840.10008.1.2"


def _uid(u: str) -> bytes:
    b = u.encode()
    return b + b"\0" if len(b) % 2 else b


def _item(t: int, body: bytes) -> bytes:
    return struct.pack(">BBH", t, 0, len(body)) + body


def associate_rq(calling: str = "CT01", called: str = "PACS", max_pdu: int = 16384) -> bytes:
    ctx = lambda cid, uid: _item(0x20, bytes([cid, 0, 0, 0]) + _item(0x30, _uid(uid)) + _item(0x40, _uid(IMPLICIT)))  # noqa: E731
    user = _item(0x50, _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, _uid("1.2.3.4")))
    body = (struct.pack(">HH", 1, 0) + called.encode().ljust(16) + calling.encode().ljust(16) + b"\0" * 32
            + _item(0x10, _uid("1.2.840.10008.3.1.1.1")) + ctx(1, VERIFICATION) + ctx(3, CT) + user)
    return struct.pack(">BBI", 1, 0, len(body)) + body


def read_pdu(s: socket.socket) -> tuple[int, bytes]:
    head = b""
    while len(head) < 6:
        chunk = s.recv(6 - len(head))
        if not chunk:
            return 0, b""
        head += chunk
    t, _, n = struct.unpack(">BBI", head)
    body = b""
    while len(body) < n:
        body += s.recv(n - len(body))
    return t, body


def command(field: int, cid: int, extra: bytes = b"") -> bytes:
    def el(g: int, e: int, v: bytes) -> bytes:
        return struct.pack("<HHI", g, e, len(v)) + v
    elems = el(0, 2, _uid(CT if cid == 3 else VERIFICATION)) + el(0, 0x100, struct.pack("<H", field)) \
        + el(0, 0x110, struct.pack("<H", 7)) + el(0, 0x800, struct.pack("<H", 0x0101)) + extra
    cmd = el(0, 0, struct.pack("<I", len(elems))) + elems
    pdv = struct.pack(">IBB", len(cmd) + 2, cid, 0x03) + cmd
    return struct.pack(">BBI", 4, 0, len(pdv)) + pdv


@pytest.fixture
def accepted(pacs, registry):
    add_node(registry, "CT01")
    s = socket.create_connection(("127.0.0.1", pacs.port), timeout=10)
    s.sendall(associate_rq())
    assert read_pdu(s)[0] == 0x02  # A-ASSOCIATE-AC
    yield s
    s.close()
    # whatever happened, the next association is served
    assert echoscu(pacs.port, "CT01", "PACS").returncode == 0


def test_echo_on_the_socket_path(accepted, registry):
    accepted.sendall(command(0x0030, 1))
    t, body = read_pdu(accepted)
    assert t == 0x04 and struct.pack("<HHIH", 0, 0x900, 2, 0) in body  # Status 0x0000
    accepted.sendall(struct.pack(">BBII", 5, 0, 4, 0))
    assert read_pdu(accepted)[0] == 0x06  # A-RELEASE-RP
    assert wait_for(lambda: events_of(registry, "association-released", calling_aet="CT01"))


@pytest.mark.parametrize("bad,why", [
    (struct.pack(">BBI", 4, 0, 8) + struct.pack(">IBB", 900, 1, 3) + b"xx", "malformed P-DATA-TF item"),
    (struct.pack(">BBI", 4, 0, 10_000_000), "over the negotiated maximum"),
    (struct.pack(">BBI", 9, 0, 0), "unrecognized PDU type 0x09"),
    (command(0x0020, 3), "DIMSE command 0x0020 is not supported"),  # C-FIND-RQ
    (struct.pack(">BBI", 4, 0, 6) + struct.pack(">IBB", 2, 5, 3), "presentation context 5"),
])
def test_broken_data_phase_is_aborted_with_the_reason(accepted, registry, bad, why):
    accepted.sendall(bad)
    assert read_pdu(accepted)[0] == 0x07  # A-ABORT
    ev = wait_for(lambda: events_of(registry, "association-aborted", calling_aet="CT01"))[-1]
    assert why in ev.message


def test_connection_dropped_mid_message_is_an_abort_and_stores_nothing(accepted, registry, pacs):
    accepted.sendall(command(0x0001, 3)[:-4])  # half a command, then gone
    accepted.close()
    ev = wait_for(lambda: events_of(registry, "association-aborted", calling_aet="CT01"))[-1]
    assert "0 stored" in ev.message
    assert not list(pacs.storage_dir.rglob("*.dcm"))


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC000, 0x0124])
@pytest.mark.parametrize("cid,msg_id", [(1, 1), (3, 65535), (255, 7)])
def test_responses_are_encoded_as_pynetdicom_encodes_them(status, cid, msg_id):
    from pynetdicom.dimse_messages import C_ECHO_RSP, C_STORE_RSP
    from pynetdicom.dimse_primitives import C_ECHO, C_STORE
    from pynetdicom.pdu import P_DATA_TF

    from pacs.wire import response_pdu

    def pynetdicom_bytes(primitive, message):
        message.primitive_to_message(primitive)
        out = b""
        for pdata in message.encode_msg(cid, 16384):
            pdu = P_DATA_TF()
            pdu.from_primitive(pdata)
            out += pdu.encode()
        return out

    for sop_instance in ("1.2.3.4", "1.2.826.0.1.3680043.8.498.12345678901234567890"):
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo, rsp.AffectedSOPClassUID = msg_id, CT
        rsp.AffectedSOPInstanceUID, rsp.Status = sop_instance, status
        assert response_pdu(cid, 0x8001, msg_id, CT, status, sop_instance) == pynetdicom_bytes(rsp, C_STORE_RSP())
    echo = C_ECHO()
    echo.MessageIDBeingRespondedTo, echo.AffectedSOPClassUID, echo.Status = msg_id, VERIFICATION, status
    assert response_pdu(cid, 0x8030, msg_id, VERIFICATION, status) == pynetdicom_bytes(echo, C_ECHO_RSP())
