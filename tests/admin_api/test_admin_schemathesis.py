"""Property-based run over /api/openapi.json: no 5xx, responses match the document.

The event stream never ends by design, so it is tested in test_admin_sse.py
and left out here.
"""

from __future__ import annotations

import tempfile

import pytest

schemathesis = pytest.importorskip("schemathesis")

from admin_helpers import AUTH, TOKEN  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)


def _app():
    from admin_api import create_app

    # The document needs no registry; the fixture below points the app at the test Redis.
    return create_app({"ADMIN_TOKEN": TOKEN, "REDIS_URL": "redis://127.0.0.1:1/0", "ECHO_TIMEOUT": 0.3,
                       "TLS_DIR": tempfile.mkdtemp(prefix="lab-tls-")})


APP = _app()
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", APP).exclude(path="/api/events/stream")


@pytest.fixture(scope="module", autouse=True)
def _registry_for_the_app(redis_server):
    from admin_api.resources import Resources

    APP.config["REDIS_URL"] = redis_server.url
    Resources.init_app(APP)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case):
    case.call_and_validate(
        headers=AUTH,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )
