"""Presentation contexts a node may have: Verification for C-ECHO, the
listener's storage SOP classes for C-STORE, each with the listener's transfer
syntaxes; Storage Commitment Push Model for STORAGE-COMMITMENT; the Study Root Q/R SOP
classes for C-FIND / C-MOVE / C-GET, each with
the uncompressed syntaxes an identifier travels in (Explicit and Implicit VR Little
Endian, whatever the listener's storage syntaxes). A node allowed C-GET also has the
storage SOP classes with SCP/SCU role selection accepted, so the PACS may send its
C-STORE sub-operations on the C-GET's association (the node may still store to the PACS
only if it has C-STORE: a node with C-GET and without C-STORE is offered a storage SOP
class only when its request selects the SCP role for it, and then only that role).
Built once per (settings, services) and shared read-only: pynetdicom
builds new result contexts during negotiation and does not modify these.
"""

from __future__ import annotations

import threading
from typing import Any

from pynetdicom.presentation import PresentationContext, build_context

from dicomlab.dicom import EXPLICIT_VR_LE, IMPLICIT_VR_LE, TRANSFER_SYNTAX_NAMES, VERIFICATION, uid_name
from dicomlab.settings import ListenerSettings, Node

from .commitment import STORAGE_COMMITMENT

_cache: dict[tuple[Any, ...], list[PresentationContext]] = {}
_lock = threading.Lock()

# Study Root Query/Retrieve (PS3.4 C.6.2): the SOP class of each service
QR_SOP_CLASSES = {
    "C-FIND": "1.2.840.10008.5.1.4.1.2.2.1",
    "C-MOVE": "1.2.840.10008.5.1.4.1.2.2.2",
    "C-GET": "1.2.840.10008.5.1.4.1.2.2.3",
}
QR_TRANSFER_SYNTAXES = [EXPLICIT_VR_LE, IMPLICIT_VR_LE]


def scp_roles(rq: Any) -> frozenset[str]:
    """The SOP classes for which an A-ASSOCIATE-RQ selects the SCP role for the requestor."""
    try:
        return frozenset(str(item.sop_class_uid) for item in rq.user_information
                         if type(item).__name__ == "SCP_SCU_RoleSelectionNegotiation" and item.scp_role)
    except (AttributeError, TypeError):
        return frozenset()


def contexts_for(settings: ListenerSettings, node: Node, rq: Any = None) -> list[PresentationContext]:
    roles = scp_roles(rq) if rq is not None and node.allows("C-GET") and not node.allows("C-STORE") else None
    return contexts_for_services(settings, node.services, roles)


def contexts_for_services(settings: ListenerSettings, services: list[str],
                          roles: frozenset[str] | None = None) -> list[PresentationContext]:
    """``roles``: for a node with C-GET and without C-STORE, the storage SOP classes its request
    selects the SCP role for (the only ones offered to it)."""
    key = (tuple(settings.sop_classes), tuple(settings.transfer_syntaxes), tuple(services), roles)
    with _lock:
        cached = _cache.get(key)
        if cached is None:
            cached = []
            if "C-ECHO" in services:
                cached.append(build_context(VERIFICATION, settings.transfer_syntaxes))
            if "C-STORE" in services or "C-GET" in services:
                for uid in settings.sop_classes:
                    if "C-STORE" not in services and roles is not None and uid not in roles:
                        continue
                    cx = build_context(uid, settings.transfer_syntaxes)
                    if "C-GET" in services:  # accept the requestor's SCP role: C-GET sub-operations
                        cx.scu_role, cx.scp_role = "C-STORE" in services, True
                    cached.append(cx)
            for service, uid in QR_SOP_CLASSES.items():
                if service in services:
                    cached.append(build_context(uid, QR_TRANSFER_SYNTAXES))
            if "STORAGE-COMMITMENT" in services:
                cached.append(build_context(STORAGE_COMMITMENT, settings.transfer_syntaxes))
            if len(_cache) > 64:
                _cache.clear()
            _cache[key] = cached
        return cached


def why_refused(abstract: str, transfer_syntaxes: list[str], settings: ListenerSettings, node: Node) -> tuple[str, str]:
    """(reason, sentence) for a refused presentation context."""
    name = uid_name(abstract)
    if abstract == VERIFICATION:
        if not node.allows("C-ECHO"):
            return "service-not-allowed", (
                f"{name} refused: node {node.ae_title!r} is not allowed C-ECHO. "
                "Fix: add C-ECHO to the node's services."
            )
    elif abstract == STORAGE_COMMITMENT:
        if not node.allows("STORAGE-COMMITMENT"):
            return "service-not-allowed", (
                f"{name} refused: node {node.ae_title!r} is not allowed STORAGE-COMMITMENT, so the PACS will "
                "not report on what it stored. Fix: add STORAGE-COMMITMENT to the node's services (and check "
                "its host and port: the report goes there)."
            )
    elif abstract in QR_SOP_CLASSES.values():
        service = next(k for k, v in QR_SOP_CLASSES.items() if v == abstract)
        if not node.allows(service):
            return "service-not-allowed", (
                f"{name} refused: node {node.ae_title!r} is not allowed {service} (services: "
                f"{', '.join(node.services) or 'none'}). Fix: add {service} to the node's services."
            )
        offered = ", ".join(TRANSFER_SYNTAX_NAMES.get(t, t) for t in transfer_syntaxes)
        return "transfer-syntax-not-supported", (
            f"{name} refused: none of the proposed transfer syntaxes ({offered}) is accepted for a query "
            "(accepted: Explicit VR Little Endian, Implicit VR Little Endian)."
        )
    elif abstract in settings.sop_classes:
        if not node.allows("C-STORE") and not node.allows("C-GET"):
            return "service-not-allowed", (
                f"{name} refused: node {node.ae_title!r} is not allowed C-STORE (services: "
                f"{', '.join(node.services) or 'none'}). Fix: add C-STORE to the node's services."
            )
    else:
        return "abstract-syntax-not-supported", (
            f"{name} refused: this PACS does not accept that SOP class. Fix: add it to the listener's "
            "SOP classes, or send a kind of object the PACS accepts."
        )
    offered = ", ".join(TRANSFER_SYNTAX_NAMES.get(t, t) for t in transfer_syntaxes)
    accepted = ", ".join(TRANSFER_SYNTAX_NAMES.get(t, t) for t in settings.transfer_syntaxes)
    return "transfer-syntax-not-supported", (
        f"{name} refused: none of the proposed transfer syntaxes ({offered}) is accepted "
        f"(accepted: {accepted}). Fix: let the modality also propose an accepted syntax, e.g. "
        "Explicit VR Little Endian, or add the syntax to the listener."
    )
