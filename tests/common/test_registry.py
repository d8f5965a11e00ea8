"""The registry against a real Redis: nodes, settings, status, events, study index, jobs."""

from __future__ import annotations

import io

import pytest

from dicomlab.errors import Conflict, NotFound, RegistryUnavailable, ValidationError
from dicomlab.events import EventLog
from dicomlab.registry import Registry, connect, node_state
from dicomlab.settings import ListenerSettings, Node


def test_node_crud_and_conflicts(registry):
    registry.add_node(Node(ae_title="CT01", host="10.0.0.5"))
    with pytest.raises(Conflict):
        registry.add_node(Node(ae_title="CT01", host="10.0.0.6"))
    assert registry.get_node("CT01").host == "10.0.0.5"
    registry.patch_node("CT01", {"services": ["C-ECHO"]})
    assert registry.get_node("CT01").services == ["C-ECHO"]
    registry.replace_node("CT01", Node(ae_title="CT02", host="10.0.0.7"))  # rename
    with pytest.raises(NotFound):
        registry.get_node("CT01")
    registry.add_node(Node(ae_title="CT01", host="10.0.0.5"))
    with pytest.raises(Conflict):
        registry.replace_node("CT02", Node(ae_title="CT01", host="10.0.0.5"))
    with pytest.raises(ValidationError):
        registry.patch_node("CT02", {"colour": "red"})
    assert [n.ae_title for n in registry.list_nodes()] == ["CT01", "CT02"]
    registry.delete_node("CT02")
    assert registry.node_titles() == {"CT01"}


def test_settings_seed_never_overwrites_stored(registry):
    registry.seed_listener(ListenerSettings(ae_title="PACS", port=11112))
    registry.update_listener({"ae_title": "MAINPACS"})
    after = registry.seed_listener(ListenerSettings(ae_title="PACS", port=104))
    assert after.ae_title == "MAINPACS" and after.port == 11112


def test_authorization_snapshot_fails_closed_on_lost_state(registry):
    with pytest.raises(RegistryUnavailable, match="no listener settings"):
        registry.authorization_snapshot("CT01")


def test_node_state_follows_the_latest_fact(registry):
    registry.add_node(Node(ae_title="CT01", host="10.0.0.5"))
    assert node_state(registry.get_node_status("CT01"))[0] == "NEVER SEEN"
    registry.set_node_status("CT01", last_association="accepted", last_association_time=100)
    assert node_state(registry.get_node_status("CT01"))[0] == "CONNECTED"
    registry.set_node_status("CT01", last_echo_ok="0", last_echo_time=200, last_echo_error="connection refused")
    assert node_state(registry.get_node_status("CT01")) == ("UNREACHABLE", "connection refused")
    registry.set_node_status("CT01", last_association="rejected", last_association_time=300,
                             last_rejected_reason="wrong host")
    assert node_state(registry.get_node_status("CT01")) == ("REJECTED", "wrong host")
    registry.set_node_status("GHOST", last_association="accepted", last_association_time=1)
    assert registry.get_node_status("GHOST") == {}  # never for unknown nodes


def test_events_are_bounded_filtered_and_one_line_each(redis_url):
    client = connect(redis_url)
    out = io.StringIO()
    log = EventLog(client, "pacs", out=out, maxlen=50)
    for i in range(200):
        log.emit("store-received" if i % 2 else "echo-received", f"event {i}\nsecond line", calling_aet="CT01",
                 peer="10.0.0.5", called_aet="PACS")
    reg = Registry(client)
    assert client.xlen("dicomlab:events") < 200
    last = reg.read_events(limit=5)
    assert [e.message for e in last][-1] == "event 199\\nsecond line"  # stored one line too (dicomlab.text)
    only = reg.read_events(limit=3, types={"echo-received"})
    assert len(only) == 3 and all(e.type == "echo-received" for e in only)
    since = reg.read_events(since=last[-2].id)
    assert [e.id for e in since] == [last[-1].id]
    lines = out.getvalue().splitlines()
    assert len(lines) == 200 and "CT01@10.0.0.5 -> PACS: event 0\\nsecond line" in lines[0]


def test_event_log_survives_redis_going_away():
    out = io.StringIO()
    log = EventLog(connect("redis://127.0.0.1:1/0", timeout=0.2), "pacs", out=out)
    ev = log.emit("echo-received", "hello")
    assert ev.id == "" and "event not stored: the registry is unreachable" in out.getvalue()


def test_study_index_counts_instances_once(registry):
    meta = {"study_uid": "1.2.3", "series_uid": "1.2.3.1", "sop_instance_uid": "1.2.3.1.1", "patient_name": "A^B",
            "modality": "CT", "series_number": "1"}
    registry.record_instance(meta)
    registry.record_instance(meta)  # replaced
    registry.record_instance({**meta, "sop_instance_uid": "1.2.3.1.2"})
    registry.record_instance({**meta, "series_uid": "1.2.3.2", "sop_instance_uid": "1.2.3.2.1"})
    s = registry.get_study("1.2.3")
    assert s["instances"] == 3 and s["series"] == 2
    assert sorted(x["instance_count"] for x in s["series_list"]) == [1, 2]
    assert registry.list_studies()[0]["study_uid"] == "1.2.3"


def test_job_queue(registry):
    job = registry.enqueue_job({"slices": 3})
    assert registry.get_job(job)["state"] == "queued"
    assert registry.pop_job(timeout=1) == (job, {"slices": 3})
    registry.update_job(job, state="done", result={"sent": 3})
    assert registry.get_job(job)["result"] == {"sent": 3}
    assert registry.pop_job(timeout=0.1) is None


def test_background_event_log_keeps_events_while_redis_is_away(tmp_path):
    from lab import RedisServer

    own = RedisServer().start()
    try:
        out = io.StringIO()
        client = connect(own.url, timeout=0.5)
        log = EventLog(client, "pacs", out=out, background=True)
        log.RETRY_SECONDS = 0.1
        log.emit("echo-received", "before", wait=True)
        own.stop()
        first = log.emit("association-rejected", "during 1")
        log.emit("association-rejected", "during 2", also=lambda p: p.set("dicomlab:test", "1"))
        assert not log.flush(timeout=0.5)  # cannot store them now...
        assert "keeping up to" in out.getvalue()
        own.start()  # back, empty
        assert log.flush(timeout=10)  # ...and stores them once Redis answers
        reg = Registry(client)
        assert [e.message for e in reg.read_events()] == ["during 1", "during 2"]
        assert client.get("dicomlab:test") == "1" and first.id
        assert "answers again" in out.getvalue()
    finally:
        own.stop()


def test_light_index_updates_keep_the_counts(registry):
    meta = {"study_uid": "1.2.9", "series_uid": "1.2.9.1", "sop_instance_uid": "1.2.9.1.1", "patient_name": "A^B",
            "modality": "CT", "series_number": "2"}
    registry.record_instance(meta)
    for i in range(2, 5):
        registry.record_instance({**meta, "sop_instance_uid": f"1.2.9.1.{i}"}, full=False)
    s = registry.get_study("1.2.9")
    assert s["instances"] == 4 and s["series"] == 1 and s["patient_name"] == "A^B"
    assert s["series_list"][0]["instance_count"] == 4 and s["series_list"][0]["series_number"] == "2"


def test_the_authorization_snapshot_survives_a_dropped_connection(registry):
    """Each association thread reads the snapshot on a connection of its own (redisio.py). A
    connection Redis dropped (a restart, a client kill) is replaced and the reads asked again:
    the next association is checked, not refused as "registry unavailable"."""
    import threading

    registry.seed_listener(ListenerSettings())
    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=11113))
    settings, node = registry.authorization_snapshot("CT01")
    assert node is not None and node.ae_title == "CT01" and settings.ae_title
    conn, fresh = registry._own.get()
    assert not fresh
    host, port = conn._sock.getsockname()[:2]
    registry.client.client_kill(f"{host}:{port}")
    assert registry.authorization_snapshot("CT01")[1] == node
    assert conn._sock.getsockname()[:2] != (host, port)  # on a new connection
    # another thread has its own connection
    seen = []
    t = threading.Thread(target=lambda: seen.append(registry._own.get()))
    t.start()
    t.join()
    assert seen[0][1] and seen[0][0] is not registry._own.get()[0]


def test_the_authorization_snapshot_fails_closed_when_redis_is_gone():
    from lab import RedisServer

    server = RedisServer().start()
    reg = Registry(connect(server.url))
    reg.seed_listener(ListenerSettings())
    assert reg.authorization_snapshot("CT01")[1] is None
    server.stop()
    with pytest.raises(RegistryUnavailable):
        reg.authorization_snapshot("CT01")
