"""The CT simulator's DICOM TLS against DCMTK's storescp +tls (a real peer that needs no PACS):
the right way works, and each misbehaviour fails with its own words from the modality's side."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

import pydicom
import pytest

from ct_simulator import outcome
from ct_simulator.cli import main
from ct_simulator.network import Link
from ct_simulator.sender import echo
from ct_simulator.tls import TlsSpec, outdated_unavailable
from dicomlab.tlsca import LabCA

from .test_network import _send


@pytest.fixture
def lab_ca(tmp_path) -> LabCA:
    return LabCA.ensure(tmp_path / "ca")


@pytest.fixture
def ct_bundle(lab_ca, tmp_path) -> Path:
    """The CT's PEM bundle (certificate, key, lab CA), as the admin API issues it."""
    path = tmp_path / "ct01.pem"
    path.write_bytes(lab_ca.issue("CT01", client=True).bundle(lab_ca.cert_pem))
    return path


@pytest.fixture
def tls_scp(storescp, lab_ca):
    """storescp +tls with a server certificate of the lab CA for localhost and 127.0.0.1; it requires
    a client certificate of the lab CA (-rc, its default)."""

    def start(*extra: str, not_before: dt.datetime | None = None, days: int = 30):
        issued = lab_ca.issue("STORESCP", ["localhost", "127.0.0.1"], server=True, not_before=not_before, days=days)
        folder = lab_ca.folder
        cert, key = folder / f"scp-{days}.pem", folder / f"scp-{days}.key"
        cert.write_bytes(issued.cert_pem)
        key.write_bytes(issued.key_pem)
        return storescp("+tls", str(key), str(cert), "+cf", str(lab_ca.cert_path), *extra)

    return start


def _tls_send(port: int, *extra: str, host: str = "127.0.0.1") -> list[str]:
    args = _send(port, "--slices", "2", "--seed", "3", *extra)
    args[args.index("--host") + 1] = host
    return args


def _failed(capsys, rc: int) -> str:
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_TLS, out
    return out


def test_send_over_tls_arrives_and_says_the_version(tls_scp, ct_bundle, capsys):
    scp = tls_scp()
    rc = main(_tls_send(scp.port, "--tls", "--tls-bundle", str(ct_bundle)))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "2 of 2 CT images sent, 0 failed" in out
    assert " over TLSv1.3 " in out or " over TLSv1.2 " in out
    assert len(scp.files()) == 2
    assert all(pydicom.dcmread(f).Modality == "CT" for f in scp.files())


def test_separate_cert_key_and_ca_files(tls_scp, lab_ca, tmp_path):
    scp = tls_scp()
    issued = lab_ca.issue("CT01", client=True)
    (tmp_path / "c.pem").write_bytes(issued.cert_pem)
    (tmp_path / "c.key").write_bytes(issued.key_pem)
    spec = TlsSpec(ca_file=str(lab_ca.cert_path), cert_file=str(tmp_path / "c.pem"),
                   key_file=str(tmp_path / "c.key"))
    link = Link("localhost", scp.port, called_aet="STORESCP", tls=spec)
    rep = echo(link)
    assert rep.ok, rep.problem
    assert rep.tls_session.startswith("TLSv1.")


def test_no_client_certificate_named(tls_scp, lab_ca, capsys):
    scp = tls_scp()
    out = _failed(capsys, main(_tls_send(scp.port, "--tls", "--tls-ca", str(lab_ca.cert_path))))
    assert "wants a client certificate and this CT presented none" in out
    assert scp.files() == []


def test_no_cert_flag_drops_the_bundle_certificate(tls_scp, ct_bundle, capsys):
    scp = tls_scp()
    out = _failed(capsys, main(_tls_send(scp.port, "--tls", "--tls-bundle", str(ct_bundle), "--tls-no-cert")))
    assert "presented none" in out


def test_trust_other_ca_names_the_unknown_ca(tls_scp, ct_bundle, capsys):
    scp = tls_scp()
    out = _failed(capsys, main(_tls_send(scp.port, "--tls", "--tls-bundle", str(ct_bundle),
                                         "--tls-trust-other-ca")))
    assert "certificate at 127.0.0.1:" in out and "is not signed by a CA this CT trusts" in out
    assert "import the lab CA" in out and "`make up` printed" in out


def test_expired_client_certificate_named(tls_scp, ct_bundle, lab_ca, capsys):
    scp = tls_scp()
    out = _failed(capsys, main(_tls_send(scp.port, "--tls", "--tls-bundle", str(ct_bundle), "--tls-expired-cert",
                                         "--tls-lab-ca", str(lab_ca.folder))))
    assert "refused this CT's certificate: it has expired" in out


def test_expired_cert_needs_the_lab_ca_folder(tls_scp, ct_bundle, capsys):
    scp = tls_scp()
    rc = main(_tls_send(scp.port, "--tls", "--tls-bundle", str(ct_bundle), "--tls-expired-cert"))
    assert rc == outcome.EXIT_ERROR
    assert "--tls-lab-ca" in capsys.readouterr().out


def test_expired_server_certificate_named(tls_scp, ct_bundle, capsys):
    scp = tls_scp(not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=40), days=30)
    out = _failed(capsys, main(_tls_send(scp.port, "--tls", "--tls-bundle", str(ct_bundle))))
    assert "the PACS's certificate at 127.0.0.1:" in out and "has expired" in out


def test_host_name_mismatch_named_and_the_check_can_be_skipped(tls_scp, ct_bundle, capsys):
    scp = tls_scp()
    # 127.0.0.2 is loopback too, but not in the certificate's subject alternative name
    out = _failed(capsys, main(_tls_send(scp.port, "--tls", "--tls-bundle", str(ct_bundle), host="127.0.0.2")))
    assert "does not name the host this CT called" in out and "--tls-no-host-check" in out
    rc = main(_tls_send(scp.port, "--tls", "--tls-bundle", str(ct_bundle), "--tls-no-host-check",
                        host="127.0.0.2"))
    assert rc == 0, capsys.readouterr().out
    # a name to check given explicitly
    rc = main(_tls_send(scp.port, "--tls", "--tls-bundle", str(ct_bundle), "--tls-server-name", "localhost",
                        host="127.0.0.2"))
    assert rc == 0, capsys.readouterr().out


def test_outdated_tls_against_a_bcp195_peer(tls_scp, ct_bundle, capsys):
    why = outdated_unavailable()
    assert why is None, why  # Debian bookworm's OpenSSL 3.0 still makes TLS 1.1 at SECLEVEL=0
    scp = tls_scp()
    out = _failed(capsys, main(_tls_send(scp.port, "--tls", "--tls-bundle", str(ct_bundle), "--tls-outdated")))
    assert "share no TLS version" in out and "TLS 1.2 or later" in out


def test_outdated_really_offers_tls_1_1(lab_ca, ct_bundle, tmp_path):
    """A server that still takes TLS 1.0/1.1 (SECLEVEL=0) sees the simulator negotiate TLS 1.1."""
    issued = lab_ca.issue("OLD", ["127.0.0.1"], server=True)
    (tmp_path / "old.pem").write_bytes(issued.cert_pem + issued.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.warns(DeprecationWarning):
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.load_cert_chain(tmp_path / "old.pem")
    server = socket.create_server(("127.0.0.1", 0))
    got: list[str] = []

    def serve() -> None:
        conn, _ = server.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                got.append(str(tls.version()))
        except ssl.SSLError as exc:
            got.append(repr(exc))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    link = Link("127.0.0.1", server.getsockname()[1], called_aet="OLD", connect_timeout=5, acse_timeout=5,
                tls=TlsSpec(bundle=str(ct_bundle), outdated=True))
    echo(link)  # no DICOM behind the handshake: the association fails, the handshake is what counts
    t.join(10)
    server.close()
    assert got == ["TLSv1.1"]
    assert link.tls_session.startswith("TLSv1.1")


def test_tls_to_a_plain_port_named(storescp, ct_bundle, capsys):
    scp = storescp()  # plain
    out = _failed(capsys, main(_tls_send(scp.port, "--tls", "--tls-bundle", str(ct_bundle))))
    assert "during this CT's TLS handshake" in out or "is not TLS" in out
    assert "TLS port (2762)" in out


def test_plain_to_a_tls_port_named(tls_scp, capsys):
    scp = tls_scp()
    out = _failed(capsys, main(_tls_send(scp.port)))
    assert "it is most likely a DICOM TLS port" in out
    assert "Turn TLS on in this CT" in out


def test_tls_flags_need_tls(capsys):
    assert main(_tls_send(1, "--tls-no-cert")) == outcome.EXIT_ERROR
    assert "--tls-no-cert needs --tls" in capsys.readouterr().err


def test_wrong_port_swaps_to_the_other_listener_port(monkeypatch, tls_scp, storescp, ct_bundle, capsys):
    """Without --port the simulator takes the listener ports (env seeds here); --wrong-port swaps them."""
    plain, tls = storescp(), tls_scp()
    monkeypatch.setenv("PACS_PORT", str(plain.port))
    monkeypatch.setenv("PACS_TLS_PORT", str(tls.port))
    base = ["echo", "--host", "127.0.0.1", "--called-aet", "STORESCP", "--timeout", "5"]
    assert main([*base, "--tls", "--tls-bundle", str(ct_bundle)]) == 0, capsys.readouterr().out
    assert f"127.0.0.1:{tls.port} over TLSv1." in capsys.readouterr().out
    out = _failed(capsys, main([*base, "--tls", "--tls-bundle", str(ct_bundle), "--wrong-port"]))
    assert f"127.0.0.1:{plain.port}" in out
    out = _failed(capsys, main([*base, "--wrong-port"]))
    assert f"127.0.0.1:{tls.port}" in out and "DICOM TLS port" in out
