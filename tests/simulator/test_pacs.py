"""Against the project's own PACS (``python -m pacs`` through the ``pacs`` fixture)."""

from __future__ import annotations

import importlib.util

import pydicom
import pytest

from ct_simulator import outcome
from ct_simulator.cli import main
from ct_simulator.iod import StudyPlan, iter_instances
from dicomlab.settings import Node
from lab import need

from .test_objects import dciodvfy_errors


@pytest.fixture(autouse=True)
def _pacs_installed():
    need(importlib.util.find_spec("pacs") is not None, "the PACS package is not installed (pip install -e pacs)")


def _send(pacs, *extra: str) -> list[str]:
    return ["send", "--host", "127.0.0.1", "--port", str(pacs.port), "--called-aet", pacs.ae_title,
            "--rows", "64", "--cols", "64", "--progress", "never", *extra]


def test_registered_ct_sends_to_the_pacs(pacs, registry, capsys):
    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=11113, services=["C-ECHO", "C-STORE"]))
    assert main(["echo", "--host", "127.0.0.1", "--port", str(pacs.port), "--called-aet", "PACS"]) == 0
    rc = main(_send(pacs, "--slices", "4", "--seed", "21"))
    out = capsys.readouterr().out
    assert rc == 0, out + pacs.log()
    stored = sorted(pacs.storage_dir.rglob("*.dcm"))
    assert len(stored) == 4
    sent = {i.sop_instance_uid: i.dataset.PixelData for i in iter_instances(StudyPlan(slices=4, rows=64, cols=64,
                                                                                      seed=21))}
    for f in stored:
        ds = pydicom.dcmread(f)
        assert ds.PixelData == sent[ds.SOPInstanceUID]
    assert dciodvfy_errors(stored[0]) == []
    (study,) = registry.list_studies()
    assert study["instances"] == 4


def test_unregistered_ct_is_rejected_with_the_fix(pacs, registry, capsys):
    rc = main(_send(pacs, "--slices", "2"))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_REJECTED
    assert "rejected-permanent / service-user / calling-AE-title-not-recognized (1/1/3)" in out
    assert "Is CT01 registered (and enabled) on the PACS" in out and "AE titles are case-sensitive" in out


def test_wrong_called_aet_is_rejected_called_not_recognized(pacs, registry, capsys):
    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=11113))
    rc = main(["echo", "--host", "127.0.0.1", "--port", str(pacs.port), "--called-aet", "pacs"])
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_REJECTED
    assert "called-AE-title-not-recognized (1/1/7)" in out


def test_node_allowed_echo_only_gets_no_storage_context(pacs, registry, capsys):
    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=11113, services=["C-ECHO"]))
    rc = main(_send(pacs, "--slices", "1"))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_NO_CONTEXT, out
    assert "no presentation context accepted" in out


def test_report_json_lists_each_instance_with_status_and_hash_of_the_bytes_stored(pacs, registry, tmp_path,
                                                                                   capsys):
    import hashlib
    import json
    import struct

    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=11113))
    report = tmp_path / "out" / "report.json"
    rc = main(_send(pacs, "--slices", "3", "--seed", "5", "--report-json", str(report)))
    assert rc == 0, capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["sent"] == 3 and data["seed"] == 5
    rows = data["instances"]
    assert [r["status"] for r in rows] == [0, 0, 0]
    for row in rows:
        path = pacs.storage_dir / row["study_uid"] / row["series_uid"] / f"{row['sop_instance_uid']}.dcm"
        raw = path.read_bytes()
        meta_len = struct.unpack("<I", raw[140:144])[0]  # (0002,0000) group length, after preamble + DICM
        assert hashlib.sha256(raw[144 + meta_len:]).hexdigest() == row["sha256"]
