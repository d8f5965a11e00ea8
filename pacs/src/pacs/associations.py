"""The association handlers: EVT_REQUESTED decides (policy.py), EVT_ACCEPTED,
EVT_RELEASED and EVT_ABORTED record, and verbose mode says every PDU and DIMSE message.

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
string (``Pacs.sentinel_title``, set by transport.py), so if the handler ever
failed before accepting, pynetdicom's own check (``require_called_aet``)
rejects the association.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from pynetdicom import evt
from pynetdicom.pdu_primitives import A_ASSOCIATE

from dicomlab import events as E
from dicomlab.dicom import RJ_REGISTRY_UNAVAILABLE, uid_name

from .associnfo import context_results, request_detail
from .commitment import proposes_commitment
from .contexts import contexts_for, why_refused
from .faults import AUTHORIZATION_REASONS
from .healthcheck import HEALTHCHECK_AET
from .policy import Decision, decide
from .qr import proposes_qr
from .session import Session, session, status_ops
from .tls import transport

if TYPE_CHECKING:
    from .listener import Pacs

LOG = logging.getLogger(__name__)


def failed_decision(exc: Exception) -> Decision:
    """Fail closed: an exception while deciding is a rejection, as transient."""
    return Decision(False, "registry-unavailable", f"Internal error while checking the association "
                    f"({type(exc).__name__}: {exc}); refused as transient.", rejection=RJ_REGISTRY_UNAVAILABLE)


class AssociationHandlers:
    """The association handlers of one listener process (``Pacs.associations``)."""

    def __init__(self, pacs: Pacs) -> None:
        self.pacs = pacs

    def on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        s = session(assoc)
        try:
            rq = assoc.requestor.primitive
            if not isinstance(rq, A_ASSOCIATE):
                assoc.is_aborted = True  # pynetdicom must not negotiate on what is not an A-ASSOCIATE-RQ
                self.pacs.events.emit(E.ASSOCIATION_ABORTED, "Connection closed: the peer did not send a valid "
                                      f"A-ASSOCIATE-RQ ({type(rq).__name__}); is it speaking DICOM?",
                                      level="warning", reason="malformed-request", **s.who())
                return
            if getattr(assoc, "lab_predecided", False):  # decided by the direct accept (direct.py)
                d = s.decision
                assert d is not None
            else:
                s.tls = transport(assoc.dul.socket.socket if assoc.dul.socket is not None else None)
                d = self.decide(s, rq)
            if d.accepted:
                assert d.settings is not None and d.node is not None
                assoc.acceptor.ae_title = d.settings.ae_title
                assoc.acceptor.supported_contexts = contexts_for(d.settings, d.node, rq)
                if d.settings.verbose:
                    try:
                        self.verbose_requested(assoc, rq, s)
                    except Exception:  # verbose output must never change the decision
                        LOG.exception("verbose logging")
                elif self.on_the_wire(d, rq):
                    # the data phase on the socket (wire.py)
                    assoc.dul.wire = self.pacs.echostore.wire_runner(s)  # type: ignore[attr-defined]
                return
            mode = d.settings.refusal_mode if d.settings is not None else "reject"
            if mode != "reject" and d.reason in AUTHORIZATION_REASONS:
                self.pacs.faults.refuse_otherwise(assoc, s, d, mode)
                return
            self.reject(assoc, s, d)
        except Exception as exc:  # fail closed
            LOG.exception("EVT_REQUESTED")
            s.decision = d = failed_decision(exc)
            if not assoc.is_rejected:
                self.reject(assoc, s, d)

    def decide(self, s: Session, rq: A_ASSOCIATE) -> Decision:
        """The policy's decision on the request (policy.py; ``s.tls`` set), kept in the session;
        an accepted association takes its slot (``s.counted``)."""
        s.calling, s.called = str(rq.calling_ae_title).strip(" "), str(rq.called_ae_title).strip(" ")
        d = decide(self.pacs.registry, s.calling, s.called, s.peer, self.pacs.slots, tls=s.tls,
                   tls_port=self.pacs.tls_port)
        s.decision = d
        if d.accepted:
            s.counted = True
        return d

    def on_the_wire(self, d: Decision, rq: A_ASSOCIATE) -> bool:
        """An accepted association whose data phase runs on the socket (wire.py): nothing special
        (no verbose, no fault, no Storage Commitment or Q/R: those run in pynetdicom's loops)."""
        assert d.settings is not None
        return (not d.settings.verbose and not d.settings.faults() and self.pacs.wire
                and not proposes_commitment(rq) and not proposes_qr(rq))

    def reject(self, assoc: Any, s: Session, d: Decision) -> None:
        assert d.rejection is not None
        rj = d.rejection
        quiet = s.calling == HEALTHCHECK_AET and s.peer in ("127.0.0.1", "::1") and not (
            d.settings is not None and d.settings.verbose)
        if quiet:  # the container health check (pacs.healthcheck): refused as anyone, not logged
            assoc.acse.send_reject(rj.result, rj.source, rj.reason)
            assoc.kill()
            return
        self.pacs.events.emit(
            E.ASSOCIATION_REJECTED,
            f"Association rejected ({rj.codes} {rj.words}): {d.message}",
            level="warning", outcome="rejected", reason=d.reason,
            detail={"result": rj.result, "source": rj.source, "reason": rj.reason, **d.detail,
                    "request": request_detail(assoc, s.connected)}, **s.who(),
            ops=status_ops(s, "rejected", d.message),
        )
        assoc.acse.send_reject(rj.result, rj.source, rj.reason)
        assoc.kill()  # returns once the RJ is sent and the DUL is idle: the peer gets it intact

    def verbose_requested(self, assoc: Any, rq: A_ASSOCIATE, s: Session) -> None:
        proposed = [
            f"[{cx.context_id}] {uid_name(str(cx.abstract_syntax))}: "
            + ", ".join(uid_name(str(t)) for t in cx.transfer_syntax)
            for cx in rq.presentation_context_definition_list
        ]
        self.pacs.events.emit(
            E.ASSOCIATION_REQUESTED,
            f"A-ASSOCIATE-RQ from {s.calling!r} at {s.peer} calling {s.called!r}: max PDU "
            f"{assoc.requestor.maximum_length}, implementation {assoc.requestor.implementation_class_uid} "
            f"{assoc.requestor.implementation_version_name or ''}, {len(proposed)} presentation context(s): "
            + "; ".join(proposed),
            level="debug", detail={"proposed": proposed}, **s.who(),
        )
        for event_type in (evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT, evt.EVT_PDU_RECV, evt.EVT_PDU_SENT):
            assoc.bind(event_type, self.verbose_message)

    def verbose_message(self, event: evt.Event) -> None:
        s = session(event.assoc)
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
        self.pacs.events.emit(E.PDU, text, level="debug", **s.who())

    def on_accepted(self, event: evt.Event) -> None:
        if getattr(event.assoc.dul, "wire", None) is None:  # with the data phase on the socket, that
            self.accepted(event.assoc)  # thread records the acceptance first (no hand-off, in order)

    def accepted(self, assoc: Any) -> None:
        s = session(assoc)
        d = s.decision
        if s.refusal:  # a refused node let in (refusal_mode abort / dimse-failure, faults.py)
            self.pacs.faults.accepted_refused(assoc, s)
            return
        if d is None or not d.accepted:  # cannot happen while the backstop holds; say so loudly if it does
            self.pacs.events.emit(E.ASSOCIATION_ABORTED, "Accepted without a decision: aborting (fail closed).",
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
            self.pacs.events.emit(E.CONTEXT_REJECTED, sentence, level="warning", outcome="rejected", reason=reason,
                                  detail={"abstract_syntax": abstract, "transfer_syntaxes": tss,
                                          "context_id": cx.context_id}, hold=True, **s.who())
        accepted = [f"{uid_name(str(cx.abstract_syntax))} / {uid_name(str(cx.transfer_syntax[0]))}"
                    for cx in assoc.accepted_contexts]
        services = ", ".join(d.node.services) or "none"
        self.pacs.events.emit(
            E.ASSOCIATION_ACCEPTED,
            f"Association accepted: {s.calling!r} at {s.peer} (services {services}"
            + (f"; DICOM TLS {s.tls['version']}, {s.tls['cipher']}" if s.tls else "") + "); "
            f"{len(accepted)} of {len(proposed)} presentation context(s) accepted"
            + ("" if accepted else " -- none, so the modality cannot send anything: see the context events"),
            outcome="accepted", reason="accepted", detail={"accepted": accepted, "contexts": context_results(assoc),
                                                           "request": request_detail(assoc, s.connected),
                                                           "tls": s.tls},
            ops=status_ops(s, "accepted"), **s.who(),
            hold=True,  # stored with the association's next event (one round trip), at most 50 ms later
        )
        self.pacs.faults.announce(s, d.settings)

    def on_released(self, event: evt.Event) -> None:
        s = session(event.assoc)
        s.ended = True
        self.pacs.events.emit(E.ASSOCIATION_RELEASED, f"Association released by {s.calling!r} after "
                              f"{time.monotonic() - s.started:.1f} s: {s.stored} instance(s) stored"
                              + (f", {s.failed} failed" if s.failed else "") + ".",
                              outcome="released", detail={"stored": s.stored, "failed": s.failed}, **s.who())

    def on_aborted(self, event: evt.Event) -> None:
        s = session(event.assoc)
        code = getattr(event.assoc, "lab_abort_code", "")  # pdu-invalid, instance-too-large, ...: always said
        if s.ended or (not code and (s.decision is None or not s.decision.accepted or s.refusal)):
            return
        s.ended = True
        why = getattr(event.assoc, "lab_abort_reason", "") or "Association aborted"
        extra: dict[str, Any] = {"reason": code} if code else {}
        self.pacs.events.emit(E.ASSOCIATION_ABORTED, f"{why}; after {s.stored} stored instance(s): "
                              "every acknowledged instance is on disk; the modality must resend the rest.",
                              level="warning", outcome="aborted", detail={"stored": s.stored}, **extra, **s.who())

