"""The admin API's own request metrics: ``GET /metrics`` in the Prometheus text format.

The bearer token applies (``Authorization: Bearer <ADMIN_TOKEN>``, as Prometheus's
``authorization`` scrape setting sends it): the route sits beside the API, on the
port the page is published on, and the token is what guards that port.

Under gunicorn (several worker processes) ``prometheus_client`` runs in multiprocess
mode: gunicorn.conf.py sets ``PROMETHEUS_MULTIPROC_DIR`` (``ADMIN_METRICS_DIR``, else a
fresh temporary folder) before a worker imports this module, and empties it at start;
``/metrics`` sums every worker. Without it (one process, the Flask test client) the
process's own default registry is served.

``GET /metrics/pacs`` passes the PACS's own metrics through (``PACS_METRICS_URL``, e.g.
``http://pacs:9110/metrics``; the PACS serves them on its lab network only), so one
published port and one token reach both in either runtime; 404 when no URL is set,
503 when the PACS does not answer.

Routes are labelled by their rule (``/api/nodes/<path:ae_title>``), never by the raw
path, so a client cannot grow the label set; a path that matches no route is
``unmatched``.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from .auth import auth
from .errors import error_body

REQUESTS = Counter("dicomlab_admin_requests", "HTTP requests answered by the admin API, by method, route "
                   "and status", ["method", "route", "status"])
LATENCY = Histogram("dicomlab_admin_request_seconds", "Time to answer a request (for an event stream: to start "
                    "it), by method and route", ["method", "route"])

bp = Blueprint("metrics", __name__)


def _route() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def init_app(app: Flask) -> None:
    @app.before_request
    def _started() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        route = _route()
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        if started is not None:
            LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
        return response

    app.register_blueprint(bp)


def _registry() -> CollectorRegistry:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


@bp.get("/metrics")
@auth.login_required
def metrics() -> Response:
    return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/metrics/pacs")
@auth.login_required
def pacs_metrics() -> Response | tuple:
    url = current_app.config.get("PACS_METRICS_URL") or os.environ.get("PACS_METRICS_URL")
    if not url:
        return error_body(404, "The PACS's metrics are not configured here: set PACS_METRICS_URL (make up does) "
                               "to where the PACS serves them (PACS_METRICS_PORT)."), 404
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - a URL of the lab's own configuration
            body, ctype = r.read(), r.headers.get("Content-Type", CONTENT_TYPE_LATEST)
    except (urllib.error.URLError, OSError) as exc:
        return error_body(503, f"The PACS's metrics at {url} do not answer ({getattr(exc, 'reason', exc)}): is the "
                               "PACS running with PACS_METRICS_PORT set?"), 503
    return Response(body, content_type=ctype)
