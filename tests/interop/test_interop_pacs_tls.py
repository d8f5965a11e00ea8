"""The PACS's DICOM TLS port against real peers: DCMTK echoscu/storescu +tls (with and without a
client certificate), the CT simulator, and Orthanc 1.10 sending to it with "UseDicomTls"."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from dicomdata import write_series

from ct_simulator.cli import main
from dicomlab.settings import Node
from dicomlab.tlsca import LabCA
from lab import PacsProcess, dcmtk_env, events_of, need_tool, wait_for, wait_port

from .conftest import write_pem


@pytest.fixture
def tls_pacs(redis_url, tmp_path):
    """The PACS with its DICOM TLS listener on a free port (PacsProcess.tls_port); its lab CA, in
    PacsProcess.tls_dir, is made at its start."""
    p = PacsProcess(redis_url, tmp_path / "storage").start()
    wait_port("127.0.0.1", p.tls_port, timeout=30)
    p.ca = LabCA.ensure(p.tls_dir)  # the PACS's own, created when it started
    yield p
    p.stop()


def _node(registry, ae: str, tls: str = "allowed", client_certificate: str = "none") -> None:
    registry.add_node(Node(ae_title=ae, host="127.0.0.1", port=104, services=["C-ECHO", "C-STORE"], tls=tls,
                           client_certificate=client_certificate))


def _stored(pacs: PacsProcess) -> list[Path]:
    return sorted(pacs.storage_dir.rglob("*.dcm"))


def _dcmtk(tool: str, pacs, calling: str, tls: list[str], *files: Path) -> subprocess.CompletedProcess[str]:
    exe = need_tool(tool, "dcmtk")
    return subprocess.run([exe, "-aet", calling, "-aec", "PACS", "-to", "15", "-ta", "15", *tls,
                           "+cf", str(pacs.ca.cert_path), "127.0.0.1", str(pacs.tls_port), *map(str, files)],
                          capture_output=True, text=True, timeout=60, env=dcmtk_env())


def test_echoscu_tls_with_and_without_a_client_certificate(tls_pacs, registry, tmp_path):
    ct = write_pem(tls_pacs.ca, tmp_path / "ct", "DCMTKCT")
    _node(registry, "DCMTKCT", tls="required", client_certificate="required")
    r = _dcmtk("echoscu", tls_pacs, "DCMTKCT", ["+tls", str(ct.key), str(ct.cert)])
    assert r.returncode == 0, r.stdout + r.stderr
    accepted = wait_for(lambda: events_of(registry, "association-accepted", calling_aet="DCMTKCT"),
                        what="the accepted association")
    assert "DICOM TLS TLSv1." in accepted[-1].message
    # no certificate: the node requires one, so the PACS rejects 1/1/3 and says why
    r = _dcmtk("echoscu", tls_pacs, "DCMTKCT", ["+tla"])
    assert r.returncode != 0 and "Association Rejected" in r.stdout + r.stderr
    wait_for(lambda: events_of(registry, "association-rejected", calling_aet="DCMTKCT",
                               reason="tls-client-certificate-missing"), what="the tls-client-certificate-missing event")
    # a node without client_certificate required: anonymous TLS is enough
    _node(registry, "DCMTKANON", tls="required")
    r = _dcmtk("echoscu", tls_pacs, "DCMTKANON", ["+tla"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_storescu_tls_stores_with_and_without_a_client_certificate(tls_pacs, registry, tmp_path):
    files = write_series(tmp_path / "series", 3)
    ct = write_pem(tls_pacs.ca, tmp_path / "ct", "DCMTKCT")
    _node(registry, "DCMTKCT", tls="required", client_certificate="required")
    r = _dcmtk("storescu", tls_pacs, "DCMTKCT", ["+tls", str(ct.key), str(ct.cert)], *files)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(wait_for(lambda: len(_stored(tls_pacs)) >= 3 and _stored(tls_pacs), what="3 files")) == 3
    _node(registry, "DCMTKANON", tls="allowed")
    more = write_series(tmp_path / "series2", 2, seed=7)
    r = _dcmtk("storescu", tls_pacs, "DCMTKANON", ["+tla"], *more)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(wait_for(lambda: len(_stored(tls_pacs)) >= 5 and _stored(tls_pacs), what="5 files")) == 5


def test_storescu_tls_with_a_certificate_of_another_ca_is_refused(tls_pacs, registry, tmp_path):
    other = write_pem(LabCA.ensure(tmp_path / "other-ca"), tmp_path / "ct", "DCMTKCT")
    _node(registry, "DCMTKCT", tls="required", client_certificate="required")
    r = _dcmtk("storescu", tls_pacs, "DCMTKCT", ["+tls", str(other.key), str(other.cert)],
               *write_series(tmp_path / "s", 1))
    assert r.returncode != 0
    assert _stored(tls_pacs) == []
    def causes() -> list[str]:
        return [e.detail.get("cause") for e in events_of(registry, "connection-closed", reason="tls-handshake-failed")]

    wait_for(lambda: "client-certificate-untrusted" in causes(), what="the tls-handshake-failed event, "
             "cause client-certificate-untrusted")


def test_simulator_sends_to_the_pacs_over_tls(tls_pacs, registry, tmp_path, capsys):
    ct = write_pem(tls_pacs.ca, tmp_path / "ct", "LABCT01")
    _node(registry, "LABCT01", tls="required", client_certificate="required")
    rc = main(["send", "--host", "127.0.0.1", "--port", str(tls_pacs.tls_port), "--called-aet", "PACS",
               "--calling-aet", "LABCT01", "--rows", "64", "--cols", "64", "--slices", "4", "--progress", "never",
               "--tls", "--tls-bundle", str(ct.bundle)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "4 of 4 CT images sent" in out and " over TLSv1." in out
    assert len(_stored(tls_pacs)) == 4


def test_orthanc_sends_to_the_pacs_over_tls(orthanc, tls_pacs, registry, tmp_path):
    """Orthanc's SCU side: a modality with "UseDicomTls", its certificate from the PACS's lab CA."""
    _node(registry, "ORTHANC", tls="required", client_certificate="required")
    from .conftest import Orthanc

    o = Orthanc(tmp_path / "orthanc-scu", tls_pacs.ca, modalities={
        "PACS": {"AET": "PACS", "Host": "127.0.0.1", "Port": tls_pacs.tls_port, "UseDicomTls": True}})
    try:
        o.post("/modalities/PACS/echo", {})  # C-ECHO over TLS: an error status would raise
        ids = [o.post("/instances", f.read_bytes())["ID"] for f in write_series(tmp_path / "series", 2)]
        o.post("/modalities/PACS/store", {"Resources": ids, "Synchronous": True})
        assert len(wait_for(lambda: len(_stored(tls_pacs)) >= 2 and _stored(tls_pacs), what="2 files")) == 2
        accepted = events_of(registry, "association-accepted", calling_aet="ORTHANC")
        assert accepted and "DICOM TLS" in accepted[-1].message
    finally:
        o.stop()


def test_orthanc_without_tls_to_the_tls_port_is_named(orthanc, tls_pacs, registry, tmp_path):
    """Orthanc configured without "UseDicomTls" but sent to the TLS port: plain-on-tls-port."""
    _node(registry, "ORTHANC", tls="allowed")
    from .conftest import Orthanc

    o = Orthanc(tmp_path / "orthanc-plain", tls_pacs.ca, modalities={
        "PACS": {"AET": "PACS", "Host": "127.0.0.1", "Port": tls_pacs.tls_port, "UseDicomTls": False}})
    try:
        with pytest.raises(OSError):  # Orthanc answers its REST call with an error
            o.post("/modalities/PACS/echo", {})
        wait_for(lambda: events_of(registry, "connection-closed", reason="plain-on-tls-port"),
                 what="the plain-on-tls-port event")
    finally:
        o.stop()


@pytest.fixture
def admin_api(tls_pacs, redis_url):
    """The admin API (the Flask app under werkzeug, in a thread) on the PACS's registry and TLS folder."""
    import threading

    import requests
    from werkzeug.serving import make_server

    from admin_api import create_app

    token = "interop-test-token-0123456789"
    app = create_app({"ADMIN_TOKEN": token, "REDIS_URL": redis_url, "TLS_DIR": str(tls_pacs.tls_dir)})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    wait_for(lambda: requests.get(url + "/api/health", timeout=2).ok, 10, what="the admin API")
    yield url, token
    server.shutdown()
    thread.join(10)


def test_simulator_requests_its_certificate_from_the_admin_api(tls_pacs, admin_api, registry, capsys):
    """--tls-request-cert: the admin API issues the node's PEM bundle; the CT trusts the lab CA in it."""
    url, token = admin_api
    _node(registry, "LABCT01", tls="required", client_certificate="required")
    base = ["send", "--host", "127.0.0.1", "--port", str(tls_pacs.tls_port), "--called-aet", "PACS", "--rows", "64",
            "--cols", "64", "--slices", "2", "--progress", "never", "--tls", "--tls-request-cert", "--api", url,
            "--token", token]
    rc = main([*base, "--calling-aet", "LABCT01"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "note: certificate for LABCT01 issued by the admin API" in out and " over TLSv1." in out
    assert len(_stored(tls_pacs)) == 2
    issued = events_of(registry, "settings-changed", calling_aet="LABCT01")
    assert any(e.reason == "tls-certificate-issued" for e in issued)
    # a node the PACS does not know gets no certificate: the admin API's refusal is said
    rc = main([*base, "--calling-aet", "NOBODY"])
    out = capsys.readouterr()
    assert rc == 1, out
    assert "would not issue a certificate for NOBODY: HTTP 404 No authorized node has the AE title 'NOBODY'" \
        in out.out + out.err
