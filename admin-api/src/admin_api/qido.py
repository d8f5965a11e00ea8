"""QIDO-RS (PS3.18 §10.6) over the lab's study index: the query parameters,
the matching (PS3.4 C.2.2.2) and the DICOM JSON (PS3.18 F.2) of each result.

What is supported:
- ``{attributeID}={value}`` with the attribute as a keyword (``PatientID``) or a
  tag (``00100020``). Study level: StudyInstanceUID, PatientID, PatientName,
  AccessionNumber, StudyDate, StudyDescription, ModalitiesInStudy; series level:
  also SeriesInstanceUID, Modality, SeriesNumber, SeriesDescription; instance
  level: any attribute of the instance's header (single value matching).
- Matching: single value; ``*`` and ``?`` wildcards (PatientName case-insensitive,
  the rest case-sensitive); UID list matching (values separated by commas or the
  parameter repeated); date ranges ``a-b``, ``a-``, ``-b`` (YYYYMMDD).
- ``limit`` (at most ``MAX_LIMIT``), ``offset``, ``includefield`` (keywords,
  tags, or ``all``), ``fuzzymatching=false``.
- A valid attribute that is not a query key at that level is ignored, with a
  ``Warning: 299`` header saying so (PS3.18 §8.3.4.1); anything else that is
  not an attribute is a 400.

Study and series attributes come from the index; any other attribute that is
asked for (``includefield``) comes from the header of the first instance of the
study or series. ``includefield=all`` adds, at the study level, ``STUDY_ALL``
(the rest of the Patient and General Study modules that a CT carries), at the
series level ``SERIES_ALL`` (General Series, Equipment, Frame of Reference), and
at the instance level every attribute of the header but bulk data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag

MAX_LIMIT = 1000
RESERVED = {"limit", "offset", "includefield", "fuzzymatching"}

STUDY_KEYS = ("StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber", "StudyDate", "StudyDescription",
              "ModalitiesInStudy")
SERIES_KEYS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription")
# PS3.18 Table 10.6.3-3 (and -4, -5): what every result carries.
STUDY_RETURN = ("StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
                "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
                "StudyDescription", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
SERIES_RETURN = ("Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
                 "NumberOfSeriesRelatedInstances", "StudyInstanceUID")
INSTANCE_RETURN = ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "BitsAllocated",
                   "NumberOfFrames", "StudyInstanceUID", "SeriesInstanceUID")
# index field -> keyword
STUDY_INDEX = {"study_uid": "StudyInstanceUID", "patient_id": "PatientID", "patient_name": "PatientName",
               "accession_number": "AccessionNumber", "study_date": "StudyDate",
               "study_description": "StudyDescription"}
SERIES_INDEX = {"series_uid": "SeriesInstanceUID", "modality": "Modality", "series_number": "SeriesNumber",
                "series_description": "SeriesDescription"}
_DATE = re.compile(r"[0-9]{8}")


class QueryError(ValueError):
    """A query that cannot be answered (400), said in words."""


def keyword(name: str) -> str:
    """``PatientID`` or ``00100020`` -> the keyword; QueryError for anything else."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        kw = keyword_for_tag(Tag(int(name, 16)))
        if kw:
            return kw
        raise QueryError(f"{name} is not a tag of the DICOM dictionary this server knows.")
    if tag_for_keyword(name) is not None:
        return name
    raise QueryError(f"{name[:64]!r} is neither a query parameter (limit, offset, includefield, fuzzymatching) "
                     "nor a DICOM attribute keyword or tag.")


@dataclass
class Query:
    matches: dict[str, list[str]] = field(default_factory=dict)  # keyword -> values (a list: UID list matching)
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    limit: int = MAX_LIMIT
    offset: int = 0
    ignored: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, args: Iterable[tuple[str, str]], level: str) -> "Query":
        q = cls()
        for name, value in args:
            if name in ("limit", "offset"):
                if not re.fullmatch(r"[0-9]{1,9}", value):
                    raise QueryError(f"{name} is a whole number ({value[:20]!r} given).")
                setattr(q, name, min(int(value), MAX_LIMIT) if name == "limit" else int(value))
            elif name == "includefield":
                for part in filter(None, (p.strip() for p in value.split(","))):
                    if part == "all":
                        q.include_all = True
                    else:
                        q.include.add(keyword(part))
            elif name == "fuzzymatching":
                if value.lower() not in ("true", "false"):
                    raise QueryError("fuzzymatching is true or false.")
                if value.lower() == "true":
                    q.ignored.append("fuzzymatching")
            else:
                kw = keyword(name)
                if level != "instance" and kw not in STUDY_KEYS + (SERIES_KEYS if level == "series" else ()):
                    q.ignored.append(kw)
                    continue
                values = [v for v in value.split(",")] if dictionary_VR(kw) == "UI" else [value]
                q.matches.setdefault(kw, []).extend(values)
        for kw, values in q.matches.items():
            if kw.endswith("Date"):
                for v in values:
                    _date_range(v)  # 400 now rather than no match later
        return q

    def warning(self) -> str | None:
        if not self.ignored:
            return None
        names = ", ".join(sorted(set(self.ignored)))
        return f'299 dicomlab "These query keys are not supported here and were ignored: {names}"'

    def page(self, items: list[Any]) -> list[Any]:
        return items[self.offset:self.offset + self.limit]


# -- records of the index, as attributes -------------------------------------------------
def study_record(s: dict[str, Any]) -> dict[str, Any]:
    """A study of the index (``Store.studies``) as attributes, for matching and output."""
    rec = {kw: s.get(field, "") for field, kw in STUDY_INDEX.items()}
    rec["ModalitiesInStudy"] = sorted({x.get("modality", "") for x in s["series_list"]} - {""})
    rec["NumberOfStudyRelatedSeries"] = len(s["series_list"])
    rec["NumberOfStudyRelatedInstances"] = s["instances"]
    return rec


def series_record(s: dict[str, Any]) -> dict[str, Any]:
    rec = {kw: s.get(field, "") for field, kw in SERIES_INDEX.items()}
    rec.update(StudyInstanceUID=s["study_uid"], NumberOfSeriesRelatedInstances=s["instances"])
    return rec


STUDY_ALL = ("StudyTime", "ReferringPhysicianName", "StudyID", "PatientBirthDate", "PatientSex", "PatientAge",
             "IssuerOfPatientID", "InstitutionName")
SERIES_ALL = ("SeriesDate", "SeriesTime", "BodyPartExamined", "ProtocolName", "Manufacturer",
              "ManufacturerModelName", "StationName", "FrameOfReferenceUID", "PatientPosition")


def _date_range(value: str) -> tuple[str, str]:
    lo, sep, hi = value.partition("-")
    if not sep:
        lo = hi = value
    for d in (lo, hi):
        if d and not _DATE.fullmatch(d):
            raise QueryError(f"A date is YYYYMMDD, a range YYYYMMDD-YYYYMMDD, YYYYMMDD- or -YYYYMMDD "
                             f"({value[:30]!r} given).")
    if not lo and not hi:
        raise QueryError("A date range needs at least one end.")
    return lo or "00000000", hi or "99999999"


def _wildcard(pattern: str, fold: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.IGNORECASE | re.DOTALL if fold else re.DOTALL)


def matches_one(kw: str, wanted: list[str], actual: Any) -> bool:
    """Does ``actual`` (text, or a list for multi-valued attributes) match one of ``wanted``?"""
    values = [str(a) for a in actual] if isinstance(actual, (list, tuple)) else [str(actual or "")]
    for w in wanted:
        if w == "" or w == "*":  # universal matching
            return True
        for a in values:
            if kw.endswith("Date"):
                lo, hi = _date_range(w)
                if _DATE.fullmatch(a) and lo <= a <= hi:
                    return True
            elif "*" in w or "?" in w:
                if _wildcard(w, kw == "PatientName").fullmatch(a):
                    return True
            elif (a.casefold() == w.casefold()) if kw == "PatientName" else a == w:
                return True
    return False


def matches(query: Query, record: dict[str, Any]) -> bool:
    return all(matches_one(kw, wanted, record.get(kw)) for kw, wanted in query.matches.items())


# -- DICOM JSON ----------------------------------------------------------------------
def element(kw: str, value: Any) -> dict[str, Any]:
    """One DICOM JSON attribute from a keyword and a text (or list) value."""
    vr = dictionary_VR(kw)
    values = [v for v in (value if isinstance(value, (list, tuple)) else [value]) if v not in (None, "")]
    if not values:
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": str(v)} for v in values]}
    if vr in ("IS", "SL", "SS", "UL", "US"):
        out = []
        for v in values:
            try:
                out.append(int(str(v).strip()))
            except ValueError:
                return {"vr": vr}
        return {"vr": vr, "Value": out}
    return {"vr": vr, "Value": [str(v) for v in values]}


def tag_of(kw: str) -> str:
    return f"{tag_for_keyword(kw):08X}"


def to_json(record: dict[str, Any], wanted: Iterable[str]) -> dict[str, Any]:
    """The attributes ``wanted`` (keywords) of a record {keyword: value}, as DICOM JSON (tags in order)."""
    out = {tag_of(kw): element(kw, record.get(kw)) for kw in wanted}
    return dict(sorted(out.items()))


def header_json(ds: Dataset, only: set[str] | None) -> dict[str, Any]:
    """A header's attributes as DICOM JSON: all (``only`` None) or those keywords; bulk data
    (binary values over 1 KiB) and the pixel data are left out."""
    small = Dataset()
    for elem in ds:
        if elem.tag.group == 0x7FE0 or (elem.tag.group == 0x0002):
            continue
        if only is not None and elem.keyword not in only:
            continue
        if elem.VR in ("OB", "OD", "OF", "OL", "OV", "OW", "UN") and elem.value is not None \
                and len(elem.value) > 1024:
            continue
        small.add(elem)
    try:
        return small.to_json_dict(bulk_data_threshold=1 << 20, suppress_invalid_tags=True)
    except Exception:  # a value pydicom cannot express in JSON: leave the element out, keep the rest
        out: dict[str, Any] = {}
        for elem in small:
            one = Dataset()
            one.add(elem)
            try:
                out.update(one.to_json_dict(bulk_data_threshold=1 << 20, suppress_invalid_tags=True))
            except Exception:
                continue
        return out
