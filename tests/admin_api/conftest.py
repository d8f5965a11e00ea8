"""Fixtures for the admin API: app -> client -> api (with the token), a real
DICOM peer to echo, and the app under real gunicorn."""

from __future__ import annotations

import pytest
from admin_helpers import TOKEN, Api, EchoPeer, Gunicorn


@pytest.fixture
def app(redis_url, tmp_path):
    from admin_api import create_app

    return create_app({"TESTING": True, "ADMIN_TOKEN": TOKEN, "REDIS_URL": redis_url, "ECHO_TIMEOUT": 2.0,
                       "TLS_DIR": str(tmp_path / "tls")})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def api(client):
    return Api(client)


@pytest.fixture
def node(api):
    """One authorized node, as the API returned it."""
    r = api.post("/api/nodes", json={"ae_title": "USPROD", "host": "192.168.1.10", "port": 104})
    assert r.status_code == 201, r.get_json()
    return r.get_json()


@pytest.fixture
def echo_peer():
    peer = EchoPeer()
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def gunicorn_server(redis_server):
    server = Gunicorn(redis_server.url)
    yield server
    server.stop()
