"""The conformance check: the CT simulator's proposal against the PACS's live settings.

For each presentation context the simulator proposes (the SOP class it sends, and
Verification for C-ECHO), which transfer syntaxes overlap, which one the PACS would
choose (the first of its own list that was proposed, as pynetdicom negotiates), and in
words what would fail. The simulator's node in the registry is checked too: an
unregistered or disabled node never reaches the negotiation of contexts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .conformance import (
    SIM_COMPRESSED,
    SIM_DEFAULT_PROPOSAL,
    SIM_DEFAULT_SOP_CLASS,
    SIM_ECHO_SYNTAXES,
    SIM_SOP_CLASSES,
    SIM_SYNTAX_ALIASES,
    SIM_UNCOMPRESSED,
    ts_item,
)
from .dicom import VERIFICATION, uid_name
from .settings import ListenerSettings, Node

ENCODABLE = frozenset(SIM_UNCOMPRESSED + SIM_COMPRESSED)


def _name(uid: str | None) -> str:
    return ts_item(uid)["name"] if uid else "nothing"


def _names(uids: Sequence[str]) -> str:
    return ", ".join(_name(u) for u in uids) or "nothing"


def context_row(pacs: ListenerSettings, sop_class: str, proposed: Sequence[str], service: str,
                node: Node | None, encodable_needed: bool = True) -> dict[str, Any]:
    """One proposed presentation context against the PACS's settings (and the node's services)."""
    sop = _name(sop_class)
    accepts_class = sop_class == VERIFICATION or sop_class in pacs.sop_classes
    overlap = [t for t in pacs.transfer_syntaxes if t in proposed] if accepts_class else []
    chosen = overlap[0] if overlap else None
    what = "C-ECHO" if service == "C-ECHO" else "C-STORE"
    proposal = f"{sop} with {_names(proposed)}{' only' if len(proposed) == 1 else ''}"
    ok = False
    if not accepts_class:
        words = (f"{proposal}: the PACS does not accept the SOP class {uid_name(sop_class)}; every {what} would "
                 f"be refused at negotiation (abstract syntax not supported). Fix: add it to the listener's SOP "
                 "classes, or send objects of a class the PACS accepts.")
    elif not overlap:
        words = (f"{proposal}: the PACS accepts none of these transfer syntaxes (it accepts "
                 f"{_names(pacs.transfer_syntaxes)}); every {what} would be refused at negotiation. Fix: add one "
                 "of them to the listener's transfer syntaxes, or let the CT propose one the PACS accepts.")
    elif node is not None and not node.allows(service):
        words = (f"{proposal}: node {node.ae_title!r} is not allowed {service}, so the PACS refuses this context "
                 f"(user rejection) and every {what} fails. Fix: add {service} to the node's services.")
    elif encodable_needed and chosen not in ENCODABLE:
        words = (f"{proposal}: the PACS would choose {_name(chosen)}, which the simulator cannot encode; the "
                 "send stops before the first C-STORE. Fix: propose another syntax too.")
    else:
        ok = True
        words = f"{proposal}: accepted as {_name(chosen)}."
    return {"sop_class": ts_item(sop_class), "service": service, "proposed": [ts_item(t) for t in proposed],
            "pacs_accepts_sop_class": accepts_class,
            "pacs_transfer_syntaxes": [ts_item(t) for t in pacs.transfer_syntaxes],
            "overlap": [ts_item(t) for t in overlap], "negotiated": ts_item(chosen) if chosen else None,
            "ok": ok, "words": words}


def node_finding(node: Node | None, sim_ae_title: str) -> dict[str, Any]:
    if node is None:
        return {"ok": False, "registered": False, "words": (
            f"{sim_ae_title!r} is not an authorized node: the PACS rejects every association from it "
            "(A-ASSOCIATE-RJ 1/1/3, calling-AE-title-not-recognized) before any presentation context is "
            f"negotiated. Fix: add {sim_ae_title} as a node with C-ECHO and C-STORE.")}
    if not node.enabled:
        return {"ok": False, "registered": True, "enabled": False, "words": (
            f"Node {node.ae_title!r} is disabled: the PACS rejects every association from it "
            "(calling-AE-title-not-recognized). Fix: enable the node.")}
    return {"ok": True, "registered": True, "enabled": True, "services": node.services, "host": node.host,
            "words": f"Node {node.ae_title!r} is authorized from {node.host} for {', '.join(node.services) or 'nothing'} "
                     "(its source address is checked at each association)."}


def check(pacs: ListenerSettings, node: Node | None, sim_ae_title: str = "CT01",
          sop_class: str = SIM_DEFAULT_SOP_CLASS, proposal: Sequence[str] = SIM_DEFAULT_PROPOSAL) -> dict[str, Any]:
    """The simulator (sending ``sop_class`` with ``proposal``) against the PACS; ``node``: the
    simulator's node in the registry (None: not registered)."""
    rows = [context_row(pacs, sop_class, list(proposal), "C-STORE", node),
            context_row(pacs, VERIFICATION, list(SIM_ECHO_SYNTAXES), "C-ECHO", node, encodable_needed=False)]
    alternatives = []
    for name, uid in SIM_SYNTAX_ALIASES.items():
        if name == "jpeg2000-lossless":  # the same UID as j2k
            continue
        row = context_row(pacs, sop_class, [uid], "C-STORE", None)
        alternatives.append({"option": f"--transfer-syntax {name}", "transfer_syntax": ts_item(uid),
                             "encodable": uid in ENCODABLE, "ok": row["ok"], "words": row["words"]})
    classes = []
    for name, uid in SIM_SOP_CLASSES.items():
        accepted = uid in pacs.sop_classes
        classes.append({"option": f"--sop-class {name}", "sop_class": ts_item(uid), "accepted": accepted,
                        "words": f"{_name(uid)}: " + ("accepted by the PACS." if accepted else
                                                     "the PACS does not accept this SOP class.")})
    who = node_finding(node, sim_ae_title)
    failures = [r["words"] for r in rows if not r["ok"]]
    if not who["ok"]:
        failures.insert(0, who["words"])
    if failures:
        summary = f"What would fail ({len(failures)}): " + " ".join(failures)
    else:
        summary = (f"{sim_ae_title} and the PACS agree: {rows[0]['words']} C-ECHO: {rows[1]['words']}")
    return {"ok": not failures, "summary": summary, "failures": failures, "node": who, "contexts": rows,
            "transfer_syntax_options": alternatives, "sop_class_options": classes,
            "simulator": {"ae_title": sim_ae_title, "sop_class": ts_item(sop_class),
                          "proposal": [ts_item(t) for t in proposal]}}
