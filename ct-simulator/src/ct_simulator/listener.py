"""The CT's own listener: what a PACS opens associations *to*.

``Listener(ae_title, port, folder).start()`` / ``.stop()`` serves, on one port:

- **C-ECHO** (Verification SCP), so the PACS can check it reaches the CT;
- **C-STORE** of any storage SOP class into ``folder`` (``<SOP Instance UID>.dcm``,
  written whole: a temporary file renamed into place), so the CT can be a C-MOVE
  destination;
- **N-EVENT-REPORT** of Storage Commitment Push Model (1.2.840.10008.1.20.1):
  the report the PACS sends on a *new* association after answering the CT's
  N-ACTION. The PACS proposes the context with SCP/SCU role selection (it is the
  SCP of the SOP class but the requestor of the association); we accept its SCP
  role. Reports are kept in ``reports`` and ``wait_report(transaction_uid)``
  waits for one.

``port`` 0 takes a free port (``.port`` after ``start``). ``accept_from``
(AE titles) rejects every other calling AE title, as a real modality that only
knows its PACS does. Misbehaviour on demand: ``report_status`` answers each
N-EVENT-REPORT with that status instead of Success (e.g. 0x0110).

Runnable as ``ct-simulator listen``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import StorageCommitmentPushModel
from pynetdicom.transport import ThreadedAssociationServer

from dicomlab.dicom import VERIFICATION
from dicomlab.text import safe_text

from .network import set_nodelay

LOG = logging.getLogger(__name__)

STORAGE_COMMITMENT = str(StorageCommitmentPushModel)  # 1.2.840.10008.1.20.1
# transfer syntaxes the listener accepts for C-STORE: the uncompressed ones and the usual compressed ones
_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
             "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
             "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"]


@dataclass
class CommitmentReport:
    """One N-EVENT-REPORT received: event type 1 (all committed) or 2 (some failed)."""

    transaction_uid: str
    event_type: int
    calling_aet: str
    peer: str
    committed: list[tuple[str, str]] = field(default_factory=list)  # (SOP Class UID, SOP Instance UID)
    failed: list[tuple[str, str, int]] = field(default_factory=list)  # (class, instance, Failure Reason)
    answered: int = 0x0000  # the status we answered

    def to_dict(self) -> dict[str, Any]:
        return {"transaction_uid": self.transaction_uid, "event_type": self.event_type,
                "calling_aet": self.calling_aet, "peer": self.peer, "committed": len(self.committed),
                "failed": len(self.failed), "failures": [{"sop_instance_uid": i, "reason": f"0x{r:04X}"}
                                                         for _c, i, r in self.failed],
                "answered": f"0x{self.answered:04X}"}


def _refs(ds: Dataset, keyword: str) -> list[Dataset]:
    return list(getattr(ds, keyword, None) or [])


def parse_report(ds: Dataset | None, event_type: int, calling: str, peer: str) -> CommitmentReport:
    ds = ds if ds is not None else Dataset()
    rep = CommitmentReport(str(getattr(ds, "TransactionUID", "") or ""), event_type, calling, peer)
    for item in _refs(ds, "ReferencedSOPSequence"):
        rep.committed.append((str(getattr(item, "ReferencedSOPClassUID", "")),
                              str(getattr(item, "ReferencedSOPInstanceUID", ""))))
    for item in _refs(ds, "FailedSOPSequence"):
        rep.failed.append((str(getattr(item, "ReferencedSOPClassUID", "")),
                           str(getattr(item, "ReferencedSOPInstanceUID", "")),
                           int(getattr(item, "FailureReason", 0x0110) or 0x0110)))
    return rep


class Listener:
    """C-ECHO, C-STORE into a folder, and Storage Commitment reports, on one port."""

    def __init__(self, ae_title: str, port: int, folder: str | os.PathLike[str] | None = None, *,
                 bind: str = "0.0.0.0", accept_from: list[str] | None = None, report_status: int = 0x0000,
                 store_status: int = 0x0000) -> None:
        self.ae_title = ae_title
        self.bind = bind
        self.port = port
        self.folder = Path(folder) if folder is not None else None
        self.accept_from = accept_from
        self.report_status = report_status
        self.store_status = store_status
        self.reports: list[CommitmentReport] = []
        self.stored: list[str] = []  # SOP Instance UIDs written to the folder
        self.log: list[str] = []  # one line per association event, for a terminal or a test
        self._cond = threading.Condition()
        self._server: ThreadedAssociationServer | None = None

    # -- handlers -----------------------------------------------------------------
    def _who(self, event: evt.Event) -> tuple[str, str]:
        req = event.assoc.requestor
        return safe_text(str(req.ae_title).strip()), f"{req.address}:{req.port}"

    def _note(self, line: str) -> None:
        LOG.info("%s", line)
        with self._cond:
            self.log.append(line)
            self._cond.notify_all()

    def _on_report(self, event: evt.Event) -> tuple[int, Dataset | None]:
        calling, peer = self._who(event)
        try:
            ds = event.event_information
        except Exception:  # noqa: BLE001 - an undecodable report: answer processing failure
            self._note(f"N-EVENT-REPORT from {calling} at {peer} could not be decoded; answered 0x0110.")
            return 0x0110, None
        rep = parse_report(ds, int(event.request.EventTypeID or 0), calling, peer)
        rep.answered = self.report_status
        with self._cond:
            self.reports.append(rep)
            self._cond.notify_all()
        self._note(f"storage commitment report from {calling} at {peer}: transaction {safe_text(rep.transaction_uid)}, "
                   f"{len(rep.committed)} committed, {len(rep.failed)} failed; answered 0x{self.report_status:04X}.")
        return self.report_status, None

    def _on_store(self, event: evt.Event) -> int:
        calling, peer = self._who(event)
        if self.store_status != 0x0000:
            return self.store_status
        if self.folder is None:
            return 0xA700  # Out of resources: nowhere to keep it
        uid = str(event.request.AffectedSOPInstanceUID or "")
        if not uid or not all(c.isdigit() or c == "." for c in uid) or len(uid) > 64:
            return 0xC000  # not a UID we can name a file after
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{uid}.dcm"
        tmp = self.folder / f".{uid}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(event.encoded_dataset())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            self._note(f"C-STORE from {calling} at {peer} of {uid} could not be written: {exc}; answered 0xA700.")
            return 0xA700
        with self._cond:
            self.stored.append(uid)
            self._cond.notify_all()
        return 0x0000

    def _on_echo(self, event: evt.Event) -> int:
        return 0x0000

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> Listener:
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        if self.accept_from:
            ae.require_calling_aet = list(self.accept_from)
        ae.maximum_associations = 20
        ae.add_supported_context(VERIFICATION)
        # the PACS is the SCP of Storage Commitment on an association it requests: accept its SCP role
        ae.add_supported_context(STORAGE_COMMITMENT, scu_role=True, scp_role=True)
        for cx in AllStoragePresentationContexts:
            if len(ae.supported_contexts) >= 127:
                break
            ae.add_supported_context(cx.abstract_syntax, _SYNTAXES)
        handlers = [(evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_N_EVENT_REPORT, self._on_report),
                    (evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, self._on_echo)]
        self._server = ae.start_server((self.bind, self.port), block=False, evt_handlers=handlers)
        self.port = int(self._server.server_address[1])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def wait_report(self, transaction_uid: str | None = None, timeout: float = 30.0) -> CommitmentReport | None:
        """The report for ``transaction_uid`` (any report when None), or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for rep in self.reports:
                    if transaction_uid is None or rep.transaction_uid == transaction_uid:
                        return rep
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
