"""The media side of the DICOMweb routes (PS3.18 §8.7): reading Accept headers, multipart/related
bodies, the Part 10 file in the transfer syntax asked for, and the parameters of ``rendered``."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

from flask import Response
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from .qido import QueryError
from .render import FORMATS, MAX_VIEWPORT, RenderError, Window


def accept_list(header: str | None) -> list[tuple[str, dict[str, str]]]:
    """The media ranges of an Accept header, in order, with their parameters (lower-case names)."""
    out = []
    for part in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", header or ""):
        bits = [b.strip() for b in part.split(";")]
        if not bits[0]:
            continue
        params = {}
        for b in bits[1:]:
            k, _, v = b.partition("=")
            params[k.strip().lower()] = v.strip().strip('"')
        out.append((bits[0].lower(), params))
    return out or [("*/*", {})]


def dicom_syntax(accept: str | None) -> str | None:
    """The transfer syntax the client accepts for application/dicom: ``*`` (as stored), a UID, or None
    when nothing it accepts is offered."""
    for media, params in accept_list(accept):
        if media in ("*/*", "multipart/*") or (media == "multipart/related" and
                                               params.get("type", "application/dicom") in ("application/dicom",
                                                                                           "application/*")):
            return params.get("transfer-syntax", ExplicitVRLittleEndian)
    return None


def part10(path: Path, syntax: str) -> tuple[bytes, str]:
    """The file as stored (``syntax`` ``*`` or the stored one), else transcoded to Explicit VR LE."""
    raw = path.read_bytes()
    stored = str(dcmread(BytesIO(raw), stop_before_pixels=True).file_meta.get("TransferSyntaxUID", ""))
    if syntax in ("*", stored):
        return raw, stored
    ds = dcmread(BytesIO(raw))
    try:
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=True, implicit_vr=False, little_endian=True)
    except Exception as exc:
        raise RenderError(f"The instance is stored as {stored} and could not be transcoded to Explicit VR "
                          f"Little Endian ({exc}); ask for transfer-syntax=* to get it as stored.") from None
    return buf.getvalue(), ExplicitVRLittleEndian


def multipart(parts: Iterator[tuple[bytes, str]], media: str) -> Response:
    boundary = secrets.token_hex(16)

    def body() -> Iterator[bytes]:
        for data, ctype in parts:
            yield f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return Response(body(), content_type=f'multipart/related; type="{media}"; boundary={boundary}')


def frame_numbers(raw: str) -> list[int]:
    if not re.fullmatch(r"[0-9]{1,6}(,[0-9]{1,6}){0,99}", raw) or "0" in raw.split(","):
        raise QueryError("Frame numbers are whole numbers from 1, comma-separated (at most 100).")
    return [int(x) for x in raw.split(",")]




def frames_accepted(accept: str | None) -> bool:
    """Does the client take frames as multipart/related; type="application/octet-stream" (native)?"""
    for media, params in accept_list(accept):
        if media in ("*/*", "multipart/*") or (media == "multipart/related" and params.get(
                "type", "application/octet-stream") in ("application/octet-stream", "application/*", "*/*")):
            return params.get("transfer-syntax", ExplicitVRLittleEndian) in (ExplicitVRLittleEndian, "*")
    return False


def rendered_type(accept_param: str | None, accept: str | None) -> str | None:
    """image/png or image/jpeg, from ``accept=`` or else the Accept header (None: neither offered)."""
    for media, _params in ([(accept_param.lower(), {})] if accept_param else accept_list(accept)):
        if media in FORMATS:
            return media
        if media in ("*/*", "image/*"):
            return "image/jpeg"  # PS3.18 §8.7.4: the default rendered media type
    return None


def _whole(raw: str, what: str) -> int:
    if not re.fullmatch(r"[0-9]{1,5}", raw.strip()):
        raise QueryError(f"{what} ({raw[:20]!r} given)")
    return int(raw)


def render_args(args: dict[str, Any]) -> tuple[Window | None, int, tuple[int, int] | None]:
    """(window, JPEG quality, viewport) from the query; QueryError in words."""
    try:
        window = Window.parse(args["window"]) if args.get("window") else None
    except ValueError as exc:
        raise QueryError(str(exc)) from None
    quality = _whole(args.get("quality") or "90", "quality is a whole number from 1 to 100")
    if not 1 <= quality <= 100:
        raise QueryError("quality is a whole number from 1 to 100")
    viewport = None
    if args.get("viewport"):
        words = f"viewport is width,height, each a whole number from 1 to {MAX_VIEWPORT}"
        sizes = args["viewport"].split(",")
        if len(sizes) != 2:
            raise QueryError(words)
        vw, vh = (_whole(x, words) for x in sizes)
        if not (1 <= vw <= MAX_VIEWPORT and 1 <= vh <= MAX_VIEWPORT):
            raise QueryError(words)
        viewport = (vw, vh)
    return window, quality, viewport
