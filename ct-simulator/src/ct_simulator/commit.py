"""Storage Commitment from the CT's side: ask the PACS to commit, wait for its report.

The request (N-ACTION, action type 1 "Request Storage Commitment") goes on a
**new association after the C-STOREs** (the sending associations are released
first): that is what most modalities do, and it keeps the C-STORE path
(pre-encoded P-DATA, ``wire.StoreChannel``) unchanged. The PACS answers the
N-ACTION at once and sends its report (N-EVENT-REPORT) later, on an association
it opens to the host and port it has on file for the CT's AE title; the CT's
``listener.Listener`` receives it. A report that never comes is a timeout, and
the hint says where to look: the PACS's record of the CT's port.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import StorageCommitmentPushModelInstance

from . import outcome
from .listener import STORAGE_COMMITMENT, CommitmentReport, Listener
from .network import Link, associate, release
from .outcome import Problem

EXIT_NOT_COMMITTED = outcome.EXIT_INSTANCE_FAILED  # some instances reported failed


@dataclass
class CommitOutcome:
    transaction_uid: str
    requested: int
    report: CommitmentReport | None = None
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.problem is not None:
            return self.problem.exit_code
        if self.report is not None and self.report.failed:
            return EXIT_NOT_COMMITTED
        return outcome.EXIT_OK

    def to_dict(self) -> dict[str, object]:
        p = self.problem
        return {"transaction_uid": self.transaction_uid, "requested": self.requested,
                "report": None if self.report is None else self.report.to_dict(),
                "problem": None if p is None else {"kind": p.kind, "message": p.message, "hint": p.hint},
                "exit_code": self.exit_code}


def request_dataset(transaction_uid: str, refs: list[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def request(link: Link, transaction_uid: str, refs: list[tuple[str, str]]) -> Problem | None:
    """Send the N-ACTION on its own association; None when the PACS answered Success."""
    assoc, problem = associate(link, [build_context(STORAGE_COMMITMENT)])
    if assoc is None:
        return problem
    try:
        status, _reply = assoc.send_n_action(request_dataset(transaction_uid, refs), 1, STORAGE_COMMITMENT,
                                             StorageCommitmentPushModelInstance)
    finally:
        release(assoc)
    code = getattr(status, "Status", None)
    if code is None:
        return Problem("aborted", f"the PACS at {link.peer} did not answer the storage commitment request "
                       "(N-ACTION).", "Read the PACS's log for this association.")
    if code != 0x0000:
        return Problem("instance-failed", f"the PACS at {link.peer} answered the storage commitment request with "
                       f"status 0x{int(code):04X}.", "Is STORAGE-COMMITMENT among the services of this node?")
    return None


def commit(link: Link, refs: list[tuple[str, str]], listener: Listener | None, timeout: float) -> CommitOutcome:
    """Request commitment of ``refs`` and wait up to ``timeout`` s for the report on ``listener``."""
    result = CommitOutcome(generate_uid(), len(refs))
    result.problem = request(link, result.transaction_uid, refs)
    if result.problem is not None:
        return result
    if listener is None:  # misbehaviour on purpose: the PACS's report finds nobody
        result.notes.append("not listening for the storage commitment report (on purpose): the PACS's attempts "
                            "to deliver it fail, and it says so in its events.")
        return result
    result.report = listener.wait_report(result.transaction_uid, timeout)
    if result.report is None:
        result.problem = Problem(
            "timed-out", f"timed out: no storage commitment report reached {link.calling_aet} on port "
            f"{listener.port} within {timeout:g} s.",
            f"Check the PACS's record of {link.calling_aet}: its host and port must be where this CT listens "
            f"(port {listener.port}), and the node needs the STORAGE-COMMITMENT service.")
    return result
