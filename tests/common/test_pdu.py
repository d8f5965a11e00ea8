"""dicomlab.pdu, the one hand-written PDU codec: byte for byte what pynetdicom's and
pydicom's encoders produce, decoders that read what they write (hypothesis), the PDU
caps and the bounded reads on real sockets."""

from __future__ import annotations

import socket
from io import BytesIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pynetdicom.dimse_messages import C_ECHO_RQ, C_ECHO_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import (
    A_ABORT_RQ,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    P_DATA_TF,
)
from pynetdicom.pdu_primitives import (
    A_ABORT,
    A_ASSOCIATE,
    A_P_ABORT,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext

from dicomlab import pdu

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPL = "1.2.826.0.1.3680043.8.498.1"

uids = st.lists(st.integers(0, 99_999_999), min_size=2, max_size=8).map(lambda p: "1." + ".".join(map(str, p)))
ae_titles = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\"), min_size=1, max_size=16)


def pynetdicom_pdus(message, primitive, cid: int, max_pdu: int = 16384) -> bytes:
    """What pynetdicom sends for this DIMSE message: its encode_msg, each P-DATA through P_DATA_TF."""
    message.primitive_to_message(primitive)
    out = b""
    for pdata in message.encode_msg(cid, max_pdu):
        p = P_DATA_TF()
        p.from_primitive(pdata)
        out += p.encode()
    return out


# -- byte equality with pynetdicom / pydicom --------------------------------------------------------
@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC000, 0x0124])
@pytest.mark.parametrize("cid,msg_id", [(1, 1), (3, 65535), (255, 7)])
def test_responses_are_encoded_as_pynetdicom_encodes_them(status, cid, msg_id):
    from pacs.wire import response_pdu  # the PACS's responses are these bytes

    for sop_instance in ("1.2.3.4", "1.2.826.0.1.3680043.8.498.12345678901234567890"):
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo, rsp.AffectedSOPClassUID = msg_id, CT
        rsp.AffectedSOPInstanceUID, rsp.Status = sop_instance, status
        theirs = pynetdicom_pdus(C_STORE_RSP(), rsp, cid)
        ours = pdu.p_data(cid, pdu.COMMAND | pdu.LAST, pdu.response(pdu.C_STORE_RSP, msg_id, CT, status, sop_instance))
        assert ours == theirs == response_pdu(cid, 0x8001, msg_id, CT, status, sop_instance)
    echo = C_ECHO()
    echo.MessageIDBeingRespondedTo, echo.AffectedSOPClassUID, echo.Status = msg_id, pdu.VERIFICATION, status
    theirs = pynetdicom_pdus(C_ECHO_RSP(), echo, cid)
    assert pdu.p_data(cid, 0x03, pdu.response(pdu.C_ECHO_RSP, msg_id, pdu.VERIFICATION, status)) == theirs
    assert response_pdu(cid, 0x8030, msg_id, pdu.VERIFICATION, status) == theirs


@settings(max_examples=60, deadline=None)
@given(msg_id=st.integers(1, 0xFFFF), status=st.integers(0, 0xFFFF), cid=st.integers(1, 255).filter(lambda c: c % 2),
       sop_class=uids, sop_instance=uids)
def test_responses_match_pynetdicom_for_any_fields(msg_id, status, cid, sop_class, sop_instance):
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo, rsp.AffectedSOPClassUID = msg_id, sop_class
    rsp.AffectedSOPInstanceUID, rsp.Status = sop_instance, status
    ours = pdu.p_data(cid, 0x03, pdu.response(pdu.C_STORE_RSP, msg_id, sop_class, status, sop_instance))
    assert ours == pynetdicom_pdus(C_STORE_RSP(), rsp, cid)


@settings(max_examples=60, deadline=None)
@given(msg_id=st.integers(1, 0xFFFF), priority=st.sampled_from([0, 1, 2]), sop_class=uids, sop_instance=uids)
def test_request_command_sets_are_what_pydicom_encodes(msg_id, priority, sop_class, sop_instance):
    """C-STORE-RQ and C-ECHO-RQ: pynetdicom's message, encoded by pydicom (dsutils.encode)."""
    prim = C_STORE()
    prim.MessageID, prim.AffectedSOPClassUID, prim.AffectedSOPInstanceUID = msg_id, sop_class, sop_instance
    prim.Priority = priority
    prim.DataSet = BytesIO(b"\0\0")
    msg = C_STORE_RQ()
    msg.primitive_to_message(prim)
    assert pdu.c_store_rq(msg_id, sop_class, sop_instance, priority) == encode(msg.command_set, True, True)
    echo = C_ECHO()
    echo.MessageID, echo.AffectedSOPClassUID = msg_id, pdu.VERIFICATION
    msg = C_ECHO_RQ()
    msg.primitive_to_message(echo)
    assert pdu.c_echo_rq(msg_id) == encode(msg.command_set, True, True)
    assert pdu.p_data(1, 0x03, pdu.c_echo_rq(msg_id)) == pynetdicom_pdus(C_ECHO_RQ(), echo, 1)


def _associate_primitive(called: str, calling: str, max_pdu: int, contexts, version: str | None) -> A_ASSOCIATE:
    prim = A_ASSOCIATE()
    prim.application_context_name = pdu.APPLICATION_CONTEXT
    prim.calling_ae_title, prim.called_ae_title = calling, called
    cxs = []
    for cid, abstract, syntaxes in contexts:
        cx = PresentationContext()
        cx.context_id, cx.abstract_syntax, cx.transfer_syntax = cid, abstract, list(syntaxes)
        cxs.append(cx)
    prim.presentation_context_definition_list = cxs
    ml = MaximumLengthNotification()
    ml.maximum_length_received = max_pdu
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = IMPL
    info = [ml, impl]
    if version is not None:
        ver = ImplementationVersionNameNotification()
        ver.implementation_version_name = version
        info.append(ver)
    prim.user_information = info
    return prim


contexts_st = st.lists(st.tuples(st.sampled_from([pdu.VERIFICATION, CT]),
                                 st.lists(st.sampled_from([pdu.IMPLICIT_VR_LE, EXPLICIT]), min_size=1, max_size=2,
                                          unique=True)), min_size=1, max_size=4).map(
    lambda cs: [(2 * i + 1, a, t) for i, (a, t) in enumerate(cs)])


@settings(max_examples=40, deadline=None)
@given(called=ae_titles, calling=ae_titles, max_pdu=st.integers(0, 0xFFFFFFFF), contexts=contexts_st,
       version=st.none() | st.text(st.characters(min_codepoint=0x41, max_codepoint=0x5A), min_size=1, max_size=16))
def test_associate_rq_is_what_pynetdicom_encodes(called, calling, max_pdu, contexts, version):
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(_associate_primitive(called, calling, max_pdu, contexts, version))
    assert pdu.associate_rq(called, calling, contexts, max_pdu, IMPL, version) == rq.encode()


def test_release_abort_and_reject_are_what_pynetdicom_encodes():
    assert pdu.RELEASE_RQ == A_RELEASE_RQ().encode()
    assert pdu.RELEASE_RP == A_RELEASE_RP().encode()
    prim = A_ABORT()
    prim.abort_source = 0  # service user (reason then not significant: 0)
    user = A_ABORT_RQ()
    user.from_primitive(prim)
    assert pdu.abort(pdu.SOURCE_USER, pdu.ABORT_NOT_SPECIFIED) == user.encode()
    for reason in (0, 1, 2, 4, 5, 6):
        p_abort = A_P_ABORT()
        p_abort.provider_reason = reason
        rq = A_ABORT_RQ()
        rq.from_primitive(p_abort)
        assert pdu.abort_pdu(reason) == rq.encode()
        assert pdu.abort_fields(rq.encode()[6:]) == (2, reason)
    prim = A_ASSOCIATE()
    prim.result, prim.result_source, prim.diagnostic = 0x01, 0x01, 0x03  # rejected-permanent, user, calling AE
    rj = A_ASSOCIATE_RJ()
    rj.from_primitive(prim)
    assert pdu.associate_rj(1, 1, 3) == rj.encode()
    assert pdu.reject_fields(rj.encode()[6:]) == (1, 1, 3)


# -- decoders ---------------------------------------------------------------------------------------
def test_context_results_of_a_pynetdicom_associate_ac():
    prim = _associate_primitive("PACS", "CT01", 16384, [(1, pdu.VERIFICATION, [pdu.IMPLICIT_VR_LE])], None)
    prim.result = 0
    cxs = []
    for cid, result in ((1, 0), (3, 3), (5, 4)):
        cx = PresentationContext()
        cx.context_id, cx.result, cx.transfer_syntax = cid, result, [pdu.IMPLICIT_VR_LE]
        cxs.append(cx)
    prim.presentation_context_definition_results_list = cxs
    ac = A_ASSOCIATE_AC()
    ac.from_primitive(prim)
    kind, body = pdu.split(ac.encode())[0][0]
    assert kind == pdu.A_ASSOCIATE_AC
    assert pdu.context_results(body) == {1: 0, 3: 3, 5: 4}


@settings(max_examples=100, deadline=None)
@given(fields=st.dictionaries(st.integers(1, 0xFFFF), st.binary(max_size=64).map(lambda b: b + b"\0" * (len(b) % 2)),
                              max_size=12))
def test_command_sets_decode_to_what_was_encoded(fields):
    data = pdu.command_set(pdu.element(e, v) for e, v in sorted(fields.items()))
    got = pdu.command_fields(data, strict=True)
    assert got.pop(pdu.GROUP_LENGTH) == (len(data) - 12).to_bytes(4, "little")
    assert got == fields
    assert pdu.command_fields(data) == pdu.command_fields(data, strict=True)


def test_strict_command_decoding_names_the_malformed_element():
    good = pdu.c_echo_rq(5)
    with pytest.raises(pdu.Malformed, match="at byte 12"):
        pdu.command_fields(good[:12] + pdu.element(0x0100, pdu.us(0x30), group=0x0008), strict=True)
    with pytest.raises(pdu.Malformed, match="at byte 0"):
        pdu.command_fields(pdu.ELEMENT_HEADER.pack(0, 0, 100) + b"\0" * 8, strict=True)
    assert pdu.command_fields(pdu.ELEMENT_HEADER.pack(0, 0, 100) + b"\0" * 8) == {0: b"\0" * 8}  # lenient: cut
    assert pdu.us_value(pdu.command_fields(good)[pdu.MESSAGE_ID]) == 5
    assert decode(BytesIO(good), True, True).MessageID == 5  # and pydicom reads it


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=3000), max_pdu=st.sampled_from([0, 7, 8, 64, 1000, 16384]),
       command=st.booleans(), cid=st.integers(1, 255))
def test_frame_splits_within_the_maximum_and_reassembles(payload, max_pdu, command, cid):
    out = bytearray()
    pdu.frame(cid, payload, command, max_pdu, out)
    pdus, rest = pdu.split(out)
    assert rest == b""
    data, controls = b"", []
    for kind, body in pdus:
        assert kind == pdu.P_DATA_TF
        assert pdu.check_pdu(kind, len(body), max_pdu or pdu.UNLIMITED_PDU) is None
        item = pdu.pdv_at(memoryview(body), 0)
        assert item is not None
        got_cid, mch, fragment, end = item
        assert (got_cid, end) == (cid, len(body))
        assert [(c, m, bytes(f)) for _, c, m, f in pdu.pdvs(body)] == [(cid, mch, bytes(fragment))]
        data += fragment
        controls.append(mch)
        p = P_DATA_TF()  # pynetdicom decodes it the same
        p.decode(pdu.header(kind, len(body)) + body)
        ((their_cid, pdv),) = p.to_primitive().presentation_data_value_list
        assert (their_cid, pdv[0], pdv[1:]) == (cid, mch, bytes(fragment))
    assert data == payload
    base = pdu.COMMAND if command else 0
    assert controls == [base] * (len(controls) - 1) + [base | pdu.LAST]


@given(body=st.binary(max_size=40), off=st.integers(0, 40))
def test_pdv_at_never_reads_past_the_pdu(body, off):
    item = pdu.pdv_at(memoryview(body), off)
    if item is not None:
        _, _, fragment, end = item
        assert off + 6 <= end <= len(body) and len(fragment) == end - off - 6


@given(parts=st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=50)), max_size=6), cut=st.integers(0, 400))
def test_split_returns_whole_pdus_and_the_rest(parts, cut):
    data = b"".join(pdu.pdu(t, b) for t, b in parts)
    got, rest = pdu.split(data[:cut])
    assert got == parts[:len(got)]
    assert b"".join(pdu.pdu(t, b) for t, b in got) + rest == data[:cut]


@given(source=st.integers(0, 255), reason=st.integers(0, 255), result=st.integers(0, 255))
def test_abort_and_reject_fields_round_trip(source, reason, result):
    (kind, body), = pdu.split(pdu.abort(source, reason))[0]
    assert kind == pdu.A_ABORT and pdu.abort_fields(body) == (source, reason)
    assert pdu.abort_fields(b"\0\0") == (0, 0)
    (kind, body), = pdu.split(pdu.associate_rj(result, source, reason))[0]
    assert kind == pdu.A_ASSOCIATE_RJ and pdu.reject_fields(body) == (result, source, reason)


# -- caps and bounded reads -------------------------------------------------------------------------
@pytest.mark.parametrize("pdu_type,length,verdict", [
    (0x04, 16390, None), (0x04, 16391, 6), (0x04, 5, 6), (0x04, 6, None), (0x05, 4, None), (0x05, 0, 6),
    (0x06, 4, None), (0x07, 4, None), (0x07, 5, 6), (0x01, 100, 2), (0x02, 100, 2), (0x03, 4, 2),
    (0x00, 4, 1), (0x08, 4, 1), (0xFF, 0, 1),
])
def test_the_pdu_caps(pdu_type, length, verdict):
    bad = pdu.check_pdu(pdu_type, length, 16384)
    assert (bad[0] if bad else None) == verdict


def test_read_pdu_checks_the_header_and_caps_the_body_before_reading_it():
    a, b = socket.socketpair()
    try:
        b.sendall(pdu.RELEASE_RQ + pdu.header(pdu.P_DATA_TF, 0xFFFFFFFF))
        assert pdu.read_pdu(a, cap=100) == (pdu.A_RELEASE_RQ, bytearray(4))
        with pytest.raises(ValueError, match="cap 100"):
            pdu.read_pdu(a, cap=100)  # a 4 GiB body: refused, nothing allocated

        def refuse(kind: int, length: int) -> None:
            raise RuntimeError(f"{kind}/{length}")
        b.sendall(pdu.header(9, 3))
        with pytest.raises(RuntimeError, match="9/3"):
            pdu.read_pdu(a, check=refuse)
        b.sendall(pdu.header(4, 10) + b"abc")
        b.close()
        with pytest.raises(pdu.Closed):
            pdu.read_pdu(a)
        assert pdu.recv_up_to(a, 6) == b""
    finally:
        a.close()


@pytest.mark.skipif(pdu.TCP_QUICKACK is None, reason="TCP_QUICKACK is Linux's")
def test_read_pdu_asks_for_an_immediate_ack_only_when_told():
    """``read_pdu(quickack=True)`` leaves the socket acknowledging at once (the kernel's quickack
    mode, read back with getsockopt); without it, a socket put in delayed-ACK mode stays there."""
    from lab import tcp_pair

    client, server = tcp_pair()
    try:
        assert pdu.quickack_applies(server)
        for quick in (True, False, True):
            server.setsockopt(socket.IPPROTO_TCP, pdu.TCP_QUICKACK, 0)  # delayed ACKs, as after an answer
            assert server.getsockopt(socket.IPPROTO_TCP, pdu.TCP_QUICKACK) == 0
            client.sendall(pdu.RELEASE_RQ)
            assert pdu.read_pdu(server, quickack=quick) == (0x05, bytearray(4))
            assert server.getsockopt(socket.IPPROTO_TCP, pdu.TCP_QUICKACK) == int(quick)
    finally:
        client.close()
        server.close()
    a, b = socket.socketpair()  # not TCP: nothing to ask
    try:
        assert not pdu.quickack_applies(a)
    finally:
        a.close()
        b.close()
