"""C-FIND matching over the study index (Study Root Query/Retrieve, PS3.4 C.2.2.2 and C.6.2).

What is matched (the README's Q/R section says the same to a user):

- STUDY level: StudyInstanceUID, PatientName, PatientID, PatientBirthDate, PatientSex,
  StudyDate, StudyTime, AccessionNumber, StudyDescription, StudyID, ModalitiesInStudy;
  returned only: NumberOfStudyRelatedSeries, NumberOfStudyRelatedInstances.
- SERIES level: those of the study, plus SeriesInstanceUID, Modality, SeriesNumber,
  SeriesDescription; returned only: NumberOfSeriesRelatedInstances.
- IMAGE level: those above, plus SOPInstanceUID, SOPClassUID, InstanceNumber.

The kinds of matching: universal (an empty value), single value (exact; Person Names
without regard to case), wildcard (``*`` and ``?``, not for UIDs, dates, times and
numbers), range (dates and times: ``20240101-20240131``, ``-20240131``, ``20240101-``), a
list of UIDs (``uid1\\uid2``), and for a multi-valued key (ModalitiesInStudy, or ``CT\\MR``)
any value matching any value. A key above the query level narrows the search (a missing
one matches everything: searches are relational upwards, which the hierarchical method
permits the SCU to rely on only for unique keys); a key this PACS does not know, or one
below the query level, is answered empty with the status 0xFF01 (optional keys not
supported).

The index (``dicomlab.indexops``) holds the study and series fields; an instance's SOP
class and number are in ``keys.series_images``, written by each C-STORE; an instance the
reconcile listed without them is read from its file once and written back.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from dicomlab import keys

LOG = logging.getLogger(__name__)

LEVELS = ("STUDY", "SERIES", "IMAGE")
UNIQUE = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
STATUS_PENDING = 0xFF00
STATUS_PENDING_UNSUPPORTED = 0xFF01  # Pending: one or more optional keys not supported
STATUS_IDENTIFIER_MISMATCH = 0xA900  # Failure: Identifier does not match SOP Class
STATUS_UNABLE = 0xC000  # Failure: Unable to process

# keyword -> (level, field of the index record)
ATTRS: dict[str, tuple[str, str]] = {
    "StudyInstanceUID": ("STUDY", "study_uid"),
    "PatientName": ("STUDY", "patient_name"),
    "PatientID": ("STUDY", "patient_id"),
    "PatientBirthDate": ("STUDY", "patient_birth_date"),
    "PatientSex": ("STUDY", "patient_sex"),
    "StudyDate": ("STUDY", "study_date"),
    "StudyTime": ("STUDY", "study_time"),
    "AccessionNumber": ("STUDY", "accession_number"),
    "StudyDescription": ("STUDY", "study_description"),
    "StudyID": ("STUDY", "study_id"),
    "ModalitiesInStudy": ("STUDY", "modalities"),
    "NumberOfStudyRelatedSeries": ("STUDY", "series_count"),
    "NumberOfStudyRelatedInstances": ("STUDY", "instance_count"),
    "SeriesInstanceUID": ("SERIES", "series_uid"),
    "Modality": ("SERIES", "modality"),
    "SeriesNumber": ("SERIES", "series_number"),
    "SeriesDescription": ("SERIES", "series_description"),
    "NumberOfSeriesRelatedInstances": ("SERIES", "series_instance_count"),
    "SOPInstanceUID": ("IMAGE", "sop_instance_uid"),
    "SOPClassUID": ("IMAGE", "sop_class_uid"),
    "InstanceNumber": ("IMAGE", "instance_number"),
}
RETURN_ONLY = {"NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances"}
# keys the identifier may carry that are not matched: the answer sets them itself
SPECIAL = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "InstanceAvailability"}
_BATCH = 200


class QueryError(Exception):
    """An identifier the PACS cannot search with: the status to answer and why, in words."""

    def __init__(self, status: int, words: str) -> None:
        super().__init__(words)
        self.status = status
        self.words = words


@dataclass
class Key:
    keyword: str
    level: str
    field: str
    vr: str
    value: str  # as requested ("" = universal)
    match: Any = None  # a predicate on the record's value, or None (universal / return only)


@dataclass
class Query:
    level: str
    keys: list[Key] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # keywords answered empty

    def at(self, level: str) -> list[Key]:
        return [k for k in self.keys if k.level == level and k.match is not None]

    def words(self) -> str:
        """``PatientName=DOE*, StudyDate=2024...`` (the keys that narrow the search)."""
        shown = [f"{k.keyword}={k.value}" for k in self.keys if k.match is not None]
        return ", ".join(shown) or "no matching keys (everything)"


def _text(elem: Any) -> str:
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("latin-1").strip(" \0")
    return str(value).strip(" \0")


def _wildcard(pattern: str, fold: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if fold else 0))


def _single(value: str, vr: str) -> Any:
    """A predicate for one requested value against one stored value."""
    if vr in ("DA", "TM", "DT"):
        def norm(v: str) -> str:
            return v.replace(":", "") if vr == "TM" else v

        if "-" in value:
            lo, _, hi = value.partition("-")
            lo, hi = norm(lo.strip()), norm(hi.strip())
            if vr == "TM" and hi:
                hi = hi + "\uffff"  # 1015 includes 101530.5: a time's precision is the range's
            return lambda v: bool(v) and (not lo or norm(v) >= lo) and (not hi or norm(v) <= hi)
        want = norm(value)
        return lambda v: norm(v) == want or (vr == "TM" and norm(v).startswith(want))
    if vr in ("IS", "DS", "US", "UL", "SS", "SL"):
        try:
            number = float(value)
        except ValueError:
            raise QueryError(STATUS_IDENTIFIER_MISMATCH, f"{value!r} is not a number") from None

        def num(v: str) -> bool:
            try:
                return float(v) == number
            except ValueError:
                return False
        return num
    fold = vr == "PN"
    if vr != "UI" and ("*" in value or "?" in value):
        rx = _wildcard(value, fold)
        return lambda v: rx.fullmatch(v) is not None
    if fold:
        low = value.casefold()
        return lambda v: v.casefold() == low
    return lambda v: v == value


def _predicate(keyword: str, vr: str, value: str) -> Any:
    if not value or (vr != "UI" and value.strip("*") == "" and "*" in value):
        return None  # universal: an empty value, or a single "*"
    if vr == "UI" or "\\" in value:  # a list of UIDs, or several values: any matches
        if vr == "UI":
            wanted = {v.strip(" \0") for v in value.split("\\") if v.strip(" \0")}
            return lambda v: (set(v) & wanted) if isinstance(v, list) else v in wanted
        preds = [_single(v, vr) for v in value.split("\\") if v]
    else:
        preds = [_single(value, vr)]

    def any_value(stored: Any) -> bool:
        values = stored if isinstance(stored, list) else [stored]
        return any(p(str(v)) for p in preds for v in values)
    return any_value


def parse(identifier: Dataset) -> Query:
    """The query in ``identifier`` (a C-FIND or C-MOVE / C-GET request's), or QueryError."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS:
        if level == "PATIENT":
            raise QueryError(STATUS_IDENTIFIER_MISMATCH, "QueryRetrieveLevel PATIENT is not part of the Study Root "
                             "information model this PACS offers: ask at STUDY, SERIES or IMAGE level")
        raise QueryError(STATUS_IDENTIFIER_MISMATCH, f"QueryRetrieveLevel {level or '(missing)'!r} is not one of "
                         "STUDY, SERIES, IMAGE")
    q = Query(level)
    depth = LEVELS.index(level)
    for elem in identifier:
        kw = elem.keyword
        if kw in SPECIAL or elem.tag.group == 0x0002:
            continue
        if kw not in ATTRS or LEVELS.index(ATTRS[kw][0]) > depth or elem.VR == "SQ":
            q.unsupported.append(kw or f"({elem.tag.group:04X},{elem.tag.element:04X})")
            continue
        lvl, fld = ATTRS[kw]
        vr = dictionary_VR(elem.tag)
        value = _text(elem)
        try:
            match = None if kw in RETURN_ONLY else _predicate(kw, vr, value)
        except QueryError as exc:
            raise QueryError(exc.status, f"{kw}: {exc.words}") from None
        q.keys.append(Key(kw, lvl, fld, vr, value, match))
    return q


def answer(q: Query, record: dict[str, Any], retrieve_aet: str) -> Dataset:
    """The identifier of one match: every requested key, in the request's order."""
    ds = Dataset()
    ds.QueryRetrieveLevel = q.level
    non_ascii = False
    for k in q.keys:
        value = record.get(k.field, "")
        if isinstance(value, list):
            non_ascii |= not all(str(v).isascii() for v in value)
        else:
            value = "" if value is None else str(value)
            non_ascii |= not value.isascii()
        tag = tag_for_keyword(k.keyword)
        if tag is not None:  # every key in ATTRS is a dictionary keyword
            ds.add_new(tag, k.vr, value)
    for kw in q.unsupported:
        tag = tag_for_keyword(kw)
        if tag is not None:
            ds.add_new(tag, dictionary_VR(tag), None)
    ds.RetrieveAETitle = retrieve_aet
    ds.InstanceAvailability = "ONLINE"
    if non_ascii:
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _ok(keys_: list[Key], record: dict[str, Any]) -> bool:
    return all(k.match(record.get(k.field, "")) for k in keys_)


class Index:
    """Reads of the study index for a query (Redis client of the PACS; storage root for the
    instance fields the index lacks)."""

    def __init__(self, client: Any, root: Path, read_stored: Any) -> None:
        self.client = client
        self.root = root
        self.read_stored = read_stored  # reconcile.read_stored: a stored file's index fields

    def _uids(self, keys_: list[Key], keyword: str) -> set[str] | None:
        for k in keys_:
            if k.keyword == keyword and k.vr == "UI" and k.value:
                return {v.strip(" \0") for v in k.value.split("\\") if v.strip(" \0")}
        return None

    def studies(self, q: Query) -> Iterator[dict[str, Any]]:
        want = self._uids(q.keys, "StudyInstanceUID")
        uids = sorted(want) if want is not None else self.client.zrevrange(keys.STUDIES, 0, -1)
        test = q.at("STUDY")
        for start in range(0, len(uids), _BATCH):
            chunk = uids[start:start + _BATCH]
            pipe = self.client.pipeline(transaction=False)
            for u in chunk:
                pipe.hgetall(keys.study(u))
                pipe.hgetall(keys.study_series(u))
                pipe.scard(keys.study_instances(u))
            res = pipe.execute()
            for i, uid in enumerate(chunk):
                raw, series, count = res[3 * i:3 * i + 3]
                if not raw:
                    continue
                parsed = {s: json.loads(v) for s, v in series.items()}
                rec: dict[str, Any] = {**raw, "study_uid": uid, "series_count": str(len(parsed)),
                                       "instance_count": str(count), "_series": parsed,
                                       "modalities": sorted({s.get("modality", "") for s in parsed.values()} - {""})}
                if _ok(test, rec):
                    yield rec

    def series(self, q: Query, study: dict[str, Any]) -> Iterator[dict[str, Any]]:
        want = self._uids(q.keys, "SeriesInstanceUID")
        items = [(u, s) for u, s in study["_series"].items() if want is None or u in want]
        pipe = self.client.pipeline(transaction=False)
        for u, _ in items:
            pipe.scard(keys.series_instances(study["study_uid"], u))
        counts = pipe.execute() if items else []
        test = q.at("SERIES")
        out = []
        for (u, s), n in zip(items, counts, strict=True):
            rec = {**study, **s, "series_uid": u, "series_instance_count": str(n)}
            if _ok(test, rec):
                out.append(rec)
        out.sort(key=lambda r: (_number(r.get("series_number")), r["series_uid"]))
        yield from out

    def images(self, q: Query, series: dict[str, Any], fields: bool = True) -> Iterator[dict[str, Any]]:
        """The instances of a series that match; ``fields`` False: only their UIDs (a retrieve)."""
        study_uid, series_uid = series["study_uid"], series["series_uid"]
        want = self._uids(q.keys, "SOPInstanceUID")
        sops = self.client.smembers(keys.series_instances(study_uid, series_uid))
        if want is not None:
            sops = sops & want
        test = q.at("IMAGE")
        if not fields and not any(k.keyword != "SOPInstanceUID" for k in test):
            for sop in sorted(sops):
                yield {**series, "sop_instance_uid": sop}
            return
        known = self.client.hgetall(keys.series_images(study_uid, series_uid))
        out = []
        for sop in sops:
            extra = json.loads(known[sop]) if sop in known else self._read_fields(study_uid, series_uid, sop)
            rec = {**series, **extra, "sop_instance_uid": sop}
            if _ok(test, rec):
                out.append(rec)
        out.sort(key=lambda r: (_number(r.get("instance_number")), r["sop_instance_uid"]))
        yield from out

    def _read_fields(self, study_uid: str, series_uid: str, sop: str) -> dict[str, str]:
        """An instance's SOP class and number from its file (the reconcile listed it without them),
        written back to the index."""
        try:
            meta = self.read_stored(self.root / study_uid / series_uid / f"{sop}.dcm")
        except Exception as exc:  # unreadable: matched as empty, the retrieve says why if it fails
            LOG.warning("cannot read the instance fields of %s: %s", sop, exc)
            return {}
        extra = {"sop_class_uid": meta.get("sop_class_uid", ""), "instance_number": meta.get("instance_number", "")}
        try:
            self.client.hset(keys.series_images(study_uid, series_uid), sop, json.dumps(extra))
        except Exception:  # a cache: the next query reads the file again
            pass
        return extra

    def search(self, q: Query, fields: bool = True) -> Iterator[dict[str, Any]]:
        """The records that match, at the query's level, newest study first."""
        for study in self.studies(q):
            if q.level == "STUDY":
                yield study
                continue
            for series in self.series(q, study):
                if q.level == "SERIES":
                    yield series
                    continue
                yield from self.images(q, series, fields)


def _number(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("inf")
