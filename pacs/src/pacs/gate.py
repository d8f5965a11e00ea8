"""The gate: every connection waits here, cheaply, until its A-ASSOCIATE-RQ is complete.

pynetdicom gives each accepted TCP connection a thread (and a DUL thread) before
a single byte has arrived, and reads a PDU into a buffer as large as the peer's
length field says. Here instead ONE selector thread per listener process accepts
every connection and holds it until a complete A-ASSOCIATE-RQ has arrived; only
then is it handed to pynetdicom (``LabServer.process_request``, the association
thread pool), with the bytes already read: ``FastSocket`` serves them first, so
pynetdicom decodes the request and the policy (EVT_REQUESTED) decides exactly as
before.

What the gate checks, in order (each check before anything is allocated):

- caps on connections that are not yet handed over: ``max_pending_connections``
  in total and ``max_pending_per_address`` per source address, counted over every
  listener process (``counters.Counts``). Over a cap the connection is closed at
  once: nothing is read, no thread.
- on the TLS port (a server carrying ``lab_tls``, tlslistener.py): the first byte must
  be 0x16 (a TLS handshake record), else the connection is closed, reason
  ``plain-on-tls-port``; then the TLS handshake, non-blocking, in this same selector
  loop (tls.Handshake), counted in ``assoc_request_timeout``; a failed one is closed
  with reason ``tls-handshake-failed`` and its cause in words (dicomlab.tlswords),
  counted apart per cause. The request is then read through TLS, and the TLS socket
  is handed over: both data-phase engines read and write through it.
- the 6-byte PDU header, then the body as it arrives (the buffer grows with what
  arrived; the length field only bounds it):
  - ``0x16 0x03`` first (a TLS record): closed, reason ``tls-on-plain-port``.
  - an unknown PDU type: A-ABORT source 2, reason 1 (unrecognized PDU);
  - a known type other than A-ASSOCIATE-RQ: A-ABORT 2/2 (unexpected PDU);
  - an A-ASSOCIATE-RQ longer than 64 KiB, or shorter than its 68 bytes of fixed
    fields: A-ABORT 2/6 (invalid PDU parameter value); all three reason ``pdu-invalid``.
- the complete request, decoded with pynetdicom's own decoder plus the checks its
  negotiation would raise on (rqcheck.py): malformed, A-ABORT 2/6, ``pdu-invalid``.
  After an A-ABORT the gate shuts its side and discards what still arrives (at
  most 2 s), so the peer reads the A-ABORT rather than a connection reset.
- a deadline: the request must be complete within ``assoc_request_timeout``
  seconds of the accept (DCMTK's ARTIM), else the connection is closed, reason
  ``request-timeout``.

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
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from dicomlab import events as E
from dicomlab import pdu as codec
from dicomlab.pdu import ABORT_INVALID_PARAMETER as ABORT_INVALID_VALUE
from dicomlab.pdu import ABORT_UNEXPECTED_PDU as ABORT_UNEXPECTED
from dicomlab.pdu import ABORT_UNRECOGNIZED_PDU as ABORT_UNRECOGNIZED
from dicomlab.pdu import ABORT_WORDS, PDU_NAMES
from dicomlab.pdu import abort_pdu as a_abort  # an A-ABORT from the service provider (source 2)

from .counters import Counts
from .notes import Notes
from .rqcheck import rq_problem
from .tls import Failed, Handshake

LOG = logging.getLogger(__name__)

MAX_RQ = codec.MAX_ASSOCIATE_RQ  # largest A-ASSOCIATE-RQ body accepted (PS3.8 sets no limit; real ones < 4 KiB)
MIN_RQ = codec.ASSOCIATE_FIXED_LENGTH  # protocol version, reserved, called and calling AE titles, reserved
LINGER = 2.0  # seconds an aborted connection may keep sending before it is closed
ACCEPT_BATCH = 64  # connections accepted per wake-up before the pending ones are served again
BUSY_DEFER = 0.003  # how long a busier listener process leaves a new connection to the others
REASON_TLS = "tls-on-plain-port"

HINT = "is this peer speaking DICOM?"


class Pending:
    """A connection the gate holds: reading its request, or closing after an A-ABORT."""

    __slots__ = ("sock", "address", "peer", "server", "deadline", "buf", "need", "closing", "discarded", "since",
                 "tls")

    def __init__(self, sock: socket.socket, address: Any, server: Any, deadline: float) -> None:
        self.sock = sock
        self.address = address
        self.peer = str(address[0]) if isinstance(address, tuple) else str(address)
        self.server = server
        self.deadline = deadline
        self.buf = bytearray()
        self.need = 6  # bytes of the PDU (header first, then header + body)
        self.closing = False
        self.discarded = 0
        self.since = time.time()  # the TCP connect, for the association ladder (dicomlab.ladder)
        self.tls: Handshake | None = None  # on the TLS port: the handshake, done before the request is read


class _Listener:
    __slots__ = ("server", "deferred_until", "skip_defer")

    def __init__(self, server: Any) -> None:
        self.server = server
        self.deferred_until: float | None = None
        self.skip_defer = False


class Gate:
    """The selector thread of one listener process. ``pacs`` gives ``limits`` (the
    last-read ListenerSettings), ``events``, and ``busier_than_peers()``."""

    def __init__(self, pacs: Any, counts: Counts) -> None:
        self.pacs = pacs
        self.counts = counts
        self.handed: dict[socket.socket, bytearray] = {}  # read by LabRequestHandler: the request's bytes
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

    def _serve(self, p: Pending) -> None:
        hs = p.tls
        if hs is not None and not hs.done and not p.closing:
            if not self._handshake(p, hs):
                return
        self._read(p)
        # TLS: a record may hold more than was asked for; what OpenSSL already decrypted
        # does not make the socket readable again
        while (hs is not None and not p.closing and self._pending.get(p.sock) is p
               and isinstance(p.sock, ssl.SSLSocket) and p.sock.pending()):
            self._read(p)

    def _handshake(self, p: Pending, hs: Handshake) -> bool:
        """One step of the TLS handshake (tls.py); True once it is done and the request can be read."""
        port = p.server.server_address[1]
        try:
            return hs.step(p.sock, self._sel, p, p.peer, port) is not None
        except Failed as f:
            if f.reason:
                self._note_closed(p, f.reason, f.words, {"port": port, "cause": f.cause, "tls": True},
                                  kind=f.cause)
            self._close(p)
            return False
        finally:
            if hs.sock is not None and p.sock is not hs.sock:  # wrapped: the gate holds the TLS socket now
                if self._pending.pop(p.sock, None) is p:
                    self._pending[hs.sock] = p
                p.sock = hs.sock

    def _read(self, p: Pending) -> None:
        try:
            data = p.sock.recv(65536 if p.closing else min(p.need - len(p.buf), 65536))
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            data = b""
        if p.closing:
            p.discarded += len(data)
            if not data or p.discarded > 1 << 20:
                self._close(p)
            return
        if not data:
            if p.buf:  # gone in the middle of its request
                self._note_closed(p, "peer-closed", f"the peer closed the connection after {len(p.buf)} byte(s) "
                                  "of an incomplete request. Fix: none needed unless this repeats; then check "
                                  f"the modality's network path ({HINT})", {"bytes": len(p.buf)})
            self._close(p)  # nothing sent at all: a port check, not worth an event
            return
        p.buf += data
        if p.tls is None and len(p.buf) >= 2 and p.buf[0] == 0x16 and p.buf[1] == 0x03:
            port = p.server.server_address[1]
            tls_port = getattr(self.pacs, "tls_port", None)
            where = f"the TLS port {tls_port}" if tls_port else "the TLS port (the TLS listener is off: tls_enabled)"
            self._note_closed(p, REASON_TLS, f"a TLS handshake arrived on the plain DICOM port {port} from "
                              f"{p.peer}: the modality uses TLS; send it to {where} or turn TLS off on the "
                              "modality", {"port": port, "tls_port": tls_port})
            self._close(p)
            return
        if len(p.buf) < p.need:
            return
        if p.need == 6:
            self._check_header(p)
            if p.closing or len(p.buf) < p.need:
                return
        problem = rq_problem(bytes(p.buf))  # what pynetdicom would raise on rather than answer
        if problem is not None:
            self._abort(p, ABORT_INVALID_VALUE, f"its A-ASSOCIATE-RQ is malformed: {problem}; {HINT}",
                        {"pdu_type": 1, "length": len(p.buf) - 6})
            return
        self._hand_over(p)

    def _check_header(self, p: Pending) -> None:
        pdu_type, length = codec.parse_header(p.buf)
        head = p.buf[:6].hex(" ")
        if pdu_type not in PDU_NAMES:
            self._abort(p, ABORT_UNRECOGNIZED, f"the first bytes ({head}) are not a DICOM PDU (unknown PDU type "
                        f"0x{pdu_type:02X}); {HINT}", {"pdu_type": pdu_type, "first_bytes": head})
        elif pdu_type != 1:
            self._abort(p, ABORT_UNEXPECTED, f"the first PDU was a {PDU_NAMES[pdu_type]} (type 0x{pdu_type:02X}), "
                        f"not an A-ASSOCIATE-RQ; {HINT}", {"pdu_type": pdu_type, "length": length})
        elif length > MAX_RQ:
            self._abort(p, ABORT_INVALID_VALUE, f"its A-ASSOCIATE-RQ claims {length} bytes, more than the "
                        f"{MAX_RQ} accepted (nothing was allocated for it); {HINT}", {"pdu_type": 1, "length": length})
        elif length < MIN_RQ:
            self._abort(p, ABORT_INVALID_VALUE, f"its A-ASSOCIATE-RQ claims {length} bytes, fewer than its "
                        f"{MIN_RQ} bytes of fixed fields; {HINT}", {"pdu_type": 1, "length": length})
        else:
            p.need = 6 + length

    def _abort(self, p: Pending, reason: int, what: str, detail: dict[str, Any]) -> None:
        port = p.server.server_address[1]
        self._note_closed(p, E.REASON_PDU_INVALID, f"A-ABORT (source 2, reason {reason}: {ABORT_WORDS[reason]}) "
                          f"sent to {p.peer} on port {port}: {what}", {**detail, "abort_source": 2,
                                                                      "abort_reason": reason, "port": port})
        try:
            p.sock.send(a_abort(reason))
            p.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(p)
            return
        p.closing = True  # read and discard what still comes, so the peer reads the A-ABORT, not a reset
        p.deadline = time.monotonic() + LINGER
        heapq.heappush(self._timers, (p.deadline, next(self._seq), p))

    def _note_closed(self, p: Pending, reason: str, what: str, detail: dict[str, Any], kind: str = "") -> None:
        first = what if what.startswith("A-ABORT") else f"closed the connection from {p.peer}: {what}"
        self.notes.add(reason, p.peer, first, what, detail, time.monotonic(), kind)

    def _expire(self, now: float) -> None:
        if len(self._timers) > 4 * len(self._pending) + 256:  # drop the entries of handed-over connections
            self._timers = [t for t in self._timers if self._pending.get(t[2].sock) is t[2] and t[2].deadline == t[0]]
            heapq.heapify(self._timers)
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, p = heapq.heappop(timers)
            if p.sock not in self._pending or self._pending[p.sock] is not p or p.deadline != deadline:
                continue  # handed over, closed, or given a new deadline
            if not p.closing and p.tls is not None and not p.tls.done:
                limit = self.pacs.limits.assoc_request_timeout
                self._note_closed(
                    p, E.REASON_REQUEST_TIMEOUT,
                    f"no TLS handshake completed within {limit} s (assoc_request_timeout) on the TLS port "
                    f"{p.server.server_address[1]}. Fix: if this is a modality, check that it speaks TLS to this "
                    "port, or raise assoc_request_timeout; otherwise it is a port scan or a stuck peer",
                    {"bytes": 0, "assoc_request_timeout": limit, "tls": True})
            elif not p.closing:
                limit = self.pacs.limits.assoc_request_timeout
                self._note_closed(
                    p, E.REASON_REQUEST_TIMEOUT,
                    f"no complete A-ASSOCIATE-RQ within {limit} s (assoc_request_timeout; {len(p.buf)} byte(s) "
                    f"arrived). Fix: if this is a modality, check its network path or raise "
                    f"assoc_request_timeout; otherwise it is a port scan or a stuck peer",
                    {"bytes": len(p.buf), "assoc_request_timeout": limit})
            self._close(p)

    def _forget(self, p: Pending) -> None:
        if self._pending.pop(p.sock, None) is not None:
            self.counts.give_back(p.peer)
        try:
            self._sel.unregister(p.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _close(self, p: Pending) -> None:
        self._forget(p)
        try:
            p.sock.close()
        except OSError:
            pass

    def _hand_over(self, p: Pending) -> None:
        """The request is complete: to pynetdicom, on the association thread pool."""
        self._forget(p)
        try:
            p.sock.setblocking(True)
            self.handed[p.sock] = p.buf
            self.since[p.sock] = (p.since, time.time())
            p.server.process_request(p.sock, p.address)
        except Exception:
            LOG.exception("hand-over to the association thread")
            self.handed.pop(p.sock, None)
            self.since.pop(p.sock, None)
            p.sock.close()
