"""Request and response schemas, declared once: they validate, serialize and
write the OpenAPI document. The only hand-written rules are the shared
AE-title / host / port rules of ``dicomlab.aetitle``, plugged in as validators.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from apiflask import Schema, fields, validators
from marshmallow import RAISE
from marshmallow import ValidationError as MaValidationError

from dicomlab.aetitle import AE_MAX_LENGTH, check_ae_title, check_host, check_port, check_uid
from dicomlab.errors import ValidationError as LabValidationError
from dicomlab.settings import SERVICES, ListenerSettings, Node, range_words

# One printable non-space character somewhere, no backslash, no control characters
# (documentation for clients and test generators; the shared rule decides).
AE_PATTERN = r"^ *[!-\[\]-~][ -\[\]-~]*$"
UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"
STREAM_ID_PATTERN = r"^[0-9]{1,15}(-[0-9]{1,18})?$"  # within Redis' 64-bit stream ids


def _shared(check: Callable[[Any], Any]) -> Callable[[Any], None]:
    def validate(value: Any) -> None:
        try:
            check(value)
        except LabValidationError as exc:
            raise MaValidationError(exc.message) from None

    return validate


def ae_title_field(required: bool = False, description: str = "AE title", **kw: Any) -> fields.String:
    return fields.String(
        required=required,
        validate=_shared(check_ae_title),
        error_messages={"required": "Give an AE title.", "invalid": "An AE title must be text."},
        metadata={"description": description, "minLength": 1, "maxLength": AE_MAX_LENGTH, "pattern": AE_PATTERN,
                  "example": "CT01"},
        **kw,
    )


def host_field(required: bool = False, description: str = "IPv4/IPv6 address or RFC 1123 host name",
               **kw: Any) -> fields.String:
    return fields.String(
        required=required,
        validate=_shared(check_host),
        error_messages={"required": "Give an IP address or a host name.", "invalid": "Give an IP address or a host name."},
        metadata={"description": description, "minLength": 1, "maxLength": 253,
                  "example": "192.168.1.10"},
        **kw,
    )


def port_field(required: bool = False, description: str = "a TCP port", **kw: Any) -> fields.Integer:
    return fields.Integer(
        required=required,
        strict=True,
        validate=_shared(check_port),
        error_messages={"required": "Give a port.", "invalid": "A port is a whole number from 1 to 65535."},
        metadata={"description": description, "minimum": 1, "maximum": 65535, "example": 104},
        **kw,
    )


class Strict(Schema):
    """Unknown fields are refused, with a sentence that says so."""

    class Meta:
        unknown = RAISE

    error_messages = {
        "unknown": "This field is not accepted here.",
        "type": "Send a JSON object.",
    }


# -- the settings fields: built from their one declaration in dicomlab.settings ----------------
SERVICES_ERROR = f"Services are {', '.join(map(repr, SERVICES))}.".replace("'", '"')


def _uid_list(description: str, **kw: Any) -> fields.List:
    return fields.List(
        fields.String(validate=_shared(check_uid), metadata={"maxLength": 64, "pattern": UID_PATTERN}),
        metadata={"description": description}, **kw,
    )


def _out_field(kind: str, description: str) -> fields.Field:
    """A response field: the type and the words (a stored value is shown as it is)."""
    meta = {"description": description}
    if kind in ("uids", "services"):
        return fields.List(fields.String(), metadata=meta)
    if kind in ("int", "port"):
        return fields.Integer(metadata=meta)
    return fields.Boolean(metadata=meta) if kind == "bool" else fields.String(metadata=meta)


def _in_field(name: str, m: Mapping[str, Any], description: str, kw: dict[str, Any]) -> fields.Field:
    """A request field: the type, the rule (the shared checks, range, enum, length) and the words."""
    kind = m["kind"]
    meta: dict[str, Any] = {"description": description}
    if kind == "ae_title":
        return ae_title_field(description=description, **kw)
    if kind == "host":
        return host_field(description=description, **kw)
    if kind == "port":
        return port_field(description=description, **kw)
    if kind == "bool":
        return fields.Boolean(metadata=meta, **kw)
    if kind == "int":
        low, top = m["range"]
        return fields.Integer(strict=True, validate=validators.Range(low, top, error=range_words(name, low, top)),
                              metadata={**meta, "minimum": low, "maximum": top}, **kw)
    if kind == "uids":
        return _uid_list(description, **kw)
    if kind == "choice":
        choices = list(m["choices"])
        return fields.String(validate=validators.OneOf(choices, error=f"{name} is one of {', '.join(choices)}."),
                             metadata={**meta, "enum": choices}, **kw)
    if kind == "text":
        top = m["max_length"]
        return fields.String(validate=validators.Length(max=top, error=f"A {name} is text of at most {top} characters."),
                             metadata={**meta, "maxLength": top}, **kw)
    if kind == "services":
        return fields.List(fields.String(validate=validators.OneOf(SERVICES, error=SERVICES_ERROR),
                                         metadata={"enum": list(SERVICES)}), metadata=meta, **kw)
    raise TypeError(f"{name}: no API field for kind {kind!r}")


def setting_fields(record: type, mode: str) -> dict[str, fields.Field]:
    """The marshmallow fields of a settings record (ListenerSettings, Node), from its field metadata.

    mode ``in``: a whole record (required where the record has no default, else that default);
    ``patch``: any subset; ``out``: a response."""
    out: dict[str, fields.Field] = {}
    for f in dataclasses.fields(record):
        m = f.metadata
        if mode == "out":
            out[f.name] = _out_field(m["kind"], m["description"])
            continue
        kw: dict[str, Any] = {}
        if mode == "in":
            if f.default is not dataclasses.MISSING:
                kw["load_default"] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                kw["load_default"] = f.default_factory
            else:
                kw["required"] = True
        words = (m["patch_description"] if mode == "patch" else None) or m["description"]
        out[f.name] = _in_field(f.name, m, words, kw)
    return out


# -- listener settings ---------------------------------------------------------
ScpPatch = Strict.from_dict(setting_fields(ListenerSettings, "patch"), name="ScpPatch")


class PublicAddress(Schema):
    host = fields.String(metadata={"description": "the host a modality outside the lab network calls"})
    port = fields.Integer(metadata={"description": "the port it calls (Compose: the published port)"})
    published = fields.Boolean(metadata={"description": "a port mapping publishes the PACS (Compose)"})
    target = fields.Integer(allow_none=True, metadata={"description": "the container port the mapping forwards to"})
    current = fields.Boolean(metadata={"description": "the address reaches the live listener"})
    text = fields.String(metadata={"description": "one sentence for a person, with the fix when not current"})


class ListenerInfo(Schema):
    host = fields.String(metadata={"description": "where the PACS runs (PACS_HOST)"})
    running = fields.Boolean(metadata={"description": "the PACS reported itself listening in the last seconds"})
    heartbeat = fields.Dict(allow_none=True)
    tls_port = fields.Integer(allow_none=True, metadata={"description": "the DICOM TLS port listened on now "
                                                                        "(null: off, or the PACS is not running)"})
    public = fields.Nested(PublicAddress, metadata={"description": "where a modality outside must send"})


ScpOut = Schema.from_dict({**setting_fields(ListenerSettings, "out"), "listener": fields.Nested(ListenerInfo)},
                          name="ScpOut")


# -- nodes ------------------------------------------------------------------------
NodeIn = Strict.from_dict(setting_fields(Node, "in"), name="NodeIn")
NodePatch = Strict.from_dict(setting_fields(Node, "patch"), name="NodePatch")


class NodeStatus(Schema):
    state = fields.String(metadata={"description": "CONNECTED, REJECTED, UNREACHABLE or NEVER SEEN"})
    why = fields.String()
    summary = fields.String(metadata={"example": "USPROD (192.168.1.10 : 104) CONNECTED"})
    last_association = fields.String(allow_none=True)
    last_association_time = fields.Float(allow_none=True)
    last_rejected_reason = fields.String(allow_none=True)
    last_assoc_id = fields.String(allow_none=True, metadata={
        "description": "the last association's id: GET /api/associations/<id> shows its ladder"})
    last_association_tls = fields.String(allow_none=True, metadata={
        "description": "how the last association came: plain, or its TLS version (e.g. TLSv1.3)"})
    last_echo_ok = fields.Boolean(allow_none=True)
    last_echo_time = fields.Float(allow_none=True)
    last_echo_error = fields.String(allow_none=True)
    last_echo_ms = fields.Float(allow_none=True)


NodeOut = Schema.from_dict({**setting_fields(Node, "out"), "status": fields.Nested(NodeStatus)}, name="NodeOut")


class EchoOut(Schema):
    ok = fields.Boolean()
    status = fields.Integer(allow_none=True, metadata={"description": "DIMSE status of the C-ECHO response (0 = Success)"})
    error = fields.String(allow_none=True, metadata={"description": "why it failed, in plain words"})
    elapsed_ms = fields.Float()
    calling_aet = fields.String()
    called_aet = fields.String()
    address = fields.String()
    tls = fields.String(metadata={"description": "the TLS version the echo went over (node tls required); "
                                                "empty: plain"})
    tls_cause = fields.String(allow_none=True, metadata={
        "description": "why the TLS handshake failed, as a cause code (unknown-ca, host-name-mismatch, not-tls, "
                       "peer-closed, ...; README \"DICOM TLS\"); null otherwise"})


# -- events -------------------------------------------------------------------------
class EventsQuery(Strict):
    since = fields.String(
        validate=validators.Regexp(STREAM_ID_PATTERN, error="since is an event id such as 1712345678901-0."),
        metadata={"description": "only events after this id (oldest first)", "pattern": STREAM_ID_PATTERN})
    limit = fields.Integer(load_default=100, validate=validators.Range(1, 1000, error="limit is a whole number from 1 to 1000."))
    type = fields.String(metadata={"description": "event type(s), comma-separated, e.g. association-rejected,echo-sent"})


class StreamQuery(Strict):
    backlog = fields.Integer(load_default=0, validate=validators.Range(0, 1000, error="backlog is a whole number from 0 to 1000."),
                             metadata={"description": "send this many recent events first (ignored when resuming)"})
    type = fields.String(metadata={"description": "event type(s), comma-separated"})


class EventOut(Schema):
    id = fields.String(metadata={"description": "stream id; send it back as Last-Event-ID or since"})
    time = fields.String()
    type = fields.String()
    message = fields.String()
    source = fields.String()
    level = fields.String()
    assoc_id = fields.String()
    calling_aet = fields.String()
    called_aet = fields.String()
    peer = fields.String()
    outcome = fields.String()
    reason = fields.String()
    detail = fields.Dict()


# -- studies --------------------------------------------------------------------------
class StudiesQuery(Strict):
    limit = fields.Integer(load_default=100, validate=validators.Range(1, 1000, error="limit is a whole number from 1 to 1000."))


class SeriesOut(Schema):
    series_uid = fields.String()
    modality = fields.String()
    series_description = fields.String()
    series_number = fields.String()
    instance_count = fields.Integer()


class StudyOut(Schema):
    study_uid = fields.String()
    patient_name = fields.String()
    patient_id = fields.String()
    study_date = fields.String()
    study_description = fields.String()
    accession_number = fields.String()
    calling_aet = fields.String()
    last_received = fields.Float()
    instances = fields.Integer()
    series = fields.Integer()
    commitment = fields.Dict(allow_none=True, metadata={
        "description": "the study's latest storage commitment request: transaction_uid, state (requested, "
                       "retrying, reported, failed), requested, committed, failed, updated; null: none"})


class StudyDetailOut(StudyOut):
    series_list = fields.List(fields.Nested(SeriesOut))


# -- simulator ----------------------------------------------------------------------------
def _count(maximum: int, description: str) -> fields.Integer:
    return fields.Integer(
        strict=True,
        validate=validators.Range(1, maximum, error=f"A whole number from 1 to {maximum}."),
        metadata={"description": description},
    )


class SendIn(Strict):
    studies = _count(20, "how many studies")
    series = _count(10, "series per study")
    slices = _count(1000, "images per series")
    rows = fields.Integer(strict=True, validate=validators.Range(16, 1024, error="A whole number from 16 to 1024."))
    cols = fields.Integer(strict=True, validate=validators.Range(16, 1024, error="A whole number from 16 to 1024."))
    calling_aet = ae_title_field(description="the simulator's AE title (default: its SIM_AE_TITLE)")
    called_aet = ae_title_field(description="default: the listener's AE title")
    host = host_field()  # default: PACS_HOST
    port = port_field()
    transfer_syntax = fields.String(validate=validators.Length(1, 64, error="A transfer syntax name or UID of at most 64 characters."),
                                    metadata={"minLength": 1, "maxLength": 64})
    seed = fields.Integer(strict=True, validate=validators.Range(0, 2**31 - 1, error="A whole number from 0 to 2147483647."))
    patient_name = fields.String(validate=validators.Length(max=64, error="At most 64 characters."), metadata={"maxLength": 64})
    patient_id = fields.String(validate=validators.Length(max=64, error="At most 64 characters."), metadata={"maxLength": 64})


class JobOut(Schema):
    job_id = fields.String()
    state = fields.String()
    request = fields.Dict()
    result = fields.Raw(allow_none=True)


class HealthOut(Schema):
    ok = fields.Boolean()
    redis = fields.String()
