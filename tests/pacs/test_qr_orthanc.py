"""Query/Retrieve with Debian's Orthanc 1.10 (a peer no one here wrote): Orthanc as a C-MOVE
destination, and Orthanc as the Q/R SCU that queries the PACS (REST /modalities/{id}/query)
and retrieves what it found (/queries/{id}/retrieve: a C-MOVE to itself).

Orthanc runs from a temporary configuration: free ports, its own storage folder, HTTP on
loopback only, started and stopped by the test."""

from __future__ import annotations

import json

import pytest
from orthanc_peer import Orthanc
from test_qr import QR, make_study, move, store

from lab import add_node, events_of, wait_for


@pytest.fixture
def orthanc(pacs, tmp_path):
    o = Orthanc(tmp_path / "orthanc", pacs.port, "dicomlab-qr").start()
    yield o
    o.stop()


@pytest.fixture
def study(pacs, registry):
    add_node(registry, "CT01")
    add_node(registry, "WS01", services=QR)
    datasets = make_study(3, "DOE^JANE", "20240115")
    store(pacs.port, datasets)
    store(pacs.port, make_study(2, "ROE^RICHARD", "20240201"))
    return datasets


def test_orthanc_as_move_destination(pacs, registry, orthanc, study):
    add_node(registry, "ORTHANC", port=orthanc.port, services=("C-ECHO",))
    final = move(pacs.port, "ORTHANC", StudyInstanceUID=study[0].StudyInstanceUID)[-1]
    assert final.Status == 0 and final.NumberOfCompletedSuboperations == 3, orthanc.log.read_text()[-2000:]
    assert orthanc.instances() == {d.SOPInstanceUID for d in study}
    ev = wait_for(lambda: events_of(registry, "move-finished"), what="move-finished")
    assert f"to 'ORTHANC' at 127.0.0.1:{orthanc.port}" in ev[0].message


def test_orthanc_queries_and_retrieves_from_the_pacs(pacs, registry, orthanc, study):
    add_node(registry, "ORTHANC", port=orthanc.port, services=("C-ECHO", "C-FIND", "C-MOVE"))
    q = orthanc.call("POST", "/modalities/pacs/query", {"Level": "Study", "Query": {"PatientName": "DOE*",
                                                                                       "StudyInstanceUID": ""}})
    qid = q["ID"]  # type: ignore[index]
    answers = orthanc.call("GET", f"/queries/{qid}/answers?expand")
    assert len(answers) == 1, (answers, pacs.log()[-3000:])  # type: ignore[arg-type]
    tags = json.dumps(answers)
    assert study[0].StudyInstanceUID in tags and "DOE^JANE" in tags
    orthanc.call("POST", f"/queries/{qid}/retrieve", "ORTHANC")  # a C-MOVE to itself, synchronous
    got = wait_for(lambda: orthanc.instances() == {d.SOPInstanceUID for d in study}, 60,
                   what="Orthanc to receive the study")
    assert got
    assert wait_for(lambda: events_of(registry, "find-answered", calling_aet="ORTHANC"), what="find event")
    done = wait_for(lambda: events_of(registry, "move-finished", calling_aet="ORTHANC"), what="move event")
    assert "3 completed, 0 failed" in done[0].message
