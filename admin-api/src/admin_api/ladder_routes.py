"""``GET /api/associations/<assoc_id>``: one association's ladder (sequence diagram) as JSON.

Built by ``dicomlab.ladder_events`` from the PACS's events; the page draws it
as SVG (static/ladder.js), ``ct-simulator send --ladder`` prints the same shape
as text. Registered on the API blueprint by ``admin_api.create_app``.
"""

from __future__ import annotations

import re
from typing import Any

from apiflask import Schema, fields, validators

from dicomlab.errors import NotFound
from dicomlab.ladder_events import find_events, from_events

from .api import bp, protected
from .resources import resources
from .schemas import STREAM_ID_PATTERN, Strict

ASSOC_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$"


class LadderQuery(Strict):
    at = fields.String(
        validate=validators.Regexp(STREAM_ID_PATTERN, error="at is an event id such as 1712345678901-0."),
        metadata={"description": "the id of one event of the association (the log's line); without it, the "
                                 "newest association with this id (ids restart when the PACS restarts)",
                  "pattern": STREAM_ID_PATTERN})


class LaneOut(Schema):
    ae_title = fields.String()
    address = fields.String()


class StepOut(Schema):
    kind = fields.String(metadata={"description": "connect, associate-rq, associate-ac, associate-rj, dimse-rq, "
                                                  "dimse-rsp, release-rq, release-rp, abort, note"})
    sender = fields.String(metadata={"description": "the lane the arrow starts from: modality or pacs"})
    label = fields.String(metadata={"example": "C-STORE-RSP x 50"})
    at_ms = fields.Float(allow_none=True, metadata={"description": "milliseconds after the TCP connect"})
    lines = fields.List(fields.String())
    tone = fields.String(metadata={"description": "'', ok, warn or bad"})
    count = fields.Integer(metadata={"description": "DIMSE responses collapsed into this arrow"})
    failed = fields.Integer()


class ContextOut(Schema):
    id = fields.Integer()
    abstract_syntax = fields.String()
    abstract_uid = fields.String()
    transfer_syntaxes = fields.List(fields.String(), metadata={"description": "proposed"})
    result = fields.String(metadata={"description": "accepted, a rejection in words, or '' when never answered"})
    transfer_syntax = fields.String(metadata={"description": "accepted"})
    why = fields.String()


class ProblemOut(Schema):
    title = fields.String()
    why = fields.String()
    fix = fields.String()


class PduOut(Schema):
    at_ms = fields.Float(allow_none=True)
    text = fields.String()


class LadderOut(Schema):
    assoc_id = fields.String()
    view = fields.String(metadata={"description": "pacs: built from the PACS's events"})
    modality = fields.Nested(LaneOut)
    pacs = fields.Nested(LaneOut)
    outcome = fields.String(metadata={"description": "released, aborted, rejected, closed, accepted (open) or open"})
    started = fields.String(allow_none=True)
    duration_ms = fields.Float(allow_none=True)
    summary = fields.String()
    problem = fields.Nested(ProblemOut, allow_none=True)
    contexts = fields.List(fields.Nested(ContextOut))
    steps = fields.List(fields.Nested(StepOut))
    pdus = fields.List(fields.Nested(PduOut), metadata={"description": "PDU detail (verbose mode only)"})


@bp.get("/associations/<assoc_id>")
@protected(404, 422)
@bp.input(LadderQuery, location="query", arg_name="query")
@bp.output(LadderOut)
def get_ladder(assoc_id: str, query: dict[str, Any]):
    """One association as a ladder (sequence diagram)

    The modality and the PACS as two lanes: TCP connect, the A-ASSOCIATE-RQ with its AE titles and
    proposed presentation contexts, the A-ASSOCIATE-AC (a result per context) or -RJ (result, source
    and reason in words, the fix), the C-STORE / C-ECHO request/response pairs collapsed with counts
    and times, the release or abort; verbose mode adds the PDU detail. Built from the PACS's events.
    """
    if not re.fullmatch(ASSOC_ID_PATTERN, assoc_id):
        raise NotFound(f"No association {assoc_id!r}: association ids look like a00012 or a00012.1.")
    events = find_events(resources().registry.client, assoc_id, query.get("at"))
    if not events:
        raise NotFound(f"No association {assoc_id!r} in the recent events (the event stream keeps the last "
                       "events only; an id restarts when the PACS restarts).")
    return from_events(events, assoc_id)
