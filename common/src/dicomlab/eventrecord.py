"""One event as it is stored (a Redis stream entry) and printed (one stdout line), and the
writes that store it; ``dicomlab.events.EventLog`` records them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import indexops, keys
from .text import safe_text


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
    __slots__ = ("event", "also", "ops")

    def __init__(self, event: Event, also: "Callable[[Any], None] | None",
                 ops: "list[dict[str, Any]] | None" = None) -> None:
        self.event = event
        self.also = also  # a callable cannot go to the journal: kept in memory
        self.ops = ops or []


def _commands(pipe: Any, fields: dict[str, str], ops: "list[dict[str, Any]]", maxlen: int,
              also: "Callable[[Any], None] | None" = None) -> None:
    """One event's writes: its index ops, then the event itself (live path and journal replay)."""
    for op in ops:
        indexops.apply(pipe, op)
    if also is not None:
        also(pipe)
    pipe.xadd(keys.EVENTS, fields, maxlen=maxlen, approximate=True)
