"""Configuration of the admin API: defaults, then the environment, then test overrides."""

from __future__ import annotations

from typing import Any

from flask import Flask

from dicomlab.errors import LabError
from dicomlab.settings import EnvConfig, check_admin_token

from . import address
from .errors import http_error_schema, validation_error_schema

DEFAULTS: dict[str, Any] = {
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "ADMIN_TOKEN": None,
    "ADMIN_PORT": 8080,
    "PACS_HOST": "127.0.0.1",
    # Request bodies are small JSON documents; anything larger is refused (413).
    "MAX_CONTENT_LENGTH": 64 * 1024,
    # C-ECHO: connection, ACSE and DIMSE timeouts in seconds (short: a person waits).
    "ECHO_TIMEOUT": 3.0,
    # Server-Sent Events: how long one Redis XREAD blocks (below the client's
    # 2 s socket timeout), how often a comment keeps idle proxies from closing
    # the stream, and how many streams one process holds at most (the
    # gunicorn config keeps threads free for API calls beyond this).
    "SSE_BLOCK_MS": 1500,
    "SSE_KEEPALIVE_S": 15.0,
    "SSE_MAX_STREAMS": 1000,
    "SSE_RETRY_MS": 2000,
    # OpenAPI document
    "SECURITY_SCHEMES": {"BearerAuth": {"type": "http", "scheme": "bearer"}},
    "HTTP_ERROR_SCHEMA": http_error_schema,
    "VALIDATION_ERROR_SCHEMA": validation_error_schema,
    "VALIDATION_ERROR_STATUS_CODE": 422,
    "DESCRIPTION": (
        "Set the PACS listener and the authorized nodes, echo a node, follow the events, "
        "see the received studies and ask the CT simulator to send. Every route but "
        "`/api/health` needs `Authorization: Bearer <ADMIN_TOKEN>`."
    ),
    "JSON_SORT_KEYS": False,
}


def load(app: Flask, test_config: dict[str, Any] | None) -> None:
    app.config.from_mapping(DEFAULTS)
    env = EnvConfig.from_env()
    if env.redis_url:
        app.config["REDIS_URL"] = env.redis_url
    app.config["ADMIN_TOKEN"] = env.admin_token
    app.config["ADMIN_PORT"] = env.admin_port
    app.config["PACS_HOST"] = env.pacs_host
    app.config["TLS_DIR"] = env.tls_folder  # the lab CA (PACS_TLS_DIR; its default: README "DICOM TLS")
    # Tuning knobs: ADMIN_API_ECHO_TIMEOUT=5, ADMIN_API_SSE_MAX_STREAMS=56, ...
    app.config.from_prefixed_env("ADMIN_API")
    if test_config:
        app.config.from_mapping(test_config)
    address.load(app)  # where a modality outside reaches the PACS (after test overrides: they win)
    try:
        check_admin_token(app.config.get("ADMIN_TOKEN"))
    except LabError as exc:
        raise RuntimeError(str(exc)) from None
