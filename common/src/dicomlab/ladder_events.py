"""The association ladder (``dicomlab.ladder``) from the PACS's events.

Every event of an association carries its ``assoc_id``; the association-accepted
and association-rejected events carry what the PACS saw of the request (pacs
``associnfo``: the TCP connect time, the proposed contexts, the result of each).
An id is unique within one PACS process run (``a00012`` or ``a00012.1`` with
several listener processes) and starts again after a restart, so the stream is
read around one event of the association (``at``, a stream id; the newest
association with that id when it is not given): back to the association's first
event, then forward to its end.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import redis

from . import events as E
from . import keys
from .dicom import Rejection
from .errors import RegistryUnavailable
from .events import Event
from .ladder import MODALITY, PACS, LadderBuilder, iso, split_fix

CHUNK = 1000
STARTS = {E.ASSOCIATION_REQUESTED, E.ASSOCIATION_ACCEPTED, E.ASSOCIATION_REJECTED}
# Aborts the PACS itself sends; any other association-aborted event is the modality's A-ABORT or a closed line
PACS_ABORTS = {E.REASON_PDU_INVALID, E.REASON_INSTANCE_TOO_LARGE, E.REASON_DIMSE_INVALID, "fault-injected",
               "refusal-mode-abort", "malformed-request"}


def _time(ev: Event) -> float | None:
    try:
        return datetime.fromisoformat(ev.time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _is_start(ev: Event) -> bool:
    return ev.type in STARTS and ev.reason != "fault-injected"


def _is_end(ev: Event) -> bool:
    return (ev.type in (E.ASSOCIATION_RELEASED, E.ASSOCIATION_ABORTED)
            or (ev.type == E.ASSOCIATION_REJECTED and ev.outcome in ("rejected", "close")))


def find_events(client: "redis.Redis", assoc_id: str, at: str | None = None) -> list[Event]:
    """The events of one association, oldest first ([] when the stream no longer has it)."""
    try:
        return _find(client, assoc_id, at)
    except (redis.RedisError, OSError) as exc:
        raise RegistryUnavailable(f"the registry (Redis) is unreachable: {exc}") from exc


def _find(client: "redis.Redis", assoc_id: str, at: str | None) -> list[Event]:
    back: list[Event] = []
    start_time: float | None = None
    before = ""  # once the start is found: ISO times sort as text; anything older is not this association's
    top = at or "+"
    done = False
    while not done:
        chunk = client.xrevrange(keys.EVENTS, max=top, min="-", count=CHUNK)
        for entry_id, raw in chunk:
            if before and raw.get("time", "") < before:
                done = True  # older than this association's TCP connect (with a margin): stop reading
                break
            if raw.get("assoc_id") != assoc_id:
                continue
            ev = Event.from_stream(entry_id, raw)
            t = _time(ev)
            if start_time is not None and _is_end(ev):
                done = True  # the end of an earlier association of the same id
                break
            back.append(ev)
            if ev.type == E.ASSOCIATION_REQUESTED:
                done = True
                break
            if _is_start(ev) and start_time is None:
                start_time = (ev.detail.get("request") or {}).get("connected") or t or 0.0
                before = iso(start_time - 2.0) or ""
        if len(chunk) < CHUNK or done:
            break
        top = f"({chunk[-1][0]}"
    if not back:
        return []
    events = list(reversed(back))
    if at:
        events += _after(client, assoc_id, at, events)
    return events


def _after(client: "redis.Redis", assoc_id: str, at: str, events: list[Event]) -> list[Event]:
    """The association's events after ``at``: to its end, then the verbose PDU lines that follow
    the end (the A-RELEASE-RP goes out after the association-released event); stops at a later
    run's association of the same id."""
    decided = any(_is_start(e) and e.type != E.ASSOCIATION_REQUESTED for e in events)
    ended = any(_is_end(e) for e in events)
    out: list[Event] = []
    start, read = f"({at}", 0
    while True:
        chunk = client.xrange(keys.EVENTS, min=start, max="+", count=CHUNK)
        read += len(chunk)
        for entry_id, raw in chunk:
            if raw.get("assoc_id") != assoc_id:
                continue
            ev = Event.from_stream(entry_id, raw)
            if ev.type == E.ASSOCIATION_REQUESTED or (_is_start(ev) and decided) or (ended and ev.type != E.PDU):
                return out  # the same id again: a later run's association
            decided = decided or _is_start(ev)
            ended = ended or _is_end(ev)
            out.append(ev)
        if len(chunk) < CHUNK or (ended and read >= CHUNK):
            return out
        start = f"({chunk[-1][0]}"


def _rq_contexts(detail: dict[str, Any]) -> list[tuple[int, str, list[str]]]:
    out = []
    for item in (detail.get("request") or {}).get("contexts") or []:
        try:
            cid, abstract, tss = item
            out.append((int(cid), str(abstract), [str(t) for t in tss]))
        except (TypeError, ValueError):
            continue
    return out


def from_events(events: list[Event], assoc_id: str = "") -> dict[str, Any]:
    """The ladder of one association from its events (oldest first), as the PACS saw it."""
    b = LadderBuilder(PACS, assoc_id or (events[0].assoc_id if events else ""))
    b.measured("PACS write + sync per instance")
    why = {ev.detail["context_id"]: ev.message for ev in events  # emitted before the accepted event
           if ev.type == E.CONTEXT_REJECTED and isinstance(ev.detail.get("context_id"), int)}
    if events:
        first = next((e for e in events if e.detail.get("request")), events[0])
        rq, t = first.detail.get("request") or {}, _time(events[0])
        connected = rq.get("connected") or t
        b.connect(connected, first.calling_aet, first.called_aet, first.peer)
        rq_t = connected + rq.get("request_ms", 0) / 1000 if connected and rq else t
        b.request(rq_t, _rq_contexts(first.detail), rq.get("max_pdu"), rq.get("implementation", ""))
    for ev in events:
        t = _time(ev)
        if ev.type == E.ASSOCIATION_ACCEPTED and ev.reason == "fault-injected":
            b.note(t, ev.message)
        elif ev.type == E.ASSOCIATION_ACCEPTED:
            results = []
            for item in ev.detail.get("contexts") or []:
                try:
                    results.append((int(item[0]), int(item[1]), str(item[2])))
                except (TypeError, ValueError, IndexError):
                    continue
            b.accept(t, results, why)
        elif ev.type == E.ASSOCIATION_REJECTED:
            _rejected(b, ev, t)
        elif ev.type in (E.STORE_RECEIVED, E.STORE_REPLACED):
            b.dimse(t or 0.0, "C-STORE", "Success" + (" (replaced)" if ev.type == E.STORE_REPLACED else ""), True,
                    ev.detail.get("store_ms"))
        elif ev.type == E.STORE_FAILED and ev.outcome in ("failed", "refused"):
            status = ev.detail.get("status")
            b.dimse(t or 0.0, "C-STORE", f"0x{status:04X}" if isinstance(status, int) else "failed", False)
        elif ev.type == E.STORE_FAILED and ev.outcome in ("stalled", "stored-unindexed"):
            b.note(t, ev.message)
        elif ev.type == E.ECHO_RECEIVED:
            ok = ev.outcome != "refused"
            b.dimse(t or 0.0, "C-ECHO", "Success" if ok else "0x0124 Refused: Not authorized", ok)
        elif ev.type == E.ASSOCIATION_RELEASED:
            stored, failed = ev.detail.get("stored"), ev.detail.get("failed")
            b.release(t, [f"{stored} instance(s) stored" + (f", {failed} failed" if failed else "")]
                      if stored is not None else [])
        elif ev.type == E.ASSOCIATION_ABORTED:
            why_text, fix = split_fix(ev.message)
            if ev.reason in PACS_ABORTS:
                b.abort(t, PACS, why_text, fix)
            elif "closed" in ev.message or "ended without" in ev.message:
                b.closed(t, MODALITY, why_text, fix or "the modality must resend what was not acknowledged")
            else:
                b.abort(t, MODALITY, why_text, fix)
        elif ev.type == E.PDU:
            b.pdu(t, ev.message)
    return b.build()


def _rejected(b: LadderBuilder, ev: Event, t: float | None) -> None:
    why, fix = split_fix(ev.message.partition("): ")[2] or ev.message)
    d = ev.detail
    mode = d.get("refusal_mode") or ""
    codes = Rejection(int(d.get("result") or 0), int(d.get("source") or 0), int(d.get("reason") or 0))
    if not mode:
        b.reject(t, *codes, why=why, fix=fix)
        return
    # refusal_mode: the node is refused as another PACS would, not with an A-ASSOCIATE-RJ
    title = f"Refused by {mode} instead of A-ASSOCIATE-RJ {codes.codes} (listener setting refusal_mode)"
    if mode == "close":
        b.closed(t, PACS, why, fix)
    elif mode == "abort":
        b.accept(t, [])
        b.note(t, f"refusal_mode abort: the PACS accepts, then aborts; {why}")
    else:
        b.accept(t, [])
        b.note(t, f"refusal_mode dimse-failure: every request is answered 0x0124 Not authorized; {why}")
    b.problem = {"title": title, "why": why, "fix": fix}
