"""What the PACS reads from a received dataset and writes around it: the header fields the
index and the path need (``index_fields``, read on C-STORE and by the reconcile of stored files),
their checks against the C-STORE request (``understand``), the UID rule for a path part
(``valid_uid``), and the Part 10 preamble and file meta (``part10_header``). ``storage.py``
writes the file."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from dicomlab.dicom import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    IMPLICIT_VR_LE,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATASET_MISMATCH,
    STATUS_SUCCESS,
)

from . import rawwalk
from .bounded import HEADER_LIMIT, HeaderTooLarge, Inflated, ReadBound, chunks

# A UID as a path part: digits and dots only, at most 64 characters (PS3.5 §9.1).
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
IMPLEMENTATION_CLASS_UID = UID("1.2.826.0.1.3680043.10.1482.1")  # DICOM Lab
IMPLEMENTATION_VERSION = "DICOMLAB_010"

_INDEX_TAGS = [0x00080005, 0x00080016, 0x00080018, 0x00080020, 0x00080030, 0x00080050, 0x00080060, 0x00081030,
               0x0008103E, 0x00100010, 0x00100020, 0x00100030, 0x00100040, 0x0020000D, 0x0020000E, 0x00200010,
               0x00200011, 0x00200013]  # what the index (C-FIND included) and the path need
_INDEX_TAG_SET = frozenset(_INDEX_TAGS) | {0x00080005}  # pydicom adds Specific Character Set
_LAST_INDEX_TAG = 0x00200013


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


_TEXT = {"PatientName": (0x00100010, "PN"), "PatientID": (0x00100020, "LO"), "StudyDescription": (0x00081030, "LO"),
         "SeriesDescription": (0x0008103E, "LO"), "StudyID": (0x00200010, "SH")}  # keyword: tag, VR
_PLAIN_NAME_ENCODINGS = {"iso8859", "latin_1", "UTF8", "iso8859_2", "iso8859_3", "iso8859_4", "iso_ir_126",
                         "iso_ir_127", "iso_ir_138", "iso_ir_144", "iso_ir_148", "iso_ir_166", "shift_jis",
                         "GB18030", "GBK"}


def _text(ds: Any, keyword: str) -> str:
    """A text value (PN, LO, SH) as pydicom converts it (the character set matters). One that is
    plain ASCII -- no ESC, no backslash (several values) -- reads the same in every character
    set DICOM has, so it is decoded here, without pydicom's DataElement, validation and
    PersonName (~0.1 ms per C-STORE for the five); a name with component groups ("=") is left
    to pydicom's PersonName. ``tests/pacs/test_rawwalk.py`` compares them."""
    tag, vr = _TEXT[keyword]
    elem = ds.get_item(tag)
    if type(elem) is RawDataElement and elem.VR in (None, vr):  # None: implicit VR, the dictionary's
        raw = elem.value
        if (type(raw) is bytes and raw.isascii() and b"\\" not in raw and b"\x1b" not in raw
                and (vr != "PN" or _plain_names(ds, raw))):
            return raw.rstrip(b"\x00 ").decode("ascii")
    return _text_pydicom(ds, keyword)


def _plain_names(ds: Any, raw: bytes) -> bool:
    """A PN read as it is: no component groups ("=") and one single-byte or UTF-8 character
    set (pydicom's PersonName fails on an empty component under ISO 2022 IR 87, say)."""
    encodings = ds.original_character_set
    if not isinstance(encodings, str):
        encodings = encodings[0] if len(encodings) == 1 else ""
    return b"=" not in raw and encodings in _PLAIN_NAME_ENCODINGS


def _text_pydicom(ds: Any, keyword: str) -> str:
    """``_text`` by pydicom alone (the reference the tests compare it with)."""
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


def index_fields(fp: Any, transfer_syntax: str, calling_aet: str) -> dict[str, str]:
    """What the index and the path need from a dataset (``fp``: its bytes, or a binary stream at
    its first element, inflated if deflated): read on C-STORE and by the reconcile of stored files.
    A little endian dataset in memory is read by ``rawwalk`` (the same Dataset, a fraction of the
    cost); anything it declines, and any stream, by pydicom (``index_fields_pydicom``)."""
    implicit = transfer_syntax == IMPLICIT_VR_LE
    ds = None
    if transfer_syntax != EXPLICIT_VR_BE:
        if isinstance(fp, (bytes, bytearray, memoryview)):
            ds = rawwalk.read(fp, implicit, _INDEX_TAG_SET, _LAST_INDEX_TAG)
        elif type(fp) is BytesIO:
            with fp.getbuffer() as buf:
                elements = rawwalk.walk(buf, fp.tell(), implicit, _INDEX_TAG_SET, _LAST_INDEX_TAG)
            if elements is not None:
                fp.seek(elements[1])  # where pydicom leaves the stream
                ds = rawwalk.dataset(elements[0], implicit)
    if ds is None:
        return index_fields_pydicom(fp, transfer_syntax, calling_aet)
    return _fields(ds, calling_aet)


class Pieces(list):  # type: ignore[type-arg]
    """A received dataset as the P-DATA fragments it arrived in, never joined into one copy
    (a 0.5 MB join cost ~10 % of a C-STORE's time in the PACS: a fresh allocation, its page
    faults and the copy); written with one ``writev``."""

    @property
    def size(self) -> int:
        return sum(len(p) for p in self)


def _head_fields(head: Any, transfer_syntax: str, calling_aet: str) -> dict[str, str] | None:
    """``index_fields`` from the first fragment alone, when its elements reach past Instance
    Number within it (the walker stopped on a later tag); None: not sure, read the whole."""
    if transfer_syntax in (EXPLICIT_VR_BE, DEFLATED_EXPLICIT_VR_LE):
        return None
    implicit = transfer_syntax == IMPLICIT_VR_LE
    walked = rawwalk.walk(head, 0, implicit, _INDEX_TAG_SET, _LAST_INDEX_TAG)
    if walked is None or walked[1] >= len(head):  # declined, or the fragment ended before the stop
        return None
    return _fields(rawwalk.dataset(walked[0], implicit), calling_aet)


def index_fields_pydicom(fp: Any, transfer_syntax: str, calling_aet: str) -> dict[str, str]:
    """``index_fields`` by pydicom's ``read_dataset`` alone (the fallback, and the reference
    the tests compare ``rawwalk`` with)."""
    if isinstance(fp, (bytes, bytearray, memoryview)):
        fp = BytesIO(fp)
    ds = read_dataset(
        fp,
        is_implicit_VR=transfer_syntax == IMPLICIT_VR_LE,
        is_little_endian=transfer_syntax != EXPLICIT_VR_BE,
        stop_when=lambda tag, vr, length: tag > _LAST_INDEX_TAG,  # Instance Number is the last we need
        specific_tags=_INDEX_TAGS,
    )
    return _fields(ds, calling_aet)


def _fields(ds: Any, calling_aet: str) -> dict[str, str]:
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


def understand(source: Any, transfer_syntax: str, sop_class_uid: str, sop_instance_uid: str,
                calling_aet: str) -> dict[str, str] | StoreResult:
    """The index and path fields of a dataset (``source``: its bytes, or a file
    positioned at it), checked against the C-STORE request; or why not."""
    try:
        head = _head_fields(source[0], transfer_syntax, calling_aet) if isinstance(source, Pieces) and source \
            else None
        if head is not None:
            meta = head
        else:
            if isinstance(source, Pieces):
                source = b"".join(source)  # the header runs past the first fragment (or is unusual)
            if transfer_syntax == DEFLATED_EXPLICIT_VR_LE:
                fp: Any = Inflated(chunks(source))
            elif isinstance(source, (bytes, bytearray, memoryview)):
                fp = source  # index_fields reads it in place
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
