"""The gate: every connection waits here, cheaply, until its A-ASSOCIATE-RQ is complete.

pynetdicom gives each accepted TCP connection a thread (and a DUL thread) before
a single byte has arrived, and reads a PDU into a buffer as large as the peer's
length field says. Here instead ONE selector thread per listener process accepts
every connection and holds it until a complete A-ASSOCIATE-RQ has arrived; only
then is it handed to pynetdicom (``LabServer.process_request``, the association
thread pool), with the bytes already read: ``FastSocket`` serves them first, so
pynetdicom decodes the request and the policy (EVT_REQUESTED) decides exactly as
before.

This module is the selector thread: it accepts, and checks the caps on connections
that are not yet handed over: ``max_pending_connections`` in total and
``max_pending_per_address`` per source address, counted over every listener process
(``counters.Counts``). Over a cap the connection is closed at once: nothing is read,
no thread. What it then checks on each connection it holds (TLS handshake, PDU
header, the complete request, the deadline) is in gaterequest.py.

The limits are the listener settings the settings watcher last read
(``Pacs.limits``): no Redis read per connection.

Events: all of these are ``connection-closed`` events (level warning, also where
an A-ABORT went out; the ``reason`` field tells them apart), aggregated per source
address and reason so that a flood cannot push the audit trail out of the bounded
event stream: the first close from an address for a reason is reported at once,
in full; the ones after it are counted and reported once per 10 s window ("closed
812 more connections from 10.1.2.3 in the last 10 s: ..."), as long as they go
on. With several listener processes each one aggregates its own connections.

The gate follows the listening socket: ``listen(server)`` when the listener moves
to a new port, ``unlisten(server)`` before that server's socket closes; connections
already pending from the old port are still served. With the listening socket
that all listener processes share, a process busier than another leaves a
waiting connection 3 ms to the less busy one before it accepts (as before).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from dicomlab import events as E

from .counters import Counts
from .gaterequest import Pending, PendingRequests
from .notes import Notes
from .tls import Handshake

LOG = logging.getLogger(__name__)

ACCEPT_BATCH = 64  # connections accepted per wake-up before the pending ones are served again
BUSY_DEFER = 0.003  # how long a busier listener process leaves a new connection to the others


class _Listener:
    __slots__ = ("server", "deferred_until", "skip_defer")

    def __init__(self, server: Any) -> None:
        self.server = server
        self.deferred_until: float | None = None
        self.skip_defer = False


class Gate(PendingRequests):
    """The selector thread of one listener process. ``pacs`` gives ``limits`` (the
    last-read ListenerSettings), ``events``, and ``busier_than_peers()``."""

    def __init__(self, pacs: Any, counts: Counts) -> None:
        self.pacs = pacs
        self.counts = counts
        self.handed: dict[socket.socket, bytearray] = {}  # read by LabRequestHandler: the request's bytes
        self.decoded: dict[socket.socket, tuple[bytes, Any]] = {}  # ... and the request rqcheck decoded
        self.primitives: dict[socket.socket, Any] = {}  # ... (its primitive, digest): direct.py reads it
        # read by LabRequestHandler, for the ladder: when the connection came, when its request was complete
        self.since: dict[socket.socket, tuple[float, float]] = {}
        self.notes = Notes(pacs.events.emit)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._commands: deque[Callable[[], None]] = deque()
        self._listeners: dict[Any, _Listener] = {}
        self._pending: dict[socket.socket, Pending] = {}
        self._timers: list[tuple[float, int, Pending]] = []
        self._seq = itertools.count()
        self._stopped = False
        self._thread: threading.Thread | None = None

    # -- from other threads ------------------------------------------------------------
    def listen(self, server: Any) -> None:
        """Accept from ``server.socket`` (non-blocking from now on)."""
        server.socket.setblocking(False)
        self._call(lambda: self._add_listener(server))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gate", daemon=True)
            self._thread.start()

    def unlisten(self, server: Any, timeout: float = 5.0) -> None:
        """Stop accepting from ``server``'s socket; returns once the gate let go of it."""
        done = threading.Event()

        def remove() -> None:
            self._remove_listener(server)
            done.set()

        if self._thread is None or not self._thread.is_alive():
            remove()
            return
        self._call(remove)
        done.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Close every pending connection at once, report what is still counted, stop."""
        self._call(self._stop)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _call(self, fn: Callable[[], None]) -> None:
        self._commands.append(fn)
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (already woken) or closed
            pass

    # -- the gate thread ---------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopped:
            try:
                self._turn()
            except Exception:  # the gate must survive anything
                LOG.exception("gate")
                time.sleep(0.01)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _turn(self) -> None:
        while self._commands:
            self._commands.popleft()()
        if self._stopped:
            return
        now = time.monotonic()
        dues = [self._timers[0][0] if self._timers else None, self.notes.next_due(),
                *(lst.deferred_until for lst in self._listeners.values())]
        due = min((d for d in dues if d is not None), default=now + 1.0)
        for key, _ in self._sel.select(max(0.0, min(due - now, 1.0))):
            data = key.data
            if data is None:
                try:
                    self._wake_r.recv(4096)
                except OSError:
                    pass
            elif isinstance(data, _Listener):
                self._accept(data)
            else:
                self._serve(data)
        now = time.monotonic()
        self._expire(now)
        self.notes.flush(now)
        for lst in self._listeners.values():
            if lst.deferred_until is not None and lst.deferred_until <= now:
                lst.deferred_until, lst.skip_defer = None, True
                self._register_listener(lst)

    def _add_listener(self, server: Any) -> None:
        lst = _Listener(server)
        self._listeners[server] = lst
        self._register_listener(lst)

    def _register_listener(self, lst: _Listener) -> None:
        try:
            self._sel.register(lst.server.socket, selectors.EVENT_READ, lst)
        except (KeyError, ValueError, OSError):  # already registered, or closed meanwhile
            pass

    def _remove_listener(self, server: Any) -> None:
        lst = self._listeners.pop(server, None)
        if lst is not None:
            try:
                self._sel.unregister(server.socket)
            except (KeyError, ValueError, OSError):
                pass

    def _stop(self) -> None:
        self._stopped = True
        for lst in list(self._listeners.values()):
            self._remove_listener(lst.server)
        for p in list(self._pending.values()):
            self._close(p)
        self.notes.flush(time.monotonic(), force=True)

    def _accept(self, lst: _Listener) -> None:
        server = lst.server
        if getattr(server, "shared_accept", False) and not lst.skip_defer and self.pacs.busier_than_peers():
            # leave the connection a moment to a less busy process (it takes it if it is free)
            lst.deferred_until = time.monotonic() + BUSY_DEFER
            self._sel.unregister(server.socket)
            return
        lst.skip_defer = False
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = server.socket.accept()
            except (BlockingIOError, InterruptedError):
                return  # none left (or another listener process took it)
            except OSError as exc:  # e.g. out of file descriptors: wait a little, do not spin
                LOG.warning("accept on port %s: %s", server.server_address[1], exc)
                lst.deferred_until = time.monotonic() + 0.1
                self._sel.unregister(server.socket)
                return
            self._admit(sock, address, server)

    def _admit(self, sock: socket.socket, address: Any, server: Any) -> None:
        limits = self.pacs.limits
        peer = str(address[0]) if isinstance(address, tuple) else str(address)
        full = self.counts.try_take(peer, per_key=limits.max_pending_per_address,
                                    total=limits.max_pending_connections)
        now = time.monotonic()
        if full:
            sock.close()
            port = server.server_address[1]
            if full == "key":
                why = (f"too many pending connections from one address (max_pending_per_address "
                       f"{limits.max_pending_per_address}): connections that have not yet sent a complete "
                       f"A-ASSOCIATE-RQ. Fix: find what on {peer} opens connections without sending a request, "
                       "or raise max_pending_per_address")
            else:
                why = (f"too many pending connections in all (max_pending_connections "
                       f"{limits.max_pending_connections}): connections that have not yet sent a complete "
                       "A-ASSOCIATE-RQ. Fix: find the peers that open connections without sending a request "
                       "(see the other too-many-pending and request-timeout events), or raise "
                       "max_pending_connections")
            self.notes.add(E.REASON_TOO_MANY_PENDING, peer, f"closed a connection from {peer} to port {port} "
                           f"at once: {why}", why,
                           {"port": port, "cap": "max_pending_per_address" if full == "key"
                            else "max_pending_connections",
                            "max_pending_per_address": limits.max_pending_per_address,
                            "max_pending_connections": limits.max_pending_connections}, now)
            return
        try:
            sock.setblocking(False)
            p = Pending(sock, address, server, now + limits.assoc_request_timeout)
            server_tls = getattr(server, "lab_tls", None)
            if server_tls is not None:  # the TLS port: the handshake counts in assoc_request_timeout
                p.tls = Handshake(server_tls)
            self._sel.register(sock, selectors.EVENT_READ, p)
        except (OSError, ValueError):
            self.counts.give_back(peer)
            sock.close()
            return
        self._pending[sock] = p
        heapq.heappush(self._timers, (p.deadline, next(self._seq), p))
        self._serve(p)  # the request has often arrived with the connection: no extra wait for it
