"""The PACS's background event writer outlives a broken event (a bug, not Redis):
later events are still stored, ``flush`` returns, and the failure is said."""

from __future__ import annotations

import io

import redis

from dicomlab import keys
from dicomlab.events import EventLog


def _broken(pipe):
    raise TypeError("an index write that cannot be encoded")


def test_a_broken_event_neither_kills_the_writer_nor_blocks_the_others(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.delete(keys.EVENTS)
    out = io.StringIO()
    log = EventLog(client, "pacs", out=out, background=True)
    log.emit("test-event", "before")
    log.emit("test-event", "broken", also=_broken)
    log.emit("test-event", "after")
    assert log.flush(10), "flush timed out: the writer thread is dead or stuck"
    log.emit("test-event", "later")
    assert log.flush(10)
    stored = [fields[b"message"].decode() for _id, fields in client.xrange(keys.EVENTS)]
    assert stored == ["before", "after", "later"]
    assert "event 'test-event' could not be stored (TypeError" in out.getvalue()
    assert log._writer.is_alive()


def test_a_broken_event_written_by_the_caller_is_said_and_the_rest_stored(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.delete(keys.EVENTS)
    out = io.StringIO()
    log = EventLog(client, "pacs", out=out, background=True)
    log.emit("test-event", "broken", also=_broken, wait=True)
    log.emit("test-event", "after", wait=True)
    assert [f[b"message"].decode() for _i, f in client.xrange(keys.EVENTS)] == ["after"]
    assert "could not be stored" in out.getvalue()



def _messages(client) -> list[str]:
    return [f[b"message"].decode() for _i, f in client.xrange(keys.EVENTS)]


def test_a_held_event_rides_with_the_next_one_in_one_round_trip(redis_url):
    """An association's "accepted" and "C-ECHO answered" events are held for its end: three
    events, one round trip, in order, and stored by the time the last one's is."""
    client = redis.Redis.from_url(redis_url)
    client.delete(keys.EVENTS)
    log = EventLog(client, "pacs", out=io.StringIO(), background=True)
    log.HOLD_SECONDS = 30.0  # nothing but the next event may take them along
    log.emit("test-event", "accepted", hold=True)
    log.emit("test-event", "echo", hold=True)
    assert _messages(client) == []  # held (30 s): not stored on their own
    log.emit("test-event", "released")
    assert log.flush(10)
    assert _messages(client) == ["accepted", "echo", "released"]
    assert log.rounds == 1


def test_a_held_event_alone_is_stored_after_the_hold(redis_url):
    from lab import wait_for

    client = redis.Redis.from_url(redis_url)
    client.delete(keys.EVENTS)
    log = EventLog(client, "pacs", out=io.StringIO(), background=True)
    log.emit("test-event", "accepted", hold=True)  # and nothing after it: a long association
    wait_for(lambda: _messages(client) == ["accepted"], timeout=10, what="the held event stored on its own")
    log.emit("test-event", "later", hold=True)
    log.emit("test-event", "stored", wait=True)  # a C-STORE's event takes what waits, in order
    assert _messages(client) == ["accepted", "later", "stored"]


def test_flush_takes_held_events(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.delete(keys.EVENTS)
    log = EventLog(client, "pacs", out=io.StringIO(), background=True)
    log.HOLD_SECONDS = 30.0
    log.emit("test-event", "accepted", hold=True)
    assert log.flush(10)
    assert _messages(client) == ["accepted"]


def test_a_round_trip_reads_every_reply_after_an_error_reply(redis_url):
    """The writer sends on a connection of its own (``_round_trip``): an error reply in the
    middle raises, after the replies behind it were read, so the next round is in step."""
    client = redis.Redis.from_url(redis_url)
    log = EventLog(client, "pacs", out=io.StringIO(), background=True)
    commands = [("SET", "rt:k", "text"), ("INCR", "rt:k"), ("SET", "rt:after", "1"), ("GET", "rt:after")]
    try:
        log._redis.round_trip(commands)
    except redis.ResponseError as exc:
        assert "not an integer" in str(exc)
    else:
        raise AssertionError("the INCR's error reply did not raise")
    assert client.get("rt:after") == b"1"  # the command behind the error ran
    assert log._redis.round_trip([("PING",), ("GET", "rt:k")]) == [b"PONG", b"text"]  # not the GET's old reply


def test_the_writer_reconnects_after_its_connection_is_cut(redis_url):
    client = redis.Redis.from_url(redis_url)
    log = EventLog(client, "pacs", out=io.StringIO(), background=True)
    log.emit("echo-answered", "one", wait=True)
    mine = log._redis.get()[0]._sock.getsockname()
    client.client_kill(f"{mine[0]}:{mine[1]}")
    ev = log.emit("echo-answered", "two", wait=True)  # the cut is found, journaled or retried, and stored
    assert log.flush(10)
    assert _messages(client)[-2:] == ["one", "two"], ev
