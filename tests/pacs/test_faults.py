"""Refusal modes (how a refused node is turned away) and PACS-side fault
injection, each observed from a real peer and in the PACS events."""

from __future__ import annotations

import socket

import pytest
from dicomdata import CT, as_file, ct_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from lab import add_node, echoscu, events_of, rejection_of, wait_for


def associate(port: int, calling: str = "CT01", dimse_timeout: float = 30):
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CT, [ExplicitVRLittleEndian])
    ae.dimse_timeout = dimse_timeout
    return ae.associate("127.0.0.1", port, ae_title="PACS")


def series(n: int):
    study, ser = generate_uid(), generate_uid()
    return [as_file(ct_dataset(study, ser, i)) for i in range(1, n + 1)]


def test_refusal_mode_abort_accepts_then_aborts(pacs, registry):
    registry.update_listener({"refusal_mode": "abort"})
    assoc = associate(pacs.port, "STRANGER")
    # accepted, then aborted: the modality never gets to send
    wait_for(lambda: assoc.is_aborted or not assoc.is_alive(), what="the abort")
    assert not assoc.is_rejected
    ev = wait_for(lambda: events_of(registry, "association-rejected", calling_aet="STRANGER"))[-1]
    assert ev.outcome == "abort" and ev.reason == "unknown-calling-aet"
    assert wait_for(lambda: events_of(registry, "association-aborted", reason="refusal-mode-abort"))


def test_refusal_mode_dimse_failure_answers_not_authorized_and_stores_nothing(pacs, registry):
    registry.update_listener({"refusal_mode": "dimse-failure"})
    assoc = associate(pacs.port, "STRANGER")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0124
        assert assoc.send_c_store(series(1)[0]).Status == 0x0124
    finally:
        assoc.release()
    assert not list(pacs.storage_dir.rglob("*.dcm"))
    assert events_of(registry, "store-failed", reason="refusal-mode-dimse-failure")


def test_refusal_mode_close_says_nothing(pacs, registry):
    registry.update_listener({"refusal_mode": "close"})
    r = echoscu(pacs.port, "STRANGER", "PACS")
    assert r.returncode != 0 and rejection_of(r.stderr + r.stdout) is None
    ev = wait_for(lambda: events_of(registry, "association-rejected", calling_aet="STRANGER"))[-1]
    assert ev.outcome == "close"


def test_refusal_mode_does_not_change_transient_rejections(pacs, registry):
    """Rows 1 and 5 stay A-ASSOCIATE-RJ: they are not about who the node is."""
    add_node(registry, "CT01")
    registry.update_listener({"refusal_mode": "close", "max_associations": 1})
    held = associate(pacs.port)
    try:
        r = echoscu(pacs.port, "CT01", "PACS")
        assert rejection_of(r.stderr + r.stdout)[2] == "Local Limit Exceeded"
    finally:
        held.release()


def test_fault_abort_after_n_keeps_exactly_what_was_acknowledged(pacs, registry):
    add_node(registry, "CT01")
    registry.update_listener({"fault_abort_after": 3})
    assoc = associate(pacs.port, dimse_timeout=5)  # pynetdicom's SCU notices an abort only at its DIMSE timeout
    statuses = []
    for ds in series(6):
        if not assoc.is_established:
            break
        rsp = assoc.send_c_store(ds)
        statuses.append(int(rsp.Status) if "Status" in rsp else None)
    assert statuses[:3] == [0, 0, 0] and None in statuses[3:]
    assert assoc.is_aborted
    assert len(list(pacs.storage_dir.rglob("*.dcm"))) == 3
    assert events_of(registry, "association-aborted", reason="fault-injected")


@pytest.mark.parametrize("status", [0xA700, 0xC123, 0x0110])
def test_fault_status_answers_the_chosen_status_and_stores_nothing(pacs, registry, status):
    add_node(registry, "CT01")
    registry.update_listener({"fault_status": status})
    assoc = associate(pacs.port)
    try:
        assert assoc.send_c_store(series(1)[0]).Status == status
    finally:
        assoc.release()
    assert not list(pacs.storage_dir.rglob("*.dcm"))
    ev = wait_for(lambda: events_of(registry, "store-failed", reason="fault-injected"))[-1]
    assert f"0x{status:04X}" in ev.message


def test_fault_delay_and_stall(pacs, registry):
    add_node(registry, "CT01")
    registry.update_listener({"fault_stall": True})
    assoc = associate(pacs.port, dimse_timeout=2)
    rsp = assoc.send_c_store(series(1)[0])
    assert "Status" not in rsp  # no answer: the modality's DIMSE timeout fired
    assert events_of(registry, "store-failed", reason="fault-injected")
    assoc.abort()
    registry.update_listener({"fault_stall": False, "fault_delay_ms": 300})
    assoc = associate(pacs.port)
    try:
        import time

        t0 = time.monotonic()
        assert assoc.send_c_store(series(1)[0]).Status == 0
        assert time.monotonic() - t0 >= 0.3
    finally:
        assoc.release()


def test_unknown_refusal_mode_is_refused_by_the_registry(registry):
    from dicomlab.errors import ValidationError

    with pytest.raises(ValidationError, match="refusal_mode"):
        registry.update_listener({"refusal_mode": "shrug"})


def test_plain_tcp_probe_does_not_disturb(pacs, registry):
    add_node(registry, "CT01")
    with socket.create_connection(("127.0.0.1", pacs.port)):
        pass
    assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
