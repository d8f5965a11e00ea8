"""Conformance statements and the conformance check, generated from the live settings.

``GET /api/conformance``            the PACS's statement (listener settings in Redis, read now)
``GET /api/conformance/simulator``  the CT simulator's statement (its capabilities; no network)
``GET /api/conformance/check``      the two side by side, and what would fail, in words;
                                    ``sop_class`` / ``transfer_syntax`` try another proposal

The routes sit on the API blueprint (token required, like the rest of ``/api``); the
statements themselves are built by ``dicomlab.conformance`` and ``dicomlab.conformance_check``.
"""

from __future__ import annotations

from typing import Any

from apiflask import Schema, fields
from flask import current_app

from dicomlab import keys
from dicomlab.conformance import (
    SIM_DEFAULT_PROPOSAL,
    SIM_DEFAULT_SOP_CLASS,
    SIM_SOP_CLASSES,
    SIM_SYNTAX_ALIASES,
    pacs_statement,
    simulator_statement,
)
from dicomlab.conformance_check import check
from dicomlab.errors import NotFound, ValidationError
from dicomlab.settings import EnvConfig

from .api import bp, protected, scp_out
from .resources import resources
from .schemas import Strict


class StatementOut(Schema):
    kind = fields.String()
    title = fields.String()
    source = fields.String()
    application_entity = fields.Dict()
    sop_classes = fields.List(fields.Dict())
    transfer_syntax_choice = fields.String()
    association_policy = fields.List(fields.Dict())
    refusal_mode = fields.Dict()
    limits = fields.Dict()
    pdu = fields.Dict()
    storage = fields.String()
    tls = fields.Dict()
    faults = fields.Dict()
    verbose = fields.Boolean()
    authorized_nodes = fields.Integer()
    other_settings = fields.Dict()
    settings = fields.Dict()
    on_request = fields.Dict()
    proposal = fields.String()
    encodable = fields.List(fields.Dict())
    proposable_not_encodable = fields.List(fields.Dict())


class CheckOut(Schema):
    ok = fields.Boolean()
    summary = fields.String()
    failures = fields.List(fields.String())
    node = fields.Dict()
    contexts = fields.List(fields.Dict())
    transfer_syntax_options = fields.List(fields.Dict())
    sop_class_options = fields.List(fields.Dict())
    simulator = fields.Dict()
    pacs = fields.Nested(StatementOut)
    simulator_statement = fields.Nested(StatementOut)


class CheckQuery(Strict):
    sop_class = fields.String(metadata={"description": "the SOP class the CT sends: ct, enhanced-ct, mr, sc or a "
                                                       "UID (default: ct)"})
    transfer_syntax = fields.String(metadata={"description": "the proposal, comma-separated, in order: explicit, "
                                                             "implicit, deflated, big-endian, rle, j2k, "
                                                             "jpeg-lossless, jpeg-ls or UIDs (default: explicit,"
                                                             "implicit)"})


def _sim() -> tuple[str, int]:
    env = EnvConfig.from_env()
    return (current_app.config.get("SIM_AE_TITLE") or env.sim_ae_title,
            int(current_app.config.get("SIM_PORT") or env.sim_port))


def _pacs() -> dict[str, Any]:
    reg = resources().registry
    live = scp_out()  # settings, heartbeat, public address (api.py)
    settings = reg.get_listener()
    raw = {k: v for k, v in reg.client.hgetall(keys.SCP).items() if k not in live}  # fields not known here yet
    nodes = [n.to_dict() for n in reg.list_nodes()]
    listener = live["listener"]
    live_port = (listener.get("heartbeat") or {}).get("port")
    return pacs_statement(settings, live_port=int(live_port) if live_port else None, running=listener["running"],
                          public=listener["public"], nodes=nodes, raw=raw)


def _uid_or_name(raw: str, names: dict[str, str], what: str, field: str) -> str:
    key = raw.strip(" ")  # spaces around a comma; a control character is refused
    if key.lower() in names:
        return names[key.lower()]
    from dicomlab.aetitle import check_uid

    try:
        return check_uid(key, field)
    except ValidationError:
        raise ValidationError(f"{raw!r} is neither a {what} name ({', '.join(names)}) nor a UID.", field) from None


@bp.get("/conformance")
@protected()
@bp.output(StatementOut)
@bp.doc(summary="The PACS's conformance statement, generated from the live listener settings")
def pacs_conformance():
    return _pacs()


@bp.get("/conformance/simulator")
@protected()
@bp.output(StatementOut)
@bp.doc(summary="The CT simulator's conformance statement: what it proposes as SCU")
def simulator_conformance():
    return simulator_statement(*_sim())


@bp.get("/conformance/check")
@protected(422)
@bp.input(CheckQuery, location="query", arg_name="query")
@bp.output(CheckOut)
@bp.doc(summary="The simulator's proposal against the PACS's settings: overlap, and what would fail")
def conformance_check(query: dict[str, Any]):
    sop_class = SIM_DEFAULT_SOP_CLASS
    if query.get("sop_class"):
        sop_class = _uid_or_name(query["sop_class"], SIM_SOP_CLASSES, "SOP class", "sop_class")
    proposal: tuple[str, ...] = SIM_DEFAULT_PROPOSAL
    if query.get("transfer_syntax"):
        parts = [p for p in query["transfer_syntax"].split(",") if p.strip(" ")]
        if not parts or len(parts) > 16:
            raise ValidationError("transfer_syntax is 1 to 16 comma-separated names or UIDs.", "transfer_syntax")
        proposal = tuple(dict.fromkeys(_uid_or_name(p, SIM_SYNTAX_ALIASES, "transfer syntax", "transfer_syntax")
                                       for p in parts))
    reg = resources().registry
    sim_aet, sim_port = _sim()
    try:
        node = reg.get_node(sim_aet)
    except NotFound:
        node = None
    out = check(reg.get_listener(), node, sim_aet, sop_class, proposal)
    out["pacs"] = _pacs()
    out["simulator_statement"] = simulator_statement(sim_aet, sim_port)
    return out
