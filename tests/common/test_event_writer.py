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


def test_background_events_of_a_busy_moment_share_round_trips(redis_url):
    """Events emitted a millisecond apart (associations arriving) are stored in few round trips:
    the writer lets a batch gather for LINGER_SECONDS after a quiet spell; every event is stored,
    in order, and ``wait=True`` is not held back by the linger."""
    import time

    client = redis.Redis.from_url(redis_url)
    client.delete(keys.EVENTS)
    log = EventLog(client, "pacs", out=io.StringIO(), background=True)
    assert log.LINGER_SECONDS > 0
    round_trips = []
    real_send = log._send
    log._send = lambda batch: (round_trips.append(len(batch)), real_send(batch))[1]
    for i in range(20):
        log.emit("test-event", f"event {i}")
        time.sleep(0.001)
    assert log.flush(10)
    assert [f[b"message"].decode() for _i, f in client.xrange(keys.EVENTS)] == [f"event {i}" for i in range(20)]
    assert sum(round_trips) == 20 and len(round_trips) <= 10, round_trips
    time.sleep(0.05)  # quiet again: the writer waits for the next event
    log.emit("test-event", "queued")  # the writer now lingers with it
    log.emit("test-event", "stored at once", wait=True)  # writes what is queued, then itself
    assert [f[b"message"].decode() for _i, f in client.xrange(keys.EVENTS)][-2:] == ["queued", "stored at once"]
