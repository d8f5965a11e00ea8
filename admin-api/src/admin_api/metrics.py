"""The admin API's own request metrics: ``GET /metrics`` in the Prometheus text format.

The bearer token applies (``Authorization: Bearer <ADMIN_TOKEN>``, as Prometheus's
``authorization`` scrape setting sends it): the route sits beside the API, on the
port the page is published on, and the token is what guards that port.

Under gunicorn (several worker processes) ``prometheus_client`` runs in multiprocess
mode: gunicorn.conf.py sets ``PROMETHEUS_MULTIPROC_DIR`` (``ADMIN_METRICS_DIR``, else a
fresh temporary folder) before a worker imports this module, and empties it at start;
``/metrics`` sums every worker. Without it (one process, the Flask test client) the
process's own default registry is served.

Routes are labelled by their rule (``/api/nodes/<path:ae_title>``), never by the raw
path, so a client cannot grow the label set; a path that matches no route is
``unmatched``.
"""

from __future__ import annotations

import os
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from .auth import auth

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
