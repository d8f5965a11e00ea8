"""The direct accept (pacs/direct.py): a plain association accepted and served without
pynetdicom's Association and DUL. Against the real PACS process, with real sockets: the
A-ASSOCIATE-AC (or -RJ) a modality gets is byte for byte the one pynetdicom's path sends
(PACS_DIRECT_ACCEPT=0), the events are the same ones, and what is not plain still goes
through pynetdicom."""

from __future__ import annotations

import socket
import struct
import subprocess
from pathlib import Path

import pytest

from dicomlab.registry import Registry, connect
from lab import PacsProcess, RedisServer, add_node, dcmtk_env, echoscu, events_of, need_tool, wait_for

VERIFICATION, CT = b"1.2.840.10008.1.1", b"1.2.840.10008.5.1.4.1.1.2"
IMPLICIT, EXPLICIT, BIG = b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.1", b"1.2.840.10008.1.2.2"
JPEG_LS = b"1.2.840.10008.1.2.4.80"
UNKNOWN_SOP = b"1.2.826.0.1.3680043.9.9999.1"


def item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def context(cid: int, abstract: bytes, *transfers: bytes) -> bytes:
    return item(0x20, bytes([cid, 0, 0, 0]) + item(0x30, abstract) + b"".join(item(0x40, t) for t in transfers))


def rq(*contexts: bytes, calling: bytes = b"CT01", called: bytes = b"PACS", max_pdu: int = 16384,
       version: bytes | None = b"LAB_TEST", extra_user: bytes = b"") -> bytes:
    user = item(0x51, struct.pack(">I", max_pdu)) + item(0x52, b"1.2.826.0.1.3680043.9.9")
    if version is not None:
        user += item(0x55, version)
    body = (struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16) + b"\0" * 32
            + item(0x10, b"1.2.840.10008.3.1.1.1") + b"".join(contexts) + item(0x50, user + extra_user))
    return struct.pack(">BBI", 1, 0, len(body)) + body


RELEASE_RQ = bytes([5, 0, 0, 0, 0, 4, 0, 0, 0, 0])
STORESCU_LIKE = [context(1, VERIFICATION, IMPLICIT)] + [
    context(3 + 2 * i, sop, EXPLICIT, IMPLICIT) for i, sop in enumerate(
        [CT, b"1.2.840.10008.5.1.4.1.1.4", b"1.2.840.10008.5.1.4.1.1.7", UNKNOWN_SOP,
         b"1.2.840.10008.5.1.4.1.1.128", b"1.2.840.10008.5.1.4.1.1.1"])]
REQUESTS = {
    "echo only": rq(context(1, VERIFICATION, IMPLICIT)),
    "CT, explicit then implicit": rq(context(1, CT, EXPLICIT, IMPLICIT), context(3, VERIFICATION, IMPLICIT)),
    "a storescu-like proposal": rq(*STORESCU_LIKE),
    "unsupported syntaxes, out of order ids": rq(context(7, CT, JPEG_LS), context(3, UNKNOWN_SOP, IMPLICIT),
                                                 context(5, CT, BIG, EXPLICIT), context(1, VERIFICATION, BIG)),
    "no maximum PDU, no version name": rq(context(1, VERIFICATION, IMPLICIT), max_pdu=0, version=None),
    "an unknown calling AE title": rq(context(1, VERIFICATION, IMPLICIT), calling=b"STRANGER"),
    "a wrong called AE title": rq(context(1, VERIFICATION, IMPLICIT), called=b"NOTPACS"),
}


def exchange(port: int, request: bytes) -> bytes:
    """The first PDU the PACS answers ``request`` with (then released, or closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        head = _exactly(s, 6)
        pdu = head + _exactly(s, struct.unpack(">I", head[2:])[0])
        if pdu[0] == 0x02:
            s.sendall(RELEASE_RQ)
            assert _exactly(s, 10)[0] == 0x06
    return pdu


def _exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        assert chunk, f"closed after {len(out)} of {n} bytes"
        out += chunk
    return out


class Side:
    """A PACS with its own Redis (the settings live there), CT01 registered."""

    def __init__(self, tmp: Path, direct: bool) -> None:
        self.redis = RedisServer().start()
        self.registry = Registry(connect(self.redis.url))
        add_node(self.registry, "CT01")
        self.pacs = PacsProcess(self.redis.url, tmp / ("direct" if direct else "pynetdicom") / "storage",
                                extra_env={"PACS_DIRECT_ACCEPT": "1" if direct else "0",
                                           "PACS_WORKERS": "1"}).start()

    def stop(self) -> None:
        self.pacs.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def sides(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("direct")
    both = Side(tmp, True), Side(tmp, False)
    yield both
    for side in both:
        side.stop()


@pytest.mark.parametrize("name", list(REQUESTS))
def test_the_answer_is_byte_for_byte_pynetdicom_s(sides, name):
    direct, stock = sides
    a, b = exchange(direct.pacs.port, REQUESTS[name]), exchange(stock.pacs.port, REQUESTS[name])
    assert a == b, f"{name}:\n direct   {a.hex(' ')}\n pynetdicom {b.hex(' ')}"
    assert a[0] == (0x03 if "AE title" in name else 0x02)


def test_the_events_are_the_same(sides):
    """One association, accepted, a context refused, released: the same events, same reasons and
    details (times and ids apart), on both paths."""
    for side in sides:
        side.redis.client().delete("dicomlab:events")
        exchange(side.pacs.port, REQUESTS["unsupported syntaxes, out of order ids"])
        exchange(side.pacs.port, REQUESTS["an unknown calling AE title"])

    def shape(side):
        wait_for(lambda: len([e for e in events_of(side.registry) if e.type.startswith("association-")]) >= 3,
                 what="the associations' events")
        out = []
        for e in events_of(side.registry):
            if e.type.startswith(("association-", "context-")):
                detail = dict(e.detail or {})
                for k in ("request",):
                    if isinstance(detail.get(k), dict):
                        detail[k] = {kk: vv for kk, vv in detail[k].items() if kk not in ("connected", "request_ms")}
                out.append((e.type, e.level, e.reason, e.outcome, e.calling_aet, e.message.split(" after ")[0],
                            repr(sorted(detail.items()))))
        return out

    direct, stock = (shape(s) for s in sides)
    assert direct == stock
    # JPEG-LS only, and the unknown SOP class: refused; big endian CT and Verification: accepted
    assert [t for t, *_ in direct] == ["context-rejected", "context-rejected", "association-accepted",
                                       "association-released", "association-rejected"]


ACCEPTED = "dicomlab_pacs_associations_total[('outcome', 'accepted'), ('reason', 'accepted')]"


def test_the_direct_path_is_taken_only_when_on(tmp_path_factory):
    """The PACS counts the associations it accepted directly (/metrics): two echo associations
    (the second request's primitive is the one kept from the first) and a store are, with the
    direct accept on; none is with it off; a refused node is not."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    from lab import free_port

    tmp = tmp_path_factory.mktemp("metrics")
    for direct in (True, False):
        redis = RedisServer().start()
        registry = Registry(connect(redis.url))
        add_node(registry, "CT01")
        port = free_port()
        pacs = PacsProcess(redis.url, tmp / str(direct) / "storage", extra_env={
            "PACS_DIRECT_ACCEPT": "1" if direct else "0", "PACS_WORKERS": "1", "PACS_METRICS_PORT": str(port),
            "PACS_METRICS_DIR": str(tmp / str(direct) / "prom")}).start()
        try:
            assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
            assert echoscu(pacs.port, "CT01", "PACS").returncode == 0  # the same bytes: the kept primitive
            exchange(pacs.port, REQUESTS["CT, explicit then implicit"])
            assert echoscu(pacs.port, "STRANGER", "PACS").returncode != 0

            def counts(port: int = port) -> dict[str, float]:
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
                return {s.name + str(sorted(s.labels.items())): s.value
                        for fam in text_string_to_metric_families(text) for s in fam.samples}

            got = wait_for(lambda: (c := counts()).get(ACCEPTED) == 3 and c, what="three accepted associations")
            assert got.get("dicomlab_pacs_direct_accepts_total[]") == (3 if direct else 0)
        finally:
            pacs.stop()
            redis.stop()


def test_a_request_whose_primitive_was_pushed_out_still_goes_direct(tmp_path):
    """rqcheck keeps the primitives of the last KNOWN_SIZE (64) requests accepted directly, and the
    verdicts of the last 512. A modality whose primitive was pushed out by 64 others is still
    known as sound: its request is decoded again on the association thread and accepted directly
    (it went to pynetdicom for good before, as long as its verdict was kept). A refused request
    sent twice gets the same A-ASSOCIATE-RJ both times (the second from the same decode)."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    from lab import free_port
    from pacs.rqcheck import KNOWN_SIZE

    redis = RedisServer().start()
    registry = Registry(connect(redis.url))
    add_node(registry, "CT01")
    port = free_port()
    pacs = PacsProcess(redis.url, tmp_path / "storage", extra_env={
        "PACS_DIRECT_ACCEPT": "1", "PACS_WORKERS": "1", "PACS_METRICS_PORT": str(port),
        "PACS_METRICS_DIR": str(tmp_path / "prom")}).start()
    try:
        first = rq(context(1, VERIFICATION, IMPLICIT))
        assert exchange(pacs.port, first)[0] == 0x02
        for n in range(KNOWN_SIZE):  # 64 other requests (their maximum PDU differs) push it out
            assert exchange(pacs.port, rq(context(1, VERIFICATION, IMPLICIT), max_pdu=20000 + 2 * n))[0] == 0x02
        assert exchange(pacs.port, first)[0] == 0x02
        stranger = rq(context(1, VERIFICATION, IMPLICIT), calling=b"STRANGER")
        refused = [exchange(pacs.port, stranger) for _ in range(2)]
        assert refused[0] == refused[1] and refused[0][0] == 0x03

        def direct_accepts() -> float | None:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            found = [s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                     if s.name == "dicomlab_pacs_direct_accepts_total"]
            return found[0] if found else None

        wait_for(lambda: direct_accepts() == KNOWN_SIZE + 2, what=f"{KNOWN_SIZE + 2} direct accepts")
    finally:
        pacs.stop()
        redis.stop()


def test_what_is_not_plain_still_goes_through_pynetdicom(sides):
    """A request with a user identity item (and one with a role selection item) is not plain:
    pynetdicom answers it (its user identity response, its role selection) on both sides."""
    user_identity = item(0x58, bytes([1, 1]) + struct.pack(">H", 4) + b"user" + struct.pack(">H", 0))
    role = item(0x54, struct.pack(">H", len(CT)) + CT + bytes([1, 1]))
    for extra in (user_identity, role):
        request = rq(context(1, CT, EXPLICIT), context(3, VERIFICATION, IMPLICIT), extra_user=extra)
        direct, stock = sides
        a, b = exchange(direct.pacs.port, request), exchange(stock.pacs.port, request)
        assert a == b and a[0] == 0x02


def test_dcmtk_and_pynetdicom_peers_store_through_the_direct_path(sides, tmp_path):
    """The real peers: DCMTK's storescu and echoscu, pynetdicom's AE, against the direct side:
    stored byte for byte, echoed, released."""
    from dicomdata import write_series
    from pydicom import dcmread
    from pynetdicom import AE

    direct = sides[0]
    files = write_series(tmp_path / "in", 3)
    out = subprocess.run([need_tool("storescu", "dcmtk"), "-aet", "CT01", "-aec", "PACS", "127.0.0.1",
                          str(direct.pacs.port), *map(str, files)], capture_output=True, text=True,
                         env=dcmtk_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    for f in files:
        sent = dcmread(f)
        got = dcmread(direct.pacs.storage_dir / sent.StudyInstanceUID / sent.SeriesInstanceUID
                      / f"{sent.SOPInstanceUID}.dcm")
        assert got.PixelData == sent.PixelData
    assert echoscu(direct.pacs.port, "CT01", "PACS").returncode == 0
    ae = AE(ae_title="CT01")
    ae.add_requested_context(VERIFICATION.decode())
    assoc = ae.associate("127.0.0.1", direct.pacs.port, ae_title="PACS")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    wait_for(lambda: len(events_of(direct.registry, "store-received")) >= 3, what="the stored instances")
