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

