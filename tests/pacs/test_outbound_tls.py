"""DICOM TLS on the associations the PACS opens to a node (Storage Commitment reports and
C-MOVE sub-operations), against the real PACS process and real peers on loopback: a
pynetdicom TLS listener with a lab-issued certificate (tests/tls_peer.py), DCMTK's
``storescp +tls`` as a move destination, and plain listeners registered ``tls required``
(the failure named in dicomlab.tlswords' words, never a plain fallback)."""

from __future__ import annotations

import subprocess

import pytest
from dicomdata import CT, ct_dataset
from pydicom import dcmread
from pydicom.uid import generate_uid
from test_qr import QR, make_study, store
from test_store import send
from tls_peer import node_peer

from ct_simulator.commit import request
from ct_simulator.listener import Listener
from ct_simulator.network import Link
from ct_simulator.tls import TlsSpec
from dicomlab.settings import Node
from dicomlab.tlsca import LabCA
from lab import add_node, dcmtk_env, events_of, free_port, need_tool, wait_for, wait_port

COMMIT = ["C-ECHO", "C-STORE", "STORAGE-COMMITMENT"]


def tls_node(registry, title: str, port: int, services=COMMIT) -> None:
    registry.add_node(Node(ae_title=title, host="127.0.0.1", port=port, services=list(services), tls="required"))


def ask_over_tls(pacs, tmp_path, title: str, refs) -> str:
    """The node (tls required) asks for commitment on the PACS's TLS port, with its lab certificate."""
    ca = LabCA.ensure(pacs.tls_dir)
    bundle = tmp_path / f"{title}-bundle.pem"
    bundle.write_bytes(ca.issue(title, ["127.0.0.1"], server=True, client=True).bundle(ca.cert_pem))
    link = Link(host="127.0.0.1", port=pacs.tls_port, calling_aet=title, called_aet="PACS",
                tls=TlsSpec(bundle=str(bundle), server_name="localhost"))
    tx = generate_uid()
    assert request(link, tx, refs) is None, pacs.log()
    return tx


def test_commitment_report_goes_over_tls_to_a_tls_required_node(pacs, registry, tmp_path):
    sops = _stored_as(pacs, registry)
    peer = node_peer(pacs.tls_dir, tmp_path, "CT01")
    try:
        tls_node(registry, "CT01", peer.port)
        tx = ask_over_tls(pacs, tmp_path, "CT01", [(CT, s) for s in sops])
        got = peer.wait_report(timeout=30)
        assert got is not None, pacs.log()
        calling, client_cn, version = got
        assert calling == "PACS" and client_cn == "PACS"  # the PACS presented its own lab certificate
        assert version in ("TLSv1.2", "TLSv1.3")
        ev = wait_for(lambda: events_of(registry, "commitment-reported"), 15, what="commitment-reported")[0]
        assert f"over DICOM TLS ({version})" in ev.message and tx in ev.message
        assert ev.detail["tls"] == version
    finally:
        peer.stop()


def _stored_as(pacs, registry) -> list[str]:
    """Two CT images stored by a plain modality CT02 (CT01 itself will be tls required)."""
    add_node(registry, "CT02")
    study, series = generate_uid(), generate_uid()
    dss = [ct_dataset(study, series, i + 1, rows=16, cols=16) for i in range(2)]
    assert send(pacs.port, dss, calling="CT02") == [0, 0]
    return [str(ds.SOPInstanceUID) for ds in dss]


def test_commitment_report_to_a_plain_listener_registered_tls_required_names_the_handshake(pacs, registry,
                                                                                          tmp_path):
    sops = _stored_as(pacs, registry)
    plain = Listener("CT01", 0, bind="127.0.0.1").start()
    try:
        tls_node(registry, "CT01", plain.port)
        registry.update_listener({"commitment_attempts": 1})
        ask_over_tls(pacs, tmp_path, "CT01", [(CT, s) for s in sops])
        ev = wait_for(lambda: events_of(registry, "commitment-failed"), 30, what="commitment-failed")[0]
        assert ev.reason == "tls-handshake-failed", ev.message
        assert ev.detail["cause"] == "not-tls"  # pynetdicom answers a TLS hello with an A-ABORT: plain bytes
        assert f"TLS handshake with 127.0.0.1:{plain.port} failed" in ev.message
        assert "answered in plain, not TLS" in ev.message and "TLS port" in ev.message
        assert plain.reports == []  # nothing went in plain
    finally:
        plain.stop()


def test_commitment_report_to_a_node_with_a_foreign_certificate_is_unknown_ca(pacs, registry, tmp_path):
    sops = _stored_as(pacs, registry)
    peer = node_peer(pacs.tls_dir, tmp_path, "CT01", other_ca=True)
    try:
        tls_node(registry, "CT01", peer.port)
        registry.update_listener({"commitment_attempts": 1})
        ask_over_tls(pacs, tmp_path, "CT01", [(CT, s) for s in sops])
        ev = wait_for(lambda: events_of(registry, "commitment-failed"), 30, what="commitment-failed")[0]
        assert ev.reason == "tls-handshake-failed" and ev.detail["cause"] == "unknown-ca", ev.message
        assert "not issued by a CA this side trusts" in ev.message
        assert peer.reports == []
    finally:
        peer.stop()


# -- C-MOVE -------------------------------------------------------------------------
@pytest.fixture
def study(pacs, registry):
    add_node(registry, "CT01")
    add_node(registry, "WS01", services=QR)
    doe = make_study(3, "DOE^JANE", "20240115")
    store(pacs.port, doe)
    return doe


def movescu(pacs, dest: str, study_uid: str) -> subprocess.CompletedProcess[str]:
    exe = need_tool("movescu", "dcmtk")
    return subprocess.run([exe, "-S", "-aet", "WS01", "-aec", "PACS", "-aem", dest, "-k", "QueryRetrieveLevel=STUDY",
                           "-k", f"StudyInstanceUID={study_uid}", "127.0.0.1", str(pacs.port)],
                          capture_output=True, text=True, env=dcmtk_env(), timeout=60)


def storescp(out, port: int, *tls: str) -> subprocess.Popen[bytes]:
    exe = need_tool("storescp", "dcmtk")
    out.mkdir(exist_ok=True)
    proc = subprocess.Popen([exe, "--aetitle", "STORESCP", "--output-directory", str(out), *tls, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dcmtk_env())
    wait_port("127.0.0.1", port)
    return proc


def test_move_to_a_tls_required_dcmtk_storescp_stores_the_files(pacs, registry, study, tmp_path):
    ca = LabCA.ensure(pacs.tls_dir)
    issued = ca.issue("STORESCP", ["127.0.0.1"], server=True, client=True)
    (tmp_path / "scp.key").write_bytes(issued.key_pem)
    (tmp_path / "scp.pem").write_bytes(issued.cert_pem)
    port = free_port()
    # +tls with the default --require-peer-cert: the PACS must present a certificate from the lab CA
    dest = storescp(tmp_path / "moved", port, "+tls", str(tmp_path / "scp.key"), str(tmp_path / "scp.pem"),
                    "+cf", str(ca.cert_path))
    try:
        registry.add_node(Node(ae_title="STORESCP", host="127.0.0.1", port=port, services=["C-ECHO"], tls="required"))
        r = movescu(pacs, "STORESCP", study[0].StudyInstanceUID)
        assert r.returncode == 0, r.stderr + pacs.log()
        got = wait_for(lambda: len(list((tmp_path / "moved").iterdir())) == 3 and list((tmp_path / "moved").iterdir()),
                       20, what="3 files at storescp +tls")
        assert sorted(dcmread(p).SOPInstanceUID for p in got) == sorted(d.SOPInstanceUID for d in study)
        ev = wait_for(lambda: events_of(registry, "move-finished"), what="move-finished")[0]
        assert "3 completed, 0 failed" in ev.message
        assert not events_of(registry, "retrieve-failed")
    finally:
        dest.terminate()
        dest.wait(10)


def test_move_to_a_plain_storescp_registered_tls_required_names_the_handshake(pacs, registry, study, tmp_path):
    port = free_port()
    dest = storescp(tmp_path / "moved", port)  # plain
    try:
        registry.add_node(Node(ae_title="STORESCP", host="127.0.0.1", port=port, services=["C-ECHO"], tls="required"))
        r = movescu(pacs, "STORESCP", study[0].StudyInstanceUID)
        assert "Refused: OutOfResourcesSubOperations" in r.stderr  # 0xA702: every sub-operation failed
        ev = wait_for(lambda: events_of(registry, "retrieve-failed"), 20, what="retrieve-failed")[0]
        assert ev.reason == "move-tls-handshake-failed", ev.message
        # DCMTK drops a connection that starts with a TLS hello: closed during the handshake
        assert ev.detail["cause"] == "peer-closed", ev.message
        assert f"TLS handshake with 127.0.0.1:{port} failed" in ev.message and "plain DICOM port" in ev.message
        assert "tls required" in ev.message
        done = wait_for(lambda: events_of(registry, "move-finished"), what="move-finished")[0]
        assert done.detail["failed"] == 3 and done.detail["completed"] == 0
        assert list((tmp_path / "moved").iterdir()) == []
    finally:
        dest.terminate()
        dest.wait(10)


def test_move_to_a_tls_allowed_node_goes_plain(pacs, registry, study, tmp_path):
    """``allowed`` is a policy for the node's inbound associations: its one port is plain."""
    port = free_port()
    dest = storescp(tmp_path / "moved", port)
    try:
        registry.add_node(Node(ae_title="STORESCP", host="127.0.0.1", port=port, services=["C-ECHO"], tls="allowed"))
        r = movescu(pacs, "STORESCP", study[0].StudyInstanceUID)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: len(list((tmp_path / "moved").iterdir())) == 3, 20, what="3 files at plain storescp")
    finally:
        dest.terminate()
        dest.wait(10)
