"""The SCU side of pynetdicom: opening an association and saying why it failed.

Three things live here:

- **TCP_NODELAY** on every association socket, set by an ``EVT_CONN_OPEN``
  handler (Nagle's algorithm with delayed ACKs costs ~40 ms per exchange).
- **AE titles sent as given, even when invalid.** pynetdicom validates every
  AE title through its documented hook ``pynetdicom._config.VALIDATORS["AE"]``.
  We install a validator that lets through exactly the titles the simulator
  was told to send on purpose (``permit_ae_title``) and applies pynetdicom's
  own rules to every other title. The A-ASSOCIATE-RQ has a fixed 16-byte
  field, so a longer title goes on the wire cut to 16 characters, as DCMTK's
  storescu does; the cut is reported. Only an empty title and non-ASCII
  characters cannot be sent at all.
- **Diagnosis.** pynetdicom reports a failed association only as flags and
  log lines; we watch the connection (``EVT_CONN_OPEN``), the primitives and
  PDUs received, and what the association's own sockets recorded
  (``dicomlab.outbound.OutboundAE``: the TCP connect's error, a read's error,
  an unknown PDU type; ``dicomlab.tlsclient.OutboundContext``: the TLS
  handshake's) to name the failure as DESIGN.md does: rejected, connection
  refused, timed out, unreachable, aborted, TLS failure. No log text is read,
  and importing this module attaches no log handler.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom._validators import validate_ae
from pynetdicom.association import Association
from pynetdicom.pdu import A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT
from pynetdicom.presentation import PresentationContext

from dicomlab.dicom import Rejection
from dicomlab.outbound import OutboundAE, Recorded, recorded

from . import outcome
from .outcome import Problem
from .tls import TlsSetupError, TlsSpec
from .tlsfail import client_failure, is_tls_error, plain_on_tls_port
from .trace import Trace

LOG = logging.getLogger(__name__)
AE_FIELD = 16  # bytes of the AE title fields in A-ASSOCIATE-RQ/AC (PS3.8 9.3.2)

_permitted: set[str] = set()
_lock = threading.Lock()


def _lab_ae_validator(value: Any) -> tuple[bool, str]:
    if isinstance(value, str) and value in _permitted:
        return True, ""
    return validate_ae(value)


def permit_ae_title(title: str) -> tuple[str, list[str]]:
    """The title as it will go on the wire, and notes on what was bent.

    Raises ValueError for what cannot be encoded at all (empty, non-ASCII).
    """
    notes: list[str] = []
    if not title.strip(" "):
        raise ValueError("an AE title cannot be empty or only spaces: the A-ASSOCIATE-RQ field would be blank")
    if not title.isascii():
        raise ValueError(f"AE title {title!r} has non-ASCII characters, which the 16-byte field cannot carry")
    wire = title
    if len(title) > AE_FIELD:
        wire = title[:AE_FIELD]
        notes.append(f"AE title {title!r} is {len(title)} characters; the A-ASSOCIATE-RQ field holds 16, "
                     f"so it goes on the wire as {wire!r} (cut, as DCMTK's storescu does).")
    ok, why = validate_ae(wire)
    if not ok:
        notes.append(f"AE title {wire!r} is not valid DICOM ({why}); sent as given, on purpose.")
        with _lock:
            _permitted.add(wire)
            if _config.VALIDATORS["AE"] is not _lab_ae_validator:
                _config.VALIDATORS["AE"] = _lab_ae_validator
    return wire, notes


def quiet_pynetdicom(debug: bool = False) -> None:
    """pynetdicom's own log lines off the console unless debugging; ours say it better."""
    lg = logging.getLogger("pynetdicom")
    lg.propagate = debug
    lg.setLevel(logging.DEBUG if debug else logging.ERROR)


def set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN: disable Nagle on the association socket (both roles)."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # a socket closed under us: nothing to tune
            pass


@dataclass
class Link:
    """Where to send and as whom; titles are sent as given (see module doc)."""

    host: str
    port: int
    calling_aet: str = "CT01"
    called_aet: str = "PACS"
    connect_timeout: float = 10.0
    acse_timeout: float = 10.0
    dimse_timeout: float = 60.0
    max_pdu: int = 0  # 0: no limit on what we receive
    tls: TlsSpec | None = None  # DICOM TLS (None: plain TCP)
    # extended negotiation (e.g. SCP/SCU role selection for C-GET) and more handlers bound to the
    # association (e.g. EVT_C_STORE for C-GET's sub-operations): ct_simulator/qr.py
    ext_neg: list[Any] = field(default_factory=list)
    handlers: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ladder: bool = False  # record each association's ladder (send --ladder): ``trace``
    trace: Trace | None = None  # the last association's, set by ``associate``
    tls_session: str = ""  # "TLSv1.3 TLS_AES_256_GCM_SHA384" once a TLS association is open

    @property
    def peer(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass
class _Watch:
    connected: bool = False
    received: list[str] = field(default_factory=list)
    rejection: Rejection | None = None  # from the A-ASSOCIATE-RJ PDU itself


def associate(link: Link, contexts: list[PresentationContext]) -> tuple[Association | None, Problem | None]:
    """An established association, or None and the named reason it failed; with ``link.ladder``,
    ``link.trace`` records it (``trace.Trace``)."""
    trace = link.trace = Trace(link.calling_aet, link.called_aet, link.peer) if link.ladder else None
    assoc, problem = _associate(link, contexts, trace)
    if trace is not None:
        if assoc is not None:
            trace.accepted(assoc)
        else:
            problem = problem or Problem("error", "the association failed")
            d = problem.detail
            rj = Rejection(d["result"], d["source"], d["reason"]) if problem.kind == "rejected" else None
            trace.failed(problem, rj)
    return assoc, problem


def _associate(link: Link, contexts: list[PresentationContext],
               trace: Trace | None) -> tuple[Association | None, Problem | None]:
    try:
        calling, notes = permit_ae_title(link.calling_aet)
        called, notes2 = permit_ae_title(link.called_aet)
    except ValueError as exc:
        return None, Problem("error", f"cannot send: {exc}.")
    link.notes = notes + notes2
    ae = _make_ae(link, calling, contexts)
    tls_args = None
    if link.tls is not None:
        try:
            tls_args = link.tls.tls_args(calling, link.host)
        except TlsSetupError as exc:
            return None, Problem("error", f"cannot set up TLS: {exc}.")
        link.notes += [n for n in link.tls.notes if n not in link.notes]
    watch = _Watch()
    handlers = _watch_handlers(link, trace, watch, calling, called)
    started = time.monotonic()
    try:
        assoc = ae.associate(link.host, link.port, ae_title=called, evt_handlers=handlers + link.handlers,
                             ext_neg=link.ext_neg, tls_args=tls_args)
    except (OSError, ValueError) as exc:
        return None, outcome.unreachable(link.peer, str(exc))
    if assoc.is_established:
        return assoc, None
    seen = recorded(ae)  # what its sockets met (pynetdicom only logs it)
    return None, _why_failed(link, contexts, assoc, watch, seen, time.monotonic() - started, calling, called)


def _make_ae(link: Link, calling: str, contexts: list[PresentationContext]) -> AE:
    ae = OutboundAE(ae_title=calling)  # its sockets record what pynetdicom only logs
    ae.connection_timeout = link.connect_timeout
    ae.acse_timeout = link.acse_timeout
    ae.dimse_timeout = link.dimse_timeout
    ae.network_timeout = max(link.dimse_timeout, 60.0)
    ae.maximum_pdu_size = link.max_pdu
    ae.requested_contexts = contexts
    return ae


def _watch_handlers(link: Link, trace: Trace | None, watch: _Watch, calling: str,
                    called: str) -> list[tuple[Any, Any]]:
    """The association's event handlers that fill ``watch`` (and ``trace``, and ``link.tls_session``)."""

    def on_open(event: evt.Event) -> None:
        watch.connected = True
        set_nodelay(event)
        if trace is not None:
            trace.on_open(calling, called, link.peer)
        sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
        if isinstance(sock, ssl.SSLSocket):
            cipher = sock.cipher()
            link.tls_session = f"{sock.version()} {cipher[0] if cipher else ''}".strip()

    def on_acse(event: evt.Event) -> None:
        watch.received.append(type(event.primitive).__name__)
        if trace is not None and trace.answered is None:
            trace.on_answer()

    def on_pdu_sent(event: evt.Event) -> None:
        if trace is not None and isinstance(event.pdu, A_ASSOCIATE_RQ):
            trace.on_request(event.pdu.to_primitive())

    def on_pdu(event: evt.Event) -> None:
        # the PDU itself: a peer that closes right after its A-ASSOCIATE-RJ (DCMTK does) can make
        # pynetdicom report an abort instead of the rejection
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            p = event.pdu
            watch.rejection = Rejection(int(p.result or 0), int(p.source or 0), int(p.reason_diagnostic or 0))

    handlers: list[tuple[Any, Any]] = [(evt.EVT_CONN_OPEN, on_open), (evt.EVT_ACSE_RECV, on_acse),
                                       (evt.EVT_PDU_RECV, on_pdu)]
    if trace is not None:
        handlers.append((evt.EVT_PDU_SENT, on_pdu_sent))
    return handlers


def _why_failed(link: Link, contexts: list[PresentationContext], assoc: Association, watch: _Watch,
                seen: Recorded, elapsed: float, calling: str, called: str) -> Problem:
    """The named reason an association that was not established failed (DESIGN.md's table)."""
    tls_kind = None if link.tls is None else ("cert" if link.tls.presents_cert else "no-cert")
    if assoc.is_rejected and assoc.acceptor.primitive is not None:
        rsp = assoc.acceptor.primitive
        rj = Rejection(int(rsp.result or 0), int(rsp.result_source or 0), int(rsp.diagnostic or 0))
        return outcome.rejection(rj, calling, called, link.peer, tls_kind)
    if watch.rejection is not None:
        return outcome.rejection(watch.rejection, calling, called, link.peer, tls_kind)
    rsp = assoc.acceptor.primitive
    if rsp is not None and rsp.result == 0 and not assoc.accepted_contexts:
        proposed = {str(cx.abstract_syntax): cx for cx in contexts}
        rejected = []
        for cx in assoc.rejected_contexts:
            asked = proposed.get(str(cx.abstract_syntax), cx)
            rejected.append((str(asked.abstract_syntax), [str(t) for t in asked.transfer_syntax], int(cx.result or 0)))
        return outcome.no_context(link.peer, rejected)
    tls_problem = _tls_problem(link, watch.connected, seen)
    if tls_problem is not None:
        return tls_problem
    if not watch.connected:
        error = seen.connect_error
        if isinstance(error, ConnectionRefusedError):
            return outcome.refused(link.peer)
        if isinstance(error, TimeoutError) or (error is None and elapsed >= link.connect_timeout * 0.9):
            return outcome.connect_timed_out(link.peer, link.connect_timeout)
        return outcome.unreachable(link.peer, str(error) if error is not None else "the connection failed")
    if any(name in (A_ABORT.__name__, A_P_ABORT.__name__) for name in watch.received):
        problem = outcome.aborted(link.peer, "the peer", "during the association request")
        if link.tls is None and watch.rejection is None:
            # a DICOM TLS port closes a plain association at once (behind a port proxy the reset that would
            # name it arrives as a plain close)
            problem.hint += (" A DICOM TLS port closes plain DICOM like this: if this is the PACS's TLS port "
                             "(2762), turn TLS on (--tls) or send to its plain port.")
        return problem
    if not watch.received and elapsed >= link.acse_timeout * 0.9:
        return outcome.answer_timed_out(link.peer, link.acse_timeout)
    return Problem("aborted", f"the association with {link.peer} failed without an answer.",
                   "Read the PACS's log for this association.")


def _tls_problem(link: Link, connected: bool, seen: Recorded) -> Problem | None:
    """A failure that TLS explains: the handshake (or, TLS 1.3, the server's verdict on our certificate,
    read after it), or a plain association that met a TLS port."""
    if link.tls is None:
        if connected:
            words = plain_on_tls_port(link.peer, seen.unknown_pdu, seen.read_error)
            if words is not None:
                return outcome.tls_failed(link.peer, words)
        return None
    met = [e for e in (seen.tls_error, seen.read_error) if e is not None]
    exc = next((e for e in met if is_tls_error(e)), None)
    if exc is None:
        exc = next((e for e in met if isinstance(e, (ConnectionResetError, BrokenPipeError))), None)
    if exc is None and not connected and isinstance(seen.connect_error, (ConnectionResetError, BrokenPipeError)):
        exc = seen.connect_error  # the handshake's plain OSError (the peer closed during it)
    if exc is None:
        return None
    words = client_failure(exc, link.host, link.port, ca_file=link.tls.ca_in_use, mutual=link.tls.presents_cert)
    return outcome.tls_failed(link.peer, words)


def release(assoc: Association) -> None:
    if assoc.is_established:
        assoc.release()
