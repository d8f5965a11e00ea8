"""DICOM Lab admin API: the application factory.

``create_app`` reads defaults, then the environment, then test overrides;
attaches the shared registry and event log to ``app.extensions``; registers
the JSON API blueprint (``api``) and the web page blueprint (``web``).

Served by gunicorn: ``gunicorn -c admin-api/gunicorn.conf.py 'admin_api:create_app()'``.
"""

from __future__ import annotations

from typing import Any

from apiflask import APIFlask

from . import config, docs_assets, headers
from .errors import init_errors
from .resources import Resources

__all__ = ["create_app"]


def create_app(test_config: dict[str, Any] | None = None) -> APIFlask:
    app = APIFlask(
        __name__,
        title="DICOM Lab admin API",
        version="0.1.0",
        spec_path="/api/openapi.json",
        docs_path="/api/docs",
        docs_oauth2_redirect_path=None,
    )
    docs_assets.configure(app)  # Swagger UI from this app, not a CDN (air-gapped networks)
    config.load(app, test_config)

    init_errors(app)
    headers.init_app(app)
    Resources.init_app(app)

    from . import (
        commitment_api,  # noqa: F401 - its routes join the api blueprint
        conformance,  # noqa: F401  (its routes go on the API blueprint)
        dicomweb_qido,  # noqa: F401  (QIDO-RS: its routes join the DICOMweb blueprint, first)
        dicomweb_wado,  # noqa: F401  (WADO-RS: its routes join the DICOMweb blueprint)
        ladder_routes,  # noqa: F401  (its routes join the API blueprint)
        tlsapi,  # noqa: F401  (its routes join the api blueprint)
    )
    from .api import bp as api_bp
    from .dicomweb import bp as dicomweb_bp
    from .web import bp as web_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(dicomweb_bp)
    app.register_blueprint(web_bp)
    from . import metrics

    metrics.init_app(app)  # GET /metrics (token), request counts and times
    return app
