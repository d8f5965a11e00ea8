"""Where a modality outside must send: GET /api/scp's listener.public, from the live listener
and the way the lab exposes it (PACS_PUBLIC_ADDRESS, PACS_PUBLISHED_TARGET)."""

from __future__ import annotations

import pytest
from admin_helpers import TOKEN, Api


@pytest.fixture
def make_api(redis_url, monkeypatch):
    def make(**env: str) -> Api:
        from admin_api import create_app

        for k in ("PACS_PUBLIC_ADDRESS", "PACS_PUBLISHED_TARGET"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        app = create_app({"TESTING": True, "ADMIN_TOKEN": TOKEN, "REDIS_URL": redis_url, "PACS_HOST": "pacs"})
        return Api(app.test_client())

    return make


def public(api: Api) -> dict:
    r = api.get("/api/scp")
    assert r.status_code == 200, r.get_json()
    return r.get_json()["listener"]["public"]


def test_compose_published_port_reaching_the_live_listener(make_api, registry):
    from dicomlab.settings import ListenerSettings

    registry.seed_listener(ListenerSettings(ae_title="PACS", port=104))
    registry.heartbeat({"ae_title": "PACS", "port": 104})
    p = public(make_api(PACS_PUBLIC_ADDRESS="127.0.0.1:21112", PACS_PUBLISHED_TARGET="104"))
    assert (p["host"], p["port"], p["published"], p["target"], p["current"]) == ("127.0.0.1", 21112, True, 104, True)
    assert "AE title PACS at 127.0.0.1:21112" in p["text"]


def test_compose_port_changed_under_the_mapping_says_what_to_do(make_api, registry):
    from dicomlab.settings import ListenerSettings

    registry.seed_listener(ListenerSettings(ae_title="PACS", port=104))
    api = make_api(PACS_PUBLIC_ADDRESS="127.0.0.1:21112", PACS_PUBLISHED_TARGET="104")
    r = api.patch("/api/scp", json={"port": 11104})
    assert r.status_code == 200, r.get_json()
    registry.heartbeat({"ae_title": "PACS", "port": 11104})  # the PACS moved its listener
    p = public(api)
    assert p["current"] is False and p["port"] == 21112 and p["target"] == 104
    assert "still forwards to port 104" in p["text"] and "listens on 11104" in p["text"]
    assert "make up" in p["text"]


def test_local_processes_follow_the_live_port(make_api, registry):
    from dicomlab.settings import ListenerSettings

    registry.seed_listener(ListenerSettings(ae_title="MYPACS", port=11112))
    api = make_api(PACS_PUBLIC_ADDRESS="127.0.0.1")
    assert public(api)["port"] == 11112  # no heartbeat yet: the stored port
    registry.heartbeat({"ae_title": "MYPACS", "port": 40404})
    p = public(api)
    assert (p["host"], p["port"], p["published"], p["current"]) == ("127.0.0.1", 40404, False, True)
    assert p["text"] == "A modality calls AE title MYPACS at 127.0.0.1:40404."
