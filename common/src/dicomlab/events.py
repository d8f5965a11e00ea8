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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import redis

from . import keys

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

    def to_stream(self) -> dict[str, str]:
        d = asdict(self)
        d.pop("id")
        d["detail"] = json.dumps(self.detail, default=str)
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


class EventLog:
    """Writes each event to the Redis stream and as one line on ``out``.

    Redis being away never loses the stdout line and never raises: the
    line says the event could not be stored.
    """

    def __init__(
        self,
        client: "redis.Redis | None",
        source: str,
        out: IO[str] | None = None,
        maxlen: int = keys.EVENTS_MAXLEN,
    ) -> None:
        self.client = client
        self.source = source
        self.out = out if out is not None else sys.stdout
        self.maxlen = maxlen
        self._lock = threading.Lock()

    def emit(self, type: str, message: str, also: "Callable[[Any], None] | None" = None, **kw: Any) -> Event:
        """Record one event; ``also(pipeline)`` may add write-only commands that go to
        Redis in the same round trip (e.g. the study index of a stored instance).
        ``Event.id`` stays empty when Redis could not store it."""
        ev = Event(type=type, message=message, source=kw.pop("source", self.source), **kw)
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
        with self._lock:
            try:
                self.out.write(line + "\n")
                self.out.flush()
            except (OSError, ValueError):
                pass
        return ev
