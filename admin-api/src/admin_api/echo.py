"""C-ECHO from the PACS's AE title to a node, with the outcome in plain words."""

from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import AddressInformation, AssociationSocket

from dicomlab.dicom import RJ_REASON, RJ_RESULT, RJ_SOURCE

STATUS_SUCCESS = 0x0000  # Success


@dataclass
class EchoResult:
    ok: bool
    status: int | None
    error: str | None
    elapsed_ms: float
    calling_aet: str
    called_aet: str
    address: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _RecordingSocket(socket.socket):
    """A TCP socket that remembers why ``connect`` failed (pynetdicom only logs it)."""

    connect_error: OSError | None = None

    def connect(self, address: Any) -> None:  # type: ignore[override]
        try:
            super().connect(address)
        except OSError as exc:
            self.connect_error = exc
            raise


class _EchoSocket(AssociationSocket):
    """pynetdicom's requestor socket, with TCP_NODELAY and a recorded connect error."""

    def _create_socket(self, address: AddressInformation) -> socket.socket:
        family = socket.AF_INET if address.is_ipv4 else socket.AF_INET6
        sock = _RecordingSocket(family, socket.SOCK_STREAM)
        # Small PDUs (A-ASSOCIATE-RQ, C-ECHO-RQ) go out at once instead of
        # waiting for Nagle's algorithm to coalesce them.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.assoc.network_timeout is not None:
            sock.settimeout(self.assoc.network_timeout)
        sock.bind(address.as_tuple)
        self._is_connected = False
        self.raw_socket = sock  # pynetdicom drops .socket after a failed connect; keep ours
        return sock


class _EchoAE(AE):
    def _create_socket(self, assoc, address, tls_args):  # type: ignore[no-untyped-def]
        sock = _EchoSocket(assoc, address=address)
        sock.tls_args = tls_args
        self.last_socket = sock
        return sock


def _connect_words(exc: OSError | None, host: str, port: int, timeout: float) -> str:
    where = f"{host}:{port}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused: nothing listens on {where} (is the modality on, and is its DICOM port {port}?)"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"timed out: {where} did not answer within {timeout:g} s (wrong address, host down, or a firewall drops the packets)"
    if exc is not None and getattr(exc, "errno", None) in (101, 113):  # ENETUNREACH, EHOSTUNREACH
        return f"no route to {where}: the address is not reachable from the PACS"
    if exc is not None:
        return f"could not connect to {where}: {exc.strerror or exc}"
    return f"could not connect to {where}"


def _resolve(host: str, port: int) -> tuple[str, int]:
    """(address, family) for ``host``; raises OSError with the reason."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _t, _p, _c, sockaddr = infos[0]
    return sockaddr[0], family


def send_echo(calling_aet: str, called_aet: str, host: str, port: int, timeout: float = 3.0) -> EchoResult:
    started = time.perf_counter()

    def result(ok: bool, status: int | None, error: str | None) -> EchoResult:
        return EchoResult(ok, status, error, round((time.perf_counter() - started) * 1000, 1), calling_aet,
                          called_aet, f"{host}:{port}")

    try:
        address, family = _resolve(host, port)
    except OSError:
        return result(False, None, f"the host name {host!r} does not resolve to an address")

    ae = _EchoAE(ae_title=calling_aet)
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    bind = ("::", 0) if family == socket.AF_INET6 else ("", 0)
    assoc = ae.associate(address, port, ae_title=called_aet, bind_address=bind)
    try:
        if assoc.is_established:
            rsp = assoc.send_c_echo()
            status = getattr(rsp, "Status", None) if rsp else None
            if status is None:
                return result(False, None, f"no answer to the C-ECHO request within {timeout:g} s")
            if status == STATUS_SUCCESS:
                return result(True, int(status), None)
            return result(False, int(status), f"the node answered the C-ECHO with status 0x{int(status):04X}")
        if assoc.is_rejected:
            prim = assoc.acceptor.primitive
            rj_result = getattr(prim, "result", None)
            if rj_result in (1, 2):
                src, reason = prim.result_source, prim.diagnostic
                words = (
                    f"{RJ_RESULT.get(rj_result, rj_result)} / {RJ_SOURCE.get(src, src)} / "
                    f"{RJ_REASON.get((src, reason), reason)}"
                )
                return result(False, None, f"association rejected: {words} (codes {rj_result}/{src}/{reason})")
            return result(False, None, "association rejected: the node accepts no Verification (C-ECHO) context")
        raw = getattr(getattr(ae, "last_socket", None), "raw_socket", None)
        connect_error = raw.connect_error if isinstance(raw, _RecordingSocket) else None
        if connect_error is not None:
            return result(False, None, _connect_words(connect_error, host, port, timeout))
        if assoc.is_aborted:
            elapsed = time.perf_counter() - started
            if elapsed >= timeout * 0.9:
                return result(False, None, f"timed out: {host}:{port} accepted the connection but gave no association answer within {timeout:g} s")
            return result(False, None, "association aborted by the node")
        return result(False, None, "the association failed")
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
