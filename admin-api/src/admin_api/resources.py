"""The resources a request uses (registry, event log), kept in ``app.extensions``."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from flask import Flask, current_app

from dicomlab.events import EventLog
from dicomlab.registry import Registry, connect

KEY = "dicomlab"


@dataclass
class Resources:
    registry: Registry
    events: EventLog
    streams: threading.BoundedSemaphore
    open_streams: list[int] = field(default_factory=lambda: [0])

    @classmethod
    def init_app(cls, app: Flask) -> "Resources":
        client = connect(app.config["REDIS_URL"])
        res = cls(
            registry=Registry(client),
            events=EventLog(client, source="admin-api"),
            streams=threading.BoundedSemaphore(int(app.config["SSE_MAX_STREAMS"])),
        )
        app.extensions[KEY] = res
        return res


def resources() -> Resources:
    return current_app.extensions[KEY]
