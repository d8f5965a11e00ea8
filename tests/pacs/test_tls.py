"""DICOM TLS on the PACS (issue 13): real handshakes against the real PACS process,
with Python's ssl, pynetdicom's tls_args and DCMTK's echoscu +tls; every failure named
with its own event reason (and its cause), the per-node policy, rotation without a
restart, and the TLS port moved and switched off at run time."""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import subprocess
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from dicomdata import as_file, ct_dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from dicomlab.settings import Node
from dicomlab.tlsca import LabCA
from lab import PacsProcess, dcmtk_env, events_of, free_port, need_tool, wait_for

pytestmark = pytest.mark.engines  # make test-stock runs these on pynetdicom's own loops too


@pytest.fixture
def tpacs(redis_url, tmp_path):
    p = PacsProcess(redis_url, tmp_path / "storage", extra_env={"PACS_WORKERS": "1"}).start()
    yield p
    p.stop()


def node(registry, title="CT01", tls="allowed", client_certificate="none", services=("C-ECHO", "C-STORE")):
    registry.add_node(Node(ae_title=title, host="127.0.0.1", tls=tls, client_certificate=client_certificate,
                           services=list(services)))


def client_ctx(tmp: Path, cafile: Path | None, issued=None, **versions) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile is not None:
        ctx.load_verify_locations(cafile=str(cafile))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if issued is not None:
        name = f"c{len(list(tmp.glob('c*.pem')))}"
        cert, key = tmp / f"{name}.pem", tmp / f"{name}.key"
        cert.write_bytes(issued.cert_pem)
        key.write_bytes(issued.key_pem)
        ctx.load_cert_chain(cert, key)
    for k, v in versions.items():
        setattr(ctx, k, v)
    return ctx


def handshake(port: int, ctx: ssl.SSLContext, host: str = "localhost") -> ssl.SSLSocket | Exception:
    """A handshake (and, for TLS 1.3 where the server checks the client certificate after the
    client's side finished, one read); the socket, or the exception the client saw."""
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as exc:
        return exc
    try:
        s = ctx.wrap_socket(raw, server_hostname=host)
        return s
    except (ssl.SSLError, OSError) as exc:
        raw.close()
        return exc


def closed_event(registry, reason, **detail):
    def find():
        return [e for e in events_of(registry, "connection-closed", reason=reason)
                if all(e.detail.get(k) == v for k, v in detail.items())]
    return wait_for(find, timeout=15, what=f"connection-closed {reason} {detail}")[-1]


def rejected(registry, calling, reason):
    return wait_for(lambda: events_of(registry, "association-rejected", calling_aet=calling, reason=reason),
                    timeout=15, what=f"association-rejected {reason}")[-1]


def associate(port, ctx, calling="CT01", called="PACS", contexts=(Verification,)):
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.network_timeout = 15
    for c in contexts:
        ae.add_requested_context(c)
    return ae.associate("127.0.0.1", port, ae_title=called, tls_args=(ctx, "localhost") if ctx else None)


# -- it works ---------------------------------------------------------------------------
@pytest.mark.parametrize("fastpath", ["1", "0"])
def test_echo_and_store_over_tls_in_both_engines(redis_url, registry, tmp_path, fastpath):
    pacs = PacsProcess(redis_url, tmp_path / "storage",
                       extra_env={"PACS_WORKERS": "1", "PACS_FASTPATH": fastpath}).start()
    try:
        node(registry, client_certificate="required")
        ca = LabCA.ensure(pacs.tls_dir)
        ctx = client_ctx(tmp_path, pacs.tls_dir / "ca.pem", ca.issue("CT01", ["127.0.0.1"]))
        assoc = associate(pacs.tls_port, ctx, contexts=(Verification, CTImageStorage))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        study, series = generate_uid(), generate_uid()
        for i in range(3):
            ds = as_file(ct_dataset(study, series, i + 1, rows=128, cols=128))
            assert assoc.send_c_store(ds).Status == 0
        assoc.release()
        ev = wait_for(lambda: events_of(registry, "association-accepted", calling_aet="CT01"))[-1]
        assert ev.detail["tls"]["version"] in ("TLSv1.2", "TLSv1.3") and ev.detail["tls"]["cn"] == "CT01"
        assert "DICOM TLS TLSv1." in ev.message
        stored = wait_for(lambda: events_of(registry, "store-received", calling_aet="CT01"))
        assert len(stored) == 3 and all(Path(e.detail["path"]).exists() for e in stored)
        assert registry.get_node_status("CT01")["last_association_tls"].startswith("TLSv1.")
    finally:
        pacs.stop()


def test_only_tls_12_or_later_with_bcp195_suites(tpacs, registry, tmp_path):
    ctx12 = client_ctx(tmp_path, tpacs.tls_dir / "ca.pem", maximum_version=ssl.TLSVersion.TLSv1_2)
    s = handshake(tpacs.tls_port, ctx12)
    assert isinstance(s, ssl.SSLSocket), s
    assert s.version() == "TLSv1.2" and s.cipher()[0].startswith(("ECDHE-", "ECDHE_")) and (
        "GCM" in s.cipher()[0] or "CHACHA20" in s.cipher()[0])
    s.close()
    s = handshake(tpacs.tls_port, client_ctx(tmp_path, tpacs.tls_dir / "ca.pem"))
    assert isinstance(s, ssl.SSLSocket) and s.version() == "TLSv1.3"
    s.close()


# -- every failure named --------------------------------------------------------------------
def test_plain_request_on_the_tls_port_is_named(tpacs, registry):
    node(registry)
    assoc = associate(tpacs.tls_port, None)
    assert not assoc.is_established
    ev = closed_event(registry, "plain-on-tls-port")
    assert "A-ASSOCIATE-RQ" in ev.message and f"TLS port {tpacs.tls_port}" in ev.message
    assert ev.peer == "127.0.0.1"


def test_tls_on_the_plain_port_names_the_live_tls_port(tpacs, registry, tmp_path):
    out = handshake(tpacs.port, client_ctx(tmp_path, None))
    assert isinstance(out, Exception)
    ev = closed_event(registry, "tls-on-plain-port")
    assert f"plain DICOM port {tpacs.port}" in ev.message and f"the TLS port {tpacs.tls_port}" in ev.message


def _expired(ca):
    return ca.issue("CT01", ["127.0.0.1"], days=1, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))


def _future(ca):
    return ca.issue("CT01", ["127.0.0.1"], days=10, not_before=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))


FAILURES = {
    # cause: how the client makes it
    "unknown-ca": lambda tmp, pacs, other: client_ctx(tmp, other.cert_path),
    "client-certificate-untrusted": lambda tmp, pacs, other: client_ctx(tmp, pacs.tls_dir / "ca.pem",
                                                                        other.issue("CT01")),
    "client-certificate-expired": lambda tmp, pacs, other: client_ctx(
        tmp, pacs.tls_dir / "ca.pem", _expired(LabCA.ensure(pacs.tls_dir))),
    "client-certificate-not-yet-valid": lambda tmp, pacs, other: client_ctx(
        tmp, pacs.tls_dir / "ca.pem", _future(LabCA.ensure(pacs.tls_dir))),
    "cipher-mismatch": lambda tmp, pacs, other: _rsa_kex_only(client_ctx(tmp, pacs.tls_dir / "ca.pem")),
    "protocol-version": lambda tmp, pacs, other: _tls11_only(client_ctx(tmp, pacs.tls_dir / "ca.pem")),
    "server-certificate-rejected": lambda tmp, pacs, other: client_ctx(tmp, pacs.tls_dir / "ca.pem"),
}


def _rsa_kex_only(ctx):
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("AES128-GCM-SHA256:AES256-GCM-SHA384")  # RSA key exchange: not BCP 195
    return ctx


def _tls11_only(ctx):
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # obsolete on purpose: the modality this test plays is
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


@pytest.mark.parametrize("cause", sorted(FAILURES))
def test_each_handshake_failure_has_its_cause_in_words(tpacs, registry, tmp_path, cause):
    other = LabCA.ensure(tmp_path / "other-ca")
    try:
        ctx = FAILURES[cause](tmp_path, tpacs, other)
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL cannot make a client for {cause}: {exc}")
    host = "wrong.example" if cause == "server-certificate-rejected" else "localhost"
    out = handshake(tpacs.tls_port, ctx, host=host)
    if isinstance(out, ssl.SSLSocket):  # TLS 1.3: the server checks the client certificate after
        try:
            out.recv(1)
        except (ssl.SSLError, OSError):
            pass
        out.close()
    if cause == "protocol-version" and isinstance(out, ssl.SSLError) and "NO_PROTOCOLS_AVAILABLE" in str(out):
        pytest.skip("this OpenSSL build offers no TLS 1.0/1.1 at all (the scenario lists it as unavailable)")
    ev = closed_event(registry, "tls-handshake-failed", cause=cause)
    assert ev.peer == "127.0.0.1" and f"port {tpacs.tls_port}" in ev.message and "Fix:" in ev.message
    assert ev.level == "warning"


def test_a_client_that_never_finishes_the_handshake_times_out(redis_url, registry, tmp_path):
    pacs = PacsProcess(redis_url, tmp_path / "storage", extra_env={"PACS_WORKERS": "1"})
    registry.update_listener({"port": pacs.port, "tls_port": pacs.tls_port, "assoc_request_timeout": 1})
    pacs.start()
    try:
        with socket.create_connection(("127.0.0.1", pacs.tls_port), timeout=10) as s:
            s.sendall(b"\x16\x03\x01\x00\x50")  # the start of a ClientHello, never completed
            ev = closed_event(registry, "request-timeout", tls=True)
        assert "no TLS handshake completed within 1 s" in ev.message
    finally:
        pacs.stop()


# -- per-node policy ---------------------------------------------------------------------
RJ_1_1_3 = (1, 1, 3)


def rj(assoc):
    p = assoc.acceptor.primitive
    return (p.result, p.result_source, p.diagnostic) if assoc.is_rejected else None


def test_tls_required_node_on_the_plain_port_is_rejected_113(tpacs, registry):
    node(registry, tls="required")
    assoc = associate(tpacs.port, None)
    assert rj(assoc) == RJ_1_1_3
    ev = rejected(registry, "CT01", "tls-required")
    assert f"TLS port {tpacs.tls_port}" in ev.message


def test_tls_off_node_on_the_tls_port_is_rejected_113(tpacs, registry, tmp_path):
    node(registry, tls="off")
    assoc = associate(tpacs.tls_port, client_ctx(tmp_path, tpacs.tls_dir / "ca.pem"))
    assert rj(assoc) == RJ_1_1_3
    ev = rejected(registry, "CT01", "tls-not-allowed")
    assert "tls setting is off" in ev.message
    assert associate(tpacs.port, None).is_established  # the plain port is its way in


def test_client_certificate_missing_is_rejected_113(tpacs, registry, tmp_path):
    node(registry, client_certificate="required")
    assoc = associate(tpacs.tls_port, client_ctx(tmp_path, tpacs.tls_dir / "ca.pem"))
    assert rj(assoc) == RJ_1_1_3
    assert "carried none" in rejected(registry, "CT01", "tls-client-certificate-missing").message


def test_client_certificate_of_another_node_is_rejected_113(tpacs, registry, tmp_path):
    node(registry, client_certificate="required")
    ca = LabCA.ensure(tpacs.tls_dir)
    assoc = associate(tpacs.tls_port, client_ctx(tmp_path, tpacs.tls_dir / "ca.pem", ca.issue("MR02")))
    assert rj(assoc) == RJ_1_1_3
    ev = rejected(registry, "CT01", "tls-client-identity-mismatch")
    assert "'MR02'" in ev.message and "'CT01'" in ev.message and ev.detail["certificate_cn"] == "MR02"


def test_the_whole_policy_table_applies_on_the_tls_port(tpacs, registry, tmp_path):
    node(registry)
    ctx = client_ctx(tmp_path, tpacs.tls_dir / "ca.pem")
    assert rj(associate(tpacs.tls_port, ctx, called="OTHER")) == (1, 1, 7)
    assert rj(associate(tpacs.tls_port, ctx, calling="NOBODY")) == RJ_1_1_3
    rejected(registry, "NOBODY", "unknown-calling-aet")
    registry.update_listener({"max_associations": 1})
    first = associate(tpacs.tls_port, ctx)
    assert first.is_established
    assert rj(associate(tpacs.tls_port, ctx)) == (2, 3, 2)  # row 5 counts TLS associations too
    first.release()


# -- rotation, run-time port changes ------------------------------------------------------------
def test_a_new_certificate_is_used_by_the_next_handshake(tpacs, registry, tmp_path):
    ctx = client_ctx(tmp_path, tpacs.tls_dir / "ca.pem")
    s = handshake(tpacs.tls_port, ctx)
    first = x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number
    s.close()
    ca = LabCA.ensure(tpacs.tls_dir)
    new = ca.issue("PACS", ["localhost", "127.0.0.1"], server=True)
    for name, data in (("server.key", new.key_pem), ("server.pem", new.cert_pem)):
        tmp = tpacs.tls_dir / f".{name}.new"
        tmp.write_bytes(data)
        os.replace(tmp, tpacs.tls_dir / name)
    s = handshake(tpacs.tls_port, ctx)
    assert x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number == new.cert.serial_number
    assert new.cert.serial_number != first
    s.close()
    wait_for(lambda: [e for e in events_of(registry, "settings-changed") if "new server certificate" in e.message])
    # an expired certificate put in place: the modality refuses it, and the PACS names why
    old = ca.issue("PACS", ["localhost"], server=True, days=1,
                   not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=5))
    (tpacs.tls_dir / "server.key").write_bytes(old.key_pem)
    (tpacs.tls_dir / "server.pem").write_bytes(old.cert_pem)
    out = handshake(tpacs.tls_port, ctx)
    assert isinstance(out, ssl.SSLCertVerificationError) and out.verify_code == 10
    closed_event(registry, "tls-handshake-failed", cause="server-certificate-expired")


def test_tls_port_moves_and_switches_off_at_run_time(tpacs, registry, tmp_path):
    ctx = client_ctx(tmp_path, tpacs.tls_dir / "ca.pem")
    node(registry)
    old, new = tpacs.tls_port, free_port()
    registry.update_listener({"tls_port": new})
    wait_for(lambda: (registry.get_heartbeat() or {}).get("tls_port") == new, timeout=15)
    assert [e for e in events_of(registry, "settings-changed") if f"from port {old} to {new}" in e.message]
    assert isinstance(handshake(old, ctx), ConnectionRefusedError)
    assoc = associate(new, ctx)
    assert assoc.is_established
    registry.update_listener({"tls_enabled": False})
    wait_for(lambda: (registry.get_heartbeat() or {}).get("tls_port", 0) is None, timeout=15)
    assert isinstance(handshake(new, ctx), ConnectionRefusedError)
    assert assoc.send_c_echo().Status == 0  # the open association runs to its end
    assoc.release()
    wait_for(lambda: [e for e in events_of(registry, "settings-changed") if "DICOM TLS listener off" in e.message])
    registry.update_listener({"tls_enabled": True})
    wait_for(lambda: (registry.get_heartbeat() or {}).get("tls_port") == new, timeout=15)
    assert isinstance(handshake(new, ctx), ssl.SSLSocket)


def test_two_listener_processes_share_the_tls_port(redis_url, registry, tmp_path):
    pacs = PacsProcess(redis_url, tmp_path / "storage", extra_env={"PACS_WORKERS": "2"}).start()
    try:
        node(registry)
        ctx = client_ctx(tmp_path, pacs.tls_dir / "ca.pem")
        for _ in range(4):
            assoc = associate(pacs.tls_port, ctx)
            assert assoc.is_established and assoc.send_c_echo().Status == 0
            assoc.release()
    finally:
        pacs.stop()


# -- DCMTK ---------------------------------------------------------------------------------
def test_dcmtk_echoscu_over_tls_with_and_without_a_client_certificate(tpacs, registry, tmp_path):
    exe = need_tool("echoscu", "dcmtk")
    node(registry, "CT01", client_certificate="required")
    node(registry, "CT02")
    ca = LabCA.ensure(tpacs.tls_dir)
    issued = ca.issue("CT01", ["127.0.0.1"])
    (tmp_path / "ct01.pem").write_bytes(issued.cert_pem)
    (tmp_path / "ct01.key").write_bytes(issued.key_pem)
    common = ["-to", "10", "-ta", "10", "+cf", str(tpacs.tls_dir / "ca.pem"), "-aec", "PACS"]

    def run(*args):
        return subprocess.run([exe, *common, *args, "127.0.0.1", str(tpacs.tls_port)], capture_output=True,
                              text=True, timeout=60, env=dcmtk_env())

    with_cert = run("+tls", str(tmp_path / "ct01.key"), str(tmp_path / "ct01.pem"), "-aet", "CT01")
    assert with_cert.returncode == 0, with_cert.stdout + with_cert.stderr
    anonymous = run("+tla", "-aet", "CT02")
    assert anonymous.returncode == 0, anonymous.stdout + anonymous.stderr
    refused = run("+tla", "-aet", "CT01")  # CT01 must show its certificate
    assert refused.returncode != 0 and "Association Rejected" in refused.stdout + refused.stderr
    rejected(registry, "CT01", "tls-client-certificate-missing")
    accepted = events_of(registry, "association-accepted")
    assert {e.calling_aet for e in accepted} == {"CT01", "CT02"}


def test_files_that_do_not_load_keep_the_old_certificate(tpacs, registry, tmp_path):
    ctx = client_ctx(tmp_path, tpacs.tls_dir / "ca.pem")
    assert isinstance(handshake(tpacs.tls_port, ctx), ssl.SSLSocket)
    (tpacs.tls_dir / "server.pem").write_bytes(b"not a certificate")
    assert isinstance(handshake(tpacs.tls_port, ctx), ssl.SSLSocket)  # still the loaded one
    ev = wait_for(lambda: [e for e in events_of(registry, "settings-changed", reason="tls-certificate")
                           if e.level == "error"])[-1]
    assert "could not be loaded" in ev.message and "previous certificate stays in use" in ev.message


def test_without_a_usable_certificate_tls_connections_are_closed_and_named(redis_url, registry, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the TLS folder should be")
    pacs = PacsProcess(redis_url, tmp_path / "storage",
                       extra_env={"PACS_WORKERS": "1", "PACS_TLS_DIR": str(blocker)}).start()
    try:
        assert "without a usable certificate" in pacs.log()
        out = handshake(pacs.tls_port, client_ctx(tmp_path, None))
        assert isinstance(out, Exception)
        ev = closed_event(registry, "tls-unavailable")
        assert "could not be answered" in ev.message and str(blocker) in ev.message
        node(registry, tls="allowed")
        assert associate(pacs.port, None).is_established  # the plain port is unaffected
    finally:
        pacs.stop()


def test_the_gate_checks_apply_through_tls(tpacs, registry, tmp_path):
    """A P-DATA-TF before any A-ASSOCIATE-RQ, inside TLS: the gate's A-ABORT 2/2 arrives through TLS."""
    s = handshake(tpacs.tls_port, client_ctx(tmp_path, tpacs.tls_dir / "ca.pem"))
    assert isinstance(s, ssl.SSLSocket)
    s.sendall(bytes.fromhex("04 00 00 00 00 06") + b"\0" * 6)
    got = b""
    try:
        while len(got) < 10:
            chunk = s.recv(10 - len(got))
            if not chunk:
                break
            got += chunk
    except (ssl.SSLError, OSError):
        pass
    s.close()
    assert got == bytes.fromhex("07 00 00 00 00 04 00 00 02 02"), got.hex(" ")
    ev = closed_event(registry, "pdu-invalid")
    assert "P-DATA-TF" in ev.message and f"port {tpacs.tls_port}" in ev.message
