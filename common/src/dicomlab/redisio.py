"""Round trips to Redis without redis-py's per-call machinery, for the two paths that run
for every association and every stored instance: the authorization snapshot
(``Registry.authorization_snapshot``) and the event writer (``EventLog``).

``Pipeline.execute`` checks a connection out of the pool and back, wraps the call in
its retry helper, records observability attributes and resets the pipeline: about half
the CPU of a two-command round trip (measured: 107 -> 45 µs). Here the commands are
packed and sent on a connection the caller keeps, and the replies are read back: the
same protocol exchange, with redis-py's own connection, packer and reply parser.

No retry: a connection error raises at once (the connection is dropped and the next
round trip makes a new one); the callers decide what an unreachable Redis means (the
policy refuses as transient, the event writer journals). Replies are read to the last
even after an error reply, so the connection stays in step; then the first error raises.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import redis


def round_trip(conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` (argument tuples, e.g. ``("HGETALL", key)``) on ``conn`` and return
    their raw replies, in order."""
    replies: list[Any] = []
    error: redis.ResponseError | None = None
    try:
        conn.send_packed_command(conn.pack_commands(commands))
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
                error = error or exc
    except BaseException:
        conn.disconnect()  # half a conversation: the next round trip starts on a fresh connection
        raise
    if error is not None:
        raise error
    return replies


class OwnConnection:
    """A connection of the holder's own, made from ``client``'s pool settings (host, port,
    password, timeouts) and never returned to the pool; remade in a forked child. One per
    thread with ``per_thread=True``, else one for callers that serialize their use."""

    def __init__(self, client: redis.Redis, per_thread: bool = False) -> None:
        self.client = client
        self._local: Any = threading.local() if per_thread else None
        self._conn: Any = None
        self._pid = 0

    def get(self) -> tuple[Any, bool]:
        """The connection, and whether it was made just now."""
        holder = self._local if self._local is not None else self
        conn = getattr(holder, "_conn", None)
        if conn is None or getattr(holder, "_pid", 0) != os.getpid():
            conn = self.client.connection_pool.make_connection()
            holder._conn, holder._pid = conn, os.getpid()
            return conn, True
        return conn, False

    def round_trip(self, commands: Sequence[tuple[Any, ...]], reads_only: bool = False) -> list[Any]:
        """``reads_only``: a connection kept from before that turns out closed (Redis was
        restarted, or dropped it) is replaced and the reads asked once more, as redis-py's
        retry would: the first association after a Redis restart is not refused for it.
        Writes are not repeated (they may have been applied)."""
        conn, fresh = self.get()
        try:
            return round_trip(conn, commands)
        except redis.ConnectionError:
            if fresh or not reads_only:
                raise
        return round_trip(self.get()[0], commands)


def as_dict(reply: Any) -> dict[Any, Any]:
    """An HGETALL reply as a dict (RESP2 gives a flat [field, value, ...] list, RESP3 a map)."""
    if isinstance(reply, dict):
        return reply
    it = iter(reply or ())
    return dict(zip(it, it, strict=True))
