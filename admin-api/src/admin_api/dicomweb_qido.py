"""DICOMweb QIDO-RS (PS3.18 §10.6): searches for studies, series and instances, in
``application/dicom+json``; ``qido.py`` says which query keys match. Routes of ``dicomweb.bp``."""

from __future__ import annotations

from typing import Any

from apiflask import Schema
from apiflask.fields import String
from flask import Response, request, url_for
from marshmallow import INCLUDE

from dicomlab.errors import NotFound

from . import qido
from .dicomweb import _ARRAY, DICOM_JSON, _json, _num, bp, parts, route
from .instances import Store


class QidoQuery(Schema):
    """The common QIDO-RS parameters (documented; any attribute keyword or tag is accepted too)."""

    class Meta:
        unknown = INCLUDE

    limit = String(metadata={"description": "at most this many results (at most 1000)"})
    offset = String(metadata={"description": "skip this many results"})
    includefield = String(metadata={"description": "more attributes (keywords or tags, comma-separated) or `all`"})
    PatientID = String(metadata={"description": "wildcards * and ?"})
    PatientName = String(metadata={"description": "wildcards * and ?, case-insensitive"})
    StudyInstanceUID = String(metadata={"description": "one UID or a comma-separated list"})
    StudyDate = String(metadata={"description": "YYYYMMDD, or a range YYYYMMDD-YYYYMMDD, YYYYMMDD-, -YYYYMMDD"})
    ModalitiesInStudy = String(metadata={"description": "e.g. CT"})
    AccessionNumber = String()


QIDO_DOC = ("Results in `application/dicom+json` (PS3.18 F.2). Query keys: attribute keywords or tags; "
            "`*` and `?` wildcards; UID lists separated by commas; dates as `YYYYMMDD`, `a-b`, `a-`, `-b`; "
            "`limit` (at most 1000), `offset`, `includefield` (keywords, tags or `all`). A valid attribute that "
            "is no query key at this level is ignored, with a `Warning: 299` header.")

def _with_header(store: Store, rec: dict[str, Any], base: tuple[str, ...], extra: tuple[str, ...],
                 query: qido.Query, study: str, series: str | None) -> dict[str, Any]:
    """The result: what the index has, the rest from the first instance's header."""
    wanted = list(dict.fromkeys([*base, *sorted(query.include), *(extra if query.include_all else ())]))
    missing = [kw for kw in wanted if kw not in rec]
    out = qido.to_json(rec, [kw for kw in wanted if kw in rec])
    if missing:
        try:
            series_uids = [series] if series else [s["series_uid"] for s in store.series(study)]
            sop = store.sop_uids(study, series_uids[0])[0]
            ds = store.header(store.instance_path(study, series_uids[0], sop))
            out.update(qido.header_json(ds, set(missing)))
        except (NotFound, OSError, IndexError, ValueError):
            pass
        for kw in missing:
            out.setdefault(qido.tag_of(kw), {"vr": qido.dictionary_VR(kw)})
    kwargs = {"study": study, **({"series": series} if series else {})}
    out["00081190"] = {"vr": "UR", "Value": [url_for("dicomweb.retrieve_series" if series else
                                                      "dicomweb.retrieve_study", _external=True, **kwargs)]}
    return dict(sorted(out.items()))


@route("/studies", "QIDO-RS: search for studies", {DICOM_JSON: _ARRAY},
       description=QIDO_DOC)
@bp.input(QidoQuery, location="query", arg_name="_q")
def search_studies(_q: dict[str, Any]) -> Response:
    store, _ = parts()
    query = qido.Query.parse(request.args.items(multi=True), "study")
    found = [(s, r) for s in store.studies() if qido.matches(query, r := qido.study_record(s))]
    return _json([_with_header(store, r, qido.STUDY_RETURN, qido.STUDY_ALL, query, s["study_uid"], None)
                  for s, r in query.page(found)], query)


def _series_results(store: Store, studies: list[str], query: qido.Query) -> Response:
    found = []
    for study in studies:
        try:
            series_list = store.series(study)
            srec = qido.study_record({**store.study(study), "series_list": series_list, "instances": 0})
        except NotFound:
            continue
        for s in sorted(series_list, key=lambda s: (_num(s.get("series_number")), s["series_uid"])):
            own = qido.series_record(s)
            if qido.matches(query, {**srec, **own}):
                found.append((study, s["series_uid"], own))
    return _json([_with_header(store, r, qido.SERIES_RETURN, qido.SERIES_ALL, query, st, se)
                  for st, se, r in query.page(found)], query)


@route("/series", "QIDO-RS: search for series in every study", {DICOM_JSON: _ARRAY},
       description=QIDO_DOC)
@bp.input(QidoQuery, location="query", arg_name="_q")
def search_all_series(_q: dict[str, Any]) -> Response:
    store, _ = parts()
    query = qido.Query.parse(request.args.items(multi=True), "series")
    return _series_results(store, [s["study_uid"] for s in store.studies()], query)


@route("/studies/<study>/series", "QIDO-RS: search for the series of a study", {DICOM_JSON: _ARRAY},
       description=QIDO_DOC)
@bp.input(QidoQuery, location="query", arg_name="_q")
def search_series(study: str, _q: dict[str, Any]) -> Response:
    store, _ = parts()
    store.study(study)  # 404 for an unknown study
    return _series_results(store, [study], qido.Query.parse(request.args.items(multi=True), "series"))


def _instance_results(store: Store, study: str, series_uids: list[str], query: qido.Query) -> Response:
    rows = []
    for series in series_uids:
        for sop, ds in store.series_headers(study, series):
            rec = {kw: _value(ds, kw) for kw in query.matches}
            if qido.matches(query, rec):
                rows.append((_num(ds.get("InstanceNumber")), sop, series, ds))
    rows.sort(key=lambda r: (r[0], r[1]))
    out = []
    for _n, sop, series, ds in query.page(rows):
        item = qido.header_json(ds, None if query.include_all else set(qido.INSTANCE_RETURN) | query.include)
        item["00081190"] = {"vr": "UR", "Value": [url_for("dicomweb.retrieve_instance", study=study, series=series,
                                                          sop=sop, _external=True)]}
        out.append(dict(sorted(item.items())))
    return _json(out, query)


def _value(ds: Any, kw: str) -> Any:
    v = ds.get(kw)
    if v is None:
        return ""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return [str(x) for x in v]
    return str(v)


@route("/studies/<study>/instances", "QIDO-RS: search for the instances of a study", {DICOM_JSON: _ARRAY},
       description=QIDO_DOC)
@bp.input(QidoQuery, location="query", arg_name="_q")
def search_study_instances(study: str, _q: dict[str, Any]) -> Response:
    store, _ = parts()
    query = qido.Query.parse(request.args.items(multi=True), "instance")
    return _instance_results(store, study, [s["series_uid"] for s in store.series(study)], query)


@route("/studies/<study>/series/<series>/instances", "QIDO-RS: search for the instances of a series",
       {DICOM_JSON: _ARRAY}, description=QIDO_DOC)
@bp.input(QidoQuery, location="query", arg_name="_q")
def search_instances(study: str, series: str, _q: dict[str, Any]) -> Response:
    store, _ = parts()
    store.sop_uids(study, series)  # 404 for an unknown series
    return _instance_results(store, study, [series], qido.Query.parse(request.args.items(multi=True), "instance"))
