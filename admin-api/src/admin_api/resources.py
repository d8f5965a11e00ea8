"""The resources a request uses (registry, event log), kept in ``app.extensions``."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from flask import Flask, current_app

from dicomlab.events import EventLog
from dicomlab.migrate import migrate
from dicomlab.registry import Registry, connect

KEY = "dicomlab"
LOG = logging.getLogger(__name__)


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
        migrate_registry(client)
        return res


def migrate_registry(client: object) -> None:
    """Move node keys of the old format (raw AE titles) to the encoded names, once
    (``dicomlab.migrate``); when Redis is away the next start does it."""
    import redis

    try:
        for line in migrate(client):  # type: ignore[arg-type]
            LOG.warning("registry migrated to encoded AE titles: %s", line)
    except (redis.RedisError, OSError) as exc:
        LOG.warning("registry migration (encoded AE titles) not done, Redis did not answer: %s; "
                    "the next start of the admin API does it", exc)


def resources() -> Resources:
    return current_app.extensions[KEY]
