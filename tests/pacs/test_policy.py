"""Every row of DESIGN.md's association policy table, decided from a real
Redis, answered to a real DCMTK echoscu, and recorded as an event."""

from __future__ import annotations

import socket
import threading

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from lab import PacsProcess, RedisServer, add_node, echoscu, events_of, rejection_of, wait_for

PERMANENT_USER = ("Rejected Permanent", "Service User")
CALLING = "Calling AE Title Not Recognized"
CALLED = "Called AE Title Not Recognized"
TRANSIENT_PRESENTATION = ("Rejected Transient", "Service Provider (Presentation Related)")


def reject_event(registry, calling: str):
    return wait_for(lambda: events_of(registry, "association-rejected", calling_aet=calling),
                    what=f"association-rejected event for {calling}")[-1]


def test_registered_node_is_accepted(pacs, registry):
    add_node(registry, "CT01")
    r = echoscu(pacs.port, "CT01", "PACS")
    assert r.returncode == 0, r.stderr
    ev = wait_for(lambda: events_of(registry, "association-accepted", calling_aet="CT01"))[-1]
    assert ev.peer == "127.0.0.1" and ev.called_aet == "PACS"
    assert wait_for(lambda: events_of(registry, "echo-received", calling_aet="CT01"))
    status = registry.get_node_status("CT01")
    assert status["last_association"] == "accepted"


def test_row2_called_ae_title_mismatch(pacs, registry):
    add_node(registry, "CT01")
    r = echoscu(pacs.port, "CT01", "PACS2")
    assert rejection_of(r.stderr + r.stdout) == (*PERMANENT_USER, CALLED)
    ev = reject_event(registry, "CT01")
    assert ev.reason == "called-aet-mismatch"
    assert "'PACS2'" in ev.message and "'PACS'" in ev.message
    assert ev.detail["result"] == 1 and ev.detail["source"] == 1 and ev.detail["reason"] == 7


def test_row2_called_ae_checked_before_calling(pacs, registry):
    # Neither is right: the called AE title is decided first (row 2 before row 3).
    r = echoscu(pacs.port, "NOBODY", "WRONG")
    assert rejection_of(r.stderr + r.stdout) == (*PERMANENT_USER, CALLED)


def test_row3_unknown_calling_ae(pacs, registry):
    add_node(registry, "CT01")
    r = echoscu(pacs.port, "MR07", "PACS")
    assert rejection_of(r.stderr + r.stdout) == (*PERMANENT_USER, CALLING)
    ev = reject_event(registry, "MR07")
    assert ev.reason == "unknown-calling-aet"
    assert "not an authorized node" in ev.message


def test_row3_case_mismatch_is_named(pacs, registry):
    add_node(registry, "CT01")
    r = echoscu(pacs.port, "ct01", "PACS")
    assert rejection_of(r.stderr + r.stdout) == (*PERMANENT_USER, CALLING)
    ev = reject_event(registry, "ct01")
    assert ev.reason == "unknown-calling-aet"
    assert "'CT01'" in ev.message and "case-sensitive" in ev.message
    assert ev.detail["near_miss"] == "CT01"


def test_row3_disabled_node(pacs, registry):
    add_node(registry, "CT01", enabled=False)
    r = echoscu(pacs.port, "CT01", "PACS")
    assert rejection_of(r.stderr + r.stdout) == (*PERMANENT_USER, CALLING)
    ev = reject_event(registry, "CT01")
    assert ev.reason == "unknown-calling-aet" and "disabled" in ev.message
    assert registry.get_node_status("CT01")["last_association"] == "rejected"


def test_row4_peer_address_not_the_nodes_host(pacs, registry):
    add_node(registry, "CT01", host="10.77.0.5")
    r = echoscu(pacs.port, "CT01", "PACS")
    assert rejection_of(r.stderr + r.stdout) == (*PERMANENT_USER, CALLING)
    ev = reject_event(registry, "CT01")
    assert ev.reason == "host-mismatch"
    assert "10.77.0.5" in ev.message and "127.0.0.1" in ev.message


def test_row4_host_name_resolved_at_check_time(pacs, registry):
    add_node(registry, "CT01", host="localhost")
    assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
    add_node(registry, "CT02", host="no-such-host.invalid")
    r = echoscu(pacs.port, "CT02", "PACS")
    assert rejection_of(r.stderr + r.stdout) == (*PERMANENT_USER, CALLING)
    ev = reject_event(registry, "CT02")
    assert ev.reason == "host-mismatch" and "does not resolve" in ev.message


def test_row5_too_many_associations(pacs, registry):
    add_node(registry, "CT01")
    registry.update_listener({"max_associations": 2})
    held = []
    for _ in range(2):
        ae = AE(ae_title="CT01")
        ae.add_requested_context(Verification)
        a = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
        assert a.is_established
        held.append(a)
    try:
        r = echoscu(pacs.port, "CT01", "PACS")
        assert rejection_of(r.stderr + r.stdout) == (*TRANSIENT_PRESENTATION, "Local Limit Exceeded")
        ev = reject_event(registry, "CT01")
        assert ev.reason == "too-many-associations"
    finally:
        for a in held:
            a.release()
    # the slots come back once the held associations end
    wait_for(lambda: echoscu(pacs.port, "CT01", "PACS").returncode == 0, timeout=10, what="a free slot")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_row5b_too_many_associations_per_node(redis_url, registry, tmp_path, workers):
    """max_associations_per_node: counted per calling AE title over every listener process."""
    add_node(registry, "CT01")
    add_node(registry, "CT02")
    pacs = PacsProcess(redis_url, tmp_path / "st", extra_env={"PACS_WORKERS": workers})
    registry.update_listener({"port": pacs.port, "tls_port": pacs.tls_port, "max_associations_per_node": 2})  # stored settings win
    held = []
    try:
        pacs.start()
        def hold() -> str:
            """One more held association of CT01; the listener process that serves it."""
            ae = AE(ae_title="CT01")
            ae.add_requested_context(Verification)
            a = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
            assert a.is_established
            held.append(a)
            n = len(held) + sum(1 for e in events_of(registry, "association-released"))
            return wait_for(lambda: len(ev := events_of(registry, "association-accepted")) >= n
                            and ev[-1].assoc_id.rpartition(".")[2])

        first = hold()
        for _ in range(20):  # with two processes: hold the second one in the other process
            if hold() != first or workers == "1":
                break
            held.pop().release()
            wait_for(lambda: len(events_of(registry, "association-released")) >= 1, what="the release")
        else:
            raise AssertionError("the second association never went to the other listener process")
        r = echoscu(pacs.port, "CT01", "PACS")
        assert rejection_of(r.stderr + r.stdout) == (*TRANSIENT_PRESENTATION, "Local Limit Exceeded")
        ev = reject_event(registry, "CT01")
        assert ev.reason == "too-many-associations" and "per-node limit" in ev.message
        assert ev.detail["max_associations_per_node"] == 2
        assert echoscu(pacs.port, "CT02", "PACS").returncode == 0  # another node still gets in
        registry.update_listener({"max_associations_per_node": 0})  # off: CT01 gets in again, live
        wait_for(lambda: echoscu(pacs.port, "CT01", "PACS").returncode == 0, timeout=10, what="limit off")
        registry.update_listener({"max_associations_per_node": 2})
        for a in held:
            a.release()
        held = []
        # the node's count comes back once its associations end
        wait_for(lambda: echoscu(pacs.port, "CT01", "PACS").returncode == 0, timeout=10, what="a free node slot")
    finally:
        for a in held:
            a.release()
        rc = pacs.stop()
    assert rc == 0


def test_row1_registry_erroring_rejects_transient(pacs, registry):
    """Redis answers, but with an error (a node key of the wrong type): fail closed."""
    registry.client.set("dicomlab:node:CT01", "not a hash")
    registry.client.sadd("dicomlab:nodes", "CT01")
    r = echoscu(pacs.port, "CT01", "PACS")
    assert rejection_of(r.stderr + r.stdout) == (*TRANSIENT_PRESENTATION, "Temporary Congestion")
    assert reject_event(registry, "CT01").reason == "registry-unavailable"


def test_row1_registry_down_and_back(tmp_path):
    """Redis stops: every association is refused 2/3/1, never accepted; it comes
    back (empty, as after a restart without persistence): the next association
    works without restarting the PACS."""
    own = RedisServer().start()
    pacs = PacsProcess(own.url, tmp_path / "st").start()
    try:
        from dicomlab.registry import Registry, connect

        reg = Registry(connect(own.url))
        add_node(reg, "CT01")
        assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
        own.stop()
        for calling in ("CT01", "UNKNOWN"):
            r = echoscu(pacs.port, calling, "PACS")
            assert rejection_of(r.stderr + r.stdout) == (*TRANSIENT_PRESENTATION, "Temporary Congestion"), r.stderr
        assert "registry-unavailable" in pacs.log() or "unreachable" in pacs.log()
        own.start()  # same port, empty
        reg = Registry(connect(own.url))
        # the PACS re-seeds its listener settings by itself...
        wait_for(lambda: reg.client.hgetall("dicomlab:scp"), what="settings re-seeded")
        # ...and with the node registered again, the next association is accepted
        add_node(reg, "CT01")
        assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
        # the refusals during the outage were kept and are in the event stream now, in order
        kept = wait_for(lambda: len(events_of(reg, "association-rejected", reason="registry-unavailable")) == 2
                        and events_of(reg, "association-rejected", reason="registry-unavailable"))
        assert [e.calling_aet for e in kept] == ["CT01", "UNKNOWN"]
    finally:
        pacs.stop()
        own.stop()


def test_fresh_read_on_every_association(pacs, registry):
    """No cache to go stale: removing a node refuses its very next association."""
    add_node(registry, "CT01")
    assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
    registry.delete_node("CT01")
    r = echoscu(pacs.port, "CT01", "PACS")
    assert rejection_of(r.stderr + r.stdout) == (*PERMANENT_USER, CALLING)
    add_node(registry, "CT01", services=["C-ECHO"])
    assert echoscu(pacs.port, "CT01", "PACS").returncode == 0


def test_rejections_reach_the_peer_intact_200_times(pacs, registry):
    """200 rejected associations from DCMTK echoscu, 4 at a time: 200 intact A-ASSOCIATE-RJ."""
    add_node(registry, "CT01")
    results: list[tuple | None] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(n):
            r = echoscu(pacs.port, f"BAD{i % 7}", "PACS")
            with lock:
                results.append(rejection_of(r.stderr + r.stdout))

    threads = [threading.Thread(target=worker, args=(50,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 200
    bad = [r for r in results if r != (*PERMANENT_USER, CALLING)]
    assert not bad, f"{len(bad)} of 200 rejections did not arrive intact: {bad[:3]}"


def test_malformed_pdu_is_refused_and_listener_survives(pacs, registry):
    add_node(registry, "CT01")
    for garbage in (b"GET / HTTP/1.0\r\n\r\n", b"\x01\x00\x00\x00\x00\x10" + b"\xff" * 16, b"\x07"):
        with socket.create_connection(("127.0.0.1", pacs.port), timeout=10) as s:
            s.sendall(garbage)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(10)
            try:
                while s.recv(4096):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    assert echoscu(pacs.port, "CT01", "PACS").returncode == 0


@pytest.mark.parametrize("title", ["CT01", " CT01", "CT01  "])
def test_spaces_around_ae_titles_are_not_significant(pacs, registry, title):
    add_node(registry, "CT01")
    ae = AE(ae_title=title)
    ae.add_requested_context(Verification)
    a = ae.associate("127.0.0.1", pacs.port, ae_title=" PACS ")
    assert a.is_established
    a.release()
