"""The lab CA (dicomlab.tlsca): created once and reused, keys private, and the
certificates it issues are accepted by a real TLS handshake (Python's ssl, OpenSSL)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading

import pytest

from dicomlab.tlsca import LabCA, common_name


def test_the_ca_is_created_once_and_reused_with_a_private_key(tmp_path):
    ca = LabCA.ensure(tmp_path)
    again = LabCA.ensure(tmp_path)
    assert again.cert == ca.cert
    assert (tmp_path / "ca.key").stat().st_mode & 0o777 == 0o600
    assert ca.cert.extensions.get_extension_for_class(__import__("cryptography").x509.BasicConstraints).value.ca


def test_a_node_certificate_names_its_ae_title_and_hosts(tmp_path):
    ca = LabCA.ensure(tmp_path)
    issued = ca.issue("CT01", ["10.0.0.5", "ct01.example"])
    assert common_name(issued.cert) == "CT01"
    bundle = issued.bundle(ca.cert_pem)
    assert bundle.count(b"BEGIN CERTIFICATE") == 2 and b"PRIVATE KEY" in bundle


def test_the_server_certificate_is_renewed_only_near_expiry(tmp_path):
    ca = LabCA.ensure(tmp_path)
    cert, key = ca.ensure_server("PACS", ["127.0.0.1"])
    first = cert.read_bytes()
    assert ca.ensure_server("PACS", ["127.0.0.1"])[0].read_bytes() == first
    assert key.stat().st_mode & 0o777 == 0o600
    # a certificate inside the renewal window is replaced
    old = ca.issue("PACS", ["127.0.0.1"], server=True, days=10)
    cert.write_bytes(old.cert_pem)
    key.write_bytes(old.key_pem)
    assert ca.ensure_server("PACS", ["127.0.0.1"])[0].read_bytes() not in (first, old.cert_pem)


def _handshake(tmp_path, client_issued):
    ca = LabCA.ensure(tmp_path)
    cert, key = ca.ensure_server("PACS", ["127.0.0.1"])
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    server_ctx.load_cert_chain(cert, key)
    server_ctx.load_verify_locations(ca.cert_path)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: dict = {}

    def serve():
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                seen["peer"] = tls.getpeercert()
        except ssl.SSLError as exc:
            seen["error"] = exc

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client_ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    cpath, kpath = tmp_path / "c.pem", tmp_path / "c.key"
    cpath.write_bytes(client_issued(ca).cert_pem if client_issued else b"")
    if client_issued:
        issued = client_issued(ca)
        cpath.write_bytes(issued.cert_pem)
        kpath.write_bytes(issued.key_pem)
        client_ctx.load_cert_chain(cpath, kpath)
    try:
        with socket.create_connection(("127.0.0.1", port)) as s, \
                client_ctx.wrap_socket(s, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"x")
    except (ssl.SSLError, OSError) as exc:
        seen.setdefault("client_error", exc)
    t.join(10)
    listener.close()
    return seen


def test_a_client_certificate_from_the_lab_ca_passes_a_real_handshake(tmp_path):
    seen = _handshake(tmp_path, lambda ca: ca.issue("CT01", ["127.0.0.1"]))
    assert "error" not in seen, seen
    assert dict(x[0] for x in seen["peer"]["subject"])["commonName"] == "CT01"


def test_an_expired_client_certificate_fails_the_handshake(tmp_path):
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    seen = _handshake(tmp_path, lambda ca: ca.issue("CT01", ["127.0.0.1"], not_before=past, days=1))
    assert "error" in seen
    assert "expired" in str(seen["error"]).lower() or "certificate" in str(seen["error"]).lower()


@pytest.mark.parametrize("field,value", [("tls", "sometimes"), ("client_certificate", "maybe")])
def test_node_tls_fields_are_checked(field, value):
    from dicomlab.errors import ValidationError
    from dicomlab.settings import Node
    with pytest.raises(ValidationError) as exc:
        Node(ae_title="CT01", host="127.0.0.1", **{field: value}).validate()
    assert exc.value.field == field


def test_a_client_certificate_needs_tls():
    from dicomlab.errors import ValidationError
    from dicomlab.settings import Node
    with pytest.raises(ValidationError):
        Node(ae_title="CT01", host="127.0.0.1", client_certificate="required").validate()
    assert Node(ae_title="CT01", host="127.0.0.1", tls="required", client_certificate="required").validate()


def test_the_tls_port_cannot_be_the_plain_port():
    from dicomlab.errors import ValidationError
    from dicomlab.settings import ListenerSettings
    with pytest.raises(ValidationError):
        ListenerSettings(port=2762, tls_port=2762).validate()
    assert ListenerSettings(port=2762, tls_port=2762, tls_enabled=False).validate()
