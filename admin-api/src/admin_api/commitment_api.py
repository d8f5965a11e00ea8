"""Storage Commitment in the admin API: the requests the PACS answered and what
became of their reports (``dicomlab.commitments``), and the state per study.

    GET /api/commitments            newest first; ?state=requested|retrying|reported|failed, ?limit=
    GET /api/commitments/<uid>      one request, with the instances that were not committed

A study's latest request rides with the study listing (``StudyOut.commitment``,
filled by ``add_study_states``).
"""

from __future__ import annotations

import re
from typing import Any

from apiflask import Schema, fields, validators

from dicomlab.commitments import STATES, Commitments
from dicomlab.errors import NotFound

from .api import bp, protected
from .resources import resources
from .schemas import UID_PATTERN, Strict


class CommitmentsQuery(Strict):
    limit = fields.Integer(load_default=100, validate=validators.Range(1, 1000, error="limit is a whole number from "
                                                                                      "1 to 1000."))
    state = fields.String(validate=validators.OneOf(STATES, error=f"state is one of {', '.join(STATES)}."),
                          metadata={"description": "only requests in this state"})


class FailureOut(Schema):
    sop_class_uid = fields.String()
    sop_instance_uid = fields.String()
    reason = fields.String(metadata={"description": "Failure Reason, e.g. 0x0112 (no such object instance)"})


class CommitmentOut(Schema):
    transaction_uid = fields.String()
    state = fields.String(metadata={"description": "requested, retrying, reported or failed", "enum": list(STATES)})
    calling_aet = fields.String(metadata={"description": "the node that asked; the report goes to its host:port"})
    peer = fields.String(metadata={"description": "the address the request came from"})
    requested = fields.Integer(metadata={"description": "instances the node asked to commit"})
    committed = fields.Integer(metadata={"description": "instances reported committed (state reported)"})
    failed = fields.Integer(metadata={"description": "instances reported failed (state reported)"})
    studies = fields.List(fields.String())
    attempts = fields.Integer(metadata={"description": "report deliveries tried"})
    max_attempts = fields.Integer()
    created = fields.Float()
    updated = fields.Float()
    next_attempt = fields.Float(allow_none=True, metadata={"description": "epoch seconds (retrying only)"})
    last_error = fields.String(metadata={"description": "why the last delivery failed, in words"})


class CommitmentDetailOut(CommitmentOut):
    failures = fields.List(fields.Nested(FailureOut))


def _store() -> Commitments:
    return Commitments(resources().registry.client)


def add_study_states(studies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each study row gains ``commitment``: its latest request's state and counts, or None."""
    states = _store().study_states([s["study_uid"] for s in studies])
    for row in studies:
        row["commitment"] = states.get(row["study_uid"])
    return studies


@bp.get("/commitments")
@protected(422)
@bp.input(CommitmentsQuery, location="query", arg_name="query")
@bp.output(CommitmentOut(many=True))
@bp.doc(summary="Storage commitment requests, newest first, with the state of their report")
def list_commitments(query: dict[str, Any]):
    rows = _store().listing(query["limit"], query.get("state"))
    for r in rows:
        r.pop("failures", None)
    return rows


@bp.get("/commitments/<uid>")
@protected()
@bp.output(CommitmentDetailOut)
@bp.doc(summary="One storage commitment request (Transaction UID), with the instances not committed")
def get_commitment(uid: str):
    rec = _store().get(uid) if len(uid) <= 64 and re.fullmatch(UID_PATTERN, uid) else None
    if rec is None:
        raise NotFound(f"No storage commitment request with the Transaction UID {uid!r}.")
    rec.pop("refs", None)
    return rec
