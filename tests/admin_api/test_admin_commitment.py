"""Storage commitment in the admin API, from a real PACS and the CT's real listener:
GET /api/commitments (states requested / retrying / reported / failed) and the
study listing's commitment state."""

from __future__ import annotations

from dicomdata import as_file, ct_dataset
from pydicom.uid import generate_uid
from pynetdicom import AE

from ct_simulator.commit import request
from ct_simulator.listener import Listener
from ct_simulator.network import Link
from lab import free_port, wait_for

CT = "1.2.840.10008.5.1.4.1.1.2"
SERVICES = ("C-ECHO", "C-STORE", "STORAGE-COMMITMENT")


def _store_one(pacs) -> tuple[str, str]:
    ds = as_file(ct_dataset(generate_uid(), generate_uid(), 1, rows=16, cols=16))
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CT)
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
    assert assoc.is_established
    assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    return str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)


def _by_tx(api, tx: str, state: str):
    rows = api.get(f"/api/commitments?state={state}").get_json()
    return next((r for r in rows if r["transaction_uid"] == tx), None)


def test_commitments_and_study_state_follow_the_report(pacs, api):
    link = Link(host="127.0.0.1", port=pacs.port, calling_aet="CT01", called_aet="PACS")
    with Listener("CT01", 0, bind="127.0.0.1") as lst:
        add_node_via_api(api, lst.port)
        study, sop = _store_one(pacs)
        tx = generate_uid()
        assert request(link, tx, [(CT, sop), (CT, generate_uid())]) is None
        row = wait_for(lambda: _by_tx(api, tx, "reported"), 30, 0.2, "state reported")
    assert (row["calling_aet"], row["requested"], row["committed"], row["failed"], row["attempts"]) == (
        "CT01", 2, 1, 1, 1)
    detail = api.get(f"/api/commitments/{tx}").get_json()
    assert [f["reason"] for f in detail["failures"]] == ["0x0112"]
    [s] = api.get("/api/studies").get_json()
    assert s["study_uid"] == study and s["commitment"]["state"] == "reported"
    assert s["commitment"]["committed"] == 1 and s["commitment"]["transaction_uid"] == tx
    assert api.get("/api/commitments/9.9.9").status_code == 404
    assert api.get("/api/commitments/not-a-uid").status_code == 404
    assert api.get("/api/commitments?state=lost").status_code == 422


def test_a_report_that_cannot_be_delivered_shows_retrying_with_the_error(pacs, api):
    api.patch("/api/scp", json={"commitment_interval": 60, "commitment_attempts": 3})
    wrong = free_port()
    add_node_via_api(api, wrong)
    tx = generate_uid()
    link = Link(host="127.0.0.1", port=pacs.port, calling_aet="CT01", called_aet="PACS")
    assert request(link, tx, [(CT, generate_uid())]) is None
    row = wait_for(lambda: _by_tx(api, tx, "retrying"), 30, 0.2, "state retrying")
    assert row["attempts"] == 1 and row["max_attempts"] == 3 and row["next_attempt"]
    assert f"127.0.0.1:{wrong}: connection refused" in row["last_error"]


def add_node_via_api(api, port: int) -> None:
    r = api.post("/api/nodes", json={"ae_title": "CT01", "host": "127.0.0.1", "port": port,
                                     "services": list(SERVICES)})
    assert r.status_code == 201, r.get_json()
