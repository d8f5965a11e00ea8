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

The routes live in ``dicomweb_qido.py`` (QIDO-RS) and ``dicomweb_wado.py`` (WADO-RS); this module
holds the blueprint, the route decorator, the store and renderer of the process and the error answers.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from apiflask import APIBlueprint
from flask import Response, current_app, request
from pydicom.errors import InvalidDicomError

from . import qido
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


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("inf")
