"""Storage Commitment with peers no one here wrote: Debian's Orthanc 1.10 as the
SCU (it sends through its REST API with "StorageCommitment": true and must
receive the PACS's report), and a raw pynetdicom SCU with its own report
listener."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from dicomdata import CT, as_file, ct_dataset
from orthanc_peer import Orthanc, any_free_port
from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel, StorageCommitmentPushModelInstance
from test_store import send

from lab import add_node, events_of, wait_for

SERVICES = ("C-ECHO", "C-STORE", "STORAGE-COMMITMENT")


def _orthanc_sends(orthanc: Orthanc, tmp_path: Path) -> str:
    """Orthanc stores one CT to the PACS with "StorageCommitment": true; its Transaction UID."""
    ds = as_file(ct_dataset(generate_uid(), generate_uid(), 1, rows=16, cols=16), ExplicitVRLittleEndian)
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    dcmwrite(path, ds, enforce_file_format=True)
    orthanc.sent = str(ds.SOPInstanceUID)
    instance = orthanc.call("POST", "/instances", path.read_bytes())["ID"]
    job_id = orthanc.call("POST", "/modalities/pacs/store", {"Resources": [instance], "StorageCommitment": True,
                                                             "Synchronous": False})["ID"]
    info = wait_for(lambda: (i := orthanc.call("GET", f"/jobs/{job_id}"))["State"] in ("Success", "Failure") and i,
                    60, 0.2, "Orthanc's store job")
    assert info["State"] == "Success", info
    return info["Content"]["StorageCommitmentTransactionUID"]


@pytest.fixture
def orthanc(pacs, tmp_path):
    o = Orthanc(tmp_path / "orthanc", pacs.port, "dicomlab-commit").start()
    yield o
    o.stop()


def test_orthanc_requests_commitment_when_it_sends_and_receives_the_report(pacs, registry, orthanc, tmp_path):
    add_node(registry, "ORTHANC", services=SERVICES, port=orthanc.port)
    tx = _orthanc_sends(orthanc, tmp_path)

    def reported() -> dict | None:
        got = orthanc.call("GET", f"/storage-commitment/{tx}")
        return got if got.get("Status") != "Pending" else None

    report = wait_for(reported, 60, 0.2, "Orthanc to receive the storage commitment report")
    assert report["Status"] == "Success", (report, pacs.log(), orthanc.log.read_text(errors="replace")[-3000:])
    assert report["Success"] == [{"SOPClassUID": CT, "SOPInstanceUID": orthanc.sent}]
    ev = wait_for(lambda: events_of(registry, "commitment-reported"), 10, what="commitment-reported")[0]
    assert f"'ORTHANC' at 127.0.0.1:{orthanc.port}" in ev.message and "1 committed, 0 failed" in ev.message


def test_orthanc_registered_with_the_wrong_port_learns_nothing_until_the_port_is_fixed(pacs, registry, orthanc,
                                                                                     tmp_path):
    registry.update_listener({"commitment_interval": 1, "commitment_attempts": 10})
    wrong = any_free_port()
    add_node(registry, "ORTHANC", services=SERVICES, port=wrong)
    tx = _orthanc_sends(orthanc, tmp_path)
    ev = wait_for(lambda: events_of(registry, "commitment-failed"), 60, what="a failed attempt")[0]
    assert f"to ORTHANC at 127.0.0.1:{wrong}: connection refused" in ev.message
    assert orthanc.call("GET", f"/storage-commitment/{tx}")["Status"] == "Pending"
    registry.patch_node("ORTHANC", {"port": orthanc.port})
    report = wait_for(lambda: (r := orthanc.call("GET", f"/storage-commitment/{tx}"))["Status"] != "Pending" and r,
                      60, 0.2, "Orthanc to receive the report")
    assert report["Status"] == "Success", report


def test_a_raw_pynetdicom_scu_on_one_association_gets_its_report_on_another(pacs, registry):
    """A peer written with pynetdicom alone: C-STORE and N-ACTION on one association, the report on a
    second one that the PACS opens to the SCU's own listener."""
    got: list[tuple[int, Dataset, str]] = []
    done = threading.Event()

    def on_report(event):
        got.append((event.event_type, event.event_information, event.assoc.requestor.ae_title))
        done.set()
        return 0x0000, None

    scp = AE(ae_title="RAWSCU")
    scp.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        add_node(registry, "RAWSCU", services=SERVICES, port=server.server_address[1])
        stored = ct_dataset(generate_uid(), generate_uid(), 1, rows=16, cols=16)
        assert send(pacs.port, [stored], calling="RAWSCU") == [0]
        ae = AE(ae_title="RAWSCU")
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
        assert assoc.is_established
        rq = Dataset()
        rq.TransactionUID = generate_uid()
        missing = generate_uid()
        rq.ReferencedSOPSequence = []
        for sop in (str(stored.SOPInstanceUID), missing):
            item = Dataset()
            item.ReferencedSOPClassUID = CT
            item.ReferencedSOPInstanceUID = sop
            rq.ReferencedSOPSequence.append(item)
        status, _ = assoc.send_n_action(rq, 1, StorageCommitmentPushModel, StorageCommitmentPushModelInstance)
        assert status.Status == 0x0000
        started = time.monotonic()
        assert done.wait(30), pacs.log()
        assoc.release()
        event_type, info, calling = got[0]
        assert event_type == 2 and calling == "PACS" and time.monotonic() - started >= 0
        assert info.TransactionUID == rq.TransactionUID
        assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [stored.SOPInstanceUID]
        assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in info.FailedSOPSequence] == [(missing, 0x0112)]
    finally:
        server.shutdown()
