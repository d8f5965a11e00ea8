"""Server-Sent Events from the Redis event stream, resumable with ``Last-Event-ID``.

One open stream holds one gunicorn thread and, while it waits, one Redis
connection in a blocking XREAD. The number of streams per process is capped
(``SSE_MAX_STREAMS``, below the thread count) so API calls always find a thread.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

from apiflask import abort
from flask import Response, current_app, request

from dicomlab.errors import RegistryUnavailable, ValidationError
from dicomlab.events import Event

from .resources import resources
from .schemas import STREAM_ID_PATTERN


def sse(event: Event) -> str:
    data = json.dumps(event.to_dict(), separators=(",", ":"), default=str)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n"


def event_stream(backlog: int, types: set[str] | None):
    res = resources()
    reg = res.registry
    cfg = current_app.config
    last_id = request.headers.get("Last-Event-ID", "").strip()
    if last_id and not re.fullmatch(STREAM_ID_PATTERN, last_id):
        exc = ValidationError("Last-Event-ID is an event id such as 1712345678901-0.", "Last-Event-ID")
        exc.location = "headers"  # type: ignore[attr-defined]
        raise exc

    # Read what is needed before answering, so a dead registry is a plain 503.
    first: list[Event] = []
    if last_id:
        first = reg.read_events(last_id, 1000, types)  # resume: everything missed
    else:
        last_id = reg.last_event_id()
        if backlog:
            first = reg.read_events(None, backlog, types)
    if first:
        last_id = max(last_id, first[-1].id, key=_id_key)

    if not res.streams.acquire(blocking=False):
        abort(503, "Too many open event streams; close a tab and try again.",
              f"at most {cfg['SSE_MAX_STREAMS']} per server process", {"Retry-After": "5"})

    block_ms = int(cfg["SSE_BLOCK_MS"])
    keepalive = float(cfg["SSE_KEEPALIVE_S"])
    retry_ms = int(cfg["SSE_RETRY_MS"])

    def generate(last: str) -> Iterator[str]:
        yield f"retry: {retry_ms}\n: DICOM Lab events\n\n"
        for ev in first:
            yield sse(ev)
        written = time.monotonic()
        while True:
            try:
                events = reg.wait_events(last, block_ms=block_ms)
            except RegistryUnavailable:
                yield "event: unavailable\ndata: {\"error\": \"The registry (Redis) is unreachable.\"}\n\n"
                return
            for ev in events:
                last = ev.id
                if types and ev.type not in types:
                    continue
                yield sse(ev)
                written = time.monotonic()
            if time.monotonic() - written >= keepalive:
                yield ": keepalive\n\n"  # also finds out that a client went away
                written = time.monotonic()

    # The generator needs no request context (it closes over what it uses), so
    # many streams can interleave in one thread, as in tests.
    resp = Response(generate(last_id), mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"  # a reverse proxy must not buffer the stream
    resp.call_on_close(res.streams.release)
    return resp


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
