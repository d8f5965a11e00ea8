"""Every error leaves as JSON ``{"error": <sentence>, "detail": ...}``; no stack trace ever does.

    HTTP errors (werkzeug, APIFlask, auth)  -> their status
    request validation (schemas)            -> 422, detail.fields = {field: [messages]}
    dicomlab ValidationError                -> 422, detail.fields = {field: [message]}
    dicomlab NotFound / Conflict            -> 404 / 409
    dicomlab RegistryUnavailable            -> 503
    anything else                           -> 500, logged here, nothing of it sent
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from apiflask import APIFlask, HTTPError
from flask import jsonify

from dicomlab.errors import Conflict, NotFound, RegistryUnavailable, ValidationError

LOG = logging.getLogger(__name__)

http_error_schema: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "what went wrong, in plain words"},
        "detail": {"description": "more about it (field errors, reason)"},
    },
    "required": ["error"],
}
validation_error_schema: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "detail": {
            "type": "object",
            "properties": {
                "fields": {
                    "type": "object",
                    "additionalProperties": {},
                    "description": "field name -> list of messages",
                },
                "location": {"type": "string"},
            },
        },
    },
    "required": ["error"],
}

_STATUS_WORDS = {
    400: "The request could not be read (is the body valid JSON?).",
    401: "Give the admin token: Authorization: Bearer <ADMIN_TOKEN>.",
    403: "Not allowed.",
    404: "Nothing here: the address is unknown.",
    405: "This address does not accept that method.",
    413: "The request body is too large.",
    415: "Send the body as JSON (Content-Type: application/json).",
    422: "Some fields are not valid.",
    500: "The admin API failed; its log has the details.",
    503: "The registry (Redis) is unreachable; try again when it is back.",
}


def _flatten(messages: Any) -> dict[str, list[str]]:
    """marshmallow's nested messages -> {"field": ["message", ...]} (dotted names)."""
    out: dict[str, list[str]] = {}

    def walk(prefix: str, m: Any) -> None:
        if isinstance(m, dict):
            for k, v in m.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(m, list) and m and all(isinstance(x, str) for x in m):
            out.setdefault(prefix or "_schema", []).extend(m)
        elif isinstance(m, list):
            for i, v in enumerate(m):
                walk(f"{prefix}.{i}", v)
        else:
            out.setdefault(prefix or "_schema", []).append(str(m))

    walk("", messages)
    return out


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def error_body(status: int, error: str | None = None, detail: Any = None) -> dict[str, Any]:
    return {"error": error or _STATUS_WORDS.get(status, "The request failed."), "detail": detail}


def field_error(field: str | None, message: str, location: str = "json") -> tuple[dict[str, Any], int]:
    name = field or "_schema"
    return error_body(422, message, {"fields": {name: [message]}, "location": location}), 422


def init_errors(app: APIFlask) -> None:
    @app.error_processor
    def _processor(error: HTTPError):  # every HTTPException and schema validation error
        status = error.status_code
        if status == 422 and isinstance(error.detail, dict) and error.detail:
            location, messages = next(iter(error.detail.items()))
            fields = _flatten(messages)
            first_field, first_msgs = next(iter(fields.items()))
            if first_field == "_schema":
                sentence = first_msgs[0]
            else:
                sentence = f"{first_field}: {first_msgs[0]}"
            body = error_body(422, sentence, {"fields": fields, "location": location})
        else:
            default = error.message in (None, "", _phrase(status))
            message = None if default else error.message
            detail = error.detail or None
            body = error_body(status, message, detail)
        return body, status, error.headers

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError):
        return field_error(exc.field, exc.message, getattr(exc, "location", "json"))

    @app.errorhandler(NotFound)
    def _not_found(exc: NotFound):
        return error_body(404, str(exc)), 404

    @app.errorhandler(Conflict)
    def _conflict(exc: Conflict):
        return error_body(409, str(exc)), 409

    @app.errorhandler(RegistryUnavailable)
    def _unavailable(exc: RegistryUnavailable):
        LOG.warning("registry unavailable: %s", exc)
        return error_body(503, None, "the registry (Redis) did not answer"), 503

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        LOG.exception("unhandled error")
        resp = jsonify(error_body(500))
        resp.status_code = 500
        return resp
