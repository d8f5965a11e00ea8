"""dicomlab.ladder / ladder_events on event records as the PACS writes them: collapsing, aborts,
refusal modes, and text from the network made safe in the JSON and on the terminal."""

from __future__ import annotations

import json

from dicomlab import events as E
from dicomlab.events import Event
from dicomlab.ladder import to_text
from dicomlab.ladder_events import from_events

WHO = {"assoc_id": "a00007", "calling_aet": "CT01", "called_aet": "PACS", "peer": "10.0.0.5"}
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"


def ev(type_: str, ms: int, message: str = "", **kw) -> Event:
    return Event(type=type_, message=message, time=f"2026-11-30T10:00:00.{ms:03d}Z", **{**WHO, **kw})


def request(contexts=None, impl="1.2.3 PYNETDICOM") -> dict:
    return {"connected": 1796032800.0, "request_ms": 1.0, "max_pdu": 16384, "implementation": impl,
            "contexts": contexts or [[1, CT, [EXPLICIT]], [3, "1.2.840.10008.5.1.4.1.1.4", [EXPLICIT]]]}


def accepted(ms: int = 3, **detail) -> Event:
    return ev(E.ASSOCIATION_ACCEPTED, ms, "Association accepted", outcome="accepted", reason="accepted",
              detail={"contexts": [[1, 0, EXPLICIT], [3, 3, ""]], "request": request(), **detail})


def test_runs_collapse_failures_count_and_a_pacs_abort_is_drawn_from_the_pacs():
    events = [
        accepted(),
        ev(E.CONTEXT_REJECTED, 3, "MR Image Storage refused: this PACS does not accept that SOP class. Fix: add it.",
           detail={"context_id": 3}),
        *[ev(E.STORE_RECEIVED, 10 + i, "Stored", detail={"store_ms": 2.0}) for i in range(3)],
        ev(E.STORE_FAILED, 20, "answered 0xA700", outcome="failed", detail={"status": 0xA700}),
        ev(E.ECHO_RECEIVED, 30, "C-ECHO", outcome="success"),
        ev(E.ASSOCIATION_ABORTED, 40, "Association aborted: 'CT01' sent a PDU over its cap; after 3 stored "
           "instance(s): every acknowledged instance is on disk; the modality must resend the rest.",
           reason=E.REASON_PDU_INVALID, outcome="aborted"),
    ]
    lad = from_events(events)
    assert [(s["kind"], s["label"]) for s in lad["steps"]] == [
        ("connect", "TCP connect"), ("associate-rq", "A-ASSOCIATE-RQ"), ("associate-ac", "A-ASSOCIATE-AC"),
        ("dimse-rq", "C-STORE-RQ x 4"), ("dimse-rsp", "C-STORE-RSP x 4"), ("dimse-rq", "C-ECHO-RQ"),
        ("dimse-rsp", "C-ECHO-RSP"), ("abort", "A-ABORT")]
    store = lad["steps"][4]
    assert store["lines"][0] == "3 x Success, 0xA700" and store["tone"] == "warn" and store["failed"] == 1
    assert lad["steps"][2]["lines"][:3] == ["1 of 2 presentation context(s) accepted",
                                            "[1] CT Image Storage: accepted, Explicit VR Little Endian",
                                            "[3] MR Image Storage: abstract-syntax-not-supported"]
    assert lad["contexts"][1]["why"].startswith("MR Image Storage refused")
    assert lad["steps"][-1]["sender"] == "pacs" and lad["outcome"] == "aborted"
    assert lad["problem"]["title"] == "Association aborted by the PACS"


def test_a_modality_abort_and_a_closed_line_are_drawn_from_the_modality():
    lad = from_events([accepted(), ev(E.ASSOCIATION_ABORTED, 9, "Association aborted by the modality (A-ABORT, "
                                      "source 0, reason 0); after 0 stored instance(s)", outcome="aborted")])
    assert lad["steps"][-1]["sender"] == "modality" and lad["steps"][-1]["label"] == "A-ABORT"
    lad = from_events([accepted(), ev(E.ASSOCIATION_ABORTED, 9, "Association with 'CT01' at 10.0.0.5 ended without "
                                      "A-RELEASE or A-ABORT after 0 stored instance(s)", reason="internal-error")])
    assert lad["steps"][-1]["label"] == "connection closed" and lad["outcome"] == "closed"


def test_refusal_mode_close_shows_the_rejection_it_replaced():
    lad = from_events([ev(E.ASSOCIATION_REJECTED, 2, "Refused by close (refusal_mode: ...) instead of "
                          "A-ASSOCIATE-RJ 1/1/3: Calling AE title 'CT01' is not an authorized node. Fix: add it.",
                          outcome="close", reason="unknown-calling-aet",
                          detail={"refusal_mode": "close", "result": 1, "source": 1, "reason": 3,
                                  "request": request()})])
    assert [s["kind"] for s in lad["steps"]] == ["connect", "associate-rq", "abort"]
    assert lad["steps"][-1]["sender"] == "pacs" and lad["outcome"] == "closed"
    assert lad["problem"]["title"].startswith("Refused by close instead of A-ASSOCIATE-RJ 1/1/3")
    assert lad["problem"]["fix"] == "add it."


def test_text_from_the_network_is_escaped_in_the_json_and_on_the_terminal():
    hostile = "EVIL\x1b[2J\r\nFORGED\u202e"
    events = [accepted(request=request(contexts=[[1, "1.2.3\x1b[31m", [EXPLICIT]]], impl=hostile)),
              ev(E.ASSOCIATION_RELEASED, 9, "released", outcome="released", detail={"stored": 0, "failed": 0})]
    lad = from_events(events)
    raw = json.dumps(lad, ensure_ascii=False)
    for bad in ("\x1b", "\r", "\u202e"):
        assert bad not in raw
    assert "implementation EVIL\\x1b[2J\\r\\nFORGED\\u202e" in lad["steps"][1]["lines"]
    assert lad["contexts"][0]["abstract_uid"] == "1.2.3\\x1b[31m"
    text = to_text(lad)
    assert "\x1b" not in text and "\r" not in text and "\u202e" not in text
    assert "implementation EVIL\\x1b[2J\\r\\nFORGED\\u202e" in text


def test_to_text_puts_a_rejection_and_its_fix_last():
    lad = from_events([ev(E.ASSOCIATION_REJECTED, 2, "Association rejected (1/1/7 rejected-permanent / service-user "
                          "/ called-AE-title-not-recognized): Called AE title 'PAX' is not this PACS ('PACS'). "
                          "Fix: set the PACS AE title on the modality to 'PACS'.", outcome="rejected",
                          detail={"result": 1, "source": 1, "reason": 7, "request": request()})])
    lines = to_text(lad).splitlines()
    assert lines[-3:] == [
        "  >> Association rejected: rejected-permanent / service-user / called-AE-title-not-recognized (1/1/7)",
        "     why: Called AE title 'PAX' is not this PACS ('PACS').",
        "     fix: set the PACS AE title on the modality to 'PACS'."]
    assert any("A-ASSOCIATE-RJ 1/1/7" in line and "!!" in line for line in lines)
