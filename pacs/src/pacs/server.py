"""The PACS listener: a pynetdicom Storage + Verification SCP whose every
association is decided from the registry, with live settings and a clean stop.

How the decision reaches the peer intact: pynetdicom's acceptor thread fires
EVT_REQUESTED after reading the A-ASSOCIATE-RQ. Our handler decides; on a
rejection it queues the A-ASSOCIATE-RJ with ``acse.send_reject`` and then calls
``assoc.kill()``, which returns only when the DUL state machine is back in
Sta1 -- that is, after the RJ PDU went out and the peer closed (or the ARTIM
timer expired). Returning from the handler straight away would let pynetdicom
shut the socket down while the RJ is still queued, and the peer would see only
"Peer aborted Association".

Fail closed, twice over: every exception in the decision is a rejection
(``policy.decide`` never raises, and the handler catches the rest), and every
association starts with an acceptor AE title that is a per-process random
string, so if the handler ever failed before accepting, pynetdicom's own
check (``require_called_aet``) rejects the association.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from pynetdicom import AE, _config, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from dicomlab import events as E
from dicomlab import indexops
from dicomlab.dicom import (
    RJ_REGISTRY_UNAVAILABLE,
    STATUS_NOT_AUTHORIZED,
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
    uid_name,
)
from dicomlab.errors import RegistryUnavailable
from dicomlab.events import EventLog
from dicomlab.registry import Registry
from dicomlab.settings import REFUSAL_MODES, SERVICES, ListenerSettings

from . import metrics
from .associnfo import context_results, request_detail
from .commitment import CommitmentService, proposes_commitment
from .contexts import contexts_for, contexts_for_services, why_refused
from .counters import Counts, SharedCounts
from .fastpath import LabAssociation, ThreadReuse
from .gate import Gate
from .guard import PduGuard
from .healthcheck import HEALTHCHECK_AET
from .policy import AssociationSlots, Decision, decide
from .qr import QueryRetrieve, proposes_qr
from .sopmarks import stored_ops
from .spooling import discard_partial, receive_chunked, received_dataset
from .storage import Spool, Storage
from .tls import transport
from .tlslistener import TlsListener
from .wire import A_ABORT_USER, DataPhase, recv_up_to

LOG = logging.getLogger(__name__)
_ids = itertools.count(1)
_id_suffix = ""  # ".<worker>" when several listener processes share the port


@dataclass
class Session:
    """What the PACS knows about one association (kept on the pynetdicom thread)."""

    id: str
    calling: str = ""
    called: str = ""
    peer: str = ""
    started: float = field(default_factory=time.monotonic)
    connected: tuple[float, float] = (0.0, 0.0)  # TCP connect, request complete (gate.py), for the ladder
    decision: Decision | None = None
    counted: bool = False
    refusal: str = ""  # "abort" / "dimse-failure": a refused node let in only to be turned away
    stores: int = 0  # C-STORE requests seen (for fault_abort_after)
    indexed_series: set[str] = field(default_factory=set)
    stored: int = 0
    failed: int = 0
    ended: bool = False  # an association-released / -aborted event was written
    tls: dict[str, Any] | None = None  # on the TLS port: version, cipher, client certificate CN (tls.transport)

    def who(self) -> dict[str, Any]:
        return {"assoc_id": self.id, "calling_aet": self.calling, "called_aet": self.called, "peer": self.peer}


def _session(assoc: Any) -> Session:
    s = getattr(assoc, "lab_session", None)
    if s is None:
        s = Session(id=f"a{next(_ids):05d}{_id_suffix}", peer=str(assoc.requestor.address),
                    connected=getattr(assoc, "lab_connected", None) or (time.time(), time.time()))
        assoc.lab_session = s
    return s


class FastSocket(AssociationSocket):
    """pynetdicom's socket, reading a PDU with ``recv_into`` in as few system calls
    as the kernel allows instead of 4 KiB ``recv`` calls (a 512 KiB CT slice took
    ~130 calls and as many copies). ``preread``: the A-ASSOCIATE-RQ the gate already
    read (gate.py), served first: pynetdicom 3.0.4's DULServiceProvider._is_transport_event
    asks ``ready`` and _read_pdu_data then reads ``recv(6)`` and ``recv(length)``."""

    preread: bytearray | None = None

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

    def recv(self, nr_bytes: int) -> bytearray:
        # the peer closed: what came is returned, as pynetdicom does. After the
        # A-ASSOCIATE-RQ, every PDU length is checked before it is read (guard.py).
        guard = getattr(self, "pdu_guard", None)
        if guard is None:
            guard = self.pdu_guard = PduGuard(self.assoc)
        return guard.recv(cast(socket.socket, self.socket), nr_bytes, self._read)

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

    def _create_association(self) -> LabAssociation:
        # pynetdicom's RequestHandler._create_association, with FastSocket, and without
        # deep-copying the server's contexts: EVT_REQUESTED sets each association's.
        fastpath = self.server.lab_pacs.fastpath  # type: ignore[attr-defined]
        assoc: LabAssociation = (LabAssociation if fastpath else Association)(  # type: ignore[assignment]
            self.ae, MODE_ACCEPTOR)  # stock: PACS_FASTPATH=0 (an Association that quacks the same here)
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        sock = FastSocket(assoc, client_socket=self.request)
        sock.preread = self.server.lab_gate.handed.pop(self.request, None)  # type: ignore[attr-defined]
        assoc.lab_connected = self.server.lab_gate.since.pop(self.request, None)  # type: ignore[attr-defined]
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
        try:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        assoc = self._create_association()
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


# Policy rows 2-4: the node is not authorized (as opposed to rows 1 and 5, which are
# transient); only these follow the listener's refusal_mode.
AUTHORIZATION_REASONS = {"called-aet-mismatch", "unknown-calling-aet", "host-mismatch"}


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


class Pacs:
    def __init__(
        self,
        registry: Registry,
        events: EventLog,
        storage: Storage,
        seed: ListenerSettings,
        bind: str = "0.0.0.0",
        shutdown_grace: float = 30.0,
        poll_interval: float = 0.5,
        slots: AssociationSlots | None = None,
        worker: int | None = None,
        shared_ports: Any = None,
        wire: bool = True,
        inherited_socket: socket.socket | None = None,
        shared_load: Any = None,
        fastpath: bool = True,
        pending: Counts | None = None,
        tls_folder: str | None = None,
    ) -> None:
        """``worker``: this process's index when several share the port (None: the only one).
        Worker 0 (or the only process) speaks for the listener: start/stop, settings
        changes and the heartbeat; every worker records its own associations."""
        self.registry = registry
        self.events = events
        self.storage = storage
        self.seed = seed.validate()
        self.bind = bind
        self.shutdown_grace = shutdown_grace
        self.poll_interval = poll_interval
        self.slots = slots or AssociationSlots()
        self.shared_ports = shared_ports  # each listener process's current port
        # fastpath False (PACS_FASTPATH=0): pynetdicom's stock Association and DUL loops throughout
        self.fastpath = fastpath
        self.wire = wire and fastpath  # serve plain data phases on the socket (wire.py)
        # the listening socket the supervisor opened before forking, shared by every listener process
        self.inherited_socket = inherited_socket
        self.shared_load = shared_load  # each listener process's open connections
        self.worker = worker
        self.primary = not worker  # None or 0
        if worker is not None:
            global _id_suffix
            _id_suffix = f".{worker}"
        self.sentinel_title = secrets.token_hex(8)  # 16 characters no peer can guess
        self.server: ThreadedAssociationServer | None = None
        self.port: int | None = None
        self.ae_title = seed.ae_title
        self.verbose = seed.verbose
        self._active: set[Any] = set()
        self._active_cv = threading.Condition()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._registry_ok: bool | None = None
        # the listener settings the watcher last read: the gate's limits, without a Redis read per connection
        self.limits = self.seed
        self.gate = Gate(self, pending if pending is not None else SharedCounts(1).row(0))
        self.on_registry_back: Any = None  # called with why, when Redis comes back or comes back empty
        self.tls = TlsListener(self, tls_folder)  # the DICOM TLS port beside the plain one

        # pynetdicom's "standard" log handlers format every PDU and DIMSE message for its
        # logger even when nothing is logged; our events say what matters, once.
        _config.LOG_HANDLER_LEVEL = "none"
        ae = AE(ae_title=seed.ae_title)
        ae.require_called_aet = True  # with the sentinel title: the fail-closed backstop
        ae.require_calling_aet = []
        ae.maximum_associations = 100_000  # the policy counts (row 5), not pynetdicom
        ae.maximum_pdu_size = 131_072
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        ae.network_timeout = 120
        ae.add_supported_context(Verification)  # replaced per association by contexts_for()
        self.ae = ae
        receive_chunked()  # pynetdicom's loops write each dataset to a temporary file as it arrives
        self.qr = QueryRetrieve(self)  # Study Root C-FIND / C-MOVE / C-GET (qr.py)
        self.handlers: list[Any] = [
            (evt.EVT_C_FIND, self.qr.on_find),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        self.commitment = CommitmentService(self)  # Storage Commitment SCP (commitment.py)
        self.handlers += self.commitment.handlers

    # -- life cycle -------------------------------------------------------------
    def start(self) -> None:
        settings = self._current_settings()
        self._listen(settings.port)
        tls_words = self.tls.apply(settings, starting=True)
        self.ae_title = settings.ae_title
        self.verbose = settings.verbose
        self._listener_event(
            E.LISTENER_STARTED,
            f"PACS {settings.ae_title!r} listening on {self.bind}:{self.port} "
            f"(max {settings.max_associations} associations, verbose {'on' if settings.verbose else 'off'})"
            f"{tls_words}.",
            detail={"ae_title": settings.ae_title, "port": self.port, "pid": os.getpid(), "tls_port": self.tls_port},
        )
        self._heartbeat()
        self._watcher = threading.Thread(target=self._watch_settings, name="settings-watcher", daemon=True)
        self._watcher.start()
        if self.primary:
            self.commitment.start()  # delivers storage commitment reports (any process may take requests)

    def _listener_event(self, type_: str, message: str, **kw: Any) -> None:
        """Events about the listener as a whole: said once, by the primary process."""
        if self.primary:
            self.events.emit(type_, message, **kw)

    def _current_settings(self) -> ListenerSettings:
        """Settings from Redis (seeded from the environment where absent), or the
        seeds when Redis is down -- only to know which port to open: every
        association is still refused until Redis answers."""
        try:
            settings = self.registry.seed_listener(ListenerSettings(**self.seed.to_dict()))
            if self._registry_ok is False:
                self._listener_event(E.SETTINGS_CHANGED, "The registry (Redis) answers again; associations are "
                                 "checked normally.", level="info", reason="registry-back")
            back = "registry-back" if self._registry_ok is False else self._registry_ok and self.registry.seeded
            self._registry_ok = True
            self.limits = settings
            if back and self.primary and self.on_registry_back:  # Redis may have lost index writes (reconcile.py)
                self.on_registry_back("registry-empty" if back is True else back)
            return settings
        except RegistryUnavailable as exc:
            if self._registry_ok is not False:
                self._listener_event(
                    E.SETTINGS_CHANGED,
                    f"The registry (Redis) is unreachable: every association is refused as transient "
                    f"(2/3/1) until it answers. Fix: start Redis / check REDIS_URL. ({exc})",
                    level="error", reason="registry-unavailable",
                )
            self._registry_ok = False
            return ListenerSettings(**{**self.seed.to_dict(), "port": self.port or self.seed.port})

    def _listen(self, port: int) -> None:
        server_class: type[LabServer] = LabServer if self.worker is None else SharedPortServer
        inherited = self.inherited_socket
        if inherited is not None:
            self.inherited_socket = None  # once: a later port change binds a socket of its own
            if inherited.getsockname()[1] == port:
                server_class = _inherited_server_class(inherited)
            else:
                inherited.close()
        server = self.make_server(port, server_class)
        old, self.server, self.port = self.server, server, server.server_address[1]
        if self.shared_ports is not None:
            self.shared_ports[self.worker or 0] = self.port
        if old is not None:
            old.shutdown()  # closes the old port; its open associations run to their end

    def make_server(self, port: int, server_class: type[LabServer] | None = None, tls: Any = None) -> Any:
        """A listening association server on ``port``, served by the gate; ``tls``: the TLS port's
        ServerTls (tls.py), whose handshake the gate does first."""
        if server_class is None:
            server_class = LabServer if self.worker is None else SharedPortServer
        server = self.ae.make_server(
            (self.bind, port), evt_handlers=self.handlers, server_class=server_class,
            request_handler=LabRequestHandler,
        )
        server.lab_pacs = self  # type: ignore[attr-defined]
        server.lab_gate = self.gate  # type: ignore[attr-defined]
        server.lab_tls = tls  # type: ignore[attr-defined]
        self.gate.listen(server)  # one selector thread holds every connection until its request is complete
        return server

    def _watch_settings(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self._apply_settings()
                self._heartbeat()
            except Exception:  # the watcher must survive anything
                LOG.exception("settings watcher")

    def _apply_settings(self) -> None:
        if self._registry_ok is False and not self.registry.ping():
            return
        settings = self._current_settings()
        if self._registry_ok is False:
            return
        if settings.port != self.port:
            old = self.port
            try:
                self._listen(settings.port)
            except OSError as exc:
                self._listener_event(
                    E.SETTINGS_CHANGED,
                    f"Could not move the listener from port {old} to {settings.port} ({exc.strerror or exc}); "
                    f"still listening on {old}. Fix: choose a free port.",
                    level="error", reason="rebind-failed", detail={"port": settings.port},
                )
                return
            self._wait_peers_on(settings.port)
            self._listener_event(E.SETTINGS_CHANGED, f"Listener moved from port {old} to {self.port}; port {old} "
                             "is closed. Modalities must now send to the new port.",
                             detail={"port": self.port, "old_port": old})
        self.tls.apply(settings)
        if settings.ae_title != self.ae_title:
            self._listener_event(E.SETTINGS_CHANGED, f"Listener AE title changed from {self.ae_title!r} to "
                             f"{settings.ae_title!r}; modalities must call {settings.ae_title!r} from now on.",
                             detail={"ae_title": settings.ae_title})
            self.ae_title = settings.ae_title
        if settings.verbose != self.verbose:
            self.verbose = settings.verbose
            self._listener_event(E.SETTINGS_CHANGED, f"Verbose logging {'on' if self.verbose else 'off'} "
                             "(applies from the next association).", detail={"verbose": self.verbose})

    @staticmethod
    def _abort_now(assoc: Any) -> None:
        """A-ABORT an association from another thread, whichever loop serves it."""
        dul = assoc.dul
        if getattr(dul, "wire", None) is not None and dul.is_alive():
            sock = dul.socket.socket if dul.socket is not None else None
            if sock is not None:
                try:
                    sock.sendall(A_ABORT_USER)
                    sock.shutdown(socket.SHUT_RDWR)  # the data phase's read fails: it records the abort
                except OSError:
                    pass
            return
        assoc.abort()

    def _wait_peers_on(self, port: int, timeout: float = 3.0) -> None:
        """The primary says a port moved only once every listener process moved."""
        if self.shared_ports is None or not self.primary:
            return
        deadline = time.monotonic() + timeout
        while any(p != port for p in self.shared_ports) and not self._stop.wait(0.01):
            if time.monotonic() > deadline:
                break

    def _heartbeat(self) -> None:
        if not self.primary:
            return
        try:
            self.registry.heartbeat({"ae_title": self.ae_title, "port": self.port, "tls_port": self.tls_port,
                                     "pid": os.getpid(),
                                     "active_associations": self.slots.active, "time": time.time()})
        except RegistryUnavailable:
            pass

    @property
    def tls_port(self) -> int | None:
        """The TLS port listened on now (None: off)."""
        return self.tls.port

    def track(self, assoc: Any) -> None:
        with self._active_cv:
            self._active.add(assoc)
            self._publish_load()

    def _publish_load(self) -> None:
        metrics.open_associations(len(self._active))
        if self.shared_load is not None:
            self.shared_load[self.worker or 0] = len(self._active)

    def busier_than_peers(self) -> bool:
        """More connections open here than in the least busy listener process."""
        if self.shared_load is None:
            return False
        counts = list(self.shared_load)
        return bool(counts[self.worker or 0] > min(counts))

    def untrack(self, assoc: Any) -> None:
        s = getattr(assoc, "lab_session", None)
        discard_partial(assoc)
        if s is not None and s.decision is not None and s.decision.accepted and not s.ended and not s.refusal:
            self.events.emit(E.ASSOCIATION_ABORTED, f"Association with {s.calling!r} at {s.peer} ended without "
                             f"A-RELEASE or A-ABORT after {s.stored} stored instance(s): every acknowledged "
                             "instance is on disk; the modality must resend the rest.", level="warning",
                             outcome="aborted", reason=E.REASON_INTERNAL_ERROR, **s.who())
        if s is not None and s.counted:
            s.counted = False
            self.slots.give_back(s.calling)
        with self._active_cv:
            self._active.discard(assoc)
            self._publish_load()
            self._active_cv.notify_all()

    def shutdown(self) -> None:
        """Stop accepting, let open associations finish (up to the grace), exit."""
        self._stop.set()
        self.commitment.stop()
        if self.server is not None:
            self.server.shutdown()
        self.tls.close()
        self.gate.stop()  # pending connections (no request yet) are closed at once
        deadline = time.monotonic() + self.shutdown_grace

        def open_associations() -> list[Any]:
            # Only accepted associations can have stores in flight; a connection that
            # has not (or never will) send an A-ASSOCIATE-RQ is not waited for.
            return [a for a in self._active if (d := _session(a).decision) is not None and d.accepted]

        with self._active_cv:
            while open_associations() and time.monotonic() < deadline:
                self._active_cv.wait(timeout=deadline - time.monotonic())
            left = open_associations()
        for assoc in left:
            s = _session(assoc)
            self.events.emit(E.ASSOCIATION_ABORTED, f"Shutting down: aborted after {self.shutdown_grace:.0f} s "
                             f"grace ({s.stored} instances stored and acknowledged; anything unacknowledged "
                             "must be resent).", level="warning", **s.who())
            try:
                self._abort_now(assoc)
            except Exception:
                LOG.exception("abort at shutdown")
        self._listener_event(E.LISTENER_STOPPED, f"PACS stopped; port {self.port} closed.",
                         detail={"port": self.port})
        self.events.flush(timeout=5 if self.registry.ping() else 0.5)

    # -- association handlers ----------------------------------------------------
    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        s = _session(assoc)
        try:
            rq = assoc.requestor.primitive
            if not isinstance(rq, A_ASSOCIATE):
                assoc.is_aborted = True  # pynetdicom must not negotiate on what is not an A-ASSOCIATE-RQ
                self.events.emit(E.ASSOCIATION_ABORTED, "Connection closed: the peer did not send a valid "
                                 f"A-ASSOCIATE-RQ ({type(rq).__name__}); is it speaking DICOM?",
                                 level="warning", reason="malformed-request", **s.who())
                return
            s.calling, s.called = str(rq.calling_ae_title).strip(" "), str(rq.called_ae_title).strip(" ")
            s.tls = transport(assoc.dul.socket.socket if assoc.dul.socket is not None else None)
            d = decide(self.registry, s.calling, s.called, s.peer, self.slots, tls=s.tls, tls_port=self.tls_port)
            s.decision = d
            if d.accepted:
                s.counted = True
                assert d.settings is not None and d.node is not None
                assoc.acceptor.ae_title = d.settings.ae_title
                assoc.acceptor.supported_contexts = contexts_for(d.settings, d.node, rq)
                if d.settings.verbose:
                    try:
                        self._verbose_requested(assoc, rq, s)
                    except Exception:  # verbose output must never change the decision
                        LOG.exception("verbose logging")
                elif (not d.settings.faults() and self.wire and not proposes_commitment(rq)
                      and not proposes_qr(rq)):  # Storage Commitment, Q/R: pynetdicom's loops
                    assoc.dul.wire = self._wire_runner(s)  # type: ignore[attr-defined]  # the data phase on the socket
                return
            mode = d.settings.refusal_mode if d.settings is not None else "reject"
            if mode != "reject" and d.reason in AUTHORIZATION_REASONS:
                self._refuse_otherwise(assoc, s, d, mode)
                return
            self._reject(assoc, s, d)
        except Exception as exc:  # fail closed
            LOG.exception("EVT_REQUESTED")
            d = Decision(False, "registry-unavailable", f"Internal error while checking the association "
                         f"({type(exc).__name__}: {exc}); refused as transient.", rejection=RJ_REGISTRY_UNAVAILABLE)
            s.decision = d
            if not assoc.is_rejected:
                self._reject(assoc, s, d)

    def _reject(self, assoc: Any, s: Session, d: Decision) -> None:
        assert d.rejection is not None
        rj = d.rejection
        quiet = s.calling == HEALTHCHECK_AET and s.peer in ("127.0.0.1", "::1") and not (
            d.settings is not None and d.settings.verbose)
        if quiet:  # the container health check (pacs.healthcheck): refused as anyone, not logged
            assoc.acse.send_reject(rj.result, rj.source, rj.reason)
            assoc.kill()
            return
        self.events.emit(
            E.ASSOCIATION_REJECTED,
            f"Association rejected ({rj.codes} {rj.words}): {d.message}",
            level="warning", outcome="rejected", reason=d.reason,
            detail={"result": rj.result, "source": rj.source, "reason": rj.reason, **d.detail,
                    "request": request_detail(assoc, s.connected)}, **s.who(),
            ops=self._status(s, "rejected", d.message),
        )
        assoc.acse.send_reject(rj.result, rj.source, rj.reason)
        assoc.kill()  # returns once the RJ is sent and the DUL is idle: the peer gets it intact

    def _refuse_otherwise(self, assoc: Any, s: Session, d: Decision, mode: str) -> None:
        """Turn a refused node away as another PACS would (listener setting ``refusal_mode``)."""
        assert d.settings is not None and d.rejection is not None
        self.events.emit(
            E.ASSOCIATION_REJECTED,
            f"Refused by {mode} (refusal_mode: {REFUSAL_MODES[mode]}) instead of A-ASSOCIATE-RJ "
            f"{d.rejection.codes}: {d.message}",
            level="warning", outcome=mode, reason=d.reason,
            detail={"refusal_mode": mode, "result": d.rejection.result, "source": d.rejection.source,
                    "reason": d.rejection.reason, **d.detail, "request": request_detail(assoc, s.connected)},
            ops=self._status(s, "rejected", d.message), **s.who(),
        )
        if mode == "close":
            assoc.is_aborted = True  # no negotiation: the connection just goes away
            assoc.dul.socket.close()
            assoc.kill()
            return
        s.refusal = mode  # "abort" or "dimse-failure": accept, then turn away
        assoc.acceptor.ae_title = s.called or d.settings.ae_title
        assoc.acceptor.supported_contexts = contexts_for_services(d.settings, list(SERVICES))

    def _status(self, s: Session, outcome: str, why: str = "") -> Any:
        """The node's last-association status, written with the event (if it is a node)."""
        now = time.time()
        fields: dict[str, Any] = {"last_association": outcome, "last_association_time": now,
                                  "last_assoc_id": s.id,
                                  "last_association_tls": (s.tls or {}).get("version") or "plain"}
        if why:
            fields["last_rejected_reason"] = why
        return [indexops.node_status(s.calling, **fields)]

    def _verbose_requested(self, assoc: Any, rq: A_ASSOCIATE, s: Session) -> None:
        proposed = [
            f"[{cx.context_id}] {uid_name(str(cx.abstract_syntax))}: "
            + ", ".join(uid_name(str(t)) for t in cx.transfer_syntax)
            for cx in rq.presentation_context_definition_list
        ]
        self.events.emit(
            E.ASSOCIATION_REQUESTED,
            f"A-ASSOCIATE-RQ from {s.calling!r} at {s.peer} calling {s.called!r}: max PDU "
            f"{assoc.requestor.maximum_length}, implementation {assoc.requestor.implementation_class_uid} "
            f"{assoc.requestor.implementation_version_name or ''}, {len(proposed)} presentation context(s): "
            + "; ".join(proposed),
            level="debug", detail={"proposed": proposed}, **s.who(),
        )
        for event_type in (evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT, evt.EVT_PDU_RECV, evt.EVT_PDU_SENT):
            assoc.bind(event_type, self._verbose_message)

    def _verbose_message(self, event: evt.Event) -> None:
        s = _session(event.assoc)
        direction = "received" if event.event.name.endswith("RECV") else "sent"
        if event.event.name.startswith("EVT_PDU"):
            pdu = event.pdu
            text = f"PDU {direction}: {type(pdu).__name__} ({len(pdu)} bytes)"
        else:
            msg = event.message
            parts = [f"DIMSE {direction}: {type(msg).__name__.replace('_', '-')}"]
            for kw in ("MessageID", "MessageIDBeingRespondedTo", "AffectedSOPInstanceUID", "Status"):
                v = getattr(msg, kw, None)
                if v not in (None, ""):
                    parts.append(f"{kw}={f'0x{v:04X}' if kw == 'Status' else v}")
            text = " ".join(parts)
        self.events.emit(E.PDU, text, level="debug", **s.who())

    def _on_accepted(self, event: evt.Event) -> None:
        if getattr(event.assoc.dul, "wire", None) is None:  # with the data phase on the socket, that
            self._accepted(event.assoc)  # thread records the acceptance first (no hand-off, in order)

    def _accepted(self, assoc: Any) -> None:
        s = _session(assoc)
        d = s.decision
        if s.refusal:
            if s.refusal == "abort":
                self.events.emit(E.ASSOCIATION_ABORTED, "Accepted, then aborted at once (refusal_mode abort): the "
                                 "modality sees its association aborted, not rejected.", level="warning",
                                 outcome="aborted", reason="refusal-mode-abort", **s.who())
                assoc.abort(block=False)  # inside a handler: queue it, the reactor ends
            return
        if d is None or not d.accepted:  # cannot happen while the backstop holds; say so loudly if it does
            self.events.emit(E.ASSOCIATION_ABORTED, "Accepted without a decision: aborting (fail closed).",
                             level="error", **s.who())
            assoc.abort(block=False)
            return
        assert d.settings is not None and d.node is not None
        proposed = {cx.context_id: cx for cx in assoc.requestor.primitive.presentation_context_definition_list}
        for cx in assoc.rejected_contexts:
            asked = proposed.get(cx.context_id)
            abstract = str(asked.abstract_syntax if asked else cx.abstract_syntax)
            tss = [str(t) for t in (asked.transfer_syntax if asked else cx.transfer_syntax)]
            reason, sentence = why_refused(abstract, tss, d.settings, d.node)
            self.events.emit(E.CONTEXT_REJECTED, sentence, level="warning", outcome="rejected", reason=reason,
                             detail={"abstract_syntax": abstract, "transfer_syntaxes": tss,
                                     "context_id": cx.context_id}, **s.who())
        accepted = [f"{uid_name(str(cx.abstract_syntax))} / {uid_name(str(cx.transfer_syntax[0]))}"
                    for cx in assoc.accepted_contexts]
        services = ", ".join(d.node.services) or "none"
        self.events.emit(
            E.ASSOCIATION_ACCEPTED,
            f"Association accepted: {s.calling!r} at {s.peer} (services {services}"
            + (f"; DICOM TLS {s.tls['version']}, {s.tls['cipher']}" if s.tls else "") + "); "
            f"{len(accepted)} of {len(proposed)} presentation context(s) accepted"
            + ("" if accepted else " -- none, so the modality cannot send anything: see the context events"),
            outcome="accepted", reason="accepted", detail={"accepted": accepted, "contexts": context_results(assoc),
                                                           "request": request_detail(assoc, s.connected),
                                                           "tls": s.tls},
            ops=self._status(s, "accepted"), **s.who(),
        )
        if d.settings.fault_delay_ms:
            self.events.emit(E.ASSOCIATION_ACCEPTED, f"Fault injected: every response on this association waits "
                             f"{d.settings.fault_delay_ms} ms (fault_delay_ms).", level="warning",
                             reason="fault-injected", detail={"fault": "delay", "ms": d.settings.fault_delay_ms},
                             **s.who())

    def _on_released(self, event: evt.Event) -> None:
        s = _session(event.assoc)
        s.ended = True
        self.events.emit(E.ASSOCIATION_RELEASED, f"Association released by {s.calling!r} after "
                         f"{time.monotonic() - s.started:.1f} s: {s.stored} instance(s) stored"
                         + (f", {s.failed} failed" if s.failed else "") + ".",
                         outcome="released", detail={"stored": s.stored, "failed": s.failed}, **s.who())

    def _on_aborted(self, event: evt.Event) -> None:
        s = _session(event.assoc)
        code = getattr(event.assoc, "lab_abort_code", "")  # pdu-invalid, instance-too-large, ...: always said
        if s.ended or (not code and (s.decision is None or not s.decision.accepted or s.refusal)):
            return
        s.ended = True
        why = getattr(event.assoc, "lab_abort_reason", "") or "Association aborted"
        extra: dict[str, Any] = {"reason": code} if code else {}
        self.events.emit(E.ASSOCIATION_ABORTED, f"{why}; after {s.stored} stored instance(s): "
                         "every acknowledged instance is on disk; the modality must resend the rest.",
                         level="warning", outcome="aborted", detail={"stored": s.stored}, **extra, **s.who())

    def _on_echo(self, event: evt.Event) -> int:
        s = _session(event.assoc)
        if s.refusal == "dimse-failure":
            self.events.emit(E.ECHO_RECEIVED, f"C-ECHO from refused {s.calling!r} answered 0x0124 Refused: Not "
                             "authorized (refusal_mode dimse-failure).", level="warning", outcome="refused",
                             reason="refusal-mode-dimse-failure", **s.who())
            return STATUS_NOT_AUTHORIZED
        self._fault_delay(s)
        return self._echo(s)

    def _echo(self, s: Session) -> int:
        self.events.emit(E.ECHO_RECEIVED, f"C-ECHO from {s.calling!r} at {s.peer}: answered Success.",
                         outcome="success", **s.who())
        return STATUS_SUCCESS

    def _on_store(self, event: evt.Event) -> int:
        s = _session(event.assoc)
        rq = cast(C_STORE, event.request)
        s.stores += 1
        if s.refusal == "dimse-failure":
            self.events.emit(E.STORE_FAILED, f"C-STORE of {rq.AffectedSOPInstanceUID} from refused {s.calling!r} "
                             "answered 0x0124 Refused: Not authorized (refusal_mode dimse-failure); nothing stored.",
                             level="warning", outcome="refused", reason="refusal-mode-dimse-failure",
                             detail={"status": STATUS_NOT_AUTHORIZED}, **s.who())
            return STATUS_NOT_AUTHORIZED
        fault = self._store_fault(event, s)
        if fault is not None:
            return fault
        ts, sop_class, sop_instance = (str(event.context.transfer_syntax), str(event.context.abstract_syntax),
                                       str(rq.AffectedSOPInstanceUID))
        status = self._store(s, received_dataset(event, self.storage, s.calling), ts, sop_class, sop_instance)
        self._fault_delay(s)
        return status

    @metrics.timed_store
    def _store(self, s: Session, raw: bytes | Spool, transfer_syntax: str, abstract_syntax: str,
               sop_instance: str) -> int:
        """Store one instance durably (``raw``: its bytes, or the Spool they were written to), index it,
        record it; the status to answer."""
        t0 = time.monotonic()
        try:
            result = (raw.commit() if isinstance(raw, Spool)
                      else self.storage.store(raw, transfer_syntax, abstract_syntax, sop_instance, s.calling))
        except Exception as exc:  # never Success for what is not stored
            LOG.exception("C-STORE")
            s.failed += 1
            self.events.emit(E.STORE_FAILED, f"C-STORE of {sop_instance} failed: internal error "
                             f"({type(exc).__name__}: {exc}); answered 0x0110 Processing failure.",
                             level="error", outcome="failed", detail={"status": STATUS_PROCESSING_FAILURE}, **s.who())
            return STATUS_PROCESSING_FAILURE  # Processing failure
        if not result.ok:
            s.failed += 1
            self.events.emit(E.STORE_FAILED, f"C-STORE of {sop_instance} answered "
                             f"0x{result.status:04X}: {result.message}", level="error", outcome="failed",
                             detail={"status": result.status, "sop_instance_uid": sop_instance},
                             **s.who())
            return result.status
        s.stored += 1
        m = result.meta
        ops, moved, moved_from = stored_ops(result, s.indexed_series)
        # the event and the study index in one round trip
        ev = self.events.emit(
            E.STORE_REPLACED if result.replaced else E.STORE_RECEIVED,
            (f"Replaced instance {m['sop_instance_uid']} (same SOP Instance UID received again{moved})"
             if result.replaced else f"Stored instance {m['sop_instance_uid']}")
            + f" of study {m['study_uid']} (patient {m['patient_name'] or '?'}, series {m['series_number'] or '?'}).",
            ops=ops,
            wait=True,  # indexed (or journaled on disk, if Redis is away) before Success goes out
            outcome="stored",
            detail={"sop_instance_uid": m["sop_instance_uid"], "study_uid": m["study_uid"],
                    "series_uid": m["series_uid"], "replaced": result.replaced, "path": m["path"], **moved_from,
                    "store_ms": round((time.monotonic() - t0) * 1000, 2)},  # written + fsync'd, for the ladder
            **s.who(),
        )
        if not ev.id:
            self.events.emit(E.STORE_FAILED, f"Instance {m['sop_instance_uid']} is stored on disk; Redis is "
                             "unreachable, so its index entry waits in the journal and is stored once Redis "
                             "answers again.", level="warning", outcome="stored-unindexed", **s.who())
        return STATUS_SUCCESS

    # -- the data phase on the socket (wire.py), for associations with nothing special ----
    def _wire_runner(self, s: Session) -> Any:
        assert s.decision is not None and s.decision.settings is not None
        settings = s.decision.settings

        def run(dul: Any) -> None:
            assoc = dul.assoc
            self._accepted(assoc)  # the association-accepted event goes first
            sock = dul.socket.socket
            phase = DataPhase(
                assoc, sock,
                echo=lambda a: self._echo(s),
                store=lambda a, raw, ts, sop_class, sop_instance: self._counted_store(s, raw, ts, sop_class,
                                                                                      sop_instance),
                max_pdu_in=self.ae.maximum_pdu_size, idle_timeout=self.ae.network_timeout,
                spool=lambda ts, sop_class, sop_instance: self.storage.spool(ts, sop_class, sop_instance, s.calling),
                spool_threshold=settings.spool_threshold_bytes, max_instance_bytes=settings.max_instance_bytes,
            )
            phase.run()
            dul.socket.socket = None
            dul.socket._is_connected = False
        return run

    def _counted_store(self, s: Session, raw: bytes | Spool, ts: str, sop_class: str, sop_instance: str) -> int:
        s.stores += 1
        return self._store(s, raw, ts, sop_class, sop_instance)

    # -- fault injection (listener settings fault_*, read per association) ------------
    def _faults(self, s: Session) -> ListenerSettings | None:
        return s.decision.settings if s.decision is not None else None

    def _fault_delay(self, s: Session) -> None:
        settings = self._faults(s)
        if settings is not None and settings.fault_delay_ms:
            self._stop.wait(settings.fault_delay_ms / 1000)  # interrupted by shutdown

    def _store_fault(self, event: evt.Event, s: Session) -> int | None:
        """Apply fault_abort_after / fault_status / fault_stall; None: store normally."""
        settings = self._faults(s)
        if settings is None or not settings.faults():
            return None
        uid = cast(C_STORE, event.request).AffectedSOPInstanceUID
        if settings.fault_abort_after and s.stores > settings.fault_abort_after:
            self.events.emit(E.ASSOCIATION_ABORTED, f"Fault injected: A-ABORT on C-STORE #{s.stores} ({uid}, not "
                             f"stored) after {settings.fault_abort_after} instance(s) (fault_abort_after).",
                             level="warning", outcome="aborted", reason="fault-injected",
                             detail={"fault": "abort_after", "stored": s.stored}, **s.who())
            s.refusal = "fault"  # the abort event above says it all
            event.assoc.abort(block=False)  # queued: no response to this C-STORE
            return STATUS_PROCESSING_FAILURE  # never sent: the association is aborted
        if settings.fault_status:
            s.failed += 1
            self.events.emit(E.STORE_FAILED, f"Fault injected: C-STORE of {uid} answered "
                             f"0x{settings.fault_status:04X} and not stored (fault_status).", level="warning",
                             outcome="failed", reason="fault-injected",
                             detail={"fault": "status", "status": settings.fault_status}, **s.who())
            return settings.fault_status
        if settings.fault_stall:
            self.events.emit(E.STORE_FAILED, f"Fault injected: not answering C-STORE of {uid} while fault_stall "
                             "is on (the modality's DIMSE timeout decides).", level="warning", outcome="stalled",
                             reason="fault-injected", detail={"fault": "stall"}, **s.who())
            while not self._stop.wait(self.poll_interval):
                try:
                    if not self.registry.get_listener().fault_stall:
                        break
                except RegistryUnavailable:
                    continue
                if not event.assoc.is_established or event.assoc.acse.is_aborted():  # the reactor is here
                    return STATUS_PROCESSING_FAILURE  # the modality gave up: nothing to answer
            self.events.emit(E.STORE_FAILED, f"fault_stall off: answering C-STORE of {uid} again.",
                             level="info", reason="fault-injected", **s.who())
        return None
