"""Aggregation of the gate's close events (pacs/notes.py): a flood stays a few events."""

from __future__ import annotations

from pacs.notes import MAX_SOURCES, Notes


def collect():
    out = []
    return out, lambda type_, message, **kw: out.append((type_, message, kw))


def test_one_address_is_one_event_now_and_one_per_window():
    events, emit = collect()
    notes = Notes(emit, window=10)
    for i in range(812):
        notes.add("too-many-pending", "10.1.2.3", "closed a connection from 10.1.2.3 at once: why", "why", {}, i / 100)
    assert len(events) == 1 and events[0][2]["detail"]["count"] == 1
    assert events[0][1].startswith("Closed a connection from 10.1.2.3 at once")
    notes.flush(9.9)
    assert len(events) == 1  # the window is not over
    notes.flush(10.0)
    assert events[1][1] == "Closed 811 more connections from 10.1.2.3 in the last 10 s: why"
    assert events[1][2]["detail"]["count"] == 811 and events[1][2]["peer"] == "10.1.2.3"
    notes.flush(20.0)  # nothing more came: the window closes without an event
    assert len(events) == 2 and notes.next_due() is None


def test_many_addresses_are_bounded_too():
    events, emit = collect()
    notes = Notes(emit, window=10)
    for i in range(5000):
        peer = f"10.0.{i // 256}.{i % 256}"
        notes.add("request-timeout", peer, f"closed {peer}", "no request", {}, 1.0)
    assert len(events) == MAX_SOURCES
    notes.flush(11.0)
    assert len(events) == MAX_SOURCES + 1
    assert events[-1][1] == "Closed 4980 connections from other addresses in the last 10 s: no request"
    assert sum(e[2]["detail"]["count"] for e in events) == 5000


def test_shutdown_reports_what_is_counted():
    events, emit = collect()
    notes = Notes(emit)
    for _ in range(3):
        notes.add("pdu-invalid", "::1", "first", "why", {}, 0.0)
    notes.flush(1.0, force=True)
    assert [e[2]["detail"]["count"] for e in events] == [1, 2]
