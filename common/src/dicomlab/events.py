"""Event records: one bounded Redis stream, and one stdout line per event.

Every service records through ``EventLog.emit``; the admin API reads the
stream back with ``Registry.read_events``. An event is written for a PACS
administrator: who (AE titles, address), what happened, the standard reason,
and what to do about it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

import redis

from . import keys
from .eventrecord import Event as Event  # re-exported: the record every reader uses
from .eventrecord import _commands, _now, _Pending
from .eventtypes import *  # noqa: F403 - the type and reason names, re-exported
from .redisio import OwnConnection

if TYPE_CHECKING:
    from .journal import Journal

LOG = logging.getLogger(__name__)


class EventLog:
    """Writes each event to the Redis stream and as one line on ``out``.

    Redis being away never loses the stdout line and never raises.

    ``background=True`` (the PACS): a writer thread stores events in order, many
    per round trip, so an association does not wait on Redis for each of them.
    While Redis is away, events and the index writes that ride with them
    (``ops``, see ``dicomlab.indexops``) go to the on-disk ``journal`` when one
    is given (fsync'd before ``emit(..., wait=True)`` returns), otherwise to a
    bounded in-memory backlog; both are stored, in order, once Redis answers
    again (and a journal left by a dead process, at start). When Redis answers,
    nothing is written to the journal. ``emit(..., wait=True)`` returns once its
    event is stored, journaled, or could not be.

    ``emit(..., hold=True)``: an event in the middle of something (an association
    accepted, a C-ECHO answered) waits for the next event that is not held (the
    association's end, a stored instance) or at most ``HOLD_SECONDS``, so one round
    trip stores them all; the order holds and ``flush`` takes held events too. An
    association's events are in Redis as soon as before when the modality sees it
    end: its last event is never held.
    """

    BACKLOG = 10_000
    RETRY_SECONDS = 1.0
    ORPHAN_CHECK_SECONDS = 5.0  # how often a journal left by another (dead) process is looked for
    HOLD_SECONDS = 0.05  # the longest a held event waits for company (live logs stay live)

    def __init__(
        self,
        client: "redis.Redis | None",
        source: str,
        out: IO[str] | None = None,
        maxlen: int = keys.EVENTS_MAXLEN,
        background: bool = False,
        journal: "Journal | None" = None,
    ) -> None:
        self.client = client
        self.source = source
        self.out = out if out is not None else sys.stdout
        self.maxlen = maxlen
        self.journal = journal
        self._lock = threading.Lock()
        self._queue: deque[_Pending] | None = None
        if background and client is not None:
            self._queue = deque()
            self._cv = threading.Condition()
            self._write_lock = threading.Lock()
            self._dropped = 0
            self._journal_failed = False
            self._next_try = 0.0
            self._next_check = time.monotonic() + self.ORPHAN_CHECK_SECONDS
            self._urgent = False  # an event that is not held waits in the queue
            self._held_since: float | None = None  # when the oldest held event was queued
            # a journal left by a dead process: replayed first, before anything new is stored
            self._down = journal is not None and journal.has_pending()
            # the writer's own connection (only used under _write_lock): redisio.py
            self._redis = OwnConnection(client)
            self._writer = threading.Thread(target=self._write_loop, name="event-writer", daemon=True)
            self._writer.start()

    def emit(self, type: str, message: str, also: "Callable[[Any], None] | None" = None,
             wait: bool = False, ops: "list[dict[str, Any]] | None" = None, hold: bool = False,
             **kw: Any) -> Event:
        """Record one event; ``ops`` (index ops, ``dicomlab.indexops``) and ``also(pipeline)``
        (write-only commands, never journaled) go to Redis in the same round trip (e.g. the
        study index of a stored instance).
        ``Event.id`` is the stream id once stored; empty if Redis could not store it
        (synchronous mode, or ``wait=True``) or not yet (background). ``hold``: see the class."""
        ev = Event(type=type, message=message, source=kw.pop("source", self.source), **kw)
        if self._queue is not None:
            item = _Pending(ev, also, ops)
            self._print(ev.line())
            if wait:
                self._write_now(item)
            else:
                with self._cv:
                    self._queue.append(item)
                    if not hold:
                        self._urgent = True
                        self._cv.notify()
                    elif self._held_since is None:
                        self._held_since = time.monotonic()
                        self._cv.notify()  # the writer sets its clock
            return ev
        stored = True
        if self.client is not None:
            try:
                pipe = self.client.pipeline(transaction=False)
                _commands(pipe, ev.to_stream(), ops or [], self.maxlen, also)
                entry_id = pipe.execute()[-1]
                ev.id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            except (redis.RedisError, OSError):
                stored = False
        line = ev.line()
        if not stored:
            line += " (event not stored: the registry is unreachable)"
        self._print(line)
        return ev

    @property
    def backlog(self) -> int:
        """Events waiting in memory to be stored in Redis (background mode; 0 otherwise)."""
        return len(self._queue) if self._queue is not None else 0

    def _print(self, line: str) -> None:
        with self._lock:
            try:
                self.out.write(line + "\n")
                self.out.flush()
            except (OSError, ValueError):
                pass

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event is stored or journaled (background mode); False on timeout."""
        if self._queue is None:
            return True
        deadline = time.monotonic() + timeout
        with self._cv:
            self._urgent = True  # held events too
            self._cv.notify_all()
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.1))
        return True

    def close(self) -> None:
        """At a clean stop: what waits in memory goes to the journal; the journal is closed."""
        if self._queue is None or self.journal is None:
            return
        with self._write_lock:
            self._spill()
            self.journal.close()

    @property
    def catching_up(self) -> bool:
        """Redis is away, or the journal (or backlog) is not yet stored (background mode)."""
        return self._queue is not None and self._down

    _busy = False
    rounds = 0  # round trips made by the background writer and ``wait=True`` (tests, the bench)
    _outage = False  # Redis did not answer (as opposed to: a journal left by a dead process to replay)

    def _write_loop(self) -> None:
        """The writer thread: it must outlive anything one event can do to it, or every
        later event would wait in memory and ``flush`` would always time out."""
        while True:
            try:
                self._write_round()
            except Exception as exc:  # noqa: BLE001 - said, then the next round
                self._print(f"{_now()} {self.source} ERROR   events: the event writer failed ({type(exc).__name__}: "
                            f"{exc}); it goes on in 1 s. This is a bug in the lab: please report it with this line.")
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
                time.sleep(1.0)

    def _write_round(self) -> None:
        assert self._queue is not None
        with self._write_lock:
            if self._down:
                self._spill()  # at once: the journal outlives a crash, memory does not
                if time.monotonic() >= self._next_try and not self._recover():
                    self._next_try = time.monotonic() + self.RETRY_SECONDS
            else:
                with self._cv:
                    batch = self._take(500) if self._due() else []
                    self._busy = bool(batch)
                if batch:
                    self._write(batch)
        with self._cv:
            if self._down:
                self._cv.wait(max(0.0, self._next_try - time.monotonic()))
            elif not self._queue:
                self._cv.wait(None if self.journal is None else self.ORPHAN_CHECK_SECONDS)
            elif not self._due():  # only held events: until the oldest has waited HOLD_SECONDS
                assert self._held_since is not None  # (_due is True without one)
                self._cv.wait(max(0.0, self._held_since + self.HOLD_SECONDS - time.monotonic()))
        if self.journal is not None and not self._down and time.monotonic() >= self._next_check:
            # a listener process that died (or stopped while Redis was away) left a journal
            self._next_check = time.monotonic() + self.ORPHAN_CHECK_SECONDS
            if self.journal.has_pending():
                with self._cv:
                    self._down = True

    def _due(self) -> bool:
        """The queue is to be written now: an event that is not held is in it, or the
        oldest held one has waited long enough (called with ``_cv`` held)."""
        return (self._urgent or self._held_since is None
                or time.monotonic() - self._held_since >= self.HOLD_SECONDS)

    def _take(self, most: int) -> "list[_Pending]":
        """The queue's head, at most ``most`` events (``_cv`` held); once it is empty
        nothing waits, held or not."""
        assert self._queue is not None
        batch = [self._queue.popleft() for _ in range(min(len(self._queue), most))]
        if not self._queue:
            self._urgent = False
            self._held_since = None
        return batch

    def _write_now(self, item: _Pending) -> None:
        """``emit(wait=True)``: what is queued, then this event, written by the caller's
        own thread (no hand-off to the writer), still in order."""
        assert self._queue is not None
        with self._write_lock:
            with self._cv:
                if self._down:  # Redis is away: to the journal (fsync'd) before answering "not stored"
                    self._queue.append(item)
                    self._cv.notify()
                    down = True
                else:
                    down = False
                    self._queue.append(item)
                    batch = self._take(len(self._queue))
                    self._busy = True
            if down:
                self._spill()
                return
            self._write(batch)

    def _send(self, batch: "list[_Pending]") -> None:
        """One round trip for the batch; raises the client's errors."""
        assert self.client is not None
        pipe = self.client.pipeline(transaction=False)  # collects the commands; _round_trip sends them
        positions = []
        for item in batch:
            _commands(pipe, item.event.to_stream(), item.ops, self.maxlen, item.also)
            positions.append(len(pipe.command_stack) - 1)  # its XADD, the last of its writes
        results = self._redis.round_trip([args for args, _options in pipe.command_stack])
        self.rounds += 1
        for item, pos in zip(batch, positions, strict=True):
            entry_id = results[pos]
            item.event.id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def _write(self, batch: "list[_Pending]") -> bool:
        """Store the batch; on failure it goes back in front of the queue (and to the journal)."""
        try:
            self._send(batch)
        except (redis.RedisError, OSError) as exc:
            self._stalled(batch, exc)
            return False
        except Exception as exc:  # noqa: BLE001 - not Redis: one event (or its index writes) is broken
            self._one_by_one(batch, exc)
            return True
        with self._cv:
            self._busy = False
            self._cv.notify_all()
        return True

    def _one_by_one(self, batch: "list[_Pending]", exc: Exception) -> bool:
        """A batch failed for a reason other than Redis: store its events one by one, and drop
        (saying so) the ones that still fail, so one broken event cannot stop the others.
        Its line was printed when it was emitted."""
        for i, item in enumerate(batch):
            try:
                self._send([item])
            except (redis.RedisError, OSError) as down:
                self._stalled(batch[i:], down)
                return False
            except Exception as bad:  # noqa: BLE001
                self._print(f"{_now()} {self.source} ERROR   events: event {item.event.type!r} could not be stored "
                            f"({type(bad).__name__}: {bad}) and is dropped; its line above stands. This is a bug "
                            "in the lab: please report it with this line.")
        with self._cv:
            self._busy = False
            self._cv.notify_all()
        return True

    def _replay_commands(self, pipe: Any, entry: dict[str, Any]) -> None:
        _commands(pipe, entry["event"], entry.get("ops") or [], self.maxlen)

    def _recover(self) -> bool:
        """Redis was away (or a dead process left a journal): replay the journal, then what
        stayed in memory, in order. Called with the write lock held."""
        assert self._queue is not None
        try:
            replayed = self.journal.replay(self.client, self._replay_commands) if self.journal else 0
            while True:
                with self._cv:
                    batch = [self._queue[i] for i in range(min(len(self._queue), 500))]
                if not batch:
                    break
                try:
                    self._send(batch)
                except (redis.RedisError, OSError):
                    raise
                except Exception as exc:  # noqa: BLE001 - a broken event: the others are stored
                    with self._cv:
                        for _ in batch:
                            self._queue.popleft()
                    if not self._one_by_one(batch, exc):  # Redis went away: the rest is back in front
                        return False
                    continue
                with self._cv:
                    for _ in batch:
                        self._queue.popleft()
        except (redis.RedisError, OSError):
            return False
        if self._outage:
            self._print(f"{_now()} {self.source} INFO    events: the registry answers again; the events kept "
                        "meanwhile are stored" + (f" ({replayed} from the journal)" if self.journal else "")
                        + (f" ({self._dropped} older ones were dropped)" if self._dropped else "") + ".")
        elif replayed:
            self._print(f"{_now()} {self.source} INFO    events: {replayed} event(s) and their index writes "
                        "from the journal of a PACS process that stopped while Redis was away are stored.")
        self._dropped = 0
        self._outage = False
        with self._cv:
            self._down = False
            self._busy = False
            self._cv.notify_all()
        return True

    def _spill(self) -> None:
        """Move the queue's head to the journal, in order, fsync'd (write lock held). An
        event with a callable (``also``) cannot be journaled: it and what follows stay in
        memory, so the order holds."""
        if self.journal is None or self._queue is None:
            return
        with self._cv:
            n = 0
            for item in self._queue:
                if item.also is not None:
                    break
                n += 1
            items = [self._queue[i] for i in range(n)]
        if not items:
            return
        try:
            self.journal.append([(item.event.to_stream(), item.ops) for item in items])
        except OSError as exc:
            if not self._journal_failed:
                self._journal_failed = True
                self._print(f"{_now()} {self.source} ERROR   events: cannot write the journal {self.journal.path} "
                            f"({exc.strerror or exc}); keeping up to {self.BACKLOG} events in memory (lost if the "
                            "PACS stops before Redis answers). Fix: free space on the storage volume.")
            self._trim()
            return
        self._journal_failed = False
        with self._cv:
            for _ in items:
                self._queue.popleft()
            self._cv.notify_all()

    def _trim(self) -> None:
        assert self._queue is not None
        with self._cv:
            while len(self._queue) > self.BACKLOG:
                self._queue.pop()  # the newest beyond the bound: the older ones explain the outage
                self._dropped += 1

    def _stalled(self, batch: "list[_Pending]", exc: Exception) -> None:
        """Redis is away: put the batch back in front, to the journal (or keep at most
        BACKLOG in memory), retry later. Called with the write lock held."""
        assert self._queue is not None
        with self._cv:
            self._queue.extendleft(reversed(batch))
            first = not self._outage
            self._down = self._outage = True
            self._busy = False
            self._next_try = time.monotonic() + self.RETRY_SECONDS
            self._cv.notify_all()
        if first:
            where = (f"writing them to the journal {self.journal.path}" if self.journal is not None
                     else f"keeping up to {self.BACKLOG} events")
            self._print(f"{_now()} {self.source} WARNING events: the registry (Redis) is unreachable ({exc}); "
                        f"{where} to store when it is back.")
        self._spill()
        self._trim()
