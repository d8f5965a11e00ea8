"""Every route of the admin API against a real Redis, through the Flask test client."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from admin_helpers import AUTH, TOKEN, Api

from lab import free_port

# Every route of DESIGN.md's table that needs the token: (method, path).
PROTECTED = [
    ("GET", "/api/scp"),
    ("PATCH", "/api/scp"),
    ("GET", "/api/nodes"),
    ("POST", "/api/nodes"),
    ("GET", "/api/nodes/CT01"),
    ("PATCH", "/api/nodes/CT01"),
    ("PUT", "/api/nodes/CT01"),
    ("DELETE", "/api/nodes/CT01"),
    ("POST", "/api/nodes/CT01/echo"),
    ("GET", "/api/events"),
    ("GET", "/api/events/stream"),
    ("GET", "/api/studies"),
    ("GET", "/api/studies/1.2.3"),
    ("POST", "/api/simulator/send"),
    ("GET", "/api/simulator/jobs/abc"),
]


# -- auth ---------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer ", TOKEN])
def test_every_route_but_health_needs_the_token(client, method, path, header):
    headers = {"Authorization": header} if header is not None else {}
    r = client.open(path, method=method, headers=headers, json={})
    assert r.status_code == 401
    body = r.get_json()
    assert set(body) == {"error", "detail"}
    assert "Bearer" in body["error"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_health_needs_no_token(client):
    r = client.get("/api/health")
    assert r.status_code == 200
    assert r.get_json() == {"ok": True, "redis": "up"}


def test_the_token_is_required_to_start():
    from admin_api import create_app

    with pytest.raises(RuntimeError, match="ADMIN_TOKEN"):
        create_app({"ADMIN_TOKEN": None})


# -- registry down ---------------------------------------------------------------------
@pytest.fixture
def dead_api():
    from admin_api import create_app

    app = create_app({"ADMIN_TOKEN": TOKEN, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    return Api(app.test_client())


@pytest.mark.parametrize(("method", "path"), [*PROTECTED, ("GET", "/api/health")])
def test_registry_down_is_503_without_a_trace(dead_api, method, path):
    body = {"ae_title": "CT01", "host": "127.0.0.1"} if method in ("POST", "PUT") and "nodes" in path else {}
    r = getattr(dead_api, method.lower())(path, json=body)
    assert r.status_code == 503, r.get_data(as_text=True)
    data = r.get_json()
    assert "Redis" in data["error"]
    text = r.get_data(as_text=True)
    assert "Traceback" not in text and "File \"" not in text


# -- listener settings -------------------------------------------------------------------
def test_get_scp_has_the_settings_and_where_the_pacs_runs(api, registry):
    from dicomlab.settings import ListenerSettings

    registry.seed_listener(ListenerSettings(ae_title="PACS", port=11112))
    r = api.get("/api/scp")
    assert r.status_code == 200
    s = r.get_json()
    assert s["ae_title"] == "PACS" and s["port"] == 11112 and s["verbose"] is False
    assert s["max_associations"] >= 1 and s["sop_classes"] and s["transfer_syntaxes"]
    public = {"host": "127.0.0.1", "port": 11112, "published": False, "target": None, "current": True,
              "text": "A modality calls AE title PACS at 127.0.0.1:11112."}
    assert s["listener"] == {"host": "127.0.0.1", "running": False, "heartbeat": None, "public": public,
                             "tls_port": None}  # the live TLS port: none while the PACS does not run


def test_patch_scp_changes_live_settings_and_records_an_event(api, registry):
    r = api.patch("/api/scp", json={"ae_title": "MYPACS", "port": 11200, "verbose": True})
    assert r.status_code == 200, r.get_json()
    assert (r.get_json()["ae_title"], r.get_json()["port"], r.get_json()["verbose"]) == ("MYPACS", 11200, True)
    after = registry.get_listener()
    assert (after.ae_title, after.port, after.verbose) == ("MYPACS", 11200, True)
    [ev] = registry.read_events(types={"settings-changed"})
    assert ev.source == "admin-api"
    assert "port 11112 → 11200" in ev.message and "verbose off → on" in ev.message


SCP_INVALID = [
    ({"ae_title": "A" * 17}, "ae_title", "AE titles are at most 16 characters"),
    ({"ae_title": "   "}, "ae_title", "cannot be empty or only spaces"),
    ({"ae_title": "PA\\CS"}, "ae_title", "backslash"),
    ({"ae_title": "PA\tCS"}, "ae_title", "control characters"),
    ({"ae_title": "PACSé"}, "ae_title", "plain ASCII"),
    ({"ae_title": 12}, "ae_title", "must be text"),
    ({"port": 0}, "port", "from 1 to 65535"),
    ({"port": 70000}, "port", "from 1 to 65535"),
    ({"port": "104"}, "port", "whole number"),
    ({"port": 10.5}, "port", "whole number"),
    ({"verbose": "maybe"}, "verbose", ""),
    ({"max_associations": 0}, "max_associations", "1 to 1000"),
    ({"transfer_syntaxes": []}, "transfer_syntaxes", "at least one transfer syntax"),
    ({"sop_classes": ["1.2.03"]}, "sop_classes", "UID"),
    ({"colour": "blue"}, "colour", "not accepted"),
]


@pytest.mark.parametrize(("body", "field", "words"), SCP_INVALID)
def test_patch_scp_refuses_invalid_fields_in_plain_words(api, body, field, words):
    r = api.patch("/api/scp", json=body)
    assert r.status_code == 422
    data = r.get_json()
    fields = {k.split(".")[0]: v for k, v in data["detail"]["fields"].items()}
    assert field in fields, data
    assert words in " ".join(fields[field])
    assert words in data["error"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"'])
def test_a_body_that_is_not_a_json_object_is_refused(api, raw):
    r = api.patch("/api/scp", data=raw, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422)
    assert set(r.get_json()) == {"error", "detail"}


def test_a_body_too_large_is_refused(api):
    r = api.post("/api/nodes", data=json.dumps({"description": "x" * 100_000}),
                 headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "too large" in r.get_json()["error"]


# -- nodes -------------------------------------------------------------------------------------
def test_add_a_node_and_list_it_with_its_status(api, registry):
    r = api.post("/api/nodes", json={"ae_title": "USPROD", "host": "192.168.1.10", "port": 104,
                                     "description": "CT room 2", "services": ["C-STORE", "C-ECHO"]})
    assert r.status_code == 201
    assert r.headers["Location"].endswith("/api/nodes/USPROD")
    n = r.get_json()
    assert n["services"] == ["C-ECHO", "C-STORE"] and n["enabled"] is True
    assert n["status"]["state"] == "NEVER SEEN"
    assert n["status"]["summary"] == "USPROD (192.168.1.10 : 104) NEVER SEEN"
    listed = api.get("/api/nodes").get_json()
    assert [x["ae_title"] for x in listed] == ["USPROD"]
    assert registry.get_node("USPROD").host == "192.168.1.10"
    [ev] = registry.read_events(types={"node-added"})
    assert "USPROD" in ev.message and ev.source == "admin-api"


def test_defaults_of_a_new_node(api):
    n = api.post("/api/nodes", json={"ae_title": "CT01", "host": "ct-simulator"}).get_json()
    assert (n["port"], n["services"], n["enabled"], n["description"]) == (104, ["C-ECHO", "C-STORE"], True, "")


def test_a_duplicate_ae_title_is_409(api, node):
    r = api.post("/api/nodes", json={"ae_title": "USPROD", "host": "10.0.0.1"})
    assert r.status_code == 409
    assert "already exists" in r.get_json()["error"]


def test_ae_titles_are_case_sensitive_and_spaces_not_significant(api, node):
    assert api.post("/api/nodes", json={"ae_title": "usprod", "host": "10.0.0.1"}).status_code == 201
    assert api.post("/api/nodes", json={"ae_title": "  USPROD ", "host": "10.0.0.1"}).status_code == 409
    assert api.get("/api/nodes/%20USPROD%20").status_code == 200


NODE_INVALID = [
    ({"host": "10.0.0.1"}, "ae_title", "Give an AE title"),
    ({"ae_title": "CT01"}, "host", "Give an IP address or a host name"),
    ({"ae_title": "A" * 17, "host": "10.0.0.1"}, "ae_title", "AE titles are at most 16 characters (17 given)"),
    ({"ae_title": "", "host": "10.0.0.1"}, "ae_title", "cannot be empty"),
    ({"ae_title": "CT\\01", "host": "10.0.0.1"}, "ae_title", "backslash"),
    ({"ae_title": "CT01", "host": "999.1.1.1"}, "host", "not a valid IPv4 address"),
    ({"ae_title": "CT01", "host": "bad_host!"}, "host", "neither an IP address nor a valid host name"),
    ({"ae_title": "CT01", "host": "-lead.example"}, "host", "neither an IP address"),
    ({"ae_title": "CT01", "host": "10.0.0.1", "port": 0}, "port", "from 1 to 65535"),
    ({"ae_title": "CT01", "host": "10.0.0.1", "port": 65536}, "port", "from 1 to 65535"),
    ({"ae_title": "CT01", "host": "10.0.0.1", "port": "abc"}, "port", "A port is a whole number"),
    ({"ae_title": "CT01", "host": "10.0.0.1", "services": ["C-PRINT"]}, "services", '"STORAGE-COMMITMENT", "C-FIND"'),
    ({"ae_title": "CT01", "host": "10.0.0.1", "tls": "sometimes"}, "tls", "tls is one of off, allowed, required"),
    ({"ae_title": "CT01", "host": "10.0.0.1", "services": "C-ECHO"}, "services", ""),
    ({"ae_title": "CT01", "host": "10.0.0.1", "enabled": "perhaps"}, "enabled", ""),
    ({"ae_title": "CT01", "host": "10.0.0.1", "description": "x" * 257}, "description", "at most 256"),
    ({"ae_title": "CT01", "host": "10.0.0.1", "status": {"state": "CONNECTED"}}, "status", "not accepted"),
    ({"ae_title": "CT01", "host": "10.0.0.1", "admin": True}, "admin", "not accepted"),
]


@pytest.mark.parametrize(("body", "field", "words"), NODE_INVALID)
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_node_validation_in_plain_words(api, node, method, body, field, words):
    path = "/api/nodes" if method == "POST" else "/api/nodes/USPROD"
    r = api.open(path, method=method, json=body)
    assert r.status_code == 422, r.get_json()
    fields = r.get_json()["detail"]["fields"]
    assert any(k.split(".")[0] == field for k in fields), fields
    assert words in json.dumps(fields, ensure_ascii=False).replace('\\"', '"')


@pytest.mark.parametrize("host", ["192.168.1.10", "::1", "fe80::1", "ct-simulator", "pacs.hospital.example", "localhost"])
def test_hosts_that_are_accepted(api, host):
    r = api.post("/api/nodes", json={"ae_title": "CT01", "host": host})
    assert r.status_code == 201, r.get_json()


@pytest.mark.parametrize("title", ["CT01", "ct01", "A" * 16, "CT 01", "CT/01", "CT?01", "CT%01", "CT#1", "ÇT"])
def test_node_urls_carry_any_ae_title(api, title):
    r = api.post("/api/nodes", json={"ae_title": title, "host": "10.0.0.1"})
    if title == "ÇT":
        assert r.status_code == 422
        return
    assert r.status_code == 201, r.get_json()
    path = f"/api/nodes/{quote(title, safe='')}"
    assert api.get(path).get_json()["ae_title"] == title
    assert api.patch(path, json={"port": 4242}).get_json()["port"] == 4242
    assert api.delete(path).status_code == 204
    assert api.get(path).status_code == 404


def test_get_patch_put_delete_a_node(api, node, registry):
    r = api.get("/api/nodes/USPROD")
    assert r.status_code == 200 and r.get_json()["host"] == "192.168.1.10"

    r = api.patch("/api/nodes/USPROD", json={"port": 11113, "services": ["C-ECHO"]})
    assert r.status_code == 200
    assert (r.get_json()["port"], r.get_json()["services"]) == (11113, ["C-ECHO"])
    assert registry.get_node("USPROD").port == 11113

    r = api.put("/api/nodes/USPROD", json={"ae_title": "USPROD", "host": "10.1.1.1"})
    assert r.status_code == 200
    n = r.get_json()
    assert (n["host"], n["port"], n["services"]) == ("10.1.1.1", 104, ["C-ECHO", "C-STORE"])  # PUT: the whole node

    r = api.delete("/api/nodes/USPROD")
    assert r.status_code == 204 and r.data == b""
    assert api.get("/api/nodes/USPROD").status_code == 404
    types = [e.type for e in registry.read_events()]
    assert types == ["node-added", "node-changed", "node-changed", "node-removed"]
    changed = registry.read_events(types={"node-changed"})[0]
    assert "port 104 → 11113" in changed.message


def test_put_renames_and_a_taken_title_is_409(api, node):
    api.post("/api/nodes", json={"ae_title": "OTHER", "host": "10.0.0.2"})
    r = api.put("/api/nodes/USPROD", json={"ae_title": "OTHER", "host": "10.0.0.3"})
    assert r.status_code == 409
    r = api.put("/api/nodes/USPROD", json={"ae_title": "NEWNAME", "host": "10.0.0.3"})
    assert r.status_code == 200 and r.get_json()["ae_title"] == "NEWNAME"
    assert api.get("/api/nodes/USPROD").status_code == 404
    r = api.patch("/api/nodes/NEWNAME", json={"ae_title": "OTHER"})
    assert r.status_code == 409


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
@pytest.mark.parametrize("title", ["NOPE", "A" * 17, "%5C", "%20%20"])
def test_unknown_nodes_are_404(api, method, title):
    body = {"ae_title": "X", "host": "10.0.0.1"} if method == "PUT" else {}
    r = api.open(f"/api/nodes/{title}", method=method, json=body)
    assert r.status_code == 404
    assert "No authorized node" in r.get_json()["error"]
    assert api.post(f"/api/nodes/{title}/echo").status_code == 404


def test_node_status_follows_the_registry(api, node, registry):
    import time

    registry.set_node_status("USPROD", last_association="rejected", last_association_time=time.time(),
                             last_rejected_reason="peer address 10.9.9.9 is not the registered 192.168.1.10")
    s = api.get("/api/nodes/USPROD").get_json()["status"]
    assert s["state"] == "REJECTED" and "10.9.9.9" in s["why"]
    assert s["summary"] == "USPROD (192.168.1.10 : 104) REJECTED"
    registry.set_node_status("USPROD", last_association="accepted", last_association_time=time.time() + 1)
    assert api.get("/api/nodes").get_json()[0]["status"]["state"] == "CONNECTED"


# -- events -------------------------------------------------------------------------------------------
@pytest.fixture
def events(registry):
    from dicomlab.events import EventLog

    log = EventLog(registry.client, source="pacs")
    out = []
    for i in range(6):
        out.append(log.emit("association-accepted" if i % 2 else "association-rejected", f"event {i}",
                            calling_aet="CT01"))
    return out


def test_events_latest_and_limit(api, events):
    r = api.get("/api/events")
    assert r.status_code == 200
    assert [e["message"] for e in r.get_json()] == [f"event {i}" for i in range(6)]
    assert [e["message"] for e in api.get("/api/events?limit=2").get_json()] == ["event 4", "event 5"]
    e = r.get_json()[0]
    assert {"id", "time", "type", "message", "source", "calling_aet", "detail"} <= set(e)


def test_events_since_and_type(api, events):
    since = events[2].id
    got = api.get(f"/api/events?since={since}").get_json()
    assert [e["message"] for e in got] == ["event 3", "event 4", "event 5"]
    got = api.get("/api/events?type=association-rejected").get_json()
    assert [e["message"] for e in got] == ["event 0", "event 2", "event 4"]
    got = api.get(f"/api/events?type=association-accepted,echo-sent&since={events[0].id}&limit=2").get_json()
    assert [e["message"] for e in got] == ["event 1", "event 3"]
    assert api.get("/api/events?type=nothing-like-this").get_json() == []


@pytest.mark.parametrize("query", ["since=yesterday", "since=1-2-3", "since=33057372500079848320", "limit=0", "limit=5000", "limit=many"])
def test_events_query_validation(api, query):
    r = api.get(f"/api/events?{query}")
    assert r.status_code == 422
    assert r.get_json()["detail"]["fields"]


# -- studies ----------------------------------------------------------------------------------------------
def test_studies_list_and_detail(api, registry):
    assert api.get("/api/studies").get_json() == []
    for sop in ("1.2.3.4.1", "1.2.3.4.2"):
        registry.record_instance({"study_uid": "1.2.3", "series_uid": "1.2.3.4", "sop_instance_uid": sop,
                                  "patient_name": "DOE^JANE", "patient_id": "P1", "modality": "CT",
                                  "series_number": "1", "calling_aet": "CT01"})
    [s] = api.get("/api/studies").get_json()
    assert (s["study_uid"], s["patient_name"], s["instances"], s["series"]) == ("1.2.3", "DOE^JANE", 2, 1)
    d = api.get("/api/studies/1.2.3").get_json()
    assert d["series_list"][0]["instance_count"] == 2 and d["series_list"][0]["modality"] == "CT"
    assert api.get("/api/studies/9.9.9").status_code == 404
    assert api.get("/api/studies/not-a-uid").status_code == 404
    assert api.get("/api/studies?limit=0").status_code == 422


# -- simulator -------------------------------------------------------------------------------------------------
def test_simulator_send_queues_a_job_with_the_listener_as_default_target(api, registry):
    r = api.post("/api/simulator/send", json={})
    assert r.status_code == 202, r.get_json()
    job = r.get_json()
    assert job["state"] == "queued"
    assert job["request"] == {"called_aet": "PACS", "port": 11112, "host": "127.0.0.1"}
    job_id, request = registry.pop_job(timeout=1)
    assert job_id == job["job_id"] and request == job["request"]
    assert api.get(r.headers["Location"]).get_json()["job_id"] == job_id


def test_simulator_send_with_every_key(api, registry):
    body = {"studies": 1, "series": 2, "slices": 3, "rows": 64, "cols": 64, "calling_aet": "CT01",
            "called_aet": "WRONG", "host": "pacs", "port": 104, "transfer_syntax": "1.2.840.10008.1.2.1",
            "seed": 7, "patient_name": "DOE^JOHN", "patient_id": "P2"}
    r = api.post("/api/simulator/send", json=body)
    assert r.status_code == 202
    assert registry.pop_job(timeout=1)[1] == body


@pytest.mark.parametrize(("body", "field"), [
    ({"slices": 0}, "slices"), ({"studies": "two"}, "studies"), ({"calling_aet": "X" * 17}, "calling_aet"),
    ({"host": "no such host!"}, "host"), ({"port": 0}, "port"), ({"rows": 8}, "rows"), ({"extra": 1}, "extra"),
])
def test_simulator_send_validation(api, body, field):
    r = api.post("/api/simulator/send", json=body)
    assert r.status_code == 422
    assert field in r.get_json()["detail"]["fields"]


def test_unknown_job_is_404(api):
    assert api.get("/api/simulator/jobs/deadbeef").status_code == 404


# -- documents and the page ---------------------------------------------------------------------------------
def test_openapi_document_and_docs(client):
    spec = client.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for p in ("/api/health", "/api/scp", "/api/nodes", "/api/nodes/{ae_title}", "/api/nodes/{ae_title}/echo",
              "/api/events", "/api/events/stream", "/api/studies", "/api/studies/{uid}", "/api/simulator/send"):
        assert p in paths, p
    assert set(paths["/api/nodes/{ae_title}"]) == {"get", "patch", "put", "delete", "parameters"} or \
        {"get", "patch", "put", "delete"} <= set(paths["/api/nodes/{ae_title}"])
    assert "409" in paths["/api/nodes"]["post"]["responses"]
    assert spec["components"]["securitySchemes"]
    assert client.get("/api/docs").status_code == 200


def test_the_page_is_served(client):
    r = client.get("/")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    for words in ("DICOM Lab", "Local SCP Settings", "Authorized SCU Node", "Authorized Nodes", "Live log",
                  "Received studies", "Send a study from the CT simulator"):
        assert words in html
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


def test_unknown_addresses_and_methods_are_json(api):
    r = api.get("/api/nothing")
    assert r.status_code == 404 and set(r.get_json()) == {"error", "detail"}
    r = api.post("/api/scp", json={})
    assert r.status_code == 405 and "method" in r.get_json()["error"]


def test_an_unexpected_error_is_500_without_a_trace(app, api):
    @app.get("/api/_boom")
    def boom():
        raise RuntimeError("secret internals")

    r = api.get("/api/_boom")
    assert r.status_code == 500
    assert "secret" not in r.get_data(as_text=True)
    assert r.get_json()["error"].startswith("The admin API failed")


def test_auth_header_constant(client):
    assert client.get("/api/nodes", headers=AUTH).status_code == 200
