"""dicomlab.tlswords, client side: OpenSSL's errors from real handshakes (Python's ssl on
loopback, certificates from the lab CA) named with their cause. The server side is tested
against the real PACS (tests/pacs/test_tls.py)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading

import pytest

from dicomlab.tlsca import LabCA
from dicomlab.tlswords import client_side


class Server:
    """One TLS server on loopback that handshakes each connection and reads once."""

    def __init__(self, tmp, issued, ca, require_client: bool = False) -> None:
        (tmp / "s.pem").write_bytes(issued.cert_pem)
        (tmp / "s.key").write_bytes(issued.key_pem)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(tmp / "s.pem", tmp / "s.key")
        self.ctx.load_verify_locations(cafile=str(ca.cert_path))
        self.ctx.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_NONE
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as s:
                    s.settimeout(5)
                    s.recv(1)
            except (ssl.SSLError, OSError):
                pass

    def close(self) -> None:
        self.sock.close()


def failure(port, ctx, host="localhost") -> tuple[str, str]:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as s:
            s.recv(1)  # TLS 1.3: the server's verdict on the client certificate comes after the handshake
    except (ssl.SSLError, OSError) as exc:
        return client_side(exc, host, port)
    raise AssertionError("the handshake succeeded")


@pytest.fixture
def ca(tmp_path):
    return LabCA.ensure(tmp_path / "ca")


def client(ca, tmp_path, cert=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    if cert is not None:
        (tmp_path / "c.pem").write_bytes(cert.cert_pem + cert.key_pem)
        ctx.load_cert_chain(tmp_path / "c.pem")
    return ctx


def past(days):
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=days)


@pytest.mark.parametrize("case, cause", [
    ("other-ca", "unknown-ca"), ("wrong-host", "host-name-mismatch"), ("expired", "server-certificate-expired"),
    ("future", "server-certificate-not-yet-valid"), ("no-client-cert", "client-certificate-missing"),
    ("foreign-client-cert", "client-certificate-untrusted"),
])
def test_client_side_causes(ca, tmp_path, case, cause):
    other = LabCA.ensure(tmp_path / "other")
    server_cert = {
        "expired": lambda: ca.issue("PACS", ["localhost"], server=True, days=1, not_before=past(3)),
        "future": lambda: ca.issue("PACS", ["localhost"], server=True, not_before=past(-2)),
    }.get(case, lambda: ca.issue("PACS", ["localhost"], server=True))()
    server = Server(tmp_path, server_cert, ca, require_client=case in ("no-client-cert", "foreign-client-cert"))
    try:
        ctx = client(other if case == "other-ca" else ca, tmp_path,
                     other.issue("CT01") if case == "foreign-client-cert" else None)
        got, words = failure(server.port, ctx, host="elsewhere.example" if case == "wrong-host" else "localhost")
    finally:
        server.close()
    assert got == cause, words
    assert "Fix:" in words
    assert words.startswith("the TLS handshake with")
