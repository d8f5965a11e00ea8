"""Storage Commitment Push Model SCP against the real PACS process, with the CT's
real listener (ct_simulator.listener) receiving the reports on its own port."""

from __future__ import annotations

import pytest
from dicomdata import CT, ct_dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from test_store import send

from ct_simulator.commit import request
from ct_simulator.listener import STORAGE_COMMITMENT, Listener
from ct_simulator.network import Link
from dicomlab.commitments import Commitments
from lab import PacsProcess, add_node, events_of, free_port, wait_for

SERVICES = ("C-ECHO", "C-STORE", "STORAGE-COMMITMENT")
MR = "1.2.840.10008.5.1.4.1.1.4"


@pytest.fixture
def ct_listener():
    lst = Listener("CT01", 0, bind="127.0.0.1").start()
    yield lst
    lst.stop()


def _stored(pacs, n: int = 3) -> list[str]:
    study, series = generate_uid(), generate_uid()
    dss = [ct_dataset(study, series, i + 1, rows=16, cols=16) for i in range(n)]
    assert send(pacs.port, dss) == [0] * n
    return [str(ds.SOPInstanceUID) for ds in dss]


def _link(pacs) -> Link:
    return Link(host="127.0.0.1", port=pacs.port, calling_aet="CT01", called_aet="PACS")


def _ask(pacs, refs) -> str:
    tx = generate_uid()
    assert request(_link(pacs), tx, refs) is None
    return tx


def _state(registry, tx: str):
    rec = Commitments(registry.client).get(tx)
    return rec["state"] if rec else None


def test_report_on_a_new_association_commits_only_what_is_stored(pacs, registry, ct_listener):
    add_node(registry, "CT01", services=SERVICES, port=ct_listener.port)
    sops = _stored(pacs)
    never = generate_uid()
    tx = _ask(pacs, [(CT, s) for s in sops] + [(CT, never), (MR, sops[0])])
    rep = ct_listener.wait_report(tx, timeout=30)
    assert rep is not None, pacs.log()
    assert rep.calling_aet == "PACS"  # from the PACS's AE title, on its own association
    assert rep.event_type == 2
    assert sorted(i for _c, i in rep.committed) == sorted(sops)
    assert sorted((i, r) for _c, i, r in rep.failed) == sorted([(never, 0x0112), (sops[0], 0x0119)])
    try:
        wait_for(lambda: _state(registry, tx) == "reported", 10, what="state reported")
    except AssertionError:
        raise AssertionError(pacs.log() + str(Commitments(registry.client).get(tx))) from None
    rec = Commitments(registry.client).get(tx)
    assert rec["committed"] == 3 and rec["failed"] == 2 and rec["attempts"] == 1
    ev = wait_for(lambda: events_of(registry, "commitment-reported"), 10, what="commitment-reported")
    assert f"127.0.0.1:{ct_listener.port}" in ev[0].message and "0x0112 no such object instance: 1" in ev[0].message
    req = events_of(registry, "commitment-requested")
    assert req and f"127.0.0.1:{ct_listener.port}" in req[0].message
    study = registry.get_study(pacs_study(pacs, sops[0]))
    assert study is not None
    assert Commitments(registry.client).study_states([pacs_study(pacs, sops[0])])[pacs_study(pacs, sops[0])][
        "state"] == "reported"


def pacs_study(pacs, sop: str) -> str:
    hits = list(pacs.storage_dir.glob(f"*/*/{sop}.dcm"))
    assert len(hits) == 1
    return hits[0].parent.parent.name


def test_all_committed_is_event_type_1(pacs, registry, ct_listener):
    add_node(registry, "CT01", services=SERVICES, port=ct_listener.port)
    sops = _stored(pacs, 2)
    tx = _ask(pacs, [(CT, s) for s in sops])
    rep = ct_listener.wait_report(tx, timeout=30)
    assert rep is not None and rep.event_type == 1 and len(rep.committed) == 2 and rep.failed == []


def test_wrong_port_is_retried_with_backoff_and_fixing_the_port_delivers(pacs, registry, ct_listener):
    registry.update_listener({"commitment_interval": 1, "commitment_attempts": 5})
    wrong = free_port()
    add_node(registry, "CT01", services=SERVICES, port=wrong)
    sops = _stored(pacs, 1)
    tx = _ask(pacs, [(CT, sops[0])])
    ev = wait_for(lambda: events_of(registry, "commitment-failed"), 30, what="a failed attempt")[0]
    assert ev.reason == "connection-refused" and ev.outcome == "retrying"
    assert f"could not deliver the storage commitment report to CT01 at 127.0.0.1:{wrong}: connection refused" \
        in ev.message
    assert "Is the node's port right" in ev.message and "Attempt 1 of 5" in ev.message
    assert _state(registry, tx) == "retrying"
    registry.patch_node("CT01", {"port": ct_listener.port})
    rep = ct_listener.wait_report(tx, timeout=60)
    assert rep is not None and len(rep.committed) == 1
    wait_for(lambda: _state(registry, tx) == "reported", 10, what="state reported")


def test_gives_up_after_the_attempts_and_says_so(pacs, registry):
    registry.update_listener({"commitment_interval": 1, "commitment_attempts": 3})
    add_node(registry, "CT01", services=SERVICES, port=free_port())
    tx = _ask(pacs, [(CT, generate_uid())])
    wait_for(lambda: _state(registry, tx) == "failed", 60, what="state failed")
    evs = events_of(registry, "commitment-failed")
    assert [e.outcome for e in evs] == ["retrying", "retrying", "failed"]
    assert [e.detail.get("next_in_s") for e in evs[:2]] == [1, 2]  # doubled after each failure
    assert "Attempt 3 of 3: giving up" in evs[-1].message and evs[-1].level == "error"
    assert Commitments(registry.client).get(tx)["attempts"] == 3


def test_backoff_doubles_and_stops_at_ten_times_the_first():
    from pacs.commitment import backoff

    assert [backoff(10, n) for n in range(1, 7)] == [10, 20, 40, 80, 100, 100]


def test_a_report_answered_with_a_failure_is_retried(pacs, registry):
    registry.update_listener({"commitment_interval": 1, "commitment_attempts": 2})
    with Listener("CT01", 0, bind="127.0.0.1", report_status=0x0110) as lst:
        add_node(registry, "CT01", services=SERVICES, port=lst.port)
        tx = _ask(pacs, [(CT, generate_uid())])
        wait_for(lambda: _state(registry, tx) == "failed", 60, what="state failed")
        assert len(lst.reports) == 2  # the PACS tried twice
    evs = events_of(registry, "commitment-failed")
    assert evs[0].reason == "report-refused" and "0x0110" in evs[0].message


def test_a_pending_report_survives_a_pacs_restart(redis_url, registry, tmp_path, ct_listener):
    add_node(registry, "CT01", services=SERVICES, port=free_port())
    first = PacsProcess(redis_url, tmp_path / "storage").start()
    try:
        registry.update_listener({"commitment_interval": 3, "commitment_attempts": 5})
        sops = _stored(first, 1)
        tx = _ask(first, [(CT, sops[0])])
        wait_for(lambda: _state(registry, tx) == "retrying", 30, what="state retrying")
    finally:
        first.stop()
    registry.patch_node("CT01", {"port": ct_listener.port})
    second = PacsProcess(redis_url, tmp_path / "storage", port=first.port).start()
    try:
        rep = ct_listener.wait_report(tx, timeout=60)
        assert rep is not None, second.log()
        assert [i for _c, i in rep.committed] == sops
    finally:
        second.stop()


def test_a_node_without_the_service_has_the_context_refused(pacs, registry):
    add_node(registry, "CT01", services=("C-ECHO", "C-STORE"))
    ae = AE(ae_title="CT01")
    ae.add_requested_context(STORAGE_COMMITMENT)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
    try:
        assert assoc.is_established
        assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == ["1.2.840.10008.1.1"]
    finally:
        assoc.release()
    ev = wait_for(lambda: events_of(registry, "context-rejected"), 10, what="context-rejected")[0]
    assert "not allowed STORAGE-COMMITMENT" in ev.message and ev.reason == "service-not-allowed"


def test_a_request_without_a_transaction_uid_is_refused(pacs, registry):
    add_node(registry, "CT01", services=SERVICES)
    problem = request(_link(pacs), "", [(CT, generate_uid())])
    assert problem is not None and "0x0120" in problem.message
    ev = wait_for(lambda: events_of(registry, "commitment-requested"), 10, what="commitment-requested")[0]
    assert ev.outcome == "refused" and "Transaction UID" in ev.message


def test_a_refused_node_let_in_by_refusal_mode_gets_0124_and_nothing_is_kept(pacs, registry):
    registry.update_listener({"refusal_mode": "dimse-failure"})
    tx = generate_uid()
    problem = request(_link(pacs), tx, [(CT, generate_uid())])  # CT01 is not a node
    assert problem is not None and "0x0124" in problem.message
    assert Commitments(registry.client).get(tx) is None
