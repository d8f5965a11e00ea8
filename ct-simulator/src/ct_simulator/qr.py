"""``ct-simulator find | move | get``: the CT as a Study Root Query/Retrieve SCU.

- ``find``: C-FIND at STUDY, SERIES or IMAGE level, keys given as ``-k Keyword=value``
  (as DCMTK's findscu takes them; an empty value asks for the key back); a useful set of
  return keys per level is asked for by default.
- ``move``: C-MOVE of what the keys name to a destination AE title (which the PACS looks
  up among its authorized nodes).
- ``get``: C-GET, with SCP/SCU role selection for the storage SOP classes (``--no-role``
  leaves it out, to see the PACS refuse the sub-operations), each instance written as
  received into a folder.

The final status, the sub-operation counts and what failed are printed in words; text
from the PACS goes through ``dicomlab.text.safe_text``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import build_context, build_role, evt
from pynetdicom.status import QR_FIND_SERVICE_CLASS_STATUS, QR_GET_SERVICE_CLASS_STATUS, QR_MOVE_SERVICE_CLASS_STATUS

from dicomlab.dicom import (
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
)
from dicomlab.text import safe_text

from . import outcome
from .network import Link, associate, release
from .outcome import Problem

FIND = "1.2.840.10008.5.1.4.1.2.2.1"
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
GET = "1.2.840.10008.5.1.4.1.2.2.3"
UNCOMPRESSED = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
# what C-GET offers to receive: the lab's storage SOP classes, uncompressed and the lossless syntaxes the PACS keeps
GET_STORAGE = [CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, SECONDARY_CAPTURE_IMAGE_STORAGE]
GET_SYNTAXES = [*UNCOMPRESSED, "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90",
                "1.2.840.10008.1.2.5"]
RETURN_KEYS = {
    "STUDY": ["StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "AccessionNumber", "StudyDescription",
              "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"],
    "SERIES": ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
               "NumberOfSeriesRelatedInstances"],
    "IMAGE": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber"],
}
EXIT_QR_FAILED = outcome.EXIT_INSTANCE_FAILED
_UID = re.compile(r"^[0-9.]{1,64}$")


@dataclass
class QRReport:
    op: str
    peer: str
    final: int | None = None  # the final status (None: no final answer)
    matches: list[dict[str, str]] = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)  # C-GET: files written
    pending: int = 0
    elapsed: float = 0.0
    problem: Problem | None = None

    @property
    def exit_code(self) -> int:
        if self.problem is None:
            return outcome.EXIT_OK
        return EXIT_QR_FAILED if self.problem.kind == "qr-failed" else self.problem.exit_code

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("op", "peer", "final", "completed", "failed", "warning", "failed_uids",
                                              "received", "elapsed")}
        out["matches"] = self.matches
        out["problem"] = None if self.problem is None else {"kind": self.problem.kind, "message": self.problem.message,
                                                            "hint": self.problem.hint}
        return out


def identifier(level: str, keys: list[str], defaults: bool) -> Dataset:
    """The identifier from ``Keyword=value`` strings (``Keyword`` alone: asked for, empty)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level.upper()
    wanted: dict[str, str] = {k: "" for k in RETURN_KEYS.get(ds.QueryRetrieveLevel, [])} if defaults else {}
    for item in keys:
        kw, _, value = item.partition("=")
        wanted[kw.strip()] = value
    for kw, value in wanted.items():
        try:
            setattr(ds, kw, value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"-k {kw}={value}: {exc}") from None
        if kw not in ds:
            raise ValueError(f"-k {kw}: not a DICOM keyword (e.g. PatientName, StudyDate, StudyInstanceUID)")
    return ds


def _words(status: int, op: str) -> str:
    table = {"C-FIND": QR_FIND_SERVICE_CLASS_STATUS, "C-MOVE": QR_MOVE_SERVICE_CLASS_STATUS,
             "C-GET": QR_GET_SERVICE_CLASS_STATUS}[op]
    category, meaning = table.get(status, ("Failure", "unknown status"))
    return f"0x{status:04X} {category}: {meaning}"


HINTS = {
    0xA801: "The PACS does not know that destination AE title: register it as a node on the PACS (its AE title, "
            "host and DICOM port), or move to a registered node.",
    0xA900: "The identifier does not fit Study Root: give QueryRetrieveLevel STUDY, SERIES or IMAGE and, to "
            "retrieve, the unique key of that level (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID).",
    0xA701: "Too many instances for one request: retrieve less at a time.",
    0x0124: "The PACS refuses this node: ask its administrator.",
}


def _final_problem(rep: QRReport, dest: str = "") -> None:
    if rep.final in (0x0000, None) and rep.problem is None:
        if rep.final is None:
            rep.problem = Problem("aborted", f"no final {rep.op} answer from {rep.peer} (the association ended).",
                                  "Read the PACS's log for this association.")
        return
    if rep.final == 0x0000:
        return
    words = _words(rep.final, rep.op)
    hint = HINTS.get(rep.final, "")
    if not hint and rep.op == "C-MOVE":
        hint = (f"The PACS could not deliver to {dest}: read its retrieve-failed events for the cause (the "
                f"node's registered port, or {dest} not knowing the PACS's AE title, or a transfer syntax).")
    if not hint and rep.op == "C-GET":
        hint = ("The PACS could not send on this association: read its retrieve-failed events (without SCP role "
                "selection for the storage SOP classes it may not send at all).")
    counts = (f" ({rep.completed} completed, {rep.failed} failed, {rep.warning} warning)"
              if rep.op != "C-FIND" else "")
    rep.problem = Problem("qr-failed", f"{rep.op} answered {words}{counts}.", hint, {"status": rep.final})


def _counts(rep: QRReport, status: Dataset) -> None:
    for kw, attr in (("NumberOfCompletedSuboperations", "completed"), ("NumberOfFailedSuboperations", "failed"),
                     ("NumberOfWarningSuboperations", "warning")):
        if kw in status and status[kw].value is not None:
            setattr(rep, attr, int(status[kw].value))


def find(link: Link, ds: Dataset) -> QRReport:
    rep = QRReport("C-FIND", link.peer)
    started = time.monotonic()
    assoc, problem = associate(link, [build_context(FIND, UNCOMPRESSED)])
    if assoc is None:
        rep.problem = problem
        return rep
    try:
        for status, found in assoc.send_c_find(ds, FIND):
            if "Status" not in status:
                break
            code = int(status.Status)
            if code in (0xFF00, 0xFF01):
                rep.pending += 1
                if found is not None:
                    rep.matches.append({e.keyword or str(e.tag): _value(e) for e in found
                                        if e.keyword not in ("QueryRetrieveLevel", "SpecificCharacterSet")})
            else:
                rep.final = code
    finally:
        release(assoc)
    rep.elapsed = time.monotonic() - started
    _final_problem(rep)
    return rep


def _value(elem: Any) -> str:
    v = elem.value
    if v is None:
        return ""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return "\\".join(str(x) for x in v)
    return str(v)


def _final(rep: QRReport, responses: Any) -> None:
    for status, rsp_id in responses:
        if "Status" not in status:
            break
        code = int(status.Status)
        _counts(rep, status)
        if code in (0xFF00, 0xFF01):
            rep.pending += 1
            continue
        rep.final = code
        if rsp_id is not None and "FailedSOPInstanceUIDList" in rsp_id:
            value = rsp_id.FailedSOPInstanceUIDList
            rep.failed_uids = [str(v) for v in (value if isinstance(value, (list, tuple)) or
                                                type(value).__name__ == "MultiValue" else [value]) if v]


def move(link: Link, ds: Dataset, destination: str) -> QRReport:
    rep = QRReport("C-MOVE", link.peer)
    started = time.monotonic()
    assoc, problem = associate(link, [build_context(MOVE, UNCOMPRESSED)])
    if assoc is None:
        rep.problem = problem
        return rep
    try:
        _final(rep, assoc.send_c_move(ds, destination, MOVE))
    finally:
        release(assoc)
    rep.elapsed = time.monotonic() - started
    _final_problem(rep, destination)
    return rep


def get(link: Link, ds: Dataset, folder: Path | None, role: bool = True) -> QRReport:
    rep = QRReport("C-GET", link.peer)
    started = time.monotonic()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)

    def on_store(event: Any) -> int:
        sop = str(event.request.AffectedSOPInstanceUID).strip("\0 ")
        if not _UID.fullmatch(sop):
            return 0xC000  # not a file name we write
        if folder is not None:
            path = folder / f"{sop}.dcm"
            path.write_bytes(event.encoded_dataset(include_meta=True))
            rep.received.append(str(path))
        else:
            rep.received.append(sop)
        return 0x0000

    contexts = [build_context(GET, UNCOMPRESSED)] + [build_context(uid, GET_SYNTAXES) for uid in GET_STORAGE]
    roles = [build_role(uid, scp_role=True) for uid in GET_STORAGE] if role else []
    link.ext_neg, link.handlers = roles, [(evt.EVT_C_STORE, on_store)]
    try:
        assoc, problem = associate(link, contexts)
    finally:
        link.ext_neg, link.handlers = [], []
    if assoc is None:
        rep.problem = problem
        return rep
    try:
        _final(rep, assoc.send_c_get(ds, GET))
    finally:
        release(assoc)
    rep.elapsed = time.monotonic() - started
    _final_problem(rep)
    return rep


# -- command line -----------------------------------------------------------------------------
def _say(line: str) -> None:
    print(safe_text(line))


def _print(rep: QRReport, link: Link, a: argparse.Namespace) -> None:
    if getattr(a, "json", False):
        print(json.dumps(rep.to_dict(), indent=1))
        return
    who = f"{link.calling_aet} -> {link.called_aet}@{link.peer}"
    if rep.op == "C-FIND" and rep.final is not None:
        _say(f"{who}: C-FIND {a.level.upper()}: {len(rep.matches)} match(es) in {rep.elapsed:.1f} s.")
        for i, m in enumerate(rep.matches, 1):
            _say(f"  {i:3d}. " + "  ".join(f"{k}={v}" for k, v in m.items() if k != "RetrieveAETitle"))
    elif rep.op != "C-FIND" and rep.final is not None:
        extra = f", {len(rep.received)} written to {a.out}" if rep.op == "C-GET" and a.out else ""
        _say(f"{who}: {rep.op} {a.level.upper()}: {rep.completed} completed, {rep.failed} failed, {rep.warning} "
             f"warning{extra} in {rep.elapsed:.1f} s; final status {_words(rep.final, rep.op)}.")
        if rep.failed_uids:
            _say(f"  failed: {', '.join(rep.failed_uids[:10])}" + (" ..." if len(rep.failed_uids) > 10 else ""))
    if rep.problem is not None:
        _say(f"FAILED: {rep.problem.message}")
        if rep.problem.hint:
            _say(f"  fix: {rep.problem.hint}")


def add_parsers(sub: Any, add_link: Any, link_of: Any) -> None:
    """The find / move / get subcommands (``add_link``, ``link_of``: cliargs.py's link options)."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--level", default="STUDY", choices=["STUDY", "SERIES", "IMAGE", "study", "series", "image"],
                       help="QueryRetrieveLevel (default STUDY)")
        p.add_argument("-k", "--key", action="append", default=[], metavar="KEYWORD[=VALUE]",
                       help="a key, e.g. PatientName=DOE* or StudyDate=20240101-20240131 (repeatable)")
        p.add_argument("--json", action="store_true", help="print the report as JSON")
        add_link(p)

    f = sub.add_parser("find", help="C-FIND the PACS (Study Root)")
    common(f)
    f.add_argument("--no-defaults", action="store_true", help="ask only for the keys given with -k")
    f.set_defaults(func=lambda a: _run(a, link_of, "find"))
    m = sub.add_parser("move", help="C-MOVE from the PACS to a destination AE title")
    common(m)
    m.add_argument("--destination", required=True, help="the move destination's AE title")
    m.set_defaults(func=lambda a: _run(a, link_of, "move"))
    g = sub.add_parser("get", help="C-GET from the PACS into a folder")
    common(g)
    g.add_argument("--out", help="folder for the instances received (default: count them only)")
    g.add_argument("--no-role", action="store_true",
                   help="misbehave: leave out SCP/SCU role selection (the PACS then may not send anything)")
    g.set_defaults(func=lambda a: _run(a, link_of, "get"))


def _run(a: argparse.Namespace, link_of: Any, what: str) -> int:
    link = link_of(a)
    level = a.level.upper()
    if what == "find":
        rep = find(link, identifier(level, a.key, not a.no_defaults))
    elif what == "move":
        rep = move(link, identifier(level, a.key, False), a.destination)
    else:
        rep = get(link, identifier(level, a.key, False), Path(a.out) if a.out else None, role=not a.no_role)
    _print(rep, link, a)
    sys.stdout.flush()
    return rep.exit_code
