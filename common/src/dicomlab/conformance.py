"""Conformance statements generated from what is live, and the check between two of them.

- ``pacs_statement``: the PACS as Storage and Verification SCP, from the listener settings
  stored in Redis (``dicomlab:scp``, ``ListenerSettings``): AE title and ports, the SOP
  classes with their transfer syntaxes, the association policy and the limits in force,
  TLS once the settings carry it.
- ``simulator_statement``: the CT simulator as SCU (what it proposes) and as Verification
  SCP (its worker answers C-ECHO). Its capabilities are the constants below, which
  ``ct_simulator.syntaxes`` and ``ct_simulator.cli`` import: one list, no network needed.
- ``check``: the two side by side (``dicomlab.conformance_check``).

A statement is a JSON-able dict; its sentences speak to a PACS administrator. It is a
lab's generated summary in the spirit of PS3.2 (AE specifications, presentation
contexts, association policies, network and security), not a vendor's full document.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from .dicom import (
    CT_IMAGE_STORAGE,
    DEFLATED_EXPLICIT_VR_LE,
    ENHANCED_CT_IMAGE_STORAGE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    JPEG_2000_LOSSLESS,
    JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    MR_IMAGE_STORAGE,
    RJ_CALLED_AET,
    RJ_CALLING_AET,
    RJ_REGISTRY_UNAVAILABLE,
    RJ_TOO_MANY,
    RLE_LOSSLESS,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
    VERIFICATION,
    Rejection,
    uid_name,
)
from .settings import LIMITS, REFUSAL_MODES, ListenerSettings

# -- what the CT simulator can do (ct_simulator imports these) ---------------------------------
SIM_SYNTAX_ALIASES = {
    "explicit": EXPLICIT_VR_LE,
    "implicit": IMPLICIT_VR_LE,
    "deflated": DEFLATED_EXPLICIT_VR_LE,
    "big-endian": EXPLICIT_VR_BE,
    "rle": RLE_LOSSLESS,
    "j2k": JPEG_2000_LOSSLESS,
    "jpeg2000-lossless": JPEG_2000_LOSSLESS,
    "jpeg-lossless": JPEG_LOSSLESS_SV1,
    "jpeg-ls": JPEG_LS_LOSSLESS,
}
SIM_UNCOMPRESSED = (EXPLICIT_VR_LE, IMPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE)
SIM_COMPRESSED = (RLE_LOSSLESS, JPEG_2000_LOSSLESS)
# What a CT proposes when nothing is chosen: like storescu, both uncompressed little endian syntaxes
SIM_DEFAULT_PROPOSAL = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)
SIM_SOP_CLASSES = {"ct": CT_IMAGE_STORAGE, "enhanced-ct": ENHANCED_CT_IMAGE_STORAGE, "mr": MR_IMAGE_STORAGE,
                   "sc": SECONDARY_CAPTURE_IMAGE_STORAGE}
SIM_DEFAULT_SOP_CLASS = CT_IMAGE_STORAGE
# C-ECHO, as SCU and as the worker's SCP: pynetdicom's default syntaxes (build_context without a list)
SIM_ECHO_SYNTAXES = (IMPLICIT_VR_LE, EXPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE)

# The PACS's fixed association parameters (pacs/listener.py make_ae sets them on its AE; a test compares).
PACS_MAX_PDU = 131_072
PACS_TIMEOUTS = {"acse_timeout": 30, "dimse_timeout": 60, "network_timeout": 120}
IMPLEMENTATION = "pynetdicom 3.0.4 (association negotiation); the lab's own data phase and storage"

LIMIT_WORDS = {
    "max_associations": "simultaneous associations, all listener processes together",
    "max_associations_per_node": "simultaneous associations per calling AE title (0: off)",
    "assoc_request_timeout": "seconds a connection has to deliver a complete A-ASSOCIATE-RQ",
    "max_pending_connections": "connections not yet decided, in all",
    "max_pending_per_address": "connections not yet decided, per source address",
    "spool_threshold_bytes": "a larger dataset is written to disk as it arrives",
    "max_instance_bytes": "a larger instance is aborted (instance-too-large)",
    # the second stage's (DESIGN.md "The PACS talks back"); any other setting gets its name in words
    "commitment_attempts": "attempts to deliver a Storage Commitment N-EVENT-REPORT",
    "commitment_interval": "seconds before its second attempt (doubled after each failure)",
    "qr_max_matches": "C-FIND matches returned at most",
    "qr_max_suboperations": "C-MOVE / C-GET sub-operations per request at most",
}


def ts_item(uid: str) -> dict[str, str]:
    return {"uid": uid, "name": uid_name(uid).removesuffix(f" ({uid})")}


def _rj(r: Rejection) -> str:
    return f"A-ASSOCIATE-RJ {r.codes} ({r.words})"


def association_policy(s: ListenerSettings) -> list[dict[str, str]]:
    """The decision ladder (DESIGN.md "Association policy"), with the values in force."""
    refused = ("A-ASSOCIATE-RJ as listed" if s.refusal_mode == "reject"
               else f"refusal_mode {s.refusal_mode}: {REFUSAL_MODES[s.refusal_mode]}")
    per_node = (f"more than {s.max_associations_per_node} open from the same calling AE title"
                if s.max_associations_per_node else "per-node limit off (max_associations_per_node 0)")
    return [
        {"order": "1", "condition": "the registry (Redis) is unreachable, erroring or empty",
         "answer": _rj(RJ_REGISTRY_UNAVAILABLE), "reason": "registry-unavailable"},
        {"order": "2", "condition": f"the called AE title is not {s.ae_title!r}",
         "answer": _rj(RJ_CALLED_AET) if s.refusal_mode == "reject" else refused, "reason": "called-aet-mismatch"},
        {"order": "3", "condition": "the calling AE title is not an enabled authorized node (case-sensitive)",
         "answer": _rj(RJ_CALLING_AET) if s.refusal_mode == "reject" else refused, "reason": "unknown-calling-aet"},
        {"order": "4", "condition": "the peer's address is not the node's host (resolved at each association)",
         "answer": _rj(RJ_CALLING_AET) if s.refusal_mode == "reject" else refused, "reason": "host-mismatch"},
        {"order": "5", "condition": f"more than {s.max_associations} associations open",
         "answer": _rj(RJ_TOO_MANY), "reason": "too-many-associations"},
        {"order": "5b", "condition": per_node, "answer": _rj(RJ_TOO_MANY), "reason": "too-many-associations"},
        {"order": "6", "condition": "presentation contexts: Verification only for nodes allowed C-ECHO, the "
         "storage SOP classes only for nodes allowed C-STORE, each with one of the listener's transfer syntaxes "
         "(the first of the listener's list that the modality proposed)",
         "answer": "the context is refused (result 3 abstract syntax / 4 transfer syntax not supported, or 1 "
         "user rejection); the association goes on with the others", "reason": "context-rejected"},
    ]


KNOWN_SETTINGS = {f.name for f in fields(ListenerSettings)}


def tls_statement(listener: dict[str, Any], nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Hook for DICOM TLS: whatever ``tls*`` fields the listener settings and the nodes carry.

    The TLS listener (``tls_enabled``, ``tls_port``, per-node ``tls`` and
    ``client_certificate``) is being added beside this; a field present in the settings
    appears here as stored, so the statement follows without a change to this module."""
    fields_ = {k: v for k, v in listener.items() if k.startswith("tls")}
    per_node = {n["ae_title"]: {k: v for k, v in n.items() if k.startswith("tls") or k == "client_certificate"}
                for n in nodes if any(k.startswith("tls") or k == "client_certificate" for k in n)}
    enabled = fields_.get("tls_enabled") in (True, 1, "1", "true")  # typed, or as stored in Redis
    if not fields_:
        words = "Not offered: this PACS speaks DICOM over plain TCP only (no TLS setting is stored)."
    elif enabled:
        words = (f"DICOM TLS on port {fields_.get('tls_port', '?')} (TLS 1.2 or later, BCP 195), beside the "
                 "plain port.")
    else:
        words = "TLS is configured but off (tls_enabled false): plain TCP only."
    return {"enabled": enabled, "settings": fields_, "nodes": per_node, "words": words}


def pacs_statement(settings: ListenerSettings, *, live_port: int | None = None, running: bool = False,
                   public: dict[str, Any] | None = None, nodes: list[dict[str, Any]] | None = None,
                   raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """The PACS's statement from its live settings. ``raw``: the settings as stored, to show
    fields this version does not know yet (e.g. ``tls_*``); ``nodes``: the authorized nodes
    as dicts (for their TLS fields and the count)."""
    listener = {**settings.to_dict(), **(raw or {})}
    transfer = [ts_item(t) for t in settings.transfer_syntaxes]
    sop_classes = [{"uid": VERIFICATION, "name": "Verification", "role": "SCP", "service": "C-ECHO",
                    "transfer_syntaxes": transfer}]
    sop_classes += [{"uid": uid, "name": ts_item(uid)["name"], "role": "SCP", "service": "C-STORE",
                     "transfer_syntaxes": transfer} for uid in settings.sop_classes]
    limits = {name: {"value": getattr(settings, name), "meaning": LIMIT_WORDS.get(name, name.replace("_", " "))}
              for name in ("max_associations", *LIMITS)}
    other = {k: v for k, v in listener.items() if k not in KNOWN_SETTINGS and not k.startswith("tls")}
    port = live_port if live_port is not None else settings.port
    return {
        "kind": "pacs",
        "title": f"DICOM Lab PACS {settings.ae_title!r}: Storage SCP and Verification SCP",
        "source": "the listener settings stored in Redis (dicomlab:scp), read now",
        "application_entity": {
            "ae_title": settings.ae_title, "port": settings.port, "live_port": port, "running": running,
            "public": public, "roles": ["Storage SCP", "Verification SCP"], "scu_roles": [],
            "implementation": IMPLEMENTATION,
        },
        "sop_classes": sop_classes,
        "transfer_syntax_choice": "For each proposed context the PACS takes the first syntax of its own list "
                                  "that the modality proposed.",
        "association_policy": association_policy(settings),
        "refusal_mode": {"value": settings.refusal_mode, "meaning": REFUSAL_MODES[settings.refusal_mode]},
        "limits": limits,
        "pdu": {"max_pdu_receive": PACS_MAX_PDU, **PACS_TIMEOUTS},
        "storage": "Success (0x0000) only once the instance is durably on disk, as received; 0xA700 when it "
                   "cannot be written, 0xC000 when it cannot be understood, 0xA900 when its SOP class is not "
                   "the context's; the same SOP Instance UID again replaces the file.",
        "tls": tls_statement(listener, nodes or []),
        "faults": settings.faults(),
        "verbose": settings.verbose,
        "authorized_nodes": len(nodes or []),
        "other_settings": other,
        "settings": listener,  # every listener setting in force, as stored
    }


def simulator_statement(ae_title: str = "CT01", echo_port: int | None = None) -> dict[str, Any]:
    """The CT simulator's statement: what it proposes as SCU, and its Verification SCP."""
    encodable = set(SIM_UNCOMPRESSED + SIM_COMPRESSED)
    proposable = list(dict.fromkeys(SIM_SYNTAX_ALIASES.values()))
    return {
        "kind": "simulator",
        "title": f"DICOM Lab CT simulator {ae_title!r}: Storage SCU, Verification SCU and SCP",
        "source": "the simulator's own capabilities (dicomlab.conformance, used by ct_simulator)",
        "application_entity": {
            "ae_title": ae_title, "roles": ["Storage SCU", "Verification SCU", "Verification SCP"],
            "echo_port": echo_port,
        },
        "sop_classes": [
            {"uid": SIM_DEFAULT_SOP_CLASS, "name": "CT Image Storage", "role": "SCU", "service": "C-STORE",
             "default": True, "transfer_syntaxes": [ts_item(t) for t in SIM_DEFAULT_PROPOSAL]},
            {"uid": VERIFICATION, "name": "Verification", "role": "SCU", "service": "C-ECHO", "default": True,
             "transfer_syntaxes": [ts_item(t) for t in SIM_ECHO_SYNTAXES]},
            {"uid": VERIFICATION, "name": "Verification", "role": "SCP", "service": "C-ECHO, by the worker",
             "default": True, "transfer_syntaxes": [ts_item(t) for t in SIM_ECHO_SYNTAXES]},
        ],
        "on_request": {
            "sop_classes": [{**ts_item(uid), "option": f"--sop-class {name}",
                             "note": "" if uid == SIM_DEFAULT_SOP_CLASS else "a misbehaviour on purpose: CT pixels "
                             "under another SOP class"} for name, uid in SIM_SOP_CLASSES.items()],
            "transfer_syntaxes": [{**ts_item(uid), "option": f"--transfer-syntax {name}",
                                   "encodable": uid in encodable}
                                  for name, uid in SIM_SYNTAX_ALIASES.items()
                                  if name not in ("jpeg2000-lossless",)],
        },
        "proposal": "One presentation context per association: the SOP class being sent, with the proposed "
                    "transfer syntaxes in order of preference (default: Explicit VR Little Endian, Implicit VR "
                    "Little Endian, as storescu). Echo: Verification with pynetdicom's four uncompressed syntaxes.",
        "encodable": [ts_item(t) for t in proposable if t in encodable],
        "proposable_not_encodable": [ts_item(t) for t in proposable if t not in encodable],
        "tls": {"enabled": False, "words": "The simulator speaks plain TCP."},
    }
