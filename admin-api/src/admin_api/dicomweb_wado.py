"""DICOMweb WADO-RS (PS3.18 §10.4): the instances (multipart DICOM), their metadata, frames
(decoded) and rendered images. Routes of ``dicomweb.bp``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from apiflask import Schema
from apiflask.fields import String
from flask import Response, request
from pydicom.uid import ExplicitVRLittleEndian

from dicomlab.errors import NotFound

from . import media, qido
from .dicomweb import _ARRAY, _BINARY, DICOM_JSON, _fail, _json, _num, bp, parts, route


class RenderQuery(Schema):
    window = String(metadata={"description": "center,width[,function]: e.g. -600,1500 (lung); function "
                                             "linear (default), linear-exact or sigmoid"})
    quality = String(metadata={"description": "JPEG quality 1-100 (default 90)"})
    viewport = String(metadata={"description": "width,height: fit the image within (never enlarged)"})
    accept = String(metadata={"description": "image/png or image/jpeg (else the Accept header decides)"})


RETRIEVE_DOC = ('`multipart/related; type="application/dicom"`: with `transfer-syntax=*` (or the stored '
                "syntax) the files as stored; without the parameter Explicit VR Little Endian, decompressed "
                "where needed; any other syntax is a 406.")



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
