"""``ct-simulator find | move | get`` against the project's own PACS process."""

from __future__ import annotations

import importlib.util

import pydicom
import pytest

from ct_simulator.cli import main
from ct_simulator.qr import EXIT_QR_FAILED
from dicomlab.settings import Node
from lab import free_port, need


@pytest.fixture(autouse=True)
def _pacs_installed():
    need(importlib.util.find_spec("pacs") is not None, "the PACS package is not installed (pip install -e pacs)")


@pytest.fixture
def sent(pacs, registry, capsys):
    """CT01 (allowed Q/R) sent one study of 3 slices, patient DOE^JANE."""
    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=11113,
                           services=["C-ECHO", "C-STORE", "C-FIND", "C-MOVE", "C-GET"]))
    rc = main(["send", *_link(pacs), "--slices", "3", "--rows", "32", "--cols", "32", "--progress", "never",
               "--patient-name", "DOE^JANE", "--seed", "5"])
    assert rc == 0, capsys.readouterr().out
    capsys.readouterr()
    (study,) = registry.list_studies()
    return study["study_uid"]


def _link(pacs) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(pacs.port), "--called-aet", pacs.ae_title]


def test_find_prints_matches(pacs, sent, capsys):
    assert main(["find", *_link(pacs), "-k", "PatientName=doe*"]) == 0
    out = capsys.readouterr().out
    assert "C-FIND STUDY: 1 match(es)" in out and f"StudyInstanceUID={sent}" in out and "PatientName=DOE^JANE" in out
    assert "NumberOfStudyRelatedInstances=3" in out
    assert main(["find", *_link(pacs), "-k", "PatientName=NOBODY"]) == 0
    assert "0 match(es)" in capsys.readouterr().out


def test_get_writes_files(pacs, sent, tmp_path, capsys):
    out_dir = tmp_path / "got"
    assert main(["get", *_link(pacs), "-k", f"StudyInstanceUID={sent}", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "3 completed, 0 failed" in out
    files = sorted(out_dir.iterdir())
    assert len(files) == 3 and all(pydicom.dcmread(f).StudyInstanceUID == sent for f in files)


def test_get_without_role_fails_with_the_fix(pacs, sent, capsys):
    rc = main(["get", *_link(pacs), "-k", f"StudyInstanceUID={sent}", "--no-role"])
    out = capsys.readouterr().out
    assert rc == EXIT_QR_FAILED
    assert "0xA702" in out and "3 failed" in out and "role selection" in out


def test_move_to_unknown_and_wrong_port(pacs, sent, registry, capsys):
    rc = main(["move", *_link(pacs), "-k", f"StudyInstanceUID={sent}", "--destination", "NOWHERE"])
    out = capsys.readouterr().out
    assert rc == EXIT_QR_FAILED and "0xA801" in out and "register it as a node" in out
    registry.add_node(Node(ae_title="WS02", host="127.0.0.1", port=free_port(), services=["C-ECHO"]))
    rc = main(["move", *_link(pacs), "-k", f"StudyInstanceUID={sent}", "--destination", "WS02"])
    out = capsys.readouterr().out
    assert rc == EXIT_QR_FAILED and "0xA702" in out and "0 completed, 3 failed" in out
    assert "the node's registered port" in out


def test_find_output_escapes_control_characters(pacs, registry, capsys):
    """A patient name with a terminal escape sequence is printed escaped, never raw."""
    from dicomdata import CT, as_file, ct_dataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    from pynetdicom import AE

    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=11113, services=["C-STORE", "C-FIND"]))
    ds = as_file(ct_dataset(generate_uid(), generate_uid(), 1, rows=16, cols=16))
    ds.PatientName = "EVIL\x1b[2J^NAME"
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CT, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
    assert assoc.is_established and assoc.send_c_store(ds).Status == 0
    assoc.release()
    assert main(["find", *_link(pacs), "-k", "PatientName=EVIL*"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "EVIL\\x1b[2J^NAME" in out
