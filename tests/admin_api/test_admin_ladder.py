"""GET /api/associations/<id>: the ladder of a real association, from the real PACS's events.

An accepted association (the CT simulator stores 3 instances), a rejected one (DCMTK
echoscu with an unknown calling AE title), the node status that points at its last
association, verbose mode's PDU detail, and an id that the PACS reused after a restart.
"""

from __future__ import annotations

import tempfile

import pytest

from lab import PacsProcess, add_node, echoscu, events_of, wait_for

KINDS_ACCEPTED = ["connect", "associate-rq", "associate-ac", "dimse-rq", "dimse-rsp", "release-rq", "release-rp"]


def _simulator_send(pacs, calling: str = "CT01", slices: int = 3) -> None:
    from ct_simulator.cli import main

    rc = main(["send", "--host", "127.0.0.1", "--port", str(pacs.port), "--called-aet", "PACS", "--calling-aet",
               calling, "--rows", "32", "--cols", "32", "--slices", str(slices), "--progress", "never"])
    assert rc == 0, pacs.log()


def _ended(registry, type_: str, **match):
    return wait_for(lambda: events_of(registry, type_, **match), timeout=20, what=f"a {type_} event")[-1]


def test_ladder_of_an_accepted_association_with_stores(api, registry, pacs):
    add_node(registry, "CT01")
    _simulator_send(pacs)
    released = _ended(registry, "association-released", calling_aet="CT01")
    r = api.get(f"/api/associations/{released.assoc_id}")
    assert r.status_code == 200, r.get_json()
    lad = r.get_json()
    assert lad["assoc_id"] == released.assoc_id and lad["view"] == "pacs"
    assert lad["outcome"] == "released" and lad["problem"] is None
    assert lad["modality"] == {"ae_title": "CT01", "address": "127.0.0.1"} and lad["pacs"]["ae_title"] == "PACS"
    assert [s["kind"] for s in lad["steps"]] == KINDS_ACCEPTED
    rq, ac = lad["steps"][1], lad["steps"][2]
    assert rq["sender"] == "modality" and "calling AE 'CT01', called AE 'PACS'" in rq["lines"]
    assert "[1] CT Image Storage: Explicit VR Little Endian, Implicit VR Little Endian" in rq["lines"]
    assert ac["sender"] == "pacs" and ac["lines"][0] == "1 of 1 presentation context(s) accepted"
    assert lad["contexts"] == [{"id": 1, "abstract_syntax": "CT Image Storage",
                                "abstract_uid": "1.2.840.10008.5.1.4.1.1.2",
                                "transfer_syntaxes": ["Explicit VR Little Endian", "Implicit VR Little Endian"],
                                "result": "accepted", "transfer_syntax": "Explicit VR Little Endian", "why": ""}]
    store_rq, store_rsp = lad["steps"][3], lad["steps"][4]
    assert store_rq["label"] == "C-STORE-RQ x 3" and store_rsp["label"] == "C-STORE-RSP x 3"
    assert store_rsp["count"] == 3 and store_rsp["failed"] == 0 and store_rsp["lines"][0] == "3 x Success"
    assert any(line.startswith("PACS write + sync per instance: ") for line in store_rsp["lines"])
    # times run from the TCP connect, in order
    times = [s["at_ms"] for s in lad["steps"]]
    assert times[0] == 0 and all(a <= b for a, b in zip(times, times[1:], strict=False)), times
    assert lad["duration_ms"] == times[-1] and lad["started"].endswith("Z")
    assert lad["summary"].startswith("released after 3 C-STORE")
    # the node's status points at it
    node = api.get("/api/nodes/CT01").get_json()
    assert node["status"]["last_assoc_id"] == released.assoc_id
    # the same ladder from any of its events (the log's lines)
    stored = events_of(registry, "store-received", assoc_id=released.assoc_id)[1]
    again = api.get(f"/api/associations/{released.assoc_id}?at={stored.id}").get_json()
    assert again == lad


def test_ladder_of_a_rejected_association_says_the_reason_and_the_fix(api, registry, pacs):
    add_node(registry, "CT01")
    assert echoscu(pacs.port, "INTRUDER", "PACS").returncode != 0
    rejected = _ended(registry, "association-rejected", calling_aet="INTRUDER")
    lad = api.get(f"/api/associations/{rejected.assoc_id}?at={rejected.id}").get_json()
    assert lad["outcome"] == "rejected"
    assert [s["kind"] for s in lad["steps"]] == ["connect", "associate-rq", "associate-rj"]
    rj = lad["steps"][2]
    assert rj["label"] == "A-ASSOCIATE-RJ 1/1/3" and rj["tone"] == "bad" and rj["sender"] == "pacs"
    assert rj["lines"] == ["result: rejected-permanent", "source: service-user",
                           "reason: calling-AE-title-not-recognized"]
    problem = lad["problem"]
    assert problem["title"] == ("Association rejected: rejected-permanent / service-user / "
                                "calling-AE-title-not-recognized (1/1/3)")
    assert problem["why"] == "Calling AE title 'INTRUDER' is not an authorized node."
    assert "add 'INTRUDER'" in problem["fix"] and "authorized nodes" in problem["fix"]
    # the proposal is shown, never answered
    assert lad["contexts"][0]["abstract_syntax"] == "Verification" and lad["contexts"][0]["result"] == ""
    assert "[1] Verification: Implicit VR Little Endian" in lad["steps"][1]["lines"]


def test_verbose_mode_adds_the_pdu_detail(api, registry, pacs):
    add_node(registry, "CT01")
    assert api.patch("/api/scp", json={"verbose": True}).status_code == 200
    assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
    released = _ended(registry, "association-released", calling_aet="CT01")
    lad = api.get(f"/api/associations/{released.assoc_id}").get_json()
    assert [s["kind"] for s in lad["steps"]] == ["connect", "associate-rq", "associate-ac", "dimse-rq", "dimse-rsp",
                                                 "release-rq", "release-rp"]
    assert lad["steps"][4]["label"] == "C-ECHO-RSP"
    texts = [p["text"] for p in lad["pdus"]]
    assert any(t.startswith("DIMSE received: C-ECHO-RQ") for t in texts), texts
    assert any(t.startswith("PDU sent: A_RELEASE_RP") for t in texts), texts


def test_an_id_reused_after_a_pacs_restart_is_told_apart_by_the_event_id(api, registry, redis_url, tmp_path):
    one = {"PACS_WORKERS": "1"}  # one listener process: the second run's first association gets the same id
    first_pacs = PacsProcess(redis_url, tmp_path / "storage", extra_env=one).start()
    try:
        add_node(registry, "CT01")
        assert echoscu(first_pacs.port, "CT01", "PACS").returncode == 0
        first = _ended(registry, "association-released", calling_aet="CT01")
    finally:
        first_pacs.stop()
    second_pacs = PacsProcess(redis_url, tempfile.mkdtemp(prefix="lab-pacs2-"), extra_env=one).start()
    try:
        port = registry.get_listener().port
        assert echoscu(port, "STRANGER", "PACS").returncode != 0
        again = _ended(registry, "association-rejected", calling_aet="STRANGER")
        assert again.assoc_id == first.assoc_id, "the PACS numbers associations afresh after a restart"
        newest = api.get(f"/api/associations/{first.assoc_id}").get_json()
        assert newest["outcome"] == "rejected" and newest["modality"]["ae_title"] == "STRANGER"
        older = api.get(f"/api/associations/{first.assoc_id}?at={first.id}").get_json()
        assert older["outcome"] == "released" and older["modality"]["ae_title"] == "CT01"
        assert [s["kind"] for s in older["steps"]][-2:] == ["release-rq", "release-rp"]
    finally:
        second_pacs.stop()


@pytest.mark.parametrize(("path", "status"), [
    ("/api/associations/a99999", 404),
    ("/api/associations/..%2Fetc", 404),
    ("/api/associations/a00001?at=yesterday", 422),
])
def test_unknown_or_malformed_association_requests(api, path, status):
    r = api.get(path)
    assert r.status_code == status, r.get_json()
    assert r.get_json()["error"]


def test_the_route_needs_the_token_and_is_in_the_openapi_document(client, api):
    assert client.get("/api/associations/a00001").status_code == 401
    spec = api.get("/api/openapi.json").get_json()
    op = spec["paths"]["/api/associations/{assoc_id}"]["get"]
    assert "ladder" in op["summary"]
    assert {"200", "401", "404", "422"} <= set(op["responses"])
    assert "LadderOut" in spec["components"]["schemas"]
