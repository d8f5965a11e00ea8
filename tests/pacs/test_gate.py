"""The gate (pacs/gate.py): connections held by one selector thread until their
A-ASSOCIATE-RQ is complete, checked before anything is allocated, with a deadline
and caps; against the real PACS process, with real sockets."""

from __future__ import annotations

import os
import selectors
import socket
import struct
import subprocess
import time

import pytest
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
from pynetdicom.presentation import build_context

from lab import PacsProcess, add_node, echoscu, events_of, wait_for

GIB = 1 << 30


def start_pacs(redis_url, registry, tmp_path, workers: str = "2", **settings) -> PacsProcess:
    """A PACS whose listener settings are stored before it starts (stored settings win)."""
    pacs = PacsProcess(redis_url, tmp_path / "st", extra_env={"PACS_WORKERS": workers})
    registry.update_listener({"port": pacs.port, "tls_port": pacs.tls_port, **settings})
    try:
        return pacs.start()
    except BaseException:
        pacs.stop()  # no PACS left behind by a failed start
        raise


def processes(pacs: PacsProcess) -> list[int]:
    pids = [pacs.proc.pid]
    out = subprocess.run(["pgrep", "-P", str(pacs.proc.pid)], capture_output=True, text=True).stdout.split()
    return pids + [int(p) for p in out]


def rss_kib(pacs: PacsProcess) -> int:
    """VmRSS summed over the supervisor and its listener processes."""
    total = 0
    for pid in processes(pacs):
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def threads(pacs: PacsProcess) -> int:
    return sum(len(os.listdir(f"/proc/{pid}/task")) for pid in processes(pacs))


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_all(s: socket.socket, timeout: float = 10) -> bytes:
    """What the PACS sends until it closes the connection."""
    s.settimeout(timeout)
    out = b""
    try:
        while chunk := s.recv(4096):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def associate_rq(calling: str = "CT01", called: str = "PACS") -> bytes:
    prim = A_ASSOCIATE()
    prim.application_context_name = "1.2.840.10008.3.1.1.1"
    prim.calling_ae_title = calling
    prim.called_ae_title = called
    cx = build_context("1.2.840.10008.1.1")
    cx.context_id = 1
    prim.presentation_context_definition_list = [cx]
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 16384
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.826.0.1.3680043.9.9999.1"
    prim.user_information = [ml, impl]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(prim)
    return pdu.encode()


def closed_events(registry, reason: str) -> list:
    return events_of(registry, "connection-closed", reason=reason)


def abort(reason: int) -> bytes:
    return bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, reason])


def test_abort_bytes():
    assert abort(6) == bytes.fromhex("07 00 00000004 00 00 02 06")


def test_length_claims_allocate_nothing(redis_url, registry, tmp_path):
    """4 A-ASSOCIATE-RQ headers claiming 1 GiB: A-ABORT 2/6 at once, RSS unchanged."""
    pacs = start_pacs(redis_url, registry, tmp_path)
    try:
        before = rss_kib(pacs)
        socks = [connect(pacs.port) for _ in range(4)]
        for s in socks:
            s.sendall(struct.pack(">BBI", 1, 0, GIB))  # then silent
        for s in socks:
            assert read_all(s) == abort(6)
            s.close()
        assert rss_kib(pacs) - before < 64 * 1024
        evs = wait_for(lambda: closed_events(registry, "pdu-invalid"), what="pdu-invalid event")
        assert "127.0.0.1" in evs[0].message and str(GIB) in evs[0].message
        assert evs[0].peer == "127.0.0.1" and evs[0].detail["abort_reason"] == 6
    finally:
        assert pacs.stop() == 0


@pytest.mark.parametrize("sent, reason, words", [
    (b"\x09\x00\x00\x00\x00\x04abcd", 1, "unknown PDU type 0x09"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1, "47 45 54 20"),
    (struct.pack(">BBI", 4, 0, 10) + struct.pack(">IBB", 6, 1, 3) + b"\0\0\0\0", 2, "P-DATA-TF"),
    (struct.pack(">BBI", 5, 0, 4) + b"\0\0\0\0", 2, "A-RELEASE-RQ"),
    (struct.pack(">BBI", 1, 0, 64 * 1024 + 1) + b"\0" * 1000, 6, "65537"),
    (struct.pack(">BBI", 1, 0, 16) + b"\xff" * 16, 6, "fewer than"),
])
def test_not_an_association_request_is_aborted(redis_url, registry, tmp_path, sent, reason, words):
    pacs = start_pacs(redis_url, registry, tmp_path, workers="1")
    try:
        add_node(registry, "CT01")
        s = connect(pacs.port)
        s.sendall(sent)
        assert read_all(s) == abort(reason)
        s.close()
        ev = wait_for(lambda: closed_events(registry, "pdu-invalid"), what="pdu-invalid event")[0]
        assert words in ev.message and "is this peer speaking DICOM?" in ev.message
        assert ev.detail["abort_reason"] == reason and ev.peer == "127.0.0.1"
        assert echoscu(pacs.port, "CT01", "PACS").returncode == 0  # the listener goes on
    finally:
        assert pacs.stop() == 0


def test_tls_on_the_plain_port(redis_url, registry, tmp_path):
    pacs = start_pacs(redis_url, registry, tmp_path, workers="1")
    try:
        s = connect(pacs.port)
        s.sendall(bytes.fromhex("16 03 01 02 00 01 00 01 fc 03 03") + b"\0" * 500)  # a ClientHello's start
        assert read_all(s) == b""
        ev = wait_for(lambda: closed_events(registry, "tls-on-plain-port"), what="tls event")[0]
        assert ev.message.startswith(f"Closed the connection from 127.0.0.1: a TLS handshake arrived on the plain "
                                     f"DICOM port {pacs.port} from 127.0.0.1: the modality uses TLS; send it to "
                                     f"the TLS port {pacs.tls_port} or turn TLS off on the modality")
    finally:
        assert pacs.stop() == 0


def test_slow_request_is_reassembled(redis_url, registry, tmp_path):
    """A legitimate peer that trickles its A-ASSOCIATE-RQ byte by byte over ~1 s is accepted."""
    pacs = start_pacs(redis_url, registry, tmp_path)
    try:
        add_node(registry, "CT01")
        rq = associate_rq()
        s = connect(pacs.port)
        for i, b in enumerate(rq):
            s.send(bytes([b]))
            if i % 4 == 0:
                time.sleep(1.0 / (len(rq) / 4))
        s.settimeout(10)
        answer = s.recv(6)
        assert answer[:1] == b"\x02", answer  # A-ASSOCIATE-AC
        s.close()
        assert wait_for(lambda: events_of(registry, "association-accepted", calling_aet="CT01"))
    finally:
        pacs.stop()


def test_half_open_connections_cost_no_thread_and_time_out(redis_url, registry, tmp_path):
    """300 connections that send one byte: few threads, all closed after assoc_request_timeout,
    few (aggregated) events, and an authorized C-ECHO is answered meanwhile."""
    pacs = start_pacs(redis_url, registry, tmp_path, assoc_request_timeout=2, max_pending_connections=1000,
                      max_pending_per_address=1000)
    socks = []
    try:
        add_node(registry, "CT01")
        assert echoscu(pacs.port, "CT01", "PACS").returncode == 0  # the association thread pool exists
        base = threads(pacs)
        for _ in range(300):
            s = connect(pacs.port)
            s.send(b"\x01")
            socks.append(s)
        assert threads(pacs) < base + 20, (base, threads(pacs))
        assert echoscu(pacs.port, "CT01", "PACS").returncode == 0  # answered while they are held
        assert threads(pacs) < base + 20
        sel = selectors.DefaultSelector()
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        closed, deadline = 0, time.monotonic() + 60
        while closed < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(1):
                assert key.fileobj.recv(16) == b""  # closed by the PACS, nothing sent
                sel.unregister(key.fileobj)
                closed += 1
        assert closed == len(socks)
        wait_for(lambda: closed_events(registry, "request-timeout"), what="request-timeout event")
        time.sleep(11)  # one aggregation window
        evs = closed_events(registry, "request-timeout")
        assert 1 <= len(evs) <= 6, [e.message for e in evs]  # aggregated per source (and process), not 300
        assert sum(e.detail["count"] for e in evs) == 300
        assert any("Closed " in e.message and "more connections from 127.0.0.1 in the last 10 s" in e.message for e in evs)
    finally:
        for s in socks:
            s.close()
        assert pacs.stop() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_pending_cap_per_address(redis_url, registry, tmp_path, workers):
    """max_pending_per_address 4 (over every listener process): the 5th..Nth are closed at once."""
    pacs = start_pacs(redis_url, registry, tmp_path, workers=workers, max_pending_per_address=4)
    held, extra = [], []
    try:
        add_node(registry, "CT01")
        for _ in range(4):
            held.append(connect(pacs.port))
        time.sleep(0.5)  # let the PACS accept these four before the others arrive
        for _ in range(10):
            s = connect(pacs.port)
            extra.append(s)
            assert read_all(s) == b""  # closed at once, without a read
        for s in held:  # the first four are still held
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
        time.sleep(11)  # one aggregation window
        evs = closed_events(registry, "too-many-pending")
        assert sum(e.detail["count"] for e in evs) == 10
        assert len(evs) <= 2 * int(workers)  # one at once and one per window, per listener process
        assert all("max_pending_per_address 4" in e.message for e in evs)
        if workers == "1":
            assert evs[0].message.startswith("Closed a connection from 127.0.0.1 to port")
            assert evs[1].message.startswith("Closed 9 more connections from 127.0.0.1 in the last 10 s: too "
                                             "many pending connections from one address")
        # the held ones still complete an association
        rq = associate_rq()
        held[0].setblocking(True)
        held[0].sendall(rq)
        held[0].settimeout(10)
        assert held[0].recv(1) == b"\x02"
    finally:
        for s in held + extra:
            s.close()
        assert pacs.stop() == 0


def test_shutdown_closes_pending_connections_at_once(redis_url, registry, tmp_path):
    pacs = start_pacs(redis_url, registry, tmp_path, workers="1")
    s = connect(pacs.port)
    s.send(b"\x01\x00")
    t = time.monotonic()
    assert pacs.stop() == 0
    assert read_all(s) == b""
    assert time.monotonic() - t < 15  # not the 30 s request deadline, nor the shutdown grace


def test_gate_follows_a_port_change(redis_url, registry, tmp_path):
    pacs = start_pacs(redis_url, registry, tmp_path, workers="1")
    try:
        add_node(registry, "CT01")
        from lab import free_port

        new = free_port()
        registry.update_listener({"port": new})
        pacs.wait_log(f"Listener moved from port {pacs.port} to {new}", timeout=10)
        assert echoscu(new, "CT01", "PACS").returncode == 0
        s = connect(new)
        s.sendall(struct.pack(">BBI", 1, 0, GIB))
        assert read_all(s) == abort(6)
    finally:
        assert pacs.stop() == 0


def refused_at_once(port: int) -> bool:
    """A new connection is closed by the PACS without a word (within 2 s)."""
    s = connect(port)
    s.settimeout(2)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    finally:
        s.close()


def test_total_pending_cap_applies_live(redis_url, registry, tmp_path):
    """max_pending_connections, changed while the PACS runs (the watcher's settings, no restart)."""
    pacs = start_pacs(redis_url, registry, tmp_path, workers="1")
    held = []
    try:
        held = [connect(pacs.port) for _ in range(3)]
        assert not refused_at_once(pacs.port)
        registry.update_listener({"max_pending_connections": 3})
        wait_for(lambda: refused_at_once(pacs.port), timeout=10, what="the new cap to apply")
        ev = wait_for(lambda: closed_events(registry, "too-many-pending"), what="too-many-pending event")[0]
        assert ev.detail["cap"] == "max_pending_connections" and "max_pending_connections 3" in ev.message
        for s in held:  # once they are gone, new connections are held again
            s.close()
        held = []
        wait_for(lambda: not refused_at_once(pacs.port), timeout=10, what="pending slots back")
    finally:
        for s in held:
            s.close()
        assert pacs.stop() == 0


def test_associations_still_work_with_descriptors_beyond_1024(redis_url, registry, tmp_path):
    """1,100 half-open connections held by one listener process: new associations get descriptors
    above 1024, where select() fails (pynetdicom's socket check and its DUL wait used it). Verbose
    mode: pynetdicom's loops serve the whole association."""
    pacs = start_pacs(redis_url, registry, tmp_path, workers="1", max_pending_connections=2000,
                      max_pending_per_address=2000, verbose=True)
    socks = []
    try:
        add_node(registry, "CT01")
        for _ in range(1100):
            s = connect(pacs.port)
            s.send(b"\x01")
            socks.append(s)
        for _ in range(3):
            r = echoscu(pacs.port, "CT01", "PACS")
            assert r.returncode == 0, r.stdout + r.stderr
    finally:
        for s in socks:
            s.close()
        assert pacs.stop() == 0
