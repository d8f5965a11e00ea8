"""The C-ECHO and C-STORE handlers: the same ones under pynetdicom's loops (``on_echo``,
``on_store``, bound to EVT_C_ECHO / EVT_C_STORE) and under the socket data phase
(wire.py, through ``wire_runner``), so both answer, store and record alike.

A C-STORE is answered Success only once the instance is on disk (storage.py) and its
index entry is in Redis or in the journal (``events.emit(..., wait=True)``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, cast

from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE

from dicomlab import events as E
from dicomlab.dicom import STATUS_PROCESSING_FAILURE, STATUS_SUCCESS

from . import metrics
from .session import Session, session
from .sopmarks import stored_ops
from .spooling import received_dataset
from .storage import Spool
from .wire import DataPhase

if TYPE_CHECKING:
    from .listener import Pacs

LOG = logging.getLogger(__name__)


class EchoStore:
    """The echo and store handlers of one listener process (``Pacs.echostore``)."""

    def __init__(self, pacs: Pacs) -> None:
        self.pacs = pacs

    def on_echo(self, event: evt.Event) -> int:
        s = session(event.assoc)
        refused = self.pacs.faults.refused_echo(s)
        if refused is not None:
            return refused
        self.pacs.faults.delay(s)
        return self.echo(s)

    def echo(self, s: Session) -> int:
        self.pacs.events.emit(E.ECHO_RECEIVED, f"C-ECHO from {s.calling!r} at {s.peer}: answered Success.",
                                   outcome="success", hold=True, **s.who())
        return STATUS_SUCCESS

    def on_store(self, event: evt.Event) -> int:
        s = session(event.assoc)
        rq = cast(C_STORE, event.request)
        s.stores += 1
        faults = self.pacs.faults
        refused = faults.refused_store(s, rq)
        if refused is not None:
            return refused
        fault = faults.store_fault(event, s)
        if fault is not None:
            return fault
        ts, sop_class, sop_instance = (str(event.context.transfer_syntax), str(event.context.abstract_syntax),
                                       str(rq.AffectedSOPInstanceUID))
        status = self.store(s, received_dataset(event, self.pacs.storage, s.calling), ts, sop_class, sop_instance)
        faults.delay(s)
        return status

    @metrics.timed_store
    def store(self, s: Session, raw: bytes | Spool, transfer_syntax: str, abstract_syntax: str,
              sop_instance: str) -> int:
        """Store one instance durably (``raw``: its bytes, or the Spool they were written to), index it,
        record it; the status to answer."""
        t0 = time.monotonic()
        events = self.pacs.events
        try:
            result = (raw.commit() if isinstance(raw, Spool)
                      else self.pacs.storage.store(raw, transfer_syntax, abstract_syntax, sop_instance, s.calling))
        except Exception as exc:  # never Success for what is not stored
            LOG.exception("C-STORE")
            s.failed += 1
            events.emit(E.STORE_FAILED, f"C-STORE of {sop_instance} failed: internal error "
                        f"({type(exc).__name__}: {exc}); answered 0x0110 Processing failure.",
                        level="error", outcome="failed", detail={"status": STATUS_PROCESSING_FAILURE}, **s.who())
            return STATUS_PROCESSING_FAILURE  # Processing failure
        if not result.ok:
            s.failed += 1
            events.emit(E.STORE_FAILED, f"C-STORE of {sop_instance} answered "
                        f"0x{result.status:04X}: {result.message}", level="error", outcome="failed",
                        detail={"status": result.status, "sop_instance_uid": sop_instance},
                        **s.who())
            return result.status
        s.stored += 1
        m = result.meta
        ops, moved, moved_from = stored_ops(result, s.indexed_series)
        # the event and the study index in one round trip
        ev = events.emit(
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
            events.emit(E.STORE_FAILED, f"Instance {m['sop_instance_uid']} is stored on disk; Redis is "
                        "unreachable, so its index entry waits in the journal and is stored once Redis "
                        "answers again.", level="warning", outcome="stored-unindexed", **s.who())
        return STATUS_SUCCESS

    # -- the data phase on the socket (wire.py), for associations with nothing special ----
    def wire_runner(self, s: Session) -> Any:
        """The data phase run by pynetdicom's DUL thread once the association is established."""

        def run(dul: Any) -> None:
            self.pacs.associations.accepted(dul.assoc)  # the association-accepted event goes first
            self.data_phase(dul.assoc, dul.socket.socket, s)
            dul.socket.socket = None
            dul.socket._is_connected = False
        return run

    def data_phase(self, assoc: Any, sock: Any, s: Session) -> None:
        """The data phase on the socket (wire.py), until the association ends; closes the socket."""
        assert s.decision is not None and s.decision.settings is not None
        settings = s.decision.settings
        DataPhase(
            assoc, sock,
            echo=lambda a: self.echo(s),
            store=lambda a, raw, ts, sop_class, sop_instance: self.counted_store(s, raw, ts, sop_class,
                                                                                 sop_instance),
            max_pdu_in=self.pacs.ae.maximum_pdu_size, idle_timeout=self.pacs.ae.network_timeout,
            spool=lambda ts, sop_class, sop_instance: self.pacs.storage.spool(ts, sop_class, sop_instance,
                                                                              s.calling),
            spool_threshold=settings.spool_threshold_bytes, max_instance_bytes=settings.max_instance_bytes,
        ).run()

    def counted_store(self, s: Session, raw: bytes | Spool, ts: str, sop_class: str, sop_instance: str) -> int:
        s.stores += 1
        return self.store(s, raw, ts, sop_class, sop_instance)
