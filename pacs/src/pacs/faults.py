"""Refusal modes and fault injection: the listener settings that make the PACS behave
like a worse one, on purpose.

Refusal modes (``refusal_mode``): a node the policy refuses as not authorized (rows 2-4
of DESIGN.md's table) is turned away as another PACS would: ``reject`` (A-ASSOCIATE-RJ,
the default, done by associations.py), ``close`` (no answer, the connection goes away),
``abort`` (accepted, then A-ABORT at once) or ``dimse-failure`` (accepted, every request
answered 0x0124 Refused: Not authorized).

Faults (``fault_*``, read per association from the settings the association was
decided with): ``fault_delay_ms`` before every response, ``fault_abort_after`` C-STOREs,
``fault_status`` for every C-STORE, ``fault_stall`` (no answer while it is on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE

from dicomlab import events as E
from dicomlab.dicom import STATUS_NOT_AUTHORIZED, STATUS_PROCESSING_FAILURE
from dicomlab.errors import RegistryUnavailable
from dicomlab.settings import REFUSAL_MODES, SERVICES, ListenerSettings

from .associnfo import request_detail
from .contexts import contexts_for_services
from .policy import Decision
from .session import Session, status_ops

if TYPE_CHECKING:
    from .listener import Pacs

# Policy rows 2-4: the node is not authorized (as opposed to rows 1 and 5, which are
# transient); only these follow the listener's refusal_mode.
AUTHORIZATION_REASONS = {"called-aet-mismatch", "unknown-calling-aet", "host-mismatch"}


class Faults:
    """The refusal modes and faults of one listener process (``Pacs.faults``)."""

    def __init__(self, pacs: Pacs) -> None:
        self.pacs = pacs

    # -- refusal modes -----------------------------------------------------------------
    def refuse_otherwise(self, assoc: Any, s: Session, d: Decision, mode: str) -> None:
        """Turn a refused node away as another PACS would (listener setting ``refusal_mode``)."""
        assert d.settings is not None and d.rejection is not None
        self.pacs.events.emit(
            E.ASSOCIATION_REJECTED,
            f"Refused by {mode} (refusal_mode: {REFUSAL_MODES[mode]}) instead of A-ASSOCIATE-RJ "
            f"{d.rejection.codes}: {d.message}",
            level="warning", outcome=mode, reason=d.reason,
            detail={"refusal_mode": mode, "result": d.rejection.result, "source": d.rejection.source,
                    "reason": d.rejection.reason, **d.detail, "request": request_detail(assoc, s.connected)},
            ops=status_ops(s, "rejected", d.message), **s.who(),
        )
        if mode == "close":
            assoc.is_aborted = True  # no negotiation: the connection just goes away
            assoc.dul.socket.close()
            assoc.kill()
            return
        s.refusal = mode  # "abort" or "dimse-failure": accept, then turn away
        assoc.acceptor.ae_title = s.called or d.settings.ae_title
        assoc.acceptor.supported_contexts = contexts_for_services(d.settings, list(SERVICES))

    def accepted_refused(self, assoc: Any, s: Session) -> None:
        """A refused node's association was accepted (``s.refusal`` set): ``abort`` aborts it now."""
        if s.refusal == "abort":
            self.pacs.events.emit(E.ASSOCIATION_ABORTED, "Accepted, then aborted at once (refusal_mode abort): "
                                  "the modality sees its association aborted, not rejected.", level="warning",
                                  outcome="aborted", reason="refusal-mode-abort", **s.who())
            assoc.abort(block=False)  # inside a handler: queue it, the reactor ends

    def refused_echo(self, s: Session) -> int | None:
        """The status for a refused node's C-ECHO (refusal_mode dimse-failure); None: answer it."""
        if s.refusal != "dimse-failure":
            return None
        self.pacs.events.emit(E.ECHO_RECEIVED, f"C-ECHO from refused {s.calling!r} answered 0x0124 Refused: Not "
                              "authorized (refusal_mode dimse-failure).", level="warning", outcome="refused",
                              reason="refusal-mode-dimse-failure", **s.who())
        return STATUS_NOT_AUTHORIZED

    def refused_store(self, s: Session, rq: C_STORE) -> int | None:
        """The status for a refused node's C-STORE (refusal_mode dimse-failure); None: store it."""
        if s.refusal != "dimse-failure":
            return None
        self.pacs.events.emit(E.STORE_FAILED, f"C-STORE of {rq.AffectedSOPInstanceUID} from refused "
                              f"{s.calling!r} answered 0x0124 Refused: Not authorized (refusal_mode "
                              "dimse-failure); nothing stored.", level="warning", outcome="refused",
                              reason="refusal-mode-dimse-failure", detail={"status": STATUS_NOT_AUTHORIZED},
                              **s.who())
        return STATUS_NOT_AUTHORIZED

    # -- fault injection (listener settings fault_*, read per association) ------------
    def announce(self, s: Session, settings: ListenerSettings) -> None:
        """Said once an association is accepted with a delay in force."""
        if settings.fault_delay_ms:
            self.pacs.events.emit(E.ASSOCIATION_ACCEPTED, f"Fault injected: every response on this association "
                                  f"waits {settings.fault_delay_ms} ms (fault_delay_ms).", level="warning",
                                  reason="fault-injected", detail={"fault": "delay", "ms": settings.fault_delay_ms},
                                  **s.who())

    @staticmethod
    def settings(s: Session) -> ListenerSettings | None:
        return s.decision.settings if s.decision is not None else None

    def delay(self, s: Session) -> None:
        settings = self.settings(s)
        if settings is not None and settings.fault_delay_ms:
            self.pacs._stop.wait(settings.fault_delay_ms / 1000)  # interrupted by shutdown

    def store_fault(self, event: evt.Event, s: Session) -> int | None:
        """Apply fault_abort_after / fault_status / fault_stall; None: store normally."""
        settings = self.settings(s)
        if settings is None or not settings.faults():
            return None
        events = self.pacs.events
        uid = cast(C_STORE, event.request).AffectedSOPInstanceUID
        if settings.fault_abort_after and s.stores > settings.fault_abort_after:
            events.emit(E.ASSOCIATION_ABORTED, f"Fault injected: A-ABORT on C-STORE #{s.stores} ({uid}, not "
                        f"stored) after {settings.fault_abort_after} instance(s) (fault_abort_after).",
                        level="warning", outcome="aborted", reason="fault-injected",
                        detail={"fault": "abort_after", "stored": s.stored}, **s.who())
            s.refusal = "fault"  # the abort event above says it all
            event.assoc.abort(block=False)  # queued: no response to this C-STORE
            return STATUS_PROCESSING_FAILURE  # never sent: the association is aborted
        if settings.fault_status:
            s.failed += 1
            events.emit(E.STORE_FAILED, f"Fault injected: C-STORE of {uid} answered "
                        f"0x{settings.fault_status:04X} and not stored (fault_status).", level="warning",
                        outcome="failed", reason="fault-injected",
                        detail={"fault": "status", "status": settings.fault_status}, **s.who())
            return settings.fault_status
        if settings.fault_stall:
            return self._stall(event, s, uid)
        return None

    def _stall(self, event: evt.Event, s: Session, uid: Any) -> int | None:
        """fault_stall: hold the C-STORE unanswered until the setting is off (None: store it now) or
        the modality gives up (a status never sent)."""
        pacs = self.pacs
        pacs.events.emit(E.STORE_FAILED, f"Fault injected: not answering C-STORE of {uid} while fault_stall "
                         "is on (the modality's DIMSE timeout decides).", level="warning", outcome="stalled",
                         reason="fault-injected", detail={"fault": "stall"}, **s.who())
        while not pacs._stop.wait(pacs.poll_interval):
            try:
                if not pacs.registry.get_listener().fault_stall:
                    break
            except RegistryUnavailable:
                continue
            if not event.assoc.is_established or event.assoc.acse.is_aborted():  # the reactor is here
                return STATUS_PROCESSING_FAILURE  # the modality gave up: nothing to answer
        pacs.events.emit(E.STORE_FAILED, f"fault_stall off: answering C-STORE of {uid} again.",
                         level="info", reason="fault-injected", **s.who())
        return None
