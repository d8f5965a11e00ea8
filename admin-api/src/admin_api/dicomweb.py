"""A DICOMweb subset under ``/api/dicomweb`` (PS3.18), so that any DICOMweb client
can browse what the PACS received. The admin token applies as on the rest of the API.

QIDO-RS (``application/dicom+json``; ``qido.py`` says which query keys match):
    GET /studies                              GET /series
    GET /studies/{study}/series               GET /studies/{study}/instances
    GET /studies/{study}/series/{series}/instances
WADO-RS:
    GET /studies/{study}[/series/{series}[/instances/{sop}]]   multipart/related; type="application/dicom"
        the files as stored with ``transfer-syntax=*`` (or the stored syntax); without the parameter,
        Explicit VR Little Endian as PS3.18 §8.7.3.5.2 says, transcoded (decompressed) when needed
    GET .../metadata                           application/dicom+json (no bulk data: pixel data and
                                               binary values over 1 KiB are left out)
    GET .../instances/{sop}/frames/{list}      multipart/related; type="application/octet-stream"
                                               (decoded, native little endian)
    GET .../instances/{sop}[/frames/{n}]/rendered   image/jpeg (default) or image/png, by the Accept
                                               header or ``accept=``; ``window=center,width[,function]``,
                                               ``quality``, ``viewport=width,height``

Instances are listed in Instance Number order (then SOP Instance UID).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import String
from flask import Response, current_app, request, url_for
from marshmallow import INCLUDE
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian

from dicomlab.errors import NotFound

from . import media, qido
from .auth import auth
from .errors import error_body
from .instances import Store
from .render import Renderer, RenderError
from .resources import resources

bp = APIBlueprint("dicomweb", __name__, url_prefix="/api/dicomweb", tag="DICOMweb")
KEY = "dicomweb"
LOG = logging.getLogger(__name__)
DICOM_JSON = "application/dicom+json"
_lock = threading.Lock()

_ARRAY = {"schema": {"type": "array", "items": {"type": "object"}}}
_BINARY = {"schema": {"type": "string", "format": "binary"}}


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


class RenderQuery(Schema):
    window = String(metadata={"description": "center,width[,function]: e.g. -600,1500 (lung); function "
                                             "linear (default), linear-exact or sigmoid"})
    quality = String(metadata={"description": "JPEG quality 1-100 (default 90)"})
    viewport = String(metadata={"description": "width,height: fit the image within (never enlarged)"})
    accept = String(metadata={"description": "image/png or image/jpeg (else the Accept header decides)"})


QIDO_DOC = ("Results in `application/dicom+json` (PS3.18 F.2). Query keys: attribute keywords or tags; "
            "`*` and `?` wildcards; UID lists separated by commas; dates as `YYYYMMDD`, `a-b`, `a-`, `-b`; "
            "`limit` (at most 1000), `offset`, `includefield` (keywords, tags or `all`). A valid attribute that "
            "is no query key at this level is ignored, with a `Warning: 299` header.")
RETRIEVE_DOC = ('`multipart/related; type="application/dicom"`: with `transfer-syntax=*` (or the stored '
                "syntax) the files as stored; without the parameter Explicit VR Little Endian, decompressed "
                "where needed; any other syntax is a 406.")


def route(path: str, summary: str, content: dict[str, Any], errors: tuple[int, ...] = (),
          description: str | None = None) -> Any:
    responses: dict[int, Any] = {200: {"description": summary, "content": content}}
    for code in sorted({400, 401, 404, 503, *errors}):
        responses[code] = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 406: "Not Acceptable",
                           503: "Service Unavailable"}[code]

    def deco(f: Any) -> Any:
        f = bp.doc(summary=summary, description=description, responses=responses)(f)
        f = bp.auth_required(auth)(f)
        return bp.get(path)(f)

    return deco


def parts() -> tuple[Store, Renderer]:
    """This process's store and renderer (made on first use, from the app's configuration)."""
    ext = current_app.extensions.get(KEY)
    if ext is None:
        with _lock:
            ext = current_app.extensions.get(KEY)
            if ext is None:
                cfg = current_app.config
                ext = (Store(resources().registry.client, cfg["STORAGE_DIR"]),
                       Renderer(int(float(cfg["RENDER_CACHE_MB"]) * (1 << 20)),
                                int(float(cfg["RENDERED_CACHE_MB"]) * (1 << 20))))
                current_app.extensions[KEY] = ext
    return ext


def _fail(status: int, message: str) -> Response:
    resp = current_app.json.response(error_body(status, message))
    resp.status_code = status
    return resp


@bp.errorhandler(qido.QueryError)
def _bad_query(exc: qido.QueryError) -> Response:
    return _fail(400, str(exc))


@bp.errorhandler(RenderError)
def _bad_render(exc: RenderError) -> Response:
    LOG.warning("DICOMweb: %s %s answered 400: %s", request.method, request.path, exc)
    return _fail(400, str(exc))


@bp.errorhandler(InvalidDicomError)
def _bad_file(exc: InvalidDicomError) -> Response:
    LOG.warning("DICOMweb: %s reads a stored file that is not DICOM (%s); the PACS's start-up reconcile "
                "checks the storage", request.path, exc)
    return _fail(500, "A stored file could not be read as DICOM; the admin API's log has the details.")


def _json(items: Any, query: qido.Query | None = None) -> Response:
    resp = current_app.json.response(items)
    resp.mimetype = DICOM_JSON
    if query is not None and (w := query.warning()):
        resp.headers["Warning"] = w
    return resp


# -- QIDO-RS -------------------------------------------------------------------------
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
            rec = {**srec, **qido.series_record(s)}
            if qido.matches(query, rec):
                found.append((study, s["series_uid"], qido.series_record(s)))
    return _json([_with_header(store, r, qido.SERIES_RETURN, qido.SERIES_ALL, query, st, se)
                  for st, se, r in query.page(found)], query)


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("inf")


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


# -- WADO-RS: instances ------------------------------------------------------------------
def _retrieve(paths: list[Path]) -> Response:
    syntax = media.dicom_syntax(request.headers.get("Accept"))
    if syntax is None:
        return _fail(406, 'This resource is offered as multipart/related; type="application/dicom" '
                          "(transfer-syntax=* for the files as stored).")
    if syntax != "*" and syntax != ExplicitVRLittleEndian:
        stored = {str(parts()[0].header(p).file_meta.get("TransferSyntaxUID", "")) for p in paths}
        if stored != {syntax}:
            return _fail(406, f"Transfer syntax {syntax[:64]} is not offered: the instances are stored as "
                              f"{', '.join(sorted(stored))}; ask for one of those, 1.2.840.10008.1.2.1 or *.")
    first = media.part10(paths[0], syntax)  # errors (406/400) before the response starts

    def items() -> Iterator[tuple[bytes, str]]:
        for i, p in enumerate(paths):
            data, ts = first if i == 0 else media.part10(p, syntax)
            yield data, f"application/dicom; transfer-syntax={ts}"

    return media.multipart(items(), "application/dicom")


_MULTI_DICOM = {"multipart/related": _BINARY}


@route("/studies/<study>", "WADO-RS: retrieve every instance of a study", _MULTI_DICOM, (406,),
       description=RETRIEVE_DOC)
def retrieve_study(study: str) -> Response:
    store, _ = parts()
    paths = [store.instance_path(study, s["series_uid"], sop) for s in store.series(study)
             for sop in store.sop_uids(study, s["series_uid"])]
    return _retrieve(paths)


@route("/studies/<study>/series/<series>", "WADO-RS: retrieve every instance of a series", _MULTI_DICOM, (406,),
       description=RETRIEVE_DOC)
def retrieve_series(study: str, series: str) -> Response:
    store, _ = parts()
    return _retrieve([store.instance_path(study, series, sop) for sop in store.sop_uids(study, series)])


@route("/studies/<study>/series/<series>/instances/<sop>", "WADO-RS: retrieve an instance", _MULTI_DICOM, (406,),
       description=RETRIEVE_DOC)
def retrieve_instance(study: str, series: str, sop: str) -> Response:
    return _retrieve([parts()[0].instance_path(study, series, sop)])


# -- WADO-RS: metadata ---------------------------------------------------------------------
def _metadata(items: list[tuple[str, str, str]]) -> Response:
    store, _ = parts()
    out = []
    for study, series, sop in items:
        out.append(qido.header_json(store.header(store.instance_path(study, series, sop)), None))
    out.sort(key=lambda d: (_num((d.get("00200013", {}).get("Value") or [None])[0]), str(d.get("00080018"))))
    return _json(out)


@route("/studies/<study>/metadata", "WADO-RS: the metadata of every instance of a study", {DICOM_JSON: _ARRAY})
def study_metadata(study: str) -> Response:
    store, _ = parts()
    return _metadata([(study, s["series_uid"], sop) for s in store.series(study)
                      for sop in store.sop_uids(study, s["series_uid"])])


@route("/studies/<study>/series/<series>/metadata", "WADO-RS: the metadata of every instance of a series",
       {DICOM_JSON: _ARRAY})
def series_metadata(study: str, series: str) -> Response:
    return _metadata([(study, series, sop) for sop in parts()[0].sop_uids(study, series)])


@route("/studies/<study>/series/<series>/instances/<sop>/metadata", "WADO-RS: the metadata of an instance",
       {DICOM_JSON: _ARRAY})
def instance_metadata(study: str, series: str, sop: str) -> Response:
    return _metadata([(study, series, sop)])


# -- WADO-RS: frames and rendered ------------------------------------------------------------
@route("/studies/<study>/series/<series>/instances/<sop>/frames/<frames>",
       "WADO-RS: frames, decoded (native little endian)", {"multipart/related": _BINARY}, (406,))
def retrieve_frames(study: str, series: str, sop: str, frames: str) -> Response:
    store, renderer = parts()
    numbers = media.frame_numbers(frames)
    path = store.instance_path(study, series, sop)
    if not media.frames_accepted(request.headers.get("Accept")):
        return _fail(406, 'Frames are offered as multipart/related; type="application/octet-stream" '
                          f"(transfer-syntax={ExplicitVRLittleEndian}).")
    try:
        data = [renderer.raw_frame(store.file_key(path), n) for n in numbers]
    except IndexError as exc:
        raise NotFound(f"No {exc}.") from None
    ctype = f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    return media.multipart(iter([(d, ctype) for d in data]), "application/octet-stream")


def _render(study: str, series: str, sop: str, number: int, args: dict[str, Any]) -> Response:
    store, renderer = parts()
    mtype = media.rendered_type(args.get("accept"), request.headers.get("Accept"))
    if mtype is None:
        return _fail(406, "Rendered images are offered as image/jpeg or image/png.")
    window, quality, viewport = media.render_args(args)
    key = store.file_key(store.instance_path(study, series, sop))
    # The browser keeps the image and asks again each time (no-cache): 304 while the file and the
    # parameters are the same, a new image once the instance was replaced.
    etag = hashlib.sha256(repr((key, number, window, mtype, quality, viewport)).encode()).hexdigest()[:32]
    if request.if_none_match.contains(etag):
        resp = Response(status=304)
    else:
        try:
            data = renderer.render(key, window, mtype, quality, viewport, number)
        except IndexError as exc:
            raise NotFound(f"No {exc}.") from None
        resp = Response(data, mimetype=mtype)
    resp.set_etag(etag)
    resp.headers["Cache-Control"] = "private, no-cache"
    return resp


_IMAGES = {"image/jpeg": _BINARY, "image/png": _BINARY}


RENDERED_DOC = ("Rendered on the server: the Modality LUT (HU for CT), then the VOI window (PS3.3 C.11.2.1.2): "
                "`window=center,width[,function]` (soft tissue 40,400; lung -600,1500; bone 500,2000), else the "
                "file's first Window Center / Width. `image/jpeg` by default, `image/png` by the Accept header or "
                "`accept=image/png`. ETag + `Cache-Control: private, no-cache`: a 304 while nothing changed.")


@route("/studies/<study>/series/<series>/instances/<sop>/rendered", "WADO-RS: the instance rendered",
       _IMAGES, (406,), description=RENDERED_DOC)
@bp.input(RenderQuery, location="query", arg_name="args")
def instance_rendered(study: str, series: str, sop: str, args: dict[str, Any]) -> Response:
    return _render(study, series, sop, 1, args)


@route("/studies/<study>/series/<series>/instances/<sop>/frames/<int:frame>/rendered",
       "WADO-RS: one frame rendered", _IMAGES, (406,), description=RENDERED_DOC)
@bp.input(RenderQuery, location="query", arg_name="args")
def frame_rendered(study: str, series: str, sop: str, frame: int, args: dict[str, Any]) -> Response:
    if frame < 1:
        raise NotFound("Frames are numbered from 1.")
    return _render(study, series, sop, frame, args)
