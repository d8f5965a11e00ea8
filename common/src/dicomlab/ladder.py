"""The association ladder: one association as a sequence diagram with two lanes,
the modality and the PACS.

One shape, whoever draws it: the admin API builds it from the PACS's events
(``dicomlab.ladder_events``), ``ct-simulator send --ladder`` from what the
simulator itself saw, and the web page (static/ladder.js, SVG) and the terminal
(``to_text``) render the same JSON:

``{"assoc_id", "view" ("pacs" | "modality"), "modality": {"ae_title", "address"},
"pacs": {...}, "outcome", "started", "duration_ms", "summary", "problem",
"contexts", "steps", "pdus"}``

- ``steps``: arrows in order, each ``{"kind", "sender" ("modality" | "pacs"),
  "label", "at_ms" (from the TCP connect), "lines", "tone" ("", "ok", "warn",
  "bad")}``. C-STORE and C-ECHO request/response pairs are collapsed: one RQ
  arrow and one RSP arrow per run, with the count, the statuses and the times.
- ``contexts``: per proposed presentation context ``{"id", "abstract_syntax",
  "transfer_syntaxes", "result", "transfer_syntax", "why"}``; ``result`` is
  ``accepted``, a PS3.8 rejection in words, or ``""`` (never answered: rejected
  association).
- ``problem``: for a rejection or an abort, ``{"title", "why", "fix"}``,
  shown prominently by both renderers.
- ``pdus``: the PDU-level lines of verbose mode (``{"at_ms", "text"}``).

Every string is passed through ``safe_text`` here (AE titles, UIDs and the
implementation name come from the network); renderers still set text, never markup.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .dicom import RJ_REASON, RJ_RESULT, RJ_SOURCE, SOP_CLASS_NAMES, TRANSFER_SYNTAX_NAMES
from .text import safe_text

MODALITY, PACS = "modality", "pacs"
CONTEXT_RESULTS = {0: "accepted", 1: "user-rejection", 2: "no-reason (provider rejection)",
                   3: "abstract-syntax-not-supported", 4: "transfer-syntaxes-not-supported"}
SHOWN_CONTEXTS = 6  # per arrow; the full list is in "contexts"
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def short_name(uid: str) -> str:
    """A SOP class or transfer syntax by name (the lab's, else pydicom's), anything else as its UID."""
    name = SOP_CLASS_NAMES.get(uid) or TRANSFER_SYNTAX_NAMES.get(uid)
    if name is None and not _UID.fullmatch(uid):
        name = uid
    if name is None:
        try:
            from pydicom.uid import UID

            name = UID(uid).name if UID(uid).is_valid else uid
        except Exception:  # pydicom not installed in this service: the UID alone
            name = uid
    return name


def iso(t: float | None) -> str | None:
    if not t:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def split_fix(message: str) -> tuple[str, str]:
    """("why", "fix") from a sentence of the lab's "... Fix: ..." form."""
    why, sep, fix = message.partition(" Fix: ")
    return why.strip(), fix.strip() if sep else ""


@dataclass
class _Run:
    """Consecutive DIMSE operations of one service, collapsed into an RQ and an RSP arrow."""

    service: str
    first: float
    last: float
    statuses: Counter[str] = field(default_factory=Counter)
    ms: list[float] = field(default_factory=list)
    failed: int = 0
    count: int = 0


class LadderBuilder:
    """Record what happened, in order (times: Unix seconds), then ``build()``."""

    def __init__(self, view: str, assoc_id: str = "") -> None:
        self.view = view
        self.assoc_id = assoc_id
        self.t0: float | None = None
        self.calling = self.called = self.peer = self.pacs_address = ""
        self.steps: list[dict[str, Any]] = []
        self.contexts: list[dict[str, Any]] = []
        self.pdus: list[dict[str, Any]] = []
        self.problem: dict[str, str] | None = None
        self.outcome = "open"
        self.end: float | None = None
        self._run: _Run | None = None
        self._ms_what = "time per request"

    # -- recording ---------------------------------------------------------------------
    def _at(self, t: float | None) -> float | None:
        if t is None:
            return None
        if self.t0 is None:
            self.t0 = t
        return round((t - self.t0) * 1000, 1)

    def _step(self, kind: str, sender: str, label: str, t: float | None, lines: list[str] | None = None,
              tone: str = "") -> dict[str, Any]:
        self._flush()
        step = {"kind": kind, "sender": sender, "label": label, "at_ms": self._at(t),
                "lines": [x for x in (lines or []) if x], "tone": tone}
        self.steps.append(step)
        return step

    def connect(self, t: float | None, calling: str, called: str, peer: str, pacs_address: str = "") -> None:
        self.calling, self.called, self.peer, self.pacs_address = calling, called, peer, pacs_address
        self._step("connect", MODALITY, "TCP connect", t, [f"from {peer}" + (f" to {pacs_address}" if pacs_address
                                                                            else "")])

    def request(self, t: float | None, contexts: list[tuple[int, str, list[str]]], max_pdu: int | None = None,
                implementation: str = "") -> None:
        self.contexts = [{"id": cid, "abstract_syntax": short_name(ab), "abstract_uid": ab,
                          "transfer_syntaxes": [short_name(ts) for ts in tss], "result": "",
                          "transfer_syntax": "", "why": ""} for cid, ab, tss in contexts]
        lines = [f"calling AE {self.calling!r}, called AE {self.called!r}",
                 f"{len(contexts)} presentation context(s) proposed"
                 + (f", max PDU {max_pdu}" if max_pdu is not None else "")]
        lines += [f"[{c['id']}] {c['abstract_syntax']}: {', '.join(c['transfer_syntaxes'])}"
                  for c in self.contexts[:SHOWN_CONTEXTS]]
        if len(self.contexts) > SHOWN_CONTEXTS:
            lines.append(f"... and {len(self.contexts) - SHOWN_CONTEXTS} more (see the table of contexts)")
        if implementation:
            lines.append(f"implementation {implementation}")
        self._step("associate-rq", MODALITY, "A-ASSOCIATE-RQ", t, lines)

    def accept(self, t: float | None, results: list[tuple[int, int, str]], why: dict[int, str] | None = None,
               note: str = "") -> None:
        self.outcome = "accepted"
        by_id = {c["id"]: c for c in self.contexts}
        for cid, result, ts in results:
            c = by_id.get(cid)
            if c is None:
                c = by_id[cid] = {"id": cid, "abstract_syntax": "?", "abstract_uid": "", "transfer_syntaxes": [],
                                  "result": "", "transfer_syntax": "", "why": ""}
                self.contexts.append(c)
            c["result"] = CONTEXT_RESULTS.get(result, f"result {result}")
            c["transfer_syntax"] = short_name(ts) if ts else ""
            c["why"] = (why or {}).get(cid, "")
        accepted = [c for c in self.contexts if c["result"] == "accepted"]
        refused = [c for c in self.contexts if c["result"] != "accepted"]
        lines = [f"{len(accepted)} of {len(self.contexts) or len(results)} presentation context(s) accepted"]
        lines += [f"[{c['id']}] {c['abstract_syntax']}: accepted, {c['transfer_syntax']}"
                  for c in accepted[:SHOWN_CONTEXTS]]
        if len(accepted) > SHOWN_CONTEXTS:
            lines.append(f"... and {len(accepted) - SHOWN_CONTEXTS} more accepted (see the table of contexts)")
        if len(refused) <= 3:
            lines += [f"[{c['id']}] {c['abstract_syntax']}: {c['result'] or '?'}" for c in refused]
        else:
            lines += [f"{n} refused: {why}" for why, n in Counter(c["result"] or "?" for c in refused).most_common()]
        if note:
            lines.append(note)
        self._step("associate-ac", PACS, "A-ASSOCIATE-AC", t, lines, "ok" if accepted else "warn")

    def reject(self, t: float | None, result: int, source: int, reason: int, why: str = "", fix: str = "") -> None:
        self.outcome = "rejected"
        words = (f"{RJ_RESULT.get(result, f'result {result}')} / {RJ_SOURCE.get(source, f'source {source}')} / "
                 f"{RJ_REASON.get((source, reason), f'reason {reason}')}")
        self._step("associate-rj", PACS, f"A-ASSOCIATE-RJ {result}/{source}/{reason}", t,
                   [f"result: {RJ_RESULT.get(result, result)}", f"source: {RJ_SOURCE.get(source, source)}",
                    f"reason: {RJ_REASON.get((source, reason), reason)}"], "bad")
        self.problem = {"title": f"Association rejected: {words} ({result}/{source}/{reason})",
                        "why": why, "fix": fix}
        self.end = t

    def dimse(self, t: float, service: str, status: str, ok: bool, ms: float | None = None) -> None:
        """One answered (or failed) C-STORE / C-ECHO; runs of one service are collapsed."""
        run = self._run
        if run is None or run.service != service:
            self._flush()
            run = self._run = _Run(service, t, t)
        run.last = t
        run.count += 1
        run.statuses[status] += 1
        run.failed += 0 if ok else 1
        if ms is not None:
            run.ms.append(ms)

    def measured(self, what: str) -> None:
        """What the DIMSE times are, in words (e.g. "PACS write + sync per instance")."""
        self._ms_what = what

    def _flush(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        n = f" x {run.count}" if run.count > 1 else ""
        first, last = self._at(run.first), self._at(run.last)
        self.steps.append({"kind": "dimse-rq", "sender": MODALITY, "label": f"{run.service}-RQ{n}",
                           "at_ms": first, "lines": [], "tone": ""})
        lines = [", ".join(f"{c} x {s}" if c > 1 else s for s, c in run.statuses.most_common())]
        if run.count > 1 and first is not None and last is not None:
            lines.append(f"first answered at +{first:.0f} ms, last at +{last:.0f} ms ({last - first:.0f} ms)")
        if run.ms:
            lines.append(f"{self._ms_what}: {sum(run.ms) / len(run.ms):.1f} ms"
                         + (f" on average, max {max(run.ms):.1f} ms" if len(run.ms) > 1 else ""))
        self.steps.append({"kind": "dimse-rsp", "sender": PACS, "label": f"{run.service}-RSP{n}", "at_ms": last,
                           "lines": lines, "tone": "bad" if run.failed == run.count else "warn" if run.failed
                           else "ok", "count": run.count, "failed": run.failed})

    def release(self, t: float | None, lines: list[str] | None = None) -> None:
        self.outcome = "released"
        self._step("release-rq", MODALITY, "A-RELEASE-RQ", t)
        self._step("release-rp", PACS, "A-RELEASE-RP", t, lines)
        self.end = t

    def abort(self, t: float | None, by: str, why: str, fix: str = "", label: str = "A-ABORT") -> None:
        self.outcome = "aborted"
        self._step("abort", by, label, t, [why], "bad")
        if self.problem is None:
            who = "the PACS" if by == PACS else "the modality"
            self.problem = {"title": f"Association aborted by {who}", "why": why, "fix": fix}
        self.end = t

    def closed(self, t: float | None, by: str, why: str, fix: str = "") -> None:
        """The connection went away without A-RELEASE or A-ABORT (refusal mode close, a dropped line)."""
        self.abort(t, by, why, fix, label="connection closed")
        self.outcome = "closed"

    def no_connection(self, t: float | None, why: str, fix: str = "") -> None:
        """The TCP connection itself failed (refused, timed out, unreachable)."""
        self.outcome = "unreachable"
        self._step("connect", MODALITY, "TCP connect failed", t, [why], "bad")
        self.problem = {"title": "No association: the TCP connection failed", "why": why, "fix": fix}
        self.end = t

    def pdu(self, t: float | None, text: str) -> None:
        self.pdus.append({"at_ms": self._at(t), "text": safe_text(text)})

    def note(self, t: float | None, text: str, sender: str = PACS, tone: str = "warn") -> None:
        """A line without a PDU of its own (a fault injected, a refusal mode), drawn on the sender's lane."""
        self._step("note", sender, "", t, [text], tone)

    # -- result ------------------------------------------------------------------------
    def build(self) -> dict[str, Any]:
        self._flush()
        duration = self._at(self.end) if self.end is not None else None
        done: Counter[str] = Counter()
        for s in self.steps:
            if s["kind"] == "dimse-rsp":
                done[s["label"].partition("-RSP")[0]] += s.get("count", 0)
        n_failed = sum(s.get("failed", 0) for s in self.steps if s["kind"] == "dimse-rsp")
        did = " and ".join(f"{n} {service}" for service, n in done.items()) or "no request"
        summary = {
            "released": f"released after {did}" + (f" ({n_failed} failed)" if n_failed else ""),
            "aborted": f"aborted after {did}" + (f" ({n_failed} failed)" if n_failed else ""),
            "rejected": "rejected: nothing was sent",
            "closed": "connection closed without an answer",
            "unreachable": "no TCP connection",
            "accepted": "accepted, still open (or its end is not recorded yet)",
            "open": "requested, no answer recorded",
        }[self.outcome]
        if duration is not None and self.outcome != "unreachable":
            summary += f", {duration / 1000:.3f} s from TCP connect to the end"
        out = {
            "assoc_id": self.assoc_id, "view": self.view,
            "modality": {"ae_title": self.calling, "address": self.peer},
            "pacs": {"ae_title": self.called, "address": self.pacs_address},
            "outcome": self.outcome, "started": iso(self.t0), "duration_ms": duration, "summary": summary,
            "problem": self.problem, "contexts": self.contexts, "steps": self.steps, "pdus": self.pdus,
        }
        safe: dict[str, Any] = _safe(out)
        return safe


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {k: _safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_safe(v) for v in value]
    return value


# -- the terminal -------------------------------------------------------------------------
GAP = 34  # the arrow's width between the two lanes


def _arrow(label: str, right: bool) -> str:
    body = f" {label} " if label else ""
    fill = GAP - len(body) - 1
    if fill < 4:
        body, fill = f" {label[:GAP - 8]}… ", 3
    left = fill // 2
    line = "-" * left + body + "-" * (fill - left)
    return f"|{line}>|" if right else f"|<{line}|"


def _ms(at: float | None) -> str:
    return "" if at is None else f"+{at:.0f} ms"


def to_text(ladder: dict[str, Any], pdus: bool = False) -> str:
    """The ladder for a terminal, 100 columns or so; the problem (if any) first and last."""
    mod, pacs = ladder["modality"], ladder["pacs"]
    name = f"Association {ladder['assoc_id']}" if ladder["assoc_id"] else "Association"
    out = [f"{name} as seen by the {'PACS' if ladder['view'] == PACS else 'modality'}: {ladder['summary']}"]
    left = f"{mod['ae_title'] or '?'} (modality)"
    right = f"{pacs['ae_title'] or '?'} (PACS)"
    out.append(f"{'':10}{left:<{GAP + 1}}{right}")
    pad = " " * 10
    blank = "|" + " " * (GAP + 1) + "|"
    for s in ladder["steps"]:
        at = _ms(s["at_ms"])
        lines = list(s["lines"])
        if s["kind"] == "note":
            out.append(f"{at:>8}  {blank}  {('! ' if s['tone'] else '') + (lines.pop(0) if lines else '')}")
        else:
            mark = "  !!" if s["tone"] == "bad" else ""
            out.append(f"{at:>8}  {_arrow(s['label'], s['sender'] == MODALITY)}{mark}"
                       + (f"  {lines.pop(0)}" if lines else ""))
        out.extend(f"{pad}{blank}    {line}" for line in lines)
    if pdus and ladder.get("pdus"):
        out.append("PDU detail (verbose mode):")
        out.extend(f"{_ms(p['at_ms']):>8}  {p['text']}" for p in ladder["pdus"])
    problem = ladder.get("problem")
    if problem:
        out.append("")
        out.append(f"  >> {problem['title']}")
        if problem.get("why"):
            out.append(f"     why: {problem['why']}")
        if problem.get("fix"):
            out.append(f"     fix: {problem['fix']}")
    return "\n".join(safe_text(line) for line in out)
