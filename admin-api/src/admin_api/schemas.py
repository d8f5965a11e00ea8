"""Request and response schemas, declared once: they validate, serialize and
write the OpenAPI document. The only hand-written rules are the shared
AE-title / host / port rules of ``dicomlab.aetitle``, plugged in as validators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apiflask import Schema, fields, validators
from marshmallow import RAISE
from marshmallow import ValidationError as MaValidationError

from dicomlab.aetitle import AE_MAX_LENGTH, check_ae_title, check_host, check_port, check_uid
from dicomlab.errors import ValidationError as LabValidationError
from dicomlab.settings import (
    CLIENT_CERTIFICATE_MODES,
    DEFAULT_NODE_SERVICES,
    LIMITS,
    REFUSAL_MODES,
    SERVICES,
    TLS_MODES,
)

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


def host_field(required: bool = False, **kw: Any) -> fields.String:
    return fields.String(
        required=required,
        validate=_shared(check_host),
        error_messages={"required": "Give an IP address or a host name.", "invalid": "Give an IP address or a host name."},
        metadata={"description": "IPv4/IPv6 address or RFC 1123 host name", "minLength": 1, "maxLength": 253,
                  "example": "192.168.1.10"},
        **kw,
    )


def port_field(required: bool = False, **kw: Any) -> fields.Integer:
    return fields.Integer(
        required=required,
        strict=True,
        validate=_shared(check_port),
        error_messages={"required": "Give a port.", "invalid": "A port is a whole number from 1 to 65535."},
        metadata={"minimum": 1, "maximum": 65535, "example": 104},
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


# -- listener settings ---------------------------------------------------------
def _uid_list(description: str) -> fields.List:
    return fields.List(
        fields.String(validate=_shared(check_uid), metadata={"maxLength": 64, "pattern": UID_PATTERN}),
        metadata={"description": description},
    )


def _fault_int(top: int, description: str) -> fields.Integer:
    return fields.Integer(
        strict=True,
        validate=validators.Range(0, top, error=f"A whole number from 0 to {top} (0: off)."),
        metadata={"description": description, "minimum": 0, "maximum": top},
    )


def _limit(name: str, description: str) -> fields.Integer:
    low, top = LIMITS[name]
    return fields.Integer(
        strict=True,
        validate=validators.Range(low, top, error=f"{name} is a whole number from {low} to {top}"
                                  + (" (0: off)." if low == 0 else ".")),
        metadata={"description": description, "minimum": low, "maximum": top},
    )


class ScpPatch(Strict):
    ae_title = ae_title_field(description="the PACS's AE title (called AE title)")
    port = port_field()
    verbose = fields.Boolean(metadata={"description": "PDU-level detail in the events"})
    max_associations = fields.Integer(strict=True, validate=validators.Range(1, 1000, error="max_associations is a whole number from 1 to 1000."))
    sop_classes = _uid_list("accepted storage SOP classes")
    transfer_syntaxes = _uid_list("accepted transfer syntaxes")
    refusal_mode = fields.String(
        validate=validators.OneOf(list(REFUSAL_MODES), error=f"refusal_mode is one of {', '.join(REFUSAL_MODES)}."),
        metadata={"description": "how a node the policy refuses is turned away: "
                  + "; ".join(f"{k}: {v}" for k, v in REFUSAL_MODES.items()), "enum": list(REFUSAL_MODES)})
    fault_delay_ms = _fault_int(600_000, "fault injection: milliseconds to wait before answering each C-ECHO / "
                                "C-STORE (0: off)")
    fault_abort_after = _fault_int(1_000_000, "fault injection: A-ABORT on the C-STORE after this many in one "
                                   "association (0: off)")
    fault_status = _fault_int(0xFFFF, "fault injection: answer every C-STORE with this DIMSE status and store "
                              "nothing, e.g. 42752 = 0xA700 Out of Resources (0: off)")
    fault_stall = fields.Boolean(metadata={"description": "fault injection: stop answering C-STOREs (the "
                                           "modality's DIMSE timeout fires)"})
    assoc_request_timeout = _limit("assoc_request_timeout", "seconds a new connection has to deliver its complete "
                                   "A-ASSOCIATE-RQ (like DCMTK's ARTIM timer)")
    max_pending_connections = _limit("max_pending_connections", "connections not yet decided, in total; more are "
                                     "closed at once")
    max_pending_per_address = _limit("max_pending_per_address", "connections not yet decided from one source "
                                     "address; more are closed at once")
    max_associations_per_node = _limit("max_associations_per_node", "simultaneous associations per calling AE "
                                       "title, refused 2/3/2 beyond it (0: off)")
    spool_threshold_bytes = _limit("spool_threshold_bytes", "a dataset larger than this is written to disk as it "
                                   "arrives instead of held in memory")
    max_instance_bytes = _limit("max_instance_bytes", "a larger instance is aborted (instance-too-large)")
    tls_enabled = fields.Boolean(metadata={"description": "the DICOM TLS listener runs beside the plain one"})
    tls_port = port_field()  # the DICOM TLS port (registered: 2762)
    commitment_attempts = _limit("commitment_attempts", "Storage Commitment: attempts to deliver an N-EVENT-REPORT")
    commitment_interval = _limit("commitment_interval", "Storage Commitment: seconds before the second attempt, "
                                 "doubled after each failure")
    qr_max_matches = _limit("qr_max_matches", "Query/Retrieve: most C-FIND matches returned for one request")
    qr_max_suboperations = _limit("qr_max_suboperations", "Query/Retrieve: most C-MOVE / C-GET sub-operations for "
                                  "one request")


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


class ScpOut(Schema):
    ae_title = fields.String()
    port = fields.Integer()
    verbose = fields.Boolean()
    max_associations = fields.Integer()
    sop_classes = fields.List(fields.String())
    transfer_syntaxes = fields.List(fields.String())
    refusal_mode = fields.String()
    fault_delay_ms = fields.Integer()
    fault_abort_after = fields.Integer()
    fault_status = fields.Integer()
    fault_stall = fields.Boolean()
    assoc_request_timeout = fields.Integer()
    max_pending_connections = fields.Integer()
    max_pending_per_address = fields.Integer()
    max_associations_per_node = fields.Integer()
    spool_threshold_bytes = fields.Integer()
    max_instance_bytes = fields.Integer()
    tls_enabled = fields.Boolean()
    tls_port = fields.Integer()
    commitment_attempts = fields.Integer()
    commitment_interval = fields.Integer()
    qr_max_matches = fields.Integer()
    qr_max_suboperations = fields.Integer()
    listener = fields.Nested(ListenerInfo)


# -- nodes ------------------------------------------------------------------------
SERVICES_ERROR = f"Services are {', '.join(map(repr, SERVICES))}.".replace("'", '"')


def _tls_field(**kw: Any) -> fields.String:
    return fields.String(validate=validators.OneOf(TLS_MODES, error=f"tls is one of {', '.join(TLS_MODES)}."),
                         metadata={"description": "DICOM TLS for this node: off (plain port only), allowed (either "
                                   "port), required (TLS port only; on the plain port rejected 1/1/3)",
                                   "enum": list(TLS_MODES)}, **kw)


def _client_certificate_field(**kw: Any) -> fields.String:
    return fields.String(validate=validators.OneOf(CLIENT_CERTIFICATE_MODES, error="client_certificate is one of "
                                                   + ", ".join(CLIENT_CERTIFICATE_MODES) + "."),
                         metadata={"description": "on the TLS port, must the node present a certificate from the "
                                   "lab CA naming it", "enum": list(CLIENT_CERTIFICATE_MODES)}, **kw)


class NodeIn(Strict):
    ae_title = ae_title_field(required=True, description="the modality's AE title (calling AE title); case matters")
    host = host_field(required=True)
    port = port_field(load_default=104)
    description = fields.String(
        load_default="", validate=validators.Length(max=256, error="A description is text of at most 256 characters."),
        metadata={"maxLength": 256})
    services = fields.List(
        fields.String(validate=validators.OneOf(SERVICES, error=SERVICES_ERROR)),
        load_default=lambda: list(DEFAULT_NODE_SERVICES),
        metadata={"description": "what the node may do"},
    )
    enabled = fields.Boolean(load_default=True)
    tls = _tls_field(load_default="off")
    client_certificate = _client_certificate_field(load_default="none")


class NodePatch(Strict):
    ae_title = ae_title_field(description="a new AE title renames the node")
    host = host_field()
    port = port_field()
    description = fields.String(validate=validators.Length(max=256, error="A description is text of at most 256 characters."),
                                metadata={"maxLength": 256})
    services = fields.List(fields.String(validate=validators.OneOf(SERVICES, error=SERVICES_ERROR)))
    enabled = fields.Boolean()
    tls = _tls_field()
    client_certificate = _client_certificate_field()


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


class NodeOut(Schema):
    ae_title = fields.String()
    host = fields.String()
    port = fields.Integer()
    description = fields.String()
    services = fields.List(fields.String())
    enabled = fields.Boolean()
    tls = fields.String()
    client_certificate = fields.String()
    status = fields.Nested(NodeStatus)


class EchoOut(Schema):
    ok = fields.Boolean()
    status = fields.Integer(allow_none=True, metadata={"description": "DIMSE status of the C-ECHO response (0 = Success)"})
    error = fields.String(allow_none=True, metadata={"description": "why it failed, in plain words"})
    elapsed_ms = fields.Float()
    calling_aet = fields.String()
    called_aet = fields.String()
    address = fields.String()


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
