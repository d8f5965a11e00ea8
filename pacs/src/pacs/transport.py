"""Transport: the listening servers, the socket every association reads through, and the
hand-over of a connection from the gate (gate.py) to pynetdicom.

- ``FastSocket``: pynetdicom's AssociationSocket reading with ``recv_into``, serving the
  gate's pre-read A-ASSOCIATE-RQ first, every PDU length checked (guard.py);
- ``LabRequestHandler``: pynetdicom's request handler, making the association (fast path or
  stock) in the connection's own thread, tracked by ``Pacs`` until it ends;
- ``LabServer`` / ``SharedPortServer`` / ``_inherited_server_class``: the association server
  on a port of its own, on a port several processes share (SO_REUSEPORT), or on the socket
  the supervisor opened before forking.

Each override names the pynetdicom 3.0.4 function it mirrors (tests/pacs/test_pynetdicom_drift.py).
"""

from __future__ import annotations

import select
import socket
import ssl
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from . import direct, rqcheck
from .fastpath import LabAssociation
from .guard import PduGuard
from .threadreuse import ThreadReuse
from .wire import recv_up_to

if TYPE_CHECKING:
    from .listener import Pacs


class FastSocket(AssociationSocket):
    """pynetdicom's socket, reading a PDU with ``recv_into`` in as few system calls
    as the kernel allows instead of 4 KiB ``recv`` calls (a 512 KiB CT slice took
    ~130 calls and as many copies). ``preread``: the A-ASSOCIATE-RQ the gate already
    read (gate.py), served first: pynetdicom 3.0.4's DULServiceProvider._is_transport_event
    asks ``ready`` and _read_pdu_data then reads ``recv(6)`` and ``recv(length)``."""

    preread: bytearray | None = None
    predecoded: tuple[bytes, Any] | None = None  # (those bytes, the A_ASSOCIATE_RQ rqcheck decoded): LabDUL

    @property
    def ready(self) -> bool:
        """pynetdicom 3.0.4's AssociationSocket.ready: True while pre-read bytes remain, and with
        poll instead of select, which fails on a descriptor >= 1024 (reached while the gate holds
        many connections) and made pynetdicom close the connection (Evt17)."""
        if self.preread:
            return True
        if self.socket is None or self._is_connected is False:
            return False
        try:
            poll = select.poll()
            poll.register(self.socket, select.POLLIN)
            return bool(poll.poll(0)) or (isinstance(self.socket, ssl.SSLSocket) and bool(self.socket.pending()))
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # Evt17: transport connection closed
            return False

    def _guard(self) -> PduGuard:
        guard: PduGuard | None = getattr(self, "pdu_guard", None)
        if guard is None:
            guard = self.pdu_guard = PduGuard(self.assoc)
        return guard

    def recv(self, nr_bytes: int) -> bytearray:
        # the peer closed: what came is returned, as pynetdicom does. After the
        # A-ASSOCIATE-RQ, every PDU length is checked before it is read (guard.py).
        return self._guard().recv(cast(socket.socket, self.socket), nr_bytes, self._read)

    def send(self, bytestream: bytes) -> None:
        """pynetdicom's send (a failure is its Evt17), then an immediate ACK of what arrives next
        (guard.py: a C-GET SCU that keeps Nagle on answers in small segments)."""
        super().send(bytestream)
        if self.socket is not None:
            self._guard().ack_now(self.socket)

    def _read(self, nr_bytes: int) -> bytearray:
        """``nr_bytes``: the gate's pre-read bytes (the A-ASSOCIATE-RQ) first, then the socket."""
        pre = self.preread
        if pre:
            head = pre[:nr_bytes]
            del pre[:nr_bytes]
            if len(head) == nr_bytes:
                return head
            return head + recv_up_to(cast(socket.socket, self.socket), nr_bytes - len(head))
        return recv_up_to(cast(socket.socket, self.socket), nr_bytes)


class LabRequestHandler(RequestHandler):
    """pynetdicom's request handler (an extension point: ``AE.make_server``'s
    ``request_handler``), plus TCP_NODELAY, the fail-closed acceptor title, the
    faster socket reads, no per-association copy of every supported context, and
    tracking of the association until it ends (slot count, clean shutdown)."""

    # what the gate read and decoded of the request (handle takes them from the gate)
    lab_preread: bytearray | None = None
    lab_predecoded: tuple[bytes, Any] | None = None
    lab_connected: tuple[float, float] | None = None

    def _create_association(self) -> LabAssociation:
        # pynetdicom's RequestHandler._create_association, with FastSocket, and without
        # deep-copying the server's contexts: EVT_REQUESTED sets each association's.
        fastpath = self.server.lab_pacs.fastpath  # type: ignore[attr-defined]
        assoc: LabAssociation = (LabAssociation if fastpath else Association)(  # type: ignore[assignment]
            self.ae, MODE_ACCEPTOR)  # stock: PACS_FASTPATH=0 (an Association that quacks the same here)
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        sock = FastSocket(assoc, client_socket=self.request)
        sock.preread = self.lab_preread
        sock.predecoded = self.lab_predecoded
        assoc.lab_connected = self.lab_connected  # type: ignore[attr-defined]
        assoc.set_socket(sock)
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.lab_pacs.sentinel_title  # type: ignore[attr-defined]
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = []
        assoc.requestor.address_info = self.remote
        for event, handlers in self.server._handlers.items():  # as pynetdicom binds them
            if event.is_intervention and handlers:
                assoc.bind(event, *handlers)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in handlers:  # type: ignore[misc]  # pynetdicom types the list loosely
                    assoc.bind(event, handler, args)
        return assoc

    def handle(self) -> None:
        pacs: Pacs = self.server.lab_pacs  # type: ignore[attr-defined]
        gate = self.server.lab_gate  # type: ignore[attr-defined]
        try:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.lab_preread, self.lab_predecoded = gate.handed.pop(self.request, None), gate.decoded.pop(self.request, None)
        self.lab_connected = gate.since.pop(self.request, None)
        primitive, key = gate.primitives.pop(self.request, None) or (None, b"")
        decided = None
        directly = pacs.direct and not getattr(self.server, "lab_tls", None)
        if directly and primitive is None and self.lab_predecoded is None and self.lab_preread is not None:
            # a sound request the gate knew by its digest, its primitive not kept: decoded here, once
            raw = bytes(self.lab_preread)
            again = rqcheck.decode_again(raw)
            if again is not None:
                primitive, key = again.primitive, again.key
                self.lab_predecoded = (raw, again.decoded)
        if directly and direct.plain_request(primitive):
            quick = direct.DirectAssociation(pacs, primitive, self.request, self.local, self.remote,
                                             self.server._handlers, self.lab_connected, key)
            pacs.track(quick)
            try:
                if direct.serve(pacs, quick):
                    return
                decided, quick.lab_session = quick.lab_session, None  # pynetdicom takes it, decided
            finally:
                pacs.untrack(quick)
            # a request decoded now (lab_predecoded) was not kept by rqcheck.remember, which only a
            # direct accept calls: pynetdicom takes its decode and its primitive, read by the decision
        assoc = self._create_association()
        if decided is not None:
            assoc.lab_session, assoc.lab_predecided = decided, True  # type: ignore[attr-defined]
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        pacs.track(assoc)
        try:
            assoc.run_reactor()  # in this connection's thread: no third thread per association
        finally:
            pacs.untrack(assoc)


def _inherited_server_class(sock: socket.socket) -> type[LabServer]:
    """A listener on the socket every listener process shares (made by the supervisor).

    All processes wait on the same non-blocking socket and the first free one takes
    each connection, so a busy process leaves new associations to an idle one: the
    kernel's SO_REUSEPORT hash, by contrast, split 8 modalities 15:9 over two
    processes in a measured run. A process that loses the race to accept simply
    goes back to waiting.
    """

    class InheritedSocketServer(SharedPortServer):
        # the gate (gate.py) accepts: a process with more open associations than another
        # first leaves the pending connection a few milliseconds to the less busy one
        shared_accept = True

        def server_bind(self) -> None:
            assert self.socket is not None
            self.socket.close()
            self.socket = sock
            self.server_address = sock.getsockname()

        def server_activate(self) -> None:  # already listening
            pass

        def server_close(self) -> None:
            # close this process's descriptor only: shutdown() would stop the socket
            # for every process sharing it
            assert self.socket is not None
            self.socket.close()

    return InheritedSocketServer


class LabServer(ThreadedAssociationServer):
    """The association server, made with ``AE.make_server(server_class=...)``.

    Its socket is served by the gate (gate.py), not by ``serve_forever``: the gate
    calls ``process_request`` once a connection's A-ASSOCIATE-RQ is complete.
    Open associations are tracked by ``Pacs`` (not joined by socketserver), so
    closing the server closes the port at once even while associations run.
    """

    shared_accept = False  # True: the listening socket every listener process accepts from
    request_queue_size = 128  # the listen backlog (socketserver's 5 overflowed under bursts: 1 s SYN retries)

    block_on_close = False
    daemon_threads = True
    connection_threads = ThreadReuse("association")

    def process_request(self, request: Any, client_address: Any) -> None:
        """ThreadingMixIn starts a thread per connection; reuse finished ones instead."""
        self.connection_threads.submit(self.process_request_thread, request, client_address)

    def service_actions(self) -> None:
        """pynetdicom runs a full ``gc.collect()`` here every 60 loop turns, which stops
        every association thread while it walks the heap; Python's own generational
        collector is enough for us."""

    def shutdown(self) -> None:
        gate = getattr(self, "lab_gate", None)
        if gate is not None:
            gate.unlisten(self)  # the gate lets go of the socket first
        self.server_close()  # close the listening socket


class SharedPortServer(LabServer):
    """One of several listener processes on the same port (SO_REUSEPORT): the
    kernel spreads incoming connections over them, so both cores work."""

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()
