"""Storage Commitment Push Model SCP (1.2.840.10008.1.20.1): the PACS talks back.

A node with the ``STORAGE-COMMITMENT`` service may propose the SOP class
(``contexts.contexts_for``). Its N-ACTION (action type 1, Request Storage
Commitment, on the well-known instance 1.2.840.10008.1.20.1.1) is checked and
answered at once: Success once the request is kept in Redis
(``dicomlab.commitments``), 0x0110 when Redis cannot keep it (the modality asks
again; nothing is promised that a restart could forget).

The report (N-EVENT-REPORT, event type 1 all committed / 2 some failed) goes on
a **new association**, never on the requestor's own: from the PACS's AE title
(the listener settings) to the host and port registered for the node's AE title,
looked up again at every attempt (fixing the node's port on the page makes the
next attempt work). The PACS proposes the context with SCP/SCU role selection,
SCP role only: it is the SCP of the SOP class but the requestor of the
association. The report is built at each attempt from what is durable then: an
instance is committed when its SOP mark (``sopmarks``) points to a file that
exists and whose SOP Class UID (file meta) is the one the modality named;
otherwise it is failed with 0x0112 (no such object instance), 0x0119 (class /
instance conflict) or 0x0110 (processing failure: the file cannot be read).

Delivery: the primary listener process runs one thread that claims due
requests from Redis (a lease, so a crash mid-attempt retries later) and tries
each; a failed attempt is a ``commitment-failed`` event naming host:port and the
cause in ``dicomlab.outbound``'s words, then a wait of ``commitment_interval``
seconds doubled after each failure (at most 10 times the first) until
``commitment_attempts`` are spent. The first attempt waits ``FIRST_DELAY`` s so
the N-ACTION response leaves before the report's association is opened.

DICOM TLS: a node whose ``tls`` is ``required`` gets its report over TLS
(``dicomlab.tlsclient``: the node's certificate checked against the lab CA and its
registered host, the PACS's certificate presented); a failed handshake is a
``commitment-failed`` event with reason ``tls-handshake-failed`` and ``detail.cause``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID
from pynetdicom import build_role, evt
from pynetdicom.presentation import build_context
from pynetdicom.status import STORAGE_COMMITMENT_SERVICE_CLASS_STATUS

from dicomlab import events as E
from dicomlab.commitments import Commitments
from dicomlab.errors import NotFound, RegistryUnavailable
from dicomlab.outbound import association

from .tls import outbound_folder

LOG = logging.getLogger(__name__)

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
FIRST_DELAY = 0.3  # seconds between the N-ACTION answer and the first report attempt
POLL = 0.5  # seconds between two looks at the due requests
REPORT_TIMEOUT = 10.0  # connect, association answer and N-EVENT-REPORT answer, each
MAX_REFS = 10_000  # instances in one request

NO_SUCH_OBJECT = 0x0112
PROCESSING_FAILURE = 0x0110
CLASS_INSTANCE_CONFLICT = 0x0119
REASON_WORDS = {NO_SUCH_OBJECT: "no such object instance", PROCESSING_FAILURE: "processing failure",
                CLASS_INSTANCE_CONFLICT: "class/instance conflict"}
NOT_AUTHORIZED = 0x0124


def proposes_commitment(rq: Any) -> bool:
    """Whether an A-ASSOCIATE-RQ proposes Storage Commitment (its data phase then stays with pynetdicom)."""
    items = getattr(rq, "presentation_context_definition_list", None) or []
    return any(str(cx.abstract_syntax) == STORAGE_COMMITMENT for cx in items)


def status_words(code: int) -> str:
    known = STORAGE_COMMITMENT_SERVICE_CLASS_STATUS.get(code)
    return f"0x{code:04X} {known[1]}" if known else f"0x{code:04X}"


def check_instances(root: Path, marks: Any, refs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]],
                                                                                   list[tuple[str, str, int]]]:
    """(committed, failed with reason): committed only what is durably stored under the class named."""
    committed: list[tuple[str, str]] = []
    failed: list[tuple[str, str, int]] = []
    for sop_class, sop in refs:
        rel = marks.where(sop) if sop and "/" not in sop else None
        if rel is None:
            failed.append((sop_class, sop, NO_SUCH_OBJECT))
            continue
        path = root / rel
        try:
            stored_class = str(read_file_meta_info(path).get("MediaStorageSOPClassUID", ""))
        except FileNotFoundError:
            failed.append((sop_class, sop, NO_SUCH_OBJECT))
            continue
        except Exception:  # noqa: BLE001 - unreadable: a processing failure, never committed
            failed.append((sop_class, sop, PROCESSING_FAILURE))
            continue
        if stored_class != sop_class:
            failed.append((sop_class, sop, CLASS_INSTANCE_CONFLICT))
        else:
            committed.append((sop_class, sop))
    return committed, failed


def report_dataset(transaction_uid: str, committed: list[tuple[str, str]],
                   failed: list[tuple[str, str, int]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    if committed:
        ds.ReferencedSOPSequence = [_ref(c, i) for c, i in committed]
    if failed:
        items = []
        for c, i, reason in failed:
            item = _ref(c, i)
            item.FailureReason = reason
            items.append(item)
        ds.FailedSOPSequence = items
    return ds


def _ref(sop_class: str, sop: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop
    return item


def backoff(interval: int, attempt: int) -> int:
    """Seconds before the attempt after ``attempt`` failed ones: doubled each time, at most 10x the first."""
    return int(min(interval * 2 ** max(0, attempt - 1), interval * 10))


class CommitmentService:
    """The N-ACTION handler (``handlers``) and the report deliverer thread (``start`` / ``stop``)."""

    def __init__(self, pacs: Any) -> None:
        self.pacs = pacs
        self.store = Commitments(pacs.registry.client)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def handlers(self) -> list[tuple[Any, Any]]:
        return [(evt.EVT_N_ACTION, self.on_n_action)]

    # -- the request ------------------------------------------------------------
    def on_n_action(self, event: evt.Event) -> tuple[int, Dataset | None]:
        s = getattr(event.assoc, "lab_session", None)
        d = getattr(s, "decision", None)
        if s is None or d is None or not d.accepted or s.refusal:  # fail closed
            return NOT_AUTHORIZED, None
        req: Any = event.request  # an N-ACTION (EVT_N_ACTION)
        who = s.who()

        def refuse(status: int, why: str) -> tuple[int, None]:
            self.pacs.events.emit(E.COMMITMENT_REQUESTED, f"Storage commitment request from {s.calling!r} at "
                                  f"{s.peer} answered {status_words(status)}: {why}", level="warning",
                                  outcome="refused", reason=E.REASON_COMMITMENT_INVALID,
                                  detail={"status": status}, **who)
            return status, None

        if str(req.RequestedSOPClassUID) != STORAGE_COMMITMENT:
            return refuse(0x0118, "only Storage Commitment Push Model takes an N-ACTION here.")
        if req.ActionTypeID != 1:
            return refuse(0x0123, f"action type {req.ActionTypeID} is not 1 (Request Storage Commitment).")
        if str(req.RequestedSOPInstanceUID) != WELL_KNOWN_INSTANCE:
            return refuse(0x0117, f"the request must name the well-known instance {WELL_KNOWN_INSTANCE}.")
        try:
            ds = event.action_information
            tx = str(ds.get("TransactionUID", "") or "")
            refs = [(str(i.get("ReferencedSOPClassUID", "") or ""), str(i.get("ReferencedSOPInstanceUID", "") or ""))
                    for i in ds.get("ReferencedSOPSequence", None) or []]
        except Exception as exc:  # noqa: BLE001 - a dataset that does not decode
            return refuse(PROCESSING_FAILURE, f"the request's dataset cannot be read ({type(exc).__name__}).")
        if not tx or not UID(tx).is_valid:
            return refuse(0x0120 if not tx else 0x0106, "the Transaction UID is missing or not a valid UID.")
        if not refs:
            return refuse(0x0120, "the Referenced SOP Sequence is missing or empty.")
        if len(refs) > MAX_REFS:
            return refuse(PROCESSING_FAILURE, f"{len(refs)} instances in one request; at most {MAX_REFS}.")
        node = d.node
        marks = self.pacs.storage.sop_marks
        studies = sorted({rel.split("/", 1)[0] for _c, i in refs if i and "/" not in i
                          for rel in [marks.where(i)] if rel})
        try:
            self.store.add(tx, s.calling, s.peer, refs, studies, time.time() + FIRST_DELAY,
                           d.settings.commitment_attempts)
        except RegistryUnavailable as exc:
            self.pacs.events.emit(E.COMMITMENT_REQUESTED, f"Storage commitment request {tx} from {s.calling!r} "
                                  f"answered 0x0110 Processing failure: the request cannot be kept ({exc}); the "
                                  "modality must ask again.", level="error", outcome="refused",
                                  reason="registry-unavailable", **who)
            return PROCESSING_FAILURE, None
        self.pacs.events.emit(
            E.COMMITMENT_REQUESTED,
            f"Storage commitment requested by {s.calling!r} at {s.peer} for {len(refs)} instance(s) "
            f"(transaction {tx}): answered Success; the report goes on a new association to "
            f"{node.ae_title!r} at {node.host}:{node.port}, the address on file for that AE title.",
            outcome="requested", detail={"transaction_uid": tx, "instances": len(refs), "studies": studies,
                                         "report_to": f"{node.host}:{node.port}"}, **who)
        return 0x0000, None

    # -- the report ---------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="commitment-reports", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=REPORT_TIMEOUT * 3 + 5)

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            try:
                while not self._stop.is_set():
                    tx = self.store.claim()
                    if tx is None:
                        break
                    self.deliver(tx)
            except RegistryUnavailable:
                continue  # Redis away: the requests wait there
            except Exception:  # noqa: BLE001 - never let the thread die; the lease retries the request
                LOG.exception("storage commitment delivery")

    def deliver(self, tx: str) -> bool:
        """One attempt for request ``tx``; True when the report was delivered."""
        rec = self.store.get(tx)
        if rec is None:
            return False
        settings = self.pacs.registry.get_listener()
        attempt = int(rec["attempts"]) + 1
        most = max(1, settings.commitment_attempts)
        calling = rec["calling_aet"]
        who = {"calling_aet": settings.ae_title, "called_aet": calling}
        try:
            node = self.pacs.registry.get_node(calling)
        except NotFound:
            msg = (f"could not deliver the storage commitment report {tx} to {calling!r}: that AE title is no "
                   "longer a registered node, so the PACS does not know where to answer. Add the node again "
                   "(with its host, port and STORAGE-COMMITMENT), and let the modality ask again.")
            self.store.finish(tx, "failed", attempt, msg)
            self.pacs.events.emit(E.COMMITMENT_FAILED, msg, level="error", outcome="failed",
                                  reason=E.REASON_NODE_UNKNOWN, detail={"transaction_uid": tx}, **who)
            return False
        committed, failed = check_instances(self.pacs.storage.root, self.pacs.storage.sop_marks,
                                            [(c, i) for c, i in rec["refs"]])
        where = f"{node.host}:{node.port}"
        who["peer"] = where
        sent = self._send(settings.ae_title, node, report_dataset(tx, committed, failed), 2 if failed else 1)
        error, kind = sent.error, sent.kind
        failures = [{"sop_class_uid": c, "sop_instance_uid": i, "reason": f"0x{r:04X}"} for c, i, r in failed]
        detail: dict[str, Any] = {"transaction_uid": tx, "attempt": attempt, "attempts": most,
                                  "committed": len(committed), "failed": len(failed), "tls": sent.tls or "plain"}
        if sent.cause:
            detail["cause"] = sent.cause
        if error is None:
            self.store.finish(tx, "reported", attempt, "", len(committed), failures)
            counts: dict[int, int] = {}
            for _c, _i, r in failed:
                counts[r] = counts.get(r, 0) + 1
            why = "; ".join(f"0x{r:04X} {REASON_WORDS.get(r, '')}: {n}" for r, n in sorted(counts.items()))
            self.pacs.events.emit(
                E.COMMITMENT_REPORTED,
                f"Storage commitment report {tx} delivered to {node.ae_title!r} at {where}"
                + (f" over DICOM TLS ({sent.tls})" if sent.tls else "") + f" (attempt {attempt}): "
                f"{len(committed)} committed, {len(failed)} failed" + (f" ({why})" if why else "") + ".",
                level="warning" if failed else "info", outcome="reported", detail=detail, **who)
            return True
        msg = f"could not deliver the storage commitment report to {node.ae_title} at {where}: {error}."
        if kind not in (E.REASON_TLS_HANDSHAKE_FAILED, E.REASON_TLS_UNAVAILABLE):
            msg += f" Is the node's port right, and does {node.ae_title} listen for reports?"
        if attempt >= most:
            self.store.finish(tx, "failed", attempt, msg)
            msg += (f" Attempt {attempt} of {most}: giving up; {node.ae_title} will not learn that its "
                    "images are safe until it asks again.")
            self.pacs.events.emit(E.COMMITMENT_FAILED, msg, level="error", outcome="failed", reason=kind,
                                  detail=detail, **who)
        else:
            wait = backoff(settings.commitment_interval, attempt)
            self.store.retry(tx, attempt, time.time() + wait, msg)
            msg += f" Attempt {attempt} of {most}; the next in {wait} s."
            self.pacs.events.emit(E.COMMITMENT_FAILED, msg, level="warning", outcome="retrying", reason=kind,
                                  detail={**detail, "next_in_s": wait}, **who)
        return False

    def _send(self, pacs_aet: str, node: Any, ds: Dataset, event_type: int) -> Sent:
        """How the report went: ``error`` None when the node answered it with Success."""
        contexts = [build_context(STORAGE_COMMITMENT)]
        role = build_role(STORAGE_COMMITMENT, scp_role=True)  # we are the SCP; the node stays the SCU
        with association(pacs_aet, node.ae_title, node.host, node.port, contexts, timeout=REPORT_TIMEOUT,
                         ext_neg=[role], tls=node.tls, tls_folder=outbound_folder(self.pacs)) as out:
            if not out.ok:
                return Sent(out.error, out.kind or "failed", out.cause)
            if not any(str(cx.abstract_syntax) == STORAGE_COMMITMENT for cx in out.assoc.accepted_contexts):
                return Sent("the node accepted the association but not the Storage Commitment context (with the "
                            "PACS in the SCP role)", E.REASON_CONTEXT_REFUSED)
            status, _reply = out.assoc.send_n_event_report(ds, event_type, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE)
            code = getattr(status, "Status", None)
            if code is None:
                return Sent(f"no answer to the N-EVENT-REPORT within {REPORT_TIMEOUT:g} s (or the association was "
                            "aborted)", E.REASON_REPORT_UNANSWERED)
            if int(code) != 0x0000:
                return Sent(f"it answered the report with status {status_words(int(code))}, so it did not take it",
                            E.REASON_REPORT_REFUSED)
        return Sent(None, "", tls=out.tls)


@dataclass
class Sent:
    """One report attempt: ``error`` (words) and ``kind`` (the event reason) when it failed, the TLS
    ``cause`` of a failed handshake, ``tls`` the version it went over ("" plain)."""

    error: str | None
    kind: str
    cause: str | None = None
    tls: str = ""
