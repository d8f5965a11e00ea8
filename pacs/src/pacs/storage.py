"""Durable C-STORE: the received dataset bytes, unchanged, behind a Part 10
preamble and file meta, written to a temporary file, fsync'd, renamed into place
(and the folder fsync'd) -- only then Success.

Layout: ``<root>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
UIDs are checked before they become path parts.

One write path for every instance (``Storage._install``): the temporary file
lives in ``<root>/.incoming/``, on the same filesystem as the studies, so the
final ``rename`` into the series folder is atomic (POSIX rename within one
filesystem; the file is fdatasync'd before it, the series folder fsync'd after
it). Two ways fill that file:

- ``Storage.store(raw, ...)``: a dataset held in memory (the fast path for
  ordinary instances): one ``writev`` of header + dataset.
- ``Storage.spool(...)`` -> ``Spool``: a large dataset written fragment by
  fragment as it arrives (``write``), then ``commit()`` (parse the header
  fields from the file's beginning, the same checks, install) or ``discard()``.

Both understand the dataset the same way (``_understand``: only the header
fields the index and the path need, never the pixel data) and both leave nothing
behind on any failure. A Deflated dataset is inflated only as far as those
fields need, at most ``HEADER_LIMIT`` bytes (``bounded.Inflated``); beyond that it is
answered 0xC000 Cannot understand. Orphans in ``.incoming`` (a crash mid-write)
are removed by the start-up reconcile (``reconcile.py``: those older than the process).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import struct
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.filereader import read_dataset
from pydicom.uid import UID

from dicomlab.dicom import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    IMPLICIT_VR_LE,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATASET_MISMATCH,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
)
from dicomlab.files import fsync_dir

from .bounded import HEADER_LIMIT, HeaderTooLarge, Inflated, ReadBound, chunks
from .sopmarks import SopMarks

LOG = logging.getLogger(__name__)

# A UID as a path part: digits and dots only, at most 64 characters (PS3.5 §9.1).
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
IMPLEMENTATION_CLASS_UID = UID("1.2.826.0.1.3680043.10.1482.1")  # DICOM Lab
IMPLEMENTATION_VERSION = "DICOMLAB_010"
INCOMING = ".incoming"  # temporary files, on the storage filesystem
FILE_MODE = 0o640  # patient data: the owner writes, its group reads, nobody else
DIR_MODE = 0o750


_INDEX_TAGS = [0x00080005, 0x00080016, 0x00080018, 0x00080020, 0x00080030, 0x00080050, 0x00080060, 0x00081030,
               0x0008103E, 0x00100010, 0x00100020, 0x00100030, 0x00100040, 0x0020000D, 0x0020000E, 0x00200010,
               0x00200011, 0x00200013]  # what the index (C-FIND included) and the path need


def valid_uid(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(_UID.fullmatch(value))


@dataclass
class StoreResult:
    status: int
    message: str
    path: Path | None = None
    replaced: bool = False
    meta: dict[str, str] = field(default_factory=dict)
    previous: tuple[str, str] | None = None  # (study, series) of the same SOP removed from elsewhere

    @property
    def ok(self) -> bool:
        return self.status == STATUS_SUCCESS


def _text(ds: object, keyword: str) -> str:
    value = getattr(ds, keyword, "")
    return "" if value is None else str(value)


def _raw_text(ds: Any, tag: int) -> str:
    """An ASCII value (UI, DA, IS, CS, SH) as received, without pydicom's conversion and
    validation (a backslash stays in it, so a multi-valued UID fails the UID check)."""
    elem = ds.get_item(tag)
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("ascii", errors="replace").strip(" \0")
    return str(value).strip(" \0")


def _umask() -> int | None:
    """This process's umask, read without changing it (Linux /proc; None: unknown)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _write_all(fd: int, header: bytes, raw: bytes) -> None:
    """One writev for header + dataset, finishing any short write (a full disk raises)."""
    done = os.writev(fd, [header, raw])
    data = memoryview(header + raw)[done:] if done < len(header) + len(raw) else memoryview(b"")
    while data:
        data = data[_write_some(fd, data):]


def _write_some(fd: int, data: Any) -> int:
    n = os.write(fd, data)
    if n <= 0:
        raise OSError(errno.ENOSPC, "No space left on device")
    return n


def index_fields(fp: Any, transfer_syntax: str, calling_aet: str) -> dict[str, str]:
    """What the index and the path need from a dataset (``fp``: a binary stream at its first
    element, inflated if deflated): read on C-STORE and by the reconcile of stored files."""
    ds = read_dataset(
        fp,
        is_implicit_VR=transfer_syntax == IMPLICIT_VR_LE,
        is_little_endian=transfer_syntax != EXPLICIT_VR_BE,
        stop_when=lambda tag, vr, length: tag > 0x00200013,  # Instance Number is the last we need
        specific_tags=_INDEX_TAGS,
    )
    return {
        "sop_class_uid": _raw_text(ds, 0x00080016),
        "sop_instance_uid": _raw_text(ds, 0x00080018),
        "study_uid": _raw_text(ds, 0x0020000D),
        "series_uid": _raw_text(ds, 0x0020000E),
        "patient_name": _text(ds, "PatientName"),  # pydicom: the character set matters here
        "patient_id": _text(ds, "PatientID"),
        "study_date": _raw_text(ds, 0x00080020),
        "study_description": _text(ds, "StudyDescription"),
        "accession_number": _raw_text(ds, 0x00080050),
        "modality": _raw_text(ds, 0x00080060),
        "series_description": _text(ds, "SeriesDescription"),
        "series_number": _raw_text(ds, 0x00200011),
        "calling_aet": calling_aet,
        "study_time": _raw_text(ds, 0x00080030),
        "study_id": _text(ds, "StudyID"),
        "patient_birth_date": _raw_text(ds, 0x00100030),
        "patient_sex": _raw_text(ds, 0x00100040),
        "instance_number": _raw_text(ds, 0x00200013),
    }


def _understand(source: Any, transfer_syntax: str, sop_class_uid: str, sop_instance_uid: str,
                calling_aet: str) -> dict[str, str] | StoreResult:
    """The index and path fields of a dataset (``source``: its bytes, or a file
    positioned at it), checked against the C-STORE request; or why not."""
    try:
        if transfer_syntax == DEFLATED_EXPLICIT_VR_LE:
            fp: Any = Inflated(chunks(source))
        elif isinstance(source, (bytes, bytearray, memoryview)):
            fp = BytesIO(source)
        else:
            fp = ReadBound(source)
        meta = index_fields(fp, transfer_syntax, calling_aet)
    except HeaderTooLarge as exc:
        return StoreResult(
            STATUS_CANNOT_UNDERSTAND,
            f"The dataset's header fields (up to Instance Number) were not found within its first "
            f"{HEADER_LIMIT // (1024 * 1024)} MiB ({exc}); not stored.",
        )
    except Exception as exc:
        return StoreResult(
            STATUS_CANNOT_UNDERSTAND,
            f"The dataset could not be parsed ({type(exc).__name__}: {exc}); not stored.",
        )
    for key, label in (("study_uid", "Study Instance UID"), ("series_uid", "Series Instance UID"),
                       ("sop_instance_uid", "SOP Instance UID")):
        if not valid_uid(meta[key]):
            return StoreResult(
                STATUS_CANNOT_UNDERSTAND,
                f"{label} {meta[key]!r} is missing or not a valid UID (digits and dots, at most 64); "
                "not stored.",
                meta=meta,
            )
    if meta["sop_instance_uid"] != sop_instance_uid.strip("\0 "):
        return StoreResult(
            STATUS_CANNOT_UNDERSTAND,
            f"The dataset's SOP Instance UID {meta['sop_instance_uid']} differs from the C-STORE "
            f"request's {sop_instance_uid}; not stored.",
            meta=meta,
        )
    if meta["sop_class_uid"] and meta["sop_class_uid"] != sop_class_uid.strip("\0 "):
        return StoreResult(
            STATUS_DATASET_MISMATCH,
            f"The dataset's SOP Class UID {meta['sop_class_uid']} differs from the presentation "
            f"context's {sop_class_uid}; not stored.",
            meta=meta,
        )
    return meta


class Storage:
    def __init__(self, root: str | os.PathLike[str], fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self.incoming = self.root / INCOMING
        self.incoming.mkdir(DIR_MODE, exist_ok=True)
        self.sop_marks = SopMarks(self.root, fsync)
        # FILE_MODE whatever the umask: an fchmod per file only if the umask would take bits away
        umask = _umask()
        self._chmod_files = umask is None or FILE_MODE & ~umask != FILE_MODE

    def store(
        self,
        raw: bytes,
        transfer_syntax: str,
        sop_class_uid: str,
        sop_instance_uid: str,
        calling_aet: str = "",
    ) -> StoreResult:
        """Store one received dataset (``raw``: its bytes as received)."""
        meta = _understand(raw, transfer_syntax, sop_class_uid, sop_instance_uid, calling_aet)
        if isinstance(meta, StoreResult):
            return meta
        header = part10_header(sop_class_uid.strip("\0 "), meta["sop_instance_uid"], transfer_syntax, calling_aet)
        tmp = fd = None
        try:
            tmp, fd = self._temporary(meta["sop_instance_uid"])
            _write_all(fd, header, raw)
        except OSError as exc:
            self._drop(tmp, fd)
            return self._no_room(meta, exc)
        return self._install(tmp, fd, meta)

    def spool(self, transfer_syntax: str, sop_class_uid: str, sop_instance_uid: str,
              calling_aet: str = "") -> "Spool":
        """A dataset to be written as its fragments arrive (see ``Spool``)."""
        return Spool(self, transfer_syntax, sop_class_uid, sop_instance_uid, calling_aet)

    # -- the one write path ----------------------------------------------------------
    def _temporary(self, label: str) -> tuple[Path, int]:
        """A new temporary file in ``.incoming`` (made again if someone removed it)."""
        tmp = self.incoming / f"{label[:64]}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileNotFoundError:
            self.incoming.mkdir(exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        if self._chmod_files:
            try:
                os.fchmod(fd, FILE_MODE)  # whatever the umask
            except OSError:
                self._drop(tmp, fd)
                raise
        return tmp, fd

    @staticmethod
    def _drop(tmp: Path | None, fd: int | None) -> None:
        """No partial file on any failure."""
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass

    def _no_room(self, meta: dict[str, str], exc: OSError) -> StoreResult:
        return StoreResult(
            STATUS_OUT_OF_RESOURCES,
            f"Could not write {meta.get('sop_instance_uid') or 'the instance'} to {self.root} "
            f"({exc.strerror or exc}); answered Out of Resources and kept nothing. Fix: free disk space or "
            "check the storage volume; the modality can resend.",
            meta=meta,
        )

    def _install(self, tmp: Path, fd: int, meta: dict[str, str]) -> StoreResult:
        """A filled temporary file (open as ``fd``) made durable under its final name."""
        folder = self.root / meta["study_uid"] / meta["series_uid"]
        final = folder / f"{meta['sop_instance_uid']}.dcm"
        if final.parent.parent.parent != self.root:  # belt and braces after the UID check
            self._drop(tmp, fd)
            return StoreResult(STATUS_CANNOT_UNDERSTAND, "Refused a path outside the storage root.", meta=meta)
        try:
            if self.fsync:
                os.fdatasync(fd)  # the data and the size; the rename is made durable below
            os.close(fd)
            fd = None  # type: ignore[assignment]
            self._make_dirs(folder)
            replaced = final.exists()
            os.replace(tmp, final)  # atomic: .incoming and the series folder share the filesystem
            if self.fsync:
                fsync_dir(folder)
        except OSError as exc:
            self._drop(tmp, fd)
            return self._no_room(meta, exc)
        previous = self.sop_marks.supersede(meta, final)  # the same SOP elsewhere: newest wins
        meta["path"] = str(final)
        return StoreResult(STATUS_SUCCESS, "stored", path=final, replaced=replaced or previous is not None,
                           meta=meta, previous=previous)

    def _make_dirs(self, folder: Path) -> None:
        if folder.is_dir():
            return
        created = []
        p = folder
        while not p.exists():
            created.append(p)
            p = p.parent
        for d in reversed(created):
            try:
                d.mkdir(DIR_MODE)
                os.chmod(d, DIR_MODE)  # whatever the umask
            except FileExistsError:
                continue
            if self.fsync:
                fsync_dir(d.parent)


class Spool:
    """One dataset written to ``<root>/.incoming`` as its fragments arrive, never held
    whole in memory: ``write(fragment)`` ..., then ``commit() -> StoreResult`` or
    ``discard()``. A write error (a full disk) is remembered: later writes are
    dropped, and ``commit`` answers Out of Resources and keeps nothing."""

    def __init__(self, storage: Storage, transfer_syntax: str, sop_class_uid: str, sop_instance_uid: str,
                 calling_aet: str) -> None:
        self.storage = storage
        self.transfer_syntax, self.sop_class_uid = transfer_syntax, sop_class_uid
        self.sop_instance_uid, self.calling_aet = sop_instance_uid, calling_aet
        self.size = 0  # dataset bytes received
        self._error: OSError | None = None
        self._tmp: Path | None = None
        self._fd: int | None = None
        try:
            # the request's UIDs; _understand checks the dataset's against them before install
            self._header = part10_header(sop_class_uid.strip("\0 "), sop_instance_uid.strip("\0 "),
                                         transfer_syntax, calling_aet)
        except UnicodeEncodeError:
            self._header = b""  # not ASCII: _understand refuses it; only count until then
            return
        try:
            self._tmp, self._fd = storage._temporary("spool")
            self._write(self._header)
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self._error = exc
        Storage._drop(self._tmp, self._fd)
        self._tmp = self._fd = None

    def _write(self, data: Any) -> None:
        view = memoryview(data)
        while view:
            view = view[_write_some(self._fd, view):]  # type: ignore[arg-type]

    def write(self, fragment: Any) -> None:
        self.size += len(fragment)
        if self._fd is None:
            return
        try:
            self._write(fragment)
        except OSError as exc:
            self._fail(exc)

    def discard(self) -> None:
        Storage._drop(self._tmp, self._fd)
        self._tmp = self._fd = None

    def commit(self) -> StoreResult:
        """Check the dataset as ``Storage.store`` does and install it; nothing is left
        behind unless the result is Success."""
        try:
            if self._error is not None:
                return self.storage._no_room({"sop_instance_uid": self.sop_instance_uid.strip("\0 ")}, self._error)
            if self._tmp is None or self._fd is None:
                return StoreResult(STATUS_CANNOT_UNDERSTAND, "The C-STORE request's UIDs are not ASCII (or the "
                                   "dataset was discarded); not stored.")
            with open(self._tmp, "rb") as f:
                f.seek(len(self._header))
                meta = _understand(f, self.transfer_syntax, self.sop_class_uid, self.sop_instance_uid,
                                   self.calling_aet)
            if isinstance(meta, StoreResult):
                return meta
            tmp, fd = self._tmp, self._fd
            self._tmp = self._fd = None  # _install owns them now (and drops them on failure)
            return self.storage._install(tmp, fd, meta)
        finally:
            self.discard()


def _explicit(tag: tuple[int, int], vr: bytes, value: bytes) -> bytes:
    group, elem = tag
    if vr in (b"OB", b"UN", b"SQ", b"UT", b"OW"):
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


_IMPL_UID = _padded(str(IMPLEMENTATION_CLASS_UID), b"\0")
_IMPL_VERSION = _padded(IMPLEMENTATION_VERSION, b" ")


def part10_header(sop_class: str, sop_instance: str, transfer_syntax: str, calling_aet: str) -> bytes:
    """Preamble, "DICM" and the File Meta Information group (PS3.10 §7.1), explicit VR
    little endian. Equal byte for byte to pydicom's ``write_file_meta_info`` (a test
    checks it); encoded here because building a FileMetaDataset per instance was ~8 %
    of the PACS's time per C-STORE."""
    body = b"".join((
        _explicit((0x0002, 0x0001), b"OB", b"\x00\x01"),
        _explicit((0x0002, 0x0002), b"UI", _padded(sop_class, b"\0")),
        _explicit((0x0002, 0x0003), b"UI", _padded(sop_instance, b"\0")),
        _explicit((0x0002, 0x0010), b"UI", _padded(transfer_syntax, b"\0")),
        _explicit((0x0002, 0x0012), b"UI", _IMPL_UID),
        _explicit((0x0002, 0x0013), b"SH", _IMPL_VERSION),
        _explicit((0x0002, 0x0016), b"AE", _padded(calling_aet, b" ")) if calling_aet else b"",
    ))
    return b"\x00" * 128 + b"DICM" + _explicit((0x0002, 0x0000), b"UL", struct.pack("<I", len(body))) + body
