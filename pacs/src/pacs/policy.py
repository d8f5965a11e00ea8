"""The association decision: DESIGN.md's policy table, in its order.

``decide`` never raises: any error while deciding is a rejection (fail closed).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from dicomlab.aetitle import near_miss, resolve_host, same_address
from dicomlab.dicom import (
    RJ_CALLED_AET,
    RJ_CALLING_AET,
    RJ_REGISTRY_UNAVAILABLE,
    RJ_TOO_MANY,
    Rejection,
)
from dicomlab.errors import RegistryUnavailable
from dicomlab.registry import Registry
from dicomlab.settings import ListenerSettings, Node

from .counters import Counts, SharedCounts
from .tlspolicy import tls_problem

LOG = logging.getLogger(__name__)


@dataclass
class Decision:
    accepted: bool
    reason: str  # the event reason: accepted | registry-unavailable | called-aet-mismatch | ...
    message: str  # one sentence for a PACS administrator: what happened and what to do
    rejection: Rejection | None = None
    settings: ListenerSettings | None = None
    node: Node | None = None
    detail: dict[str, object] = field(default_factory=dict)


class AssociationSlots:
    """Counts accepted associations that are still open, for row 5 of the table.

    With several listener processes (``PACS_WORKERS``), ``shared`` is a
    ``multiprocessing.Array`` with one counter per process (made before the fork):
    the limit applies to their sum, and a process that dies only loses its own
    counter, which the supervisor resets.

    Per node (``max_associations_per_node``): every accepted association is also
    counted under its calling AE title in ``nodes`` (a ``counters.Counts`` row,
    shared by every listener process the same way), whether or not the limit is
    on, so that switching it on applies at once to the associations already open.
    """

    def __init__(self, shared: Any = None, index: int = 0, nodes: Counts | None = None) -> None:
        self._shared = shared
        self._index = index
        self._lock = shared.get_lock() if shared is not None else threading.Lock()
        self._local = 0
        self.nodes = nodes if nodes is not None else SharedCounts(1).row(0)

    @property
    def active(self) -> int:
        return sum(self._shared) if self._shared is not None else self._local

    def try_take(self, maximum: int) -> bool:
        with self._lock:
            if self.active >= maximum:
                return False
            if self._shared is not None:
                self._shared[self._index] += 1
            else:
                self._local += 1
            return True

    def give_back(self, node: str | None = None) -> None:
        """One association ended; ``node``: its calling AE title, if it was counted per node."""
        if node is not None:
            self.nodes.give_back(node)
        with self._lock:
            if self._shared is not None:
                self._shared[self._index] -= 1
            else:
                self._local -= 1

    def try_take_node(self, node: str, per_node: int) -> bool:
        """Count one more association of ``node`` unless it has ``per_node`` open (0: no limit)."""
        return not self.nodes.try_take(node, per_key=per_node)


def _reject(rj: Rejection, reason: str, message: str, **kw: object) -> Decision:
    return Decision(False, reason, message, rejection=rj, **kw)  # type: ignore[arg-type]


def decide(
    registry: Registry, calling_aet: str, called_aet: str, peer_ip: str, slots: AssociationSlots,
    tls: dict[str, Any] | None = None, tls_port: int | None = None,
) -> Decision:
    """Decide one A-ASSOCIATE-RQ from what Redis says now. Never raises. ``tls``: the TLS
    connection it came over (tls.transport), None on the plain port."""
    try:
        return _decide(registry, calling_aet.strip(" "), called_aet.strip(" "), peer_ip, slots, tls, tls_port)
    except Exception as exc:  # fail closed: whatever went wrong, nobody gets in
        LOG.exception("association decision failed")
        return _reject(
            RJ_REGISTRY_UNAVAILABLE,
            "registry-unavailable",
            f"Could not check the association ({type(exc).__name__}: {exc}); refused as a "
            "transient failure. The modality may retry; check the PACS and Redis logs.",
        )


def _decide(registry: Registry, calling: str, called: str, peer: str, slots: AssociationSlots,
            tls: dict[str, Any] | None = None, tls_port: int | None = None) -> Decision:
    """The table's rows in order; the first that refuses decides (each step: None, it passes)."""
    # 1. registry reachable?
    try:
        settings, node = registry.authorization_snapshot(calling)
    except RegistryUnavailable as exc:
        return _reject(
            RJ_REGISTRY_UNAVAILABLE,
            "registry-unavailable",
            f"The registry (Redis) is unreachable, so no node can be checked; refused as a transient "
            f"failure (the modality should retry). Fix: bring Redis back; the PACS recovers by itself. ({exc})",
        )
    refused = _called_title(settings, called) or _calling_node(registry, settings, node, calling)
    if refused is not None:
        return refused
    assert node is not None  # row 3 refuses a calling AE title that is not a node
    refused = (_peer_address(settings, node, calling, peer)
               or _tls(settings, node, peer, tls, tls_port)
               or _open_slots(settings, node, calling, slots))  # last: it takes a slot when it passes
    if refused is not None:
        return refused
    return Decision(True, "accepted", f"Association accepted for {calling!r} from {peer}.",
                    settings=settings, node=node)


def _called_title(settings: ListenerSettings, called: str) -> Decision | None:
    """2. the called AE title is the PACS's."""
    if called == settings.ae_title:
        return None
    hint = (
        " (differs only by case: AE titles are case-sensitive)"
        if called.casefold() == settings.ae_title.casefold()
        else ""
    )
    return _reject(
        RJ_CALLED_AET,
        "called-aet-mismatch",
        f"The modality called AE title {called!r} but this PACS is {settings.ae_title!r}{hint}. "
        f"Fix: set the PACS AE title on the modality to {settings.ae_title!r}.",
        settings=settings,
        detail={"expected": settings.ae_title, "actual": called},
    )


def _calling_node(registry: Registry, settings: ListenerSettings, node: Node | None,
                  calling: str) -> Decision | None:
    """3. the calling AE title is an enabled authorized node."""
    if node is None:
        miss = near_miss(calling, registry.node_titles())
        if miss:
            msg = (
                f"Calling AE title {calling!r} is not an authorized node, but {miss!r} is: AE titles are "
                f"case-sensitive. Fix: make the modality send {miss!r}, or register {calling!r}."
            )
        else:
            msg = (
                f"Calling AE title {calling!r} is not an authorized node. Fix: add {calling!r} "
                f"(with its IP address and port) to the authorized nodes, or correct the modality's AE title."
            )
        return _reject(RJ_CALLING_AET, "unknown-calling-aet", msg, settings=settings,
                       detail={"near_miss": miss} if miss else {})
    if not node.enabled:
        return _reject(
            RJ_CALLING_AET,
            "unknown-calling-aet",
            f"Node {calling!r} is registered but disabled. Fix: enable it in the authorized nodes.",
            settings=settings, node=node, detail={"disabled": True},
        )
    return None


def _peer_address(settings: ListenerSettings, node: Node, calling: str, peer: str) -> Decision | None:
    """4. the peer address is the node's host (resolved now)."""
    try:
        addresses = resolve_host(node.host)
    except OSError as exc:
        return _reject(
            RJ_CALLING_AET,
            "host-mismatch",
            f"Node {calling!r} is registered with host {node.host!r}, which does not resolve ({exc}); "
            f"the association came from {peer}. Fix: correct the node's host.",
            settings=settings, node=node, detail={"expected": node.host, "actual": peer},
        )
    if not same_address(peer, addresses):
        expected = ", ".join(sorted(addresses))
        via = f" ({node.host} resolves to {expected})" if expected != node.host else ""
        return _reject(
            RJ_CALLING_AET,
            "host-mismatch",
            f"AE title {calling!r} is authorized from {node.host}{via} but the association came from "
            f"{peer}. Fix: correct the node's IP/host on the PACS, or send from the registered machine.",
            settings=settings, node=node, detail={"expected": sorted(addresses), "actual": peer},
        )
    return None


def _tls(settings: ListenerSettings, node: Node, peer: str, tls: dict[str, Any] | None,
         tls_port: int | None) -> Decision | None:
    """4b. the node's TLS settings against the port it came to (tlspolicy.py)."""
    problem = tls_problem(node, settings, peer, tls, tls_port)
    if problem is None:
        return None
    rj, reason, message, detail = problem
    return _reject(rj, reason, message, settings=settings, node=node, detail=detail)


def _open_slots(settings: ListenerSettings, node: Node, calling: str, slots: AssociationSlots) -> Decision | None:
    """5. simultaneous associations, then 5b. those of this node (max_associations_per_node; counted
    always). Passing takes a slot (given back when the association ends)."""
    if not slots.try_take(settings.max_associations):
        return _reject(
            RJ_TOO_MANY,
            "too-many-associations",
            f"Already {settings.max_associations} associations open (the configured maximum); refused "
            f"as transient (local limit exceeded). Fix: retry later, send fewer associations in parallel, "
            f"or raise max_associations.",
            settings=settings, node=node, detail={"max_associations": settings.max_associations},
        )
    per_node = settings.max_associations_per_node
    if not slots.try_take_node(calling, per_node):
        slots.give_back()
        return _reject(
            RJ_TOO_MANY,
            "too-many-associations",
            f"Node {calling!r} already has {per_node} associations open (the per-node limit, "
            f"max_associations_per_node); refused as transient (local limit exceeded). Fix: make the modality "
            f"send over fewer simultaneous associations, or raise max_associations_per_node (0 turns it off).",
            settings=settings, node=node, detail={"max_associations_per_node": per_node, "limit": "per-node"},
        )
    return None
