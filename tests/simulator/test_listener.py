"""The CT's listener (ct_simulator.listener): C-STORE into a folder from DCMTK's
storescu, and Storage Commitment reports from a requestor that proposes the SCP
role, as the PACS does."""

from __future__ import annotations

import subprocess

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.sop_class import StorageCommitmentPushModel, StorageCommitmentPushModelInstance

from ct_simulator.iod import StudyPlan, iter_instances, write_part10
from ct_simulator.listener import Listener
from lab import need_tool


def _report(port: int, event_type: int, committed: list[str], failed: list[tuple[str, int]],
            transaction: str = "1.2.3.4", calling: str = "PACS", called: str = "CT01") -> int | None:
    ae = AE(ae_title=calling)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", port, ae_title=called,
                         ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)])
    if not assoc.is_established:
        return None
    ds = Dataset()
    ds.TransactionUID = transaction
    ds.ReferencedSOPSequence = []
    for uid in committed:
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        item.ReferencedSOPInstanceUID = uid
        ds.ReferencedSOPSequence.append(item)
    if failed:
        ds.FailedSOPSequence = []
        for uid, reason in failed:
            item = Dataset()
            item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            item.ReferencedSOPInstanceUID = uid
            item.FailureReason = reason
            ds.FailedSOPSequence.append(item)
    status, _ = assoc.send_n_event_report(ds, event_type, StorageCommitmentPushModel,
                                          StorageCommitmentPushModelInstance)
    assoc.release()
    return int(status.Status) if "Status" in status else None


def test_listener_accepts_a_report_with_the_pacs_in_the_scp_role():
    with Listener("CT01", 0) as lst:
        assert _report(lst.port, 2, ["1.2.3.1"], [("1.2.3.2", 0x0112)]) == 0x0000
        rep = lst.wait_report("1.2.3.4", timeout=10)
    assert rep is not None
    assert rep.event_type == 2 and rep.calling_aet == "PACS"
    assert rep.committed == [("1.2.840.10008.5.1.4.1.1.2", "1.2.3.1")]
    assert rep.failed == [("1.2.840.10008.5.1.4.1.1.2", "1.2.3.2", 0x0112)]


def test_listener_answers_reports_with_a_failure_on_purpose():
    with Listener("CT01", 0, report_status=0x0110) as lst:
        assert _report(lst.port, 1, ["1.2.3.1"], []) == 0x0110
        assert lst.wait_report(timeout=10).answered == 0x0110


def test_listener_rejects_a_calling_title_it_does_not_know():
    with Listener("CT01", 0, accept_from=["PACS"]) as lst:
        assert _report(lst.port, 1, ["1.2.3.1"], [], calling="STRANGER") is None
        assert _report(lst.port, 1, ["1.2.3.1"], [], calling="PACS") == 0x0000


def test_listener_stores_what_storescu_sends_into_its_folder(tmp_path):
    storescu = need_tool("storescu", "dcmtk")
    src = tmp_path / "src"
    src.mkdir()
    uids = []
    for inst in iter_instances(StudyPlan(slices=3, rows=32, cols=32, seed=7)):
        write_part10(inst.dataset, src / f"{inst.number}.dcm")
        uids.append(inst.sop_instance_uid)
    out = tmp_path / "in"
    with Listener("CT01", 0, out) as lst:
        run = subprocess.run([storescu, "-aet", "PACS", "-aec", "CT01", "127.0.0.1", str(lst.port),
                              *sorted(str(p) for p in src.iterdir())], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{u}.dcm" for u in uids)
    import pydicom

    ds = pydicom.dcmread(out / f"{uids[0]}.dcm")
    assert ds.SOPInstanceUID == uids[0] and ds.Rows == 32


def test_listener_without_a_folder_refuses_c_store(tmp_path):
    storescu = need_tool("storescu", "dcmtk")
    inst = next(iter(iter_instances(StudyPlan(slices=1, rows=32, cols=32, seed=8))))
    write_part10(inst.dataset, tmp_path / "a.dcm")
    with Listener("CT01", 0) as lst:
        run = subprocess.run([storescu, "-v", "-aet", "PACS", "-aec", "CT01", "127.0.0.1", str(lst.port),
                              str(tmp_path / "a.dcm")], capture_output=True, text=True, timeout=60)
    said = (run.stdout + run.stderr).lower()
    assert run.returncode != 0 and "refused: outofresources" in said, said
    assert lst.stored == []
