"""Query/Retrieve scenarios: the modality's find / move / get (``probe.run`` hands them here),
and the move destination the runner sets up (``Destination``).

An action ``kind = "find" | "move" | "get"`` first sends ``slices`` CT images (if any) as
the scenario's node, so that there is something to find or retrieve, then asks the PACS
for that study. ``move`` names ``destination`` (an AE title); ``get`` with ``role = false``
leaves out SCP/SCU role selection. The observation: kind ``ok`` or the failure class
(``qr-failed`` for a non-success final status), ``statuses`` [the final status], ``sent``
(sub-operations completed) and ``failed``.

``setup.destination`` (for move): ``ae_title``, ``host`` (default ``{peer}``: where the PACS
reaches the runner), and ``port``: ``"closed"`` (a port nothing listens on: the node
registered with the wrong port) or ``"listener"`` (a storage SCP the runner starts on a free
port, on every address); ``accept_calling`` limits the callers that listener accepts, so a
list without the PACS's AE title makes it reject the PACS (1/1/3).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from pynetdicom import AE, evt

from ..iod import StudyPlan, iter_instances
from ..network import Link
from ..qr import find, get, identifier, move
from ..sender import SendOptions, send
from ..syntaxes import DEFAULT_PROPOSAL

QR_KINDS = ("find", "move", "get")
STORAGE = ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.7"]
UNCOMPRESSED = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


def run(spec: dict[str, Any], link: Link) -> dict[str, Any]:
    kind = spec["kind"]
    started = time.monotonic()
    study = ""
    slices = int(spec.get("slices", 0))
    if slices:
        plan = StudyPlan(studies=1, series=1, slices=slices, rows=32, cols=32,
                         seed=int.from_bytes(os.urandom(4), "big") >> 1, station_name=spec["calling_aet"][:16])
        sent = send(plan, link, SendOptions(transfer_syntaxes=DEFAULT_PROPOSAL))
        if sent.problem is not None:
            return {"kind": "error", "message": f"could not store the study to retrieve first: "
                    f"{sent.problem.message}", "statuses": [], "elapsed_s": time.monotonic() - started}
        study = next(iter_instances(plan)).dataset.StudyInstanceUID
    keys = [f"StudyInstanceUID={study}"]
    if kind == "find":
        rep = find(link, identifier("STUDY", keys, True))
    elif kind == "move":
        rep = move(link, identifier("STUDY", keys, False), spec.get("destination", ""))
    else:
        rep = get(link, identifier("STUDY", keys, False), None, role=bool(spec.get("role", True)))
    obs: dict[str, Any] = {"kind": "ok" if rep.problem is None else rep.problem.kind,
                           "statuses": [] if rep.final is None else [rep.final],
                           "sent": rep.completed if kind != "find" else len(rep.matches),
                           "failed": rep.failed, "elapsed_s": time.monotonic() - started}
    if rep.problem is not None:
        obs["message"], obs["hint"] = rep.problem.message, rep.problem.hint
        if rep.problem.kind == "no-context":
            obs["context_results"] = sorted({int(r["result"]) for r in rep.problem.detail.get("rejected", [])})
    return obs


class Destination:
    """A move destination: a storage SCP on a free port, all addresses, that counts what it gets."""

    def __init__(self, ae_title: str, accept_calling: list[str] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("0.0.0.0", 0))
            self.port = s.getsockname()[1]
        ae = AE(ae_title=ae_title)
        for uid in STORAGE:
            ae.add_supported_context(uid, UNCOMPRESSED)
        if accept_calling:
            ae.require_calling_aet = list(accept_calling)
        self.received = 0
        self.server = ae.start_server(("0.0.0.0", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event: Any) -> int:
        self.received += 1
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()
