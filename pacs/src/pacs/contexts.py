"""Presentation contexts a node may have: Verification for C-ECHO, the
listener's storage SOP classes for C-STORE, Storage Commitment Push Model for
STORAGE-COMMITMENT, each with the listener's transfer
syntaxes. Built once per (settings, services) and shared read-only: pynetdicom
builds new result contexts during negotiation and does not modify these.
"""

from __future__ import annotations

import threading

from pynetdicom.presentation import PresentationContext, build_context

from dicomlab.dicom import TRANSFER_SYNTAX_NAMES, VERIFICATION, uid_name
from dicomlab.settings import ListenerSettings, Node

from .commitment import STORAGE_COMMITMENT

_cache: dict[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], list[PresentationContext]] = {}
_lock = threading.Lock()


def contexts_for(settings: ListenerSettings, node: Node) -> list[PresentationContext]:
    return contexts_for_services(settings, node.services)


def contexts_for_services(settings: ListenerSettings, services: list[str]) -> list[PresentationContext]:
    key = (tuple(settings.sop_classes), tuple(settings.transfer_syntaxes), tuple(services))
    with _lock:
        cached = _cache.get(key)
        if cached is None:
            cached = []
            if "C-ECHO" in services:
                cached.append(build_context(VERIFICATION, settings.transfer_syntaxes))
            if "C-STORE" in services:
                cached.extend(build_context(uid, settings.transfer_syntaxes) for uid in settings.sop_classes)
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
    elif abstract in settings.sop_classes:
        if not node.allows("C-STORE"):
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
