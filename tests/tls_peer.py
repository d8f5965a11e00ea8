"""A node that listens for DICOM TLS, for the associations the lab opens *to* a node
(Storage Commitment reports, C-MOVE, the admin echo): a real pynetdicom server with an
``ssl_context`` on loopback, its certificate issued by the lab CA (or another CA, for the
failure cases), requiring the caller's certificate from the lab CA like a careful node.
It answers C-ECHO and Storage Commitment N-EVENT-REPORTs, and records who called with
which certificate."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

from cryptography import x509
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification

from dicomlab.tlsca import Issued, LabCA, common_name


def server_context(tmp: Path, issued: Issued, trusted_ca: Path, require_client: bool = True) -> ssl.SSLContext:
    tmp.mkdir(parents=True, exist_ok=True)
    cert, key = tmp / "peer.pem", tmp / "peer.key"
    cert.write_bytes(issued.cert_pem)
    key.write_bytes(issued.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=str(trusted_ca))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
    return ctx


class TlsPeer:
    """``TlsPeer(ae_title, ctx)``: C-ECHO and Storage Commitment reports over TLS on a free port."""

    def __init__(self, ae_title: str, ctx: ssl.SSLContext) -> None:
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(Verification)
        self.ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self.echoes: list[tuple[str, str | None, str]] = []  # (calling AE, client certificate CN, TLS version)
        self.reports: list[tuple[str, str | None, str]] = []
        self._cond = threading.Condition()
        handlers = [(evt.EVT_C_ECHO, self._on_echo), (evt.EVT_N_EVENT_REPORT, self._on_report)]
        self.server = self.ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers, ssl_context=ctx)
        self.port = int(self.server.server_address[1])

    @staticmethod
    def _who(event: evt.Event) -> tuple[str, str | None, str]:
        sock = event.assoc.dul.socket.socket
        der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        cn = common_name(x509.load_der_x509_certificate(der)) if der else None
        version = sock.version() if isinstance(sock, ssl.SSLSocket) else "plain"
        return str(event.assoc.requestor.ae_title).strip(), cn, version or ""

    def _on_echo(self, event: evt.Event) -> int:
        with self._cond:
            self.echoes.append(self._who(event))
            self._cond.notify_all()
        return 0x0000

    def _on_report(self, event: evt.Event) -> tuple[int, None]:
        with self._cond:
            self.reports.append(self._who(event))
            self._cond.notify_all()
        return 0x0000, None

    def wait_report(self, timeout: float = 30.0) -> tuple[str, str | None, str] | None:
        with self._cond:
            self._cond.wait_for(lambda: self.reports, timeout)
            return self.reports[0] if self.reports else None

    def stop(self) -> None:
        self.server.shutdown()


def node_peer(tls_dir: Path, tmp: Path, ae_title: str = "CT01", hosts: tuple[str, ...] = ("127.0.0.1",),
              other_ca: bool = False) -> TlsPeer:
    """A node's TLS listener with the certificate the lab issues a node ("Issue a certificate":
    CN = its AE title, its host in the SAN), trusting the lab CA in ``tls_dir``; ``other_ca``: its
    certificate comes from a CA the lab does not know."""
    lab = LabCA.ensure(tls_dir)
    issuer = LabCA.ensure(tmp / "other-ca") if other_ca else lab
    issued = issuer.issue(ae_title, list(hosts), server=True, client=True)
    return TlsPeer(ae_title, server_context(tmp / f"peer-{ae_title}", issued, lab.cert_path))
