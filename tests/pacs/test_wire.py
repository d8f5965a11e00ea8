"""The data phase on the socket (pacs/wire.py): what a broken or hostile modality
gets once its association is accepted, seen from a raw socket. After each case
the PACS still serves the next association."""

from __future__ import annotations

import socket
import struct

import pytest

from dicomlab import pdu
from lab import add_node, echoscu, events_of, wait_for

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT = "1.2.840.10008.1.2"


def associate_rq(calling: str = "CT01", called: str = "PACS", max_pdu: int = 16384) -> bytes:
    return pdu.associate_rq(called, calling, [(1, VERIFICATION, [IMPLICIT]), (3, CT, [IMPLICIT])], max_pdu, "1.2.3.4",
                            pad=True)


def read_pdu(s: socket.socket) -> tuple[int, bytes]:
    """(type, body); (0, b"") if the connection closed first."""
    try:
        t, body = pdu.read_pdu(s)
    except pdu.Closed:
        return 0, b""
    return t, bytes(body)


def command(field: int, cid: int, extra: bytes = b"") -> bytes:
    elems = [pdu.element(pdu.AFFECTED_SOP_CLASS_UID, pdu.uid(CT if cid == 3 else VERIFICATION)),
             pdu.element(pdu.COMMAND_FIELD, pdu.us(field)), pdu.element(pdu.MESSAGE_ID, pdu.us(7)),
             pdu.element(pdu.COMMAND_DATASET_TYPE, pdu.us(pdu.NO_DATASET)), extra]
    return pdu.p_data(cid, pdu.COMMAND | pdu.LAST, pdu.command_set(elems))


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
