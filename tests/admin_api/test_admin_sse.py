"""Server-Sent Events from the event stream: live, backlog, type filter, resume with Last-Event-ID."""

from __future__ import annotations

import json
import time

import pytest
from admin_helpers import AUTH, TOKEN, Api

from lab import free_port


@pytest.fixture
def sse_app(redis_url):
    from admin_api import create_app

    return create_app({"ADMIN_TOKEN": TOKEN, "REDIS_URL": redis_url, "SSE_BLOCK_MS": 100,
                       "SSE_KEEPALIVE_S": 0.2, "SSE_MAX_STREAMS": 2})


@pytest.fixture
def log(registry):
    from dicomlab.events import EventLog

    return EventLog(registry.client, source="pacs")


class Stream:
    """Reads one streamed test-client response as SSE records."""

    def __init__(self, response) -> None:
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == "text/event-stream"
        self.response = response
        self.chunks = iter(response.response)
        self.buf = ""
        self.comments: list[str] = []

    def next_events(self, n: int, timeout: float = 5.0) -> list[dict]:
        out: list[dict] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            assert time.monotonic() < deadline, f"only {len(out)} of {n} events"
            while "\n\n" not in self.buf:
                chunk = next(self.chunks)
                self.buf += chunk.decode() if isinstance(chunk, bytes) else chunk
            block, self.buf = self.buf.split("\n\n", 1)
            rec: dict = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                field, _, value = line.partition(": ")
                rec[field] = value
            if "data" in rec:
                rec["data"] = json.loads(rec["data"])
                out.append(rec)
        return out

    def close(self) -> None:
        self.response.close()


def open_stream(client, headers=None, query="") -> Stream:
    return Stream(client.get(f"/api/events/stream{query}", headers={**AUTH, **(headers or {})}, buffered=False))


def test_live_events_arrive_as_sse(sse_app, log):
    client = sse_app.test_client()
    log.emit("association-requested", "before the stream opened")
    s = open_stream(client)
    try:
        a = log.emit("association-accepted", "CT01 accepted", calling_aet="CT01")
        b = log.emit("store-received", "one image")
        got = s.next_events(2)
    finally:
        s.close()
    assert [(e["id"], e["event"]) for e in got] == [(a.id, "association-accepted"), (b.id, "store-received")]
    assert got[0]["data"]["message"] == "CT01 accepted" and got[0]["data"]["calling_aet"] == "CT01"
    assert got[0]["data"]["id"] == a.id


def test_resume_with_last_event_id_sends_what_was_missed(sse_app, log):
    client = sse_app.test_client()
    sent = [log.emit("store-received", f"image {i}") for i in range(5)]
    s = open_stream(client, headers={"Last-Event-ID": sent[1].id})
    try:
        missed = s.next_events(3)
        assert [e["data"]["message"] for e in missed] == ["image 2", "image 3", "image 4"]
        later = log.emit("association-released", "released")
        assert s.next_events(1)[0]["id"] == later.id
    finally:
        s.close()


def test_backlog_type_filter_and_keepalive(sse_app, log):
    client = sse_app.test_client()
    for i in range(4):
        log.emit("echo-received" if i % 2 else "association-rejected", f"e{i}")
    s = open_stream(client, query="?backlog=10&type=association-rejected")
    try:
        assert [e["data"]["message"] for e in s.next_events(2)] == ["e0", "e2"]
        log.emit("echo-received", "filtered out")
        log.emit("association-rejected", "kept")
        assert s.next_events(1)[0]["data"]["message"] == "kept"
        deadline = time.monotonic() + 5
        while ": keepalive" not in s.buf:  # an idle stream still writes now and then
            assert time.monotonic() < deadline
            chunk = next(s.chunks)
            s.buf += chunk.decode() if isinstance(chunk, bytes) else chunk
    finally:
        s.close()


@pytest.mark.parametrize("bad", ["yesterday", "1-2-3", "-1"])
def test_a_bad_last_event_id_is_422(sse_app, bad):
    r = sse_app.test_client().get("/api/events/stream", headers={**AUTH, "Last-Event-ID": bad})
    assert r.status_code == 422
    assert "Last-Event-ID" in r.get_json()["detail"]["fields"]


def test_streams_per_process_are_capped_and_freed(sse_app, log):
    client = sse_app.test_client()
    s1, s2 = open_stream(client), open_stream(client)
    r = client.get("/api/events/stream", headers=AUTH)
    assert r.status_code == 503 and "Too many open event streams" in r.get_json()["error"]
    assert r.headers["Retry-After"]
    assert Api(client).get("/api/nodes").status_code == 200  # the API still answers
    s1.close()
    s3 = open_stream(client)
    s2.close()
    s3.close()


def test_stream_with_the_registry_down_is_503():
    from admin_api import create_app

    app = create_app({"ADMIN_TOKEN": TOKEN, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    r = app.test_client().get("/api/events/stream", headers=AUTH)
    assert r.status_code == 503
