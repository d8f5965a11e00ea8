"""AE titles in key names: encoded, so no title lands on another's keys; old data migrated."""

from __future__ import annotations

from dicomlab import keys
from dicomlab.migrate import migrate
from dicomlab.settings import Node


def test_titles_that_collided_get_keys_of_their_own(registry):
    registry.add_node(Node(ae_title="CT01", host="10.0.0.5"))
    registry.add_node(Node(ae_title="CT01:status", host="10.0.0.6"))
    registry.set_node_status("CT01", last_association="accepted", last_association_time=1)
    assert registry.get_node("CT01:status").host == "10.0.0.6"
    assert registry.get_node_status("CT01") == {"last_association": "accepted", "last_association_time": "1"}
    assert registry.get_node_status("CT01:status") == {}
    registry.delete_node("CT01:status")
    assert registry.node_titles() == {"CT01"}
    assert registry.get_node_status("CT01")["last_association"] == "accepted"


def test_encoding_round_trips_and_keeps_plain_titles_plain():
    assert keys.node("CT01") == "dicomlab:node:CT01"
    for title in ("CT01:status", "A%3A", "WITH SPACE", "É*?[x]\\", "a:b:status"):
        enc = keys.encode_ae(title)
        assert not set(enc) & set(":*?[]\\ ") and all(0x21 <= ord(c) < 0x7F for c in enc), enc
        assert keys.decode_ae(enc) == title
        assert keys.node_title(keys.node(title)) == title == keys.node_title(keys.node_status(title))
    assert keys.node_title(keys.SCP) is None


def test_old_format_data_is_migrated_once(redis_url, registry):
    c = registry.client
    raw = "dicomlab:node:"
    ct01 = Node(ae_title="CT01", host="10.0.0.5").to_redis()
    evil = Node(ae_title="CT01:status", host="10.0.0.6").to_redis()
    pct = Node(ae_title="X%3Astatus", host="10.0.0.7").to_redis()
    xs = Node(ae_title="X:status", host="10.0.0.8").to_redis()
    # the old format: titles raw in key names; CT01:status's node hash is CT01's status hash
    c.sadd(keys.NODES, "CT01", "CT01:status", "X%3Astatus", "X:status", "MR 1")
    c.hset(raw + "CT01", mapping=ct01)
    c.hset(raw + "CT01:status", mapping={**evil, "last_association": "accepted", "last_association_time": "5"})
    c.hset(raw + "CT01:status:status", mapping={"last_echo_ok": "1", "last_echo_time": "6"})
    c.hset(raw + "X%3Astatus", mapping=pct)
    c.hset(raw + "X%3Astatus:status", mapping={"last_echo_ok": "0", "last_echo_time": "7"})
    c.hset(raw + "X:status", mapping=xs)
    c.hset(raw + "MR 1", mapping=Node(ae_title="MR 1", host="10.0.0.9").to_redis())
    c.hset(raw + "MR 1:status", mapping={"last_association": "rejected", "last_association_time": "8"})

    moved = migrate(c)
    assert moved and c.get(keys.SCHEMA) == "2"

    assert {n.ae_title: n.host for n in registry.list_nodes()} == {
        "CT01": "10.0.0.5", "CT01:status": "10.0.0.6", "X%3Astatus": "10.0.0.7", "X:status": "10.0.0.8",
        "MR 1": "10.0.0.9"}
    assert registry.get_node_status("CT01") == {"last_association": "accepted", "last_association_time": "5"}
    assert registry.get_node_status("CT01:status") == {"last_echo_ok": "1", "last_echo_time": "6"}
    assert registry.get_node_status("X%3Astatus") == {"last_echo_ok": "0", "last_echo_time": "7"}
    assert registry.get_node_status("MR 1")["last_association"] == "rejected"
    assert not c.exists(raw + "MR 1", raw + "MR 1:status", raw + "CT01:status:status")

    assert not c.exists(keys.SCHEMA_LOCK)
    before = {k: c.hgetall(k) for k in c.scan_iter("dicomlab:node:*")}
    assert migrate(c) == []  # idempotent: the second start moves nothing
    assert {k: c.hgetall(k) for k in c.scan_iter("dicomlab:node:*")} == before

    # the node that could not be deleted before can be now, and CT01 keeps its status
    registry.delete_node("CT01:status")
    assert registry.get_node_status("CT01")["last_association"] == "accepted"
    assert registry.node_titles() == {"CT01", "X%3Astatus", "X:status", "MR 1"}


def test_a_migration_under_way_elsewhere_is_left_to_it(registry):
    c = registry.client
    c.sadd(keys.NODES, "MR 1")
    c.hset("dicomlab:node:MR 1", mapping=Node(ae_title="MR 1", host="10.0.0.9").to_redis())
    c.set(keys.SCHEMA_LOCK, "1", ex=60)  # another admin API process is migrating
    assert migrate(c) == [] and c.exists("dicomlab:node:MR 1") and not c.exists(keys.SCHEMA)
    c.delete(keys.SCHEMA_LOCK)
    assert migrate(c) and registry.get_node("MR 1").host == "10.0.0.9"


def test_the_admin_api_migrates_when_it_starts(redis_url, registry):
    from admin_api import create_app

    c = registry.client
    c.sadd(keys.NODES, "MR 1")
    c.hset("dicomlab:node:MR 1", mapping=Node(ae_title="MR 1", host="10.0.0.9").to_redis())
    create_app({"ADMIN_TOKEN": "x" * 16, "REDIS_URL": redis_url})
    assert registry.get_node("MR 1").host == "10.0.0.9"
    assert not c.exists("dicomlab:node:MR 1") and c.get(keys.SCHEMA) == "2"
