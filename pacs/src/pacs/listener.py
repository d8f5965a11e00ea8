"""The listener life cycle: the ``Pacs`` of one listener process.

It opens the port (``start``, ``make_server``: a transport.py server served by the
gate), follows the listener settings in Redis (the settings watcher: port, AE title,
verbose, the TLS port), beats the heartbeat, tracks every open association (slot
count, load shared with the other listener processes) and stops cleanly
(``shutdown``: open associations get a grace period, then an A-ABORT).

What happens on an association lives beside it: associations.py (the decision and
the association events), echostore.py (C-ECHO, C-STORE), faults.py (refusal modes,
fault injection), qr.py (Q/R) and commitment.py (Storage Commitment); each is a part
of the Pacs (``pacs.associations`` ...) bound to pynetdicom's events in ``handlers``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicomlab import events as E
from dicomlab.errors import RegistryUnavailable
from dicomlab.events import EventLog
from dicomlab.registry import Registry
from dicomlab.settings import ListenerSettings

from . import metrics
from .associations import AssociationHandlers
from .commitment import CommitmentService
from .counters import Counts, SharedCounts
from .echostore import EchoStore
from .faults import Faults
from .gate import Gate
from .policy import AssociationSlots
from .qr import QueryRetrieve
from .session import number_for_worker, session
from .spooling import discard_partial, receive_chunked
from .storage import Storage
from .tlslistener import TlsListener
from .transport import LabRequestHandler, LabServer, SharedPortServer, _inherited_server_class
from .wire import abort_from_elsewhere

LOG = logging.getLogger(__name__)


def make_ae(ae_title: str) -> AE:
    """The pynetdicom AE every association server of the process is made from (``make_server``)."""
    # pynetdicom's "standard" log handlers format every PDU and DIMSE message for its
    # logger even when nothing is logged; our events say what matters, once.
    _config.LOG_HANDLER_LEVEL = "none"
    ae = AE(ae_title=ae_title)
    ae.require_called_aet = True  # with the sentinel title: the fail-closed backstop
    ae.require_calling_aet = []
    ae.maximum_associations = 100_000  # the policy counts (row 5), not pynetdicom
    ae.maximum_pdu_size = 131_072
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.network_timeout = 120
    ae.add_supported_context(Verification)  # replaced per association by contexts_for()
    return ae


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
        direct: bool = True,
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
        # fastpath False (PACS_FASTPATH=0): pynetdicom's stock Association and DUL loops throughout
        self.fastpath = fastpath
        self.wire = wire and fastpath  # serve plain data phases on the socket (wire.py)
        self.direct = direct and self.wire  # accept plain associations without pynetdicom's (direct.py)
        self._share_port(worker, shared_ports, inherited_socket, shared_load)
        self._start_state(seed)
        self.gate = Gate(self, pending if pending is not None else SharedCounts(1).row(0))
        self.on_registry_back: Any = None  # called with why, when Redis comes back or comes back empty
        self.tls = TlsListener(self, tls_folder)  # the DICOM TLS port beside the plain one
        self.ae = make_ae(seed.ae_title)
        receive_chunked()  # pynetdicom's loops write each dataset to a temporary file as it arrives
        self._make_parts()

    def _share_port(self, worker: int | None, shared_ports: Any, inherited_socket: socket.socket | None,
                    shared_load: Any) -> None:
        """How this process shares the port with the other listener processes (all None: alone)."""
        self.shared_ports = shared_ports  # each listener process's current port
        # the listening socket the supervisor opened before forking, shared by every listener process
        self.inherited_socket = inherited_socket
        self.shared_load = shared_load  # each listener process's open connections
        self.worker = worker
        self.primary = not worker  # None or 0
        number_for_worker(worker)

    def _start_state(self, seed: ListenerSettings) -> None:
        """Not listening yet; nothing open; the settings in force are the seeds."""
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

    def _make_parts(self) -> None:
        """The parts that serve associations, and the pynetdicom events bound to them (``handlers``)."""
        self.qr = QueryRetrieve(self)  # Study Root C-FIND / C-MOVE / C-GET (qr.py)
        self.faults = Faults(self)  # refusal modes, fault injection (faults.py)
        self.associations = AssociationHandlers(self)  # requested, accepted, released, aborted (associations.py)
        self.echostore = EchoStore(self)  # C-ECHO, C-STORE (echostore.py)
        self.handlers: list[Any] = [
            (evt.EVT_C_FIND, self.qr.on_find),
            (evt.EVT_REQUESTED, self.associations.on_requested),
            (evt.EVT_ACCEPTED, self.associations.on_accepted),
            (evt.EVT_RELEASED, self.associations.on_released),
            (evt.EVT_ABORTED, self.associations.on_aborted),
            (evt.EVT_C_ECHO, self.echostore.on_echo),
            (evt.EVT_C_STORE, self.echostore.on_store),
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
        if hasattr(assoc, "abort_now"):  # a DirectAssociation (direct.py)
            assoc.abort_now()
            return
        dul = assoc.dul
        if getattr(dul, "wire", None) is not None and dul.is_alive():
            sock = dul.socket.socket if dul.socket is not None else None
            if sock is not None:
                abort_from_elsewhere(sock)
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
            return [a for a in self._active if (d := session(a).decision) is not None and d.accepted]

        with self._active_cv:
            while open_associations() and time.monotonic() < deadline:
                self._active_cv.wait(timeout=deadline - time.monotonic())
            left = open_associations()
        for assoc in left:
            s = session(assoc)
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
