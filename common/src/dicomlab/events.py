"""Event records: one bounded Redis stream, and one stdout line per event.

Every service records through ``EventLog.emit``; the admin API reads the
stream back with ``Registry.read_events``. An event is written for a PACS
administrator: who (AE titles, address), what happened, the standard reason,
and what to do about it.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import redis

from . import keys
from .text import safe_text

LOG = logging.getLogger(__name__)

# Event types (DESIGN.md, "Events and logs")
ASSOCIATION_REQUESTED = "association-requested"
ASSOCIATION_ACCEPTED = "association-accepted"
ASSOCIATION_REJECTED = "association-rejected"
ASSOCIATION_RELEASED = "association-released"
ASSOCIATION_ABORTED = "association-aborted"
CONTEXT_REJECTED = "context-rejected"
STORE_RECEIVED = "store-received"
STORE_FAILED = "store-failed"
STORE_REPLACED = "store-replaced"
ECHO_RECEIVED = "echo-received"
ECHO_SENT = "echo-sent"
SETTINGS_CHANGED = "settings-changed"
NODE_ADDED = "node-added"
NODE_CHANGED = "node-changed"
NODE_REMOVED = "node-removed"
LISTENER_STARTED = "listener-started"
LISTENER_STOPPED = "listener-stopped"
WORKER_EXITED = "worker-exited"  # a listener process died and was restarted
PDU = "pdu"  # verbose mode only
SEND_STARTED = "send-started"
SEND_PROGRESS = "send-progress"
SEND_FINISHED = "send-finished"
SEND_FAILED = "send-failed"

# Event reasons of the port limits (second stage): the association-rejected /
# association-aborted events, and the connection events before any association.
REASON_PDU_INVALID = "pdu-invalid"  # a PDU over its cap, of an unknown type, or malformed: A-ABORT, close
REASON_REQUEST_TIMEOUT = "request-timeout"  # no complete A-ASSOCIATE-RQ within assoc_request_timeout
REASON_TOO_MANY_PENDING = "too-many-pending"  # over max_pending_connections / _per_address (aggregated per 10 s)
REASON_INSTANCE_TOO_LARGE = "instance-too-large"  # a dataset over max_instance_bytes: A-ABORT
CONNECTION_CLOSED = "connection-closed"  # a connection closed before it became an association

LEVELS = ("debug", "info", "warning", "error")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Event:
    type: str
    message: str
    source: str = "pacs"
    level: str = "info"
    assoc_id: str = ""
    calling_aet: str = ""
    called_aet: str = ""
    peer: str = ""
    outcome: str = ""
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    time: str = field(default_factory=_now)
    id: str = ""  # the stream id, once stored

    def __post_init__(self) -> None:
        # Text from the network (AE titles, patient names, UIDs...) is made safe once, here,
        # so the stdout line, the stream and the page all carry printable text only.
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if value:
                setattr(self, name, safe_text(value))

    def to_stream(self) -> dict[str, str]:
        d = {k: getattr(self, k) for k in _STREAM_FIELDS}
        d["detail"] = json.dumps(self.detail, default=str) if self.detail else "{}"
        return {k: v for k, v in d.items() if v != ""}

    @classmethod
    def from_stream(cls, entry_id: str, raw: dict[str, str]) -> "Event":
        known = {f for f in cls.__dataclass_fields__}
        kw: dict[str, Any] = {k: v for k, v in raw.items() if k in known}
        kw["detail"] = json.loads(raw.get("detail") or "{}")
        kw.setdefault("type", "unknown")
        kw.setdefault("message", "")
        return cls(id=entry_id, **kw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """The stdout line: time, service, level, type, who, and the sentence."""
        who = ""
        if self.calling_aet or self.peer:
            who = f" {self.calling_aet or '?'}@{self.peer or '?'}"
            if self.called_aet:
                who += f" -> {self.called_aet}"
        assoc = f" [{self.assoc_id}]" if self.assoc_id else ""
        text = " ".join(self.message.split())  # one line, always
        return f"{self.time} {self.source} {self.level.upper():7} {self.type}{assoc}{who}: {text}"


_STREAM_FIELDS = [f for f in Event.__dataclass_fields__ if f != "id"]
_TEXT_FIELDS = ("type", "message", "source", "level", "assoc_id", "calling_aet", "called_aet", "peer",
                "outcome", "reason")


class _Pending:
    __slots__ = ("event", "also")

    def __init__(self, event: Event, also: "Callable[[Any], None] | None") -> None:
        self.event = event
        self.also = also


class EventLog:
    """Writes each event to the Redis stream and as one line on ``out``.

    Redis being away never loses the stdout line and never raises.

    ``background=True`` (the PACS): a writer thread stores events in order, many
    per round trip, so an association does not wait on Redis for each of them.
    While Redis is away, events (and the commands that ride with them) wait in a
    bounded backlog and are stored, in order, once it answers again.
    ``emit(..., wait=True)`` returns once its event is stored (or could not be).
    """

    BACKLOG = 10_000
    RETRY_SECONDS = 1.0

    def __init__(
        self,
        client: "redis.Redis | None",
        source: str,
        out: IO[str] | None = None,
        maxlen: int = keys.EVENTS_MAXLEN,
        background: bool = False,
    ) -> None:
        self.client = client
        self.source = source
        self.out = out if out is not None else sys.stdout
        self.maxlen = maxlen
        self._lock = threading.Lock()
        self._queue: deque[_Pending] | None = None
        if background and client is not None:
            self._queue = deque()
            self._cv = threading.Condition()
            self._write_lock = threading.Lock()
            self._dropped = 0
            self._down = False
            self._closing = False
            self._writer = threading.Thread(target=self._write_loop, name="event-writer", daemon=True)
            self._writer.start()

    def emit(self, type: str, message: str, also: "Callable[[Any], None] | None" = None,
             wait: bool = False, **kw: Any) -> Event:
        """Record one event; ``also(pipeline)`` may add write-only commands that go to
        Redis in the same round trip (e.g. the study index of a stored instance).
        ``Event.id`` is the stream id once stored; empty if Redis could not store it
        (synchronous mode, or ``wait=True``) or not yet (background)."""
        ev = Event(type=type, message=message, source=kw.pop("source", self.source), **kw)
        if self._queue is not None:
            item = _Pending(ev, also)
            self._print(ev.line())
            if wait:
                self._write_now(item)
            else:
                with self._cv:
                    self._queue.append(item)
                    self._cv.notify()
            return ev
        stored = True
        if self.client is not None:
            try:
                pipe = self.client.pipeline(transaction=False)
                if also is not None:
                    also(pipe)
                pipe.xadd(keys.EVENTS, ev.to_stream(), maxlen=self.maxlen, approximate=True)
                ev.id = pipe.execute()[-1]
                if isinstance(ev.id, bytes):
                    ev.id = ev.id.decode()
            except (redis.RedisError, OSError):
                stored = False
        line = ev.line()
        if not stored:
            line += " (event not stored: the registry is unreachable)"
        self._print(line)
        return ev

    def _print(self, line: str) -> None:
        with self._lock:
            try:
                self.out.write(line + "\n")
                self.out.flush()
            except (OSError, ValueError):
                pass

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event is stored (background mode); False on timeout."""
        if self._queue is None:
            return True
        deadline = time.monotonic() + timeout
        with self._cv:
            self._cv.notify_all()
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.1))
        return True

    _busy = False

    def _write_loop(self) -> None:
        assert self._queue is not None
        while True:
            with self._cv:
                while not self._queue:
                    self._cv.wait()
            with self._write_lock:
                with self._cv:
                    batch = [self._queue.popleft() for _ in range(min(len(self._queue), 500))]
                    self._busy = bool(batch)
                stored = self._write(batch) if batch else True
            if not stored:
                time.sleep(self.RETRY_SECONDS)  # the writer's own retry pace while Redis is away

    def _write_now(self, item: _Pending) -> None:
        """``emit(wait=True)``: what is queued, then this event, written by the caller's
        own thread (no hand-off to the writer), still in order."""
        assert self._queue is not None
        with self._write_lock:
            with self._cv:
                if self._down:  # Redis is away: keep it for the writer, answer "not stored" now
                    self._queue.append(item)
                    self._cv.notify()
                    return
                batch = [*self._queue, item]
                self._queue.clear()
                self._busy = True
            self._write(batch)

    def _write(self, batch: "list[_Pending]") -> bool:
        """One round trip for the batch; on failure it goes back in front of the queue."""
        assert self.client is not None
        try:
            pipe = self.client.pipeline(transaction=False)
            positions = []
            for item in batch:
                if item.also is not None:
                    item.also(pipe)
                positions.append(len(pipe.command_stack))
                pipe.xadd(keys.EVENTS, item.event.to_stream(), maxlen=self.maxlen, approximate=True)
            results = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._stalled(batch, exc)
            return False
        for item, pos in zip(batch, positions, strict=True):
            entry_id = results[pos]
            item.event.id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        with self._cv:
            self._busy = False
            if self._down:
                self._down = False
                self._print(f"{_now()} {self.source} INFO    events: the registry answers again; "
                            "the events kept meanwhile are stored"
                            + (f" ({self._dropped} older ones were dropped)" if self._dropped else "") + ".")
                self._dropped = 0
            self._cv.notify_all()
        return True

    def _stalled(self, batch: "list[_Pending]", exc: Exception) -> None:
        """Redis is away: put the batch back in front, keep at most BACKLOG, retry later."""
        assert self._queue is not None
        with self._cv:
            self._queue.extendleft(reversed(batch))
            while len(self._queue) > self.BACKLOG:
                self._queue.pop()  # the newest beyond the bound: the older ones explain the outage
                self._dropped += 1
            first = not self._down
            self._down = True
            self._busy = False
            self._cv.notify_all()
        if first:
            self._print(f"{_now()} {self.source} WARNING events: the registry (Redis) is unreachable ({exc}); "
                        f"keeping up to {self.BACKLOG} events to store when it is back.")
