"""A malformed A-ASSOCIATE-RQ that pynetdicom would raise on (rather than answer) gets an
A-ABORT 2/6 from the gate and a pdu-invalid event naming the peer (pacs/rqcheck.py);
in both engines, with real sockets against the real PACS process."""

from __future__ import annotations

import struct

import pytest

from lab import PacsProcess, add_node, echoscu, events_of, wait_for
from pacs.rqcheck import rq_problem

VERIFICATION, IMPLICIT = b"1.2.840.10008.1.1", b"1.2.840.10008.1.2"


def item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def context(cid: int, abstract: bytes | None = VERIFICATION, transfers: tuple[bytes, ...] = (IMPLICIT,)) -> bytes:
    subs = (item(0x30, abstract) if abstract is not None else b"") + b"".join(item(0x40, t) for t in transfers)
    return item(0x20, bytes([cid, 0, 0, 0]) + subs)


def overlong(it: bytes) -> bytes:
    """The item with a length field 8 bytes longer than its content."""
    return it[:2] + struct.pack(">H", len(it) - 4 + 8) + it[4:]


def rq(*contexts: bytes, user: bytes | None = None) -> bytes:
    """A whole A-ASSOCIATE-RQ PDU from CT01 to PACS with these presentation context items."""
    user = user if user is not None else item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.826.0.1.3680043.9.9")
    body = (struct.pack(">HH", 1, 0) + b"PACS".ljust(16) + b"CT01".ljust(16) + b"\0" * 32
            + item(0x10, b"1.2.840.10008.3.1.1.1") + b"".join(contexts) + item(0x50, user))
    return struct.pack(">BBI", 1, 0, len(body)) + body


def test_a_sound_request_passes():
    assert rq_problem(rq(context(1), context(3))) is None


@pytest.mark.parametrize("pdu, words", [
    (rq(context(1), context(3, transfers=())), "presentation context 3 has no transfer syntax"),
    (rq(context(1), context(5, abstract=None)), "presentation context 5 has no abstract syntax"),
    (rq(context(2)), "cannot be decoded (ValueError: 'context_id' must be an odd integer"),
    (rq(context(1), user=item(0x51, struct.pack(">I", 16384)) + item(0x58, bytes([9, 0, 0, 1]) + b"x" + b"\0\0")),
     "cannot be decoded (ValueError: User Identity Type"),
    (rq(overlong(context(1))), "cannot be decoded"),
])
def test_what_pynetdicom_would_raise_on_is_named(pdu, words):
    problem = rq_problem(pdu)
    assert problem is not None and words in problem, problem


def test_the_verdict_is_kept_per_request_and_the_cache_is_bounded(monkeypatch):
    """The same bytes get the same verdict from the cache (a bad request stays bad); the cache
    holds at most CACHE_SIZE requests, by digest."""
    from pacs import rqcheck

    monkeypatch.setattr(rqcheck, "CACHE_SIZE", 4)
    monkeypatch.setattr(rqcheck, "_verdicts", type(rqcheck._verdicts)())
    bad, good = rq(context(2)), rq(context(1))
    calls = []
    real = rqcheck._decode_problem
    monkeypatch.setattr(rqcheck, "_decode_problem", lambda pdu: calls.append(pdu) or real(pdu))
    for _ in range(3):
        assert "must be an odd integer" in (rqcheck.rq_problem(bad) or "")
        assert rqcheck.rq_problem(good) is None
    assert calls == [bad, good]  # decoded once each
    for cid in (3, 5, 7, 9, 11):  # five more distinct requests push the oldest out
        assert rqcheck.rq_problem(rq(context(1), context(cid))) is None
    assert len(rqcheck._verdicts) == 4
    assert all(len(k) == 32 for k in rqcheck._verdicts)  # digests, not the requests
    assert "must be an odd integer" in (rqcheck.rq_problem(bad) or "") and calls[-1] == bad  # decoded again


@pytest.mark.parametrize("fastpath", ["1", "0"])
def test_malformed_request_gets_an_abort_and_an_event(redis_url, registry, tmp_path, fastpath):
    import socket

    pacs = PacsProcess(redis_url, tmp_path / "st", extra_env={"PACS_WORKERS": "1", "PACS_FASTPATH": fastpath})
    registry.update_listener({"port": pacs.port, "tls_port": pacs.tls_port})
    pacs.start()
    try:
        add_node(registry, "CT01")
        with socket.create_connection(("127.0.0.1", pacs.port), timeout=10) as s:
            s.sendall(rq(context(1, transfers=())))  # pynetdicom 3.0.4: IndexError in negotiate_as_acceptor
            got = b""
            try:
                while chunk := s.recv(4096):
                    got += chunk
            except ConnectionResetError:
                pass
        assert got == bytes.fromhex("07 00 00000004 00 00 02 06")  # A-ABORT, service provider, invalid parameter
        ev = wait_for(lambda: events_of(registry, "connection-closed", reason="pdu-invalid"), what="event")[0]
        assert "malformed" in ev.message and "no transfer syntax" in ev.message and ev.peer == "127.0.0.1"
        assert "Traceback" not in pacs.log_path.read_text()
        assert echoscu(pacs.port, "CT01", "PACS").returncode == 0  # the listener goes on
    finally:
        assert pacs.stop() == 0


def test_the_dul_takes_the_request_the_gate_decoded():
    """A request not seen before is decoded once: the gate's check hands its decode (and the
    primitive made from it) to the association's DUL, which does not decode the bytes again;
    other bytes, or a request seen before (no decode handed over), are decoded as upstream."""
    import socket as socketlib

    from pynetdicom import AE

    from pacs.fastpath import LabAssociation
    from pacs.rqcheck import rq_check
    from pacs.transport import FastSocket

    pdu = rq(context(1), context(3), context(5))  # unique: context 5 is in no other test's request
    problem, decoded, own, key = rq_check(pdu)
    assert problem is None and decoded is not None and own is not None
    assert decoded.to_primitive() is decoded.to_primitive()  # the primitive made in the check
    # made once, for whichever takes the association: the direct accept, or pynetdicom (which
    # may change it, so it is one that rqcheck.remember has not kept: a fresh decode's)
    assert own is decoded.to_primitive()
    assert rq_check(pdu)[:3] == (None, None, None)  # seen before: no decode to hand over, none kept

    a, b = socketlib.socketpair()
    try:
        assoc = LabAssociation(AE(), "acceptor")
        sock = FastSocket(assoc, client_socket=a)
        assoc.set_socket(sock)
        sock.predecoded = (pdu, decoded)
        got, event = assoc.dul._decode_pdu(bytearray(pdu))
        assert got is decoded and event == "Evt6"
        assert sock.predecoded is None  # used once
        again, event = assoc.dul._decode_pdu(bytearray(pdu))
        assert again is not decoded and event == "Evt6"  # decoded afresh, as upstream
        assert [cx.context_id for cx in again.to_primitive().presentation_context_definition_list] == [1, 3, 5]
    finally:
        a.close()
        b.close()


def test_only_accepted_requests_are_kept_and_at_most_known_size(monkeypatch):
    """The direct accept keeps the primitive of a request it accepted (``remember``) for the next
    request with the same bytes; nothing else is kept (an unauthorized peer cannot fill the
    cache with 64 KiB requests), and at most KNOWN_SIZE are."""
    from pacs import rqcheck

    monkeypatch.setattr(rqcheck, "_verdicts", type(rqcheck._verdicts)())
    monkeypatch.setattr(rqcheck, "_known", type(rqcheck._known)())
    monkeypatch.setattr(rqcheck, "KNOWN_SIZE", 3)
    pdus = [rq(*(context(2 * i + 1) for i in range(n))) for n in range(1, 6)]
    firsts = [rqcheck.rq_check(p) for p in pdus]
    assert all(rqcheck.rq_check(p).primitive is None for p in pdus)  # decoded once, not kept
    for checked in firsts:
        rqcheck.remember(checked.key, checked.primitive)
    kept = [rqcheck.rq_check(p).primitive for p in pdus]
    assert kept[:2] == [None, None] and kept[2:] == [c.primitive for c in firsts[2:]]  # the last 3
    assert len(kept[4].presentation_context_definition_list) == 5
    rqcheck.remember(b"\0" * 32, firsts[0].primitive)  # a digest the verdicts do not know: not kept
    assert len(rqcheck._known) == 3


def test_a_sound_request_is_decoded_again_when_its_primitive_is_not_kept():
    """``decode_again``: the association thread's decode of a request the gate knew as sound by
    its digest: a fresh decode and its primitive (the same one), and the digest; None for bytes
    that do not decode."""
    import hashlib

    from pacs.rqcheck import decode_again, rq_check

    pdu = rq(context(1), context(3), context(7))  # unique: context 7 is in no other test's request
    first = rq_check(pdu)
    got = decode_again(pdu)
    assert got is not None and got.problem is None and got.key == first.key
    assert got.key == hashlib.blake2b(pdu, digest_size=32).digest()
    assert got.decoded is not None and got.decoded is not first.decoded
    assert got.primitive is got.decoded.to_primitive()  # made once, for whichever takes it
    assert [cx.context_id for cx in got.primitive.presentation_context_definition_list] == [1, 3, 7]
    assert decode_again(rq(context(2))) is None  # an even context ID: pynetdicom's decode raises
