"""The admin API's echo of a node registered ``tls required``: over DICOM TLS with the lab
CA in its TLS folder (the folder it shares with the PACS), the PACS's certificate presented;
a failed handshake named with its cause (dicomlab.tlswords), never a plain fallback."""

from __future__ import annotations

import pytest
from admin_helpers import EchoPeer
from tls_peer import node_peer

from dicomlab.tlsca import ensure_lab


@pytest.fixture
def tls_dir(app):
    folder = app.config["TLS_DIR"]
    ensure_lab(folder, "PACS")  # what the PACS makes on its first start
    return folder


def add(api, title, port, tls="required"):
    r = api.post("/api/nodes", json={"ae_title": title, "host": "127.0.0.1", "port": port, "tls": tls})
    assert r.status_code == 201, r.get_json()


def test_echo_of_a_tls_required_node_goes_over_tls(api, registry, tls_dir, tmp_path):
    peer = node_peer(tls_dir, tmp_path, "CT01")
    try:
        add(api, "CT01", peer.port)
        res = api.post("/api/nodes/CT01/echo").get_json()
        assert res["ok"] is True and res["status"] == 0, res
        assert res["tls"] in ("TLSv1.2", "TLSv1.3") and res["tls_cause"] is None
        assert peer.echoes == [("PACS", "PACS", res["tls"])]  # the PACS's AE title and its lab certificate
        [ev] = registry.read_events(types={"echo-sent"})
        assert f"over DICOM TLS ({res['tls']})" in ev.message and ev.detail["tls"] == res["tls"]
    finally:
        peer.stop()


def test_echo_of_a_plain_peer_registered_tls_required_names_the_handshake(api, registry, tls_dir):
    plain = EchoPeer("CT01")
    try:
        add(api, "CT01", plain.port)
        res = api.post("/api/nodes/CT01/echo").get_json()
        assert res["ok"] is False and res["status"] is None
        assert res["tls_cause"] == "not-tls", res
        assert res["error"].startswith(f"the TLS handshake with 127.0.0.1:{plain.port} failed: the server answered "
                                       "in plain, not TLS"), res["error"]
        assert plain.echoes == []  # not echoed in plain behind the node's back
        [ev] = registry.read_events(types={"echo-sent"})
        assert ev.reason == "tls-handshake-failed" and ev.detail["cause"] == "not-tls"
        status = api.get("/api/nodes/CT01").get_json()["status"]
        assert "answered in plain" in status["why"]
    finally:
        plain.stop()


def test_echo_of_a_node_whose_certificate_names_another_host(api, tls_dir, tmp_path):
    peer = node_peer(tls_dir, tmp_path, "CT01", hosts=("ct01.example",))
    try:
        add(api, "CT01", peer.port)
        res = api.post("/api/nodes/CT01/echo").get_json()
        assert res["ok"] is False and res["tls_cause"] == "host-name-mismatch", res
        assert "does not name 127.0.0.1" in res["error"]
        assert peer.echoes == []
    finally:
        peer.stop()


def test_echo_of_a_tls_allowed_node_is_plain(api, tls_dir):
    """``allowed`` governs the node's own associations to the PACS; its one port is plain."""
    plain = EchoPeer("CT01")
    try:
        add(api, "CT01", plain.port, tls="allowed")
        res = api.post("/api/nodes/CT01/echo").get_json()
        assert res["ok"] is True and res["tls"] == "" and plain.echoes == ["PACS"]
    finally:
        plain.stop()


def test_echo_without_the_lab_certificate_is_not_sent_in_plain(api, app, registry):
    plain = EchoPeer("CT01")  # TLS_DIR is empty: no lab CA, no PACS certificate
    try:
        add(api, "CT01", plain.port)
        res = api.post("/api/nodes/CT01/echo").get_json()
        assert res["ok"] is False and "never in plain" in res["error"] and "ca.pem" in res["error"], res
        assert plain.echoes == []
        [ev] = registry.read_events(types={"echo-sent"})
        assert ev.reason == "tls-unavailable"
    finally:
        plain.stop()


def test_echo_of_a_closed_tls_port_is_connection_refused(api, tls_dir):
    from lab import free_port

    port = free_port()  # nothing listens: the TCP connect fails before any handshake
    add(api, "CT01", port)
    res = api.post("/api/nodes/CT01/echo").get_json()
    assert res["ok"] is False and res["error"].startswith("connection refused") and res["tls_cause"] is None, res


def test_echo_of_a_node_that_distrusts_the_pacs_certificate(api, tls_dir, tmp_path):
    """The node's certificate is the lab's, but it trusts another CA for its callers: it refuses the
    PACS's client certificate (TLS 1.3: by an alert after the client's side of the handshake)."""
    from tls_peer import TlsPeer, server_context

    from dicomlab.tlsca import LabCA

    lab, other = LabCA.ensure(tls_dir), LabCA.ensure(tmp_path / "other-ca")
    peer = TlsPeer("CT01", server_context(tmp_path / "peer", lab.issue("CT01", ["127.0.0.1"], server=True),
                                          other.cert_path))
    try:
        add(api, "CT01", peer.port)
        res = api.post("/api/nodes/CT01/echo").get_json()
        assert res["ok"] is False and res["tls_cause"] == "client-certificate-untrusted", res
        assert "does not trust this side's client certificate" in res["error"]
        assert peer.echoes == []
    finally:
        peer.stop()
