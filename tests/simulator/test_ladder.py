"""``ct-simulator send --ladder`` / ``echo --ladder``: the association as the simulator saw it,
printed as a ladder, against the project's own PACS and against nothing at all."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from ct_simulator import outcome
from ct_simulator.cli import main
from dicomlab.settings import Node
from lab import free_port, need


@pytest.fixture(autouse=True)
def _pacs_installed():
    need(importlib.util.find_spec("pacs") is not None, "the PACS package is not installed (pip install -e pacs)")


def _send(port: int, *extra: str) -> list[str]:
    return ["send", "--host", "127.0.0.1", "--port", str(port), "--called-aet", "PACS", "--rows", "32", "--cols",
            "32", "--progress", "never", "--ladder", *extra]


def _arrows(out: str) -> list[str]:
    """The arrows of the printed ladder, in order, as "-> LABEL" / "<- LABEL"."""
    found = []
    for line in out.splitlines():
        m = re.match(r"^\s*(?:\+\d+ ms)?\s+\|(<?)-+ (.+?) -+(>?)\|", line)
        if m:
            found.append(("-> " if m.group(3) else "<- ") + m.group(2))
    return found


def test_send_ladder_of_an_accepted_association(pacs, registry, capsys):
    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=104, services=["C-ECHO", "C-STORE"]))
    rc = main(_send(pacs.port, "--slices", "5", "--calling-aet", "CT01"))
    out = capsys.readouterr().out
    assert rc == 0, out + pacs.log()
    assert "Association as seen by the modality: released after 5 C-STORE" in out
    assert _arrows(out) == ["-> TCP connect", "-> A-ASSOCIATE-RQ", "<- A-ASSOCIATE-AC", "-> C-STORE-RQ x 5",
                            "<- C-STORE-RSP x 5", "-> A-RELEASE-RQ", "<- A-RELEASE-RP"]
    assert "calling AE 'CT01', called AE 'PACS'" in out
    assert "[1] CT Image Storage: Explicit VR Little Endian, Implicit VR Little Endian" in out
    assert "[1] CT Image Storage: accepted, Explicit VR Little Endian" in out
    assert "5 x Success" in out and "round trip, RQ sent to RSP received: " in out
    assert ">>" not in out  # no problem to report


def test_send_ladder_of_a_rejected_association_shows_the_reason_and_the_fix(pacs, capsys):
    rc = main(_send(pacs.port, "--slices", "2", "--calling-aet", "NOBODY"))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_REJECTED
    assert _arrows(out) == ["-> TCP connect", "-> A-ASSOCIATE-RQ", "<- A-ASSOCIATE-RJ 1/1/3"]
    assert "result: rejected-permanent" in out and "reason: calling-AE-title-not-recognized" in out
    assert ("  >> Association rejected: rejected-permanent / service-user / calling-AE-title-not-recognized "
            "(1/1/3)") in out
    assert "     fix: Is NOBODY registered (and enabled) on the PACS" in out


def test_send_ladder_of_an_abort_on_purpose_and_as_json(pacs, registry, capsys):
    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=104, services=["C-ECHO", "C-STORE"]))
    rc = main(_send(pacs.port, "--slices", "4", "--calling-aet", "CT01", "--abort-after", "2", "--json"))
    data = json.loads(capsys.readouterr().out)
    assert rc == outcome.EXIT_ABORTED
    (ladder,) = data["ladders"]
    assert ladder["view"] == "modality" and ladder["outcome"] == "aborted"
    assert [s["kind"] for s in ladder["steps"]] == ["connect", "associate-rq", "associate-ac", "dimse-rq",
                                                   "dimse-rsp", "abort"]
    assert ladder["steps"][-1]["sender"] == "modality" and ladder["steps"][4]["count"] == 2
    assert "on purpose after 2 instances" in ladder["problem"]["why"]


def test_echo_ladder_and_a_refused_connection(pacs, registry, capsys):
    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=104, services=["C-ECHO"]))
    assert main(["echo", "--host", "127.0.0.1", "--port", str(pacs.port), "--called-aet", "PACS",
                 "--calling-aet", "CT01", "--ladder"]) == 0
    out = capsys.readouterr().out
    assert _arrows(out)[3:5] == ["-> C-ECHO-RQ", "<- C-ECHO-RSP"]
    port = free_port()  # nothing listens there
    rc = main(["echo", "--host", "127.0.0.1", "--port", str(port), "--called-aet", "PACS", "--ladder"])
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_REFUSED
    assert _arrows(out) == ["-> TCP connect failed"]
    assert "  >> No association: the TCP connection failed" in out and "connection refused" in out


def test_no_ladder_without_the_option(pacs, capsys):
    main(["echo", "--host", "127.0.0.1", "--port", str(pacs.port), "--called-aet", "PACS"])
    assert "A-ASSOCIATE-RQ" not in capsys.readouterr().out
