"""Study Root Query/Retrieve SCP: C-FIND, C-MOVE and C-GET over what the PACS stored.

C-FIND is pynetdicom's own service (``EVT_C_FIND``, ``on_find``); the matching is
``query.py``. C-MOVE and C-GET are ours (``LabQueryRetrieve``), because the PACS must:

- open the association to a move destination from its *live* AE title to the
  node's registered host:port (``dicomlab.outbound``), and name a failure in words;
- answer a destination that refuses or cannot be reached with the final status and
  the sub-operation counts PS3.4 C.4.2.1.5 asks for (pynetdicom answers 0xA801, which
  means "destination unknown");
- send each stored file as it is stored (its bytes, its transfer syntax: pynetdicom's
  ``send_c_store`` with a path and ``STORE_SEND_CHUNKED_DATASET``), and fail a
  sub-operation whose transfer syntax or SOP class the destination did not accept with
  that reason, instead of re-encoding;
- for C-GET, say when the requestor did not select the SCP role for a SOP class.

Statuses (PS3.4 C.4.2.1.5, C.4.3.1.4): 0xA801 destination unknown (not an enabled
authorized node); 0xA900 identifier does not match SOP class (level missing or PATIENT,
no unique key); 0xA701 more matches than ``qr_max_suboperations``; 0xA702 every
sub-operation failed; 0xB000 some failed or warned; 0xFE00 cancelled; 0x0000 all
completed. Every request ends in one ``move-finished`` / ``get-finished`` event, and
each failure cause is a ``retrieve-failed`` event (at most ``FAILURE_EVENTS`` per request
for failures of single instances; the final event counts the rest).

Overrides of pynetdicom 3.0.4 (guarded by tests/pacs/test_pynetdicom_drift.py):
``QueryRetrieveServiceClass._move_scp`` and ``._get_scp`` (our own implementations,
not copies), installed by replacing ``pynetdicom.association.uid_to_service_class``
with a function that returns ``LabQueryRetrieve`` for the Study Root MOVE and GET
SOP classes and defers to pynetdicom's for every other UID.

DICOM TLS: a move destination whose ``tls`` is ``required`` is called over TLS
(``dicomlab.tlsclient``, the same client context as Storage Commitment reports); a failed
handshake is a ``retrieve-failed`` event with reason ``move-tls-handshake-failed`` and
``detail.cause`` (``dicomlab.tlswords``), and every sub-operation fails.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import pynetdicom.association
from pynetdicom import _config
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode
from pynetdicom.presentation import build_context
from pynetdicom.service_class import QueryRetrieveServiceClass
from pynetdicom.sop_class import uid_to_service_class

from dicomlab import events as E
from dicomlab import outbound
from dicomlab.dicom import STATUS_NOT_AUTHORIZED
from dicomlab.errors import NotFound, RegistryUnavailable

from . import query
from .reconcile import read_stored
from .suboperations import (
    ALL_FAILED,
    CANCELLED,
    DESTINATION_UNKNOWN,
    FAILURE_EVENTS,
    MAX_CONTEXTS,
    PENDING,
    TOO_MANY,
    Item,
    Refused,
    Retrieval,
    Tally,
    final_response,
    no_context,
    read_meta,
)
from .suboperations import hint as hint_for
from .tls import outbound_folder

LOG = logging.getLogger(__name__)

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
QR_SOP_CLASSES = {STUDY_ROOT_FIND: "C-FIND", STUDY_ROOT_MOVE: "C-MOVE", STUDY_ROOT_GET: "C-GET"}

def _service_class(uid: str) -> Any:
    """pynetdicom's ``uid_to_service_class``, with our Q/R service for Study Root MOVE and GET."""
    if uid in (STUDY_ROOT_MOVE, STUDY_ROOT_GET):
        return LabQueryRetrieve
    return uid_to_service_class(uid)


def install() -> None:
    """Route Study Root C-MOVE / C-GET to ``LabQueryRetrieve``; send stored files as stored."""
    pynetdicom.association.uid_to_service_class = _service_class  # type: ignore[attr-defined]
    _config.STORE_SEND_CHUNKED_DATASET = True  # send_c_store(path): the file's bytes, not re-encoded


def proposes_qr(rq: Any) -> bool:
    """Whether an A-ASSOCIATE-RQ proposes a Q/R context (its data phase then needs pynetdicom's loops)."""
    return any(str(cx.abstract_syntax) in QR_SOP_CLASSES for cx in rq.presentation_context_definition_list)


class LabQueryRetrieve(QueryRetrieveServiceClass):
    """pynetdicom's Q/R service class with our C-MOVE and C-GET (see the module text)."""

    def _move_scp(self, req: C_MOVE, context: Any) -> None:
        _pacs_qr(self.assoc).retrieve_or_abort(self, req, context, "C-MOVE")

    def _get_scp(self, req: C_GET, context: Any) -> None:
        _pacs_qr(self.assoc).retrieve_or_abort(self, req, context, "C-GET")


def _pacs_qr(assoc: Any) -> QueryRetrieve:
    """The Q/R of the PACS serving ``assoc`` (listener.py puts the Pacs on its association server)."""
    qr: QueryRetrieve = assoc._server.lab_pacs.qr
    return qr


class QueryRetrieve:
    """The PACS's Q/R: ``on_find`` (EVT_C_FIND) and ``retrieve`` (C-MOVE / C-GET)."""

    def __init__(self, pacs: Any) -> None:
        self.pacs = pacs
        install()

    # -- shared --------------------------------------------------------------------------
    def _index(self) -> query.Index:
        return query.Index(self.pacs.registry.client, self.pacs.storage.root, read_stored)

    @staticmethod
    def _session(assoc: Any) -> Any:
        return assoc.lab_session

    def _emit(self, s: Any, type_: str, message: str, **kw: Any) -> None:
        self.pacs.events.emit(type_, message, **kw, **s.who())

    # -- C-FIND ---------------------------------------------------------------------------
    def on_find(self, event: Any) -> Any:
        s = self._session(event.assoc)
        if s.refusal == "dimse-failure":
            self._emit(s, E.FIND_ANSWERED, f"C-FIND from refused {s.calling!r} answered 0x0124 Refused: Not "
                       "authorized (refusal_mode dimse-failure).", level="warning", outcome="refused",
                       reason="refusal-mode-dimse-failure")
            yield STATUS_NOT_AUTHORIZED, None
            return
        settings = s.decision.settings
        try:
            q = query.parse(event.identifier)
        except query.QueryError as exc:
            self._emit(s, E.FIND_ANSWERED, f"C-FIND from {s.calling!r} answered 0x{exc.status:04X}: {exc.words}.",
                       level="warning", outcome="failed", reason="identifier-invalid", detail={"status": exc.status})
            yield exc.status, None
            return
        except Exception as exc:  # an identifier pydicom cannot decode
            self._emit(s, E.FIND_ANSWERED, f"C-FIND from {s.calling!r} answered 0xC000: the identifier cannot be "
                       f"read ({type(exc).__name__}: {exc}).", level="warning", outcome="failed",
                       reason="identifier-invalid", detail={"status": 0xC000})
            yield query.STATUS_UNABLE, None
            return
        pending = query.STATUS_PENDING_UNSUPPORTED if q.unsupported else query.STATUS_PENDING
        started, count, cut = time.monotonic(), 0, False
        try:
            for record in self._index().search(q):
                if event.is_cancelled:
                    self._find_done(s, q, count, 0xFE00, started, "cancelled by the requestor")
                    yield CANCELLED, None
                    return
                if count >= settings.qr_max_matches:
                    cut = True
                    break
                yield pending, query.answer(q, record, self.pacs.ae_title)
                count += 1
        except RegistryUnavailable as exc:
            self._find_done(s, q, count, 0xA700, started, f"the index (Redis) is unreachable: {exc}")
            yield 0xA700, None
            return
        except Exception as exc:
            LOG.exception("C-FIND")
            self._find_done(s, q, count, 0xC000, started, f"internal error ({type(exc).__name__}: {exc})")
            yield query.STATUS_UNABLE, None
            return
        note = ""
        if cut:
            note = (f"more match than qr_max_matches ({settings.qr_max_matches}): only the first "
                    f"{count} were answered; narrow the query or raise qr_max_matches")
        self._find_done(s, q, count, 0x0000, started, note)

    def _find_done(self, s: Any, q: query.Query, count: int, status: int, started: float, note: str) -> None:
        unsupported = (f" Keys not supported, answered empty (0xFF01): {', '.join(q.unsupported)}."
                       if q.unsupported else "")
        words = f"C-FIND from {s.calling!r} at {s.peer}, {q.level} level ({q.words()}): {count} match(es), " \
                f"final status 0x{status:04X}" + (f" -- {note}" if note else "") + "." + unsupported
        self._emit(s, E.FIND_ANSWERED, words, level="warning" if (note or status) else "info",
                   outcome="success" if status == 0 else "failed",
                   reason="qr-max-matches" if note and status == 0 else "",
                   detail={"level": q.level, "matches": count, "status": status, "unsupported": q.unsupported,
                           "ms": round((time.monotonic() - started) * 1000, 1)})

    # -- C-MOVE and C-GET ---------------------------------------------------------------
    def retrieve_or_abort(self, service: Any, req: Any, context: Any, op: str) -> None:
        """``retrieve``; an exception in it is an internal error: said, then pynetdicom aborts."""
        try:
            self.retrieve(service, req, context, op)
        except Exception as exc:
            LOG.exception(op)
            s = self._session(service.assoc)
            self.pacs.events.emit(E.ASSOCIATION_ABORTED, f"{op} from {s.calling!r} failed with an internal error "
                                  f"({type(exc).__name__}: {exc}); the association is aborted.", level="error",
                                  outcome="aborted", reason=E.REASON_INTERNAL_ERROR, **s.who())
            s.ended = True
            raise

    def retrieve(self, service: Any, req: Any, context: Any, op: str) -> None:
        """Answer one C-MOVE or C-GET: check it, find the instances, send them, say how it ended."""
        r = self._retrieval(service, req, context, op)
        try:
            if r.s.refusal == "dimse-failure":
                raise Refused(STATUS_NOT_AUTHORIZED, "Refused: Not authorized (refusal_mode dimse-failure).",
                              "refusal-mode-dimse-failure")
            q = self._retrieve_query(r)
            node = self._move_destination(r.dest) if op == "C-MOVE" else None
            items = self._instances(q, min(r.s.decision.settings.qr_max_suboperations, 65535))  # counts are US
        except Refused as exc:
            self._refuse(r, exc)
            return
        tally = Tally(len(items))
        started = time.monotonic()
        if items:
            for it in items:
                read_meta(it)
            if node is not None:
                self._move(service, r.s, req, r.rsp, r.cx_id, items, tally, node)
            else:
                self._get(service, r.s, req, r.rsp, r.cx_id, items, tally)
        if not service.assoc.is_established:
            return
        status = final_response(r, tally)
        self._finished(r, q, node, tally, status, time.monotonic() - started)

    def _retrieval(self, service: Any, req: Any, context: Any, op: str) -> Retrieval:
        s = self._session(service.assoc)
        rsp = C_MOVE() if op == "C-MOVE" else C_GET()
        rsp.MessageIDBeingRespondedTo = req.MessageID
        rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
        dest = str(req.MoveDestination or "").strip() if op == "C-MOVE" else s.calling
        what = f"{op} from {s.calling!r} at {s.peer}" + (f" to {dest!r}" if op == "C-MOVE" else "")
        return Retrieval(service, s, req, op, int(context.context_id), context.transfer_syntax[0], rsp, dest, what,
                         E.MOVE_FINISHED if op == "C-MOVE" else E.GET_FINISHED)

    def _refuse(self, r: Retrieval, exc: Refused) -> None:
        """The request answered at once with a failure status (and no sub-operation)."""
        self._emit(r.s, r.done_type, f"{r.what} answered 0x{exc.status:04X}: {exc.words}", level="warning",
                   outcome="refused", reason=exc.reason, detail={"status": exc.status, "destination": r.dest})
        r.rsp.Status = exc.status
        r.service.dimse.send_msg(r.rsp, r.cx_id)

    @staticmethod
    def _retrieve_query(r: Retrieval) -> query.Query:
        """The identifier, which must name what to retrieve by the level's unique key."""
        ts = r.ts
        try:
            identifier = decode(r.req.Identifier, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
            q = query.parse(identifier)
        except query.QueryError as exc:
            raise Refused(exc.status, f"{exc.words}.", "identifier-invalid") from None
        except Exception as exc:
            raise Refused(0xC000, f"the identifier cannot be read ({type(exc).__name__}: {exc}).",
                          "identifier-invalid") from None
        unique = query.UNIQUE[q.level]
        if not any(k.keyword == unique and k.value for k in q.keys):
            raise Refused(query.STATUS_IDENTIFIER_MISMATCH, f"a {q.level}-level retrieve names what to retrieve by "
                          f"{unique}, and the identifier has none.", "identifier-invalid")
        return q

    def _move_destination(self, dest: str) -> Any:
        """The enabled node the C-MOVE names as its destination."""
        try:
            node = self.pacs.registry.get_node(dest)
        except (NotFound, ValueError):
            raise Refused(DESTINATION_UNKNOWN, f"Refused: Move Destination unknown -- no authorized node has the AE "
                          f"title {dest!r}. Fix: add {dest!r} (its host and DICOM port) to the nodes, or move to a "
                          "registered node.", "move-destination-unknown") from None
        except RegistryUnavailable as exc:
            raise Refused(0xA701, f"the registry (Redis) is unreachable, so the destination cannot be looked up "
                          f"({exc}).", "registry-unavailable") from None
        if not node.enabled:
            raise Refused(DESTINATION_UNKNOWN, f"Refused: Move Destination unknown -- the node {dest!r} is disabled. "
                          "Fix: enable it.", "move-destination-unknown")
        return node

    def _instances(self, q: query.Query, limit: int) -> list[Item]:
        """Every stored instance below what ``q`` names, at most ``limit``."""
        items: list[Item] = []
        try:
            for record in self._index().search(replace(q, level="IMAGE"), fields=False):
                items.append(Item(record["sop_instance_uid"], self.pacs.storage.root / record["study_uid"]
                                  / record["series_uid"] / f"{record['sop_instance_uid']}.dcm"))
                if len(items) > limit:
                    raise Refused(TOO_MANY, f"more than qr_max_suboperations ({limit}) instances match "
                                  f"{q.words()}. Fix: retrieve less at a time (a series, not a study), or raise "
                                  "qr_max_suboperations.", "qr-max-suboperations")
        except RegistryUnavailable as exc:
            raise Refused(0xA701, f"the index (Redis) is unreachable ({exc}).", "registry-unavailable") from None
        return items

    def _finished(self, r: Retrieval, q: query.Query, node: Any, tally: Tally, status: int, took: float) -> None:
        """The one ``move-finished`` / ``get-finished`` event of the request."""
        failed = r.rsp.NumberOfFailedSuboperations
        causes = "; ".join(f"{n} x {why}" for why, n in tally.reasons.items())
        where = f" at {node.host}:{node.port}" if node is not None else ""
        self._emit(r.s, r.done_type, f"{r.what}{where}, {q.level} level ({q.words()}): final status 0x{status:04X}: "
                   f"{tally.completed} completed, {failed} failed, {tally.warning} warning of {tally.total} in "
                   f"{took:.1f} s" + (f". Failures: {causes}" if causes else "") + ".",
                   level="info" if status == 0 else "warning",
                   outcome="success" if status == 0 else "failed" if status == ALL_FAILED else "partial",
                   detail={"status": status, "destination": r.dest, "completed": tally.completed, "failed": failed,
                           "warning": tally.warning, "total": tally.total})

    def _move(self, service: Any, s: Any, req: Any, rsp: Any, cx_id: int, items: list[Item], tally: Tally,
              node: Any) -> None:
        pairs: list[tuple[str, str]] = []
        for it in items:
            if not it.problem and (it.sop_class, it.syntax) not in pairs:
                pairs.append((it.sop_class, it.syntax))
        contexts = [build_context(sop_class, [ts]) for sop_class, ts in pairs[:MAX_CONTEXTS]]
        calling = self.pacs.ae_title
        where = f"{node.ae_title} at {node.host}:{node.port}"
        out = outbound.associate(calling, node.ae_title, node.host, node.port, contexts,
                                 timeout=float(self.pacs.ae.acse_timeout), tls=node.tls,
                                 tls_folder=outbound_folder(self.pacs))
        if not out.ok:
            hint = hint_for(out, node, calling)
            detail = {"destination": node.ae_title, "host": node.host, "port": node.port, "kind": out.kind,
                      "tls": node.tls == "required"}
            if out.cause:
                detail["cause"] = out.cause
            self._emit(s, E.RETRIEVE_FAILED, f"C-MOVE to {where} failed: {out.error} -- {hint} "
                       f"All {len(items)} sub-operation(s) failed.", level="error", outcome="failed",
                       reason=f"move-{out.kind}", detail=detail)
            for it in items:
                tally.fail(it.sop, f"association with {where} failed: {out.kind}")
            return
        try:
            self._send_all(service, s, req, rsp, cx_id, items, tally, out.assoc, where, move=True)
        finally:
            if out.assoc.is_established:
                try:
                    out.assoc.release()
                except Exception:  # noqa: BLE001 - the destination went away: nothing left to release
                    out.assoc.abort()
            out.ae.shutdown()

    def _get(self, service: Any, s: Any, req: Any, rsp: Any, cx_id: int, items: list[Item], tally: Tally) -> None:
        self._send_all(service, s, req, rsp, cx_id, items, tally, service.assoc, f"{s.calling} at {s.peer}",
                       move=False)

    def _send_all(self, service: Any, s: Any, req: Any, rsp: Any, cx_id: int, items: list[Item], tally: Tally,
                  store: Any, where: str, move: bool) -> None:
        """The C-STORE sub-operations on ``store`` (the destination's association, or the C-GET's own),
        a Pending response after each."""
        op = "C-MOVE" if move else "C-GET"
        told = 0
        msg_id = int(req.MessageID)
        for it in items:
            if service.is_cancelled(req.MessageID):
                tally.cancelled = True
                return
            if not service.assoc.is_established:
                return
            why = it.problem or no_context(store, it, move)
            if not why and not store.is_established:
                why = f"the association with {where} ended"
            if why:
                tally.fail(it.sop, why.split(":")[0])
                if told < FAILURE_EVENTS:
                    told += 1
                    self._emit(s, E.RETRIEVE_FAILED, f"{op} sub-operation for {it.sop} to {where} failed: {why}",
                               level="warning", outcome="failed", reason="suboperation-failed",
                               detail={"sop_instance_uid": it.sop})
            else:
                msg_id = msg_id + 1 if msg_id < 65535 else 1
                try:
                    answer = store.send_c_store(it.path, msg_id=msg_id,
                                                originator_aet=s.calling if move else None,
                                                originator_id=int(req.MessageID) if move else None)
                    status = int(answer.Status) if "Status" in answer else None
                except Exception as exc:  # the file vanished, the peer went away
                    status, exc_words = None, f"{type(exc).__name__}: {exc}"
                else:
                    exc_words = "no answer (the association ended or the DIMSE timeout passed)"
                if status == 0x0000:
                    tally.completed += 1
                elif status is not None and (status & 0xF000) == 0xB000:
                    tally.warning += 1
                else:
                    words = f"C-STORE answered 0x{status:04X}" if status is not None else exc_words
                    tally.fail(it.sop, f"the destination's C-STORE: {words}" if status is not None else words)
                    if told < FAILURE_EVENTS:
                        told += 1
                        self._emit(s, E.RETRIEVE_FAILED, f"{op} sub-operation for {it.sop} to {where} failed: "
                                   f"{words}.", level="warning", outcome="failed", reason="suboperation-failed",
                                   detail={"sop_instance_uid": it.sop, "status": status})
            if tally.remaining and service.assoc.is_established:
                rsp.Status = PENDING
                rsp.NumberOfRemainingSuboperations = tally.remaining
                rsp.NumberOfCompletedSuboperations = tally.completed
                rsp.NumberOfFailedSuboperations = tally.failed
                rsp.NumberOfWarningSuboperations = tally.warning
                rsp.Identifier = None
                service.dimse.send_msg(rsp, int(cx_id))


