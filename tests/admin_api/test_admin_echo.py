"""Echo a node: real DICOM peers (pynetdicom, DCMTK storescp) and a closed port."""

from __future__ import annotations

import socket
import subprocess

import pytest
from admin_helpers import EchoPeer

from lab import free_port, need_tool, wait_port


def add(api, title, port, host="127.0.0.1"):
    r = api.post("/api/nodes", json={"ae_title": title, "host": host, "port": port})
    assert r.status_code == 201, r.get_json()


def test_echo_a_pynetdicom_peer_from_the_pacs_ae_title(api, registry, echo_peer):
    api.patch("/api/scp", json={"ae_title": "MYPACS"})
    add(api, "ECHOPEER", echo_peer.port)
    r = api.post("/api/nodes/ECHOPEER/echo")
    assert r.status_code == 200
    res = r.get_json()
    assert res["ok"] is True and res["status"] == 0 and res["error"] is None
    assert 0 < res["elapsed_ms"] < 2000
    assert (res["calling_aet"], res["called_aet"]) == ("MYPACS", "ECHOPEER")
    assert echo_peer.echoes == ["MYPACS"]

    status = api.get("/api/nodes/ECHOPEER").get_json()["status"]
    assert status["state"] == "CONNECTED" and status["last_echo_ok"] is True
    assert status["summary"] == f"ECHOPEER (127.0.0.1 : {echo_peer.port}) CONNECTED"
    raw = registry.get_node_status("ECHOPEER")
    assert raw["last_echo_ok"] == "1" and float(raw["last_echo_time"]) > 0 and float(raw["last_echo_ms"]) > 0

    [ev] = registry.read_events(types={"echo-sent"})
    assert ev.source == "admin-api" and ev.outcome == "success" and ev.level == "info"
    assert (ev.calling_aet, ev.called_aet) == ("MYPACS", "ECHOPEER")
    assert "answered Success" in ev.message


def test_echo_a_closed_port_is_unreachable(api, registry):
    port = free_port()  # nothing listens there
    add(api, "GONE", port)
    res = api.post("/api/nodes/GONE/echo").get_json()
    assert res["ok"] is False and res["status"] is None
    assert res["error"].startswith("connection refused")
    status = api.get("/api/nodes/GONE").get_json()["status"]
    assert status["state"] == "UNREACHABLE" and "connection refused" in status["why"]
    assert status["summary"] == f"GONE (127.0.0.1 : {port}) UNREACHABLE"
    [ev] = registry.read_events(types={"echo-sent"})
    assert ev.outcome == "failed" and ev.level == "warning" and "connection refused" in ev.message


def test_echo_a_dcmtk_storescp(api, tmp_path):
    storescp = need_tool("storescp", "dcmtk")
    port = free_port()
    proc = subprocess.Popen([storescp, "--aetitle", "STORESCP", "--output-directory", str(tmp_path), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port("127.0.0.1", port)
        add(api, "STORESCP", port)
        res = api.post("/api/nodes/STORESCP/echo").get_json()
        assert res["ok"] is True, res
        assert api.get("/api/nodes/STORESCP").get_json()["status"]["state"] == "CONNECTED"
    finally:
        proc.terminate()
        proc.wait(10)


def test_echo_rejected_by_the_peer_says_why(api):
    peer = EchoPeer(ae_title="REALNAME", require_called=True)
    try:
        add(api, "WRONGNAME", peer.port)
        res = api.post("/api/nodes/WRONGNAME/echo").get_json()
    finally:
        peer.stop()
    assert res["ok"] is False
    assert res["error"].startswith("association rejected")
    assert "called-AE-title-not-recognized" in res["error"]
    state = api.get("/api/nodes/WRONGNAME").get_json()["status"]["state"]
    assert state == "UNREACHABLE"


def test_echo_a_peer_that_never_answers_times_out(redis_url):
    from admin_helpers import TOKEN, Api

    from admin_api import create_app

    api = Api(create_app({"ADMIN_TOKEN": TOKEN, "REDIS_URL": redis_url, "ECHO_TIMEOUT": 0.5}).test_client())
    with socket.socket() as silent:  # accepts TCP (kernel backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        add(api, "SILENT", silent.getsockname()[1])
        res = api.post("/api/nodes/SILENT/echo").get_json()
    assert res["ok"] is False
    assert res["error"].startswith("timed out"), res


@pytest.mark.parametrize("host", ["::1"])
def test_echo_over_ipv6(api, host):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="V6")
    ae.add_supported_context(Verification)
    server = ae.start_server(("::1", 0), block=False)
    port = server.server_address[1]  # the port it got
    try:
        add(api, "V6", port, host=host)
        res = api.post("/api/nodes/V6/echo").get_json()
    finally:
        server.shutdown()
    assert res["ok"] is True, res
