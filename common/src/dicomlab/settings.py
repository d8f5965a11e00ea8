"""Configuration records: the environment (EnvConfig) and what Redis stores
(ListenerSettings, Node), with their validation and their Redis encoding."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
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


# The listener's whole-number settings with a range: name -> (lowest, highest) accepted value.
LIMITS: dict[str, tuple[int, int]] = {
    "assoc_request_timeout": (1, 3600),
    "max_pending_connections": (1, 100_000),
    "max_pending_per_address": (1, 100_000),
    "max_associations_per_node": (0, 1000),
    "spool_threshold_bytes": (64 * 1024, 1 << 40),
    "max_instance_bytes": (1024 * 1024, 1 << 42),
    # Storage Commitment: attempts to deliver an N-EVENT-REPORT, and the first wait between two
    # (doubled after each failure, at most 10 times the first).
    "commitment_attempts": (1, 100),
    "commitment_interval": (1, 3600),
    # Query/Retrieve: at most this many C-FIND matches are returned (then the search ends with
    # a warning event); at most this many C-MOVE / C-GET sub-operations per request.
    "qr_max_matches": (1, 100_000),
    "qr_max_suboperations": (1, 1_000_000),
}
BOOL_FIELDS = ("verbose", "fault_stall", "tls_enabled")
INT_FIELDS = ("port", "tls_port", "max_associations", "fault_delay_ms", "fault_abort_after", "fault_status", *LIMITS)


@dataclass
class ListenerSettings:
    """The PACS listener, stored in the ``dicomlab:scp`` hash."""

    ae_title: str = "PACS"
    port: int = 11112
    verbose: bool = False
    max_associations: int = 10
    sop_classes: list[str] = field(default_factory=lambda: list(DEFAULT_STORAGE_SOP_CLASSES))
    transfer_syntaxes: list[str] = field(default_factory=lambda: list(DEFAULT_TRANSFER_SYNTAXES))
    refusal_mode: str = "reject"
    # PACS-side fault injection (in the spirit of DCMTK storescp --sleep-*, --abort-after, ...):
    fault_delay_ms: int = 0  # wait this long before answering each C-ECHO / C-STORE
    fault_abort_after: int = 0  # A-ABORT on the C-STORE after this many in one association (0: off)
    fault_status: int = 0  # answer every C-STORE with this status and store nothing (0: off)
    fault_stall: bool = False  # stop answering C-STOREs (the modality's DIMSE timeout fires)
    # Limits at the DICOM port (second stage, "Limits at the DICOM port"):
    assoc_request_timeout: int = 30  # seconds for a connection to deliver a complete A-ASSOCIATE-RQ (DCMTK's ARTIM)
    max_pending_connections: int = 64  # connections not yet decided, in total
    max_pending_per_address: int = 16  # connections not yet decided, per source address
    max_associations_per_node: int = 0  # simultaneous associations per calling AE title (0: off)
    spool_threshold_bytes: int = 16 * 1024 * 1024  # a dataset larger than this goes to disk as it arrives
    max_instance_bytes: int = 4 * 1024 * 1024 * 1024  # a larger instance is aborted (instance-too-large)
    # DICOM TLS (second stage, "DICOM TLS"): a second listener beside the plain one.
    tls_enabled: bool = True
    tls_port: int = 2762  # the port registered for DICOM TLS
    # The PACS talks back (second stage): Storage Commitment and Query/Retrieve.
    commitment_attempts: int = 5
    commitment_interval: int = 10  # seconds before the second attempt; doubled after each failure
    qr_max_matches: int = 1000
    qr_max_suboperations: int = 10_000

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
        if isinstance(self.max_associations, bool) or not isinstance(self.max_associations, int) or not 1 <= self.max_associations <= 1000:
            raise ValidationError("max_associations is a whole number from 1 to 1000.", "max_associations")
        self.sop_classes = _check_uid_list(self.sop_classes, "sop_classes")
        self.transfer_syntaxes = _check_uid_list(self.transfer_syntaxes, "transfer_syntaxes")
        if not self.transfer_syntaxes:
            raise ValidationError("Accept at least one transfer syntax.", "transfer_syntaxes")
        if self.refusal_mode not in REFUSAL_MODES:
            raise ValidationError(f"refusal_mode is one of {', '.join(REFUSAL_MODES)}.", "refusal_mode")
        for name, top in (("fault_delay_ms", 600_000), ("fault_abort_after", 1_000_000), ("fault_status", 0xFFFF)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= top:
                raise ValidationError(f"{name} is a whole number from 0 to {top} (0: off).", name)
        for name, (low, top) in LIMITS.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= top:
                raise ValidationError(f"{name} is a whole number from {low} to {top}"
                                      + (" (0: off)." if low == 0 else "."), name)
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
            elif f.name in ("sop_classes", "transfer_syntaxes"):
                setattr(out, f.name, json.loads(v))
            else:
                setattr(out, f.name, v)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Node:
    """An authorized modality (SCU), stored in ``dicomlab:node:<AE>``."""

    ae_title: str
    host: str
    port: int = 104
    description: str = ""
    services: list[str] = field(default_factory=lambda: list(DEFAULT_NODE_SERVICES))
    enabled: bool = True
    tls: str = "off"  # TLS_MODES
    client_certificate: str = "none"  # CLIENT_CERTIFICATE_MODES

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
