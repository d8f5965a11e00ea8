"""Configuration records: the environment (EnvConfig) and what Redis stores
(ListenerSettings, Node), with their validation and their Redis encoding."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from .aetitle import check_ae_title, check_host, check_port, check_uid
from .dicom import DEFAULT_STORAGE_SOP_CLASSES, DEFAULT_TRANSFER_SYNTAXES
from .errors import LabError, ValidationError

# What a node may do, each offered as presentation contexts (DESIGN.md "The PACS talks back"):
SERVICES = ("C-ECHO", "C-STORE", "STORAGE-COMMITMENT", "C-FIND", "C-MOVE", "C-GET")
# A node added without a services list: what a modality that only sends needs. The lab's
# own CT (make up) and the scenarios ask for more explicitly.
DEFAULT_NODE_SERVICES = ("C-ECHO", "C-STORE")
# Per node, DICOM TLS (DESIGN.md "DICOM TLS"): may it, or must it, use the TLS port;
# must it present a client certificate from the lab CA.
TLS_MODES = ("off", "allowed", "required")
CLIENT_CERTIFICATE_MODES = ("none", "required")

# How a node refused by the policy (rows 2-4: wrong called AE, unknown or disabled
# calling AE, wrong address) is turned away -- to test how a modality copes with
# what other PACS do:
REFUSAL_MODES = {
    "reject": "A-ASSOCIATE-RJ with the standard result, source and reason (the default)",
    "abort": "accept the association, then A-ABORT at once (Orthanc with any DicomAlwaysAllow* on)",
    "dimse-failure": "accept the association, answer every C-ECHO / C-STORE 0x0124 Refused: Not authorized",
    "close": "close the TCP connection without a word",
}


@dataclass(frozen=True)
class EnvConfig:
    """The environment of one service (DESIGN.md, "Configuration")."""

    redis_url: str | None
    pacs_ae_title: str = "PACS"
    pacs_port: int = 11112
    pacs_tls_port: int = 2762  # seeds the listener's tls_port (stored settings win)
    pacs_host: str = "127.0.0.1"  # where the simulator and the API find the PACS
    storage_dir: str = "./data/storage"
    sim_ae_title: str = "CT01"
    sim_port: int = 11113
    admin_token: str | None = None
    admin_port: int = 8080
    tls_dir: str | None = None  # the lab CA and the PACS's certificate (PACS_TLS_DIR; default next to the storage)

    @classmethod
    def from_env(cls, env: "os._Environ[str] | dict[str, str] | None" = None) -> "EnvConfig":
        e = os.environ if env is None else env

        def num(name: str, default: int) -> int:
            raw = e.get(name)
            if raw in (None, ""):
                return default
            try:
                return check_port(int(raw), name)
            except ValueError as exc:
                raise ValidationError(f"{name}={raw!r}: {exc}", name) from None

        return cls(
            redis_url=e.get("REDIS_URL") or None,
            pacs_ae_title=check_ae_title(e.get("PACS_AE_TITLE") or "PACS", "PACS_AE_TITLE"),
            pacs_port=num("PACS_PORT", 11112),
            pacs_tls_port=num("PACS_TLS_PORT", 2762),
            pacs_host=e.get("PACS_HOST") or "127.0.0.1",
            storage_dir=e.get("PACS_STORAGE_DIR") or "./data/storage",
            sim_ae_title=check_ae_title(e.get("SIM_AE_TITLE") or "CT01", "SIM_AE_TITLE"),
            sim_port=num("SIM_PORT", 11113),
            admin_token=e.get("ADMIN_TOKEN") or None,
            admin_port=num("ADMIN_PORT", 8080),
            tls_dir=e.get("PACS_TLS_DIR") or None,
        )

    @property
    def tls_folder(self) -> str:
        """The lab's TLS folder: PACS_TLS_DIR, else ``tls`` beside the storage folder."""
        return self.tls_dir or os.path.join(os.path.dirname(os.path.abspath(self.storage_dir)), "tls")


def _encode(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _check_uid_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(f"{name} is a list of UIDs.", name)
    for uid in value:
        check_uid(uid, name)  # the whole string: str.isdigit() took "²" and "١" for digits
    return list(dict.fromkeys(value))


# -- the settings fields, declared once ---------------------------------------------------------
# Each field of ListenerSettings and Node carries its description and rule as field metadata
# (``setting(...)``): the validation below, the admin API's schemas (admin_api.schemas builds
# its marshmallow fields from them, so the OpenAPI document shows the same words, ranges and
# enums) and the scenario runner's writable lists are derived from these declarations. Adding
# a setting is one field here (plus what the PACS does with it).
#
# kind: ae_title | host | port | bool | int (with ``range``) | uids | choice (with ``choices``)
#       | text (with ``max_length``) | services
# group: "limit" (the limits at the DICOM port and the talking-back limits: LIMITS), "fault"


def setting(default: Any = MISSING, *, kind: str, description: str, factory: Callable[[], Any] | None = None,
            range: tuple[int, int] | None = None, choices: tuple[str, ...] | None = None,  # noqa: A002
            max_length: int | None = None, group: str | None = None, patch_description: str | None = None) -> Any:
    """A dataclass field with the metadata above (no default and no factory: required)."""
    meta = {"kind": kind, "description": description, "range": range, "choices": choices,
            "max_length": max_length, "group": group, "patch_description": patch_description}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    if default is MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def range_words(name: str, low: int, top: int) -> str:
    """The sentence for a whole number out of its range (the API and the records say the same)."""
    return f"{name} is a whole number from {low} to {top}" + (" (0: off)." if low == 0 else ".")


def _refusal_words() -> str:
    return "how a node the policy refuses is turned away: " + "; ".join(f"{k}: {v}" for k, v in REFUSAL_MODES.items())


@dataclass
class ListenerSettings:
    """The PACS listener, stored in the ``dicomlab:scp`` hash."""

    ae_title: str = setting("PACS", kind="ae_title", description="the PACS's AE title (called AE title)")
    port: int = setting(11112, kind="port", description="the plain DICOM port the PACS listens on")
    verbose: bool = setting(False, kind="bool", description="PDU-level detail in the events")
    max_associations: int = setting(10, kind="int", range=(1, 1000),
                                    description="simultaneous associations the PACS accepts, in total")
    sop_classes: list[str] = setting(factory=lambda: list(DEFAULT_STORAGE_SOP_CLASSES), kind="uids",
                                     description="accepted storage SOP classes")
    transfer_syntaxes: list[str] = setting(factory=lambda: list(DEFAULT_TRANSFER_SYNTAXES), kind="uids",
                                           description="accepted transfer syntaxes")
    refusal_mode: str = setting("reject", kind="choice", choices=tuple(REFUSAL_MODES), description=_refusal_words())
    # PACS-side fault injection (in the spirit of DCMTK storescp --sleep-*, --abort-after, ...):
    fault_delay_ms: int = setting(0, kind="int", range=(0, 600_000), group="fault", description=(
        "fault injection: milliseconds to wait before answering each C-ECHO / C-STORE (0: off)"))
    fault_abort_after: int = setting(0, kind="int", range=(0, 1_000_000), group="fault", description=(
        "fault injection: A-ABORT on the C-STORE after this many in one association (0: off)"))
    fault_status: int = setting(0, kind="int", range=(0, 0xFFFF), group="fault", description=(
        "fault injection: answer every C-STORE with this DIMSE status and store nothing, e.g. 42752 = 0xA700 "
        "Out of Resources (0: off)"))
    fault_stall: bool = setting(False, kind="bool", group="fault", description=(
        "fault injection: stop answering C-STOREs (the modality's DIMSE timeout fires)"))
    # Limits at the DICOM port (second stage, "Limits at the DICOM port"):
    assoc_request_timeout: int = setting(30, kind="int", range=(1, 3600), group="limit", description=(
        "seconds a new connection has to deliver its complete A-ASSOCIATE-RQ (like DCMTK's ARTIM timer)"))
    max_pending_connections: int = setting(64, kind="int", range=(1, 100_000), group="limit", description=(
        "connections not yet decided, in total; more are closed at once"))
    max_pending_per_address: int = setting(16, kind="int", range=(1, 100_000), group="limit", description=(
        "connections not yet decided from one source address; more are closed at once"))
    max_associations_per_node: int = setting(0, kind="int", range=(0, 1000), group="limit", description=(
        "simultaneous associations per calling AE title, refused 2/3/2 beyond it (0: off)"))
    spool_threshold_bytes: int = setting(16 * 1024 * 1024, kind="int", range=(64 * 1024, 1 << 40), group="limit",
                                         description="a dataset larger than this is written to disk as it arrives "
                                         "instead of held in memory")
    max_instance_bytes: int = setting(4 * 1024 * 1024 * 1024, kind="int", range=(1024 * 1024, 1 << 42), group="limit",
                                      description="a larger instance is aborted (instance-too-large)")
    # DICOM TLS (second stage, "DICOM TLS"): a second listener beside the plain one.
    tls_enabled: bool = setting(True, kind="bool", description="the DICOM TLS listener runs beside the plain one")
    tls_port: int = setting(2762, kind="port", description="the DICOM TLS port (registered for DICOM TLS: 2762)")
    # The PACS talks back (second stage): Storage Commitment and Query/Retrieve.
    commitment_attempts: int = setting(5, kind="int", range=(1, 100), group="limit", description=(
        "Storage Commitment: attempts to deliver an N-EVENT-REPORT"))
    commitment_interval: int = setting(10, kind="int", range=(1, 3600), group="limit", description=(
        "Storage Commitment: seconds before the second attempt, doubled after each failure (at most 10 times)"))
    qr_max_matches: int = setting(1000, kind="int", range=(1, 100_000), group="limit", description=(
        "Query/Retrieve: most C-FIND matches returned for one request (then a warning event)"))
    qr_max_suboperations: int = setting(10_000, kind="int", range=(1, 1_000_000), group="limit", description=(
        "Query/Retrieve: most C-MOVE / C-GET sub-operations for one request"))

    def validate(self) -> "ListenerSettings":
        self.ae_title = check_ae_title(self.ae_title, "ae_title")
        self.port = check_port(self.port, "port")
        self.tls_port = check_port(self.tls_port, "tls_port")
        for name in BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise ValidationError(f"{name} is true or false.", name)
        if self.tls_enabled and self.tls_port == self.port:
            raise ValidationError(f"tls_port {self.tls_port} is the plain port too: the TLS listener needs a port "
                                  "of its own (DICOM TLS is registered as 2762).", "tls_port")
        self.sop_classes = _check_uid_list(self.sop_classes, "sop_classes")
        self.transfer_syntaxes = _check_uid_list(self.transfer_syntaxes, "transfer_syntaxes")
        if not self.transfer_syntaxes:
            raise ValidationError("Accept at least one transfer syntax.", "transfer_syntaxes")
        if self.refusal_mode not in REFUSAL_MODES:
            raise ValidationError(f"refusal_mode is one of {', '.join(REFUSAL_MODES)}.", "refusal_mode")
        for name, (low, top) in RANGES.items():  # max_associations, the faults, the limits
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= top:
                raise ValidationError(range_words(name, low, top), name)
        return self

    def faults(self) -> dict[str, Any]:
        """The fault injections that are on."""
        return {k: v for k, v in asdict(self).items() if k.startswith("fault_") and v}

    def to_redis(self) -> dict[str, str]:
        return {k: _encode(v) for k, v in asdict(self).items()}

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> "ListenerSettings":
        out = cls()
        for f in fields(cls):
            if f.name not in raw:
                continue
            v = raw[f.name]
            if f.name in INT_FIELDS:
                setattr(out, f.name, int(v))
            elif f.name in BOOL_FIELDS:
                setattr(out, f.name, v == "1")
            elif f.name in LIST_FIELDS:
                setattr(out, f.name, json.loads(v))
            else:
                setattr(out, f.name, v)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Node:
    """An authorized modality (SCU), stored in ``dicomlab:node:<AE>``."""

    ae_title: str = setting(kind="ae_title", description="the modality's AE title (calling AE title); case matters",
                            patch_description="a new AE title renames the node")
    host: str = setting(kind="host", description="IPv4/IPv6 address or RFC 1123 host name")
    port: int = setting(104, kind="port", description="the port the node listens on, where the lab calls it (C-ECHO, "
                        "C-MOVE, Storage Commitment reports)")
    description: str = setting("", kind="text", max_length=256, description="a note for people")
    services: list[str] = setting(factory=lambda: list(DEFAULT_NODE_SERVICES), kind="services",
                                  description="what the node may do")
    enabled: bool = setting(True, kind="bool", description="false: the PACS refuses the node as it refuses an "
                            "unknown AE title")
    tls: str = setting("off", kind="choice", choices=TLS_MODES, description=(
        "DICOM TLS for this node: off (plain port only), allowed (either port), required (TLS port only; on the "
        "plain port rejected 1/1/3)"))
    client_certificate: str = setting("none", kind="choice", choices=CLIENT_CERTIFICATE_MODES, description=(
        "on the TLS port, must the node present a certificate from the lab CA naming it"))

    def validate(self) -> "Node":
        self.ae_title = check_ae_title(self.ae_title, "ae_title")
        self.host = check_host(self.host, "host")
        self.port = check_port(self.port, "port")
        if not isinstance(self.description, str) or len(self.description) > 256:
            raise ValidationError("A description is text of at most 256 characters.", "description")
        if not isinstance(self.services, list) or not all(s in SERVICES for s in self.services):
            raise ValidationError(f"services is a list drawn from {', '.join(map(repr, SERVICES))}.", "services")
        self.services = [s for s in SERVICES if s in self.services]
        if not isinstance(self.enabled, bool):
            raise ValidationError("enabled is true or false.", "enabled")
        if self.tls not in TLS_MODES:
            raise ValidationError(f"tls is one of {', '.join(TLS_MODES)}.", "tls")
        if self.client_certificate not in CLIENT_CERTIFICATE_MODES:
            raise ValidationError(f"client_certificate is one of {', '.join(CLIENT_CERTIFICATE_MODES)}.",
                                  "client_certificate")
        if self.client_certificate == "required" and self.tls == "off":
            raise ValidationError("client_certificate required needs TLS: set tls to allowed or required.",
                                  "client_certificate")
        return self

    def allows(self, service: str) -> bool:
        return service in self.services

    def to_redis(self) -> dict[str, str]:
        return {k: _encode(v) for k, v in asdict(self).items()}

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> "Node":
        return cls(
            ae_title=raw["ae_title"],
            host=raw["host"],
            port=int(raw.get("port", "104")),
            description=raw.get("description", ""),
            services=json.loads(raw.get("services", "[]")),
            enabled=raw.get("enabled", "1") == "1",
            tls=raw.get("tls", "off"),
            client_certificate=raw.get("client_certificate", "none"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



def _named(cls: type, **match: Any) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if all(f.metadata.get(k) == v for k, v in match.items()))


# Derived from the declarations above (never listed by hand):
LISTENER_FIELDS = _named(ListenerSettings)  # every listener setting: what a client may write
NODE_FIELDS = _named(Node)  # every node field: what a client may write
BOOL_FIELDS = _named(ListenerSettings, kind="bool")
INT_FIELDS = _named(ListenerSettings, kind="port") + _named(ListenerSettings, kind="int")
LIST_FIELDS = _named(ListenerSettings, kind="uids")
# The listener's whole-number settings with a range: name -> (lowest, highest) accepted value.
RANGES: dict[str, tuple[int, int]] = {f.name: f.metadata["range"] for f in fields(ListenerSettings)
                                      if f.metadata["kind"] == "int"}
# The limits at the DICOM port and of the PACS talking back (a subset of RANGES).
LIMITS: dict[str, tuple[int, int]] = {n: RANGES[n] for n in _named(ListenerSettings, group="limit")}

ADMIN_TOKEN_MIN_LENGTH = 16


def check_admin_token(token: str | None) -> str:
    """The admin API's bearer token, or ``LabError`` saying what is wrong with it."""
    if not token:
        raise LabError("ADMIN_TOKEN is required: set it in the environment (make up generates one into .env).")
    if len(token) < ADMIN_TOKEN_MIN_LENGTH:
        raise LabError(f"ADMIN_TOKEN is {len(token)} characters long; it must have at least "
                       f"{ADMIN_TOKEN_MIN_LENGTH} (a guessable token opens the lab's control plane). Remove it from "
                       ".env and `make up` generates a new one, or set a longer one.")
    return token
