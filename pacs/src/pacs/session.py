"""What the PACS knows about one association (``Session``, kept on the association as
``assoc.lab_session``), its id, and the node-status write that goes with its events."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from dicomlab import indexops

from .policy import Decision

_ids = itertools.count(1)
_id_suffix = ""  # ".<worker>" when several listener processes share the port


def number_for_worker(worker: int | None) -> None:
    """Association ids of this process end in ``.<worker>`` (None: the only process)."""
    global _id_suffix
    if worker is not None:
        _id_suffix = f".{worker}"


@dataclass
class Session:
    """What the PACS knows about one association (kept on the pynetdicom thread)."""

    id: str
    calling: str = ""
    called: str = ""
    peer: str = ""
    started: float = field(default_factory=time.monotonic)
    connected: tuple[float, float] = (0.0, 0.0)  # TCP connect, request complete (gate.py), for the ladder
    decision: Decision | None = None
    counted: bool = False
    refusal: str = ""  # "abort" / "dimse-failure": a refused node let in only to be turned away
    stores: int = 0  # C-STORE requests seen (for fault_abort_after)
    indexed_series: set[str] = field(default_factory=set)
    stored: int = 0
    failed: int = 0
    ended: bool = False  # an association-released / -aborted event was written
    tls: dict[str, Any] | None = None  # on the TLS port: version, cipher, client certificate CN (tls.transport)

    def who(self) -> dict[str, Any]:
        return {"assoc_id": self.id, "calling_aet": self.calling, "called_aet": self.called, "peer": self.peer}


def session(assoc: Any) -> Session:
    """The association's Session, made on first use."""
    s = getattr(assoc, "lab_session", None)
    if s is None:
        s = Session(id=f"a{next(_ids):05d}{_id_suffix}", peer=str(assoc.requestor.address),
                    connected=getattr(assoc, "lab_connected", None) or (time.time(), time.time()))
        assoc.lab_session = s
    return s


def status_ops(s: Session, outcome: str, why: str = "") -> Any:
    """The node's last-association status, written with the event (if it is a node)."""
    now = time.time()
    fields: dict[str, Any] = {"last_association": outcome, "last_association_time": now,
                              "last_assoc_id": s.id,
                              "last_association_tls": (s.tls or {}).get("version") or "plain"}
    if why:
        fields["last_rejected_reason"] = why
    return [indexops.node_status(s.calling, **fields)]
