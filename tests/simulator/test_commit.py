"""``ct-simulator send --commit`` against the project's own PACS: the report reaches
the simulator's own listener, or its absence is a timeout that names the PACS's
record of the CT's port."""

from __future__ import annotations

import importlib.util
import json

import pytest

from ct_simulator import outcome
from ct_simulator.cli import main
from dicomlab.settings import Node
from lab import free_port, need

SERVICES = ["C-ECHO", "C-STORE", "STORAGE-COMMITMENT"]


@pytest.fixture(autouse=True)
def _pacs_installed():
    need(importlib.util.find_spec("pacs") is not None, "the PACS package is not installed (pip install -e pacs)")


def _send(pacs, *extra: str) -> list[str]:
    return ["send", "--host", "127.0.0.1", "--port", str(pacs.port), "--called-aet", pacs.ae_title,
            "--rows", "32", "--cols", "32", "--progress", "never", "--listen-bind", "127.0.0.1", *extra]


def test_send_commit_prints_committed_and_failed_counts(pacs, registry, capsys):
    port = free_port()
    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=port, services=SERVICES))
    rc = main(_send(pacs, "--slices", "3", "--commit", "--listen-port", str(port), "--commit-extra",
                    "1.2.826.0.1.3680043.8.498.1"))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_INSTANCE_FAILED, out + pacs.log()
    assert ": 3 committed, 1 failed (report from PACS at 127.0.0.1:" in out
    assert "not committed: 1.2.826.0.1.3680043.8.498.1 (failure reason 0x0112)" in out


def test_send_commit_all_committed_exits_0_with_json(pacs, registry, capsys):
    port = free_port()
    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=port, services=SERVICES))
    rc = main(_send(pacs, "--slices", "2", "--commit", "--listen-port", str(port), "--json"))
    data = json.loads(capsys.readouterr().out)
    assert rc == 0, data
    assert data["commitment"]["report"]["committed"] == 2 and data["commitment"]["report"]["failed"] == 0


def test_a_report_to_the_wrong_port_is_a_timeout_naming_the_pacs_record(pacs, registry, capsys):
    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=free_port(), services=SERVICES))
    rc = main(_send(pacs, "--slices", "1", "--commit", "--listen-port", str(free_port()), "--commit-timeout", "3"))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_TIMED_OUT, out
    assert "timed out: no storage commitment report reached CT01" in out
    assert "Check the PACS's record of CT01: its host and port must be where this CT listens" in out


def test_a_busy_listen_port_is_named_with_the_fix(pacs, registry, capsys):
    import socket

    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=free_port(), services=SERVICES))
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        rc = main(_send(pacs, "--slices", "1", "--commit", "--listen-port", str(port)))
    err = capsys.readouterr().err
    assert rc == outcome.EXIT_ERROR
    assert f"cannot listen for the storage commitment report on port {port}" in err
    assert "register N as the node's port" in err
