"""The sub-operations of a C-MOVE or C-GET (pacs/qr.py): what is to be sent (``Item``), how it
went (``Tally``: the counts and the final status PS3.4 C.4.2.1.5 / C.4.3.1.4 asks for), and the
words for what went wrong: a file that cannot be sent as stored on the association at hand
(``no_context``), a destination that could not be associated with (``hint``); the request
being answered (``Retrieval``), a request refused at once (``Refused``) and its last response
(``final_response``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pynetdicom.dsutils import encode

from dicomlab.dicom import TRANSFER_SYNTAX_NAMES, uid_name

DESTINATION_UNKNOWN = 0xA801
TOO_MANY = 0xA701  # Refused: Out of resources - unable to calculate number of matches
ALL_FAILED = 0xA702  # Refused: Out of resources - unable to perform sub-operations
SOME_FAILED = 0xB000  # Warning: sub-operations complete, one or more failures or warnings
CANCELLED = 0xFE00
PENDING = 0xFF00
FAILURE_EVENTS = 10
MAX_CONTEXTS = 128  # presentation contexts in one A-ASSOCIATE-RQ (context IDs 1..255, odd)


@dataclass
class Item:
    sop: str
    path: Path
    sop_class: str = ""
    syntax: str = ""
    problem: str = ""  # why it cannot be sent (unreadable file)


@dataclass
class Tally:
    total: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    cancelled: bool = False
    reasons: dict[str, int] = field(default_factory=dict)  # cause -> sub-operations

    @property
    def remaining(self) -> int:
        return self.total - self.completed - self.failed - self.warning

    def fail(self, sop: str, why: str) -> None:
        self.failed += 1
        self.failed_uids.append(sop)
        self.reasons[why] = self.reasons.get(why, 0) + 1

    def final_status(self) -> int:
        if self.cancelled:
            return CANCELLED
        if not self.failed and not self.warning:
            return 0x0000
        return ALL_FAILED if self.failed == self.total else SOME_FAILED


def _syntax(uid: str) -> str:
    return TRANSFER_SYNTAX_NAMES.get(uid, uid)


def read_meta(it: Item) -> None:
    try:
        meta = read_file_meta_info(it.path)
        it.sop_class = str(meta.MediaStorageSOPClassUID).strip("\0 ")
        it.syntax = str(meta.TransferSyntaxUID).strip("\0 ")
    except FileNotFoundError:
        it.problem = "its file is gone from the storage (removed or replaced meanwhile)"
    except Exception as exc:
        it.problem = f"its file cannot be read ({type(exc).__name__}: {exc})"


def no_context(store: Any, it: Item, move: bool) -> str:
    """Why ``it`` cannot be sent on ``store`` as stored ("" when an accepted context fits)."""
    mine = [cx for cx in store.accepted_contexts if str(cx.abstract_syntax) == it.sop_class]
    if not move:
        with_role = [cx for cx in mine if cx.as_scu]
        if mine and not with_role:
            return (f"role not negotiated: the C-GET requestor did not select the SCP role for "
                    f"{uid_name(it.sop_class)} (SCP/SCU Role Selection, PS3.7 D.3.3.4), so the PACS may not send "
                    "it a C-STORE on this association. Fix: propose that SOP class with the SCP role "
                    "(getscu does; pynetdicom: build_role(uid, scp_role=True)).")
        mine = with_role
    if not mine:
        asked = "the requestor" if not move else "the destination"
        return (f"SOP class not accepted: {asked} did not accept {uid_name(it.sop_class)}"
                + (" (not proposed by the C-GET requestor)" if not move else "") + ".")
    syntaxes = [str(cx.transfer_syntax[0]) for cx in mine]
    if it.syntax not in syntaxes:
        return (f"transfer syntax not accepted: the file is stored as {_syntax(it.syntax)} and the PACS sends files "
                f"as stored, but {uid_name(it.sop_class)} was accepted only as "
                f"{', '.join(_syntax(t) for t in syntaxes)}. Fix: let the destination accept {_syntax(it.syntax)}.")
    return ""


def hint(out: Any, node: Any, calling: str) -> str:
    """What to check, for a destination association that failed."""
    if out.rejection == (1, 1, 3):
        return (f"does {node.ae_title} know this PACS's AE title {calling}? The destination must list {calling} "
                "(with this PACS's address) among the callers it accepts.")
    if out.rejection == (1, 1, 7):
        return (f"the node at {node.host}:{node.port} is not {node.ae_title}: check the AE title (or the port) "
                "registered for it.")
    if out.kind in ("connection-refused", "timeout", "unreachable", "unresolved", "connect-failed"):
        return (f"is {node.ae_title}'s registered address right ({node.host}:{node.port}), and is its "
                "storage SCP listening there?")
    if out.kind == "rejected":
        return f"{node.ae_title} refused the association: see its own log for why."
    if out.kind in ("tls-handshake-failed", "tls-unavailable"):
        return (f"{node.ae_title} is registered with tls required, so the PACS calls {node.host}:{node.port} "
                "with DICOM TLS only: that port must be its TLS port, with a certificate from the lab CA that "
                f"names {node.host}.")
    return f"check {node.ae_title} and its registered address {node.host}:{node.port}."


class Refused(Exception):
    """A C-MOVE / C-GET answered at once with ``status`` (``words``; ``reason`` for the event)."""

    def __init__(self, status: int, words: str, reason: str) -> None:
        super().__init__(words)
        self.status, self.words, self.reason = status, words, reason


@dataclass
class Retrieval:
    """One C-MOVE or C-GET request being answered: its association's service, session and
    presentation context, the response it builds, and its words."""

    service: Any
    s: Any
    req: Any
    op: str
    cx_id: int
    ts: Any
    rsp: Any
    dest: str
    what: str
    done_type: str


def final_response(r: Retrieval, tally: Tally) -> int:
    """The last C-MOVE/C-GET response (PS3.4 C.4.2.1.5 counts; the failed UIDs when not all went)."""
    rsp, ts = r.rsp, r.ts
    status = tally.final_status()
    rsp.Status = status
    rsp.NumberOfRemainingSuboperations = tally.remaining if status == CANCELLED else None
    rsp.NumberOfCompletedSuboperations = tally.completed
    rsp.NumberOfFailedSuboperations = tally.failed + (tally.remaining if status != CANCELLED else 0)
    rsp.NumberOfWarningSuboperations = tally.warning
    rsp.Identifier = None
    if status != 0x0000:
        failed = Dataset()
        failed.FailedSOPInstanceUIDList = tally.failed_uids
        rsp.Identifier = BytesIO(encode(failed, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated) or b"")
    r.service.dimse.send_msg(rsp, r.cx_id)
    return status
