"""Query/Retrieve interop with DCMTK: findscu, movescu (storescp as the destination) and
getscu against a real PACS process."""

from __future__ import annotations

import subprocess

import pytest
from dicomdata import ct_dataset
from pydicom import dcmread
from pydicom.uid import generate_uid
from test_qr import QR, make_study, store

from lab import PacsProcess, add_node, dcmtk_env, delayed_acks, events_of, free_port, need_tool, wait_for, wait_port


@pytest.fixture
def stored(pacs, registry):
    add_node(registry, "CT01")
    add_node(registry, "WS01", services=QR)
    doe = make_study(3, "DOE^JANE", "20240115")
    roe = make_study(2, "ROE^RICHARD", "20240201")
    store(pacs.port, doe)
    store(pacs.port, roe)
    return doe, roe


def run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=dcmtk_env(), timeout=timeout)


def test_findscu(pacs, stored, tmp_path):
    exe = need_tool("findscu", "dcmtk")
    doe, _ = stored
    out = tmp_path / "found"
    out.mkdir()
    r = run([exe, "-S", "-aet", "WS01", "-aec", "PACS", "-X", "-od", str(out),
             "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientName=DOE*",
             "-k", "StudyDate=20240101-20240131", "-k", "NumberOfStudyRelatedInstances",
             "127.0.0.1", str(pacs.port)])
    assert r.returncode == 0, r.stderr
    found = [dcmread(p) for p in sorted(out.iterdir())]
    assert [d.StudyInstanceUID for d in found] == [doe[0].StudyInstanceUID]
    assert int(found[0].NumberOfStudyRelatedInstances) == 3 and str(found[0].PatientName) == "DOE^JANE"


def test_movescu_to_storescp(pacs, stored, registry, tmp_path):
    movescu, storescp = need_tool("movescu", "dcmtk"), need_tool("storescp", "dcmtk")
    doe, _ = stored
    port = free_port()
    out = tmp_path / "moved"
    out.mkdir()
    dest = subprocess.Popen([storescp, "--aetitle", "STORESCP", "--output-directory", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dcmtk_env())
    try:
        wait_port("127.0.0.1", port)
        add_node(registry, "STORESCP", port=port, services=("C-ECHO",))
        r = run([movescu, "-S", "-aet", "WS01", "-aec", "PACS", "-aem", "STORESCP",
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={doe[0].StudyInstanceUID}",
                 "127.0.0.1", str(pacs.port)])
        assert r.returncode == 0, r.stderr
        got = wait_for(lambda: len(list(out.iterdir())) == 3 and list(out.iterdir()), what="3 files at storescp")
        assert sorted(dcmread(p).SOPInstanceUID for p in got) == sorted(d.SOPInstanceUID for d in doe)
        ev = wait_for(lambda: events_of(registry, "move-finished"), what="move-finished")
        assert "3 completed, 0 failed" in ev[0].message
    finally:
        dest.terminate()
        dest.wait(10)


def test_movescu_unknown_destination(pacs, stored):
    movescu = need_tool("movescu", "dcmtk")
    r = run([movescu, "-v", "-S", "-aet", "WS01", "-aec", "PACS", "-aem", "NOWHERE",
             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={stored[0][0].StudyInstanceUID}",
             "127.0.0.1", str(pacs.port)])
    assert "Refused: MoveDestinationUnknown" in r.stdout + r.stderr, r.stdout + r.stderr


def test_getscu(pacs, stored, registry, tmp_path):
    exe = need_tool("getscu", "dcmtk")
    _, roe = stored
    out = tmp_path / "got"
    out.mkdir()
    r = run([exe, "-S", "-aet", "WS01", "-aec", "PACS", "-od", str(out),
             "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={roe[0].StudyInstanceUID}",
             "-k", f"SeriesInstanceUID={roe[0].SeriesInstanceUID}", "127.0.0.1", str(pacs.port)])
    assert r.returncode == 0, r.stderr
    got = sorted(dcmread(p).SOPInstanceUID for p in out.iterdir())
    assert got == sorted(d.SOPInstanceUID for d in roe)
    ev = wait_for(lambda: events_of(registry, "get-finished"), what="get-finished")
    assert ev[0].outcome == "success"


@pytest.mark.parametrize("quickack", ["1", "0"], ids=["quickack", "off"])
def test_retrieves_to_peers_that_keep_nagle_wait_for_no_delayed_ack(quickack, redis_url, registry, tmp_path):
    """A C-MOVE destination (storescp) and a C-GET SCU (getscu) that keep Nagle's algorithm on, as
    Debian builds DCMTK, answer each C-STORE sub-operation in small segments and hold each until the
    one before is acknowledged. The PACS asks for an immediate ACK after each PDU it sends and reads
    (outbound associations: ``dicomlab.outbound``; under pynetdicom's loops: ``transport.FastSocket``).
    Counted, not timed: the kernel's delayed ACKs over each retrieve of 40 instances, about one per
    instance with ``PACS_QUICKACK=0`` (the check can fail), a few at most with it (other traffic on
    the machine counts too)."""
    movescu, getscu, storescp = (need_tool(t, "dcmtk") for t in ("movescu", "getscu", "storescp"))
    pacs = PacsProcess(redis_url, tmp_path / "storage", extra_env={"PACS_QUICKACK": quickack}).start()
    dest = None
    try:
        add_node(registry, "CT01")
        add_node(registry, "WS01", services=QR)
        study_uid, series_uid = generate_uid(), generate_uid()  # 512² pixels: writes that outlast the call
        study = [ct_dataset(study_uid, series_uid, i, rows=512, cols=512) for i in range(1, 41)]
        store(pacs.port, study)
        port = free_port()
        moved, got = tmp_path / "moved", tmp_path / "got"
        moved.mkdir()
        got.mkdir()
        dest = subprocess.Popen([storescp, "--aetitle", "STORESCP", "--output-directory", str(moved), str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dcmtk_env(nodelay=False))
        wait_port("127.0.0.1", port)
        add_node(registry, "STORESCP", port=port, services=("C-ECHO",))
        key = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study[0].StudyInstanceUID}"]
        waited = {}
        for what, argv in (("C-MOVE", [movescu, "-S", "-aet", "WS01", "-aec", "PACS", "-aem", "STORESCP"]),
                           ("C-GET", [getscu, "-S", "-aet", "WS01", "-aec", "PACS", "-od", str(got)])):
            before = delayed_acks()
            r = subprocess.run([*argv, *key, "127.0.0.1", str(pacs.port)], capture_output=True, text=True,
                               env=dcmtk_env(nodelay=False), timeout=120)
            waited[what] = delayed_acks() - before
            assert r.returncode == 0, r.stderr
        assert len(list(moved.iterdir())) == len(list(got.iterdir())) == len(study)
        if quickack == "1":
            assert waited["C-MOVE"] < 20 and waited["C-GET"] < 20, waited
        else:
            assert waited["C-MOVE"] >= 20 and waited["C-GET"] >= 20, f"{waited}: the check cannot tell"
    finally:
        if dest is not None:
            dest.terminate()
            dest.wait(10)
        pacs.stop()
