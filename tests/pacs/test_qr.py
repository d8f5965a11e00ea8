"""Study Root Query/Retrieve against a real PACS process: C-FIND matching at each level,
C-MOVE (to a pynetdicom storage SCP, an unknown destination, a wrong port, a destination
that rejects the PACS), C-GET with and without SCP role selection."""

from __future__ import annotations

import pytest
from dicomdata import CT, as_file, ct_dataset
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind as FIND,
)
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet as GET,
)
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelMove as MOVE,
)
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from lab import PacsProcess, add_node, events_of, free_port, wait_for

QR = ("C-ECHO", "C-STORE", "C-FIND", "C-MOVE", "C-GET")


def store(port: int, datasets, calling: str = "CT01", ts: str = ExplicitVRLittleEndian) -> None:
    ae = AE(ae_title=calling)
    ae.add_requested_context(CT, [ts])
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    try:
        for ds in datasets:
            as_file(ds, ts)
            assert assoc.send_c_store(ds).Status == 0
    finally:
        assoc.release()


def make_study(n: int, name: str = "LAB^TEST", date: str = "20261127", modality: str = "CT",
               accession: str = "A0001", series: int = 1) -> list[Dataset]:
    study = generate_uid()
    out = []
    for s in range(series):
        series_uid = generate_uid()
        for i in range(1, n + 1):
            ds = ct_dataset(study, series_uid, i, rows=16, cols=16)
            ds.PatientName, ds.StudyDate, ds.Modality, ds.AccessionNumber = name, date, modality, accession
            ds.SeriesNumber = s + 1
            out.append(ds)
    return out


@pytest.fixture
def lab(pacs, registry):
    """Three studies in the PACS, and a node WS01 allowed everything Q/R."""
    add_node(registry, "CT01")
    add_node(registry, "WS01", services=QR)
    studies = {
        "doe": make_study(3, "DOE^JANE", "20240115", accession="ACC1"),
        "roe": make_study(2, "ROE^RICHARD", "20240201", accession="ACC2", series=2),
        "mr": make_study(1, "Doe^John", "20231231", modality="MR", accession="ACC3"),
    }
    for datasets in studies.values():
        store(pacs.port, datasets)
    return studies


def associate(port: int, contexts, calling: str = "WS01", roles=None):
    ae = AE(ae_title=calling)
    for cx in contexts:
        ae.add_requested_context(cx, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS", ext_neg=roles or [])
    assert assoc.is_established
    return assoc


def find(port: int, level: str, calling: str = "WS01", **keys) -> tuple[list[Dataset], int]:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    assoc = associate(port, [FIND], calling)
    try:
        answers, final = [], None
        for status, identifier in assoc.send_c_find(ds, FIND):
            if status.Status in (0xFF00, 0xFF01):
                answers.append(identifier)
            else:
                final = int(status.Status)
        return answers, final
    finally:
        assoc.release()


def test_find_study_level_matching(pacs, lab):
    doe = lab["doe"][0].StudyInstanceUID
    roe = lab["roe"][0].StudyInstanceUID
    mr = lab["mr"][0].StudyInstanceUID

    def uids(**keys):
        answers, final = find(pacs.port, "STUDY", StudyInstanceUID="", **keys)
        assert final == 0
        return {a.StudyInstanceUID for a in answers}

    assert uids() == {doe, roe, mr}  # universal
    assert uids(PatientName="DOE^JANE") == {doe}  # exact
    assert uids(PatientName="doe^*") == {doe, mr}  # wildcard, names without regard to case
    assert uids(PatientName="?OE^RICHARD") == {roe}
    assert uids(StudyDate="20240101-20240131") == {doe}  # range
    assert uids(StudyDate="20240101-") == {doe, roe}  # open ranges
    assert uids(StudyDate="-20231231") == {mr}
    assert uids(StudyDate="20240201") == {roe}
    assert uids(AccessionNumber="ACC2") == {roe}
    assert uids(ModalitiesInStudy="MR") == {mr}
    assert uids(ModalitiesInStudy="CT\\MR") == {doe, roe, mr}
    answers, _ = find(pacs.port, "STUDY", StudyInstanceUID=f"{doe}\\{roe}", PatientName="",
                      NumberOfStudyRelatedSeries="", NumberOfStudyRelatedInstances="", ModalitiesInStudy="")
    got = {a.StudyInstanceUID: a for a in answers}
    assert set(got) == {doe, roe}  # a list of UIDs
    assert str(got[roe].PatientName) == "ROE^RICHARD"
    assert int(got[roe].NumberOfStudyRelatedSeries) == 2 and int(got[roe].NumberOfStudyRelatedInstances) == 4
    assert got[doe].ModalitiesInStudy == "CT" and got[doe].RetrieveAETitle == "PACS"


def test_find_series_and_image_levels(pacs, lab, registry):
    roe = lab["roe"]
    answers, final = find(pacs.port, "SERIES", StudyInstanceUID=roe[0].StudyInstanceUID, SeriesInstanceUID="",
                          SeriesNumber="", Modality="", NumberOfSeriesRelatedInstances="")
    assert final == 0
    assert [int(a.SeriesNumber) for a in answers] == [1, 2]
    assert all(int(a.NumberOfSeriesRelatedInstances) == 2 for a in answers)
    answers, final = find(pacs.port, "IMAGE", StudyInstanceUID=roe[0].StudyInstanceUID,
                          SeriesInstanceUID=roe[0].SeriesInstanceUID, SOPInstanceUID="", SOPClassUID="",
                          InstanceNumber="")
    assert final == 0
    assert [a.SOPInstanceUID for a in answers] == [roe[0].SOPInstanceUID, roe[1].SOPInstanceUID]
    assert [int(a.InstanceNumber) for a in answers] == [1, 2] and answers[0].SOPClassUID == CT
    answers, _ = find(pacs.port, "IMAGE", StudyInstanceUID=roe[0].StudyInstanceUID,
                      SeriesInstanceUID=roe[0].SeriesInstanceUID, SOPInstanceUID="", InstanceNumber="2")
    assert [a.SOPInstanceUID for a in answers] == [roe[1].SOPInstanceUID]
    ev = wait_for(lambda: events_of(registry, "find-answered"), what="find-answered event")
    assert "IMAGE level" in ev[-1].message and "1 match(es)" in ev[-1].message


def test_find_unsupported_key_and_bad_level(pacs, lab):
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    ds.ReferringPhysicianName = ""
    assoc = associate(pacs.port, [FIND])
    try:
        statuses = [int(st.Status) for st, _ in assoc.send_c_find(ds, FIND)]
        assert statuses[:-1] == [0xFF01] * 3 and statuses[-1] == 0
        ds.QueryRetrieveLevel = "PATIENT"
        statuses = [int(st.Status) for st, _ in assoc.send_c_find(ds, FIND)]
        assert statuses == [0xA900]
    finally:
        assoc.release()


def test_find_capped_at_qr_max_matches(pacs, lab, registry):
    registry.update_listener({"qr_max_matches": 2})
    answers, final = find(pacs.port, "STUDY", StudyInstanceUID="")
    assert len(answers) == 2 and final == 0
    ev = wait_for(lambda: [e for e in events_of(registry, "find-answered") if "qr_max_matches" in e.message],
                  what="the qr_max_matches warning")
    assert ev[0].level == "warning"


def test_find_from_node_not_allowed_find(pacs, lab, registry):
    add_node(registry, "NOFIND", services=("C-ECHO", "C-STORE"))
    ae = AE(ae_title="NOFIND")
    ae.add_requested_context(FIND)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
    assert assoc.is_established
    try:
        assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == [Verification]
        with pytest.raises(ValueError):
            next(assoc.send_c_find(Dataset(), FIND))
    finally:
        assoc.release()
    ev = wait_for(lambda: events_of(registry, "context-rejected", calling_aet="NOFIND"), what="context event")
    assert ev[0].reason == "service-not-allowed" and "not allowed C-FIND" in ev[0].message


# -- C-MOVE -----------------------------------------------------------------------------------
class StoreSCP:
    """A pynetdicom storage SCP that keeps what it receives (a move destination)."""

    def __init__(self, ae_title: str = "DEST", require_calling: list[str] | None = None) -> None:
        self.received: list[Dataset] = []
        self.raw: list[bytes] = []
        self.port = free_port()
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(CT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        if require_calling:
            ae.require_calling_aet = require_calling
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event):
        self.received.append(event.dataset)
        return 0

    def stop(self):
        self.server.shutdown()


def move(port: int, dest: str, level: str = "STUDY", calling: str = "WS01", **keys) -> list[Dataset]:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    assoc = associate(port, [MOVE], calling)
    try:
        return [st for st, _ in assoc.send_c_move(ds, dest, MOVE)]
    finally:
        assoc.release()


def test_move_to_registered_destination(pacs, lab, registry):
    scp = StoreSCP("DEST")
    try:
        add_node(registry, "DEST", port=scp.port, services=("C-ECHO",))
        roe = lab["roe"]
        statuses = move(pacs.port, "DEST", StudyInstanceUID=roe[0].StudyInstanceUID)
        final = statuses[-1]
        assert final.Status == 0 and final.NumberOfCompletedSuboperations == 4
        assert final.NumberOfFailedSuboperations == 0
        assert [int(s.Status) for s in statuses[:-1]] == [0xFF00] * 3
        assert sorted(d.SOPInstanceUID for d in scp.received) == sorted(d.SOPInstanceUID for d in roe)
        assert all(d.PixelData == next(r for r in roe if r.SOPInstanceUID == d.SOPInstanceUID).PixelData
                   for d in scp.received)
        ev = wait_for(lambda: events_of(registry, "move-finished"), what="move-finished")
        assert "4 completed" in ev[0].message and ev[0].outcome == "success"
    finally:
        scp.stop()


def test_move_destination_unknown(pacs, lab, registry):
    statuses = move(pacs.port, "NOSUCH", StudyInstanceUID=lab["doe"][0].StudyInstanceUID)
    assert [int(s.Status) for s in statuses] == [0xA801]
    ev = wait_for(lambda: events_of(registry, "move-finished", reason="move-destination-unknown"), what="event")
    assert "'NOSUCH'" in ev[0].message and "0xA801" in ev[0].message


def test_move_destination_wrong_port(pacs, lab, registry):
    add_node(registry, "DEST", port=free_port(), services=("C-ECHO",))  # nothing listens there
    statuses = move(pacs.port, "DEST", StudyInstanceUID=lab["doe"][0].StudyInstanceUID)
    final = statuses[-1]
    assert final.Status == 0xA702
    assert (final.NumberOfFailedSuboperations, final.NumberOfCompletedSuboperations,
            final.NumberOfWarningSuboperations) == (3, 0, 0)
    ev = wait_for(lambda: events_of(registry, "retrieve-failed"), what="retrieve-failed")
    assert "C-MOVE to DEST at 127.0.0.1:" in ev[0].message and "connection refused" in ev[0].message
    assert "registered address" in ev[0].message


def test_move_destination_does_not_know_the_pacs(pacs, lab, registry):
    scp = StoreSCP("DEST", require_calling=["OTHERPACS"])
    try:
        add_node(registry, "DEST", port=scp.port, services=("C-ECHO",))
        statuses = move(pacs.port, "DEST", StudyInstanceUID=lab["doe"][0].StudyInstanceUID)
        assert statuses[-1].Status == 0xA702 and statuses[-1].NumberOfFailedSuboperations == 3
        ev = wait_for(lambda: events_of(registry, "retrieve-failed"), what="retrieve-failed")
        assert "calling-AE-title-not-recognized" in ev[0].message
        assert "does DEST know this PACS's AE title PACS?" in ev[0].message
    finally:
        scp.stop()


def test_move_destination_refuses_some_syntax(pacs, lab, registry):
    """A file stored as Implicit VR LE goes to a destination that accepts only Explicit: that
    sub-operation fails with the reason; the others complete (0xB000)."""
    extra = make_study(1, "MIX^ED")
    store(pacs.port, extra, ts=ImplicitVRLittleEndian)
    ae = AE(ae_title="DEST")
    ae.add_supported_context(CT, [ExplicitVRLittleEndian])
    port = free_port()
    received = []
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, lambda e: received.append(e.dataset) or 0)])
    try:
        add_node(registry, "DEST", port=port, services=("C-ECHO",))
        uids = f"{lab['doe'][0].StudyInstanceUID}\\{extra[0].StudyInstanceUID}"
        final = move(pacs.port, "DEST", StudyInstanceUID=uids)[-1]
        assert final.Status == 0xB000
        assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (3, 1)
        ev = wait_for(lambda: events_of(registry, "retrieve-failed"), what="retrieve-failed")
        assert "stored as Implicit VR Little Endian" in ev[0].message
    finally:
        server.shutdown()


def test_move_needs_a_unique_key(pacs, lab):
    statuses = move(pacs.port, "WS01", level="SERIES", StudyInstanceUID=lab["doe"][0].StudyInstanceUID)
    assert [int(s.Status) for s in statuses] == [0xA900]


# -- C-GET --------------------------------------------------------------------------------------
def get(port: int, with_role: bool, level: str = "STUDY", **keys):
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    ae = AE(ae_title="WS01")
    ae.add_requested_context(GET)
    ae.add_requested_context(CT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    roles = [build_role(CT, scp_role=True)] if with_role else []
    received = []

    def on_store(event):
        received.append(event.dataset)
        return 0

    assoc = ae.associate("127.0.0.1", port, ae_title="PACS", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        return [st for st, _ in assoc.send_c_get(ds, GET)], received
    finally:
        assoc.release()


def test_get_with_role_selection(pacs, lab, registry):
    doe = lab["doe"]
    statuses, received = get(pacs.port, True, StudyInstanceUID=doe[0].StudyInstanceUID)
    assert statuses[-1].Status == 0 and statuses[-1].NumberOfCompletedSuboperations == 3
    assert sorted(d.SOPInstanceUID for d in received) == sorted(d.SOPInstanceUID for d in doe)
    ev = wait_for(lambda: events_of(registry, "get-finished"), what="get-finished")
    assert ev[0].outcome == "success"


def test_get_without_role_selection_fails_clearly(pacs, lab, registry):
    statuses, received = get(pacs.port, False, StudyInstanceUID=lab["doe"][0].StudyInstanceUID)
    final = statuses[-1]
    assert final.Status == 0xA702 and final.NumberOfFailedSuboperations == 3 and not received
    ev = wait_for(lambda: events_of(registry, "retrieve-failed"), what="retrieve-failed")
    assert "did not select the SCP role" in ev[0].message
    done = wait_for(lambda: events_of(registry, "get-finished"), what="get-finished")
    assert "role not negotiated" in done[0].message


def test_get_only_node_cannot_store(pacs, lab, registry):
    """A node with C-GET and without C-STORE is offered storage only in the SCP role."""
    add_node(registry, "GETONLY", services=("C-GET",))
    ae = AE(ae_title="GETONLY")
    ae.add_requested_context(CT, [ExplicitVRLittleEndian])
    ae.add_requested_context(GET)
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
    assert assoc.is_established
    try:
        assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == [GET]
    finally:
        assoc.release()


def test_reindexed_instances_answer_image_queries(redis_url, tmp_path, registry):
    """The reconcile lists an instance without its SOP class and number; an IMAGE query reads them
    from the file."""
    storage = tmp_path / "storage"
    p = PacsProcess(redis_url, storage).start()
    try:
        add_node(registry, "CT01")
        add_node(registry, "WS01", services=QR)
        study = make_study(3)
        store(p.port, study)
    finally:
        p.stop()
    registry.client.flushall()
    p = PacsProcess(redis_url, storage).start()
    try:
        p.wait_log("storage-reconciled", timeout=30)
        add_node(registry, "WS01", services=QR)
        answers, final = find(p.port, "IMAGE", StudyInstanceUID=study[0].StudyInstanceUID,
                              SeriesInstanceUID=study[0].SeriesInstanceUID, SOPInstanceUID="", InstanceNumber="")
        assert final == 0
        assert [int(a.InstanceNumber) for a in answers] == [1, 2, 3]
    finally:
        p.stop()


def test_qr_works_as_the_pacs_redis_user(tmp_path):
    """Under the lab's Redis ACL (the PACS's own user): C-FIND reads the index, the instance fields
    the index lacks are written back, and C-MOVE looks the destination up."""
    import shutil

    from dicomlab import acl, keys
    from dicomlab.migrate import migrate
    from dicomlab.registry import Registry, connect
    from lab import RedisServer, need

    binary = shutil.which("redis-server")
    need(binary is not None, "redis-server not found: install Debian's redis-server (7)")
    need(acl.server_version(binary) >= (7,), "Debian's redis-server is not 7")
    passwords = {user: acl.new_password() for user in acl.USERS}
    acl_file = tmp_path / "users.acl"
    acl_file.write_text(acl.render(passwords, acl.server_version(binary)))
    server = RedisServer(acl_file=acl_file, binary=binary).start()
    scp = StoreSCP("DEST")
    p = None
    try:
        url = {u: acl.service_url(server.url, u, passwords[u]) for u in acl.USERS}
        migrate(connect(url["admin"]))
        admin = Registry(connect(url["admin"]))
        p = PacsProcess(url["pacs"], tmp_path / "storage").start()
        add_node(admin, "CT01")
        add_node(admin, "WS01", services=QR)
        add_node(admin, "DEST", port=scp.port, services=("C-ECHO",))
        study = make_study(2)
        store(p.port, study)
        pacs_client = connect(url["pacs"])
        images = keys.series_images(study[0].StudyInstanceUID, study[0].SeriesInstanceUID)
        pacs_client.hdel(images, study[1].SOPInstanceUID)  # as the reconcile would have left it
        answers, final = find(p.port, "IMAGE", StudyInstanceUID=study[0].StudyInstanceUID,
                              SeriesInstanceUID=study[0].SeriesInstanceUID, SOPInstanceUID="", InstanceNumber="")
        assert final == 0 and [int(a.InstanceNumber) for a in answers] == [1, 2]
        assert pacs_client.hexists(images, study[1].SOPInstanceUID)  # written back
        final_move = move(p.port, "DEST", StudyInstanceUID=study[0].StudyInstanceUID)[-1]
        assert final_move.Status == 0 and final_move.NumberOfCompletedSuboperations == 2
        assert wait_for(lambda: events_of(admin, "move-finished"), what="move-finished")
    finally:
        scp.stop()
        if p is not None:
            p.stop()
        server.stop()


def test_move_cancelled_midway(pacs, lab, registry):
    """C-CANCEL during a C-MOVE: the final status is 0xFE00 with what remained, completed and failed."""
    import time as _time

    ae = AE(ae_title="SLOW")
    ae.add_supported_context(CT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    port = free_port()

    def slow(event):
        _time.sleep(0.5)
        return 0

    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, slow)])
    try:
        add_node(registry, "SLOW", port=port, services=("C-ECHO",))
        uids = "\\".join(lab[k][0].StudyInstanceUID for k in ("doe", "roe", "mr"))  # 8 instances
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = uids
        assoc = associate(pacs.port, [MOVE])
        try:
            responses = assoc.send_c_move(ds, "SLOW", MOVE, msg_id=7)
            statuses = [next(responses)[0]]
            cx = assoc._get_valid_context(MOVE, "", "scu")
            assoc.send_c_cancel(7, cx.context_id)
            statuses += [st for st, _ in responses]
        finally:
            assoc.release()
        final = statuses[-1]
        assert final.Status == 0xFE00
        assert final.NumberOfRemainingSuboperations > 0
        assert final.NumberOfRemainingSuboperations + final.NumberOfCompletedSuboperations == 8
    finally:
        server.shutdown()


def test_refused_node_gets_not_authorized_in_dimse_failure_mode(pacs, lab, registry):
    """refusal_mode dimse-failure: an unknown node's C-FIND and C-MOVE are answered 0x0124."""
    registry.update_listener({"refusal_mode": "dimse-failure"})
    _, final = find(pacs.port, "STUDY", calling="STRANGER", StudyInstanceUID="")
    assert final == 0x0124
    statuses = move(pacs.port, "WS01", calling="STRANGER", StudyInstanceUID=lab["doe"][0].StudyInstanceUID)
    assert [int(s.Status) for s in statuses] == [0x0124]
    assert wait_for(lambda: events_of(registry, "find-answered", calling_aet="STRANGER", outcome="refused"),
                    what="refused find event")
