"""The admin API under real gunicorn: many open event streams, and the API still answers."""

from __future__ import annotations

import json
import time

import requests
from admin_helpers import AUTH

from dicomlab.waiting import poll_until

STREAMS = 24


def read_until(resp, event_id: str) -> dict:
    for line in resp.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            data = json.loads(line[6:])
            if data["id"] == event_id:
                return data
    raise AssertionError("stream ended before the event arrived")


def test_many_open_streams_do_not_starve_the_api(gunicorn_server, redis_url, registry):
    from dicomlab.events import EventLog

    url = gunicorn_server.url
    streams = []
    try:
        for _ in range(STREAMS):
            r = requests.get(f"{url}/api/events/stream", headers=AUTH, stream=True, timeout=(5, 10))
            assert r.status_code == 200, r.text
            assert r.headers["Content-Type"].startswith("text/event-stream")
            streams.append(r)

        # With every stream open, API calls answer promptly.
        for i in range(10):
            t0 = time.monotonic()
            r = requests.post(f"{url}/api/nodes", headers=AUTH, json={"ae_title": f"CT{i:02d}", "host": "10.0.0.1"},
                              timeout=5)
            assert r.status_code == 201, r.text
            r = requests.get(f"{url}/api/nodes", headers=AUTH, timeout=5)
            assert r.status_code == 200 and len(r.json()) == i + 1
            assert requests.get(f"{url}/api/health", timeout=5).status_code == 200
            assert time.monotonic() - t0 < 2.0

        # And every stream gets a new event.
        ev = EventLog(registry.client, source="pacs").emit("association-accepted", "to every tab")
        for r in streams:
            assert read_until(r, ev.id)["message"] == "to every tab"
        # The node additions above are in the streams too (they came first).
        assert len(registry.read_events(types={"node-added"})) == 10
    finally:
        for r in streams:
            r.close()


def test_gunicorn_serves_the_page_docs_and_auth(gunicorn_server):
    url = gunicorn_server.url
    assert "DICOM Lab" in requests.get(url + "/", timeout=5).text
    assert requests.get(url + "/api/openapi.json", timeout=5).json()["info"]["title"] == "DICOM Lab admin API"
    r = requests.get(url + "/api/nodes", timeout=5)
    assert r.status_code == 401 and r.json()["error"]
    r = requests.post(url + "/api/nodes", headers={**AUTH, "Content-Type": "application/json"}, data="x" * 200_000,
                      timeout=5)
    assert r.status_code == 413


def test_access_log_leaves_out_passing_health_checks_and_keeps_the_rest(redis_server):
    from admin_helpers import Gunicorn

    server = Gunicorn(redis_server.url)  # its own log: the session server's is shared
    try:
        for _ in range(5):
            assert requests.get(server.url + "/api/health", timeout=5).status_code == 200
        assert requests.get(server.url + "/api/health?probe=marker", timeout=5).status_code == 200
        assert requests.get(server.url + "/api/nodes", timeout=5).status_code == 401
        assert requests.get(server.url + "/api/nodes", headers=AUTH, timeout=5).status_code == 200
        poll_until(lambda: server.log().count('"GET /api/nodes') >= 2, 10, interval=0.1)
        log = server.log()
    finally:
        server.stop()
    assert '"GET /api/nodes HTTP/1.1" 401' in log, log
    assert '"GET /api/nodes HTTP/1.1" 200' in log, log
    assert "/api/health" not in log, log
