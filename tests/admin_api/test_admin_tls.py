"""The admin API's DICOM TLS routes: the PACS's certificate with its expiry warning, the
lab CA to download, a certificate issued for a node (a bundle a real PACS accepts), and
the node status saying the last association came over TLS."""

from __future__ import annotations

import datetime as dt
import ssl

from admin_helpers import TOKEN, Api
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicomlab.tlsca import LabCA, common_name
from lab import PacsProcess, wait_for


def test_tls_shows_the_server_certificate_and_warns_30_days_ahead(api, app):
    r = api.get("/api/tls")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["ca"]["common_name"] == "DICOM Lab CA"
    assert body["server"]["common_name"] == "PACS" and body["server"]["warning"] is None
    assert body["server"]["days_left"] > 30 and "127.0.0.1" in body["server"]["hosts"]
    assert body["tls_enabled"] is True and body["tls_port"] == 2762
    # a certificate 10 days from its end: the page warns
    folder = app.config["TLS_DIR"]
    ca = LabCA.ensure(folder)
    soon = ca.issue("PACS", ["localhost"], server=True, days=10)
    (ca.folder / "server.pem").write_bytes(soon.cert_pem)
    body = api.get("/api/tls").get_json()
    assert body["server"]["days_left"] < 10 and "expires in" in body["server"]["warning"]
    old = ca.issue("PACS", ["localhost"], server=True, days=1,
                   not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    (ca.folder / "server.pem").write_bytes(old.cert_pem)
    assert "expired" in api.get("/api/tls").get_json()["server"]["warning"]


def test_the_lab_ca_certificate_downloads_as_pem(api, app, client):
    r = api.get("/api/tls/ca.pem")
    assert r.status_code == 200 and r.mimetype == "application/x-pem-file"
    assert "dicomlab-ca.pem" in r.headers["Content-Disposition"]
    cert = x509.load_pem_x509_certificate(r.data)
    assert cert == LabCA.ensure(app.config["TLS_DIR"]).cert
    assert b"PRIVATE KEY" not in r.data
    assert client.get("/api/tls/ca.pem").status_code == 401  # the token applies


def test_a_certificate_is_issued_for_a_node(api, node, client, app):
    r = api.post(f"/api/nodes/{node['ae_title']}/certificate")
    assert r.status_code == 200 and r.mimetype == "application/x-pem-file"
    assert r.headers["Cache-Control"] == "no-store"
    certs = x509.load_pem_x509_certificates(r.data)
    leaf, ca_cert = certs[0], certs[-1]
    assert common_name(leaf) == "USPROD" and ca_cert == LabCA.ensure(app.config["TLS_DIR"]).cert
    leaf.verify_directly_issued_by(ca_cert)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "192.168.1.10" in [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    key = serialization.load_pem_private_key(r.data, password=None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()
    assert api.post("/api/nodes/NOBODY/certificate").status_code == 404
    assert client.post(f"/api/nodes/{node['ae_title']}/certificate").status_code == 401
    events = api.get("/api/events?type=settings-changed").get_json()
    assert any(e["reason"] == "tls-certificate-issued" and e["calling_aet"] == "USPROD" for e in events)


def test_an_issued_bundle_gets_a_node_in_and_its_status_says_tls(redis_url, tmp_path):
    from admin_api import create_app

    pacs = PacsProcess(redis_url, tmp_path / "storage", extra_env={"PACS_WORKERS": "1"}).start()
    try:
        app = create_app({"TESTING": True, "ADMIN_TOKEN": TOKEN, "REDIS_URL": redis_url,
                          "TLS_DIR": str(pacs.tls_dir)})
        api = Api(app.test_client())
        assert api.post("/api/nodes", json={"ae_title": "CT01", "host": "127.0.0.1", "tls": "required",
                                            "client_certificate": "required"}).status_code == 201
        assert api.get("/api/nodes/CT01").get_json()["status"]["last_association_tls"] is None
        bundle = tmp_path / "ct01.pem"
        bundle.write_bytes(api.post("/api/nodes/CT01/certificate").data)
        ca = tmp_path / "ca.pem"
        ca.write_bytes(api.get("/api/tls/ca.pem").data)
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(bundle)
        ae = AE(ae_title="CT01")
        ae.add_requested_context(Verification)
        live = wait_for(lambda: api.get("/api/scp").get_json()["listener"]["tls_port"], timeout=15)
        assert live == pacs.tls_port
        assoc = ae.associate("127.0.0.1", pacs.tls_port, ae_title="PACS", tls_args=(ctx, "localhost"))
        assert assoc.is_established
        assoc.release()
        status = wait_for(lambda: api.get("/api/nodes/CT01").get_json()["status"]["last_association_tls"])
        assert status.startswith("TLSv1.")
        assert api.get("/api/tls").get_json()["live_tls_port"] == pacs.tls_port
    finally:
        pacs.stop()


def test_openapi_describes_the_tls_routes(client):
    spec = client.get("/api/openapi.json").get_json()
    assert "/api/tls" in spec["paths"] and "/api/tls/ca.pem" in spec["paths"]
    issue = spec["paths"]["/api/nodes/{ae_title}/certificate"]["post"]
    assert "application/x-pem-file" in issue["responses"]["200"]["content"]
    assert "CSR" in issue["summary"] or "CSR" in issue.get("description", "")
