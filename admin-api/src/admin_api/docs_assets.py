"""The browsable API docs (Swagger UI at ``/api/docs``) with its assets served by this app.

APIFlask's docs page loads Swagger UI from a CDN by default; on an air-gapped hospital network
that page stays blank. The Swagger UI files (5.x, which reads the OpenAPI 3.1 document APIFlask
writes) come from the ``flask-swagger-ui`` package, a Python wheel that ships the swagger-ui
dist folder (only its files are used, not its blueprint), and are served under ``/api/docs/assets/``,
without the bearer token, like the docs page itself; the page's script, style and icon URLs
point there, so the docs need no host but this one.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, abort, send_from_directory

ASSETS_URL = "/api/docs/assets"
# The files the docs page uses (and nothing else of the dist folder: no index.html, no source maps).
FILES = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png")


def swagger_ui_dir() -> Path:
    import flask_swagger_ui

    return Path(flask_swagger_ui.__file__).parent / "dist"


bp = Blueprint("docs_assets", __name__)


@bp.get(f"{ASSETS_URL}/<name>")
def asset(name: str):  # type: ignore[no-untyped-def]
    if name not in FILES:
        abort(404)
    return send_from_directory(swagger_ui_dir(), name, max_age=86400)


def configure(app: Flask) -> None:
    """Point the docs page at the local assets (before the app's own configuration, which may override)."""
    app.config.update(
        SWAGGER_UI_CSS=f"{ASSETS_URL}/swagger-ui.css",
        SWAGGER_UI_BUNDLE_JS=f"{ASSETS_URL}/swagger-ui-bundle.js",
        SWAGGER_UI_STANDALONE_PRESET_JS=f"{ASSETS_URL}/swagger-ui-standalone-preset.js",
        DOCS_FAVICON=f"{ASSETS_URL}/favicon-32x32.png",
        # no call to the public swagger.io validator from the browser
        SWAGGER_UI_CONFIG={"validatorUrl": None},
    )
    app.register_blueprint(bp)
