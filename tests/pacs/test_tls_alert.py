"""A client certificate of another CA on the PACS's DICOM TLS port, many times over (the
race of the TLS 1.3 alert): with TLS 1.3 the PACS checks the client's certificate after the
client's side of the handshake is done, and the client (which has often sent its
A-ASSOCIATE-RQ by then) learns the verdict from the alert on its next read. Each time, the
client must read that alert (``client-certificate-untrusted``, never ``peer-closed``), and the
PACS must name the connection once, with that cause.

It used to fail in about half of the runs: the PACS closed the socket with the request
unread, and the client read a bare end of stream; and a handshake that failed in the step
that wrapped the socket left it open, to be named a second time, ``peer-closed``, when the
client hung up. Real sockets, the real PACS process, the CT simulator's own naming."""

from __future__ import annotations

import socket
import ssl

import pytest

from ct_simulator.network import Link
from ct_simulator.sender import echo
from ct_simulator.tls import TlsSpec
from dicomlab.settings import Node
from dicomlab.tlsca import LabCA
from dicomlab.tlswords import client_side
from lab import PacsProcess, events_of, wait_for

pytestmark = pytest.mark.engines

RUNS = 10
RQ = b"\x01\x00\x00\x00\x00\x44" + bytes(0x44)  # an A-ASSOCIATE-RQ's size and type: sent before the verdict


@pytest.fixture
def tpacs(redis_url, registry, tmp_path):
    p = PacsProcess(redis_url, tmp_path / "storage", extra_env={"PACS_WORKERS": "1"}).start()
    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", tls="allowed", client_certificate="none",
                           services=["C-ECHO"]))
    yield p
    p.stop()


@pytest.fixture
def foreign_cert(tmp_path):
    issued = LabCA.ensure(tmp_path / "other-ca").issue("CT01", ["127.0.0.1"], client=True)
    cert, key = tmp_path / "ct.pem", tmp_path / "ct.key"
    cert.write_bytes(issued.cert_pem)
    key.write_bytes(issued.key_pem)
    return cert, key


def _raw_client(port: int, ca: str, cert, key) -> str:
    """Handshake, send at once (as a modality does), then read: the cause the client names."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(RQ)
            s.recv(1)
    except (ssl.SSLError, OSError) as exc:
        return f"{client_side(exc, 'localhost', port)[0]} ({type(exc).__name__}: {exc})"
    return "no failure"


def test_a_certificate_of_another_ca_is_named_untrusted_every_time(tpacs, registry, foreign_cert):
    cert, key = foreign_cert
    ca = str(tpacs.tls_dir / "ca.pem")
    raw = [_raw_client(tpacs.tls_port, ca, cert, key) for _ in range(RUNS)]
    sim = []
    for _ in range(RUNS):
        rep = echo(Link("localhost", tpacs.tls_port, called_aet="PACS", calling_aet="CT01",
                        tls=TlsSpec(ca_file=ca, cert_file=str(cert), key_file=str(key))))
        assert rep.problem is not None, "the echo succeeded with a certificate of another CA"
        sim.append(rep.problem.detail.get("tls") or f"{rep.problem.kind}: {rep.problem.message}")
    assert all(r.startswith("client-certificate-untrusted ") for r in raw), raw
    assert sim == ["client-certificate-untrusted"] * RUNS, sim

    def named() -> dict[str, int]:
        out: dict[str, int] = {}
        for e in events_of(registry, "connection-closed", reason="tls-handshake-failed"):
            cause = e.detail.get("cause")
            out[cause] = out.get(cause, 0) + int(e.detail.get("count", 1))
        return out

    # the first close is reported at once, the others counted into one event after the window (10 s)
    wait_for(lambda: named().get("client-certificate-untrusted", 0) >= 2 * RUNS, timeout=40,
             what=f"{2 * RUNS} closes named client-certificate-untrusted")
    assert named() == {"client-certificate-untrusted": 2 * RUNS}
