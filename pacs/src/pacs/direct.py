"""The direct accept: an ordinary association accepted and served without pynetdicom's
``Association``, its DUL thread and its state machine (issue #10, the accept rate).

pynetdicom makes, for every association, an ``Association`` with its ACSE, DIMSE and DUL
providers, their queues and timers, a second thread for the DUL, and walks the request
and the acceptance through its state machine and event triggers: about a third of the
CPU an echo association costs the PACS (py-spy). For an association that needs none of
it -- the request is plain and the data phase runs on the socket anyway (wire.py) --
this module does the same work directly, in the connection's own thread:

1. the request: the primitive the gate's check decoded (rqcheck.py; once accepted, kept for
   the next request with the same bytes, and only read here), with pynetdicom's own
   ``ServiceUser`` for the requestor's and the acceptor's parameters;
2. the decision: the same policy call (``AssociationHandlers.decide``);
3. the negotiation: pynetdicom's ``negotiate_as_acceptor`` on the same supported contexts
   (``contexts_for``), and the A-ASSOCIATE-AC that ``ACSE.send_accept`` would send, encoded
   by pynetdicom's ``A_ASSOCIATE_AC`` (tests compare the bytes with the stock path's);
4. the same association-accepted event, then the same data phase (``EchoStore.data_phase``),
   whose release and abort reach the same handlers (``get_handlers``: the server's).

Anything else goes to pynetdicom as before, with the decision already made (its
rejection, refusal mode, verbose mode, fault injection, Storage Commitment, Q/R):

- before the decision, a request that is not plain: another application context, or a
  user information item beyond maximum length and implementation class / version (user
  identity, role selection, extended negotiation, asynchronous operations window);
- after it, an association that is not accepted or not for the socket data phase
  (``AssociationHandlers.on_the_wire``).

On by default with the fast path; ``PACS_DIRECT_ACCEPT=0`` turns it off (every
association through pynetdicom, as before), to compare.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any, TypeGuard

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR, MODE_REQUESTOR
from pynetdicom.association import ServiceUser
from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from dicomlab.events import REASON_INTERNAL_ERROR
from dicomlab.pdu import ABORT_NOT_SPECIFIED, abort_pdu

from . import metrics, rqcheck
from .associations import failed_decision
from .contexts import contexts_for
from .session import Session, session
from .wire import abort_and_close, abort_from_elsewhere, mark_aborted

if TYPE_CHECKING:
    from .listener import Pacs

LOG = logging.getLogger(__name__)

DICOM_APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
PLAIN_ITEMS = (MaximumLengthNotification, ImplementationClassUIDNotification, ImplementationVersionNameNotification)


def plain_request(rq: Any) -> TypeGuard[A_ASSOCIATE]:
    """A request the direct accept can take: the DICOM application context, and no user
    information item but maximum length and the implementation class UID / version name."""
    return (isinstance(rq, A_ASSOCIATE) and str(rq.application_context_name) == DICOM_APPLICATION_CONTEXT
            and all(isinstance(item, PLAIN_ITEMS) for item in rq.user_information))


class DirectAssociation:
    """What the PACS's handlers and the data phase read of an association (pynetdicom's
    ``Association`` names), for one accepted directly."""

    is_acceptor = True
    is_requestor = False
    mode = MODE_ACCEPTOR

    def __init__(self, pacs: Pacs, rq: A_ASSOCIATE, sock: socket.socket, local: Any, remote: Any,
                 handlers: dict[Any, Any], connected: tuple[float, float] | None, key: bytes = b"") -> None:
        self.ae = pacs.ae
        self.rq = rq
        self.rq_key = key  # the request's digest (rqcheck): its primitive is kept once accepted
        self.sock = sock
        self._handlers = handlers  # the server's, bound as pynetdicom binds them (LabRequestHandler)
        self.requestor = ServiceUser(self, MODE_REQUESTOR)  # type: ignore[arg-type]
        self.requestor.address_info = remote
        self.requestor.primitive = rq
        self.requestor.ae_title = rq.calling_ae_title
        self.acceptor = ServiceUser(self, MODE_ACCEPTOR)  # type: ignore[arg-type]
        self.acceptor.address_info = local
        self.acceptor.maximum_length = pacs.ae.maximum_pdu_size
        self.acceptor.implementation_class_uid = pacs.ae.implementation_class_uid
        self.acceptor.implementation_version_name = pacs.ae.implementation_version_name
        self.accepted_contexts: list[PresentationContext] = []
        self.rejected_contexts: list[PresentationContext] = []
        self.is_established = self.is_released = self.is_aborted = self.is_rejected = False
        self.lab_connected = connected
        self.lab_session: Session | None = None

    def get_handlers(self, event: Any) -> Any:
        """pynetdicom's ``Association.get_handlers``, for ``evt.trigger``."""
        return self._handlers.get(event, [])

    def abort_now(self) -> None:
        """A-ABORT (service user) from another thread (shutdown): the data phase's read fails
        and records the abort."""
        abort_from_elsewhere(self.sock)

    # evt.trigger sets ``abort`` to one of these while a notification handler runs
    _abort_nonblocking = _abort_blocking = abort = abort_now


def accept_pdu(assoc: DirectAssociation, rq: A_ASSOCIATE) -> bytes:
    """The A-ASSOCIATE-AC ``ACSE.send_accept`` builds and the DUL encodes (FSM AE-7)."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = DICOM_APPLICATION_CONTEXT
    primitive.calling_ae_title = rq.calling_ae_title
    primitive.called_ae_title = rq.called_ae_title
    primitive.result = 0x00
    primitive.result_source = 0x01
    primitive.presentation_context_definition_results_list = assoc.accepted_contexts + assoc.rejected_contexts
    primitive.user_information = assoc.acceptor.user_information
    assoc.acceptor.primitive = primitive
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(primitive)
    return pdu.encode()


def serve(pacs: Pacs, assoc: DirectAssociation) -> bool:
    """Decide, and if the association is accepted for the socket data phase, accept and
    serve it to its end; True. False: pynetdicom is to take it, decided (``lab_session``)."""
    rq = assoc.rq
    handlers = pacs.associations
    s = session(assoc)
    s.tls = None  # the plain port only
    try:
        d = handlers.decide(s, rq)
    except Exception as exc:  # fail closed: a rejection (sent by pynetdicom, as on_requested does)
        LOG.exception("direct accept: decision")
        s.decision = failed_decision(exc)
        return False
    if not d.accepted or not handlers.on_the_wire(d, rq):
        return False
    assert d.settings is not None and d.node is not None
    try:
        assoc.acceptor.ae_title = d.settings.ae_title
        results, _roles = negotiate_as_acceptor(rq.presentation_context_definition_list,
                                                contexts_for(d.settings, d.node, rq), {})
        assoc.accepted_contexts = sorted((cx for cx in results if cx.result == 0x00),
                                         key=lambda cx: cx.context_id or 0)
        assoc.rejected_contexts = [cx for cx in results if cx.result != 0x00]
        ac = accept_pdu(assoc, rq)
    except Exception as exc:  # no silent end: A-ABORT, and the association-aborted event says why
        LOG.exception("direct accept: negotiation")
        mark_aborted(assoc, f"Association aborted: internal error while negotiating ({type(exc).__name__}: "
                     f"{exc}); the PACS goes on serving. Fix: report this with the modality's log",
                     REASON_INTERNAL_ERROR)
        abort_and_close(assoc.sock, abort_pdu(ABORT_NOT_SPECIFIED))
        assoc.is_aborted = True
        evt.trigger(assoc, evt.EVT_ABORTED, {})  # type: ignore[arg-type]
        return True
    try:
        assoc.sock.sendall(ac)
    except OSError:  # the peer went away: untrack says it ended without release or abort
        return True
    assoc.is_established = True
    rqcheck.remember(assoc.rq_key, rq)  # the next request with these bytes is not decoded again
    metrics.direct_accept()
    handlers.accepted(assoc)
    pacs.echostore.data_phase(assoc, assoc.sock, s)
    return True
